"""One error type and one JSON shape for every error answer: {code, status, message, errors}."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import redis
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from receiver.request_ids import request_id
from relay import redis_health
from relay.replicas import NotReplicated

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than success; `errors` says what was wrong, keyed by record index and field."""

    def __init__(self, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = errors or {}


def as_dict(messages: Any) -> dict[str, Any]:
    """Marshmallow's messages keyed by field (a bare list is about the whole record)."""
    return messages if isinstance(messages, dict) else {"_record": messages}


def error_response(code: int, message: str, errors: dict[str, Any] | None = None) -> Response:
    """The one JSON shape of every error."""
    body = {"code": code, "status": HTTPStatus(code).phrase, "message": message, "errors": errors or {}}
    response = jsonify(body)
    response.status_code = code
    return response


def not_replicated_response(exc: NotReplicated) -> Response:
    """503 for records stored on the primary but not confirmed on enough replicas: what became of them."""
    seen = f"Redis is {exc.reason}" if exc.reason else f"{exc.confirmed} confirmed within {exc.wait_ms} ms"
    message = (
        f"Stored on the Redis primary, but not yet on the {exc.wanted} replica(s) this relay waits for "
        f"({seen}). The records are kept and will be delivered unless the primary is lost first. A "
        "retry with the same Idempotency-Key or delivery id is recognised and stores nothing again; "
        "a retry without one may deliver them twice."
    )
    errors = {"redis": "short of replicas", "replicas": {"wanted": exc.wanted, "confirmed": exc.confirmed}}
    response = error_response(503, message, errors)
    response.headers["Retry-After"] = str(max(1, -(-exc.wait_ms // 1000)))
    return response


def register(app: Flask) -> None:
    """Map every failure, ours or Werkzeug's or Redis's, to the JSON shape; never a stack trace."""

    @app.errorhandler(ApiError)
    def _api(exc: ApiError) -> Response:
        return error_response(exc.code, exc.message, exc.errors)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        code = exc.code or 500
        messages = {
            404: "No such endpoint or route.",
            405: "Method not allowed here.",
            413: "Request body too large.",
        }
        response = error_response(code, messages.get(code, HTTPStatus(code).phrase))
        if code == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(redis.RedisError)
    def _redis(exc: redis.RedisError) -> Response:
        # A Redis error's text can hold the server address or a command's values: log its code only.
        reason = redis_health.describe(exc)  # unreachable, out of memory, read-only ...
        log.error(
            "redis refused the request: nothing stored",
            extra={"error": redis_health.code(exc), "reason": reason, "request_id": request_id()},
        )
        message = f"Storage unavailable: Redis is {reason}; nothing was stored. Retry later."
        return error_response(503, message, {"redis": reason})

    @app.errorhandler(NotReplicated)
    def _not_replicated(exc: NotReplicated) -> Response:
        log.warning(
            "records stored on the primary, not confirmed on its replicas",
            extra={"wanted": exc.wanted, "confirmed": exc.confirmed, "request_id": request_id()},
        )
        return not_replicated_response(exc)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.error(
            "unexpected error", extra={"error": type(exc).__name__, "request_id": request_id()}, exc_info=exc
        )
        return error_response(500, "Internal error: nothing was stored. Retry later.")
