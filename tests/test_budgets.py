"""A route's budgets (relay/budgets.py) on the relay's app and the real Redis: what a route holds queued,
records per minute, and the counts that keep them, from acceptance to every ending."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask.testing import FlaskClient

from braze_sim.server import Simulator
from handlers.worker import tick
from receiver.admin import operations
from relay import budgets, deadletters, envelope
from relay.config import Settings
from relay.lanes import Lane
from tests.helpers import KEYS, ROUTES, WORKSPACES, WRITE_KEY
from tests.processes import Processes, RedisServer, running_stack

TD = {"X-TD-Write-Key": WRITE_KEY, "Content-Type": "application/json"}
BUDGET_ROUTES = """
[routes.few]
database = "db"
table = "few"
mode = "user_track"
track_record_type = "custom_events"
max_queued_records = 3

[routes.few_lenient]
database = "db"
table = "few_lenient"
mode = "user_track"
track_record_type = "custom_events"
skip_on_invalid_records = true
max_queued_records = 3

[routes.small]
database = "db"
table = "small"
mode = "user_track"
track_record_type = "custom_events"
max_queued_bytes = 2000

[routes.segment]
mode = "user_track"
track_record_type = "custom_events"
preset = "segment"

[routes.per_minute]
database = "db"
table = "per_minute"
mode = "user_track"
track_record_type = "custom_events"
records_per_minute = 4

[routes.deduplicated]
database = "db"
table = "deduplicated"
mode = "user_track"
track_record_type = "custom_events"
dedup_key = "messageId"
max_queued_records = 3
"""


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    """The tests' routes, and routes with small budgets."""
    path = tmp_path / "relay.toml"
    path.write_text(ROUTES + BUDGET_ROUTES)
    return path


def event(n: int, **extra: Any) -> dict[str, Any]:
    """One custom event of its own user."""
    return {"external_id": f"budget-u{n}", "name": "opened", **extra}


def ingest(client: FlaskClient, table: str, records: list[dict[str, Any]], **headers: str) -> Any:
    """An ingestion request to db/<table>."""
    return client.post(f"/db/{table}", data=json.dumps({"records": records}), headers={**TD, **headers})


def held(client: redis.Redis, route: str) -> tuple[int, int]:
    """The route's queued records and bytes, as the held hash counts them."""
    counts = budgets.held(client, WORKSPACES)
    return counts.get((route, "records"), 0), counts.get((route, "bytes"), 0)


def stored_bytes(client: redis.Redis) -> int:
    """Bytes of every record waiting in a lane or its retry set."""
    total = 0
    for key in client.scan_iter(KEYS.lane_list("*")):
        total += sum(len(raw) for raw in client.lrange(key, 0, -1))
    for key in client.scan_iter(KEYS.lane_retry("*")):
        total += sum(len(raw) for raw in client.zrange(key, 0, -1))
    return total


def refusals(client: FlaskClient) -> dict[tuple[str, str], float]:
    """relay_budget_refusals_total by (route, budget), as /metrics shows it."""
    found = {}
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith("relay_budget_refusals_total{"):
            labels, value = line[len("relay_budget_refusals_total{") :].split("} ")
            pairs = dict(part.split("=") for part in labels.split(","))
            found[(pairs["route"].strip('"'), pairs["budget"].strip('"'))] = float(value)
    return found


def test_a_route_holding_its_most_records_is_refused_429_until_they_are_delivered(
    client: FlaskClient, clean_redis: redis.Redis, drain: Callable[..., None]
) -> None:
    """Three records queued on a route of three: the fourth is 429 with Retry-After and nothing of it is
    stored, another route still takes records; once they are delivered the route takes records again."""
    assert ingest(client, "few", [event(1), event(2)]).status_code == 200
    assert ingest(client, "few", [event(3)]).status_code == 200
    assert held(clean_redis, "few") == (3, stored_bytes(clean_redis))
    refused = ingest(client, "few", [event(4)])
    assert refused.status_code == 429, refused.get_data(as_text=True)
    assert refused.headers["Retry-After"] == "60"
    body = refused.get_json()
    assert body["errors"] == {"route": "few", "budget": "queued_records", "limit": 3}
    assert held(clean_redis, "few")[0] == 3
    assert ingest(client, "events", [event(5)]).status_code == 200
    assert refusals(client) == {("few", "queued_records"): 1.0}
    drain()
    assert held(clean_redis, "few") == (0, 0)
    assert ingest(client, "few", [event(4)]).status_code == 200


def test_one_request_over_the_budget_alone_is_413(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """Four records to a route of three: 413 (no wait would let it in), nothing stored."""
    refused = ingest(client, "few", [event(n) for n in range(4)])
    assert refused.status_code == 413
    assert "Retry-After" not in refused.headers
    assert held(clean_redis, "few") == (0, 0)


def test_the_transaction_path_keeps_the_budget_too(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """Requests stored in a MULTI (an idempotency key, dead letters) are counted and refused."""
    assert ingest(client, "few_lenient", [event(1), {"name": "no user"}]).status_code == 200
    assert ingest(client, "few_lenient", [event(2), event(3)], **{"Idempotency-Key": "k1"}).status_code == 200
    assert held(clean_redis, "few_lenient") == (3, stored_bytes(clean_redis))
    assert ingest(client, "few_lenient", [event(4)], **{"Idempotency-Key": "k2"}).status_code == 429
    repeat = ingest(client, "few_lenient", [event(2), event(3)], **{"Idempotency-Key": "k1"})
    assert repeat.status_code == 200  # a repeat is answered as the first time, whatever the counts
    assert held(clean_redis, "few_lenient")[0] == 3


def test_bytes_queued_are_a_budget(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """A route of 2,000 bytes takes records until their stored bytes would pass it."""
    padded = [event(n, note="x" * 200) for n in range(8)]
    answers = [ingest(client, "small", [record]).status_code for record in padded]
    assert 200 in answers
    assert answers[-1] == 429
    assert answers == sorted(answers)  # once refused, refused
    records, size = held(clean_redis, "small")
    assert size == stored_bytes(clean_redis) <= 2000
    assert records == answers.count(200)


def test_records_per_minute_are_refused_until_the_next_minute(
    client: FlaskClient, clean_redis: redis.Redis
) -> None:
    """Four records a minute: the fifth of the minute is 429 with Retry-After up to the next minute."""
    if time.time() % 60 > 50:  # the test's requests must fall in one minute of the clock
        time.sleep(61 - time.time() % 60)
    for n in range(4):
        assert ingest(client, "per_minute", [event(n)]).status_code == 200
    refused = ingest(client, "per_minute", [event(4)])
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.get_json()["errors"]["budget"] == "records_per_minute"


def test_every_ending_takes_its_record_off_the_counts(
    client: FlaskClient,
    clean_redis: redis.Redis,
    drain: Callable[..., None],
    braze: Simulator,
    settings: Settings,
) -> None:
    """Delivered, retried, dead-lettered, replayed, consent sent once more: the counts end at zero, exactly.

    A retry holds its record as rewritten (its bytes counted again), a dead letter leaves the counts
    and a replay adds it back; the consent change a worker sends once more is not the route's.
    """
    braze.faults.fail_next = 1  # the first Braze request fails with 500: its records are retried
    braze.faults.reject_item = lambda array, obj: "refused" if obj.get("name") == "bad" else None
    assert ingest(client, "events", [event(1), event(2, name="bad")]).status_code == 200
    consent = {"external_id": "budget-u1", "subscription_group_id": "g1", "subscription_state": "subscribed"}
    assert ingest(client, "consent", [consent]).status_code == 200
    assert held(clean_redis, "events") == (2, stored_bytes(clean_redis) - held(clean_redis, "consent")[1])
    drain()
    assert held(clean_redis, "events") == (0, 0)
    assert held(clean_redis, "consent") == (0, 0)
    (letter,) = deadletters.iter_entries(clean_redis, WORKSPACES)
    braze.faults.reject_item = None
    with client.application.app_context():
        assert operations.replay(clean_redis, [letter]).replayed == 1
    assert held(clean_redis, "events") == (1, stored_bytes(clean_redis))
    drain()
    assert held(clean_redis, "events") == (0, 0)


def test_counts_a_version_before_them_did_not_keep_heal_when_the_lanes_are_empty(
    client: FlaskClient, clean_redis: redis.Redis, drain: Callable[..., None], settings: Settings
) -> None:
    """A record queued without being counted (by a version before the budgets) leaves the counts below
    zero when it ends; the worker's ticker puts them back at nothing once every lane is empty."""
    assert ingest(client, "events", [event(1)]).status_code == 200
    lane = KEYS.lane_list("track")
    (raw,) = clean_redis.lrange(lane, 0, -1)
    older = envelope.loads(raw)
    older["id"], older["rec"]["_id"] = "older.0", {"external_id": "budget-u9"}
    uncounted = envelope.dumps(older)
    clean_redis.rpush(lane, uncounted)  # as an older edge stored it
    drain()
    assert held(clean_redis, "events") == (-1, -len(uncounted))
    tick(
        clean_redis,
        settings.delivery,
        Lane.configured(settings.routes.values(), settings.delivery.track_shards),
    )
    assert held(clean_redis, "events") == (0, 0)


PAGE_KEY = "page-key-public-7e3a"
PAGE_ROUTE = """
[routes.page]
database = "web"
table = "events"
mode = "user_track"
track_record_type = "custom_events"
write_keys_env = "PAGE_KEYS"
allowed_origins = ["https://shop.example.com"]
"""


@pytest.mark.e2e
def test_a_public_key_cannot_fill_redis_for_every_route(
    tmp_path: Path, braze: Simulator, own_redis: Callable[..., RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Redis at 24 MB, a page's key posting 500 events a request is refused 429 by its route's
    defaults long before Redis is full: the consent route, on the same Redis, still stores (on a relay
    without budgets the page's key filled it and every route answered 503)."""
    server = own_redis("--maxmemory", "24mb", "--maxmemory-policy", "noeviction")
    routes = tmp_path / "relay.toml"
    routes.write_text(ROUTES + PAGE_ROUTE)
    monkeypatch.setenv("PAGE_KEYS", PAGE_KEY)
    flood = {"records": [event(n, page_url=f"https://shop.example.com/p/{n}" * 4) for n in range(500)]}
    body = json.dumps(flood).encode()
    with running_stack(tmp_path, routes, braze, server.url) as (_, base):
        statuses = []
        for _ in range(200):
            answer = requests.post(
                f"{base}/web/events", data=body, headers={**TD, "X-TD-Write-Key": PAGE_KEY}, timeout=30
            )
            statuses.append(answer.status_code)
            if answer.status_code != 200:
                break
        assert statuses[-1] == 429, statuses
        assert answer.json()["errors"]["budget"] == "records_per_minute"
        memory = redis.Redis.from_url(server.url).info("memory")
        assert memory["used_memory"] < memory["maxmemory"] / 2
        consent = {"external_id": "u-1", "subscription_group_id": "g1", "subscription_state": "unsubscribed"}
        stored = requests.post(f"{base}/db/consent", json={"records": [consent]}, headers=TD, timeout=30)
        assert stored.status_code == 200, stored.text


@pytest.mark.e2e
def test_a_segment_body_cannot_make_a_hundred_times_its_size_in_records(
    stack: tuple[Processes, str], clean_redis: redis.Redis
) -> None:
    """20 Order Completed calls of 1,000 empty products (62 KB) are refused 413 naming the route,
    where they made 20,000 purchases; nothing is stored, and /healthz answers throughout."""
    _, base = stack
    order = {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "properties": {"products": [{}] * 1000},
    }
    body = json.dumps([order] * 20).encode()
    answer = requests.post(
        f"{base}/webhooks/segment",
        data=body,
        headers={"Authorization": f"Bearer {WRITE_KEY}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert answer.status_code == 413, answer.text[:300]
    assert answer.json()["errors"]["budget"] == "transform_records"
    assert "'segment'" in answer.json()["message"]
    assert list(clean_redis.scan_iter(KEYS.lane_list("*"))) == []
    assert requests.get(f"{base}/healthz", timeout=10).status_code == 200


def test_a_page_routes_defaults_are_tighter_and_its_own_keys_win() -> None:
    """allowed_origins: the tighter of the defaults and the page's (600 records a minute where they are
    remembered per user, attributes and consent; 6,000 others), no exports, 256 KB bodies; a route's
    own keys override either."""
    defaults = budgets.Budgets(queued_records=50_000)
    page = budgets.resolve({}, defaults, page=True)
    assert (page.queued_records, page.queued_bytes, page.records_per_minute) == (50_000, 50_000_000, 6_000)
    assert (page.body_bytes, page.exports) == (256 * 1024, False)
    assert budgets.resolve({}, defaults, page=True, remembers=True).records_per_minute == 600
    own = budgets.resolve({"records_per_minute": 20_000, "max_body_bytes": 10}, defaults, page=True)
    assert (own.records_per_minute, own.body_bytes) == (20_000, 10)
    private = budgets.resolve({}, defaults, page=False)
    assert (private.records_per_minute, private.body_bytes, private.exports) == (0, None, True)


def test_the_example_page_routes_get_the_page_defaults() -> None:
    """relay.example.toml's browser routes: events 6,000 a minute, consent 600, no exports."""
    from relay.routes import Workspace, load_routes
    from relay.secrets import Secret
    from tests.processes import ROOT

    environ = {"SDK_WRITE_KEYS": "k", "PRIVACY_WRITE_KEYS": "p"}
    routes, _ = load_routes(
        str(ROOT / "relay.example.toml"), Workspace("default", "http://b", Secret("x")), environ
    )
    assert routes["sdk_events"].budgets.records_per_minute == 6_000
    assert routes["sdk_consent"].budgets.records_per_minute == 600
    assert not routes["sdk_events"].budgets.exports
    assert routes["segment"].budgets == budgets.DEFAULTS


def test_a_repeat_left_out_is_not_held(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """A dedup_key route holds the records it stores, not the repeats it leaves out, on both paths:
    the same three events sent again and again never fill its budget of three."""
    three = [event(n, messageId=f"m{n}") for n in range(3)]
    for _ in range(3):
        assert ingest(client, "deduplicated", three).status_code == 200  # one script
        keyed = ingest(client, "deduplicated", three, **{"Idempotency-Key": str(uuid.uuid4())})
        assert keyed.status_code == 200  # a transaction (the request has an identity)
    assert held(clean_redis, "deduplicated") == (3, stored_bytes(clean_redis))
    assert ingest(client, "deduplicated", [event(9, messageId="m9")]).status_code == 429
