"""Shared fixtures: the real Redis on this machine, a Braze simulator on loopback, the relay's app.

Nothing inside the project is patched: tests set environment variables, as an operator would, and
run the real RQ worker code in-process (`drain`) or as separate processes (the e2e tests). The
constants and plain functions the fixtures use live in tests/helpers.py.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from rq.serializers import JSONSerializer

from braze_sim.server import Simulator
from handlers import context
from handlers.worker import RelayWorker, tick
from relay import store
from relay.config import Settings, load_settings
from relay.lanes import Lane
from tests.helpers import (
    ADMIN_KEY,
    BRAZE_KEY,
    EU_BRAZE_KEY,
    GOOD_ROUTE,
    REDIS_URL,
    ROTATED_ADMIN_KEY,
    ROUTES,
    WRITE_KEY,
    create_app_for,
    lanes_busy,
    relay_environment,
)

pytest_plugins = ["tests.processes"]  # the `stack` fixture: gunicorn and workers as processes


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    """The real Redis on this machine (a database of its own for the tests)."""
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    return client


@pytest.fixture
def clean_redis(redis_client: redis.Redis) -> redis.Redis:
    """The test database, emptied."""
    redis_client.flushdb()
    return redis_client


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    """One Braze simulator on loopback for the session."""
    with Simulator(api_key=BRAZE_KEY) as sim:
        yield sim


@pytest.fixture
def braze(simulator: Simulator) -> Simulator:
    """The simulator with empty state, no faults and Braze's default limits (75 objects combined)."""
    simulator.reset()
    simulator.config.combined_limit = 75
    simulator.config.limits.update(
        {"track": (3000, 3.0), "users": (20000, 60.0), "subscription": (5000, 60.0)}
    )
    return simulator


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    """A routes file with one route per mode."""
    path = tmp_path / "relay.toml"
    path.write_text(ROUTES)
    return path


@pytest.fixture
def relay_env(
    request: pytest.FixtureRequest,
    routes_file: Path,
    braze: Simulator,
    clean_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """The relay's environment, set in this process (and a test's `relay_env` marker's variables)."""
    env = relay_environment(REDIS_URL, braze.url, routes_file)
    for name in ("RELAY_INSECURE_NO_AUTH", "RELAY_SANDBOX_BRAZE_URL"):
        monkeypatch.delenv(name, raising=False)
    # One track lane in-process, so tests can look at it by name; the process tests (`stack`) run
    # with the default of two shards, and test_delivery tests the shards themselves.
    env["RELAY_TRACK_SHARDS"] = "1"
    marker = request.node.get_closest_marker("relay_env")
    env.update(marker.kwargs if marker else {})
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def settings(relay_env: dict[str, str]) -> Settings:
    """Settings loaded from that environment."""
    return load_settings()


@pytest.fixture
def app(settings: Settings) -> Flask:
    """The relay's Flask app."""
    return create_app_for(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A client for the relay's app (a real Redis behind it)."""
    return app.test_client()


@pytest.fixture
def admin_app(relay_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Flask:
    """The relay's app with two admin keys configured (a rotation in progress)."""
    monkeypatch.setenv("RELAY_ADMIN_KEYS", f"{ADMIN_KEY},{ROTATED_ADMIN_KEY}")
    return create_app_for(load_settings())


@pytest.fixture
def admin(admin_app: Flask) -> FlaskClient:
    """A browser-like client of that app (it keeps the session cookie)."""
    return admin_app.test_client()


@pytest.fixture
def build_client(relay_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., FlaskClient]:
    """A client for an app built from the relay's environment plus the variables given."""

    def build(**env: str) -> FlaskClient:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return create_app_for(load_settings()).test_client()

    return build


@pytest.fixture
def drain(settings: Settings, clean_redis: redis.Redis) -> Callable[..., None]:
    """Run the real RQ worker in this process until every lane is empty (or fail after `timeout`)."""
    context.install(context.Context(settings, clean_redis))

    def run(timeout: float = 15.0, *, once: bool = False) -> None:
        deadline = time.monotonic() + timeout
        while True:
            shards = settings.delivery.track_shards
            tick(
                clean_redis,
                settings.delivery,
                Lane.configured(settings.routes.values(), shards),
            )
            worker = RelayWorker(
                [store.QUEUE_CONSENT, store.QUEUE_BULK], connection=clean_redis, serializer=JSONSerializer
            )
            worker.work(burst=True, logging_level="WARNING")
            if once or not lanes_busy(clean_redis):
                return
            if time.monotonic() > deadline:
                raise AssertionError("lanes still hold records after the timeout")
            time.sleep(0.05)

    return run


@pytest.fixture
def watched(clean_redis: redis.Redis) -> Iterator[list[str]]:
    """Every command Redis runs on the tests' database while the test body runs (MONITOR), as text,
    from the first on (other test processes use other databases of the same server)."""
    seen: list[str] = []
    started, stop = threading.Event(), threading.Event()
    monitor_client = redis.Redis.from_url(REDIS_URL)
    database = int(monitor_client.connection_pool.connection_kwargs.get("db", 0))

    def watch() -> None:
        with monitor_client.monitor() as monitor:  # entered once Redis said OK to MONITOR
            started.set()
            for command in monitor.listen():
                if stop.is_set():
                    return
                if command["db"] == database:
                    seen.append(command["command"])

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    assert started.wait(10), "MONITOR did not start"
    yield seen
    stop.set()
    monitor_client.ping()
    thread.join(timeout=5)


@pytest.fixture
def routes_path(tmp_path: Path) -> Path:
    """Where the routes file of a test lives."""
    return tmp_path / "relay.toml"


@pytest.fixture
def config_env(monkeypatch: pytest.MonkeyPatch, routes_path: Path) -> pytest.MonkeyPatch:
    """An operator's environment: one good route and one write key; nothing else the relay reads."""
    for name in list(os.environ):
        if name.startswith(("RELAY_", "BRAZE_", "PARTNER_", "EU_BRAZE")) or name == "REDIS_URL":
            monkeypatch.delenv(name)
    routes_path.write_text(GOOD_ROUTE)
    monkeypatch.setenv("RELAY_CONFIG", str(routes_path))
    monkeypatch.setenv("RELAY_WRITE_KEYS", WRITE_KEY)
    monkeypatch.setenv("EU_BRAZE_KEY", EU_BRAZE_KEY)
    return monkeypatch
