"""gunicorn's log lines (relay/weblog.py), from gunicorn started as the Procfile starts it."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

from tests.helpers import WRITE_KEY
from tests.processes import Processes, wait_for


def send_raw(base: str, request: bytes) -> bytes:
    """Send bytes as they are on one connection and read the answer until gunicorn closes it."""
    address = urlsplit(base)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_request_line_gunicorn_refuses_is_logged_without_its_query(stack: tuple[Processes, str]) -> None:
    """A control character makes gunicorn refuse the request line and log it: the write key is not in it."""
    procs, base = stack
    line = f"POST /postback/v3/event/db/events?td_write_key={WRITE_KEY}&x=1\x01 HTTP/1.1\r\n"
    answer = send_raw(base, line.encode() + b"Host: relay\r\nContent-Length: 2\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]

    def refused() -> list[dict[str, object]]:
        lines = [json.loads(text) for text in procs.logs().splitlines() if text.startswith("{")]
        return [entry for entry in lines if "Invalid request" in str(entry.get("msg"))]

    wait_for(lambda: bool(refused()), 10, "gunicorn's line about the refused request")
    (entry,) = refused()
    assert "/postback/v3/event/db/events?" in str(entry["msg"])  # the path stays, to say what came
    assert WRITE_KEY not in procs.logs()


def test_a_header_line_gunicorn_refuses_is_logged_without_its_value(stack: tuple[Processes, str]) -> None:
    """A header line without a colon is quoted by gunicorn's log line: only the name it starts with stays."""
    procs, base = stack
    request = f"POST /postback/v3/event/db/events HTTP/1.1\r\nHost: relay\r\nX-TD-Write-Key={WRITE_KEY}\r\n"
    assert send_raw(base, request.encode() + b"\r\n").startswith(b"HTTP/1.1 400")

    def refused() -> list[str]:
        return [text for text in procs.logs().splitlines() if "Invalid HTTP Header" in text]

    wait_for(lambda: bool(refused()), 10, "gunicorn's line about the refused header")
    assert "X-TD-Write-Key (value removed)" in refused()[0]
    assert WRITE_KEY not in procs.logs()
