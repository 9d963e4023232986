"""Waking a lane: the one lease per lane and the RQ drain job that holds it.

A lane is the queue of one workspace's family of Braze calls ('default:track', 'default:consent').
Its records wait in a Redis list. Exactly one drain job owns a lane at a time: the owner holds the
lease key (value = its token, with an expiry it keeps renewing). Whoever sets the lease (the edge
after storing records, or a worker's ticker finding work with no owner) enqueues the drain job.
"""

from __future__ import annotations

import secrets

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from relay import store
from relay.config import Delivery

DRAIN_JOB = "handlers.drain.drain_lane"


def new_token() -> str:
    """A fresh owner token for a lane's lease."""
    return secrets.token_hex(8)


def job_timeout(delivery: Delivery) -> int:
    """How long RQ lets one drain job run: its time slice plus a Braze call and the linger, doubled."""
    one_call = delivery.connect_timeout_s + delivery.read_timeout_s
    return int(2 * (delivery.slice_s + one_call + delivery.linger_s)) + 30


def enqueue_drain(client: redis.Redis, lane: str, token: str, delivery: Delivery) -> None:
    """Put the drain job of a lane on its RQ queue (consent lanes on their own queue)."""
    queue = Queue(store.rq_queue_for(lane), connection=client, serializer=JSONSerializer)
    queue.enqueue(
        DRAIN_JOB,
        lane,
        token,
        job_timeout=job_timeout(delivery),
        result_ttl=0,  # a drain job's result is the records it delivered, which live elsewhere
        failure_ttl=7 * 86400,
        description=f"drain {lane}",
    )


def try_arm(client: redis.Redis, lane: str, delivery: Delivery) -> bool:
    """Take the lane's lease if nobody holds it and enqueue its drain job; True if this call did."""
    token = new_token()
    if not client.set(store.lane_armed(lane), token, nx=True, px=int(delivery.lease_s * 1000)):
        return False
    enqueue_drain(client, lane, token, delivery)
    return True
