"""One error shape (receiver/errors.py): every failure a view meets, ours, Werkzeug's, Redis's or any
other, is answered {code, status, message, errors} without a trace. Each test registers the real
handlers on a small Flask app whose views fail in one way each."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.exceptions import RequestEntityTooLarge

from receiver import errors, request_ids

SECRET_ADDRESS = "redis://:s3cret@10.0.0.7:6379/0"


@pytest.fixture
def client() -> FlaskClient:
    """An app with the relay's error handlers and a view per kind of failure."""
    app = Flask("errors-test")
    request_ids.register(app)
    errors.register(app)

    @app.get("/refused")
    def refused() -> str:
        raise errors.ApiError(422, "Some records are invalid.", {"records": {"0": {"name": ["Missing."]}}})

    @app.post("/only-post")
    def only_post() -> str:
        return "ok"

    @app.get("/too-large")
    def too_large() -> str:
        raise RequestEntityTooLarge

    @app.get("/redis")
    def redis_down() -> str:
        raise redis.ConnectionError(f"Error connecting to {SECRET_ADDRESS}")

    @app.get("/bug")
    def bug() -> str:
        raise ZeroDivisionError("division by zero in a view")

    return app.test_client()


def shape(client: FlaskClient, path: str, code: int, method: str = "GET") -> dict[str, Any]:
    """The answer's body, checked to be the one shape with this status, and no trace."""
    response = client.open(path, method=method)
    text = response.get_data(as_text=True)
    assert response.status_code == code, text
    assert "Traceback" not in text
    body: dict[str, Any] = response.get_json()
    assert set(body) == {"code", "status", "message", "errors"}
    assert (body["code"], body["status"]) == (code, HTTPStatus(code).phrase)
    return body


def test_an_api_error_keeps_its_message_and_errors(client: FlaskClient) -> None:
    """The view's own refusal: its status, message and errors by record and field."""
    body = shape(client, "/refused", 422)
    assert body["message"] == "Some records are invalid."
    assert body["errors"] == {"records": {"0": {"name": ["Missing."]}}}


def test_werkzeugs_errors_take_the_shape(client: FlaskClient) -> None:
    """404, 405 (keeping Allow) and 413 say what they are in the same shape, with no errors."""
    assert shape(client, "/nowhere", 404) == {
        "code": 404,
        "status": "Not Found",
        "message": "No such endpoint or route.",
        "errors": {},
    }
    assert shape(client, "/only-post", 405)["message"] == "Method not allowed here."
    assert "POST" in client.get("/only-post").headers["Allow"]
    assert shape(client, "/too-large", 413)["message"] == "Request body too large."


def test_a_redis_error_is_503_and_its_text_is_not_logged(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis failing is 503 'nothing was stored', naming the reason; the log names the error's code,
    never its text (which may hold the server's address and password)."""
    with caplog.at_level(logging.ERROR, logger="receiver.errors"):
        body = shape(client, "/redis", 503)
    assert "nothing was stored" in body["message"]
    assert body["errors"] == {"redis": "unreachable"}
    (line,) = caplog.records
    assert line.getMessage() == "redis refused the request: nothing stored"
    assert (line.error, line.reason) == ("ConnectionError", "unreachable")  # type: ignore[attr-defined]
    assert line.request_id  # type: ignore[attr-defined]
    assert "s3cret" not in caplog.text and "s3cret" not in client.get("/redis").get_data(as_text=True)


def test_any_other_error_is_500_with_its_trace_in_the_log_only(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception is 500 'nothing was stored'; its trace goes to the log, not the answer."""
    with caplog.at_level(logging.ERROR, logger="receiver.errors"):
        body = shape(client, "/bug", 500)
    assert body["message"] == "Internal error: nothing was stored. Retry later."
    assert "division by zero" not in str(body)
    (line,) = caplog.records
    assert line.exc_info is not None and line.exc_info[0] is ZeroDivisionError


def test_marshmallows_messages_are_keyed_by_field() -> None:
    """A bare list of messages is about the whole record (`_record`); a dict is kept as it is."""
    assert errors.as_dict(["Not an object."]) == {"_record": ["Not an object."]}
    assert errors.as_dict({"name": ["Missing."]}) == {"name": ["Missing."]}
