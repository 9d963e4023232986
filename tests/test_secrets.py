"""Secrets stay secret: after every endpoint and failure path, no key or secret in logs, Redis or answers."""

from __future__ import annotations

import base64
import contextlib
import json
import zlib
from collections.abc import Iterator

import pytest
import redis
import requests

from braze_sim.server import Simulator
from tests.helpers import BRAZE_KEY, KEYS, OTHER_WRITE_KEY, WEBHOOK_SECRET, WRITE_KEY, signed_headers
from tests.processes import Processes, wait_for

pytestmark = pytest.mark.e2e
PII_EMAIL = "jane.doe.pii@example.com"
PII_PHONE = "+15550100999"
SECRETS = {
    "write key": WRITE_KEY,
    "rotated write key": OTHER_WRITE_KEY,
    "webhook secret": WEBHOOK_SECRET,
    "webhook secret key": WEBHOOK_SECRET.removeprefix("whsec_"),
    "Braze API key": BRAZE_KEY,
}


def redis_dump(client: redis.Redis) -> Iterator[bytes]:
    """Every key and value in the database, RQ's zlib-compressed job data unpacked too."""
    for key in client.scan_iter(count=1000):
        yield key
        kind = client.type(key).decode()
        values: list[bytes] = []
        if kind == "string":
            values = [client.get(key) or b""]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "hash":
            for field, value in client.hgetall(key).items():
                values += [field, value]
        elif kind == "stream":
            values = [json.dumps(entry, default=repr).encode() for entry in client.xrange(key)]
        for value in values:
            yield value
            with contextlib.suppress(zlib.error):
                yield zlib.decompress(value)


def leaks(text: bytes) -> list[str]:
    """Names of the secrets found in `text`."""
    return [name for name, secret in SECRETS.items() if secret.encode() in text]


def test_no_secret_in_logs_redis_or_answers(
    stack: tuple[Processes, str], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """Every endpoint and failure path, then a search of every log line, Redis value and answer."""
    procs, base = stack
    procs.start("worker")
    answers: list[bytes] = []
    session = requests.Session()
    event = {"external_id": "s1", "name": "x"}
    basic = base64.b64encode(f"td:{WRITE_KEY}".encode()).decode()
    body = json.dumps([event]).encode()
    calls = [
        ("POST", "/postback/v3/event/db/events", {"X-TD-Write-Key": WRITE_KEY}, json.dumps(event).encode()),
        ("POST", f"/postback/v3/event/db/events?td_write_key={WRITE_KEY}", {}, json.dumps(event).encode()),
        (
            "POST",
            "/db/events",
            {"Authorization": f"TD1 {OTHER_WRITE_KEY}"},
            json.dumps({"records": [event]}).encode(),
        ),
        (
            "PUT",
            "/export/events",
            {"Authorization": f"Basic {basic}"},
            json.dumps({"column_names": ["external_id", "name"], "data": [["s2", "y"]]}).encode(),
        ),
        ("POST", "/webhooks/events", signed_headers(body), body),
        ("POST", "/webhooks/events", {"Authorization": f"Bearer {WRITE_KEY}", "Idempotency-Key": "k1"}, body),
        ("POST", "/webhooks/events", {"Authorization": f"Bearer {WRITE_KEY}", "Idempotency-Key": "k1"}, body),
        # failure paths: wrong keys, bad signatures, invalid records, bad JSON, unknown routes
        (
            "POST",
            "/db/events",
            {"Authorization": f"TD1 {WRITE_KEY}x"},
            json.dumps({"records": [event]}).encode(),
        ),
        ("POST", "/webhooks/events", {**signed_headers(body, secret="whsec_" + "A" * 32)}, body),
        ("POST", "/webhooks/events", {**signed_headers(body), "webhook-signature": f"v1,{WRITE_KEY}"}, body),
        (
            "POST",
            "/db/events",
            {"Authorization": f"TD1 {WRITE_KEY}"},
            json.dumps({"records": [{"x": 1}]}).encode(),
        ),
        ("POST", "/db/events", {"Authorization": f"TD1 {WRITE_KEY}"}, b"{not json"),
        ("POST", "/db/nowhere", {"Authorization": f"TD1 {WRITE_KEY}"}, b"{}"),
        (
            "POST",
            "/webhooks/events",
            {"Authorization": f"Bearer {WRITE_KEY}", "Idempotency-Key": "k1"},
            b"[{}]",
        ),
        # personal data: consent by email and phone, an email as a profile attribute
        (
            "POST",
            "/db/consent",
            {"Authorization": f"TD1 {WRITE_KEY}"},
            json.dumps(
                {
                    "records": [
                        {
                            "email": PII_EMAIL,
                            "subscription_group_id": "g1",
                            "subscription_state": "unsubscribed",
                        },
                        {
                            "phone": PII_PHONE,
                            "subscription_group_id": "g1",
                            "subscription_state": "subscribed",
                        },
                    ]
                }
            ).encode(),
        ),
        (
            "POST",
            "/db/profiles",
            {"Authorization": f"TD1 {WRITE_KEY}"},
            json.dumps({"records": [{"external_id": "s1", "email": PII_EMAIL}]}).encode(),
        ),
        ("GET", "/readyz", {}, b""),
        ("GET", "/metrics", {}, b""),
    ]
    for method, path, headers, data in calls:
        response = session.request(
            method,
            base + path,
            data=data,
            headers={"Content-Type": "application/json", **headers},
            timeout=10,
        )
        assert response.status_code < 500, (path, response.text)
        answers.append(response.content)
    wait_for(lambda: braze.state.profile("s1") is not None, 20, "the accepted records in Braze")
    wait_for(lambda: PII_PHONE in str(braze.state.snapshot()["orphans"]), 20, "the consent records in Braze")
    # Braze refusing the relay's key: dead letters carry Braze's message, never the key.
    braze.config.api_key = "another-key"
    session.post(
        f"{base}/db/events",
        json={"records": [{"external_id": "s3", "name": "z"}]},
        headers={"Authorization": f"TD1 {WRITE_KEY}"},
        timeout=10,
    )
    wait_for(
        lambda: clean_redis.hlen(KEYS.dead) >= 1,
        20,
        "the refused records in the dead-letter store",
    )
    braze.config.api_key = BRAZE_KEY

    for answer in answers:
        assert leaks(answer) == [], answer[:300]
    logs = procs.logs()
    assert leaks(logs.encode()) == []
    assert "braze call" in logs  # the worker did log its calls
    assert PII_EMAIL not in logs and PII_PHONE not in logs, "raw emails and phones stay out of logs"
    for value in redis_dump(clean_redis):
        assert leaks(value) == [], value[:300]
    assert b"Invalid API Key" in b"".join(redis_dump(clean_redis))  # the dump did reach the dead letters
