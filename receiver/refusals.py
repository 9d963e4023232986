"""Answering a request that a route's budget refuses (relay/budgets.py), and counting it in /metrics.

429 when waiting helps (the route holds its most records or bytes waiting for delivery, or took its
records for this minute), with `Retry-After`; 413 when the request alone is over a budget (a body
over the route's size, a transform that makes too many records of it); 403 for an export on a route
whose key is public. The one error shape, with the route, the budget and its limit in `errors`.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response

from receiver.errors import error_response
from receiver.state import current
from relay import metrics
from relay.budgets import Budget, OverBudget

log = logging.getLogger(__name__)


def count(workspace: str, route: str, budget: Budget) -> None:
    """Count one refusal (best effort: the answer does not wait on Redis)."""
    try:
        metrics.BUDGET_REFUSALS.incr(current().redises.of(workspace), workspace, route=route, budget=budget)
    except redis.RedisError:
        log.warning("refusal not counted: redis unavailable", extra={"route": route})


def answer(exc: OverBudget) -> Response:
    """The refusal in the one error shape; Retry-After when the same request may pass later."""
    routes = current().settings.routes
    if exc.route in routes:
        count(routes[exc.route].workspace, exc.route, exc.budget)
    errors: dict[str, Any] = {"route": exc.route, "budget": str(exc.budget)}
    if exc.limit is not None:
        errors["limit"] = exc.limit
    response = error_response(exc.status, exc.message, errors)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def register(app: Flask) -> None:
    """Answer every OverBudget raised while serving a request."""
    app.register_error_handler(OverBudget, answer)
