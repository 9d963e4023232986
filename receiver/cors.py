"""CORS for web pages that post with TD's browser SDK: per route, only its `allowed_origins` (flask-cors).

td-js-sdk posts with `fetch(..., {credentials: 'include'})` and a `Content-Type` that is not a simple
one, so the browser first sends a preflight (OPTIONS), and then reads the answer only when it names
the page's exact origin with `Access-Control-Allow-Credentials: true`. A route with `allowed_origins`
gets exactly that on the two TD paths its database and table select (ingestion and postback); any
other origin, any other route and every other path (exports, webhooks, admin) get no CORS header.
CORS only tells browsers which pages may read the answer: it is not a credential check, which the
route's own write key still is (see docs/browser-sdk.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from flask import Flask
from flask_cors import CORS

from receiver import state
from relay.routes import Route

# What td-js-sdk 4.x sets on its requests (lib/record.js), plus the relay's other TD-style headers.
# The SDK also sets User-Agent: Chromium drops it, a browser that sends it asks for it in the preflight.
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Accept",
    "X-TD-Write-Key",
    "Idempotency-Key",
    "User-Agent",
)
EXPOSED_HEADERS = ("X-Request-Id",)
# How long a browser may keep a preflight's answer: a change of allowed_origins reaches pages soon.
PREFLIGHT_MAX_AGE_S = 600


def browser_paths(route: Route) -> tuple[str, ...]:
    """The paths a web page may post a route's records to: TD's ingestion path (the SDK's) and postback."""
    if not route.database:
        return ()
    return (f"/{route.database}/{route.table}", f"/postback/v3/event/{route.database}/{route.table}")


def exact(origin: str) -> re.Pattern[str]:
    """An origin as a pattern that matches only itself (ignoring case, as hosts do).

    flask-cors reads a string with regex characters (an IPv6 host's brackets) as a pattern: escaping
    it keeps every allowed origin exact.
    """
    return re.compile(re.escape(origin) + r"\Z", re.IGNORECASE)


def resources(routes: Iterable[Route]) -> dict[str | re.Pattern[str], dict[str, Any]]:
    """flask-cors resources: each browser path of a route with allowed origins, with those origins."""
    found: dict[str | re.Pattern[str], dict[str, Any]] = {}
    for route in routes:
        if route.allowed_origins:
            origins = [exact(origin) for origin in route.allowed_origins]
            # Database and table names are letters, digits and '_': flask-cors matches these
            # paths literally, never as patterns.
            found.update({path: {"origins": origins} for path in browser_paths(route)})
    return found


def register(app: Flask) -> None:
    """Answer preflights and add CORS headers on the browser paths of routes with allowed origins."""
    found = resources(state.of(app).settings.routes.values())
    if not found:
        return  # no route is open to pages: flask-cors is not even installed on the app
    CORS(
        app,
        resources=found,
        methods=["POST"],
        allow_headers=list(ALLOWED_HEADERS),
        expose_headers=list(EXPOSED_HEADERS),
        supports_credentials=True,  # the SDK's fetch sends credentials: 'include'
        max_age=PREFLIGHT_MAX_AGE_S,
        always_send=False,  # no Origin, no CORS headers (flask-cors would list every origin)
        vary_header=True,
    )
