"""Moving an older relay's keys to today's layout (relay/migrate.py), on the real Redis: an upgrade
loses no queued record, dead letter, count, watermark, memory or audit trail."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import redis

from braze_sim.server import Simulator
from relay import audit, deadletters, metrics, store
from relay.config import Settings
from relay.lanes import Lane
from relay.migrate import migrate
from relay.routes import user_key
from tests.helpers import KEYS, WORKSPACES


def envelope(index: int, user: str, **extra: Any) -> dict[str, Any]:
    """A queued track event as an older relay stored it."""
    now = time.time()
    return {
        "id": f"old-{index}.0",
        "route": "events",
        "kind": "events",
        "ws": "default",
        "rec": {"_id": {"external_id": user}, "name": f"old_{index}", "time": now, "properties": {}},
        "t": now,
        "seq": f"{time.time_ns():020d}.{index:06d}",
        "at": now,
        "n": 0,
        **extra,
    }


def old_digest(ident: dict[str, Any]) -> str:
    """The per-user part of an older relay's watermark and audit keys."""
    return hashlib.sha256(f"default|{user_key(ident)}".encode()).hexdigest()[:32]


def write_older_layout(client: redis.Redis) -> list[dict[str, Any]]:
    """Keys as the relay wrote them before the workspace hash tags; returns the dead letters."""
    client.sadd("relay:lanes", "default:track")
    client.rpush("relay:q:default:track", *(json.dumps(envelope(i, f"u{i}")) for i in range(3)))
    client.zadd("relay:retry:default:track", {json.dumps(envelope(9, "u9", n=1)): time.time() - 1})
    client.set("relay:lease:default:track", "an-older-owner", px=60_000)
    dead = []
    for index, reason in enumerate(("invalid", "braze_rejected", "invalid")):
        item = deadletters.entry(envelope(20 + index, f"d{index}"), reason=reason)
        client.hset("relay:dead", item["id"], json.dumps(item))
        client.zadd("relay:dead:index", {item["id"]: item["last_failed_at"]})  # the oldest index only
        dead.append(item)
    client.hset("relay:metrics", metrics.DELIVERED.field(route="events"), 41)
    lag_sum = json.dumps(["relay_delivery_lag_seconds_sum", {"lane": "default:track"}], separators=(",", ":"))
    client.hset("relay:metrics", lag_sum, "2.5")
    ident = {"external_id": "u1"}
    client.hset(f"relay:wm:default:{old_digest(ident)}", "plan", "1.0|x")
    entry = {"at": 1.0, "event": "received", "record": "r.0", "route": "consent", "changes": {}}
    client.lpush(f"relay:audit:{old_digest(ident)}", json.dumps(entry))
    client.set("relay:idem:events:abc", json.dumps({"hash": "h", "status": 200, "body": {}}), ex=3600)
    return dead


def test_an_older_layout_is_moved_and_nothing_is_lost(
    settings: Settings, clean_redis: redis.Redis, braze: Simulator, drain: Callable[..., None]
) -> None:
    """Queued records (ahead of one stored since), retries, dead letters (indexed), counts,
    watermarks, audit trails and idempotency keys all reach today's keys; the move runs once."""
    dead = write_older_layout(clean_redis)
    lane = Lane("default:track")
    clean_redis.rpush(lane.list_key, json.dumps(envelope(5, "new-user")))  # stored by a new web meanwhile
    moved = migrate(clean_redis, settings.routes)
    assert moved["lanes"] == 4 and moved["dead letters"] == 3
    assert [json.loads(raw)["id"] for raw in clean_redis.lrange(lane.list_key, 0, -1)] == [
        "old-0.0",
        "old-1.0",
        "old-2.0",
        "old-5.0",
    ], "the older records go first: they were accepted first"
    today = (b"relay:{", b"relay:layout", b"relay:workspaces")
    assert not [key for key in clean_redis.scan_iter("relay:*") if not key.startswith(today)]
    assert migrate(clean_redis, settings.routes) == {}, "once moved, a start does nothing"

    page = deadletters.page(clean_redis, WORKSPACES, reason="invalid")
    assert [item["id"] for item in page.items] == [dead[2]["id"], dead[0]["id"]]
    assert deadletters.counts(clean_redis, WORKSPACES).by_reason == {"invalid": 2, "braze_rejected": 1}
    counted = metrics.read(clean_redis, WORKSPACES)
    assert counted[("relay_records_delivered", (("route", "events"),))] == 41
    assert counted[("relay_delivery_lag_seconds_sum", (("lane", "default:track"),))] == 2.5
    assert clean_redis.hget(KEYS.watermark(user_key({"external_id": "u1"})), "plan") == b"1.0|x"
    assert audit.history(clean_redis, "default", {"external_id": "u1"})[0]["record"] == "r.0"
    assert 0 < clean_redis.ttl(KEYS.idempotency("events", "abc")) <= 3600

    drain()
    names = sorted(event["name"] for profile in braze.state.profiles() for event in profile["events"])
    assert names == ["old_0", "old_1", "old_2", "old_5", "old_9"]
    assert "default" in store.workspaces(clean_redis), "the moved lanes' workspace is remembered"
