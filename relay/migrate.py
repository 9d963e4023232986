"""Moving a Redis written by an older relay to today's key layout, so an upgrade loses nothing.

Older relays kept every key flat under `relay:` (`relay:q:<lane>`, one dead-letter store, one
metrics hash). Today every key of a workspace lives under the hash tag `{workspace}`
(relay/store.py `Keys`). The worker and the web's master call `migrate` at start: it does nothing
once `relay:layout` says the layout is current; otherwise it moves, under a lock, every older key
to its place: queued records (ahead of any stored since), retries, dead letters (indexed again),
watermarks, skip_unchanged's memory, audit trails, idempotency keys, pauses and counts. Leases
of older processes are dropped: today's drain jobs take their lanes.

Stop every older process before starting the new ones: a record an older web process stores
after the move would wait under an older key until the next start moves it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any, cast

import redis

from relay import deadletters, store
from relay.config import DEFAULT_WORKSPACE
from relay.lanes import Lane
from relay.routes import Route

log = logging.getLogger(__name__)
OLD = "relay:"
LOCK = "relay:layout:lock"
LOCK_S = 600
CHUNK = 1000


def migrate(client: redis.Redis, routes: Mapping[str, Route]) -> dict[str, int]:
    """Move an older layout's keys to today's (once, under a lock); what was moved, by kind."""
    if client.get(store.LAYOUT) == store.LAYOUT_VERSION.encode():
        return {}
    if not client.set(LOCK, "1", nx=True, ex=LOCK_S):
        _wait_for_other(client)
        return {}
    try:
        moved = _move_all(client, routes)
        client.set(store.LAYOUT, store.LAYOUT_VERSION)
    finally:
        client.delete(LOCK)
    if any(moved.values()):
        log.warning("moved an older relay's keys to the current layout", extra={"moved": moved})
    return moved


def _wait_for_other(client: redis.Redis) -> None:
    """Another process is moving the keys: wait until it is done (or its lock expires)."""
    while client.exists(LOCK) and client.get(store.LAYOUT) != store.LAYOUT_VERSION.encode():
        time.sleep(0.2)


def _old_keys(client: redis.Redis, pattern: str) -> Iterator[str]:
    """Older keys matching `pattern` (today's keys, under `relay:{`, never match)."""
    for raw in client.scan_iter(match=pattern, count=CHUNK):
        name = raw.decode()
        if not name.startswith("relay:{"):
            yield name


def _move_all(client: redis.Redis, routes: Mapping[str, Route]) -> dict[str, int]:
    workspace_of = {name: route.workspace for name, route in routes.items()}
    moved = {
        "lanes": _move_lanes(client),
        "dead letters": _move_dead_letters(client),
        "counts": _move_counts(client),
    }
    renames = {
        "watermarks": ("relay:wm:*", _per_workspace),
        "skip_unchanged": ("relay:uc:*", _per_workspace),
        "pauses": ("relay:pause:*", _per_workspace),
        "forgotten": ("relay:uc-forgotten:*", _by_route(workspace_of, "uc-forgotten")),
        "idempotency": ("relay:idem:*", _by_route(workspace_of, "idem")),
        "audit trails": ("relay:audit:*", _audit(client, workspace_of)),
        "minutes": ("relay:minute:*", _in_default),
    }
    for what, (pattern, place) in renames.items():
        moved[what] = _rename(client, pattern, place)
    moved["signed identities"] = _copy_signed(client, set(workspace_of.values()) | {DEFAULT_WORKSPACE})
    return moved


def _move_lanes(client: redis.Redis) -> int:
    """Each older lane's records go ahead of today's (they were accepted first); retries join."""
    count = 0
    for raw in cast("set[bytes]", client.smembers("relay:lanes")):
        lane = Lane(raw.decode())
        old_list, old_retry = f"relay:q:{lane.name}", f"relay:retry:{lane.name}"
        records = cast("list[bytes]", client.lrange(old_list, 0, -1))
        retries = cast("list[tuple[bytes, float]]", client.zrange(old_retry, 0, -1, withscores=True))
        with client.pipeline(transaction=True) as pipe:
            for end in range(len(records), 0, -CHUNK):
                pipe.lpush(lane.list_key, *reversed(records[max(end - CHUNK, 0) : end]))
            if retries:
                pipe.zadd(lane.retry_key, dict(retries))
            pipe.sadd(lane.keys.lanes, lane.name)
            pipe.sadd(store.WORKSPACES, lane.workspace)
            pipe.delete(old_list, old_retry, f"relay:lease:{lane.name}")
            pipe.execute()
        count += len(records) + len(retries)
    client.delete("relay:lanes")
    return count


def _move_dead_letters(client: redis.Redis) -> int:
    """Every older dead letter into its workspace's store, indexed as today's are."""
    count = 0
    for dead_id, raw in client.hscan_iter("relay:dead", count=CHUNK):
        item = json.loads(raw)
        item.setdefault("envelope", {}).setdefault("ws", DEFAULT_WORKSPACE)
        with client.pipeline(transaction=True) as pipe:
            deadletters.add(pipe, item, limit=2**62, max_bytes=2**62)
            pipe.hdel("relay:dead", dead_id)
            pipe.execute()
        count += 1
    old = [*_old_keys(client, "relay:dead:*"), "relay:dead"]
    client.delete(*old)
    return count


def _move_counts(client: redis.Redis) -> int:
    """The older metrics hash adds into the default workspace's (/metrics adds workspaces up)."""
    raw = cast("dict[bytes, bytes]", client.hgetall("relay:metrics"))
    target = store.keys(DEFAULT_WORKSPACE).metrics
    with client.pipeline(transaction=True) as pipe:
        for name, value in raw.items():
            text = value.decode()
            if text.lstrip("-").isdigit():
                pipe.hincrby(target, name, int(text))
            else:
                pipe.hincrbyfloat(target, name, float(text))
        pipe.delete("relay:metrics")
        pipe.execute()
    return len(raw)


Place = Any  # (old key name) -> today's key name, or None to leave it


def _per_workspace(name: str) -> str:
    """relay:<kind>:<workspace>:<rest> -> relay:{<workspace>}:<kind>:<rest>."""
    _, kind, workspace, rest = name.split(":", 3)
    return f"relay:{{{workspace}}}:{kind}:{rest}"


def _in_default(name: str) -> str:
    """relay:<kind>:<rest> -> the default workspace's key."""
    _, kind, rest = name.split(":", 2)
    return f"relay:{{{DEFAULT_WORKSPACE}}}:{kind}:{rest}"


def _by_route(workspace_of: Mapping[str, str], kind: str) -> Place:
    """relay:<kind>:<route>[:<rest>] -> the key under the route's workspace (default if unknown)."""

    def place(name: str) -> str:
        rest = name[len(f"relay:{kind}:") :]
        workspace = workspace_of.get(rest.split(":", 1)[0], DEFAULT_WORKSPACE)
        return f"relay:{{{workspace}}}:{kind}:{rest}"

    return place


def _audit(client: redis.Redis, workspace_of: Mapping[str, str]) -> Place:
    """An audit trail goes to the workspace of the route its newest entry names."""

    def place(name: str) -> str:
        newest = client.lindex(name, 0)
        route = json.loads(newest).get("route", "") if newest else ""
        workspace = workspace_of.get(route, DEFAULT_WORKSPACE)
        return f"relay:{{{workspace}}}:audit:{name.split(':', 2)[2]}"

    return place


def _rename(client: redis.Redis, pattern: str, place: Place) -> int:
    """Rename each older key matching `pattern` to its place (its time to live goes with it)."""
    count = 0
    for name in list(_old_keys(client, pattern)):
        if not client.renamenx(name, place(name)):
            client.delete(name)  # today's key was written first: it is the newer
        count += 1
    return count


def _copy_signed(client: redis.Redis, workspaces: set[str]) -> int:
    """A signed request's identity was shared by every route: each workspace gets a copy."""
    count = 0
    for name in list(_old_keys(client, "relay:idem-signed:*")):
        value, ttl = client.get(name), client.pttl(name)
        if value is not None:
            for workspace in workspaces:
                rest = name[len("relay:idem-signed:") :]
                client.set(f"relay:{{{workspace}}}:idem-signed:{rest}", value, px=ttl if ttl > 0 else None)
        client.delete(name)
        count += 1
    return count
