"""Fuzzing the raw HTTP surface: thousands of generated requests, none answered with a 5xx, trace or secret.

Hypothesis drives the real app (real Redis behind it) through the Flask test client with random
methods, paths, headers and bodies, from bytes that are not UTF-8 to records one mutation away from
valid. Every answer must be a 2xx or the one JSON error shape, with `code` equal to the status.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import pytest
import redis
import schemathesis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks
from schemathesis.config import SchemathesisConfig
from werkzeug.test import TestResponse

from receiver import state
from relay.logs import PACKAGES, JsonFormatter
from tests.helpers import BRAZE_KEY, OTHER_WRITE_KEY, WEBHOOK_SECRET, WRITE_KEY, signed_headers

T1 = 1_764_000_000  # 2025-11-24T16:00:00Z
SECRETS = (WRITE_KEY, OTHER_WRITE_KEY, WEBHOOK_SECRET, WEBHOOK_SECRET.removeprefix("whsec_"), BRAZE_KEY)
LEAKS = ("Traceback", 'File "')
ERROR_KEYS = {"code", "status", "message", "errors"}
OTHER_SECRET = "whsec_" + base64.b64encode(b"a-secret-the-relay-does-not-know").decode()

# Requests sent by each fuzz test; the last test checks the total. RELAY_FUZZ_SCALE=10 runs ten
# times as many, for a longer hunt than CI's.
SENT: Counter[str] = Counter()
SCALE = max(1.0, float(os.environ.get("RELAY_FUZZ_SCALE", "1")))
FUZZ_EXAMPLES = {
    name: int(count * SCALE)
    for name, count in {
        "raw_surface": 1800,
        "ingest_bodies": 1500,
        "almost_valid": 1500,
        "webhook_signatures": 400,
    }.items()
}
MIN_REQUESTS = 5000


def fuzz(test: str) -> settings:
    """Hypothesis settings of one fuzz test: its share of the examples, no deadline (Redis is real)."""
    return settings(
        max_examples=FUZZ_EXAMPLES[test],
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


# The configured routes (tests/helpers.py ROUTES), each with a valid record; all live in database "db".
ROUTES = {
    "events": {"external_id": "u1", "name": "signup", "time": T1, "properties": {"plan": "pro"}},
    "purchases": {
        "external_id": "u1",
        "product_id": "sku-1",
        "currency": "USD",
        "price": 9.99,
        "quantity": 2,
    },
    "profiles": {"external_id": "u1", "first_name": "Ann", "email": "ann@example.com", "time": T1},
    "profiles_skip": {"braze_id": "b1", "nickname": "A", "time": "2025-11-24T16:00:00Z"},
    "aliases": {"alias_name": "a1", "alias_label": "crm", "external_id": "u1"},
    "identify": {"external_id": "u1", "alias_name": "a1", "alias_label": "crm"},
    "deletes": {"email": "ann@example.com"},
    "consent": {
        "email": "ann@example.com",
        "subscription_group_id": "g1",
        "subscription_state": "subscribed",
    },
}
TABLES = {name: ("db", name) for name in ROUTES}
DEEP = "@deep:"  # a value written as that many nested arrays in the raw JSON text (see `dumps`)
OTHER_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json")


# ---------------------------------------------------------------------------- checking answers


@pytest.fixture
def checked(client: FlaskClient, clean_redis: redis.Redis) -> Iterator[FlaskClient]:
    """The client, with the relay's log lines collected so that the test can check them for secrets."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger(package) for package in PACKAGES]  # every logger of the relay
    for logger in loggers:
        logger.addHandler(handler)
    yield client
    for logger in loggers:
        logger.removeHandler(handler)
    for line in lines:
        for secret in SECRETS:
            assert secret not in line, "a log line carries a secret"
        assert '"unexpected error"' not in line, line[:2000]


def check(client: FlaskClient, test: str, method: str, response: TestResponse) -> None:
    """Properties of every answer: no 5xx but a real 503, the error shape, no trace, no secret."""
    SENT[test] += 1
    status = response.status_code
    body = response.get_data()
    text = body.decode("utf-8", "replace")
    if status >= 500:
        assert status == 503, f"{status}: {text[:500]}"
        redis_up = state.of(client.application).redis.ping()
        assert not redis_up, "503 while Redis answers"
    for marker in LEAKS:
        assert marker not in text, text[:500]
    if 300 <= status < 400:
        # Only /admin -> /admin/ redirects (slash merging is off: it echoed ?td_write_key).
        assert response.headers.get("Location"), status
        assert "td_write_key" not in response.headers["Location"]
    for secret in SECRETS:
        assert secret not in text, "an answer carries a secret"
        assert all(secret not in value for _, value in response.headers.items()), "a header carries a secret"
    if status >= 400 and method != "HEAD":
        payload = json.loads(body)
        assert set(payload) == ERROR_KEYS, payload
        assert payload["code"] == status
        assert payload["status"] == HTTPStatus(status).phrase
        assert isinstance(payload["message"], str)
        assert isinstance(payload["errors"], dict)


def check_success(method: str, path: str, response: TestResponse) -> None:
    """A 2xx to a POST or PUT on an ingest endpoint answers its documented shape."""
    if not 200 <= response.status_code < 300 or method not in ("POST", "PUT") or path in OTHER_PATHS:
        return
    payload = response.get_json()
    assert isinstance(payload, dict), response.get_data()[:200]
    if path.startswith("/postback/"):
        assert set(payload) <= {"rejected"}, payload
        return
    assert set(payload) == {"accepted", "rejected", "id"}, payload
    assert payload["accepted"] >= 0
    assert response.status_code == (202 if path.startswith("/webhooks/") else 200)


def send(
    client: FlaskClient,
    test: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    query: dict[str, str] | None = None,
    *,
    chunked: bool = False,
) -> TestResponse:
    """One request through the WSGI app, checked; the path goes in raw, as a server passes it on.

    A chunked body comes without Content-Length, marked as gunicorn marks it (wsgi.input_terminated).
    """
    environ = {"PATH_INFO": unquote_to_bytes(path).decode("latin-1")}  # WSGI's str for the raw bytes
    if chunked:
        environ["wsgi.input_terminated"] = True
        headers = {**headers, "Transfer-Encoding": "chunked"}
        response = client.open(
            "/", method=method, headers=headers, input_stream=io.BytesIO(body), environ_overrides=environ
        )
    else:
        response = client.open(
            "/",
            method=method,
            headers=headers,
            data=body,
            query_string=query or {},
            environ_overrides=environ,
        )
    check(client, test, method, response)
    check_success(method, path, response)
    return response


# ---------------------------------------------------------------------------- strategies

HEADER_TEXT = st.text(st.characters(codec="latin-1", exclude_categories=("Cc",)), max_size=40)
ODD_NAMES = (
    "",
    ".",
    "..",
    "%",
    "a" * 300,
    "webhooks",
    "export",
    "postback",
    "ü",
    "a b",
    "db",
    "events/x",
    "\x00",
)
NAMES = st.one_of(
    st.sampled_from(sorted(ROUTES)),
    st.sampled_from(ODD_NAMES),
    st.text(max_size=20),
)
KEYS = st.one_of(
    st.sampled_from(
        [WRITE_KEY, OTHER_WRITE_KEY, "", " ", WRITE_KEY + "x", WRITE_KEY[:-1], WRITE_KEY.upper()]
    ),
    HEADER_TEXT,
)
CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/vnd.treasuredata.v1+json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/problem+json",
            "application/+json",
            "text/plain",
            "application/octet-stream",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=xyz",
            "text/csv",
            "application/",
            ";;;",
            "",
        ]
    ),
    HEADER_TEXT,
)


def basic_auth(user: str, password: str) -> str:
    """Authorization: Basic, encoded as a browser or TD's export does."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


AUTHORIZATION = st.one_of(
    st.none(),
    KEYS.map(lambda key: f"TD1 {key}"),
    KEYS.map(lambda key: f"td1  {key} "),
    KEYS.map(lambda key: f"Bearer {key}"),
    KEYS.map(lambda key: basic_auth("td", key)),
    KEYS.map(lambda key: basic_auth("", key)),
    KEYS.map(lambda key: "Basic " + base64.b64encode(key.encode()).decode()),
    st.binary(max_size=20).map(lambda raw: "Basic " + base64.b64encode(raw).decode()),
    st.sampled_from(["Basic !!!", "Basic", "Bearer", "TD1", "Basic w6k6w6k=", "Digest x", ""]),
    HEADER_TEXT,
)
METHODS = st.sampled_from(
    ["POST", "POST", "POST", "PUT", "GET", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"]
)


@st.composite
def headers(draw: st.DrawFn) -> dict[str, str]:
    """Content type, credentials in every scheme, idempotency keys and a random header or two."""
    out: dict[str, str] = {}
    content_type = draw(CONTENT_TYPES)
    if content_type is not None:
        out["Content-Type"] = content_type
    authorization = draw(AUTHORIZATION)
    if authorization is not None:
        out["Authorization"] = authorization
    if draw(st.booleans()):
        out["X-TD-Write-Key"] = draw(KEYS)
    if draw(st.integers(0, 4)) == 0:
        out["Idempotency-Key"] = draw(st.one_of(HEADER_TEXT, st.just("k" * 256)))
    if draw(st.integers(0, 4)) == 0:
        out["webhook-id"] = draw(HEADER_TEXT)
        out["webhook-timestamp"] = draw(st.one_of(st.integers(-(2**70), 2**70).map(str), HEADER_TEXT))
        out["webhook-signature"] = draw(HEADER_TEXT)
    for name, value in draw(
        st.dictionaries(
            st.sampled_from(["X-Forwarded-For", "Accept", "Transfer-Encoding", "X-A"]), HEADER_TEXT
        )
    ).items():
        out[name] = value
    return out


def path_for(template: str, names: list[str]) -> str:
    """A path of a known shape with the given (percent-encoded) names."""
    parts = [quote(name, safe="") for name in names]
    return template.format(*parts)


@st.composite
def paths(draw: st.DrawFn) -> str:
    """Known paths with real and random names, and random paths."""
    template = draw(
        st.sampled_from(
            [
                "/postback/v3/event/{}/{}",
                "/{}/{}",
                "/export/{}",
                "/webhooks/{}",
                "/healthz",
                "/readyz",
                "/metrics",
                "/openapi.json",
                "/postback/v3/event/{}",
                "/postback/v2/event/{}/{}",
                "/{}",
                "/{}/{}/{}",
            ]
        )
    )
    count = template.count("{}")
    if count == 2 and draw(st.booleans()):
        database, table = TABLES[draw(st.sampled_from(sorted(TABLES)))]
        return path_for(template, [draw(st.sampled_from([database, "DB", "db "])), table])
    return path_for(template, [draw(NAMES) for _ in range(count)])


JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["x" * 256, "$x", "time", "2025-11-24T16:00:00Z", '{"a": 1}', "[1, 2]"]),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def deep(depth: int, opener: str = "[", closer: str = "]") -> str:
    """Arrays nested this deep (or objects, with opener '{"a":' and closer '}')."""
    return opener * depth + "0" + closer * depth


HOSTILE_TEXT = st.one_of(
    st.sampled_from(
        [
            "",
            "{",
            "[",
            "null",
            "0",
            '"text"',
            "[]",
            "{}",
            '{"records": []}',
            '{"records": {}}',
            '{"records": null}',
            '{"records": [1, "a", null, []]}',
            '{"column_names": [], "data": []}',
            '{"column_names": ["a", "a"], "data": [[1, 2]]}',
            '{"column_names": ["a"], "column_types": [], "data": [[1]]}',
            '{"column_names": ["a"], "data": [[1], 2, [1, 2], null]}',
            '{"column_names": ["a"], "data": {"x": 1}}',
            '{"column_names": [1, null], "data": [[1, 2]]}',
            '{"external_id": "u1", "external_id": "u2", "name": "x"}',
            '{"records": [{"a": 1, "a": 2}]}',
            '{"price": NaN}',
            '{"price": Infinity, "external_id": "u1"}',
            '{"price": -Infinity}',
            "[NaN]",
            '{"price": 1e999}',
            '{"time": -1e400}',
            '{"quantity": 1' + "0" * 5000 + "}",
            "1" * 5000,
            "-" + "9" * 4301,
            '{"a": "\\ud800"}',
            '{"a": "\\u0000"}',
            '{"a": "\\uDFFF\\uD800"}',
            "\ufeff{}",
            '{"records": [' + ",".join(["{}"] * 501) + "]}",
        ]
    ),
    st.sampled_from([16, 17, 100, 900, 1000, 5000, 100_000]).map(deep),
    st.sampled_from([16, 17, 100, 900, 1000, 5000]).map(lambda n: deep(n, '{"a":', "}")),
    st.sampled_from([256, 70_000, 1_100_000]).map(
        lambda n: json.dumps({"external_id": "u1", "name": "x" * n})
    ),
)
BODIES = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [b"\xff\xfe{}", b'{"a": "\xc3\x28"}', b'{"records": [{"name": "\xed\xa0\x80"}]}', b"\x00" * 8]
    ),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    HOSTILE_TEXT.map(lambda text: text.encode("utf-8", "surrogatepass")),
)


# ---------------------------------------------------------------------------- near-valid records

WEIRD_VALUES = st.one_of(
    st.sampled_from(
        [
            None,
            "",
            " ",
            "x" * 255,
            "x" * 256,
            0,
            -1,
            1.5,
            2.0,
            101,
            10**20,
            10**400,
            1e308,
            True,
            [],
            {},
            [1, [2, [3]]],
            "NaN",
            "inf",
            "1e999",
            "-0",
            "2025-13-45",
            "2025-11-24T16:00:00+14:00",
            "0001-01-01T00:00:00-23:59",
            "9999-12-31T23:59:59+00:00",
            T1 * 1000,
            str(T1),
            "99999999999",
            "usd",
            "XXX",
            "subscribed",
            "opted_in",
            '{"alias_name": "a", "alias_label": "b"}',
            '{"alias_name": "a"}',
            '{"alias_name": 1, "alias_label": "b"}',
            "[" * 50 + "]" * 50,
            "{bad",
            '"str"',
            "\u0000",
            "é" * 300,
        ]
    ),
    JSON_VALUES,
    st.one_of(st.sampled_from([17, 100]), st.integers(900, 1000)).map(lambda depth: f"{DEEP}{depth}"),
)
FIELD_NAMES = st.one_of(
    st.sampled_from(
        [
            "external_id",
            "braze_id",
            "user_alias",
            "alias_name",
            "alias_label",
            "email",
            "phone",
            "time",
            "td_record_time",
            "td_client_id",
            "name",
            "app_id",
            "properties",
            "tags",
            "product_id",
            "currency",
            "price",
            "quantity",
            "subscription_group_id",
            "subscription_state",
            "email_subscribe",
            "push_subscribe",
            "event_name",
            "$bad",
            "",
            "k" * 256,
        ]
    ),
    st.text(max_size=12),
)


@st.composite
def near_valid(draw: st.DrawFn, route: str) -> dict[str, Any]:
    """A valid record of the route, then up to three mutations: a field dropped, changed or added."""
    record: dict[str, Any] = dict(ROUTES[route])
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "set", "set", "add"]))
        if action == "drop" and record:
            record.pop(draw(st.sampled_from(sorted(record))))
        elif action == "set" and record:
            record[draw(st.sampled_from(sorted(record)))] = draw(WEIRD_VALUES)
        else:
            record[draw(FIELD_NAMES)] = draw(WEIRD_VALUES)
    return record


def dumps(value: Any) -> bytes:
    """JSON text of a value, with each "@deep:N" string written as arrays nested N deep."""
    text = json.dumps(value)
    while f'"{DEEP}' in text:
        start = text.index(f'"{DEEP}')
        end = text.index('"', start + 1)
        depth = int(text[start + len(DEEP) + 1 : end])
        text = text[:start] + deep(depth) + text[end + 1 :]
    return text.encode()


def wrap(shape: str, route: str, records: list[dict[str, Any]]) -> tuple[str, str, dict[str, str], bytes]:
    """(method, path, headers, body) for records sent to a route the way one kind of caller sends them."""
    json_type = {"Content-Type": "application/json"}
    database, table = TABLES[route]
    if shape == "postback":
        body = dumps(records[0])
        return (
            "POST",
            f"/postback/v3/event/{database}/{table}",
            {**json_type, "X-TD-Write-Key": WRITE_KEY},
            body,
        )
    if shape == "ingest":
        body = dumps({"records": records})
        td = {
            "Content-Type": "application/vnd.treasuredata.v1+json",
            "Authorization": f"TD1 {OTHER_WRITE_KEY}",
        }
        return "POST", f"/{database}/{table}", td, body
    if shape == "export":
        names = list(dict.fromkeys(key for record in records for key in record)) or ["x"]
        rows = [[record.get(name) for name in names] for record in records]
        body = dumps({"column_names": names, "column_types": ["string"] * len(names), "data": rows})
        return "PUT", f"/export/{route}", {"Authorization": basic_auth("td", WRITE_KEY)}, body
    body = dumps(records if len(records) > 1 else records[0])
    return "POST", f"/webhooks/{route}", signed_headers(body), body


# ---------------------------------------------------------------------------- the fuzz tests


@fuzz("raw_surface")
@given(
    method=METHODS,
    path=paths(),
    head=headers(),
    body=BODIES,
    query=st.dictionaries(st.text(max_size=8), KEYS, max_size=2),
)
def test_any_request_gets_a_clean_answer(
    checked: FlaskClient, method: str, path: str, head: dict[str, str], body: bytes, query: dict[str, str]
) -> None:
    """Random method, path, headers, query and body: a 2xx or the JSON error shape, never a 5xx."""
    send(checked, "raw_surface", method, path, head, body, query)


@fuzz("ingest_bodies")
@given(
    route=st.sampled_from(sorted(ROUTES)),
    shape=st.sampled_from(["postback", "ingest", "export", "webhook"]),
    body=BODIES,
    content_type=CONTENT_TYPES,
    chunked=st.integers(0, 9),
)
def test_ingest_endpoints_take_any_body_cleanly(
    checked: FlaskClient, route: str, shape: str, body: bytes, content_type: str | None, chunked: int
) -> None:
    """Right path and credential, any body and content type (sometimes chunked): a clean answer."""
    method, path, head, _ = wrap(shape, route, [{}])
    if shape == "webhook":
        head = {"Authorization": f"Bearer {WRITE_KEY}"}
    if content_type is not None:
        head["Content-Type"] = content_type
    else:
        head.pop("Content-Type", None)
    send(checked, "ingest_bodies", method, path, head, body, chunked=chunked == 0)


@fuzz("almost_valid")
@given(
    data=st.data(),
    route=st.sampled_from(sorted(ROUTES)),
    shape=st.sampled_from(["postback", "ingest", "export", "webhook"]),
)
def test_almost_valid_records_are_stored_or_named(
    checked: FlaskClient, data: st.DataObject, route: str, shape: str
) -> None:
    """Records one to three mutations from valid, by every caller shape: stored, or refused by index."""
    count = 1 if shape == "postback" else data.draw(st.integers(1, 3))
    records = [data.draw(near_valid(route)) for _ in range(count)]
    method, path, head, body = wrap(shape, route, records)
    response = send(checked, "almost_valid", method, path, head, body)
    if response.status_code == 422:
        errors = response.get_json()["errors"]
        assert set(errors) == {"records"}, errors
        assert set(errors["records"]) <= {str(index) for index in range(count)}


@fuzz("webhook_signatures")
@given(
    route=st.sampled_from(sorted(ROUTES)),
    body=BODIES,
    secret=st.sampled_from([WEBHOOK_SECRET, WEBHOOK_SECRET, OTHER_SECRET]),
    skew=st.sampled_from([0, 0, -299, 299, -301, 301, -(10**6), 10**9]),
    mangle=st.sampled_from(["none", "none", "prefix", "v2", "extra", "dup", "truncate", "case", "id"]),
)
def test_signed_webhooks_are_checked_cleanly(
    checked: FlaskClient, route: str, body: bytes, secret: str, skew: int, mangle: str
) -> None:
    """Signed bodies (good, wrong secret, stale, mangled signatures): 2xx, 401 or a body error, no 5xx."""
    try:
        head = signed_headers(body, secret=secret, timestamp=time.time() + skew)
    except (UnicodeDecodeError, ValueError, OverflowError, OSError):
        head = {
            "webhook-id": "msg_x",
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1,AAAA",
        }
        head["Content-Type"] = "application/json"
    signature = head["webhook-signature"]
    head["webhook-signature"] = {
        "none": signature,
        "prefix": "v1a," + signature.partition(",")[2],
        "v2": "v2," + signature.partition(",")[2],
        "extra": f"v1,!!! {signature} v1,{'A' * 500}",
        "dup": f"{signature} {signature}",
        "truncate": signature[:-4],
        "case": signature.upper(),
        "id": signature,
    }[mangle]
    if mangle == "id":
        head["webhook-id"] += "x"
    send(checked, "webhook_signatures", "POST", f"/webhooks/{route}", head, body)


# ---------------------------------------------------------------------------- schemathesis

# Schemathesis costs about 30 ms a case here (five times a case above), so it gets a few hundred:
# enough to hold the document and the app to each other.
SCHEMATHESIS_EXAMPLES = 300
SCHEMATHESIS_CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.missing_required_header,
    checks.unsupported_method,
    checks.allow_header_conformance,
    checks.ignored_auth,
    # Not positive_data_acceptance: a record can fit its JSON schema and still break a rule the
    # document cannot state (exactly one identifier, fields that go in pairs, ISO 4217, property
    # names), and be refused with 422 as it should.
]


# Schema-violating data may also be refused as too large (maxItems of records and rows): 413.
SCHEMATHESIS_CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
            }
        }
    }
)


def test_schemathesis_holds_the_app_to_its_openapi_document(checked: FlaskClient) -> None:
    """Schemathesis reads /openapi.json from the WSGI app; its cases' answers conform to the document."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", checked.application, config=SCHEMATHESIS_CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    # The ingest operations get most cases: the GETs take no input, so a few cases say all.
    weighted = [op for op in operations if op.method != "get"] * 4 + [
        op for op in operations if op.method == "get"
    ]
    routes = state.of(checked.application).settings.routes
    skipping = {name for name, route in routes.items() if route.skip_on_invalid_records}
    skipping |= {routes[name].table or "" for name in skipping}
    cases = 0

    @settings(
        max_examples=SCHEMATHESIS_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        nonlocal cases
        operation = data.draw(st.sampled_from(weighted))
        mode = (
            GenerationMode.POSITIVE
            if operation.method == "get"
            else data.draw(st.sampled_from(GenerationMode))
        )
        case = data.draw(operation.as_strategy(generation_mode=mode))
        if case.path.startswith("/webhooks/"):
            credential = {"Authorization": f"Bearer {WRITE_KEY}"}
        else:
            credential = {"X-TD-Write-Key": WRITE_KEY}
        named = {str(value) for value in (case.path_parameters or {}).values()}
        # A skip_on_invalid_records route answers 2xx and names the invalid records: right there.
        lenient = mode is GenerationMode.NEGATIVE and bool(named & skipping)
        excluded = [checks.negative_data_rejection] if lenient else []
        response = case.call_and_validate(
            headers=credential, checks=SCHEMATHESIS_CHECKS, excluded_checks=excluded
        )
        cases += 1
        text = response.content.decode("utf-8", "replace")
        assert not any(marker in text for marker in (*LEAKS, *SECRETS)), text[:500]

    run()
    print(f"schemathesis cases: {cases}")
    assert cases >= SCHEMATHESIS_EXAMPLES * 0.9


# ---------------------------------------------------------------------------- what the fuzzing found


@pytest.mark.parametrize("shape", ["ingest", "webhook"])
def test_deeply_nested_record_on_a_skip_route_is_not_a_500(client: FlaskClient, shape: str) -> None:
    """Records nested up to the parser's limit are refused cleanly (400 or 422), or dead-lettered."""
    statuses: dict[int, list[int]] = {}
    for depth in range(500, 1001):
        record = {"external_id": "u1", "nickname": f"{DEEP}{depth}"}
        method, path, head, body = wrap(shape, "profiles_skip", [record])
        response = client.open(path, method=method, headers=head, data=body)
        statuses.setdefault(response.status_code, []).append(depth)
    assert max(statuses) < 500, {status: (min(d), max(d)) for status, d in statuses.items()}


def test_redirect_does_not_echo_the_write_key(client: FlaskClient) -> None:
    """A postback to a path with a doubled slash does not answer with the caller's write key."""
    response = client.open(
        "/",
        method="POST",
        headers={"Content-Type": "application/json"},
        data=json.dumps(ROUTES["events"]),
        query_string={"td_write_key": WRITE_KEY},
        environ_overrides={"PATH_INFO": "/postback//v3/event/db/events"},
    )
    assert WRITE_KEY not in response.get_data(as_text=True)
    assert WRITE_KEY not in response.headers.get("Location", "")


def test_fuzz_total() -> None:
    """The fuzz tests above sent at least 5,000 requests between them (when they all ran)."""
    if set(SENT) != set(FUZZ_EXAMPLES):
        pytest.skip(f"only {sorted(SENT)} of the fuzz tests ran")
    total = sum(SENT.values())
    print(f"fuzz requests: {total} ({dict(SENT)})")
    assert total >= MIN_REQUESTS, dict(SENT)
