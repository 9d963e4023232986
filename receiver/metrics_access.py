"""Who may read /metrics and /openapi.json: anyone, or, with RELAY_METRICS_KEYS set, a key holder.

Both list every route's name, and /metrics each route's volumes. With `RELAY_METRICS_KEYS` set they
answer only `Authorization: Bearer <a key of it>` (Prometheus' `authorization` setting) or HTTP
Basic with an admin key (an operator's browser; Prometheus' `basic_auth`), compared in constant
time; anything else is 401. Unset, they are open, as a scrape behind a private network expects.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import request

from receiver.auth import bearer_token, key_matches
from receiver.errors import ApiError
from receiver.headers import lowered
from receiver.state import settings

P = ParamSpec("P")
R = TypeVar("R")


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


def guarded(view: Callable[P, R]) -> Callable[P, R]:
    """A view that answers 401 unless `allowed` (on these views only: other requests pay nothing)."""

    @functools.wraps(view)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        if not allowed():
            raise ApiError(401, "A metrics key (Authorization: Bearer) or an admin key is needed here.")
        return view(*args, **kwargs)

    return checked
