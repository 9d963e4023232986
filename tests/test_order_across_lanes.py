"""One user's calls take effect in the order they were accepted, across lanes (docs/design.md, "Order
across calls"), with the Procfile's processes, Braze answering in 100 to 300 ms over HTTP, and a
backlog in every lane: one case per way the order used to break, each checked on what Braze ends
with. With RELAY_ORDER_ACROSS_LANES=0 (lanes drained independently) each case fails."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import requests

from braze_sim.server import Simulator
from tests.helpers import REDIS_URL, WRITE_KEY, lanes_busy
from tests.processes import Processes, wait_for

pytestmark = pytest.mark.e2e
HEADERS = {"Authorization": f"TD1 {WRITE_KEY}"}
USERS = 30  # per case
GROUP = "g-news"
BEFORE, AFTER = 1_764_000_000, 1_764_000_100  # record times: the older state, then the newer


class Caller:
    """Posts records as callers do, one request per call, in the order a test gives them."""

    def __init__(self, base: str) -> None:
        self.base, self.session = base, requests.Session()

    def post(self, table: str, *records: dict[str, Any]) -> None:
        """One TD ingestion request; the relay must answer 200 (stored)."""
        answer = self.session.post(
            f"{self.base}/db/{table}", json={"records": list(records)}, headers=HEADERS, timeout=30
        )
        assert answer.status_code == 200, answer.text


def backlog(caller: Caller) -> None:
    """Records of other users in every lane, so that each case's records meet a queue everywhere."""
    for start in range(0, 3000, 500):
        caller.post(
            "events", *({"external_id": f"bulk-{n}", "name": "bulk"} for n in range(start, start + 500))
        )
    for start in range(0, 1000, 500):
        caller.post(
            "aliases",
            *({"alias_name": f"bulk-{n}", "alias_label": "bulk"} for n in range(start, start + 500)),
        )
    caller.post(
        "identify",
        *(
            {"external_id": f"bulk-id-{n}", "alias_name": f"bulk-{n}", "alias_label": "bulk"}
            for n in range(200)
        ),
    )
    caller.post("deletes", *({"external_id": f"bulk-{n}"} for n in range(2000, 2200)))
    consent = {"subscription_group_id": GROUP, "subscription_state": "subscribed"}
    caller.post("consent", *({"external_id": f"bulk-{n}", **consent} for n in range(300)))


def calls(caller: Caller) -> None:
    """Each case's calls, user by user, interleaved across cases as a busy sender's would be."""
    for n in range(USERS):
        # A: tracked, deleted (GDPR), then signed up again.
        caller.post("profiles", {"external_id": f"a-{n}", "email": f"a{n}@example.com", "plan": "gold"})
        caller.post("events", {"external_id": f"a-{n}", "name": "before_delete"})
        caller.post("deletes", {"external_id": f"a-{n}"})
        caller.post("events", {"external_id": f"a-{n}", "name": "signup"})
        # B: an alias created, then events by it.
        caller.post("aliases", {"alias_name": f"b-{n}", "alias_label": "web"})
        for i in range(3):
            caller.post("events", {"alias_name": f"b-{n}", "alias_label": "web", "name": f"b{i}"})
        # C: an alias, events by it, identified as an external id, events by that id.
        caller.post("aliases", {"alias_name": f"c-{n}", "alias_label": "web"})
        caller.post("events", {"alias_name": f"c-{n}", "alias_label": "web", "name": "c0"})
        caller.post("identify", {"external_id": f"c-id-{n}", "alias_name": f"c-{n}", "alias_label": "web"})
        caller.post("events", {"external_id": f"c-id-{n}", "name": "c1"})
        # D: a new user tracked, then opted out of a group.
        caller.post("events", {"external_id": f"d-{n}", "name": "first_visit"})
        caller.post(
            "consent",
            {"external_id": f"d-{n}", "subscription_group_id": GROUP, "subscription_state": "unsubscribed"},
        )
        # E: consent given as a profile attribute on a track route, then revoked on the consent route.
        caller.post("profiles", {"external_id": f"e-{n}", "email_subscribe": "opted_in", "time": BEFORE})
        caller.post("consent", {"external_id": f"e-{n}", "email_subscribe": "unsubscribed", "time": AFTER})


def outcome(braze: Simulator) -> dict[str, list[str]]:
    """For each case, the users for whom Braze ended wrong (empty lists: every call took effect in order)."""
    wrong: dict[str, list[str]] = {case: [] for case in "ABCDE"}
    for n in range(USERS):
        a = braze.state.profile(f"a-{n}")
        if a is None or [e["name"] for e in a["events"]] != ["signup"] or "plan" in a["attributes"]:
            wrong["A"].append(f"a-{n}")
        b = braze.state.find(user_alias={"alias_name": f"b-{n}", "alias_label": "web"})
        if b is None or sorted(e["name"] for e in b["events"]) != ["b0", "b1", "b2"]:
            wrong["B"].append(f"b-{n}")
        c = braze.state.profile(f"c-id-{n}")
        if c is None or sorted(e["name"] for e in c["events"]) != ["c0", "c1"]:
            wrong["C"].append(f"c-{n}")
        d = braze.state.profile(f"d-{n}")
        if d is None or d["subscription_groups"].get(GROUP) != "unsubscribed":
            wrong["D"].append(f"d-{n}")
        e = braze.state.profile(f"e-{n}")
        if e is None or e["email_subscribe"] != "unsubscribed":
            wrong["E"].append(f"e-{n}")
    return wrong


@pytest.fixture
def relay(stack: tuple[Processes, str], braze: Simulator) -> tuple[Processes, str]:
    """The stack with Braze answering in 100 or 300 ms, and the Procfile's workers running."""
    procs, base = stack
    braze.faults.latency_ms = 100
    braze.faults.slow_rate, braze.faults.slow_ms = 0.5, 200
    return procs, base


def finished(braze: Simulator) -> Callable[[], bool]:
    """True once every case ended right, or every lane is empty and Braze has had no call for 2 s."""
    client = redis.Redis.from_url(REDIS_URL)

    def check() -> bool:
        if not any(outcome(braze).values()):
            return True
        quiet = bool(braze.requests) and time.time() - braze.requests[-1]["time"] > 2
        return quiet and not lanes_busy(client)

    return check


def test_every_case_ends_in_braze_as_the_calls_were_made(
    relay: tuple[Processes, str], braze: Simulator
) -> None:
    """Delete, alias then events, identify, track then opt-out, attribute then revoked consent: all
    end in Braze as if each call had been made after the previous one had taken effect."""
    procs, base = relay
    for role in ("worker", "worker", "consent"):
        procs.start(role)
    caller = Caller(base)
    backlog(caller)
    calls(caller)
    wait_for(finished(braze), 120, "every case to end, or every lane to drain")
    assert outcome(braze) == {case: [] for case in "ABCDE"}, "a later call undid an earlier one"
    # Nothing sent twice: each case's events landed once (asserted above), and no dead letter.
    assert "dead-lettered" not in procs.logs()


def test_the_order_holds_with_a_worker_killed_and_one_frozen_past_its_lease(
    relay: tuple[Processes, str], braze: Simulator
) -> None:
    """SIGKILL one worker and SIGSTOP another past its lease mid-run: the order still holds, nothing lost."""
    procs, base = relay
    killed, frozen, _, _ = (procs.start(role) for role in ("worker", "worker", "worker", "consent"))
    caller = Caller(base)
    backlog(caller)
    wait_for(lambda: len(braze.requests) >= 5, 30, "the workers to be sending")
    killed.send_signal(signal.SIGKILL)
    frozen.send_signal(signal.SIGSTOP)
    try:
        calls(caller)
        time.sleep(4)  # past the lease (RELAY_LEASE_S=3 in the tests): its lanes go to another owner
    finally:
        frozen.send_signal(signal.SIGCONT)
    wait_for(finished(braze), 120, "every case to end, or every lane to drain")
    assert outcome(braze) == {case: [] for case in "ABCDE"}, "a later call undid an earlier one"
