"""Storing accepted records (receiver/enqueue.py) on the real Redis: all of a request or none of it, in one
script call or one transaction, then its lanes woken once.

Batches are built as the views build them (the route's real schema loads each record); a full Redis
is a redis-server of the test's own capped at 2 MB under noeviction, filled until little is left.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from rq import Queue
from rq.serializers import JSONSerializer

from receiver.enqueue import Batch, Claim, store_batch
from receiver.records.schemas import schema_for
from relay import audit, deadletters, metrics, store
from relay.config import Settings
from relay.lanes import Lane
from relay.routes import Route
from tests.helpers import KEYS, WORKSPACES, caught_up
from tests.processes import RedisServer
from tests.test_views import (
    EVENT,
    EXPORT,
    INGEST,
    TD_KEY,
    TRACK_LANE,
    error_of,
    export_body,
    ingest_body,
)

EVENTS = Route("events", "user_track", track_record_type="custom_events")
CONSENT = Route("consent", "user_subscription")
SHARDS = 2
ROUTE = (("route", "events"),)


def batch_of(route: Route, records: list[dict[str, Any]], *, invalid: int = 0) -> Batch:
    """A request's batch as the views build it: each record loaded by the route's schema; the last
    `invalid` records refused (as on a skip_on_invalid_records route)."""
    batch = Batch(route=route, request_id="req-1", shards=SHARDS)
    schema = schema_for(route)
    for index, record in enumerate(records[: len(records) - invalid]):
        batch.add(index, schema.load(record))
    for index in range(len(records) - invalid, len(records)):
        batch.invalid.append((index, records[index], {"name": ["Missing data for required field."]}))
    return batch


def events_of(*users: str) -> list[dict[str, Any]]:
    """One custom event per user."""
    return [{"external_id": user, "name": "tap"} for user in users]


def drain_jobs(client: redis.Redis) -> list[str]:
    """The lanes of the drain jobs waiting on the relay's RQ queues."""
    return sorted(
        job.args[0]
        for name in store.RQ_QUEUES
        for job in Queue(name, connection=client, serializer=JSONSerializer).jobs
    )


def waiting_ids(client: redis.Redis, lane: Lane) -> list[str]:
    """The record ids waiting in a lane, oldest first."""
    return [json.loads(raw)["id"] for raw in client.lrange(lane.list_key, 0, -1)]


def users_lane(user: str) -> Lane:
    """The track lane of one user's records."""
    return Lane.track_of("default", {"external_id": user}, SHARDS)


def two_shards() -> tuple[str, str]:
    """Two users whose track records travel in different lanes."""
    first = "ann"
    other = next(f"u{n}" for n in range(100) if users_lane(f"u{n}") != users_lane(first))
    return first, other


def test_records_of_one_lane_are_stored_in_order_and_wake_it_once(
    settings: Settings, clean_redis: redis.Redis
) -> None:
    """A batch's records wait in their lane in order, counted; its first store wakes the lane (one drain
    job), a later store finds it owned and wakes nothing."""
    assert store_batch(clean_redis, batch_of(EVENTS, events_of("ann", "ann", "ann")), settings) is None
    assert store_batch(clean_redis, batch_of(EVENTS, events_of("ann")), settings) is None
    lane = users_lane("ann")
    assert waiting_ids(clean_redis, lane) == ["req-1.0", "req-1.1", "req-1.2", "req-1.0"]
    assert drain_jobs(clean_redis) == [lane.name]
    counts = metrics.read(clean_redis, WORKSPACES)
    assert counts[("relay_records_accepted", ROUTE)] == 4


def test_a_batch_with_more_to_keep_is_one_transaction(
    settings: Settings, clean_redis: redis.Redis, watched: list[str]
) -> None:
    """Records of two lanes with a dead-lettered one: every write in one MULTI/EXEC, then both lanes woken
    (RQ's own transactions enqueue their drain jobs)."""
    first, other = two_shards()
    batch = batch_of(EVENTS, [*events_of(first, other), {"external_id": "bad"}], invalid=1)
    caught_up(clean_redis, watched, "before")
    watched.clear()
    store_batch(clean_redis, batch, settings)
    caught_up(clean_redis, watched, "after")
    names = [line.split()[0].upper() for line in watched]
    multi, done = names.index("MULTI"), names.index("EXEC")
    keys_after = [line.split()[1] for line in watched[done + 1 :] if len(line.split()) > 1]
    assert all(key.startswith("rq:") or key in ("server", "relay-test-after") for key in keys_after), (
        "after the store's transaction, only RQ's own writes (the drain jobs)"
    )
    assert {"RPUSH", "SADD", "EVAL", "HINCRBY", "SET"} <= set(names[multi:done])
    assert not {"RPUSH", "SADD", "EVAL", "HINCRBY", "SET"} & set(names[:multi])
    assert waiting_ids(clean_redis, users_lane(first)) == ["req-1.0"]
    assert waiting_ids(clean_redis, users_lane(other)) == ["req-1.1"]
    assert drain_jobs(clean_redis) == sorted([users_lane(first).name, users_lane(other).name])
    dead = deadletters.get(clean_redis, "req-1.2", WORKSPACES)
    assert dead is not None and dead["reason"] == "invalid"
    assert dead["envelope"]["rec"]["raw"] == {"external_id": "bad"}


def test_a_consent_change_is_in_its_users_trail_from_the_start(
    settings: Settings, clean_redis: redis.Redis
) -> None:
    """Stored consent changes are `received` in their identifier's audit trail, in the same write."""
    change = {"external_id": "ann", "subscription_group_id": "g1", "subscription_state": "subscribed"}
    store_batch(clean_redis, batch_of(CONSENT, [change]), settings)
    (event,) = audit.history(clean_redis, "default", {"external_id": "ann"})
    assert (event["event"], event["record"], event["route"]) == ("received", "req-1.0", "consent")
    assert waiting_ids(clean_redis, Lane("default:consent")) == ["req-1.0"]


def test_a_claimed_request_repeated_gets_the_first_answer_and_stores_nothing(
    settings: Settings, clean_redis: redis.Redis
) -> None:
    """With an idempotency claim, the first store keeps its answer; a repeat gets it back, storing nothing."""
    claim = Claim(KEYS.idempotency("events", "digest-1"), 60, {"accepted": 1, "id": "req-1"})
    assert store_batch(clean_redis, batch_of(EVENTS, events_of("ann")), settings, claim) is None
    repeat = Batch(route=EVENTS, request_id="req-2", shards=SHARDS)
    repeat.add(0, schema_for(EVENTS).load(events_of("ann")[0]))
    assert store_batch(clean_redis, repeat, settings, claim) == {"accepted": 1, "id": "req-1"}
    assert waiting_ids(clean_redis, users_lane("ann")) == ["req-1.0"]
    assert 0 < clean_redis.ttl(claim.key) <= 60


# --- a full Redis ---------------------------------------------------------------------------------

FILLER_CHUNK = 16 * 1024
# What the small Redis has left: room for a small export and the connections' own buffers (Redis 7
# counts more per client than 6.2), not for 500 records of about 1.5 KB each.
HEADROOM = 384 * 1024


@pytest.fixture
def small_redis(own_redis: Callable[..., RedisServer]) -> redis.Redis:
    """A redis-server of the test's own capped at 2 MB (noeviction), stopped at the end."""
    server = own_redis("--appendonly", "no", "--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
    return redis.Redis(port=server.port)


@pytest.fixture
def full_redis_client(small_redis: redis.Redis, build_client: Callable[..., FlaskClient]) -> FlaskClient:
    """The app on the small Redis, filled with filler keys until only HEADROOM bytes are left."""
    limit = int(small_redis.config_get("maxmemory")["maxmemory"])
    index = 0
    while int(small_redis.info("memory")["used_memory"]) < limit - HEADROOM:
        small_redis.set(f"filler:{index}", b"x" * FILLER_CHUNK)
        index += 1
    port = small_redis.connection_pool.connection_kwargs["port"]
    return build_client(REDIS_URL=f"redis://127.0.0.1:{port}/0")


def relay_keys(client: redis.Redis) -> list[bytes]:
    """Every key but the filler."""
    return [key for key in client.keys("*") if not key.startswith(b"filler:")]


def test_full_redis_is_503_and_nothing_half_stored(
    full_redis_client: FlaskClient, small_redis: redis.Redis
) -> None:
    """When Redis refuses the write (out of memory), the batch is 503 and none of its records is stored."""
    notes = {f"note{n}": "n" * 250 for n in range(6)}
    records = [{**EVENT, "external_id": f"u{i}", **notes} for i in range(500)]
    answer = error_of(full_redis_client.post(INGEST, data=ingest_body(records), headers=TD_KEY), 503)
    assert "nothing was stored" in answer["message"]
    assert small_redis.llen(TRACK_LANE) == 0
    assert relay_keys(small_redis) == []


def test_full_redis_still_takes_an_export_that_fits(
    full_redis_client: FlaskClient, small_redis: redis.Redis
) -> None:
    """A small export that fits in what Redis has left is accepted (200) and stored."""
    response = full_redis_client.put(EXPORT, data=export_body([EVENT]), headers=TD_KEY)
    assert response.status_code == 200, response.get_json()
    assert small_redis.llen(TRACK_LANE) == 1
