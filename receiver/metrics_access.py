"""Who may read /metrics and /openapi.json: anyone, or, with RELAY_METRICS_KEYS set, a key holder.

Both list every route's name, and /metrics each route's volumes. With `RELAY_METRICS_KEYS` set they
answer only `Authorization: Bearer <a key of it>` (Prometheus' `authorization` setting) or HTTP
Basic with an admin key (an operator's browser; Prometheus' `basic_auth`), compared in constant
time; anything else is 401. Unset, they are open, as a scrape behind a private network expects.
"""

from __future__ import annotations

from flask import Flask, request

from receiver.auth import bearer_token, key_matches
from receiver.errors import ApiError
from receiver.headers import lowered
from receiver.state import settings

GUARDED = frozenset({"ingest.metrics_view", "openapi.openapi_json"})  # the endpoints it guards


def allowed() -> bool:
    """True when the request may read a guarded endpoint."""
    conf = settings()
    if not conf.metrics_keys:
        return True
    token = bearer_token(lowered(request.headers))
    if token is not None:
        return key_matches(token, conf.metrics_keys)
    credentials = request.authorization
    if credentials is None or credentials.type != "basic" or not conf.admin_keys:
        return False
    return key_matches(credentials.password or "", conf.admin_keys)


def guard() -> None:
    """Before each request: 401 on a guarded endpoint without a key that opens it."""
    if request.endpoint in GUARDED and not allowed():
        raise ApiError(401, "A metrics key (Authorization: Bearer) or an admin key is needed here.")


def register(app: Flask) -> None:
    """Guard /metrics and /openapi.json."""
    app.before_request(guard)
