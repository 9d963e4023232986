"""The dead-letter store: every record that will not reach Braze, with its reason, kept to replay.

Entries live in one Redis hash (id -> JSON). Sorted sets by last failure time index them four
ways: all, by route, by reason, and by route and reason, so that a page of any filter, and its
count, is read from Redis without reading the other entries. A route keeps at most its limit of
dead letters: past it the oldest are dropped, and counted. Every write, drop and removal keeps the
indexes in step inside one Lua script.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis

from relay import metrics, store
from relay.envelope import Envelope
from relay.modes import BY_KIND, DeadReason, Kind
from relay.text import dumps as safe_dumps
from relay.text import loads as safe_loads

INDEX_VERSION = "2"  # all, route, reason and route+reason indexes (1: all and route only)
CHUNK = 500  # entries read per round trip when walking an index

# Prefixes of the per-route, per-reason and per-pair indexes, for the scripts (keys built in store.py).
_PREFIXES = [store.dead_route_index(""), store.dead_reason_index(""), store.dead_pair_index("", "")[:-1]]

# drop(id): remove one dead letter from the hash and every index; its route and reason are read
# from the entry itself. KEYS[1] the hash, KEYS[2] the all-index; ARGV[1..3] the prefixes.
DROP = """
local function drop(id)
  local raw = redis.call('HGET', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  if not raw then return 0 end
  redis.call('HDEL', KEYS[1], id)
  local ok, item = pcall(cjson.decode, raw)
  local route, reason
  if ok and type(item) == 'table' then
    route, reason = item.route, item.reason
  else  -- nested deeper than cjson reads: the entry's own fields come first in its JSON
    route, reason = string.match(raw, '"route":"([^"]*)"'), string.match(raw, '"reason":"([^"]*)"')
  end
  if route and reason then
    redis.call('ZREM', ARGV[1] .. route, id)
    redis.call('ZREM', ARGV[2] .. reason, id)
    redis.call('ZREM', ARGV[3] .. route .. '|' .. reason, id)
  end
  return 1
end
"""

# add: ARGV[4] id, [5] score, [6] entry JSON, [7] route, [8] reason, [9] the route's limit,
# [10] the metrics field of drops; KEYS[3] the routes set, KEYS[4] the metrics hash.
ADD = (
    DROP
    + """
local id, score, route, reason = ARGV[4], ARGV[5], ARGV[7], ARGV[8]
if redis.call('HEXISTS', KEYS[1], id) == 1 then drop(id) end
redis.call('HSET', KEYS[1], id, ARGV[6])
redis.call('ZADD', KEYS[2], score, id)
redis.call('ZADD', ARGV[1] .. route, score, id)
redis.call('ZADD', ARGV[2] .. reason, score, id)
redis.call('ZADD', ARGV[3] .. route .. '|' .. reason, score, id)
redis.call('SADD', KEYS[3], route)
local dropped = 0
local over = redis.call('ZCARD', ARGV[1] .. route) - tonumber(ARGV[9])
while over > 0 do
  local oldest = redis.call('ZRANGE', ARGV[1] .. route, 0, 0)[1]
  redis.call('ZREM', ARGV[1] .. route, oldest)
  dropped = dropped + drop(oldest)
  over = over - 1
end
if dropped > 0 then redis.call('HINCRBY', KEYS[4], ARGV[10], dropped) end
return dropped
"""
)

# remove: ARGV[4..] ids; returns how many were there.
REMOVE = (
    DROP
    + """
local removed = 0
for i = 4, #ARGV do removed = removed + drop(ARGV[i]) end
return removed
"""
)

# Move a dead letter back to its lane only if it is still there: two operators replaying the same
# dead letter at once must not send it twice. ARGV[4] id, [5] the record, [6] lane; KEYS[3] the
# lane's list, [4] the set of lanes, [5] the metrics hash, ARGV[7] the replayed counter.
REQUEUE = (
    DROP
    + """
if drop(ARGV[4]) == 0 then return 0 end
redis.call('RPUSH', KEYS[3], ARGV[5])
redis.call('SADD', KEYS[4], ARGV[6])
redis.call('HINCRBY', KEYS[5], ARGV[7], 1)
return 1
"""
)


def entry(envelope: Envelope, *, reason: str, status: int | None = None, message: str = "") -> dict[str, Any]:
    """A dead letter: the record, why it stopped, Braze's answer, attempts and first/last times."""
    now = time.time()
    return {
        "id": envelope["id"],
        "route": envelope["route"],
        "lane": f"{envelope['ws']}:{BY_KIND[Kind(envelope['kind'])].lane}",
        "reason": reason,
        "status": status,
        "message": message[:1000],
        "attempts": envelope.get("n", 0),
        "first_failed_at": envelope.get("first", now),
        "last_failed_at": now,
        "envelope": envelope,
    }


DEFAULT_LIMIT = 10_000  # per route, when the caller names none (RELAY_DEAD_LETTERS_MAX)


def add(pipe: redis.client.Pipeline, item: dict[str, Any], *, limit: int | None = None) -> None:
    """Queue the writes of one dead letter on a pipeline (the caller runs it in its transaction).

    A route keeps at most `limit` dead letters: a key holder sending invalid records to a lenient
    route cannot grow Redis without bound. Past the limit the route's oldest are dropped and
    counted in `relay_dead_letters_dropped{route}`, never silently.
    """
    try:
        text = safe_dumps(item)  # any string a record or Braze's answer held, as valid text
    except RecursionError:  # a refused record nested deeper than JSON encoding can follow
        kept = {**item, "envelope": {**item["envelope"], "rec": {"raw": "(not kept: nested too deeply)"}}}
        text = safe_dumps(kept)
    metrics.incr(pipe, "relay_records_dead_lettered", route=item["route"], reason=item["reason"])
    keys = [store.DEAD, store.DEAD_INDEX, store.DEAD_ROUTES, metrics.KEY]
    dropped = metrics.field("relay_dead_letters_dropped", route=item["route"])
    args = [
        item["id"],
        item["last_failed_at"],
        text,
        item["route"],
        str(item["reason"]),
        limit or DEFAULT_LIMIT,
    ]
    pipe.eval(ADD, len(keys), *keys, *_PREFIXES, *args, dropped)


def get(client: redis.Redis, dead_id: str) -> dict[str, Any] | None:
    """One dead letter by id."""
    raw = client.hget(store.DEAD, dead_id)
    return safe_loads(raw) if raw else None


def remove(client: redis.Redis, ids: Iterable[str]) -> int:
    """Delete these dead letters (and their index entries) for good; returns how many were there."""
    chosen = list(ids)
    if not chosen:
        return 0
    keys = [store.DEAD, store.DEAD_INDEX]
    return int(cast("int", client.eval(REMOVE, len(keys), *keys, *_PREFIXES, *chosen)))


def index_of(route: str | None, reason: str | None) -> str:
    """The index that holds exactly the dead letters of this filter."""
    if route and reason:
        return store.dead_pair_index(route, reason)
    if route:
        return store.dead_route_index(route)
    if reason:
        return store.dead_reason_index(reason)
    return store.DEAD_INDEX


@dataclass(frozen=True)
class Page:
    """One page of a filter, newest first, and how many the filter holds in all."""

    items: list[dict[str, Any]]
    total: int


def page(
    client: redis.Redis,
    *,
    route: str | None = None,
    reason: str | None = None,
    as_of: float | None = None,
    offset: int = 0,
    count: int = 50,
) -> Page:
    """Dead letters of a route and/or reason that failed by `as_of`, newest first: one page of them."""
    ensure_indexed(client)
    index, top = index_of(route, reason), "+inf" if as_of is None else repr(as_of)
    with client.pipeline(transaction=False) as pipe:
        pipe.zrevrangebyscore(index, top, "-inf", start=offset, num=count)
        pipe.zcount(index, "-inf", top)
        ids, total = pipe.execute()
    return Page(_entries(client, ids), int(total))


def iter_entries(
    client: redis.Redis, *, route: str | None = None, reason: str | None = None, as_of: float | None = None
) -> Iterator[dict[str, Any]]:
    """Every dead letter of a route and/or reason that failed by `as_of`, newest first, in chunks."""
    offset = 0
    while True:
        found = page(client, route=route, reason=reason, as_of=as_of, offset=offset, count=CHUNK)
        yield from found.items
        if offset + CHUNK >= found.total:
            return
        offset += CHUNK


def _entries(client: redis.Redis, ids: list[bytes]) -> list[dict[str, Any]]:
    if not ids:
        return []
    return [safe_loads(raw) for raw in client.hmget(store.DEAD, ids) if raw is not None]


@dataclass(frozen=True)
class Counts:
    """How many dead letters there are: in all, by route and by reason."""

    total: int
    by_route: dict[str, int]
    by_reason: dict[str, int]


def counts(client: redis.Redis, routes: Iterable[str] = ()) -> Counts:
    """The store's counts, from the indexes (one round trip; routes that hold none are left out)."""
    ensure_indexed(client)
    known = sorted(
        set(routes) | {name.decode() for name in cast("set[bytes]", client.smembers(store.DEAD_ROUTES))}
    )
    reasons = [reason.value for reason in DeadReason]
    with client.pipeline(transaction=False) as pipe:
        pipe.zcard(store.DEAD_INDEX)
        for route in known:
            pipe.zcard(store.dead_route_index(route))
        for reason in reasons:
            pipe.zcard(store.dead_reason_index(reason))
        found = pipe.execute()
    by_route = {route: n for route, n in zip(known, found[1 : 1 + len(known)], strict=True) if n}
    by_reason = {reason: n for reason, n in zip(reasons, found[1 + len(known) :], strict=True) if n}
    return Counts(int(found[0]), by_route, by_reason)


def ensure_indexed(client: redis.Redis) -> None:
    """Build the route, reason and pair indexes once for dead letters stored before they existed."""
    if client.get(store.DEAD_INDEXED) == INDEX_VERSION.encode():
        return
    cursor = 0  # a store that holds none (a new install) is indexed already: the scan ends at once
    while True:
        cursor, chunk = cast("tuple[int, dict[bytes, bytes]]", client.hscan(store.DEAD, cursor, count=CHUNK))
        with client.pipeline(transaction=False) as pipe:
            for key, raw in chunk.items():
                item, dead_id = safe_loads(raw), key.decode()
                score = float(item["last_failed_at"])
                pipe.zadd(store.DEAD_INDEX, {dead_id: score})
                pipe.zadd(store.dead_route_index(item["route"]), {dead_id: score})
                pipe.zadd(store.dead_reason_index(item["reason"]), {dead_id: score})
                pipe.zadd(store.dead_pair_index(item["route"], item["reason"]), {dead_id: score})
                pipe.sadd(store.DEAD_ROUTES, item["route"])
            pipe.execute()
        if cursor == 0:
            break
    client.set(store.DEAD_INDEXED, INDEX_VERSION)


def requeue(
    client: redis.Redis, item: dict[str, Any], delivery: Any, record: dict[str, Any] | None = None
) -> str | None:
    """Put a dead letter's record back on its lane (fresh attempts) and remove the dead letter.

    `record` replaces the stored record (a re-validated invalid one). Returns the lane, or None if
    the dead letter was no longer there (replayed or purged meanwhile). The lane's drain job then
    delivers it through the normal path, ordering check included.
    """
    from relay.lanes import Lane  # lanes imports rq; keep this module light for the edge

    envelope: Envelope = dict(item["envelope"])  # type: ignore[assignment]
    for key in ("first", "why"):
        envelope.pop(key, None)  # type: ignore[misc]
    envelope["n"] = 0
    if record is not None:
        envelope["rec"] = record
        envelope["t"] = record["time"]
    lane = Lane.of(envelope["ws"], Kind(envelope["kind"]), envelope["rec"].get("_id"), delivery.track_shards)
    payload = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
    counter = metrics.field("relay_records_replayed", route=envelope["route"])
    keys = [store.DEAD, store.DEAD_INDEX, lane.queue_key, store.LANES, metrics.KEY]
    if not client.eval(REQUEUE, len(keys), *keys, *_PREFIXES, item["id"], payload, lane.name, counter):
        return None
    lane.wake(client, delivery)
    return lane.name
