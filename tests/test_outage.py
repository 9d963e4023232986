"""A Redis outage is ridden out (docs/operations.md, "Redis"): the real Redis SIGKILLed under load, restarted
from its AOF, with web and workers left alone.

While Redis is away the web answers 503 (nothing stored), the workers wait and reconnect; when it is
back every record acknowledged with a 2xx reaches Braze, every relay process is still running, and
each worker said once that Redis went away and once that it came back, without a traceback.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from braze_sim.server import Simulator
from tests.helpers import WRITE_KEY
from tests.processes import RedisServer, running_stack, wait_for

AOF = ("--appendonly", "yes", "--appendfsync", "always")
USERS = 20


class Load(threading.Thread):
    """One-record postbacks as fast as one client sends them; remembers which got a 2xx."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.acknowledged: set[int] = set()
        self.refused = 0  # 503s while Redis was away
        self.stopping = threading.Event()

    def run(self) -> None:
        """Post until stopped."""
        session = requests.Session()
        seq = 0
        while not self.stopping.is_set():
            body = {"external_id": f"outage-{seq % USERS}", "name": "tick", "seq": seq}
            try:
                answer = session.post(
                    f"{self.base}/postback/v3/event/db/events",
                    json=body,
                    headers={"X-TD-Write-Key": WRITE_KEY},
                    timeout=10,
                )
            except requests.RequestException:
                answer = None
            if answer is not None and answer.status_code == 200:
                self.acknowledged.add(seq)
            elif answer is not None and answer.status_code == 503:
                self.refused += 1
            else:
                raise AssertionError(f"unexpected answer {answer and answer.status_code}")
            seq += 1


def delivered(braze: Simulator) -> set[int]:
    """The `seq` of every event the simulator holds."""
    found = set()
    for user in range(USERS):
        profile = braze.state.profile(f"outage-{user}") or {}
        found.update(event["properties"]["seq"] for event in profile.get("events", []))
    return found


def lines_of(log_dir: Path, role: str) -> list[dict[str, object]]:
    """Every JSON line the processes of a role printed."""
    lines = []
    for path in sorted(log_dir.glob(f"{role}-*.log")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def ride_out(
    own_redis: Callable[..., RedisServer], braze: Simulator, routes_file: Path, log_dir: Path, outage_s: float
) -> None:
    """Kill Redis under load for `outage_s` seconds, restart it from its AOF, and check the promises."""
    server = own_redis(*AOF)
    with running_stack(log_dir, routes_file, braze, server.url) as (procs, base):
        workers = [procs.start("worker"), procs.start("worker"), procs.start("consent")]
        load = Load(base)
        load.start()
        wait_for(lambda: len(load.acknowledged) >= 300, 30, "postbacks before the outage")
        server.kill()
        time.sleep(outage_s)
        server.start()
        wait_for(lambda: load.refused > 0 and len(load.acknowledged) >= 600, 60, "postbacks after the outage")
        load.stopping.set()
        load.join(timeout=20)
        try:
            wait_for(lambda: load.acknowledged <= delivered(braze), 90, "every acknowledged record in Braze")
        except AssertionError:
            missing = sorted(load.acknowledged - delivered(braze))
            raise AssertionError(
                f"{len(missing)} acknowledged records not in Braze, e.g. {missing[:10]}"
            ) from None
        assert all(proc.poll() is None for proc in procs.running), "a relay process exited"
        assert load.refused > 0, "the web answered 503 while Redis was away"
        for index, proc in enumerate(workers):
            assert proc.poll() is None
            role = ("worker", "worker", "consent")[index]
            said = [line for line in lines_of(log_dir, role) if line.get("pid") == proc.pid]
            messages = [str(line["msg"]) for line in said]
            assert sum(msg.startswith("redis unavailable") for msg in messages) == 1, messages
            assert messages.count("redis available again") == 1, messages
            assert not [line for line in said if "exc" in line], "a traceback in the worker's log"


@pytest.mark.e2e
def test_workers_ride_out_a_redis_restart(
    own_redis: Callable[..., RedisServer], braze: Simulator, routes_file: Path, tmp_path: Path
) -> None:
    """Redis SIGKILLed and restarted 3 s later: nothing acknowledged is lost, no process exits."""
    ride_out(own_redis, braze, routes_file, tmp_path, outage_s=3)


@pytest.mark.e2e
def test_workers_ride_out_a_30_second_outage(
    own_redis: Callable[..., RedisServer], braze: Simulator, routes_file: Path, tmp_path: Path
) -> None:
    """The same with Redis away for 30 s (longer than a lease and RQ's reconnection backoff)."""
    ride_out(own_redis, braze, routes_file, tmp_path, outage_s=30)
