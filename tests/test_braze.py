"""Reading Braze's answers (handlers/braze.py): each status and transport failure to one verdict.

Pure: answers are plain values, failures real `requests` exceptions (some raised by real sockets).
Each test names the rule of docs/delivery.md it pins.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError

from handlers.braze import (
    Answer,
    Delivered,
    RateLimited,
    Rejected,
    TooLarge,
    Unavailable,
    classify,
    classify_failure,
    never_sent,
)

NOW = 1_800_000_000.0


def answer(status: int, body: object = None, **headers: str) -> Answer:
    """An answer as Braze would send it (header names in lower case, as over HTTP/2)."""
    raw = b"" if body is None else json.dumps(body).encode()
    return Answer(status, {name.lower().replace("_", "-"): value for name, value in headers.items()}, raw)


def test_2xx_is_delivered() -> None:
    """Rule "2xx: delivered": 201 {"message": "success"} is Delivered with no refused items."""
    assert classify(answer(201, {"message": "success"})) == Delivered(201, [])


def test_2xx_names_the_refused_items() -> None:
    """Rule "2xx: ... except the items named in errors": each error keeps its array and index."""
    body = {
        "message": "success",
        "errors": [
            {
                "type": "'external_id' or 'braze_id' or 'user_alias' is required",
                "input_array": "events",
                "index": 3,
            },
            {"type": "invalid currency", "input_array": "purchases", "index": 0},
        ],
    }
    verdict = classify(answer(201, body))
    assert verdict == Delivered(
        201,
        [
            ("events", 3, "'external_id' or 'braze_id' or 'user_alias' is required"),
            ("purchases", 0, "invalid currency"),
        ],
    )


def test_2xx_errors_without_index_name_the_request() -> None:
    """Errors that name no item are kept with index -1 (they refuse nothing by position)."""
    assert classify(answer(201, {"message": "success", "errors": ["something"]})) == Delivered(
        201, [("", -1, "something")]
    )


def test_2xx_with_a_body_that_is_not_json_is_delivered() -> None:
    """A 2xx is Braze taking the request, whatever its body says."""
    assert classify(Answer(202, {}, b"queued")) == Delivered(202, [])


def test_429_waits_for_the_reset() -> None:
    """Rule "429: wait for the reset": X-RateLimit-Reset (epoch seconds) is when sending may resume."""
    assert classify(answer(429, {"message": "rate limited"}, X_RateLimit_Reset="1800000042")) == RateLimited(
        1_800_000_042.0
    )


def test_429_without_reset_waits_a_second() -> None:
    """No header: a short wait, then the next attempt decides."""
    assert classify(answer(429), now=NOW) == RateLimited(NOW + 1.0)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retried_and_not_ambiguous(status: int) -> None:
    """Rule "A 5xx answer means Braze did not take the request, so it is retried for every kind"."""
    assert classify(answer(status)) == Unavailable(f"Braze answered {status}", status=status, ambiguous=False)


def test_413_is_too_large_with_braze_message() -> None:
    """Rule "413: split the batch in halves until it fits"."""
    assert classify(answer(413, {"message": "payload too large"})) == TooLarge("payload too large")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_4xx_is_rejected_with_braze_message(status: int) -> None:
    """Rule "401, 403, 404 and other 4xx: dead-letter at once with Braze's status and message"."""
    verdict = classify(answer(status, {"message": "Invalid API key", "errors": ["x"]}))
    assert verdict == Rejected(status, 'Invalid API key: ["x"]')


def test_rejected_message_of_a_body_that_is_not_json() -> None:
    """A plain-text error body becomes the message, shortened."""
    assert classify(Answer(400, {}, b"x" * 1000)) == Rejected(400, "x" * 300)


# --- no answer ----------------------------------------------------------------------------------


def refused_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_never_sent() -> None:
    """Rule "the connection failed before the body was sent: retry" (a real refused connection)."""
    with pytest.raises(requests.ConnectionError) as caught:
        requests.post(f"http://127.0.0.1:{refused_port()}/users/track", data=b"{}", timeout=2)
    assert never_sent(caught.value)
    assert classify_failure(caught.value) == Unavailable("connection failed: ConnectionError")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A server that reads the request and never answers (Braze took the body, then nothing)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        conns = []
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.recv(65536)
            conns.append(conn)
        for conn in conns:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    server.close()


def test_read_timeout_after_sending_is_ambiguous(silent_server: int) -> None:
    """Rule "Ambiguous failures": the body was sent and no answer came (a real read timeout)."""
    with pytest.raises(requests.ReadTimeout) as caught:
        requests.post(f"http://127.0.0.1:{silent_server}/users/track", data=b"{}", timeout=(2, 0.2))
    assert not never_sent(caught.value)
    assert classify_failure(caught.value) == Unavailable("no answer: ReadTimeout", ambiguous=True)


def test_connect_timeout_is_never_sent() -> None:
    """A connect timeout means the connection was never made."""
    assert classify_failure(requests.ConnectTimeout("connect timed out")).ambiguous is False


def test_wrapped_new_connection_error_is_never_sent() -> None:
    """requests' ConnectionError wraps urllib3's MaxRetryError(reason=NewConnectionError): told by type."""
    reason = NewConnectionError(None, "Failed to establish a new connection")  # type: ignore[arg-type]
    error = requests.ConnectionError(MaxRetryError(None, "/users/track", reason))  # type: ignore[arg-type]
    assert never_sent(error)


def test_dropped_connection_is_ambiguous() -> None:
    """A connection dropped after sending (ProtocolError) may have delivered the body."""
    error = requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError()))
    assert classify_failure(error) == Unavailable("no answer: ConnectionError", ambiguous=True)


def test_message_text_does_not_decide() -> None:
    """An error whose text merely mentions a refused connection is still judged by its type."""
    error = requests.ConnectionError(ReadTimeoutError(None, "/", "NewConnectionError ConnectionRefused"))  # type: ignore[arg-type]
    assert not never_sent(error)
