"""The worker process (handlers/worker.py) as the Procfile starts it, beside gunicorn, real HTTP all the
way: it delivers, a SIGKILL loses nothing, a SIGTERM lets it finish its batch, two keep the newest value."""

from __future__ import annotations

import json
import signal

import pytest
import redis
import requests
from rq import Queue
from rq.serializers import JSONSerializer

from braze_sim.server import Simulator
from handlers.worker import tick
from relay import budgets, store
from relay.config import Delivery
from relay.lanes import Lane
from tests.helpers import WRITE_KEY, lanes_idle
from tests.processes import Processes, wait_for

pytestmark = pytest.mark.e2e


def post_events(base: str, user: str, count: int) -> None:
    """`count` one-record TD postbacks of custom events for one user, numbered in `seq`."""
    session = requests.Session()
    for seq in range(count):
        response = session.post(
            f"{base}/postback/v3/event/db/events",
            data=json.dumps({"external_id": user, "name": "tap", "seq": str(seq)}),
            headers={"Content-Type": "application/json", "X-TD-Write-Key": WRITE_KEY},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert response.json() == {}


def delivered_seqs(braze: Simulator, user: str) -> list[int]:
    """The `seq` property of every event Braze holds for the user."""
    profile = braze.state.profile(user)
    return [int(event["properties"]["seq"]) for event in (profile or {}).get("events", [])]


def test_procfile_processes_deliver_postbacks(stack: tuple[Processes, str], braze: Simulator) -> None:
    """Postbacks to gunicorn reach Braze through a separately running RQ worker, batched."""
    procs, base = stack
    procs.start("worker")
    post_events(base, "e2e-user", 120)
    wait_for(lambda: len(delivered_seqs(braze, "e2e-user")) >= 120, 30, "120 events in Braze")
    # Consent has its own lane and may overtake track records: post it once the profile exists.
    response = requests.post(
        f"{base}/webhooks/consent",
        json={"external_id": "e2e-user", "subscription_group_id": "g1", "subscription_state": "unsubscribed"},
        headers={"Authorization": f"Bearer {WRITE_KEY}"},
        timeout=10,
    )
    assert response.status_code == 202
    wait_for(
        lambda: (braze.state.profile("e2e-user") or {}).get("subscription_groups") == {"g1": "unsubscribed"},
        10,
        "the consent change in Braze",
    )
    assert sorted(delivered_seqs(braze, "e2e-user")) == list(range(120))
    track_calls = [r for r in braze.requests if r["path"] == "/users/track"]
    assert len(track_calls) < 120 / 5, "records were not batched"
    assert WRITE_KEY not in procs.logs()


def test_worker_killed_mid_delivery_loses_nothing(
    stack: tuple[Processes, str], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """A worker SIGKILLed while Braze is answering, before it committed anything: another worker
    delivers every record within seconds."""
    procs, base = stack
    # Slow answers: the simulator logs a request when it arrives and answers 300 ms later, and the
    # user's four requests go one after another, so the chunk commits a second after that first log.
    braze.faults.latency_ms = 300
    post_events(base, "crash-user", 300)
    victim = procs.start("worker")
    wait_for(lambda: any(r["path"] == "/users/track" for r in braze.requests), 20, "the first Braze call")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=5)
    lane = Lane.track_of("default", {"external_id": "crash-user"}, Delivery().track_shards)
    assert clean_redis.llen(lane.list_key) == 300, "the kill came after a commit: nothing left to lose"
    procs.start("worker")
    # The test environment's lease is 3 s, so recovery takes seconds, not RQ's ten-minute cleanup;
    # the wait's own bound is the test's limit (speed itself is measured in bench/).
    wait_for(
        lambda: set(delivered_seqs(braze, "crash-user")) == set(range(300)),
        30,
        "all 300 events after the kill",
    )


def test_sigterm_lets_a_worker_finish_its_batch(
    stack: tuple[Processes, str], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """SIGTERM mid-delivery: the worker commits what it sent and exits; the next goes on, no duplicates."""
    procs, base = stack
    braze.faults.latency_ms = 300
    post_events(base, "term-user", 300)
    first = procs.start("worker")
    wait_for(lambda: any(r["path"] == "/users/track" for r in braze.requests), 20, "the first Braze call")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=15) == 0
    procs.start("worker")
    wait_for(lambda: len(delivered_seqs(braze, "term-user")) >= 300, 30, "all 300 events")
    # Nothing is left to send and no job holds the lane: a duplicate would have come before this.
    wait_for(lambda: lanes_idle(clean_redis), 30, "every lane empty and unowned")
    assert sorted(delivered_seqs(braze, "term-user")) == list(range(300))


def test_parallel_workers_and_retries_keep_the_newest_value(
    stack: tuple[Processes, str], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """Two workers, 30% 5xx answers, shuffled times: each user's attribute ends as its newest record's."""
    import random

    procs, base = stack
    braze.faults.error_rate = 0.3
    rng = random.Random(7)
    records = [
        {"external_id": f"ord-{user}", "tier": f"v{stamp}", "time": 1_700_000_000 + stamp}
        for user in range(15)
        for stamp in rng.sample(range(1000), 8)
    ]
    rng.shuffle(records)
    procs.start("worker")
    procs.start("worker")
    session = requests.Session()
    for record in records:
        response = session.post(
            f"{base}/postback/v3/event/db/profiles",
            json=record,
            headers={"X-TD-Write-Key": WRITE_KEY},
            timeout=10,
        )
        assert response.status_code == 200
    newest = {}
    for record in records:
        user = record["external_id"]
        if user not in newest or record["time"] > newest[user]["time"]:
            newest[user] = record

    def settled() -> bool:
        return all(
            (braze.state.profile(user) or {}).get("attributes", {}).get("tier") == record["tier"]
            for user, record in newest.items()
        )

    wait_for(settled, 40, "every user's newest tier in Braze")
    # Late retries must not overwrite it either: once no record waits or retries and no job holds a
    # lane, every send has happened.
    wait_for(lambda: lanes_idle(clean_redis), 60, "every lane empty and unowned")
    assert settled()


def test_the_ticker_wakes_only_lanes_with_work_and_no_owner(clean_redis: redis.Redis) -> None:
    """A lane (known from Redis or configured) holding records or a due retry, with no owner, gets one
    drain job; an owned lane, an empty one and one whose retries are not due yet get none, however often
    the ticker looks."""
    delivery = Delivery(lease_s=3.0)
    waiting, retrying, owned, later, empty = (
        Lane(f"default:{name}") for name in ("track.0", "track.1", "alias", "identify", "delete")
    )
    for lane in (waiting, owned):
        hold = budgets.Hold("default", "r", budgets.DEFAULTS, 1, 7, 0.0)
        lane.push(clean_redis, ['{"n":1}'], counter="c", hold=hold, token="edge", delivery=delivery)
    clean_redis.delete(waiting.lease_key)  # the edge that took it died before enqueuing its job
    clean_redis.zadd(retrying.retry_key, {'{"n":2}': 1.0})
    clean_redis.zadd(later.retry_key, {'{"n":3}': 4_000_000_000.0})
    store.register_workspaces(clean_redis, ["default"])
    configured = [empty, later, retrying]  # the routes' lanes; the others are known from Redis
    assert tick(clean_redis, delivery, configured) == 2
    assert tick(clean_redis, delivery, configured) == 0
    jobs = Queue(store.QUEUE_BULK, connection=clean_redis, serializer=JSONSerializer).jobs
    assert sorted(job.args[0] for job in jobs) == [waiting.name, retrying.name]
    assert clean_redis.get(owned.lease_key) == b"edge"
