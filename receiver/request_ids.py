"""Every answer carries `X-Request-Id`: one id per request, made when first asked for, on every answer.

The id is the relay's own: a caller's `webhook-id`, `Idempotency-Key` or `X-Request-Id` is not
trusted for it. It names the request's records (`<id>.<index>`), the worker's Braze call lines
and the access log line, so one answer can be followed to Braze.
"""

from __future__ import annotations

import secrets
import time

from flask import Flask, Response, g

HEADER = "X-Request-Id"


def request_id() -> str:
    """The id of the request being handled (made on first use)."""
    if "relay_id" not in g:
        g.relay_id = f"{int(time.time() * 1000):x}-{secrets.token_hex(6)}"
    rid: str = g.relay_id
    return rid


def register(app: Flask) -> None:
    """Put the id on every answer, errors and health checks included (after_request sees them all)."""

    @app.after_request
    def _stamp(response: Response) -> Response:
        response.headers[HEADER] = request_id()
        return response
