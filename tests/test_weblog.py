"""The web's access log (relay/weblog.py, gunicorn's logger): one JSON line per answer, whatever the path
holds, to stdout, to a file, or off (GUNICORN_ACCESS_LOG), through gunicorn as the Procfile starts it."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import requests

from braze_sim.server import Simulator
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
