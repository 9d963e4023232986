"""Every process checks the Redis it is given at start (receiver/redis_check.py for the web, relay/store.py
`check_server` for all; docs/operations.md, "Redis"), on real redis-servers.

An evicting `maxmemory-policy` stops web, worker and `check` with one line naming the setting,
unless RELAY_ALLOW_EVICTION=1; a Redis that persists nothing is one warning line; a Redis that
forbids CONFIG GET does not break the start, and the line says what could not be checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from braze_sim.server import Simulator
from relay.config import load_settings
from tests.helpers import WRITE_KEY, create_app_for, relay_environment
from tests.processes import ROOT, RedisServer, free_port, procfile_command, refused_start, wait_for

EVICTING = ("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")


def environ_for(server: RedisServer, braze: Simulator, routes_file: Path, **extra: str) -> dict[str, str]:
    """An operator's environment pointing at this Redis."""
    env = {**os.environ, **relay_environment(server.url, braze.url, routes_file)}
    env.pop("RELAY_ALLOW_EVICTION", None)
    return {**env, **extra}


def web_command(port: int) -> list[str]:
    """The Procfile's web role on `port`."""
    return ["bash", "-c", f"PORT={port} HOST=127.0.0.1 WEB_CONCURRENCY=1 exec {procfile_command('web')}"]


def worker_start(env: dict[str, str]) -> list[dict[str, Any]]:
    """Start the Procfile's worker; return the JSON lines it printed up to "worker started", then stop it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "handlers.worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    said: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            said.append(json.loads(raw))
            if said[-1]["msg"] == "worker started":
                break
        assert proc.poll() is None, said
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    return said


def web_start(env: dict[str, str]) -> list[dict[str, Any]]:
    """Start the Procfile's web role; once /readyz answers 200, stop it; return the JSON lines it printed."""
    port = free_port()
    proc = subprocess.Popen(
        web_command(port), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )

    def ready() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return proc.poll() is not None

    try:
        wait_for(ready, 30, "web to answer /readyz")
        assert proc.poll() is None, "web exited"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def said(lines: list[dict[str, Any]], text: str) -> list[str]:
    """The messages that contain `text`."""
    return [line["msg"] for line in lines if text in line["msg"]]


@pytest.mark.e2e
def test_evicting_redis_stops_worker_web_and_check(
    own_redis: Callable[..., RedisServer],
    braze: Simulator,
    routes_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """maxmemory-policy allkeys-lru: each process refuses to start with one line naming the setting."""
    server = own_redis(*EVICTING)
    env = environ_for(server, braze, routes_file)
    worker = refused_start([sys.executable, "-m", "handlers.worker"], env)
    assert "maxmemory-policy is 'allkeys-lru'" in worker and "noeviction" in worker
    web = refused_start(web_command(free_port()), env, "maxmemory-policy")
    assert "RELAY_ALLOW_EVICTION=1" in web
    for name, value in relay_environment(server.url, braze.url, routes_file).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RELAY_ALLOW_EVICTION", raising=False)
    result = create_app_for(load_settings()).test_cli_runner().invoke(args=["check"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("braze-relay: Redis maxmemory-policy is 'allkeys-lru'")


@pytest.mark.e2e
def test_eviction_allowed_explicitly_starts_with_a_warning(
    own_redis: Callable[..., RedisServer], braze: Simulator, routes_file: Path
) -> None:
    """RELAY_ALLOW_EVICTION=1: worker and web start, each saying once that records may be evicted."""
    env = environ_for(own_redis(*EVICTING), braze, routes_file, RELAY_ALLOW_EVICTION="1")
    worker = worker_start(env)
    (note,) = said(worker, "maxmemory-policy")
    assert "allowed by RELAY_ALLOW_EVICTION=1" in note
    assert len(said(web_start(env), "maxmemory-policy")) == 1


@pytest.mark.e2e
def test_redis_without_persistence_is_one_warning(
    own_redis: Callable[..., RedisServer], braze: Simulator, routes_file: Path
) -> None:
    """No AOF and no snapshots: worker and web start and say so once, naming the setting to change."""
    env = environ_for(own_redis("--appendonly", "no"), braze, routes_file)
    (note,) = said(worker_start(env), "persists nothing")
    assert "appendonly yes" in note
    assert len(said(web_start(env), "persists nothing")) == 1


@pytest.mark.e2e
def test_redis_that_forbids_config_does_not_break_the_start(
    own_redis: Callable[..., RedisServer], braze: Simulator, routes_file: Path
) -> None:
    """A managed Redis with CONFIG disabled: the start goes on and says what could not be checked."""
    env = environ_for(own_redis("--appendonly", "yes", "--rename-command", "CONFIG", ""), braze, routes_file)
    (note,) = said(worker_start(env), "could not check")
    assert "persistence: CONFIG GET is not allowed" in note
    assert said(web_start(env), "could not check") == [note]


@pytest.mark.e2e
def test_a_well_configured_redis_says_nothing(
    own_redis: Callable[..., RedisServer], braze: Simulator, routes_file: Path
) -> None:
    """AOF on and noeviction: no note at all, only "worker started"."""
    env = environ_for(own_redis("--appendonly", "yes"), braze, routes_file)
    lines = worker_start(env)
    # The tests' routes file keeps its delete and consent routes on the global keys, which the
    # relay names at start (relay.config); about Redis, nothing is said.
    warned = [
        line["msg"] for line in lines if line["level"] == "warning" and line["logger"] != "relay.config"
    ]
    assert warned == []


def test_web_started_while_redis_was_down_checks_it_before_storing(
    tmp_path: Path, braze: Simulator, routes_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn's master could not check a Redis that was down at start: each web process checks it
    once it answers, and again after an outage, before it stores anything. An evicting Redis gets
    503 for every write and for /readyz, and nothing is stored; once fixed, 200 again."""
    server = RedisServer(tmp_path / "redis", *EVICTING)  # not started yet: down when the web starts
    for name, value in relay_environment(server.url, braze.url, routes_file).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RELAY_ALLOW_EVICTION", raising=False)
    web = create_app_for(load_settings()).test_client()
    body = {"external_id": "u1", "name": "e"}

    def post() -> Any:
        return web.post("/postback/v3/event/db/events", json=body, headers={"X-TD-Write-Key": WRITE_KEY})

    try:
        assert post().status_code == 503  # Redis down
        server.start()
        for _ in range(2):
            refused = post()
            assert refused.status_code == 503, refused.get_data(as_text=True)
            assert "may evict records" in refused.get_json()["message"]
        ready = web.get("/readyz")
        assert ready.status_code == 503 and ready.get_json()["errors"] == {"redis": "may evict records"}
        client = redis.Redis(port=server.port)
        assert client.dbsize() == 0, "an evicting Redis got records"
        client.config_set("maxmemory-policy", "noeviction")
        assert post().status_code == 200
        assert web.get("/readyz").status_code == 200
        # An outage, and back comes a Redis that evicts (a failover to a replica set up otherwise).
        server.stop()
        assert post().status_code == 503
        server.start()
        assert post().status_code == 503
        assert redis.Redis(port=server.port).dbsize() == 0
    finally:
        server.stop()
