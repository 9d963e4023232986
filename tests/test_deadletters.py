"""The dead-letter store's indexes (relay/deadletters.py), on the real Redis: pages of any filter are
read from Redis without reading the other entries, and every way a dead letter leaves keeps the
indexes in step (purge, replay, the per-route cap, an id stored again)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from receiver.admin import operations
from relay import deadletters
from relay.config import Delivery, load_settings
from relay.envelope import Envelope
from tests.helpers import KEYS, WORKSPACES, WRITE_KEY, caught_up, create_app_for
from tests.test_pages import ADMIN_KEY, AUTH

REASONS = ("invalid", "braze_rejected", "retries_exhausted")
TD = {"Content-Type": "application/json", "X-TD-Write-Key": WRITE_KEY}


def plant(
    client: redis.Redis, count: int, *, routes: tuple[str, ...] = ("events", "profiles"), limit: int = 10_000
) -> list[dict[str, Any]]:
    """`count` dead letters spread over routes and reasons, one failure time apart, newest last."""
    items = []
    start = time.time() - count
    for index in range(count):
        route, reason = routes[index % len(routes)], REASONS[index % len(REASONS)]
        envelope: Envelope = {
            "id": f"r{index:05d}.0",
            "route": route,
            "kind": "events",
            "ws": "default",
            "rec": {"n": index},
            "at": start,
            "n": 1,
        }
        item = deadletters.entry(envelope, reason=reason)
        item["last_failed_at"] = start + index
        items.append(item)
    for begin in range(0, count, 500):
        with client.pipeline(transaction=True) as pipe:
            for item in items[begin : begin + 500]:
                deadletters.add(pipe, item, limit=limit)
            pipe.execute()
    return items


def index_sizes(client: redis.Redis) -> dict[str, int]:
    """The size of every dead-letter index key there is."""
    keys = [
        key.decode()
        for key in client.keys(KEYS.dead_route("*"))
        + client.keys(KEYS.dead_reason("*"))
        + client.keys(KEYS.dead_pair("*", "*"))
    ]
    return {key: int(client.zcard(key)) for key in keys} | {
        "all": int(client.zcard(KEYS.dead_index)),
        "hash": int(client.hlen(KEYS.dead)),
    }


def test_a_page_of_any_filter_is_exact_newest_first(clean_redis: redis.Redis) -> None:
    """Route, reason, both, or none: the page holds exactly that filter's entries, newest first."""
    items = plant(clean_redis, 600)
    for route, reason in ((None, None), ("events", None), (None, "invalid"), ("profiles", "braze_rejected")):
        wanted = [
            i["id"]
            for i in reversed(items)
            if (not route or i["route"] == route) and (not reason or i["reason"] == reason)
        ]
        found = deadletters.page(clean_redis, WORKSPACES, route=route, reason=reason, offset=50, count=50)
        assert found.total == len(wanted)
        assert [i["id"] for i in found.items] == wanted[50:100]
    as_of = items[299]["last_failed_at"]
    assert deadletters.page(clean_redis, WORKSPACES, as_of=as_of).total == 300


def test_admin_list_reads_only_its_page(
    clean_redis: redis.Redis, relay_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, watched: list[str]
) -> None:
    """/admin/dead and /admin/ read counts and one page from Redis, not every entry."""
    plant(clean_redis, 2_000)
    monkeypatch.setenv("RELAY_ADMIN_KEYS", ADMIN_KEY)
    app: Flask = create_app_for(load_settings())
    admin = app.test_client()
    assert (
        admin.get("/admin/dead", headers=AUTH).status_code == 200
    )  # the one-time indexing of a store kept before
    caught_up(clean_redis, watched, "before")  # MONITOR lags: nothing of that request is left to come
    watched.clear()
    page = admin.get("/admin/dead?route=events&reason=invalid&page=2", headers=AUTH).get_data(as_text=True)
    overview = admin.get("/admin/", headers=AUTH)
    assert overview.status_code == 200 and "2000" in overview.get_data(as_text=True)
    caught_up(clean_redis, watched, "after")
    reads = [line.split() for line in watched if line.split()[1:2] == [KEYS.dead]]
    assert not [words for words in reads if words[0] in ("HGETALL", "HSCAN", "HVALS", "HKEYS")], reads[:3]
    fetched = [words for words in reads if words[0] == "HMGET"]
    assert len(fetched) == 1 and len(fetched[0]) - 2 == 50, "one page of 50 entries read, no more"
    assert "334 matching, of 2000 dead letters" in page


def test_every_way_out_keeps_the_indexes_in_step(clean_redis: redis.Redis, app: Flask) -> None:
    """Purge and replay take an entry out of the hash and all four indexes; nothing is left behind."""
    items = plant(clean_redis, 30)
    braze_refused = [i for i in items if i["reason"] != "invalid"][:10]
    with app.app_context():
        assert operations.purge(clean_redis, [i["id"] for i in items if i["reason"] == "invalid"]) == 10
        done = operations.replay(clean_redis, braze_refused)
    assert done.replayed == 10 and done.still_invalid == []
    sizes = index_sizes(clean_redis)
    assert sizes["hash"] == sizes["all"] == 10
    routes = {key: n for key, n in sizes.items() if key.startswith(KEYS.dead_route(""))}
    reasons = {key: n for key, n in sizes.items() if key.startswith(KEYS.dead_reason(""))}
    pairs = {key: n for key, n in sizes.items() if key.startswith(KEYS.dead_pair("", "")[:-1])}
    assert sum(routes.values()) == sum(reasons.values()) == sum(pairs.values()) == 10
    assert deadletters.counts(clean_redis, WORKSPACES).total == 10
    with app.app_context():
        assert operations.purge(clean_redis, [i["id"] for i in items]) == 10, "ids already gone count nothing"
    assert {n for key, n in index_sizes(clean_redis).items()} <= {0}


def test_the_cap_drops_the_oldest_from_every_index(clean_redis: redis.Redis) -> None:
    """Past a route's limit its oldest leave the hash and every index, and are counted as dropped."""
    plant(clean_redis, 40, routes=("events",), limit=25)
    sizes = index_sizes(clean_redis)
    assert sizes["hash"] == sizes["all"] == sizes[KEYS.dead_route("events")] == 25
    assert sum(n for key, n in sizes.items() if key.startswith(KEYS.dead_reason(""))) == 25
    counted = deadletters.counts(clean_redis, WORKSPACES)
    assert counted.by_route == {"events": 25} and sum(counted.by_reason.values()) == 25
    ids = [i["id"] for i in deadletters.iter_entries(clean_redis, WORKSPACES)]
    assert ids == [f"r{n:05d}.0" for n in range(39, 14, -1)], "the 25 newest are kept"


def test_an_id_stored_again_is_one_entry(clean_redis: redis.Redis) -> None:
    """A replayed record that fails again (same id, another reason) is one dead letter, indexed once."""
    (item,) = plant(clean_redis, 1)
    again = {**item, "reason": "braze_rejected", "last_failed_at": item["last_failed_at"] + 5}
    with clean_redis.pipeline(transaction=True) as pipe:
        deadletters.add(pipe, again)
        pipe.execute()
    counted = deadletters.counts(clean_redis, WORKSPACES)
    assert counted.total == 1 and counted.by_reason == {"braze_rejected": 1}


def test_putting_back_a_purged_letter_does_nothing(clean_redis: redis.Redis) -> None:
    """A replay racing a purge: the letter is gone, nothing is put on a lane, the indexes stay empty."""
    (item,) = plant(clean_redis, 1)
    assert deadletters.remove(clean_redis, [item["id"]], WORKSPACES) == 1
    assert deadletters.put_back(clean_redis, item, Delivery()) is None
    assert not clean_redis.keys(KEYS.lane_list("*"))


def test_dead_letters_per_route_are_capped_and_drops_counted(
    client: FlaskClient, clean_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lenient route keeps at most RELAY_DEAD_LETTERS_MAX; the dropped are counted in /metrics."""
    monkeypatch.setenv("RELAY_DEAD_LETTERS_MAX", "30")
    capped = create_app_for(load_settings()).test_client()
    invalid = [{"external_id": "", "plan": n} for n in range(25)]
    for _ in range(2):  # 50 invalid records: 30 kept, 20 dropped
        response = capped.post("/db/profiles_skip", json={"records": invalid}, headers=TD)
        assert response.status_code == 200, response.get_data(as_text=True)
    assert clean_redis.hlen(KEYS.dead) == 30
    assert clean_redis.zcard(KEYS.dead_index) == 30
    text = capped.get("/metrics").get_data(as_text=True)
    assert 'relay_dead_letters_dropped_total{route="profiles_skip"} 20.0' in text
    assert "relay_dead_letters 30.0" in text
    newest = [item["id"] for item in deadletters.iter_entries(clean_redis, WORKSPACES)]
    assert all(dead_id.endswith(tuple(f".{n}" for n in range(5, 25))) for dead_id in newest[:20])


def dead_bytes(client: redis.Redis, route: str) -> int:
    """The route's dead-letter bytes, as the held hash counts them."""
    return int(client.hget(KEYS.held, f"{route}|dead_bytes") or 0)


def stored_bytes(client: redis.Redis, route: str) -> int:
    """The bytes of the route's dead letters, as Redis holds them."""
    ids = client.zrange(KEYS.dead_route(route), 0, -1)
    return sum(int(client.hstrlen(KEYS.dead, dead_id)) for dead_id in ids)


def test_a_route_keeps_at_most_its_bytes_of_dead_letters(clean_redis: redis.Redis) -> None:
    """Past its bytes the route's oldest are dropped (and counted), whatever their number; the count of
    bytes is exactly what Redis holds, through drops, a rewrite of one id and a purge."""
    items = []
    for index in range(30):
        envelope: Envelope = {"id": f"b{index:03d}.0", "route": "events", "kind": "events", "ws": "default"}
        item = deadletters.entry({**envelope, "rec": {"pad": "x" * 1000}, "at": 0.0}, reason="invalid")
        item["last_failed_at"] = 1000.0 + index
        items.append(item)
        with clean_redis.pipeline(transaction=True) as pipe:
            deadletters.add(pipe, item, max_bytes=10_000)
            pipe.execute()
    kept = clean_redis.zrange(KEYS.dead_route("events"), 0, -1)
    assert 0 < len(kept) < 10
    assert [dead_id.decode() for dead_id in kept] == [item["id"] for item in items[-len(kept) :]]
    assert dead_bytes(clean_redis, "events") == stored_bytes(clean_redis, "events") <= 10_000
    dropped = clean_redis.hget(KEYS.metrics, '["relay_dead_letters_dropped",{"route":"events"}]')
    assert int(dropped) == 30 - len(kept)
    with clean_redis.pipeline(transaction=True) as pipe:
        deadletters.add(pipe, items[-1], max_bytes=10_000)  # the same id again: one entry, counted once
        pipe.execute()
    assert dead_bytes(clean_redis, "events") == stored_bytes(clean_redis, "events")
    deadletters.remove(clean_redis, [dead_id.decode() for dead_id in kept], WORKSPACES)
    assert dead_bytes(clean_redis, "events") == 0


def test_exports_of_huge_strings_keep_only_the_start_of_each_record(
    clean_redis: redis.Redis, app: Flask
) -> None:
    """Five one-row exports with a 1 MB string each, to a lenient route: each dead letter keeps the
    start of its record and a note of its size (64 KB at most, where they kept 5 MB), counted; a
    replay says why it cannot send them."""
    client = app.test_client()
    export = {"column_names": ["external_id", "name", "note"], "data": [["u1", "e", "y" * 1_000_000]]}
    headers = {"Authorization": f"TD1 {WRITE_KEY}", "Content-Type": "application/json"}
    for _ in range(5):
        answer = client.put("/export/profiles_skip", json=export, headers=headers)
        assert answer.status_code == 200, answer.get_json()
    assert int(clean_redis.hlen(KEYS.dead)) == 5
    assert stored_bytes(clean_redis, "profiles_skip") == dead_bytes(clean_redis, "profiles_skip") < 5 * 4000
    items = list(deadletters.iter_entries(clean_redis, WORKSPACES))
    for item in items:
        assert item["truncated"].startswith("kept truncated: 1000")
        assert item["envelope"]["rec"]["start"].startswith('{"raw":{"external_id":"u1"')
    truncated = clean_redis.hget(KEYS.metrics, '["relay_dead_letters_truncated",{"route":"profiles_skip"}]')
    assert int(truncated) == 5
    with app.app_context():
        done = operations.replay(clean_redis, items[:1])
    assert done.replayed == 0
    assert "kept truncated" in str(done.still_invalid[0][1])
