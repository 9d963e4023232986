"""Hostile requests against the running relay (gunicorn as the Procfile starts it): replays, borrowed keys,
slow clients, forged log lines, and the warnings of start-up.

Each test sends the exact requests of the security review to `web` over real sockets and looks at
what Redis holds; no worker runs, so whatever a request stored is still waiting in its lane.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
from pathlib import Path

import pytest
import redis
import requests

from tests.helpers import (
    KEYS,
    REDIS_URL,
    ROUTES,
    SAMPLES,
    WEBHOOK_SECRET,
    WRITE_KEY,
    relay_environment,
    signed_headers,
)
from tests.processes import Processes, flask_command, wait_for

# The routes of ROUTES that delete, merge, rename or remove users or change consent on the global
# credentials (deletes_own has keys of its own).
SENSITIVE_ON_GLOBAL = ["consent", "deletes", "merges", "removals", "renames"]
PRIVACY_KEY = "privacy-write-key-51c0"
SHOP_SECRET = "shpss_front_door_7a0c2e"
SHOP_KEY = "shop-write-key-0b9d"
OWN_ROUTES = """
[routes.deletes_own]
database = "db"
table = "deletes_own"
mode = "user_delete"
write_keys_env = "PRIVACY_WRITE_KEYS"

[routes.shop]
mode = "user_track"
track_record_type = "custom_events"
signature = "shopify"
webhook_secrets_env = "SHOP_SECRETS"
write_keys_env = "SHOP_WRITE_KEYS"

[routes.shop_orders]
mode = "user_track"
track_record_type = "purchases"
preset = "shopify_orders"
signature = "shopify"
webhook_secrets_env = "SHOP_SECRETS"
"""


@pytest.fixture
def routes_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tests' routes plus a deletion route and a Shopify route with credentials of their own."""
    monkeypatch.setenv("PRIVACY_WRITE_KEYS", PRIVACY_KEY)
    monkeypatch.setenv("SHOP_SECRETS", SHOP_SECRET)
    monkeypatch.setenv("SHOP_WRITE_KEYS", SHOP_KEY)
    path = tmp_path / "relay.toml"
    path.write_text(ROUTES + OWN_ROUTES)
    return path


def stored(client: redis.Redis, family: str) -> int:
    """Records waiting in the default workspace's lanes of one family (shards included)."""
    return sum(int(client.llen(key)) for key in client.scan_iter(KEYS.lane_list(f"{family}*")))


def post(base: str, path: str, body: bytes, headers: dict[str, str]) -> requests.Response:
    """One POST to the running relay."""
    return requests.post(base + path, data=body, headers=headers, timeout=10)


def test_signed_webhook_replayed_onto_deletions_stores_nothing(
    stack: tuple[Processes, str], clean_redis: redis.Redis
) -> None:
    """Signed bytes accepted on /webhooks/events, replayed on /webhooks/deletes, delete no one."""
    _, base = stack
    body = json.dumps({"external_id": "victim-1", "name": "signup"}).encode()
    headers = signed_headers(body)
    first = post(base, "/webhooks/events", body, headers)
    assert first.status_code == 202, first.text
    replay = post(base, "/webhooks/deletes", body, headers)
    assert replay.status_code == 202  # a repeat: the first answer again, nothing stored
    assert replay.json() == first.json()
    assert stored(clean_redis, "delete") == 0
    assert stored(clean_redis, "track") == 1


def test_signed_webhook_with_fresh_idempotency_keys_is_stored_once(
    stack: tuple[Processes, str], clean_redis: redis.Redis
) -> None:
    """One signed request sent three times with Idempotency-Key r0, r1, r2 is one event."""
    _, base = stack
    body = json.dumps({"external_id": "replayed-2", "name": "paid"}).encode()
    headers = signed_headers(body)
    answers = [
        post(base, "/webhooks/events", body, {**headers, "Idempotency-Key": f"r{n}"}) for n in range(3)
    ]
    assert [answer.status_code for answer in answers] == [202, 202, 202]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert stored(clean_redis, "track") == 1


def test_route_with_its_own_key_takes_no_global_credential(
    stack: tuple[Processes, str], clean_redis: redis.Redis
) -> None:
    """A user_delete route with write_keys_env refuses the global secret and key, takes its own."""
    _, base = stack
    body = json.dumps({"external_id": "victim-3"}).encode()
    signed = post(base, "/webhooks/deletes_own", body, signed_headers(body))
    assert signed.status_code == 401
    json_type = {"Content-Type": "application/json"}
    by_query = post(base, f"/postback/v3/event/db/deletes_own?td_write_key={WRITE_KEY}", body, json_type)
    assert by_query.status_code == 401
    bearer = post(base, "/webhooks/deletes_own", body, {**json_type, "Authorization": f"Bearer {WRITE_KEY}"})
    assert bearer.status_code == 401
    assert stored(clean_redis, "delete") == 0
    own = post(base, "/postback/v3/event/db/deletes_own", body, {**json_type, "X-TD-Write-Key": PRIVACY_KEY})
    assert own.status_code == 200, own.text
    assert stored(clean_redis, "delete") == 1


def test_sensitive_routes_on_global_credentials_are_named_at_start(stack: tuple[Processes, str]) -> None:
    """Web and worker each log one JSON warning naming the routes that delete, merge, rename or
    remove users or change consent."""
    procs, _ = stack
    procs.start("worker")

    def warnings() -> list[dict[str, object]]:
        found = []
        for line in procs.logs().splitlines():
            if line.startswith('{"ts"') and json.loads(line)["logger"] == "relay.config":
                found.append(json.loads(line))
        return found

    wait_for(lambda: {entry["role"] for entry in warnings()} >= {"web", "worker"}, 30, "start-up warnings")
    for entry in warnings():
        assert entry["level"] == "warning"
        assert entry["routes"] == SENSITIVE_ON_GLOBAL
    assert [entry["role"] for entry in warnings()].count("web") == 1  # the master, not each worker


def test_check_names_sensitive_routes_on_global_credentials(
    routes_file: Path, clean_redis: redis.Redis
) -> None:
    """`flask --app receiver check` prints the same warning line."""
    env = {**os.environ, **relay_environment(REDIS_URL, "http://127.0.0.1:9", routes_file)}
    result = flask_command("check", env=env)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(line["role"], line["routes"]) for line in lines] == [("check", SENSITIVE_ON_GLOBAL)]


def test_bearer_key_holder_cannot_preclaim_a_webhook_id(
    stack: tuple[Processes, str], clean_redis: redis.Redis
) -> None:
    """A Bearer request carrying a sender's webhook-id does not make the real signed webhook a 409."""
    _, base = stack
    msg_id = "msg_preclaimed_7"
    fake = json.dumps({"external_id": "u7", "name": "fake"}).encode()
    bearer = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {WRITE_KEY}",
        "webhook-id": msg_id,
    }
    assert post(base, "/webhooks/events", fake, bearer).status_code == 202
    real = json.dumps({"external_id": "u7", "name": "real"}).encode()
    answer = post(base, "/webhooks/events", real, signed_headers(real, msg_id=msg_id))
    assert answer.status_code == 202, answer.text
    assert stored(clean_redis, "track") == 2


def test_short_dedup_window_stops_web_at_start(
    tmp_path: Path, routes_file: Path, clean_redis: redis.Redis
) -> None:
    """RELAY_DEDUP_WINDOW_S under the signature's 10-minute span stops `web` with status 2."""
    env = {**os.environ, **relay_environment(REDIS_URL, "http://127.0.0.1:9", routes_file)}
    env.update({"RELAY_DEDUP_WINDOW_S": "5", "PORT": "0", "HOST": "127.0.0.1"})
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    procs = Processes(env, tmp_path)
    web = procs.start("web")
    try:
        assert web.wait(timeout=30) == 2
    finally:
        procs.stop_all()
    assert "RELAY_DEDUP_WINDOW_S=5" in procs.logs()


def shopify_headers(body: bytes, secret: str, webhook_id: str) -> dict[str, str]:
    """Headers of a Shopify delivery, signed by Shopify's recipe (base64 HMAC-SHA256 of the raw body)."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Topic": "orders/create",
    }


def test_shopify_route_end_to_end(stack: tuple[Processes, str], clean_redis: redis.Redis) -> None:
    """A signed Shopify webhook is stored once; tampered, unsigned and re-id'd ones are not."""
    _, base = stack
    body = json.dumps({"external_id": "shopper-1", "name": "order_created", "total": "19.99"}).encode()
    accepted = post(base, "/webhooks/shop", body, shopify_headers(body, SHOP_SECRET, "wh-1"))
    assert accepted.status_code == 202, accepted.text
    tampered = body.replace(b"19.99", b"0.01")
    assert (
        post(base, "/webhooks/shop", tampered, shopify_headers(body, SHOP_SECRET, "wh-2")).status_code == 401
    )
    assert post(base, "/webhooks/shop", body, {"Content-Type": "application/json"}).status_code == 401
    assert post(base, "/webhooks/shop", body, shopify_headers(body, "shpss_wrong", "wh-3")).status_code == 401
    # Shopify's webhook id is not signed: the same signed body under a fresh id is still a repeat.
    again = post(base, "/webhooks/shop", body, shopify_headers(body, SHOP_SECRET, "wh-fresh"))
    assert (again.status_code, again.json()) == (202, accepted.json())
    assert stored(clean_redis, "track") == 1
    # The route's own Bearer key is taken; the global keys and secrets are not.
    other = json.dumps({"external_id": "shopper-1", "name": "by_key"}).encode()
    json_type = {"Content-Type": "application/json"}
    assert (
        post(base, "/webhooks/shop", other, {**json_type, "Authorization": f"Bearer {SHOP_KEY}"}).status_code
        == 202
    )
    assert (
        post(base, "/webhooks/shop", other, {**json_type, "Authorization": f"Bearer {WRITE_KEY}"}).status_code
        == 401
    )
    assert (
        post(base, "/webhooks/shop", other, signed_headers(other, secret=WEBHOOK_SECRET)).status_code == 401
    )
    assert stored(clean_redis, "track") == 2


def test_slow_clients_do_not_stall_the_edge(stack: tuple[Processes, str], clean_redis: redis.Redis) -> None:
    """Six sockets trickling one header line every 2 s; /healthz and a postback are still answered."""
    import socket
    import threading
    from urllib.parse import urlsplit

    _, base = stack
    address = urlsplit(base)
    stop = threading.Event()
    slow = [socket.create_connection((address.hostname, address.port), timeout=5) for _ in range(6)]
    started = [threading.Event() for _ in slow]

    def trickle(sock: socket.socket, n: int) -> None:
        try:
            sock.sendall(b"POST /postback/v3/event/db/events HTTP/1.1\r\nHost: relay\r\n")
            started[n].set()
            line = 0
            while not stop.wait(2.0) and line < 15:  # bounded: 30 s at most
                sock.sendall(f"X-Slow-{n}-{line}: 1\r\n".encode())
                line += 1
        except OSError:
            pass  # the server may close a connection that sends headers this slowly: that is fine

    threads = [threading.Thread(target=trickle, args=(sock, n), daemon=True) for n, sock in enumerate(slow)]
    for thread in threads:
        thread.start()
    try:
        assert all(event.wait(10) for event in started), "a slow socket could not start its request"
        assert requests.get(base + "/healthz", timeout=10).status_code == 200
        body = json.dumps({"external_id": "patient-user", "name": "answered"}).encode()
        headers = {"Content-Type": "application/json", "X-TD-Write-Key": WRITE_KEY}
        assert post(base, "/postback/v3/event/db/events", body, headers).status_code == 200
        assert all(thread.is_alive() for thread in threads), "the slow clients stopped before the check"
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        for sock in slow:
            sock.close()
    assert stored(clean_redis, "track") == 1


def test_signed_shopify_order_through_the_preset(
    stack: tuple[Processes, str], clean_redis: redis.Redis
) -> None:
    """Shopify's documented orders/create sample, signed by Shopify's recipe, goes through the
    shopify_orders preset (202, a purchase per line item stored); the same bytes one digit off are 401.

    Sample: tests/samples/shopify/orders_create.json (Shopify's orders/create example payload,
    https://shopify.dev/docs/api/webhooks?reference=toml#list-orders/create).
    """
    _, base = stack
    body = (SAMPLES / "shopify" / "orders_create.json").read_bytes()
    items = len(json.loads(body)["line_items"])
    accepted = post(base, "/webhooks/shop_orders", body, shopify_headers(body, SHOP_SECRET, "order-wh-1"))
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["accepted"] >= items
    stored_now = stored(clean_redis, "track")
    assert stored_now == accepted.json()["accepted"]
    tampered = body.replace(b'"quantity": 1', b'"quantity": 9', 1)
    assert tampered != body
    refused = post(base, "/webhooks/shop_orders", tampered, shopify_headers(body, SHOP_SECRET, "order-wh-2"))
    assert refused.status_code == 401
    assert stored(clean_redis, "track") == stored_now
