"""The lane protocol, owned by `Lane`: its keys, its one lease, its drain job and its depth.

A lane is the queue of one workspace's family of Braze calls ('default:track.0', 'default:consent').
Its records wait in a Redis list, oldest first, and its retries in a sorted set by due time.
Exactly one drain job owns a lane at a time: the owner holds the lease (a key whose value is the
owner's token, with an expiry the owner keeps renewing). Whoever takes a free lease (the edge after
storing records, a worker's ticker finding work with no owner, a replay) enqueues the drain job;
that is *waking* the lane. Every caller (edge, drain job, ticker, admin page, metrics) goes
through this class, so the protocol has one owner.
"""

from __future__ import annotations

import functools
import secrets
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from relay import store
from relay.config import Delivery
from relay.modes import BY_KIND, Kind, LaneFamily
from relay.routes import Route, user_key

DRAIN_JOB = "handlers.drain.drain_lane"

# The lease is extended, or given up, only by the token that holds it.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def new_token() -> str:
    """A fresh owner token for a lane's lease."""
    return secrets.token_hex(8)


def job_timeout(delivery: Delivery) -> int:
    """How long RQ lets one drain job run: its longest run plus a Braze call and the linger, doubled."""
    one_call = delivery.connect_timeout_s + delivery.read_timeout_s
    return int(2 * (delivery.longest_job_s + one_call + delivery.linger_s)) + 30


@functools.cache
def _script(client: redis.Redis, text: str) -> Any:
    """A Lua script registered once per client (then sent by its SHA)."""
    return client.register_script(text)


@dataclass(frozen=True, order=True)
class Lane:
    """One lane, by its name '<workspace>:<family>[.<shard>]'."""

    name: str

    @classmethod
    def of(cls, workspace: str, kind: Kind, ident: dict[str, Any] | None, shards: int) -> Lane:
        """The lane a record travels in; track lanes split by user into shards.

        A user's records always share a shard, so their order holds; shards are drained in parallel.
        """
        family = BY_KIND[kind].lane
        if family is not LaneFamily.TRACK or shards <= 1 or not ident:
            return cls(f"{workspace}:{family}")
        return cls(f"{workspace}:{family}.{zlib.crc32(user_key(ident).encode()) % shards}")

    @classmethod
    def of_route(cls, route: Route, shards: int) -> list[Lane]:
        """Every lane a route's records may travel in."""
        base = f"{route.workspace}:{route.spec.lane}"
        if route.spec.lane is not LaneFamily.TRACK or shards <= 1:
            return [cls(base)]
        return [cls(f"{base}.{shard}") for shard in range(shards)]

    @classmethod
    def configured(cls, routes: Iterable[Route], shards: int) -> list[Lane]:
        """Every lane the configured routes may use, each once, sorted."""
        return sorted({lane for route in routes for lane in cls.of_route(route, shards)})

    @classmethod
    def known(cls, client: redis.Redis, configured: Iterable[Lane] = ()) -> list[Lane]:
        """Every lane that ever held records (remembered in Redis), and the configured ones, sorted."""
        members = cast("set[bytes]", client.smembers(store.LANES))
        return sorted({cls(name.decode()) for name in members} | set(configured))

    def __str__(self) -> str:
        return self.name

    @property
    def workspace(self) -> str:
        """The Braze workspace the lane delivers to."""
        return self.name.split(":", 1)[0]

    @property
    def family(self) -> LaneFamily:
        """The lane's family ('default:track.1' -> track)."""
        return LaneFamily(self.name.split(":", 1)[1].split(".", 1)[0])

    @property
    def queue_key(self) -> str:
        """Records waiting, oldest first (a list)."""
        return store.lane_queue(self.name)

    @property
    def retry_key(self) -> str:
        """Records waiting for a retry, scored by when they are due (a sorted set)."""
        return store.lane_retry(self.name)

    @property
    def lease_key(self) -> str:
        """The lease of the lane's one owner; its value is the owner's token."""
        return store.lane_lease(self.name)

    @property
    def rq_queue(self) -> str:
        """The RQ queue its drain jobs go on: consent never waits behind bulk."""
        return store.QUEUE_CONSENT if self.family is LaneFamily.CONSENT else store.QUEUE_BULK

    # --- the lease ---------------------------------------------------------------------------

    def take_lease(self, redis_or_pipe: Any, token: str, delivery: Delivery) -> Any:
        """Take the lease if nobody holds it (SET NX PX); on a pipeline, queue the command."""
        return redis_or_pipe.set(self.lease_key, token, nx=True, px=delivery.lease_ms)

    def wake(self, client: redis.Redis, delivery: Delivery) -> bool:
        """Take the free lease and enqueue the drain job; True if this call did."""
        token = new_token()
        if not self.take_lease(client, token, delivery):
            return False
        self.enqueue_drain(client, token, delivery)
        return True

    def enqueue_drain(self, client: redis.Redis, token: str, delivery: Delivery) -> None:
        """Put the drain job of the lane, for the lease holder `token`, on its RQ queue."""
        queue = Queue(self.rq_queue, connection=client, serializer=JSONSerializer)
        queue.enqueue(
            DRAIN_JOB,
            self.name,
            token,
            job_timeout=job_timeout(delivery),
            result_ttl=0,  # a drain job's result is the records it delivered, which live elsewhere
            failure_ttl=7 * 86400,
            description=f"drain {self.name}",
        )

    def remember(self, redis_or_pipe: Any) -> Any:
        """Add the lane to the set of known lanes (the ticker, the admin page and metrics read it)."""
        return redis_or_pipe.sadd(store.LANES, self.name)

    def renew(self, client: redis.Redis, token: str, delivery: Delivery) -> bool:
        """Extend the lease held by `token`; False if another owner holds the lane now."""
        return bool(_script(client, RENEW)(keys=[self.lease_key], args=[token, delivery.lease_ms]))

    def confirm(self, client: redis.Redis, token: str, delivery: Delivery) -> bool:
        """Renew the lease and say whether `token` may act on the lane now (checked, not just renewed).

        False if another owner holds it, and also if Redis's answer came back so late that the lease
        may have run out meanwhile (the process was frozen, by SIGSTOP or a paused VM, mid-call): a
        renewal is only as good as the moment it was asked for.
        """
        asked = time.monotonic()
        renewed = self.renew(client, token, delivery)
        return renewed and time.monotonic() - asked < delivery.lease_s / 2

    def holds(self, client: redis.Redis, token: str) -> bool:
        """True while `token` holds the lease (checked, not extended)."""
        return client.get(self.lease_key) == token.encode()

    def release(self, client: redis.Redis, token: str, delivery: Delivery) -> bool:
        """Give the lease up when the lane is empty; False if records arrived meanwhile and we kept it."""
        _script(client, RELEASE)(keys=[self.lease_key], args=[token])
        if not self.pending(client):
            return True
        # Records came in between the owner's last look and the release: take the lane back if free.
        return not self.take_lease(client, token, delivery)

    def pending(self, client: redis.Redis) -> bool:
        """True while records wait in the list or retries are due."""
        return bool(client.llen(self.queue_key) or client.zcount(self.retry_key, "-inf", time.time()))


@dataclass(frozen=True)
class LaneState:
    """A lane's depth as one look at Redis saw it."""

    lane: Lane
    waiting: int  # records in the list
    retrying: int  # records in the retry set
    due: int  # of those, retries already due
    owned: bool  # a drain job holds the lease


def states(client: redis.Redis, lanes: list[Lane]) -> list[LaneState]:
    """The depth of each lane, in one round trip."""
    if not lanes:
        return []
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for lane in lanes:
        pipe.llen(lane.queue_key)
        pipe.zcard(lane.retry_key)
        pipe.zcount(lane.retry_key, "-inf", now)
        pipe.exists(lane.lease_key)
    found = pipe.execute()
    return [
        LaneState(lane, found[4 * i], found[4 * i + 1], found[4 * i + 2], bool(found[4 * i + 3]))
        for i, lane in enumerate(lanes)
    ]
