"""TD's browser SDK at the HTTP level: its envelope, types and query, browser-route rules (CORS is in
test_cors.py).

The requests are the ones td-js-sdk 4.4.3 builds (npm package, lib/record.js `_sendRecord` and
lib/utils/misc.js `adlHeaders`; vendored in sdk_demo/static/td-js-sdk/): POST
`endpoint + database + '/' + table + '?modified=<ms>[&time=<record.time>]'`, body `{"events": [record]}`,
`Authorization: TD1 <key>`, `Content-Type` and `Accept` `application/vnd.treasuredata.v1+json` (or
`...v1.js+json` in signed mode with a global id), fetched with `credentials: 'include'`. The browser
itself is in test_td_js_sdk_browser.py.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from relay import envelope
from relay.config import load_settings
from relay.errors import ConfigError
from relay.modes import Kind
from tests.helpers import KEYS, ROUTES, WRITE_KEY
from tests.processes import procfile_command, refused_start
from tests.test_openapi import doc_of, validator

PAGE_KEY = "page-write-key-public-3c9e"  # the key a web page carries: public by design
SHOP = "https://shop.example.com"
LOCAL = "http://127.0.0.1:8001"
BROWSER_ROUTES = f"""
[routes.page_events]
database = "web"
table = "page_events"
mode = "user_track"
track_record_type = "custom_events"
write_keys_env = "PAGE_WRITE_KEYS"
allowed_origins = ["{SHOP}", "{LOCAL}"]

[routes.page_consent]
database = "web"
table = "page_consent"
mode = "user_subscription"
write_keys_env = "PAGE_WRITE_KEYS"
allowed_origins = ["{SHOP}"]
"""
EVENTS = "/web/page_events"
CONSENT = "/web/page_consent"
T1 = 1_764_000_000  # 2025-11-24T16:00:00Z
TRACK_LANE = KEYS.lane_list("track")
CONSENT_LANE = KEYS.lane_list("consent")
SDK_TYPE = "application/vnd.treasuredata.v1+json"
SDK_SIGNED_TYPE = "application/vnd.treasuredata.v1.js+json"  # signed mode with a global id
ACCESS_CONTROL = "access-control-"


@pytest.fixture
def routes_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The one-route-per-mode file plus two browser routes with their own (public) key."""
    monkeypatch.setenv("PAGE_WRITE_KEYS", PAGE_KEY)
    path = tmp_path / "relay.toml"
    path.write_text(ROUTES + BROWSER_ROUTES)
    return path


def sdk_headers(origin: str | None = SHOP, content_type: str = SDK_TYPE) -> dict[str, str]:
    """The headers td-js-sdk sets, and the Origin the browser adds."""
    headers = {"Authorization": f"TD1 {PAGE_KEY}", "Content-Type": content_type, "Accept": content_type}
    if origin:
        headers["Origin"] = origin
    return headers


def sdk_post(client: FlaskClient, path: str, body: Any, **kwargs: Any) -> TestResponse:
    """POST as the SDK does: ?modified=<ms>&time=<record time>, {"events": [...]} by default."""
    query = {"modified": "1764000000123", "time": str(T1)}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, data=data, headers=sdk_headers(**kwargs), query_string=query)


def preflight(
    client: FlaskClient, path: str, origin: str, headers: str = "authorization,content-type"
) -> TestResponse:
    """The browser's CORS preflight for a POST with these request headers."""
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
    )


def cors_headers(response: TestResponse) -> dict[str, str]:
    """The answer's Access-Control-* headers, names in lower case."""
    return {k.lower(): v for k, v in response.headers.items() if k.lower().startswith(ACCESS_CONTROL)}


def waiting(client: redis.Redis, lane: str) -> list[envelope.Envelope]:
    """The records waiting in a lane."""
    return [envelope.loads(raw) for raw in client.lrange(lane, 0, -1)]


# --- the SDK's requests from an allowed page ----------------------------------------------------


def test_sdk_post_from_an_allowed_origin_is_stored_and_readable(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """The SDK's exact request is stored; its answer names the origin, allows credentials, shows the id."""
    record = {"external_id": "web-u1", "name": "signup", "plan": "pro", "time": T1}
    response = sdk_post(client, EVENTS, {"events": [record]})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["accepted"] == 1
    cors = cors_headers(response)
    assert cors["access-control-allow-origin"] == SHOP
    assert cors["access-control-allow-credentials"] == "true"
    assert cors["access-control-expose-headers"] == "X-Request-Id"
    (stored,) = waiting(redis_client, TRACK_LANE)
    assert stored["route"] == "page_events"
    assert stored["rec"]["name"] == "signup" and stored["rec"]["properties"] == {"plan": "pro"}


# --- the SDK's envelope, types and query ---------------------------------------------------------


@pytest.mark.parametrize("content_type", [SDK_TYPE, SDK_SIGNED_TYPE, "application/json"])
def test_events_envelope_in_each_sdk_type_is_stored(
    client: FlaskClient, redis_client: redis.Redis, content_type: str
) -> None:
    """{"events": [...]} is taken like {"records": [...]}, in both of the SDK's content types."""
    records = [
        {"external_id": "web-u2", "name": "view", "time": T1},
        {"external_id": "web-u2", "name": "click"},
    ]
    response = sdk_post(client, EVENTS, {"events": records}, content_type=content_type)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["accepted"] == 2 and response.get_json()["rejected"] == []
    assert [stored["rec"]["name"] for stored in waiting(redis_client, TRACK_LANE)] == ["view", "click"]


def test_records_envelope_still_works_on_a_browser_route(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """The ingestion API's own {"records": [...]} is taken on the same path."""
    response = sdk_post(client, EVENTS, {"records": [{"external_id": "web-u3", "name": "view"}]})
    assert response.status_code == 200
    assert len(waiting(redis_client, TRACK_LANE)) == 1


def test_sdk_query_is_accepted_and_does_not_set_the_time(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """?modified=&time= are taken and read by nothing: the stored time is the record's own."""
    own = {"external_id": "web-u4", "name": "a", "time": T1 + 60}
    none = {"external_id": "web-u4", "name": "b"}
    response = client.post(
        EVENTS,
        data=json.dumps({"events": [own, none]}),
        headers=sdk_headers(),
        query_string={"modified": "1", "time": "1000000000"},
    )
    assert response.status_code == 200
    first, second = waiting(redis_client, TRACK_LANE)
    assert first["t"] == T1 + 60
    assert second["t"] > 1_700_000_000  # receive time, not the query's 2001 date
    assert second["t"] == pytest.approx(second["at"], abs=1)


def test_write_key_in_the_query_is_not_taken_on_the_ingestion_path(client: FlaskClient) -> None:
    """?td_write_key= is a postback form only; on /{database}/{table} it is not a credential."""
    response = client.post(
        EVENTS,
        data=b'{"events": [{"external_id": "u1", "name": "x"}]}',
        headers={"Content-Type": SDK_TYPE},
        query_string={"td_write_key": PAGE_KEY, "modified": "1"},
    )
    assert response.status_code == 401


BAD_ENVELOPES = {
    "both keys": (
        {"records": [{"external_id": "u1", "name": "x"}], "events": [{"external_id": "u1", "name": "y"}]},
        "not both",
    ),
    "no events": ({"events": []}, "at least one record"),
    "events not a list": ({"events": {"external_id": "u1", "name": "x"}}, "at least one record"),
    "events null": ({"events": None}, "at least one record"),
    "neither key": ({"event": [{"external_id": "u1", "name": "x"}]}, "at least one record"),
}


@pytest.mark.parametrize(("body", "said"), BAD_ENVELOPES.values(), ids=BAD_ENVELOPES.keys())
def test_bad_envelopes_are_400_and_store_nothing(
    client: FlaskClient, redis_client: redis.Redis, body: dict[str, Any], said: str
) -> None:
    """An envelope with both keys, an empty or non-list events, or neither key is 400, stored nothing."""
    response = sdk_post(client, EVENTS, body)
    assert response.status_code == 400
    assert said in response.get_json()["message"]
    assert waiting(redis_client, TRACK_LANE) == []


def test_more_than_500_events_is_413(client: FlaskClient, redis_client: redis.Redis) -> None:
    """The events form has the ingestion API's limit of 500 records."""
    events = [{"external_id": "u1", "name": "x"}] * 501
    response = sdk_post(client, EVENTS, {"events": events})
    assert response.status_code == 413
    assert waiting(redis_client, TRACK_LANE) == []


def test_consent_change_through_the_sdk_shape_is_queued_on_the_consent_lane(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """td.set('$global', {external_id}) + addRecord(consent table, group and state): a consent record."""
    record = {
        "external_id": "web-u5",
        "subscription_group_id": "g-news",
        "subscription_state": "unsubscribed",
    }
    response = sdk_post(client, CONSENT, {"events": [record]})
    assert response.status_code == 200, response.get_json()
    (stored,) = waiting(redis_client, CONSENT_LANE)
    assert stored["kind"] == Kind.CONSENT and stored["route"] == "page_consent"


# --- a key in a page is public: what it opens ------------------------------------------------------


def test_page_key_opens_only_its_own_routes(client: FlaskClient) -> None:
    """The page's key is refused on other routes, and the global keys are refused on the browser route."""
    record = {"events": [{"external_id": "u1", "name": "x"}]}
    assert sdk_post(client, "/db/events", record).status_code == 401
    response = client.post(
        EVENTS,
        data=json.dumps(record),
        headers={"Authorization": f"TD1 {WRITE_KEY}", "Content-Type": SDK_TYPE},
    )
    assert response.status_code == 401


def test_page_key_opens_every_path_of_its_route_as_the_readme_says(client: FlaskClient) -> None:
    """Anyone holding the page's key can write to its route by postback (query key) and webhook; an
    export is 403 (a page route takes none).

    This is what docs/browser-sdk.md tells operators a public key allows; a change here changes that text.
    """
    record = {"external_id": "u1", "name": "x"}
    basic = base64.b64encode(f"td:{PAGE_KEY}".encode()).decode()
    answers = [
        client.post(
            "/postback/v3/event/web/page_events",
            json=record,
            query_string={"td_write_key": PAGE_KEY},
        ),
        client.put(
            "/export/page_events",
            json={"column_names": list(record), "data": [list(record.values())]},
            headers={"Authorization": f"Basic {basic}"},
        ),
        client.post("/webhooks/page_events", json=record, headers={"Authorization": f"Bearer {PAGE_KEY}"}),
    ]
    assert [answer.status_code for answer in answers] == [200, 403, 202]


# --- the routes file: rules for routes whose key is public ----------------------------------------

BROWSER_ROUTE = """
[routes.web]
database = "web"
table = "page_events"
mode = "{mode}"
{extra}
write_keys_env = "PAGE_WRITE_KEYS"
allowed_origins = ["https://shop.example.com"]
"""


@pytest.fixture
def operator_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An operator's environment with a global key and a page key; the routes file is the test's."""
    for name in list(os.environ):
        if name.startswith(("RELAY_", "BRAZE_")) or name == "REDIS_URL":
            monkeypatch.delenv(name)
    path = tmp_path / "relay.toml"
    monkeypatch.setenv("RELAY_CONFIG", str(path))
    monkeypatch.setenv("RELAY_WRITE_KEYS", WRITE_KEY)
    monkeypatch.setenv("PAGE_WRITE_KEYS", PAGE_KEY)
    return path


def route_text(
    mode: str, *, drop: str = "", extra: str = "", origins: str = '["https://shop.example.com"]'
) -> str:
    """A browser route of the given mode, with one line dropped or its origins replaced."""
    text = BROWSER_ROUTE.format(mode=mode, extra=extra).replace('["https://shop.example.com"]', origins)
    return "\n".join(line for line in text.splitlines() if not (drop and line.startswith(drop)))


def boot_error(path: Path, text: str) -> str:
    """The one-line message load_settings stops with for this routes file."""
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("mode", ["user_delete", "user_identifying", "user_new_alias"])
def test_browser_route_in_a_mode_a_public_key_must_not_reach_stops_the_boot(
    operator_env: Path, mode: str
) -> None:
    """allowed_origins on a delete, identify or new-alias route stops the service naming the route."""
    message = boot_error(operator_env, route_text(mode))
    assert "route 'web'" in message and "allowed_origins" in message and mode in message


def test_browser_route_without_keys_of_its_own_stops_the_boot(operator_env: Path) -> None:
    """allowed_origins needs write_keys_env: the global keys must not be the ones a page shows."""
    text = route_text("user_track", drop="write_keys_env", extra='track_record_type = "custom_events"')
    message = boot_error(operator_env, text)
    assert "route 'web'" in message and "write_keys_env" in message


def test_browser_route_without_database_stops_the_boot(operator_env: Path) -> None:
    """allowed_origins without database/table has no path a page could post to."""
    text = route_text("user_subscription", drop="database").replace('table = "page_events"', "")
    message = boot_error(operator_env, text)
    assert "route 'web'" in message and "allowed_origins" in message


@pytest.mark.parametrize(
    "origins",
    [
        '["*"]',
        '["https://shop.example.com/"]',
        '["shop.example.com"]',
        '["https://shop.example.com/cart"]',
        '["https://*.example.com"]',
        '["null"]',
        '"https://shop.example.com"',
        "[1]",
    ],
)
def test_browser_route_with_an_inexact_origin_stops_the_boot(operator_env: Path, origins: str) -> None:
    """Every allowed origin is exact: scheme, host and optional port; a wildcard or a path stops the boot."""
    message = boot_error(operator_env, route_text("user_subscription", origins=origins))
    assert "route 'web'" in message and "allowed_origins" in message


@pytest.mark.parametrize(
    ("mode", "extra"),
    [
        ("user_track", 'track_record_type = "custom_events"'),
        ("user_track", 'track_record_type = "purchases"'),
        ("user_track", 'track_record_type = "user_profile_attributes"'),
        ("user_subscription", ""),
    ],
)
def test_browser_routes_of_track_and_subscription_modes_load(
    operator_env: Path, mode: str, extra: str
) -> None:
    """Events, purchases, attributes and consent may take records from pages, with their own key."""
    operator_env.write_text(route_text(mode, extra=extra))
    route = load_settings().routes["web"]
    assert route.allowed_origins == ("https://shop.example.com",)
    assert [key.reveal() for key in route.write_keys] == [PAGE_KEY]


def test_gunicorn_exits_2_with_one_line_for_a_browser_delete_route(tmp_path: Path) -> None:
    """The web command with allowed_origins on a user_delete route exits 2 with one line (no respawn)."""
    path = tmp_path / "relay.toml"
    path.write_text(route_text("user_delete"))
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("RELAY_", "BRAZE_")) and name != "REDIS_URL"
    }
    environ.update(
        {
            "RELAY_CONFIG": str(path),
            "RELAY_WRITE_KEYS": WRITE_KEY,
            "PAGE_WRITE_KEYS": PAGE_KEY,
            "PORT": "0",
            "PATH": f"{Path(sys.executable).parent}:{environ.get('PATH', '')}",
        }
    )
    line = refused_start(["bash", "-c", f"exec {procfile_command('web')}"], environ, "configuration error")
    assert "route 'web'" in line and "allowed_origins" in line and "user_delete" in line
    assert PAGE_KEY not in line


# --- the OpenAPI document ------------------------------------------------------------------------


def test_openapi_document_describes_the_sdk_form(client: FlaskClient) -> None:
    """The ingestion body is records or events (never both), in the SDK's types, with its query."""
    document = doc_of(client)
    body = validator(document, "#/components/schemas/IngestBody")
    record = {"external_id": "u1", "name": "signup"}
    body.validate({"events": [record]})
    body.validate({"records": [record]})
    for wrong in ({"records": [record], "events": [record]}, {"events": []}, {"events": [record] * 501}):
        assert not body.is_valid(wrong), wrong
    operation = document["paths"]["/{database}/{table}"]["post"]
    assert {SDK_TYPE, SDK_SIGNED_TYPE} <= set(operation["requestBody"]["content"])
    query = {param["name"] for param in operation["parameters"] if param["in"] == "query"}
    assert query == {"modified", "time"}
    assert "allowed_origins" in operation["description"]
