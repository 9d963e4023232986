"""CORS for web pages that post with TD's browser SDK (receiver/cors.py), on the real app: per route,
only its exact `allowed_origins`, on its two TD paths, with credentials; nothing for any other origin,
route or path.

The requests are the browser's preflight and td-js-sdk's own POST (test_td_js_sdk.py shows the SDK's
request shape; test_td_js_sdk_browser.py a real browser).
"""

from __future__ import annotations

import json

import pytest
import redis
from flask.testing import FlaskClient

from receiver import cors
from relay.routes import Route
from tests.test_td_js_sdk import (  # noqa: F401 - routes_file is a fixture (the browser routes)
    BROWSER_ROUTES,
    CONSENT,
    EVENTS,
    LOCAL,
    PAGE_KEY,
    SDK_TYPE,
    SHOP,
    cors_headers,
    preflight,
    routes_file,
    sdk_headers,
    sdk_post,
)


def test_a_browser_route_opens_its_two_td_paths() -> None:
    """A route's browser paths are TD's ingestion path (the SDK's) and its postback path; none without a
    database and table (a webhook-only route)."""
    page = Route("page", "user_track", database="web", table="page_events", track_record_type="custom_events")
    assert set(cors.browser_paths(page)) == {"/web/page_events", "/postback/v3/event/web/page_events"}
    assert cors.browser_paths(Route("hook", "user_track", track_record_type="custom_events")) == ()


def test_an_allowed_origin_matches_only_itself() -> None:
    """An origin is matched whole, ignoring case; regex characters in it (an IPv6 host) are literal."""
    ipv6 = cors.exact("http://[::1]:8001")
    assert ipv6.match("http://[::1]:8001") and not ipv6.match("http://:8001")
    shop = cors.exact(SHOP)
    assert shop.match(SHOP.upper())
    assert not shop.match(SHOP + ".evil.example") and not shop.match("https://shopXexample.com")


@pytest.mark.parametrize("origin", [SHOP, LOCAL])
@pytest.mark.parametrize("path", [EVENTS, f"/postback/v3/event{EVENTS}"])
def test_preflight_from_an_allowed_origin_names_it_with_credentials(
    client: FlaskClient, path: str, origin: str
) -> None:
    """The preflight answer echoes the exact origin, allows credentials, POST and the SDK's headers."""
    response = preflight(client, path, origin, "authorization,content-type,accept,x-td-write-key")
    assert response.status_code == 200
    cors = cors_headers(response)
    assert cors["access-control-allow-origin"] == origin  # exactly that one, never a list or '*'
    assert cors["access-control-allow-credentials"] == "true"
    assert cors["access-control-allow-methods"] == "POST"
    allowed = {name.strip().lower() for name in cors["access-control-allow-headers"].split(",")}
    assert allowed == {"authorization", "content-type", "accept", "x-td-write-key"}
    assert cors["access-control-max-age"] == "600"
    assert "Origin" in response.headers.get_all("Vary")


def test_preflight_leaves_out_headers_the_relay_does_not_take(client: FlaskClient) -> None:
    """A request header outside the allowed list is not allowed back, so the browser will not send it."""
    response = preflight(client, EVENTS, SHOP, "authorization,x-tracking-id")
    assert response.headers["Access-Control-Allow-Headers"] == "authorization"


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://shop.example.com.evil.example",  # a suffix is not the origin
        "https://evil.example/https://shop.example.com",
        "http://shop.example.com",  # another scheme is another origin
        "https://shop.example.com:8443",  # so is another port
        "null",  # sandboxed iframes and file:// pages
    ],
)
def test_other_origins_get_no_cors_headers(
    client: FlaskClient, redis_client: redis.Redis, origin: str
) -> None:
    """A page of any other origin gets no Access-Control-* header, on the preflight or the POST."""
    assert cors_headers(preflight(client, EVENTS, origin)) == {}
    response = sdk_post(client, EVENTS, {"events": [{"external_id": "u1", "name": "x"}]}, origin=origin)
    # Not a credential check: a caller that is not a browser can still post with the key. The
    # browser refuses the page the answer (and sent no POST, as its preflight failed).
    assert response.status_code == 200
    assert cors_headers(response) == {}


def test_origin_allowed_on_one_route_only_opens_that_route(client: FlaskClient) -> None:
    """An origin is allowed per route: the consent route lists only the shop, not the local page."""
    assert cors_headers(preflight(client, CONSENT, SHOP))["access-control-allow-origin"] == SHOP
    assert cors_headers(preflight(client, CONSENT, LOCAL)) == {}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("OPTIONS", "/db/events"),  # a route without allowed_origins
        ("POST", "/db/events"),
        ("OPTIONS", "/postback/v3/event/db/events"),
        ("OPTIONS", "/export/page_events"),  # server-to-server paths of a browser route
        ("OPTIONS", "/webhooks/page_events"),
        ("OPTIONS", "/web/nope"),  # no such route
        ("OPTIONS", "/admin/"),
        ("GET", "/healthz"),
    ],
)
def test_no_cors_headers_off_the_browser_paths(client: FlaskClient, method: str, path: str) -> None:
    """Routes without allowed_origins, exports, webhooks and every other path never answer CORS."""
    response = client.open(
        path,
        method=method,
        headers={"Origin": SHOP, "Access-Control-Request-Method": "POST", **sdk_headers()},
        data=json.dumps({"records": [{"external_id": "u1", "name": "x"}]}),
    )
    assert cors_headers(response) == {}, (method, path, response.status_code)


def test_error_answers_carry_cors_headers_for_an_allowed_origin(client: FlaskClient) -> None:
    """A refused request from an allowed page is readable there: the page can show why (401, 422)."""
    unauthenticated = client.post(
        EVENTS,
        data=b'{"events": [{"external_id": "u1", "name": "x"}]}',
        headers={"Origin": SHOP, "Content-Type": SDK_TYPE},
    )
    assert unauthenticated.status_code == 401
    assert cors_headers(unauthenticated)["access-control-allow-origin"] == SHOP
    invalid = sdk_post(client, EVENTS, {"events": [{"external_id": "u1"}]})
    assert invalid.status_code == 422
    assert cors_headers(invalid)["access-control-allow-origin"] == SHOP
    assert "name" in invalid.get_json()["errors"]["records"]["0"]
