"""Reading a request's body (receiver/body.py), against gunicorn as the Procfile starts it: the
credential first wherever it does not depend on the body, a malformed body a clean 4xx, each
route's own limit (smaller on a route whose key is public, which takes no exports at all) before
the body is sent, and a large export of another shape refused before it is parsed."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from flask.testing import FlaskClient

from tests.helpers import ROUTES, WRITE_KEY, signed_headers
from tests.processes import Processes

PAGE_KEY = "page-key-public-5b1d"
LIMITED_ROUTES = """
[routes.page]
database = "web"
table = "events"
mode = "user_track"
track_record_type = "custom_events"
write_keys_env = "PAGE_KEYS"
allowed_origins = ["https://shop.example.com"]

[routes.tight]
database = "db"
table = "tight"
mode = "user_track"
track_record_type = "custom_events"
max_body_bytes = 1000
"""

BAD_CHUNKS = b"2;\x01\r\n{}\r\n0\r\n\r\n"  # a control character in a chunk extension


@pytest.fixture
def routes_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tests' routes, a route whose key is in a web page, and one with a body limit of its own."""
    monkeypatch.setenv("PAGE_KEYS", PAGE_KEY)
    path = tmp_path / "relay.toml"
    path.write_text(ROUTES + LIMITED_ROUTES)
    return path


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


def refused_before_the_body(base: str, path: str, headers: dict[str, str], length: int) -> tuple[int, dict]:
    """Send a request's headers announcing `length` bytes and none of them: the status and error it gets."""
    with connect(base) as sock:
        sock.sendall(head(path, {**headers, "Content-Length": str(length)}))
        status, body = read_answer(sock)
    return status, json.loads(body)


def basic(key: str) -> dict[str, str]:
    """TD's web export's credential: the key as the HTTP Basic password."""
    return {"Authorization": "Basic " + base64.b64encode(f"td:{key}".encode()).decode()}


def test_a_route_whose_key_is_public_takes_no_exports(stack: tuple[Processes, str]) -> None:
    """A 60 MB export to a page's route is 403 before any of it is sent, with the page's key or none."""
    _, base = stack
    json_type = {"Content-Type": "application/json"}
    for headers in ({**json_type, **basic(PAGE_KEY)}, json_type):
        status, error = refused_before_the_body(base, "/export/page", headers, 60_000_000)
        assert status == 403, error
        assert error["errors"] == {"route": "page", "budget": "exports"}


def test_a_body_over_its_routes_limit_is_413_before_it_is_sent(stack: tuple[Processes, str]) -> None:
    """A route's max_body_bytes, and a page route's 256 KB by default, are checked on Content-Length:
    413 with none of the body sent; each refusal is counted against the route's body_bytes budget."""
    _, base = stack
    json_type = {"Content-Type": "application/json"}
    status, error = refused_before_the_body(
        base, "/db/tight", {**json_type, "X-TD-Write-Key": WRITE_KEY}, 1001
    )
    assert status == 413, error
    assert error["errors"] == {"limit": 1000}
    page = {**json_type, "X-TD-Write-Key": PAGE_KEY}
    status, error = refused_before_the_body(base, "/web/events", page, 256 * 1024 + 1)
    assert (status, error["errors"]) == (413, {"limit": 256 * 1024})
    tight = requests.post(
        f"{base}/db/tight",
        json={"records": [{"external_id": "u1", "name": "e"}]},
        headers={"X-TD-Write-Key": WRITE_KEY},
        timeout=10,
    )
    assert tight.status_code == 200, tight.text
    scraped = requests.get(f"{base}/metrics", timeout=10).text
    assert 'relay_budget_refusals_total{budget="body_bytes",route="tight"} 1.0' in scraped
    assert 'relay_budget_refusals_total{budget="body_bytes",route="page"} 1.0' in scraped


def test_a_large_export_of_another_shape_is_refused_before_it_is_parsed(client: FlaskClient) -> None:
    """Over 1 MB, an export that does not open with one of its keys is 400 naming the shape, before
    parsing: the broken JSON further on is never reached (its parse error would name it)."""
    rows = json.dumps([["u", "e"]] * 200_000)
    broken = ('{"rows": ' + rows + ", oops}").encode()
    answer = client.put(
        "/export/events", data=broken, headers={**basic(WRITE_KEY), "Content-Type": "application/json"}
    )
    assert answer.status_code == 400
    assert answer.get_json()["message"] == "The body must hold column_names and data (TD's export shape)."
    small = b'{"rows": [], oops}'  # a small body is parsed at once: its error says exactly what is wrong
    answer = client.put(
        "/export/events", data=small, headers={**basic(WRITE_KEY), "Content-Type": "application/json"}
    )
    assert answer.get_json()["message"].startswith("Malformed JSON")
