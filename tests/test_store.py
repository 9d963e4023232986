"""The key layout of relay/store.py, watched on the real Redis: every Lua script touches only the keys
it declares, and every script and transaction keeps to the keys of one workspace (one hash tag), so
each runs unchanged on Valkey, Dragonfly or one Redis Cluster shard."""

from __future__ import annotations

import re
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from receiver.admin import operations
from relay import store
from tests.helpers import REDIS_URL, ROUTES, WRITE_KEY

TD = {"X-TD-Write-Key": WRITE_KEY}
SKIP_ROUTE = """
[routes.profiles_remembered]
database = "db"
table = "profiles_remembered"
mode = "user_track"
track_record_type = "user_profile_attributes"
skip_unchanged = true
"""
# Keys outside every workspace: the layout marker (and its lock) and the set of workspaces.
GLOBAL = {store.LAYOUT, "relay:layout:lock", store.WORKSPACES, store.PROBE}


def relay_key(key: str) -> bool:
    """A key of the relay's own (the rate limiter's windows are the `limits` library's: one key each)."""
    return key.startswith("relay:") and not key.startswith(store.RATE_PREFIX)


LINE = re.compile(r"^\d+\.\d+ \[(?P<source>\d+ [^\]]+)\] (?P<command>.*)$", re.S)


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    """The tests' routes, and one route with skip_unchanged (its memory has scripts of its own)."""
    path = tmp_path / "relay.toml"
    path.write_text(ROUTES + SKIP_ROUTE)
    return path


@dataclass
class Block:
    """One script or transaction as MONITOR showed it: the keys it declared and those it touched."""

    what: str
    declared: list[str] = field(default_factory=list)
    touched: list[str] = field(default_factory=list)


@pytest.fixture
def monitored(clean_redis: redis.Redis) -> Iterator[list[str]]:
    """Every command Redis runs while the test body runs, as MONITOR prints it (arguments quoted)."""
    seen: list[str] = []
    stop = threading.Event()
    connection = redis.Redis.from_url(REDIS_URL).connection_pool.get_connection()
    connection.send_command("MONITOR")
    assert connection.read_response() in (b"OK", "OK")

    def watch() -> None:
        while not stop.is_set():
            line = connection.read_response()
            seen.append(line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    yield seen
    stop.set()
    clean_redis.ping()  # one more line, so the watcher wakes and sees the stop
    thread.join(timeout=5)
    connection.disconnect()


def keys_of(client: redis.Redis, words: list[str]) -> list[str]:
    """The keys a command names, as Redis itself tells them (COMMAND GETKEYS)."""
    try:
        return [key if isinstance(key, str) else key.decode() for key in client.command_getkeys(*words)]
    except redis.ResponseError:  # a command without keys
        return []


def blocks(client: redis.Redis, lines: list[str]) -> list[Block]:
    """The scripts and transactions in MONITOR's lines, each with its keys."""
    found: list[Block] = []
    open_multi: dict[str, Block] = {}
    script: Block | None = None
    for line in lines:
        match = LINE.match(line)
        assert match, line
        source, words = match["source"].split(" ", 1)[1], shlex.split(match["command"])
        name = words[0].upper()
        if source == "lua":
            assert script is not None, line
            script.touched += keys_of(client, words)
            continue
        script = None
        if name in ("EVAL", "EVALSHA"):
            script = Block(f"{name} {words[1][:40]}", declared=words[3 : 3 + int(words[2])])
            found.append(script)
            if source in open_multi:
                open_multi[source].touched += script.declared
        elif name == "MULTI":
            open_multi[source] = Block("MULTI")
        elif name in ("EXEC", "DISCARD") and source in open_multi:
            found.append(open_multi.pop(source))
        elif source in open_multi:
            open_multi[source].touched += keys_of(client, words)
    return found


def tag(key: str) -> str | None:
    """A key's hash tag (the part in braces), as Redis Cluster reads it."""
    match = re.search(r"\{([^}]*)\}", key)
    return match.group(1) if match and match.group(1) else None


def workload(app: Flask, client: FlaskClient, clean_redis: redis.Redis, drain: Callable[..., None]) -> None:
    """Every path that writes the relay's keys: each shape of store, delivery, memory, dead letters."""
    assert (
        client.post(
            "/postback/v3/event/db/events", json={"external_id": "u1", "name": "e"}, headers=TD
        ).status_code
        == 200
    )
    keyed = {**TD, "Idempotency-Key": "once"}
    records = {"records": [{"external_id": "u2", "name": "e"}, {"external_id": "u3", "name": "f"}]}
    assert client.post("/db/events", json=records, headers=keyed).status_code == 200
    consent = {"external_id": "u1", "subscription_group_id": "g", "subscription_state": "unsubscribed"}
    assert client.post("/postback/v3/event/db/consent", json=consent, headers=TD).status_code == 200
    invalid = {"records": [{"external_id": "u4", "plan": "gold"}, {"plan": "no identifier"}]}
    assert client.post("/db/profiles_skip", json=invalid, headers=TD).status_code == 200
    for _ in range(2):  # the second is unchanged: recalled, left out
        body = {"records": [{"external_id": "u5", "plan": "gold"}]}
        assert client.post("/db/profiles_remembered", json=body, headers=TD).status_code == 200
        drain()
    for path, record in (
        ("aliases", {"alias_name": "a1", "alias_label": "l"}),
        ("identify", {"external_id": "u6", "alias_name": "a1", "alias_label": "l"}),
        ("deletes", {"external_id": "u1"}),
    ):
        assert client.post(f"/postback/v3/event/db/{path}", json=record, headers=TD).status_code == 200
    drain()
    with app.app_context():
        dead = list(operations.matching(clean_redis))
        assert dead, "the invalid record was dead-lettered"
        operations.replay(clean_redis, dead[:1])
        operations.purge(clean_redis, [item["id"] for item in operations.matching(clean_redis)])


def test_every_script_and_transaction_keeps_to_one_workspace(
    app: Flask,
    client: FlaskClient,
    clean_redis: redis.Redis,
    drain: Callable[..., None],
    monitored: list[str],
) -> None:
    """Scripts touch only declared keys; a script's or transaction's relay keys share one hash tag."""
    workload(app, client, clean_redis, drain)
    clean_redis.echo("relay-test-done")
    deadline = time.monotonic() + 10
    while not any("relay-test-done" in line for line in monitored):
        assert time.monotonic() < deadline, "MONITOR fell behind"
        time.sleep(0.01)
    seen = monitored[: next(i for i, line in enumerate(monitored) if "relay-test-done" in line)]
    found = blocks(clean_redis, seen)  # (the COMMAND GETKEYS it sends are watched too: not part of it)
    ours = [block for block in found if any(map(relay_key, block.declared + block.touched))]
    assert {"EVAL", "MULTI"} <= {block.what.split(" ")[0].removesuffix("SHA") for block in ours}
    for block in ours:
        if block.what.startswith("EVAL"):
            undeclared = set(block.touched) - set(block.declared)
            assert not undeclared, (block.what, sorted(undeclared))
        relay_keys = {key for key in block.declared + block.touched if relay_key(key)} - GLOBAL
        assert len({tag(key) for key in relay_keys}) == 1 and tag(min(relay_keys)), (block.what, relay_keys)
    untagged = {
        key
        for line in seen
        for key in keys_of(clean_redis, shlex.split(line.split("] ", 1)[1]))
        if relay_key(key) and tag(key) is None and key not in GLOBAL
    }
    assert not untagged, sorted(untagged)
