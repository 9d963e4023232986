"""The drain job (handlers/drain.py): several Braze requests in flight per worker, with the Procfile's
processes and the simulator over HTTP.

docs/delivery.md, rule "Several requests in flight": requests overlap;
no user is in two at once; the shared rate limit and 429 pauses hold for every sender; a worker
killed or frozen past its lease mid-flight loses nothing and sends nothing stale.
"""

from __future__ import annotations

import itertools
import math
import signal
import subprocess
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from braze_sim.server import Simulator
from tests.helpers import WRITE_KEY
from tests.processes import Processes, wait_for

pytestmark = pytest.mark.e2e
HEADERS = {"Authorization": f"TD1 {WRITE_KEY}"}


def ingest(base: str, table: str, records: list[dict[str, Any]]) -> None:
    """Records through TD's ingestion endpoint, 500 a request."""
    session = requests.Session()
    for start in range(0, len(records), 500):
        answer = session.post(
            f"{base}/db/{table}", json={"records": records[start : start + 500]}, headers=HEADERS, timeout=30
        )
        assert answer.status_code == 200, answer.text


def track(braze: Simulator, since: int = 0) -> list[dict[str, Any]]:
    """The /users/track requests the simulator logged."""
    return [entry for entry in braze.requests_since(since) if entry["path"] == "/users/track"]


def users_in(entry: dict[str, Any]) -> set[str]:
    body = entry["body"] or {}
    return {obj["external_id"] for array in ("events", "attributes") for obj in body.get(array, [])}


def sent_objects(braze: Simulator) -> int:
    """Objects in the /users/track requests Braze took (a cheap look: the log, not the profiles)."""
    return sum(
        len(entry["body"].get(array, []))
        for entry in track(braze)
        if entry["status"] == 201
        for array in ("events", "attributes")
    )


def events_for(users: Iterable[str], each: int) -> list[dict[str, Any]]:
    return [{"external_id": user, "name": "tap", "n": n} for n in range(each) for user in users]


def delivered_events(braze: Simulator, users: Iterable[str]) -> dict[str, list[int]]:
    out = {}
    for user in users:
        profile = braze.state.profile(user) or {}
        out[user] = sorted(event["properties"]["n"] for event in profile.get("events", []))
    return out


def test_requests_overlap_and_no_user_is_in_two_at_once(
    stack: tuple[Processes, str], braze: Simulator
) -> None:
    """Two workers, Braze at 200 ms: many requests in flight at once; a user's requests never overlap."""
    procs, base = stack
    latency = 0.2
    braze.faults.latency_ms = latency * 1000
    users = [f"fly-{n}" for n in range(400)]
    # Some users with many events (several requests each), most with a few.
    ingest(base, "events", events_for(users, 3) + events_for(users[:5], 150))
    procs.start("worker")
    procs.start("worker")
    wait_for(lambda: sent_objects(braze) >= 400 * 3 + 5 * 150, 60, "every event")
    calls = [entry for entry in track(braze) if 200 <= entry["status"] < 300]
    arrivals = sorted(entry["time"] for entry in calls)
    # In flight at the simulator: from arrival until the answer, `latency` later.
    most = max(sum(1 for other in arrivals if start <= other < start + latency) for start in arrivals)
    assert most >= 8, f"at most {most} requests in flight at once"
    for first, second in itertools.combinations(calls, 2):
        if users_in(first) & users_in(second):
            gap = abs(first["time"] - second["time"])
            assert gap >= latency * 0.98, "one user in two requests in flight at once"
    assert delivered_events(braze, users[:5]) == {
        user: sorted([*range(3), *range(150)]) for user in users[:5]
    }
    assert all(len(seqs) == 3 for seqs in delivered_events(braze, users[5:]).values())


def test_shared_rate_limit_holds_for_several_workers_with_requests_in_flight(
    stack: tuple[Processes, str], braze: Simulator
) -> None:
    """BRAZE_RATE_TRACK=8/second for the relay: the simulator counts no more in any window, none refused."""
    procs, base = stack
    braze.config.limits["track"] = (1000, 1.0)  # the simulator counts; the relay must keep to its own limit
    braze.faults.latency_ms = 100
    procs.env["BRAZE_RATE_TRACK"] = "8/second"
    users = [f"paced-{n}" for n in range(1800)]
    ingest(base, "events", events_for(users, 1))
    for _ in range(3):
        procs.start("worker")
    wait_for(lambda: sent_objects(braze) >= 1800, 60, "every event")
    assert len(track(braze)) >= 24
    # The relay paces by when it takes a place in the window; the simulator stamps arrivals a little
    # later, unevenly (a busy machine delays some more than others), so the 8 requests of one second
    # and the 8 of the next can fall in one 1 s window of arrivals. The checks leave that slack and
    # still tell a limiter that lets each of the three workers send 8 a second: the overall pace, and
    # at most 8 in any half second (a burst and the next are a second apart; 24 per worker limiter).
    calls = track(braze)
    span = max(entry["time"] for entry in calls) - min(entry["time"] for entry in calls)
    assert span >= (len(calls) - 8) / 8 - 0.25, f"{len(calls)} requests in {span:.2f} s"
    assert braze.max_accepted_in_window("track", 0.5) <= 8
    assert all(entry["status"] == 201 for entry in track(braze))


def test_429_stops_every_sender_until_the_reset(stack: tuple[Processes, str], braze: Simulator) -> None:
    """A 429 mid-flight: only requests already on their way arrive before the reset, from any worker."""
    procs, base = stack
    braze.faults.latency_ms = 100
    # Two workers with two requests in flight each: when the 429 comes back, at most three other
    # requests are on their way. (Arrival stamps alone cannot tell those from later sends: the
    # simulator shares this test's process and stamps late when the machine is busy.)
    procs.env["RELAY_INFLIGHT"] = "2"
    users = [f"limited-{n}" for n in range(6000)]
    ingest(base, "events", events_for(users, 1))
    procs.start("worker")
    procs.start("worker")
    wait_for(lambda: len(track(braze)) >= 5, 30, "the first requests")
    braze.faults.rate_limit_reset_s = 2.0
    braze.faults.rate_limit_next = 1
    wait_for(lambda: sent_objects(braze) >= 6000, 60, "every event")
    calls = track(braze)
    (limited,) = [entry for entry in calls if entry["status"] == 429]
    reset = math.ceil(limited["time"] + 2.0)  # the simulator's X-RateLimit-Reset for this fault
    early = [entry for entry in calls if limited["time"] < entry["time"] < reset]
    assert len(early) <= 3, f"{len(early)} requests arrived after the 429 and before its reset"
    assert any(entry["time"] >= reset for entry in calls), "nothing was left for after the reset"


LEASE_LOST = "lease lost; the next owner delivers the uncommitted records"  # a drain job's last word


def messages(procs: Processes, proc: subprocess.Popen[bytes]) -> list[str]:
    """What one process logged so far."""
    return [str(line.get("msg")) for line in procs.logged(proc)]


def attribute_versions(users: list[str], versions: range) -> list[dict[str, Any]]:
    """Each user's tier at several times, oldest first."""
    return [
        {"external_id": user, "tier": f"v{version}", "time": 1_700_000_000 + version}
        for version in versions
        for user in users
    ]


def tiers(braze: Simulator, users: list[str]) -> dict[str, Any]:
    return {user: (braze.state.profile(user) or {}).get("attributes", {}).get("tier") for user in users}


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_a_worker_killed_or_frozen_mid_flight_loses_nothing_and_sends_nothing_stale(
    stack: tuple[Processes, str], braze: Simulator, how: str
) -> None:
    """Killed, or frozen past its lease while a new owner delivers newer values, then thawed: every
    user ends at their newest value, and the thawed worker sends nothing more."""
    procs, base = stack
    braze.faults.latency_ms = 300
    users = [f"{how.lower()}-{n}" for n in range(500)]
    ingest(base, "profiles", attribute_versions(users, range(1, 4)))
    # The victim stops with a request in flight and another waiting for the rate limit, in a sender
    # thread that the lease check before each send must hold back once it is thawed. The simulator
    # logs a request as it arrives and answers 300 ms later; at one request a second, the second
    # arrives when the first's answer has long freed a sender for the next, which waits its turn.
    victim_env = {"RELAY_INFLIGHT": "2", "BRAZE_RATE_TRACK": "1/second"}
    procs.env.update(victim_env)
    victim = procs.start("worker")
    wait_for(lambda: len(track(braze)) >= 2, 20, "a second request in flight, a third held back")
    victim.send_signal(getattr(signal, how))
    for name in victim_env:
        del procs.env[name]
    try:
        procs.start("worker")  # takes the lanes once the victim's lease (3 s here) expires
        wait_for(lambda: set(tiers(braze, users).values()) == {"v3"}, 60, "every user at v3")
        ingest(base, "profiles", attribute_versions(users, range(4, 5)))
        wait_for(lambda: set(tiers(braze, users).values()) == {"v4"}, 30, "every user at v4")
        if how == "SIGSTOP":
            mark = len(braze.requests)
            victim.send_signal(signal.SIGCONT)
            # Its answers come in, its lease is gone: its drain job ends, saying so, once every
            # request it had in flight is back. Whatever it was to send, it would have sent by then.
            wait_for(lambda: LEASE_LOST in messages(procs, victim), 30, "the thawed job to end")
            assert track(braze, mark) == [], "the thawed worker sent again"
            assert victim.poll() is None
        assert set(tiers(braze, users).values()) == {"v4"}
    finally:
        if victim.poll() is None:
            victim.send_signal(signal.SIGCONT)


def in_flight_at_most(calls: list[dict[str, Any]], latency: float) -> int:
    """The most requests that reached the simulator within one answer time of each other."""
    arrivals = sorted(entry["time"] for entry in calls)
    return max(sum(1 for other in arrivals if start <= other < start + latency) for start in arrivals)


@pytest.mark.relay_env(RELAY_INFLIGHT="16")
def test_repeating_users_ride_together_and_fill_the_window(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """A lane of 200 users x 20 events, interleaved: each user's events of a stretch ride in one request,
    so the requests in flight reach RELAY_INFLIGHT (16), not the 4 a quarter window's chunk of distinct
    users allows; no user in two at once, each user's events in order, none twice."""
    latency = 0.2
    braze.faults.latency_ms = latency * 1000
    users = [f"rep-{n}" for n in range(200)]
    records = events_for(users, 20)
    for start in range(0, len(records), 500):
        answer = client.post("/db/events", json={"records": records[start : start + 500]}, headers=HEADERS)
        assert answer.status_code == 200
    drain(timeout=60)
    calls = track(braze)
    assert {entry["status"] for entry in calls} == {201}
    assert in_flight_at_most(calls, latency) >= 12
    for first, second in itertools.combinations(calls, 2):
        if users_in(first) & users_in(second):
            assert abs(first["time"] - second["time"]) >= latency * 0.98, "a user in two requests at once"
    for user in users[:5]:
        sent = [
            obj["properties"]["n"]
            for entry in calls
            for obj in entry["body"]["events"]
            if obj["external_id"] == user
        ]
        assert sent == list(range(20))
    assert sum(len(entry["body"]["events"]) for entry in calls) == 4000


@pytest.mark.relay_env(RELAY_INFLIGHT="16", RELAY_LINGER_MS="0")
def test_the_last_records_of_a_backlog_go_with_the_rest(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """A backlog of 40 users x 5 events (200 records, not a whole number of requests) is taken in one
    chunk: each user's events ride in one request, all in one answer time. Taking whole requests' worth
    only would leave the last 50 records, whose users are in the requests in flight, to wait for them."""
    latency = 0.3
    braze.faults.latency_ms = latency * 1000
    answer = client.post(
        "/db/events", json={"records": events_for([f"b-{n}" for n in range(40)], 5)}, headers=HEADERS
    )
    assert answer.status_code == 200
    drain(timeout=30)
    calls = track(braze)
    assert sorted(len(entry["body"]["events"]) for entry in calls) == [50, 75, 75]
    assert max(entry["time"] for entry in calls) - min(entry["time"] for entry in calls) < latency
    assert {len(users_in(entry)) for entry in calls} <= {10, 15}  # every user's 5 events in one request
