"""Record-level deduplication (relay/dedup.py): a route's dedup_key names each input; a repeat within
its window is answered as accepted, counted, and never stored or sent again: across requests, within
one, across routes sharing a sender, and for exports re-sent whole. TD exports of exactly 100,000
rows are counted as probably truncated."""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from braze_sim.server import Simulator
from relay import deadletters, metrics, store
from relay.config import load_settings
from relay.errors import ConfigError
from tests.helpers import REDIS_URL, ROUTES, SAMPLES, WORKSPACES, WRITE_KEY, lanes_busy, relay_environment
from tests.processes import Processes, wait_for

TD = {"X-TD-Write-Key": WRITE_KEY}
BEARER = {"Authorization": f"Bearer {WRITE_KEY}"}
OWN_KEY = "own-write-key-7d1f"
DEDUP_ROUTES = """
[routes.stream]
database = "db"
table = "stream"
mode = "user_track"
track_record_type = "custom_events"
dedup_key = "messageId"
dedup_window_s = 3600

[routes.stream_mirror]
database = "db"
table = "stream_mirror"
mode = "user_track"
track_record_type = "custom_events"
dedup_key = "messageId"

[routes.stream_own_keys]
database = "db"
table = "stream_own_keys"
mode = "user_track"
track_record_type = "custom_events"
dedup_key = "messageId"
write_keys_env = "OWN_WRITE_KEYS"

[routes.orders]
mode = "user_track"
track_record_type = "purchases"
dedup_key = '"order:" + (.order_id | tostring)'

[routes.rows]
mode = "user_track"
track_record_type = "user_profile_attributes"
dedup_key = "."

[routes.meta_keyed]
database = "db"
table = "meta_keyed"
mode = "user_track"
track_record_type = "custom_events"
dedup_key = ".meta.id"

[routes.segment_once]
mode = "user_track"
track_record_type = "custom_events"
preset = "segment"
dedup_key = "messageId"
"""


@pytest.fixture
def routes_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tests' routes and routes that deduplicate records."""
    monkeypatch.setenv("OWN_WRITE_KEYS", OWN_KEY)
    path = tmp_path / "relay.toml"
    path.write_text(ROUTES + DEDUP_ROUTES)
    return path


def postback(client: FlaskClient, table: str, record: dict[str, Any], headers: dict[str, str] = TD) -> None:
    """One TD postback; require TD's answer, {}."""
    response = client.post(f"/postback/v3/event/db/{table}", json=record, headers=headers)
    assert (response.status_code, response.get_json()) == (200, {}), response.get_json()


def export(client: FlaskClient, route: str, names: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    """One TD export, as TD's web export sends it; require 200 and return the answer."""
    basic = base64.b64encode(f"td:{WRITE_KEY}".encode()).decode()
    body = {"column_names": names, "column_types": ["string"] * len(names), "data": rows}
    response = client.put(f"/export/{route}", json=body, headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 200, response.get_json()
    answer: dict[str, Any] = response.get_json()
    return answer


def duplicates(client: redis.Redis, route: str) -> float:
    """The route's relay_records_duplicate count."""
    return metrics.read(client, WORKSPACES).get((metrics.DUPLICATES.name, (("route", route),)), 0.0)


def names(braze: Simulator, user: str) -> list[str]:
    """The names of a user's events in Braze."""
    return [event["name"] for event in (braze.state.profile(user) or {}).get("events", [])]


def test_a_repeat_is_answered_as_accepted_counted_and_not_sent_again(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """A TD real-time webhook retried (the same messageId): both answered 200 {}, one event in Braze,
    one duplicate counted, in /metrics too; another messageId is another event."""
    event = {"external_id": "u1", "name": "signup", "messageId": "m-1"}
    postback(client, "stream", event)
    postback(client, "stream", event)
    postback(client, "stream", {**event, "messageId": "m-2"})
    drain()
    assert names(braze, "u1") == ["signup", "signup"]
    assert duplicates(clean_redis, "stream") == 1
    assert 'relay_records_duplicate_total{route="stream"} 1.0' in client.get("/metrics").get_data(
        as_text=True
    )


def test_a_repeat_within_one_request_is_stored_once(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """Two records of one ingestion request with one messageId: the answer accepts both, one is sent."""
    records = [{"external_id": "u2", "name": "tap", "messageId": "m-9"} for _ in range(2)]
    response = client.post("/db/stream", json={"records": records}, headers=TD)
    assert response.get_json()["accepted"] == 2
    drain()
    assert names(braze, "u2") == ["tap"]
    assert duplicates(clean_redis, "stream") == 1


def test_a_record_without_a_key_is_not_deduplicated(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """No messageId (absent, null or empty): every copy is sent."""
    for message_id in (None, None, ""):
        postback(client, "stream", {"external_id": "u3", "name": "tap", "messageId": message_id})
    drain()
    assert names(braze, "u3") == ["tap", "tap", "tap"]


def test_routes_sharing_a_sender_share_the_memory(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """Routes with the same credentials and dedup_key remember together; a route with credentials of
    its own (another sender) does not share their memory."""
    event = {"external_id": "u4", "name": "buy", "messageId": "m-shared"}
    postback(client, "stream", event)
    postback(client, "stream_mirror", event)
    postback(client, "stream_own_keys", event, headers={"X-TD-Write-Key": OWN_KEY})
    drain()
    assert names(braze, "u4") == ["buy", "buy"]
    assert duplicates(clean_redis, "stream_mirror") == 1


def test_an_export_re_sent_whole_is_recognised(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """TD re-runs an export after a timeout: the same rows, answered as the first time, each a
    duplicate (a jq key over the row here: '"order:" + order_id'), none sent again."""
    rows = [[f"u5-{n}", f"o-{n}", "sku", "USD", "9.5"] for n in range(20)]
    columns = ["external_id", "order_id", "product_id", "currency", "price"]
    first = export(client, "orders", columns, rows)
    again = export(client, "orders", columns, rows)
    assert (first["accepted"], again["accepted"]) == (20, 20)
    drain()
    bought = sum(len(braze.state.profile(f"u5-{n}")["purchases"]) for n in range(20))
    assert bought == 20
    assert duplicates(clean_redis, "orders") == 20


def test_the_whole_row_as_key_recognises_a_re_sent_export(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """dedup_key = "." names a row by all its values: the same rows again are repeats, a changed row
    is not."""
    rows = [["u6", "gold"], ["u7", "silver"]]
    export(client, "rows", ["external_id", "tier"], rows)
    export(client, "rows", ["external_id", "tier"], [*rows, ["u6", "platinum"]])
    drain()
    assert duplicates(clean_redis, "rows") == 2
    assert braze.state.profile("u6")["attributes"] == {"tier": "platinum"}


def test_a_transformed_routes_key_is_its_senders(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """On a transformed route the key is read from the input as the sender posted it (Segment's
    messageId, which the preset does not carry over): a re-delivered call is a repeat."""
    call = json.loads((SAMPLES / "segment" / "track.json").read_text())
    for _ in range(2):
        response = client.post("/webhooks/segment_once", json=call, headers=BEARER)
        assert response.status_code == 202, response.get_json()
    drain()
    assert names(braze, call["userId"]) == [call["event"]]
    assert duplicates(clean_redis, "segment_once") == 1


def test_remembered_keys_hold_no_value_and_expire_with_the_window(
    client: FlaskClient, clean_redis: redis.Redis
) -> None:
    """A remembered record is one key under the workspace's hash tag, named by a digest (never the
    messageId), expiring with the route's dedup_window_s."""
    postback(client, "stream", {"external_id": "u8", "name": "tap", "messageId": "secret-looking-id"})
    (key,) = clean_redis.keys("relay:{default}:dd:*")
    assert b"secret-looking-id" not in key and len(key) == len(b"relay:{default}:dd:") + 16
    assert 3500 < clean_redis.ttl(key) <= 3600


def test_a_jq_key_that_fails_refuses_the_input_naming_it(client: FlaskClient) -> None:
    """A jq dedup_key that fails on an input ('.meta.id' of a string) refuses it: 422 naming the
    record and dedup_key, nothing stored."""
    record = {"external_id": "u9", "name": "tap", "meta": "not an object"}
    response = client.post("/db/meta_keyed", json={"records": [record]}, headers=TD)
    assert response.status_code == 422
    assert "dedup_key" in response.get_json()["errors"]["records"]["0"]


def test_a_dedup_key_that_is_no_field_and_no_jq_stops_the_start(
    tmp_path: Path, relay_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dedup_key that is neither a field name nor a jq expression stops the start, naming route and key."""
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[routes.bad]\nmode = "user_track"\ntrack_record_type = "custom_events"\ndedup_key = ".id | ("\n'
    )
    monkeypatch.setenv("RELAY_CONFIG", str(routes))
    with pytest.raises(ConfigError, match=r"route 'bad': key 'dedup_key'"):
        load_settings()


def test_dedup_key_is_for_track_and_catalog_routes(
    tmp_path: Path, relay_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dedup_key on a route of another mode stops the start: a repeated identify, delete or consent
    change does nothing new in Braze, and its order marks must not outlive a record never stored."""
    routes = tmp_path / "routes.toml"
    routes.write_text('[routes.deletes]\nmode = "user_delete"\ndedup_key = "request_id"\n')
    monkeypatch.setenv("RELAY_CONFIG", str(routes))
    with pytest.raises(ConfigError, match=r"route 'deletes': key 'dedup_key': only for user_track"):
        load_settings()


def test_an_export_of_exactly_100000_rows_is_counted_as_probably_truncated(
    client: FlaskClient, clean_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """TD's web export drops rows past 100,000 without a word: an export of exactly 100,000 rows is
    answered as usual, and logged and counted as probably truncated; 99,999 rows are not."""
    rows = [[f"t{n}", "gold"] for n in range(100_000)]
    with caplog.at_level(logging.WARNING, logger="receiver.views"):
        answer = export(client, "profiles", ["external_id", "tier"], rows)
        export(client, "profiles", ["external_id", "tier"], rows[:-1])
    assert answer["accepted"] == 100_000
    counted = metrics.read(clean_redis, WORKSPACES)
    assert counted[(metrics.EXPORTS_TRUNCATED.name, (("route", "profiles"),))] == 1
    (warning,) = [record for record in caplog.records if "probably truncated" in record.getMessage()]
    assert warning.route == "profiles"  # type: ignore[attr-defined]


def test_the_next_owner_sends_nothing_a_previous_send_settled(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """Marks a killed worker left (handlers/sent.py): a record marked delivered counts as delivered,
    an event marked sending waits as an `ambiguous` dead letter; neither is sent; the commit clears
    the marks, and a record without one is sent as usual."""
    records = [{"external_id": "s1", "name": "tap", "messageId": f"s-{n}"} for n in range(3)]
    request_id = client.post("/db/stream", json={"records": records}, headers=TD).get_json()["id"]
    marks = [store.keys("default").sent(f"{request_id}.{n}") for n in range(3)]
    clean_redis.set(marks[0], b"d")
    clean_redis.set(marks[1], b"s")
    drain()
    (call,) = [entry for entry in braze.requests if entry["path"] == "/users/track"]
    assert [event["properties"]["messageId"] for event in call["body"]["events"]] == ["s-2"]
    (letter,) = deadletters.iter_entries(clean_redis, WORKSPACES)
    assert (letter["reason"], letter["envelope"]["rec"]["properties"]["messageId"]) == ("ambiguous", "s-1")
    counted = metrics.read(clean_redis, WORKSPACES)
    assert counted[(metrics.DELIVERED.name, (("route", "stream"),))] == 2
    assert clean_redis.exists(*marks) == 0


@pytest.mark.e2e
def test_a_worker_killed_after_braze_took_a_request_sends_nothing_twice(
    client: FlaskClient, braze: Simulator, clean_redis: redis.Redis, routes_file: Path, tmp_path: Path
) -> None:
    """150 events of a dedup route make two requests. Braze takes both; the first's answer reaches the
    worker (its records marked delivered), the second's is held back; the worker is killed before the
    chunk's commit. The next owner sends nothing again: the first request's records count as
    delivered, the second's (sent, no answer recorded) wait as `ambiguous` dead letters. Braze holds
    each event once."""
    held, release = threading.Event(), threading.Event()
    seen: list[str] = []

    def hold(path: str, body: dict[str, Any]) -> None:
        seen.append(path)
        if path == "/users/track" and seen.count(path) == 2:
            held.set()
            release.wait(60)

    braze.faults.hold_answer = hold
    records = [{"external_id": f"k{n}", "name": "tap", "messageId": f"k-{n}"} for n in range(150)]
    response = client.post("/db/stream", json={"records": records}, headers=TD)
    request_id = response.get_json()["id"]
    env = {**os.environ, **relay_environment(REDIS_URL, braze.url, routes_file)}
    env.update({"RELAY_TRACK_SHARDS": "1", "BRAZE_READ_TIMEOUT_S": "60", "PYTHONUNBUFFERED": "1"})
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    procs = Processes(env, tmp_path)
    try:
        worker = procs.start("worker")
        wait_for(held.is_set, 30, "Braze to take the second request")
        answered = next(entry for entry in braze.requests if entry["path"] == "/users/track")
        first = [int(event["properties"]["messageId"].split("-")[1]) for event in answered["body"]["events"]]
        marks = [store.keys("default").sent(f"{request_id}.{n}") for n in first]
        wait_for(lambda: set(clean_redis.mget(marks)) == {b"d"}, 30, "the worker to mark the first answer")
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        release.set()
        procs.start("worker")
        wait_for(lambda: not lanes_busy(clean_redis), 60, "the next owner to settle the lane")
    finally:
        release.set()
        procs.stop_all()
    sent = [entry for entry in braze.requests if entry["path"] == "/users/track"]
    assert len(sent) == 2, "a request was sent again"
    received = [event["properties"]["messageId"] for entry in sent for event in entry["body"]["events"]]
    assert sorted(received) == sorted(record["messageId"] for record in records)
    letters = list(deadletters.iter_entries(clean_redis, WORKSPACES))
    assert len(letters) == 75 and {letter["reason"] for letter in letters} == {"ambiguous"}
    assert not set(first) & {
        int(letter["envelope"]["rec"]["properties"]["messageId"][2:]) for letter in letters
    }
    counted = metrics.read(clean_redis, WORKSPACES)
    assert counted[(metrics.DELIVERED.name, (("route", "stream"),))] == 75
