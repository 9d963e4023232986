"""Idempotency: a repeated webhook-id or Idempotency-Key gets the first answer and stores nothing new."""

from __future__ import annotations

import json
import threading

import redis
from flask import Flask
from flask.testing import FlaskClient

from relay.lanes import Lane
from tests.helpers import KEYS, WRITE_KEY, signed_headers
from tests.test_views import EVENT as SIGNUP
from tests.test_views import INGEST, TD_KEY, WEBHOOK, error_of, event, ingest_body

TRACK_LANE = Lane("default:track").list_key
TD = {"Authorization": f"TD1 {WRITE_KEY}", "Content-Type": "application/json"}
EVENT = {"external_id": "idem-u", "name": "paid"}


def test_concurrent_repeats_store_once(app: Flask, clean_redis: redis.Redis) -> None:
    """Eight identical requests at once with one key: all answered alike, the records stored once."""
    body = json.dumps({"records": [EVENT, EVENT]})
    headers = {**TD, "Idempotency-Key": "race-1"}
    answers: list[tuple[int, dict]] = []

    def post() -> None:
        response = app.test_client().post("/db/events", data=body, headers=headers)
        answers.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({json.dumps(answer, sort_keys=True) for answer in answers}) == 1
    assert answers[0][0] == 200
    assert clean_redis.llen(TRACK_LANE) == 2


def test_refused_request_is_not_remembered(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """A 422 stores nothing, so the corrected request with the same key is accepted."""
    headers = {**TD, "Idempotency-Key": "fix-me"}
    bad = client.post("/db/events", data=json.dumps({"records": [{"name": "x"}]}), headers=headers)
    assert bad.status_code == 422
    good = client.post("/db/events", data=json.dumps({"records": [EVENT]}), headers=headers)
    assert good.status_code == 200
    assert clean_redis.llen(TRACK_LANE) == 1


def test_keys_are_per_route(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """The same key on two routes is two requests."""
    headers = {**TD, "Idempotency-Key": "shared"}
    assert (
        client.post("/db/events", data=json.dumps({"records": [EVENT]}), headers=headers).status_code == 200
    )
    record = {"external_id": "idem-u", "plan": "gold"}
    assert (
        client.post("/db/profiles", data=json.dumps({"records": [record]}), headers=headers).status_code
        == 200
    )
    assert clean_redis.llen(TRACK_LANE) == 2


def test_signed_webhook_replayed_within_window_is_deduplicated(
    client: FlaskClient, clean_redis: redis.Redis
) -> None:
    """A sender's retry of a signed webhook (same webhook-id) is answered 202 again and not stored twice."""
    body = json.dumps([EVENT]).encode()
    headers = signed_headers(body, msg_id="msg_retry")
    first = client.post("/webhooks/events", data=body, headers=headers)
    again = client.post("/webhooks/events", data=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.get_json() == again.get_json()
    assert clean_redis.llen(TRACK_LANE) == 1


def test_overlong_key_is_400(client: FlaskClient) -> None:
    """An idempotency key over 255 characters is refused with 400."""
    response = client.post(
        "/db/events", data=json.dumps({"records": [EVENT]}), headers={**TD, "Idempotency-Key": "k" * 256}
    )
    assert response.status_code == 400
    assert "Idempotency key" in response.get_json()["message"]


def test_repeated_webhook_id_gets_same_answer_and_stores_nothing_new(
    client: FlaskClient, clean_redis: redis.Redis
) -> None:
    """A webhook repeating a webhook-id seen within the window gets the same answer and enqueues nothing."""
    body = json.dumps(SIGNUP).encode()
    headers = signed_headers(body, msg_id="msg_repeat_1")
    first = client.post(WEBHOOK, data=body, headers=headers)
    second = client.post(WEBHOOK, data=body, headers=headers)
    assert (first.status_code, second.status_code) == (202, 202)
    assert second.get_json() == first.get_json()
    assert clean_redis.llen(TRACK_LANE) == 1


def test_idempotency_key_reused_with_another_body_is_409(
    client: FlaskClient, clean_redis: redis.Redis
) -> None:
    """An Idempotency-Key reused with a different body is 409 and the second body is not stored."""
    headers = {**TD_KEY, "Idempotency-Key": "key-409"}
    assert client.post(INGEST, data=ingest_body([SIGNUP]), headers=headers).status_code == 200
    error_of(client.post(INGEST, data=ingest_body([event(external_id="u2")]), headers=headers), 409)
    assert clean_redis.llen(TRACK_LANE) == 1


def test_stored_idempotent_answer_is_small_and_repeats_exactly(
    client: FlaskClient, clean_redis: redis.Redis
) -> None:
    """499 rejected records leave a stored answer of a few hundred bytes; the repeat is the same."""
    records = [{"external_id": "", "plan": "p" * 200} for _ in range(499)] + [
        {"external_id": "ok", "plan": "x"}
    ]
    body = json.dumps({"records": records})
    headers = {**TD, "Idempotency-Key": "big-1"}
    first = client.post("/db/profiles_skip", data=body, headers=headers)
    again = client.post("/db/profiles_skip", data=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.get_json() == again.get_json()
    assert len(first.get_json()["rejected"]) == 499
    sizes = [len(clean_redis.get(key) or b"") for key in clean_redis.scan_iter(KEYS.idempotency("*", "*"))]
    assert len(sizes) == 1 and sizes[0] < 400, sizes


def test_a_request_that_accepted_nothing_leaves_no_identity(
    client: FlaskClient, clean_redis: redis.Redis
) -> None:
    """Invalid records on a lenient route, with a key: dead-lettered and answered, but no identity is
    kept for the key (it cost 360 bytes for 72 h); a request that accepts records keeps its own."""
    nothing = json.dumps({"records": [{"plan": "no user"}]})
    answer = client.post("/db/profiles_skip", data=nothing, headers={**TD, "Idempotency-Key": "empty-1"})
    assert answer.status_code == 200 and answer.get_json()["accepted"] == 0
    assert list(clean_redis.scan_iter(KEYS.idempotency("*", "*"))) == []
    stored = client.post(
        "/db/events", data=json.dumps({"records": [EVENT]}), headers={**TD, "Idempotency-Key": "k"}
    )
    assert stored.status_code == 200
    assert len(list(clean_redis.scan_iter(KEYS.idempotency("*", "*")))) == 1
