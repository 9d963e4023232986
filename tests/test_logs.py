"""Every line every relay process prints is one JSON object with ts, level, logger and msg."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from braze_sim.config import DEFAULT_API_KEY
from braze_sim.server import Simulator
from tests.helpers import BRAZE_KEY, REDIS_URL, WRITE_KEY, relay_environment
from tests.processes import ROOT, Processes, free_port, wait_for

TD = {"X-TD-Write-Key": WRITE_KEY}
# A path and a header whose values hold what once broke a format-string access log: quotes,
# backslashes, CR/LF (which could forge a second line), an escape and a NUL.
NASTY_PATH = '/x"y\\z\r\n{"level": "info", "msg": "forged"}\x1b[31m\x00'
NASTY_PATH_RAW = "/x%22y%5Cz%0D%0A%7B%22level%22:%20%22info%22,%20%22msg%22:%20%22forged%22%7D%1B%5B31m%00"
NASTY_AGENT = 'curl "quoted" \\ back\tslash'


def json_lines(text: str, where: str) -> list[dict[str, Any]]:
    """Each line of `text` as a JSON object with the common fields; fails naming the first that is not."""
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            parsed = json.loads(line)
        except ValueError:
            pytest.fail(f"{where} line {number} is not JSON: {line!r}")
        assert isinstance(parsed, dict), f"{where} line {number} is not an object: {line!r}"
        missing = {"ts", "level", "logger", "msg"} - set(parsed)
        assert not missing, f"{where} line {number} lacks {missing}: {line!r}"
        lines.append(parsed)
    return lines


def raw_get(base: str, target: str, headers: dict[str, str]) -> bytes:
    """A GET with a request target sent byte for byte (no client rewrites it); returns the answer's head."""
    host, port = base.removeprefix("http://").split(":")
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{head}\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def workload(base: str) -> None:
    """Accepted records and every kind of refusal, through gunicorn."""
    session = requests.Session()
    for seq in range(30):
        # The first with the key in the query string, as TD's postback may send it: never logged.
        answer = session.post(
            f"{base}/postback/v3/event/db/events",
            params={"td_write_key": WRITE_KEY} if seq == 0 else None,
            json={"external_id": "log-user", "name": "tap", "seq": str(seq)},
            headers=None if seq == 0 else TD,
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
    # Consent by email: Braze keeps its state even before the profile exists (its lane may overtake).
    consent = {
        "email": "log-user@example.com",
        "subscription_group_id": "g1",
        "subscription_state": "subscribed",
    }
    bearer = {"Authorization": f"Bearer {WRITE_KEY}"}
    assert (
        session.post(f"{base}/webhooks/consent", json=consent, headers=bearer, timeout=10).status_code == 202
    )
    refusals = [
        ("POST", "/db/events", {"X-TD-Write-Key": "wrong"}, b'{"records": []}', 401),
        ("POST", "/db/nowhere", TD, b'{"records": [{"external_id": "u"}]}', 404),
        ("POST", "/db/events", TD, b'{"records": [', 400),
        ("POST", "/db/events", TD, b'{"records": [{"name": "no identifier"}]}', 422),
        ("GET", "/db/events", TD, b"", 405),
    ]
    for method, path, headers, body, status in refusals:
        answer = session.request(
            method,
            base + path,
            data=body,
            headers={"Content-Type": "application/json", **headers},
            timeout=10,
        )
        assert answer.status_code == status, (path, answer.text)
    assert requests.get(f"{base}/metrics", timeout=10).status_code == 200
    assert b" 404 " in raw_get(base, NASTY_PATH_RAW, {"User-Agent": NASTY_AGENT})


def test_every_line_of_web_and_workers_is_json(stack: tuple[Processes, str], braze: Simulator) -> None:
    """gunicorn (its own lines and the access log), worker and consent worker: JSON lines only."""
    procs, base = stack
    braze.faults.fail_next = 1  # a 5xx and its retry
    braze.faults.rate_limit_next = 1  # a 429 pause
    braze.faults.rate_limit_reset_s = 0.3
    worker = procs.start("worker")
    procs.start("consent")
    workload(base)

    def delivered() -> bool:
        profile = braze.state.profile("log-user") or {}
        consent = [
            r for r in braze.requests if r["path"] == "/v2/subscription/status/set" and r["status"] == 201
        ]
        return len(profile.get("events", [])) == 30 and len(consent) == 2  # at once, then once more

    wait_for(delivered, 30, "the workload in Braze")
    worker.send_signal(signal.SIGTERM)  # a warm shutdown, while the consent worker stays
    assert worker.wait(timeout=20) == 0
    procs.stop_all()

    lines: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(procs.log_dir.glob("*.log")):
        lines[path.stem] = json_lines(path.read_text(errors="replace"), path.name)
    web = lines["web-0"]
    said = {(line["logger"], line["msg"]) for line in web}
    gunicorn = [msg for logger, msg in said if logger == "gunicorn.error"]
    for opening in ("Starting gunicorn", "Booting worker", "Worker exiting", "Shutting down"):
        assert any(msg.startswith(opening) for msg in gunicorn), (opening, gunicorn)
    access = [line for line in web if line["logger"] == "gunicorn.access"]
    assert {line["status"] for line in access} >= {200, 202, 400, 401, 404, 405, 422}
    nasty = [line for line in access if line["user_agent"] == NASTY_AGENT]
    assert len(nasty) == 1, "the request with a nasty path and header was not logged as one line"
    assert nasty[0]["path"] == NASTY_PATH
    assert nasty[0]["method"] == "GET" and nasty[0]["status"] == 404
    accepted = [line for line in access if line["status"] == 200 and line["path"].startswith("/postback/")]
    assert len(accepted) == 30 and all(line["request_id"] for line in accepted)
    assert all("td_write_key" not in json.dumps(line) for line in access)

    for name in ("worker-1", "consent-2"):  # the relay's own lines and RQ's
        said_by = {line["msg"]: line["logger"] for line in lines[name]}
        assert said_by.get("worker started") and "rq.worker" in said_by.values(), (name, said_by)
    worker_said = [line["msg"] for line in lines["worker-1"] if line["logger"] == "rq.worker"]
    assert any("started with PID" in msg for msg in worker_said), worker_said
    assert any("warm shut down requested" in msg for msg in worker_said), worker_said
    relay_said = {line["msg"] for name in ("worker-1", "consent-2") for line in lines[name]}
    assert "braze call" in relay_said
    assert WRITE_KEY not in "".join(path.read_text() for path in procs.log_dir.glob("*.log"))


def start_simulator(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    """The Procfile.sandbox's `braze` process, on a port of its own."""
    for line in (ROOT / "Procfile.sandbox").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == "braze":
            break
    else:
        pytest.fail("Procfile.sandbox has no braze process")
    assert "${SANDBOX_BRAZE_PORT:-9100}" in command, command  # the port the sandbox gives it
    log = open(tmp_path / "braze.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        ["bash", "-c", f"exec {command.strip()}"],
        cwd=ROOT,
        env={
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "SANDBOX_BRAZE_PORT": str(port),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def test_every_line_of_the_simulator_is_json(tmp_path: Path) -> None:
    """`python -m braze_sim` (the sandbox's Braze): its start, each request and its stop, as JSON lines."""
    port = free_port()
    process = start_simulator(tmp_path, port)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{url}/_sim/stats", timeout=1).status_code == 200
        except requests.RequestException:  # not listening yet, or too busy to answer in time
            return False

    try:
        wait_for(up, 20, "the simulator")
        good = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
        body = {"events": [{"external_id": "u1", "name": "e", "time": "2026-01-01T00:00:00Z"}]}
        assert requests.post(f"{url}/users/track", json=body, timeout=5).status_code == 401
        assert requests.post(f"{url}/users/track", json=body, headers=good, timeout=5).status_code == 201
        assert requests.post(f"{url}/users/nowhere", json={}, headers=good, timeout=5).status_code == 404
    finally:
        process.send_signal(signal.SIGINT)  # how the sandbox's Ctrl-C stops it
        assert process.wait(timeout=10) == 0
    lines = json_lines((tmp_path / "braze.log").read_text(errors="replace"), "braze.log")
    assert lines[0]["url"] == url
    requests_logged = [line for line in lines if "status" in line]
    assert [(line["path"], line["status"]) for line in requests_logged] == [
        ("/users/track", 401),
        ("/users/track", 201),
        ("/users/nowhere", 404),
    ]
    assert all(isinstance(line["counts"], dict) for line in requests_logged)


def test_warnings_and_uncaught_errors_are_json_lines(tmp_path: Path) -> None:
    """A Python warning and uncaught exceptions (main thread and another) each give one JSON line."""
    script = (
        "import threading, warnings\n"
        "from relay.logs import configure_process_logging\n"
        "configure_process_logging()\n"
        "warnings.warn('a deprecated thing', DeprecationWarning, stacklevel=1)\n"
        "def boom():\n"
        "    raise ValueError('in a thread')\n"
        "thread = threading.Thread(target=boom, name='helper')\n"
        "thread.start(); thread.join()\n"
        "raise RuntimeError('unexpected\\nover two lines')\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    lines = json_lines(done.stdout, "stdout") + json_lines(done.stderr, "stderr")
    assert done.stderr == ""
    by_logger = {line["logger"]: [] for line in lines}
    for line in lines:
        by_logger[line["logger"]].append(line)
    assert [line["level"] for line in by_logger["py.warnings"]] == ["warning"]
    assert "a deprecated thing" in by_logger["py.warnings"][0]["msg"]
    crashes = by_logger["relay.logs"]
    assert [(line["level"], line["in_thread"]) for line in crashes] == [
        ("critical", "helper"),
        ("critical", "MainThread"),
    ]
    assert "ValueError: in a thread" in crashes[0]["exc"]
    assert (
        crashes[1]["exc"].startswith("Traceback")
        and "RuntimeError: unexpected\nover two lines" in crashes[1]["exc"]
    )


def test_a_worker_that_cannot_reach_redis_prints_only_json(tmp_path: Path, routes_file: Path) -> None:
    """A worker started against a Redis that is not there: whatever it says, it says in JSON lines."""
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "RELAY_CONFIG": str(routes_file),
        "RELAY_WRITE_KEYS": WRITE_KEY,
        "BRAZE_REST_ENDPOINT": "http://127.0.0.1:9",
        "BRAZE_API_KEY": BRAZE_KEY,
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    procs = Processes(env, tmp_path)
    worker = procs.start("worker")
    wait_for(
        lambda: worker.poll() is not None or "redis unavailable" in procs.logs(),
        30,
        "the worker to say that Redis is not there, or to exit",
    )
    procs.stop_all()
    lines = json_lines(procs.logs(), "worker")
    assert lines, "the worker said nothing"
    if worker.returncode not in (0, -signal.SIGTERM):  # it gave up: the reason is one line, traceback inside
        assert any("ConnectionError" in line.get("exc", "") for line in lines), lines


def web_environment(routes_file: Path, braze_url: str, **extra: str) -> dict[str, str]:
    """The stack's environment for a gunicorn of this test's own."""
    env = {**os.environ, **relay_environment(REDIS_URL, braze_url, routes_file)}
    env.update(
        {"PORT": str(free_port()), "HOST": "127.0.0.1", "WEB_CONCURRENCY": "1", "PYTHONUNBUFFERED": "1"}
    )
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env.update(extra)
    return env


def test_web_with_a_bad_configuration_says_so_in_one_json_line(
    tmp_path: Path, routes_file: Path, braze: Simulator
) -> None:
    """gunicorn with a broken routes file exits 2, in JSON lines, one of them naming the route and key."""
    routes_file.write_text('[routes.app_events]\nmode = "user_tracking"\n')
    procs = Processes(web_environment(routes_file, braze.url), tmp_path)
    web = procs.start("web")
    try:
        assert web.wait(timeout=30) == 2
    finally:
        procs.stop_all()
    lines = json_lines(procs.logs(), "web")
    errors = [line for line in lines if line["level"] == "critical"]
    assert len(errors) == 1, lines
    assert "app_events" in errors[0]["msg"] and "mode" in errors[0]["msg"]
    assert "exc" not in errors[0]
