"""The lane protocol, owned by `Lane`: its keys, its one lease, its drain job, its records and its count.

A lane holds the records of one workspace's family of Braze calls ('default:track.0', 'default:consent').
Its records wait in a Redis list, oldest first, and its retries in a sorted set by due time.
Exactly one drain job owns a lane at a time: the owner holds the lease (a key whose value is the
owner's token, with an expiry the owner keeps renewing). Whoever takes a free lease (the edge after
storing records, a worker's ticker finding work with no owner, a replay) enqueues the drain job;
that is *waking* the lane. Every caller (edge, drain job and its commit, ticker, dead-letter
replay, admin page, metrics) goes through this class: no other module names a lane's keys.

Every key of a lane is a key of its workspace (relay/store.py `Keys`), so a script or transaction
on a lane touches keys of one hash tag only.
"""

from __future__ import annotations

import functools
import secrets
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from relay import dedup, store
from relay.budgets import MINUTE_KEPT_S, SCRIPT_REFUSALS, Hold
from relay.config import Delivery
from relay.modes import BY_KIND, Kind, LaneFamily
from relay.routes import Route, user_key

DRAIN_JOB = "handlers.drain.drain_lane"
PUSH_CHUNK = 1000  # records per RPUSH (keeps each command's size sane)

# The lease is extended, or given up, only by the token that holds it.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# The edge's common case in one round trip: the route's budgets checked, the records, their counters
# (metrics, the route's queued records and bytes, its minute), the lane's lease and, when this call
# took the lease, the lane in its workspace's set of lanes. KEYS: list, metrics hash, lease, lanes
# set, held hash, the route's minute; ARGV: counter field, count, token, lease ms, lane name, the
# route's records field and bytes field, its most records and bytes, records per minute (0: none),
# records... Answers 1 when it took the lease, 0 when not, and relay/budgets.py's SCRIPT_REFUSALS
# (nothing written) when a budget leaves no room. A script stops at its first error, so if Redis
# refuses the RPUSH (out of memory) nothing else is written.
PUSH = f"""
local n = tonumber(ARGV[2])
local size = 0
for i = 11, #ARGV do size = size + #ARGV[i] end
local held = redis.call('HMGET', KEYS[5], ARGV[6], ARGV[7])
if (tonumber(held[1]) or 0) + n > tonumber(ARGV[8]) then return -1 end
if (tonumber(held[2]) or 0) + size > tonumber(ARGV[9]) then return -2 end
local per_minute = tonumber(ARGV[10])
if per_minute > 0 and (tonumber(redis.call('GET', KEYS[6])) or 0) + n > per_minute then return -3 end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 11))
redis.call('HINCRBY', KEYS[2], ARGV[1], n)
redis.call('HINCRBY', KEYS[5], ARGV[6], n)
redis.call('HINCRBY', KEYS[5], ARGV[7], size)
if per_minute > 0 then
  redis.call('INCRBY', KEYS[6], n)
  redis.call('EXPIRE', KEYS[6], {MINUTE_KEPT_S})
end
if redis.call('SET', KEYS[3], ARGV[3], 'NX', 'PX', ARGV[4]) then
  redis.call('SADD', KEYS[4], ARGV[5])
  return 1
end
return 0
"""
# Appending one record inside another owner's script (relay/deadletters.py's replay): the lane's
# part. The including script names the list and the lanes set in KEYS and the lane in ARGV.
APPEND_LUA = """
local function append_to_lane(list_key, lanes_key, lane, record)
  redis.call('RPUSH', list_key, record)
  redis.call('SADD', lanes_key, lane)
end
"""

Runner = Callable[[Any, Sequence[Any], Sequence[Any]], Any]  # (script, keys, args) -> result


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
    def track_of(cls, workspace: str, ident: dict[str, Any] | None, shards: int) -> Lane:
        """The track lane that holds this identifier's track records."""
        return cls.of(workspace, Kind.EVENTS, ident, shards)

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
        configured = list(configured)
        names = store.workspaces(client, {lane.workspace for lane in configured})
        return sorted(set(cls.in_workspaces(client, names)) | set(configured))

    @classmethod
    def in_workspaces(cls, client: redis.Redis, workspaces: Iterable[str]) -> list[Lane]:
        """Every lane of these workspaces that ever held records, sorted (one round trip)."""
        with client.pipeline(transaction=False) as pipe:
            for workspace in workspaces:
                pipe.smembers(store.keys(workspace).lanes)
            found = cast("list[set[bytes]]", pipe.execute())
        return sorted({cls(name.decode()) for members in found for name in members})

    def __str__(self) -> str:
        return self.name

    @property
    def workspace(self) -> str:
        """The Braze workspace the lane delivers to."""
        return self.name.split(":", 1)[0]

    @property
    def part(self) -> str:
        """The lane's name within its workspace ('track.1')."""
        return self.name.split(":", 1)[1]

    @property
    def family(self) -> LaneFamily:
        """The lane's family ('default:track.1' -> track)."""
        return LaneFamily(self.part.split(".", 1)[0])

    @property
    def keys(self) -> store.Keys:
        """The keys of the lane's workspace."""
        return store.keys(self.workspace)

    @property
    def list_key(self) -> str:
        """Records waiting, oldest first (a list)."""
        return self.keys.lane_list(self.part)

    @property
    def retry_key(self) -> str:
        """Records waiting for a retry, scored by when they are due (a sorted set)."""
        return self.keys.lane_retry(self.part)

    @property
    def lease_key(self) -> str:
        """The lease of the lane's one owner; its value is the owner's token."""
        return self.keys.lane_lease(self.part)

    @property
    def rq_queue(self) -> str:
        """The RQ queue its drain jobs go on: consent never waits behind bulk."""
        return store.QUEUE_CONSENT if self.family is LaneFamily.CONSENT else store.QUEUE_BULK

    # --- storing records -----------------------------------------------------------------------

    def push(
        self,
        client: redis.Redis,
        records: Sequence[str],
        *,
        counter: str,
        hold: Hold,
        token: str,
        delivery: Delivery,
        runner: Runner | None = None,
    ) -> bool:
        """Store records (at most PUSH_CHUNK) and count them in one script; True if it took the lease.

        `counter` is the metrics field the records add to; `hold` their route's budgets and counts
        (OverBudget, with nothing stored, when they leave no room); `runner` runs the script call (the
        edge's group commit shares a round trip between threads), else it runs at once.
        """
        keys = [
            self.list_key,
            self.keys.metrics,
            self.lease_key,
            self.keys.lanes,
            self.keys.held,
            hold.minute_key,
        ]
        budgets = hold.budgets
        args: list[Any] = [
            counter,
            len(records),
            token,
            delivery.lease_ms,
            self.name,
            *hold.fields,
            budgets.queued_records,
            budgets.queued_bytes,
            budgets.records_per_minute,
            *records,
        ]
        script = _script(client, PUSH)
        answer = int(runner(script, keys, args) if runner is not None else script(keys=keys, args=args))
        if answer < 0:
            raise hold.refused(SCRIPT_REFUSALS[answer])
        return answer == 1

    def push_new(
        self,
        client: redis.Redis,
        records: Sequence[str],
        digests: Sequence[str | None],
        *,
        counter: str,
        duplicates: str,
        window_s: int,
        hold: Hold,
        token: str,
        delivery: Delivery,
        runner: Runner | None = None,
    ) -> bool:
        """As `push`, leaving out each record whose dedup digest an earlier record set within `window_s`
        (relay/dedup.py), counted in the `duplicates` field; the route holds only the records kept.
        True if it took the lease; OverBudget, with nothing stored, when the records leave no room."""
        names, extra = dedup.push_args(digests, records, window_s)
        dedup_keys = [self.keys.dedup(name) for name in names]
        keys = [
            self.list_key,
            self.keys.metrics,
            self.lease_key,
            self.keys.lanes,
            self.keys.held,
            hold.minute_key,
            *dedup_keys,
        ]
        budgets = hold.budgets
        args: list[Any] = [
            counter,
            len(records),
            token,
            delivery.lease_ms,
            self.name,
            duplicates,
            *hold.fields,
            budgets.queued_records,
            budgets.queued_bytes,
            budgets.records_per_minute,
            *extra,
        ]
        script = _script(client, dedup.PUSH_NEW)
        answer = int(runner(script, keys, args) if runner is not None else script(keys=keys, args=args))
        if answer < 0:
            raise hold.refused(SCRIPT_REFUSALS[answer])
        return answer == 1

    def append_new(
        self,
        pipe: Any,
        records: Sequence[str],
        digests: Sequence[str | None],
        *,
        duplicates: str,
        window_s: int,
        hold: Hold,
    ) -> None:
        """As `append`, leaving out the repeats (as `push_new`), on a transaction; the route holds the
        records kept (its budgets were checked before the transaction)."""
        script = pipe.register_script(dedup.APPEND_NEW)
        per_minute = hold.budgets.records_per_minute
        for start in range(0, len(records), PUSH_CHUNK):
            chunk = slice(start, start + PUSH_CHUNK)
            names, extra = dedup.push_args(digests[chunk], records[chunk], window_s)
            keys = [
                self.list_key,
                self.keys.metrics,
                self.keys.lanes,
                self.keys.held,
                hold.minute_key,
                *(self.keys.dedup(n) for n in names),
            ]
            args = [self.name, duplicates, *hold.fields, per_minute, *extra]
            script(keys=keys, args=args, client=pipe)

    def append(self, pipe: Any, records: Sequence[str]) -> None:
        """Queue storing these records on a transaction (and the lane in its workspace's set)."""
        for start in range(0, len(records), PUSH_CHUNK):
            pipe.rpush(self.list_key, *records[start : start + PUSH_CHUNK])
        pipe.sadd(self.keys.lanes, self.name)

    # --- reading and settling records (the drain job and its commit) -------------------------------

    def look(
        self, client: redis.Redis, offset: int, due: int, now: float
    ) -> tuple[list[bytes], int, bytes | None]:
        """In one round trip: up to `due` retries due by `now`, the list's length, its record at `offset`."""
        with client.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(self.retry_key, "-inf", now, start=0, num=due)
            pipe.llen(self.list_key)
            pipe.lindex(self.list_key, offset)
            return cast("tuple[list[bytes], int, bytes | None]", tuple(pipe.execute()))

    def read(self, client: redis.Redis, offset: int, count: int) -> list[bytes]:
        """`count` records of the list from `offset` on (they stay in the list until committed)."""
        return cast("list[bytes]", client.lrange(self.list_key, offset, offset + count - 1))

    def watch(self, pipe: Any, token: str) -> bool:
        """Watch the lease on a transaction and say whether `token` holds it (then MULTI may follow)."""
        pipe.watch(self.lease_key)
        return bool(pipe.get(self.lease_key) == token.encode())

    def settle(self, pipe: Any, from_list: int, retried: Sequence[bytes]) -> None:
        """Queue removing committed records: `from_list` from the list's head, and these retries."""
        if from_list:
            pipe.ltrim(self.list_key, from_list, -1)
        if retried:
            pipe.zrem(self.retry_key, *retried)

    def schedule(self, pipe: Any, record: str, due: float) -> None:
        """Queue a record for another attempt at `due` (UNIX seconds)."""
        pipe.zadd(self.retry_key, {record: due})

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
        if not self.has_work(client):
            return True
        # Records came in between the owner's last look and the release: take the lane back if free.
        return not self.take_lease(client, token, delivery)

    def has_work(self, client: redis.Redis) -> bool:
        """True while records wait in the list or retries are due."""
        return bool(client.llen(self.list_key) or client.zcount(self.retry_key, "-inf", time.time()))


@dataclass(frozen=True)
class LaneState:
    """A lane's count of records as one look at Redis saw it."""

    lane: Lane
    waiting: int  # records in the list
    retrying: int  # records in the retry set
    due: int  # of those, retries already due
    owned: bool  # a drain job holds the lease


def states(client: redis.Redis, lanes: list[Lane]) -> list[LaneState]:
    """The count of records of each lane, in one round trip."""
    if not lanes:
        return []
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for lane in lanes:
        pipe.llen(lane.list_key)
        pipe.zcard(lane.retry_key)
        pipe.zcount(lane.retry_key, "-inf", now)
        pipe.exists(lane.lease_key)
    found = pipe.execute()
    return [
        LaneState(lane, found[4 * i], found[4 * i + 1], found[4 * i + 2], bool(found[4 * i + 3]))
        for i, lane in enumerate(lanes)
    ]
