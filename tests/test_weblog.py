"""The web's access log (relay/weblog.py, gunicorn's logger): one JSON line per answer, whatever the path
holds, to stdout, to a file, or off (GUNICORN_ACCESS_LOG), and gunicorn's own lines without a refused
request's query string or header value, through gunicorn as the Procfile starts it."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import requests

from braze_sim.server import Simulator
from tests.helpers import WRITE_KEY
from tests.processes import Processes, wait_for
from tests.test_logs import json_lines, web_environment


def test_encoded_crlf_in_a_path_keeps_the_access_log_json(stack: tuple[Processes, str]) -> None:
    """A path with %0d%0a, %22 and %5c is logged inside one JSON line, never splitting it."""
    procs, base = stack
    address = urlsplit(base)
    forged = "/webhooks/x%0d%0a%7B%22forged%22:%20true%7D%22%5c%E2%80%A8"
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(f"GET {forged} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 405") or answer.startswith(b"HTTP/1.1 404"), answer[:100]

    def logged() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in procs.logs().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("logger") == "gunicorn.access"]  # each one JSON object

    wait_for(lambda: any("forged" in str(line["path"]) for line in logged()), 10, "the access log line")
    (line,) = [line for line in logged() if "forged" in str(line["path"])]
    assert str(line["path"]).startswith('/webhooks/x\r\n{"forged": true}"\\')
    assert not any(text.startswith('{"forged"') for text in procs.logs().splitlines())


def test_access_log_to_a_file_or_off(tmp_path: Path, routes_file: Path, braze: Simulator) -> None:
    """GUNICORN_ACCESS_LOG names a file (JSON lines there, none on stdout); empty turns it off."""
    access_file = tmp_path / "access.log"
    for setting in (str(access_file), ""):
        env = web_environment(routes_file, braze.url, GUNICORN_ACCESS_LOG=setting)
        procs = Processes(env, tmp_path / ("file" if setting else "off"))
        procs.log_dir.mkdir()
        procs.start("web")
        base = f"http://127.0.0.1:{env['PORT']}"

        def ready(base: str = base) -> bool:
            try:
                return requests.get(base + "/readyz", timeout=1).status_code == 200
            except requests.RequestException:  # not listening yet, or too busy to answer in time
                return False

        try:
            wait_for(ready, 30, "gunicorn to answer /readyz")
            assert requests.get(base + "/nowhere", timeout=5).status_code == 404
        finally:
            procs.stop_all()
        printed = json_lines(procs.logs(), "web")
        assert printed and not [line for line in printed if line["logger"] == "gunicorn.access"]
    written = json_lines(access_file.read_text(), "access.log")
    assert [line["path"] for line in written if line["status"] == 404] == ["/nowhere"]
    assert {line["logger"] for line in written} == {"gunicorn.access"}


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
