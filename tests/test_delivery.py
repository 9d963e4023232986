"""Delivery under Braze's faults: retries, 429 pauses, partial errors, splits, dead letters, ordering."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from braze_sim.server import Simulator
from relay import deadletters, metrics, store
from relay.lanes import Lane
from tests.helpers import WORKSPACES, WRITE_KEY

HEADERS = {"Authorization": f"TD1 {WRITE_KEY}"}


def ingest(client: FlaskClient, table: str, records: list[dict[str, Any]]) -> None:
    """Send records through the TD ingestion endpoint; require a 200."""
    response = client.post(f"/db/{table}", json={"records": records}, headers=HEADERS)
    assert response.status_code == 200, response.get_json()


def events(user: str, count: int, name: str = "tap") -> list[dict[str, Any]]:
    """`count` custom events for one user, numbered in `seq`."""
    return [{"external_id": user, "name": name, "seq": seq} for seq in range(count)]


def seqs(braze: Simulator, user: str) -> list[int]:
    """The `seq` property of the user's events in Braze."""
    profile = braze.state.profile(user) or {}
    return sorted(event["properties"]["seq"] for event in profile.get("events", []))


def dead(client: redis.Redis) -> list[dict[str, Any]]:
    """Every dead letter."""
    return list(deadletters.iter_entries(client, WORKSPACES))


def track_calls(braze: Simulator) -> list[dict[str, Any]]:
    """The simulator's log of /users/track requests."""
    return [entry for entry in braze.requests if entry["path"] == "/users/track"]


def test_one_record_postbacks_are_batched(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """300 one-record postbacks cost a handful of Braze requests, never more than 75 events each."""
    for record in events("batch-user", 300):
        response = client.post(
            "/postback/v3/event/db/events", json=record, headers={"X-TD-Write-Key": WRITE_KEY}
        )
        assert response.status_code == 200
    drain()
    assert seqs(braze, "batch-user") == list(range(300))
    calls = track_calls(braze)
    assert len(calls) == 4
    assert all(len(call["body"]["events"]) <= 75 for call in calls)


def post_mixed(client: FlaskClient, users: int) -> None:
    """An attribute update, an event and a purchase for each of `users` users, queued together (in the
    order Braze applies a request's arrays, so each user's three may share a request)."""
    people = [f"mix-{n}" for n in range(users)]
    ingest(client, "profiles", [{"external_id": user, "tier": "gold"} for user in people])
    ingest(client, "events", [{"external_id": user, "name": "tap"} for user in people])
    purchases = [{"external_id": user, "product_id": "p", "currency": "USD", "price": 1} for user in people]
    ingest(client, "purchases", purchases)


def objects(call: dict[str, Any]) -> dict[str, int]:
    """How many objects each array of a logged /users/track request held."""
    return {name: len(call["body"].get(name, [])) for name in ("attributes", "events", "purchases")}


def test_mixed_requests_never_exceed_75_combined_by_default(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """Braze's default (https://www.braze.com/docs/api/api_limits/: "Up to 75 total objects combined
    across attributes, events, and purchases per API request"), which the simulator enforces: 300
    mixed objects go in requests of at most 75 across the arrays, each taken (201), mixing arrays."""
    post_mixed(client, 100)
    drain()
    calls = track_calls(braze)
    assert {call["status"] for call in calls} == {201}
    assert max(sum(objects(call).values()) for call in calls) == 75
    assert any(sum(1 for count in objects(call).values() if count) > 1 for call in calls)
    assert len(braze.state.profile("mix-99")["events"]) == 1
    assert sum(sum(objects(call).values()) for call in calls) == 300


@pytest.mark.relay_env(BRAZE_TRACK_PER_ARRAY="75", BRAZE_TRACK_COMBINED_LIMIT="0")
def test_legacy_setting_packs_75_per_array(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """A legacy contract (https://www.braze.com/docs/api/api_limits/: "up to 75 objects per array
    independently"), with the simulator taking it too: 75 events, 75 purchases and 75 attribute
    updates share one request."""
    braze.config.combined_limit = None
    post_mixed(client, 75)
    drain()
    calls = track_calls(braze)
    assert {call["status"] for call in calls} == {201}
    assert [objects(call) for call in calls] == [{"attributes": 75, "events": 75, "purchases": 75}]


def test_5xx_is_retried_until_delivered(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """Two 500s in a row: the batch is sent again with backoff and lands once, nothing dead-lettered."""
    braze.faults.fail_next = 2
    ingest(client, "events", events("retry-user", 10))
    drain()
    assert seqs(braze, "retry-user") == list(range(10))
    assert [call["status"] for call in track_calls(braze)] == [500, 500, 201]
    assert dead(clean_redis) == []


def test_persistent_5xx_ends_in_dead_letters(
    client: FlaskClient,
    drain: Callable[..., None],
    braze: Simulator,
    clean_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Braze down for good: after the configured attempts every record is dead-lettered with its reason."""
    braze.faults.error_rate = 1.0
    braze.faults.error_status = 503
    ingest(client, "events", events("down-user", 5))
    drain(timeout=30)
    letters = dead(clean_redis)
    assert len(letters) == 5
    assert {letter["reason"] for letter in letters} == {"retries_exhausted"}
    assert all(letter["attempts"] == 8 for letter in letters)
    assert all("503" in letter["message"] for letter in letters)
    assert len(track_calls(braze)) == 8


def test_429_pauses_the_family_until_reset(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """After a 429, no request goes to /users/track before X-RateLimit-Reset; then all is delivered."""
    braze.faults.rate_limit_next = 1
    braze.faults.rate_limit_reset_s = 1.5
    ingest(client, "events", events("limited-user", 20))
    drain()
    calls = track_calls(braze)
    limited = [call for call in calls if call["status"] == 429]
    assert len(limited) == 1
    reset = math.ceil(limited[0]["time"] + 1.5)  # the simulator's X-RateLimit-Reset for this fault
    later = [call for call in calls if call["time"] > limited[0]["time"]]
    assert later and all(call["time"] >= reset for call in later)
    assert seqs(braze, "limited-user") == list(range(20))


def test_partial_errors_dead_letter_only_the_named_items(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """A 201 with `errors`: only the items Braze named are dead-lettered, the rest land once, no resend."""
    braze.faults.reject_item = lambda array, obj: "bad event" if obj.get("name") == "bad" else None
    records = events("partial-user", 10)
    records[3]["name"] = records[7]["name"] = "bad"
    ingest(client, "events", records)
    drain()
    assert seqs(braze, "partial-user") == [0, 1, 2, 4, 5, 6, 8, 9]
    letters = dead(clean_redis)
    assert sorted(letter["envelope"]["rec"]["properties"]["seq"] for letter in letters) == [3, 7]
    assert {letter["reason"] for letter in letters} == {"braze_rejected_item"}
    assert all("bad event" in letter["message"] for letter in letters)
    assert len(track_calls(braze)) == 1


def test_413_splits_the_batch(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """Braze refuses a body as too large: halves go until they fit; a record over the limit is dead."""
    braze.config.max_body_bytes = 3000
    records = [{**record, "note": "x" * 200} for record in events("big-user", 20)]
    records.append({"external_id": "big-user", "name": "huge", "seq": 99, "blob": ["y" * 250] * 20})
    ingest(client, "events", records)
    drain()
    assert seqs(braze, "big-user") == list(range(20))
    (letter,) = dead(clean_redis)
    assert letter["status"] == 413 and letter["envelope"]["rec"]["properties"]["seq"] == 99
    braze.config.max_body_bytes = 4 * 1024 * 1024


def test_401_dead_letters_at_once(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """A wrong Braze key is not retried: every record is dead-lettered with Braze's status and message."""
    braze.config.api_key = "rotated-in-braze"
    try:
        ingest(client, "events", events("auth-user", 3))
        drain()
    finally:
        braze.config.api_key = "test-braze-key-5f1c"
    letters = dead(clean_redis)
    assert len(letters) == 3
    assert {(letter["reason"], letter["status"]) for letter in letters} == {("braze_rejected", 401)}
    assert len(track_calls(braze)) == 1


def test_ambiguous_timeout_is_not_resent_for_events(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """No answer after the body was sent: events are dead-lettered as ambiguous, never sent twice."""
    braze.faults.slow_rate = 1.0
    braze.faults.slow_ms = 2500  # over the relay's 2 s read timeout in the test environment
    ingest(client, "events", events("slow-user", 3))
    drain()
    letters = dead(clean_redis)
    assert len(letters) == 3
    assert {letter["reason"] for letter in letters} == {"ambiguous"}
    assert len(track_calls(braze)) == 1


def test_ambiguous_timeout_is_retried_for_attributes(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """Attributes are safe to resend: after a timeout they are retried and nothing is dead-lettered."""
    braze.faults.slow_rate = 1.0
    braze.faults.slow_ms = 2500
    ingest(client, "profiles", [{"external_id": "slow-attr", "plan": "gold"}])
    # Let the first attempt time out, then answer promptly.
    braze.faults.slow_rate = 0.0
    drain()
    assert braze.state.profile("slow-attr")["attributes"] == {"plan": "gold"}
    assert dead(clean_redis) == []


def test_newest_attribute_wins_over_a_late_older_record(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """A newer value that needed a retry is not overwritten by an older record that arrives later."""
    braze.faults.fail_next = 1
    ingest(client, "profiles", [{"external_id": "order-user", "tier": "new", "time": 2000}])
    drain(once=True)  # the first attempt fails: the newer record waits in the retry set
    ingest(client, "profiles", [{"external_id": "order-user", "tier": "old", "time": 1000}])
    drain()
    assert braze.state.profile("order-user")["attributes"] == {"tier": "new"}
    counted = metrics.read(clean_redis, ["default"])
    assert counted[("relay_records_superseded", (("route", "profiles"),))] == 1


def test_records_in_one_batch_keep_the_newest(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """Within one batch, an older record after a newer one for the same field is dropped."""
    ingest(
        client,
        "profiles",
        [
            {"external_id": "batch-order", "tier": "b", "time": 2000},
            {"external_id": "batch-order", "tier": "a", "time": 1000, "city": "Oslo"},
        ],
    )
    drain()
    assert braze.state.profile("batch-order")["attributes"] == {"tier": "b", "city": "Oslo"}


def test_shared_rate_limit_holds(
    client: FlaskClient,
    drain: Callable[..., None],
    braze: Simulator,
    clean_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a limit of 3 track requests per second, the relay never sends more, and never sees a 429."""
    braze.config.limits["track"] = (3, 1.0)
    monkeypatch.setenv("BRAZE_RATE_TRACK", "3/second")
    from handlers import context
    from relay.config import load_settings

    context.install(context.Context(load_settings(), clean_redis))
    ingest(client, "events", events("paced-user", 500))
    ingest(client, "events", events("paced-user-2", 400))
    drain(timeout=30)
    context.install(context.Context(load_settings(), clean_redis))
    # The relay paces to the limit exactly (3 requests, then the 4th just after the first one's
    # second is over); the simulator stamps arrivals in this same process (one GIL), up to ~0.1 s
    # late, so its sliding window is measured slightly short.
    assert braze.max_accepted_in_window("track", 0.9) <= 3
    assert all(call["status"] != 429 for call in track_calls(braze))
    assert seqs(braze, "paced-user") == list(range(500))


def test_dead_letter_entry_holds_route_reason_and_times(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """A dead letter says its route, record, reason, Braze status and message, attempts and times."""
    braze.faults.reject_item = lambda array, obj: "no good"
    ingest(client, "events", events("dl-user", 1))
    drain()
    (letter,) = dead(clean_redis)
    assert letter["route"] == "events"
    assert letter["status"] == 400  # every item refused: Braze answers 400 for the request
    assert letter["attempts"] == 1
    assert letter["first_failed_at"] <= letter["last_failed_at"]
    assert json.dumps(letter)  # JSON-safe as stored


def test_400_batch_is_narrowed_to_the_bad_record(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """Braze refuses a whole batch for one record: halving isolates it; the other 74 land."""

    def poisoned(path: str, body: dict[str, Any]) -> str | None:
        names = [event.get("name") for event in body.get("events", [])]
        return "'name' is malformed" if "poison" in names else None

    braze.faults.reject_request = poisoned
    records = events("narrow-user", 75)
    records[41]["name"] = "poison"
    ingest(client, "events", records)
    drain()
    assert seqs(braze, "narrow-user") == [seq for seq in range(75) if seq != 41]
    (letter,) = dead(clean_redis)
    assert letter["envelope"]["rec"]["properties"]["seq"] == 41
    assert (letter["reason"], letter["status"]) == ("braze_rejected", 400)
    assert "'name' is malformed" in letter["message"]
    assert len(track_calls(braze)) <= 1 + 2 * 7  # log2(75) rounds of two halves at most


def test_one_request_with_old_and_new_states_keeps_the_newest(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """Three states of one email in one batch: only the newest is sent, whatever the body's grouping."""
    braze.state.seed_profile(email="flip@example.com")
    states = [("subscribed", 1000), ("unsubscribed", 1005), ("subscribed", 1010), ("unsubscribed", 1001)]
    records = [
        {
            "email": "flip@example.com",
            "subscription_group_id": "g1",
            "subscription_state": state,
            "time": when,
        }
        for state, when in states
    ]
    ingest(client, "consent", records)
    drain()
    assert braze.state.find(email="flip@example.com")["subscription_groups"] == {"g1": "subscribed"}
    calls = [entry for entry in braze.requests if entry["path"] == "/v2/subscription/status/set"]
    # The newest alone, sent at once and once more after the user's earlier records (none here).
    assert len(calls) == 2
    for call in calls:
        assert call["body"]["subscription_groups"] == [
            {
                "subscription_group_id": "g1",
                "subscription_state": "subscribed",
                "emails": ["flip@example.com"],
            }
        ]


def test_track_lanes_split_by_user_and_keep_each_users_order(
    clean_redis: redis.Redis, braze: Simulator, monkeypatch: pytest.MonkeyPatch, settings: object
) -> None:
    """Two track shards: users spread over both lanes, each user in one; all delivered, newest wins."""
    from rq.serializers import JSONSerializer

    from handlers import context
    from handlers.worker import RelayWorker, tick
    from relay.config import load_settings
    from tests.helpers import create_app_for

    monkeypatch.setenv("RELAY_TRACK_SHARDS", "2")
    sharded = load_settings()
    client = create_app_for(sharded).test_client()
    records = [
        {"external_id": f"shard-{user}", "tier": f"t{step}", "time": 1000 + step}
        for step in range(3)
        for user in range(20)
    ]
    assert client.post("/db/profiles", json={"records": records}, headers=HEADERS).status_code == 200
    waiting = [clean_redis.llen(Lane(f"default:track.{shard}").list_key) for shard in (0, 1)]
    assert sum(waiting) == 60 and min(waiting) > 0
    assert all(count % 3 == 0 for count in waiting), "a user's three records share one lane"
    context.install(context.Context(sharded, clean_redis))
    lanes = Lane.configured(sharded.routes.values(), 2)
    for _ in range(20):
        tick(clean_redis, sharded.delivery, lanes)
        RelayWorker(["relay-consent", "relay-bulk"], connection=clean_redis, serializer=JSONSerializer).work(
            burst=True, logging_level="WARNING"
        )
        if not any(clean_redis.llen(Lane(f"default:track.{shard}").list_key) for shard in (0, 1)):
            break
    for user in range(20):
        assert braze.state.profile(f"shard-{user}")["attributes"] == {"tier": "t2"}


def test_chunks_commit_while_later_requests_are_in_flight(
    clean_redis: redis.Redis, braze: Simulator, monkeypatch: pytest.MonkeyPatch, settings: object
) -> None:
    """Rule "Several requests in flight": chunks commit in order while later ones fly; each record once."""
    from handlers import context
    from relay.config import load_settings
    from tests.helpers import create_app_for

    monkeypatch.setenv(
        "RELAY_INFLIGHT", "2"
    )  # chunks of 150 records: many commits, requests always in flight
    narrow = load_settings()
    braze.faults.latency_ms = 30
    client = create_app_for(narrow).test_client()
    records = [{"external_id": f"chunk-{n}", "name": "tap", "seq": n} for n in range(1500)]
    for start in range(0, 1500, 500):
        ingest(client, "events", records[start : start + 500])
    context.install(context.Context(narrow, clean_redis))
    drain_with(narrow, clean_redis)
    delivered = [
        event["properties"]["seq"] for call in track_calls(braze) for event in call["body"]["events"]
    ]
    assert sorted(delivered) == list(range(1500)), "a record lost or sent twice"
    counted = metrics.read(clean_redis, ["default"])
    assert counted[("relay_records_delivered", (("route", "events"),))] == 1500


def drain_with(settings: Any, client: redis.Redis, timeout: float = 30.0) -> None:
    """The real worker in this process, on these settings, until every lane is empty."""
    import time

    from rq.serializers import JSONSerializer

    from handlers.worker import RelayWorker, tick
    from tests.helpers import lanes_busy

    deadline = time.monotonic() + timeout
    while True:
        tick(
            client,
            settings.delivery,
            Lane.configured(settings.routes.values(), settings.delivery.track_shards),
        )
        RelayWorker(
            [store.QUEUE_CONSENT, store.QUEUE_BULK], connection=client, serializer=JSONSerializer
        ).work(burst=True, logging_level="WARNING")
        if not lanes_busy(client):
            return
        assert time.monotonic() < deadline, "lanes still hold records after the timeout"
        time.sleep(0.05)
