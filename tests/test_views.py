"""The ingest views (receiver/views.py) on the real app and a real Redis: every answer of docs/design.md,
its status and body."""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from relay.lanes import Lane
from tests.helpers import KEYS, OTHER_WRITE_KEY, WRITE_KEY, signed_headers

T1 = 1_764_000_000  # 2025-11-24T16:00:00Z
EVENT = {"external_id": "u1", "name": "signup", "time": T1}
PURCHASE = {"external_id": "u1", "product_id": "sku-1", "currency": "USD", "price": 9.99, "time": T1}

POSTBACK = "/postback/v3/event/db/events"
INGEST = "/db/events"
EXPORT = "/export/events"
WEBHOOK = "/webhooks/events"
TRACK_LANE = Lane("default:track").list_key
DEAD = KEYS.dead

JSON_TYPE = {"Content-Type": "application/json"}
TD_TYPE = {"Content-Type": "application/vnd.treasuredata.v1+json"}
TD_KEY = {**JSON_TYPE, "X-TD-Write-Key": WRITE_KEY}
BEARER = {**JSON_TYPE, "Authorization": f"Bearer {WRITE_KEY}"}
UNKNOWN_SECRET = "whsec_" + base64.b64encode(b"a-secret-the-relay-does-not-know").decode()
ERROR_KEYS = {"code", "status", "message", "errors"}
MIB = 1024 * 1024


def basic(password: str, user: str = "td") -> dict[str, str]:
    """HTTP Basic credentials as TD's web export sends them (the write key is the password)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def ingest_body(records: list[Any]) -> bytes:
    """A TD Data Ingestion API body."""
    return json.dumps({"records": records}).encode()


def export_body(records: list[dict[str, Any]]) -> bytes:
    """A TD query-result export body: the records' keys as columns, one row per record."""
    names = list(dict.fromkeys(key for record in records for key in record))
    rows = [[record.get(name) for name in names] for record in records]
    return json.dumps({"column_names": names, "column_types": ["string"] * len(names), "data": rows}).encode()


# One valid request per endpoint, without credentials: (method, path, body).
ENDPOINTS = {
    "postback": ("POST", POSTBACK, json.dumps(EVENT).encode()),
    "ingest": ("POST", INGEST, ingest_body([EVENT])),
    "export": ("PUT", EXPORT, export_body([EVENT])),
    "webhook": ("POST", WEBHOOK, json.dumps(EVENT).encode()),
}
# The credential each endpoint is sent with when the test is about something else.
GOOD_AUTH = {
    "postback": {"X-TD-Write-Key": WRITE_KEY},
    "ingest": {"Authorization": f"TD1 {WRITE_KEY}"},
    "export": basic(WRITE_KEY),
    "webhook": {"Authorization": f"Bearer {WRITE_KEY}"},
}


def send(
    client: FlaskClient,
    endpoint: str,
    body: bytes | None = None,
    *,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> TestResponse:
    """Send one endpoint's request (its default body unless given) with exactly these headers."""
    method, path, default_body = ENDPOINTS[endpoint]
    return client.open(
        path,
        method=method,
        data=default_body if body is None else body,
        headers=headers or {},
        query_string=query,
    )


def send_ok(client: FlaskClient, endpoint: str, body: bytes | None = None) -> TestResponse:
    """Send one endpoint's request with a JSON type and a good credential."""
    return send(client, endpoint, body, headers={**JSON_TYPE, **GOOD_AUTH[endpoint]})


def error_of(response: TestResponse, code: int) -> dict[str, Any]:
    """The error body, checked: the contract's status and JSON shape, and never a stack trace."""
    text = response.get_data(as_text=True)
    assert response.status_code == code, text
    assert "Traceback" not in text
    body = response.get_json()
    assert set(body) == ERROR_KEYS, body
    assert body["code"] == code
    assert body["status"] == HTTPStatus(code).phrase
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["errors"], dict)
    return body


def waiting(client: redis.Redis) -> int:
    """Records waiting in every lane."""
    return sum(client.llen(key) for key in client.keys(KEYS.lane_list("*")))


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- 400: malformed JSON and wrong body shapes -------------------------------------------------

MALFORMED = {
    "truncated": (b'{"external_id": "u1", "name": ', "Malformed JSON"),
    "empty": (b"", "Empty body"),
    "NaN literal": (b'{"external_id": "u1", "name": "e", "score": NaN}', "NaN"),
    "Infinity literal": (b'{"external_id": "u1", "name": "e", "score": -Infinity}', "Infinity"),
    "broken UTF-8": (b'{"external_id": "\xff\xfe\xfa", "name": "e"}', "UTF-8"),
    "deeply nested": (b"[" * 100_000, "nested"),
    "huge integer": (b'{"external_id": "u1", "name": "e", "n": 1' + b"0" * 5000 + b"}", "Malformed JSON"),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("body", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_json_is_400(
    client: FlaskClient, clean_redis: redis.Redis, endpoint: str, body: bytes, reason: str
) -> None:
    """A body that is not strict JSON is refused with 400 saying why, and nothing is stored."""
    answer = error_of(send_ok(client, endpoint, body), 400)
    assert reason in answer["message"]
    assert waiting(clean_redis) == 0


BAD_SHAPES = {
    "postback array": ("postback", b'[{"external_id": "u1", "name": "e"}]', None),
    "postback string": ("postback", b'"signup"', None),
    "ingest empty records": ("ingest", b'{"records": []}', "records"),
    "ingest missing records": ("ingest", json.dumps({"rows": [EVENT]}).encode(), "records"),
    "ingest records not a list": ("ingest", b'{"records": "u1"}', "records"),
    "ingest body an array": ("ingest", json.dumps([EVENT]).encode(), None),
    "export missing column_names": ("export", b'{"data": [["u1", "e"]]}', "column_names"),
    "export missing data": ("export", b'{"column_names": ["external_id", "name"]}', "data"),
    "export duplicate columns": ("export", b'{"column_names": ["name", "name"], "data": []}', "column_names"),
    "export column_types mismatch": (
        "export",
        b'{"column_names": ["external_id"], "column_types": ["string", "long"], "data": []}',
        "column_types",
    ),
    "export body an array": ("export", b'[["u1", "e"]]', None),
    "webhook empty array": ("webhook", b"[]", None),
}


@pytest.mark.parametrize(("endpoint", "body", "field"), BAD_SHAPES.values(), ids=BAD_SHAPES.keys())
def test_wrong_body_shape_is_400(
    client: FlaskClient, clean_redis: redis.Redis, endpoint: str, body: bytes, field: str | None
) -> None:
    """A JSON body of the wrong shape for its endpoint is 400, naming the missing or wrong key."""
    answer = error_of(send_ok(client, endpoint, body), 400)
    if field is not None:
        assert field in answer["errors"], answer
    assert waiting(clean_redis) == 0


def test_webhook_body_neither_object_nor_array_is_400(client: FlaskClient) -> None:
    """A webhook body that is neither one object nor an array of them is a body-shape error (400)."""
    error_of(send_ok(client, "webhook", b"42"), 400)


# --- 401: credentials --------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_missing_credential_is_401(client: FlaskClient, clean_redis: redis.Redis, endpoint: str) -> None:
    """A request without any credential is refused with 401 and nothing is stored."""
    error_of(send(client, endpoint, headers=JSON_TYPE), 401)
    assert waiting(clean_redis) == 0


WRONG_KEYS = {
    "postback header": ("postback", {"X-TD-Write-Key": "wrong-key"}, None),
    "postback TD1": ("postback", {"Authorization": "TD1 wrong-key"}, None),
    "postback query": ("postback", {}, {"td_write_key": "wrong-key"}),
    "ingest header": ("ingest", {"X-TD-Write-Key": "wrong-key"}, None),
    "ingest TD1": ("ingest", {"Authorization": "TD1 wrong-key"}, None),
    "export basic": ("export", basic("wrong-key"), None),
    "export header": ("export", {"X-TD-Write-Key": "wrong-key"}, None),
    "webhook bearer": ("webhook", {"Authorization": "Bearer wrong-key"}, None),
    "TD1 wins over a good header": (
        "ingest",
        {"Authorization": "TD1 wrong-key", "X-TD-Write-Key": WRITE_KEY},
        None,
    ),
}


@pytest.mark.parametrize(("endpoint", "headers", "query"), WRONG_KEYS.values(), ids=WRONG_KEYS.keys())
def test_wrong_key_is_401(
    client: FlaskClient,
    clean_redis: redis.Redis,
    endpoint: str,
    headers: dict[str, str],
    query: dict[str, str] | None,
) -> None:
    """A wrong write key, in any accepted form, is refused with 401 and nothing is stored."""
    error_of(send(client, endpoint, headers={**JSON_TYPE, **headers}, query=query), 401)
    assert waiting(clean_redis) == 0


ACCEPTED_FORMS = {
    "postback header": ("postback", {"X-TD-Write-Key": WRITE_KEY}, None),
    "postback TD1": ("postback", {"Authorization": f"TD1 {WRITE_KEY}"}, None),
    "postback query": ("postback", {}, {"td_write_key": WRITE_KEY}),
    "ingest header": ("ingest", {"X-TD-Write-Key": WRITE_KEY}, None),
    "ingest TD1": ("ingest", {"Authorization": f"TD1 {WRITE_KEY}"}, None),
    "export header": ("export", {"X-TD-Write-Key": WRITE_KEY}, None),
    "export TD1": ("export", {"Authorization": f"TD1 {WRITE_KEY}"}, None),
    "export basic": ("export", basic(WRITE_KEY), None),
    "webhook bearer": ("webhook", {"Authorization": f"Bearer {WRITE_KEY}"}, None),
    "rotated key, postback": ("postback", {"X-TD-Write-Key": OTHER_WRITE_KEY}, None),
    "rotated key, ingest": ("ingest", {"Authorization": f"TD1 {OTHER_WRITE_KEY}"}, None),
    "rotated key, export": ("export", basic(OTHER_WRITE_KEY), None),
    "rotated key, webhook": ("webhook", {"Authorization": f"Bearer {OTHER_WRITE_KEY}"}, None),
}


@pytest.mark.parametrize(("endpoint", "headers", "query"), ACCEPTED_FORMS.values(), ids=ACCEPTED_FORMS.keys())
def test_accepted_key_forms(
    client: FlaskClient,
    clean_redis: redis.Redis,
    endpoint: str,
    headers: dict[str, str],
    query: dict[str, str] | None,
) -> None:
    """Each credential form the contract allows for an endpoint, with either configured key, is let in."""
    response = send(client, endpoint, headers={**JSON_TYPE, **headers}, query=query)
    assert response.status_code in (200, 202), response.get_json()
    assert clean_redis.llen(TRACK_LANE) == 1


REFUSED_FORMS = {
    "query on ingest": ("ingest", {}, {"td_write_key": WRITE_KEY}),
    "query on export": ("export", {}, {"td_write_key": WRITE_KEY}),
    "query on webhook": ("webhook", {}, {"td_write_key": WRITE_KEY}),
    "basic on postback": ("postback", basic(WRITE_KEY), None),
    "basic on ingest": ("ingest", basic(WRITE_KEY), None),
    "basic on webhook": ("webhook", basic(WRITE_KEY), None),
    "bearer on postback": ("postback", {"Authorization": f"Bearer {WRITE_KEY}"}, None),
    "bearer on ingest": ("ingest", {"Authorization": f"Bearer {WRITE_KEY}"}, None),
    "header on webhook": ("webhook", {"X-TD-Write-Key": WRITE_KEY}, None),
    "TD1 on webhook": ("webhook", {"Authorization": f"TD1 {WRITE_KEY}"}, None),
    "basic with key as user": ("export", basic("", user=WRITE_KEY), None),
    "basic not base64": ("export", {"Authorization": "Basic %%%not-base64%%%"}, None),
}


@pytest.mark.parametrize(("endpoint", "headers", "query"), REFUSED_FORMS.values(), ids=REFUSED_FORMS.keys())
def test_credential_in_a_form_the_endpoint_does_not_take_is_401(
    client: FlaskClient,
    clean_redis: redis.Redis,
    endpoint: str,
    headers: dict[str, str],
    query: dict[str, str] | None,
) -> None:
    """A good key in a form not allowed on that endpoint (query, Basic, Bearer, ...) is 401."""
    error_of(send(client, endpoint, headers={**JSON_TYPE, **headers}, query=query), 401)
    assert waiting(clean_redis) == 0


def test_basic_with_non_ascii_credentials_is_401(client: FlaskClient) -> None:
    """A Basic header whose value is not ASCII is a malformed credential: 401, not 500."""
    error_of(send(client, "export", headers={**JSON_TYPE, "Authorization": "Basic \u00e9t\u00e9"}), 401)


def test_signed_webhook_is_accepted(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """A webhook with a valid Standard Webhooks signature is accepted (202) and stored."""
    body = json.dumps(EVENT).encode()
    response = client.post(WEBHOOK, data=body, headers=signed_headers(body))
    assert response.status_code == 202, response.get_json()
    assert clean_redis.llen(TRACK_LANE) == 1


def test_signature_list_with_one_valid_entry_is_accepted(client: FlaskClient) -> None:
    """Several space-separated signatures (secret rotation) pass when one of them matches."""
    body = json.dumps(EVENT).encode()
    headers = signed_headers(body)
    other = signed_headers(
        body,
        secret=UNKNOWN_SECRET,
        msg_id=headers["webhook-id"],
        timestamp=float(headers["webhook-timestamp"]),
    )["webhook-signature"]
    headers["webhook-signature"] = f"{other} v1 {headers['webhook-signature']}"
    assert client.post(WEBHOOK, data=body, headers=headers).status_code == 202


def _tampered(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body.replace(b"signup", b"signuq"), signed_headers(body)


def _without(name: str) -> Callable[[bytes], tuple[bytes, dict[str, str]]]:
    def make(body: bytes) -> tuple[bytes, dict[str, str]]:
        headers = signed_headers(body)
        del headers[name]
        return body, headers

    return make


def _with(name: str, value: str) -> Callable[[bytes], tuple[bytes, dict[str, str]]]:
    def make(body: bytes) -> tuple[bytes, dict[str, str]]:
        return body, {**signed_headers(body), name: value}

    return make


BAD_SIGNATURES: dict[str, Callable[[bytes], tuple[bytes, dict[str, str]]]] = {
    "wrong secret": lambda body: (body, signed_headers(body, secret=UNKNOWN_SECRET)),
    "tampered body": _tampered,
    "stale timestamp": lambda body: (body, signed_headers(body, timestamp=time.time() - 360)),
    "future timestamp": lambda body: (body, signed_headers(body, timestamp=time.time() + 600)),
    "missing webhook-id": _without("webhook-id"),
    "missing webhook-timestamp": _without("webhook-timestamp"),
    "missing webhook-signature": _without("webhook-signature"),
    "v1 without comma": _with("webhook-signature", "v1"),
    "v1 with empty value": _with("webhook-signature", "v1,"),
    "garbage base64": _with("webhook-signature", "v1,!!!not*base64!!!"),
    "bad base64 padding": _with("webhook-signature", "v1,abc"),
    "too many commas": _with("webhook-signature", "v1,abc,def"),
    "non-ASCII signature": _with("webhook-signature", "v1,\u00e9\u00e9\u00e9"),
    "unknown version": _with("webhook-signature", "v9,dGVzdA=="),
    "blank signature": _with("webhook-signature", "   "),
    "timestamp not a number": _with("webhook-timestamp", "yesterday"),
    "timestamp infinite": _with("webhook-timestamp", "1e400"),
    "timestamp NaN": _with("webhook-timestamp", "nan"),
    "timestamp negative": _with("webhook-timestamp", "-1"),
}


@pytest.mark.parametrize("make", BAD_SIGNATURES.values(), ids=BAD_SIGNATURES.keys())
def test_bad_webhook_signature_is_401(
    client: FlaskClient, clean_redis: redis.Redis, make: Callable[[bytes], tuple[bytes, dict[str, str]]]
) -> None:
    """A missing, wrong, stale, future or malformed signature is 401 (never 500) and nothing is stored."""
    body, headers = make(json.dumps(EVENT).encode())
    error_of(client.post(WEBHOOK, data=body, headers=headers), 401)
    assert waiting(clean_redis) == 0


@pytest.mark.parametrize("offset", [-360, 360], ids=["stale", "future"])
def test_signature_outside_window_says_so(client: FlaskClient, offset: int) -> None:
    """A timestamp outside ±5 minutes is refused with a message about the timestamp window."""
    body = json.dumps(EVENT).encode()
    answer = error_of(
        client.post(WEBHOOK, data=body, headers=signed_headers(body, timestamp=time.time() + offset)), 401
    )
    assert "timestamp" in answer["message"].lower()


def test_unauthorized_answers_never_echo_the_presented_key(client: FlaskClient) -> None:
    """A 401 does not repeat the key the caller presented (it may be a real key for another system)."""
    presented = "almost-the-key-8c1f"
    response = send(client, "postback", headers={**JSON_TYPE, "X-TD-Write-Key": presented})
    error_of(response, 401)
    assert presented not in response.get_data(as_text=True)


# --- 404, 405 ----------------------------------------------------------------------------------

UNKNOWN = {
    "webhook route": ("POST", "/webhooks/nope", "nope"),
    "export route": ("PUT", "/export/nope", "nope"),
    "postback table": ("POST", "/postback/v3/event/db/nope", "nope"),
    "postback database": ("POST", "/postback/v3/event/nodb/events", "nodb"),
    "ingest table": ("POST", "/db/nope", "nope"),
    "unknown path": ("GET", "/no/such/path/here", None),
    "root": ("GET", "/", None),
    "postback without table": ("POST", "/postback/v3/event/db", None),
}


@pytest.mark.parametrize(("method", "path", "named"), UNKNOWN.values(), ids=UNKNOWN.keys())
def test_unknown_route_or_path_is_404(client: FlaskClient, method: str, path: str, named: str | None) -> None:
    """An unknown route, database/table or path is 404 in the JSON shape, naming what was not found."""
    headers = {**TD_KEY, **GOOD_AUTH["webhook"]} if path.startswith("/webhooks") else TD_KEY
    answer = error_of(client.open(path, method=method, data=json.dumps(EVENT), headers=headers), 404)
    if named is not None:
        assert named in answer["message"]


WRONG_METHODS = {
    "GET webhook": ("GET", WEBHOOK, {"POST"}),
    "PUT webhook": ("PUT", WEBHOOK, {"POST"}),
    "DELETE export": ("DELETE", EXPORT, {"PUT", "POST"}),
    "GET export": ("GET", EXPORT, {"PUT", "POST"}),
    "GET postback": ("GET", POSTBACK, {"POST"}),
    "POST healthz": ("POST", "/healthz", {"GET"}),
}


@pytest.mark.parametrize(("method", "path", "allowed"), WRONG_METHODS.values(), ids=WRONG_METHODS.keys())
def test_wrong_method_is_405_with_allow(
    client: FlaskClient, method: str, path: str, allowed: set[str]
) -> None:
    """A known path with a method it does not take is 405 in the JSON shape, with an Allow header."""
    response = client.open(path, method=method, headers=TD_KEY)
    error_of(response, 405)
    assert allowed <= {item.strip() for item in response.headers["Allow"].split(",")}


# --- 413 ---------------------------------------------------------------------------------------


def test_postback_over_one_mib_is_413(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """A postback body over 1 MiB (TD's own limit, the default) is 413 naming the limit; nothing stored."""
    body = json.dumps({**EVENT, "pad": "x" * MIB}).encode()
    answer = error_of(client.post(POSTBACK, data=body, headers=TD_KEY), 413)
    assert answer["errors"] == {"limit": MIB}
    assert waiting(clean_redis) == 0


def test_postback_limit_is_configurable(
    build_client: Callable[..., FlaskClient], clean_redis: redis.Redis
) -> None:
    """RELAY_POSTBACK_MAX_BYTES sets the postback limit: a body of that size passes, one byte more is 413."""
    small = build_client(RELAY_POSTBACK_MAX_BYTES="200")
    head = json.dumps({**EVENT, "pad": ""}).encode()
    at_limit = head.replace(b'"pad": ""', b'"pad": "' + b"x" * (200 - len(head)) + b'"')
    assert len(at_limit) == 200
    assert small.post(POSTBACK, data=at_limit, headers=TD_KEY).status_code == 200
    over = at_limit.replace(b'"x', b'"xx', 1)
    error_of(small.post(POSTBACK, data=over, headers=TD_KEY), 413)
    assert clean_redis.llen(TRACK_LANE) == 1


def test_chunked_postback_over_limit_is_413(build_client: Callable[..., FlaskClient]) -> None:
    """A chunked postback (no Content-Length) longer than the limit is 413, as gunicorn delivers it."""
    small = build_client(RELAY_POSTBACK_MAX_BYTES="200")
    body = json.dumps({**EVENT, "pad": "x" * 400}).encode()
    response = small.post(
        POSTBACK,
        input_stream=io.BytesIO(body),
        headers={**TD_KEY, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )  # as gunicorn sets it
    error_of(response, 413)


def test_ingest_of_501_records_is_413(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """An ingestion request with more than 500 records is 413 naming the limit; nothing is stored."""
    records = [{**EVENT, "external_id": f"u{i}"} for i in range(501)]
    answer = error_of(client.post(INGEST, data=ingest_body(records), headers=TD_KEY), 413)
    assert answer["errors"] == {"limit": 500}
    assert waiting(clean_redis) == 0


def test_ingest_of_500_records_is_accepted(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """An ingestion request with exactly 500 records is accepted and all 500 are stored."""
    records = [{**EVENT, "external_id": f"u{i}"} for i in range(500)]
    response = client.post(INGEST, data=ingest_body(records), headers=TD_KEY)
    assert response.status_code == 200
    assert response.get_json()["accepted"] == 500
    assert clean_redis.llen(TRACK_LANE) == 500


def test_export_over_max_rows_is_413(
    build_client: Callable[..., FlaskClient], clean_redis: redis.Redis
) -> None:
    """RELAY_EXPORT_MAX_ROWS bounds an export: that many rows pass, one more is 413 naming the limit."""
    small = build_client(RELAY_EXPORT_MAX_ROWS="10")
    rows = [{**EVENT, "external_id": f"u{i}"} for i in range(11)]
    answer = error_of(small.put(EXPORT, data=export_body(rows), headers=TD_KEY), 413)
    assert answer["errors"] == {"limit": 10}
    assert waiting(clean_redis) == 0
    assert small.put(EXPORT, data=export_body(rows[:10]), headers=TD_KEY).status_code == 200
    assert clean_redis.llen(TRACK_LANE) == 10


def test_webhook_of_501_records_is_413(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """A webhook array of more than 500 records is 413 and nothing is stored."""
    body = json.dumps([{**EVENT, "external_id": f"u{i}"} for i in range(501)]).encode()
    error_of(client.post(WEBHOOK, data=body, headers=signed_headers(body)), 413)
    assert waiting(clean_redis) == 0


# --- 415 ---------------------------------------------------------------------------------------


def test_webhook_as_text_plain_is_415(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """A webhook sent as text/plain is 415 naming the type, even with a valid signature."""
    body = json.dumps(EVENT).encode()
    headers = {**signed_headers(body), "Content-Type": "text/plain"}
    answer = error_of(client.post(WEBHOOK, data=body, headers=headers), 415)
    assert "text/plain" in answer["message"]
    assert waiting(clean_redis) == 0


NOT_JSON = {
    "postback form-encoded": ("postback", "application/x-www-form-urlencoded", b"external_id=u1&name=signup"),
    "postback untyped": ("postback", None, json.dumps(EVENT).encode()),
    "ingest text/plain": ("ingest", "text/plain", ingest_body([EVENT])),
    "export xml": ("export", "application/xml", b"<rows/>"),
}


@pytest.mark.parametrize(("endpoint", "content_type", "body"), NOT_JSON.values(), ids=NOT_JSON.keys())
def test_body_not_typed_as_json_is_415(
    client: FlaskClient, clean_redis: redis.Redis, endpoint: str, content_type: str | None, body: bytes
) -> None:
    """A body whose Content-Type is not JSON (or absent, outside export) is 415; nothing is stored."""
    headers = dict(GOOD_AUTH[endpoint])
    if content_type is not None:
        headers["Content-Type"] = content_type
    error_of(send(client, endpoint, body, headers=headers), 415)
    assert waiting(clean_redis) == 0


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream"])
def test_export_takes_untyped_bodies(
    client: FlaskClient, clean_redis: redis.Redis, content_type: str | None
) -> None:
    """TD's web export may send no JSON Content-Type: an export without one is accepted."""
    headers = dict(GOOD_AUTH["export"])
    if content_type is not None:
        headers["Content-Type"] = content_type
    assert send(client, "export", headers=headers).status_code == 200
    assert clean_redis.llen(TRACK_LANE) == 1


def test_ingest_takes_td_content_type(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """TD's own application/vnd.treasuredata.v1+json is accepted on ingestion."""
    response = client.post(INGEST, data=ingest_body([EVENT]), headers={**TD_TYPE, **GOOD_AUTH["ingest"]})
    assert response.status_code == 200
    assert clean_redis.llen(TRACK_LANE) == 1


# --- 422 ---------------------------------------------------------------------------------------


def event(**fields: Any) -> dict[str, Any]:
    """The valid event with some fields changed."""
    return {**EVENT, **fields}


def purchase(**fields: Any) -> dict[str, Any]:
    """The valid purchase with some fields changed."""
    return {**PURCHASE, **fields}


LONG = "x" * 256
INVALID_RECORDS = {
    "string over 255": ("events", event(name=LONG), ("name",)),
    "property value over 255": ("events", event(note=LONG), ("properties", "note")),
    "property name over 255": ("events", event(**{"k" * 256: 1}), ("properties", "k" * 64)),
    "property name starts with $": ("events", event(**{"$color": "red"}), ("properties", "$color")),
    "property named time": ("events", event(properties={"time": 1}), ("properties", "time")),
    "property named event_name": ("events", event(event_name="x"), ("properties", "event_name")),
    "currency XXX": ("purchases", purchase(currency="XXX"), ("currency",)),
    "quantity 0": ("purchases", purchase(quantity=0), ("quantity",)),
    "quantity 101": ("purchases", purchase(quantity=101), ("quantity",)),
    "price not a number": ("purchases", purchase(price="cheap"), ("price",)),
    "missing identifier": ("events", {"name": "signup", "time": T1}, ("identifier",)),
    "two identifiers on an event": ("events", event(email="ann@example.com"), ("identifier",)),
    "time in milliseconds": ("events", event(time=T1 * 1000), ("time",)),
    "bad ISO time": ("events", event(time="2025-13-45T25:61:00Z"), ("time",)),
    "missing event name": ("events", {"external_id": "u1", "time": T1}, ("name",)),
    "record not an object": ("events", "signup", ("_record",)),
}


def dig(errors: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at a path of keys in nested error messages."""
    for key in path:
        assert key in errors, (path, errors)
        errors = errors[key]
    return errors


@pytest.mark.parametrize(("route", "record", "path"), INVALID_RECORDS.values(), ids=INVALID_RECORDS.keys())
def test_invalid_record_is_422_keyed_by_index_and_field(
    client: FlaskClient, clean_redis: redis.Redis, route: str, record: Any, path: tuple[str, ...]
) -> None:
    """A record Braze would refuse is 422 with errors["records"][index][field]; nothing is stored."""
    good = PURCHASE if route == "purchases" else EVENT
    response = client.post(f"/db/{route}", data=ingest_body([good, record, good]), headers=TD_KEY)
    answer = error_of(response, 422)
    assert set(answer["errors"]["records"]) == {"1"}
    assert dig(answer["errors"]["records"]["1"], path)
    assert clean_redis.keys(KEYS.lane_list("*")) == []
    assert clean_redis.hlen(DEAD) == 0


def test_invalid_postback_is_422_at_index_0(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """An invalid postback is 422 with its errors under record index 0; nothing is stored."""
    body = json.dumps(event(time="soon")).encode()
    answer = error_of(client.post(POSTBACK, data=body, headers=TD_KEY), 422)
    assert "time" in answer["errors"]["records"]["0"]
    assert clean_redis.keys(KEYS.lane_list("*")) == []


def test_export_row_of_wrong_length_is_422(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """An export row whose length differs from column_names is 422 at that row; nothing is stored."""
    body = json.dumps({"column_names": ["external_id", "name"], "data": [["u1", "a"], ["u2"], ["u3", "c"]]})
    answer = error_of(client.put(EXPORT, data=body, headers=TD_KEY), 422)
    assert set(answer["errors"]["records"]) == {"1"}
    assert "_row" in answer["errors"]["records"]["1"]
    assert clean_redis.keys(KEYS.lane_list("*")) == []


def test_invalid_webhook_record_is_422(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """In a webhook array, an invalid record is named by its index and nothing of the request is stored."""
    body = json.dumps([EVENT, event(external_id=None)]).encode()
    answer = error_of(client.post(WEBHOOK, data=body, headers=signed_headers(body)), 422)
    assert "identifier" in answer["errors"]["records"]["1"]
    assert clean_redis.keys(KEYS.lane_list("*")) == []


def test_time_as_huge_integer_is_422(client: FlaskClient) -> None:
    """A time that is an integer too large for a float is an invalid time (422), not a crash."""
    body = json.dumps({**EVENT, "time": 10**400}).encode()
    answer = error_of(client.post(POSTBACK, data=body, headers=TD_KEY), 422)
    assert "time" in answer["errors"]["records"]["0"]


def test_deeply_nested_pre_formatted_field_is_422(client: FlaskClient) -> None:
    """A pre-formatted field whose JSON nests too deeply is refused on that field (422), not a crash."""
    body = json.dumps({**EVENT, "properties": "[" * 100_000}).encode()
    answer = error_of(client.post(POSTBACK, data=body, headers=TD_KEY), 422)
    assert "properties" in answer["errors"]["records"]["0"]


def test_deeply_nested_user_alias_string_is_422(client: FlaskClient) -> None:
    """A user_alias JSON string that nests too deeply is refused on user_alias (422), not a crash."""
    body = json.dumps({"user_alias": "[" * 100_000, "name": "signup"}).encode()
    answer = error_of(client.post(POSTBACK, data=body, headers=TD_KEY), 422)
    assert "user_alias" in answer["errors"]["records"]["0"]


def test_number_too_large_for_a_float_is_refused(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """A number literal beyond a float (1e400) is refused (400 or 422), never stored as Infinity."""
    body = b'{"external_id": "u1", "name": "signup", "score": 1e400}'
    response = client.post(POSTBACK, data=body, headers=TD_KEY)
    assert response.status_code in (400, 422), response.get_data(as_text=True)
    assert waiting(clean_redis) == 0


# --- skip_on_invalid_records -------------------------------------------------------------------

SKIP_RECORDS = [
    {"external_id": "p1", "first_name": "Ann"},
    {"first_name": "No identifier"},
    {"external_id": "p2", "home_city": "Oslo"},
    {"external_id": "p3", "bio": LONG},
]


def test_skip_route_stores_valid_and_dead_letters_invalid(
    client: FlaskClient, clean_redis: redis.Redis
) -> None:
    """With skip_on_invalid_records, valid records are stored; invalid ones are named and dead-lettered."""
    response = client.post("/db/profiles_skip", data=ingest_body(SKIP_RECORDS), headers=TD_KEY)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["accepted"] == 2
    assert [item["index"] for item in answer["rejected"]] == [1, 3]
    assert "identifier" in answer["rejected"][0]["errors"]
    assert "bio" in answer["rejected"][1]["errors"]
    assert clean_redis.llen(TRACK_LANE) == 2
    stored = [json.loads(raw)["rec"]["_id"] for raw in clean_redis.lrange(TRACK_LANE, 0, -1)]
    assert stored == [{"external_id": "p1"}, {"external_id": "p2"}]
    dead = [json.loads(raw) for raw in clean_redis.hvals(DEAD)]
    assert len(dead) == 2
    assert {item["reason"] for item in dead} == {"invalid"}
    assert {item["route"] for item in dead} == {"profiles_skip"}
    raws = sorted((item["envelope"]["rec"]["raw"] for item in dead), key=json.dumps)
    assert raws == sorted([SKIP_RECORDS[1], SKIP_RECORDS[3]], key=json.dumps)
    assert all(item["message"] for item in dead)


def test_skip_route_export_rejects_a_row_of_wrong_length_and_keeps_the_others(
    client: FlaskClient, clean_redis: redis.Redis
) -> None:
    """With skip_on_invalid_records, an export row that is not one value per column is named in
    `rejected` and dead-lettered as it came, with its reason; the other rows are stored."""
    names = ["external_id", "first_name"]
    body = json.dumps({"column_names": names, "data": [["p1", "Ann"], ["p2"], ["p3", "Bo"]]})
    response = client.put("/export/profiles_skip", data=body, headers=TD_KEY)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["accepted"] == 2
    row_error = {"_row": ["A row must be a list of 2 values, one per column."]}
    assert answer["rejected"] == [{"index": 1, "errors": row_error}]
    stored = [json.loads(raw)["rec"]["_id"] for raw in clean_redis.lrange(TRACK_LANE, 0, -1)]
    assert stored == [{"external_id": "p1"}, {"external_id": "p3"}]
    (dead,) = [json.loads(raw) for raw in clean_redis.hvals(DEAD)]
    assert (dead["route"], dead["reason"]) == ("profiles_skip", "invalid")
    assert dead["envelope"]["rec"]["raw"] == ["p2"]
    assert dead["message"] == "_row: A row must be a list of 2 values, one per column."


def test_skip_route_postback_names_the_rejected_record(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """An invalid postback on a skipping route is answered 200 naming it, and is dead-lettered."""
    response = client.post(
        "/postback/v3/event/db/profiles_skip", data=json.dumps(SKIP_RECORDS[1]), headers=TD_KEY
    )
    assert response.status_code == 200
    assert [item["index"] for item in response.get_json()["rejected"]] == [0]
    assert waiting(clean_redis) == 0
    assert clean_redis.hlen(DEAD) == 1


# --- success answers ---------------------------------------------------------------------------


def test_postback_answers_empty_object(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """A valid postback is answered 200 {} (as TD answers) after its record is in Redis."""
    response = client.post(POSTBACK, data=json.dumps(EVENT), headers=TD_KEY)
    assert response.status_code == 200
    assert response.get_json() == {}
    stored = json.loads(clean_redis.lindex(TRACK_LANE, 0))
    assert stored["rec"]["name"] == "signup"
    assert stored["rec"]["_id"] == {"external_id": "u1"}


def test_ingest_answers_counts(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """A valid ingestion answers 200 {accepted, rejected: [], id} and stores every record."""
    response = client.post(INGEST, data=ingest_body([EVENT, event(external_id="u2")]), headers=TD_KEY)
    assert response.status_code == 200
    answer = response.get_json()
    assert set(answer) == {"accepted", "rejected", "id"}
    assert answer["accepted"] == 2
    assert answer["rejected"] == []
    assert isinstance(answer["id"], str) and answer["id"]
    assert clean_redis.llen(TRACK_LANE) == 2


@pytest.mark.parametrize("method", ["PUT", "POST"])
def test_export_answers_counts(client: FlaskClient, clean_redis: redis.Redis, method: str) -> None:
    """A valid export (PUT or POST) answers 200 with the count of accepted rows and stores them."""
    rows = [EVENT, event(external_id="u2"), event(external_id="u3")]
    response = client.open(EXPORT, method=method, data=export_body(rows), headers=TD_KEY)
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["accepted"] == 3
    assert answer["rejected"] == []
    assert clean_redis.llen(TRACK_LANE) == 3


@pytest.mark.parametrize(
    ("payload", "count"), [(EVENT, 1), ([EVENT, event(external_id="u2")], 2)], ids=["object", "array"]
)
def test_webhook_answers_202(client: FlaskClient, clean_redis: redis.Redis, payload: Any, count: int) -> None:
    """A valid webhook (one object or an array) answers 202 {id, accepted, rejected} and stores them."""
    body = json.dumps(payload).encode()
    response = client.post(WEBHOOK, data=body, headers=signed_headers(body))
    assert response.status_code == 202
    answer = response.get_json()
    assert set(answer) == {"id", "accepted", "rejected"}
    assert answer["accepted"] == count
    assert answer["rejected"] == []
    assert clean_redis.llen(TRACK_LANE) == count


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_endpoints_answer_200(client: FlaskClient, path: str) -> None:
    """Liveness and readiness answer 200 when the app is up and Redis answers."""
    assert client.get(path).status_code == 200


def test_metrics_answers_prometheus_text(client: FlaskClient) -> None:
    """GET /metrics answers 200 in Prometheus text format."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"


# --- 503 ---------------------------------------------------------------------------------------


@pytest.fixture
def no_redis_client(build_client: Callable[..., FlaskClient]) -> FlaskClient:
    """The app with REDIS_URL pointing at a port where nothing listens."""
    return build_client(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_redis_unreachable_is_503(no_redis_client: FlaskClient, endpoint: str) -> None:
    """With Redis unreachable, a valid request is 503 in the JSON shape, saying nothing was stored."""
    answer = error_of(send_ok(no_redis_client, endpoint), 503)
    assert "nothing was stored" in answer["message"]


def test_readyz_is_503_without_redis(no_redis_client: FlaskClient) -> None:
    """Readiness is 503 while Redis is unreachable; liveness stays 200."""
    response = no_redis_client.get("/readyz")
    assert response.status_code == 503
    assert "Traceback" not in response.get_data(as_text=True)
    assert no_redis_client.get("/healthz").status_code == 200


# --- hostile shapes -----------------------------------------------------------------------------


def test_duplicate_keys_are_400(client: FlaskClient) -> None:
    """A body repeating a key (which value counts is ambiguous) is refused with 400 naming the key."""
    body = b'{"external_id": "a", "external_id": "b", "name": "x"}'
    answer = error_of(client.post(POSTBACK, data=body, headers=TD_KEY), 400)
    assert "duplicate key 'external_id'" in answer["message"]


def test_too_many_fields_is_422(client: FlaskClient) -> None:
    """A record with more fields than the limit (500) is refused, naming the record."""
    record = {"external_id": "wide", "name": "x", **{f"f{n}": n for n in range(600)}}
    answer = error_of(client.post(INGEST, data=ingest_body([record]), headers=TD_KEY), 422)
    assert "Too many fields" in answer["errors"]["records"]["0"]["_record"][0]


def test_too_deep_a_property_is_422(client: FlaskClient) -> None:
    """A property nested deeper than the limit (16) is refused, naming the field."""
    deep: object = "leaf"
    for _ in range(30):
        deep = {"k": deep}
    record = {"external_id": "deep", "name": "x", "blob": deep}
    answer = error_of(client.post(INGEST, data=ingest_body([record]), headers=TD_KEY), 422)
    assert "Nested deeper than 16" in answer["errors"]["records"]["0"]["blob"][0]
