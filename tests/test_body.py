"""Reading a request's body (receiver/body.py), against gunicorn as the Procfile starts it: the
credential first wherever it does not depend on the body, a malformed body a clean 4xx."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

from tests.helpers import WRITE_KEY, signed_headers
from tests.processes import Processes

BAD_CHUNKS = b"2;\x01\r\n{}\r\n0\r\n\r\n"  # a control character in a chunk extension


def connect(base: str) -> socket.socket:
    """A connection to the running relay."""
    address = urlsplit(base)
    return socket.create_connection((address.hostname, address.port), timeout=10)


def head(path: str, headers: dict[str, str]) -> bytes:
    """A POST's request line and headers, as they go on the wire."""
    lines = [f"POST {path} HTTP/1.1", "Host: relay", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """The status and the whole answer (the relay closes the connection, or it is read to its body)."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    headers, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in headers.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(headers.split(b" ")[1]), body


def test_a_wrong_bearer_key_is_refused_before_the_body_is_sent(stack: tuple[Processes, str]) -> None:
    """A webhook with a Bearer key is answered 401 while its announced megabyte has not been sent at all."""
    _, base = stack
    headers = {
        "Authorization": "Bearer not-a-key",
        "Content-Type": "application/json",
        "Content-Length": "1000000",
    }
    with connect(base) as sock:
        sock.sendall(head("/webhooks/events", headers))
        status, body = read_answer(sock)  # the body was never sent: the answer came without it
    assert status == 401, body
    assert json.loads(body)["code"] == 401


def test_a_bad_chunk_extension_is_a_clean_400_on_every_path(stack: tuple[Processes, str]) -> None:
    """A chunked body gunicorn cannot read is 400 in the one error shape, with no traceback in the log."""
    procs, base = stack
    chunked = {"Transfer-Encoding": "chunked", "Content-Type": "application/json"}
    asks = [
        ("/webhooks/events", {**signed_headers(b"{}"), **chunked}),  # signed: the body is read first
        ("/webhooks/events", {**chunked, "Authorization": f"Bearer {WRITE_KEY}"}),
        ("/postback/v3/event/db/events", {**chunked, "X-TD-Write-Key": WRITE_KEY}),
    ]
    for path, headers in asks:
        with connect(base) as sock:
            sock.sendall(head(path, headers) + BAD_CHUNKS)
            status, body = read_answer(sock)
        assert status == 400, (path, body)
        assert json.loads(body)["message"].startswith("Malformed request body"), body
    assert "Traceback" not in procs.logs()
    assert '"level": "error"' not in procs.logs()
