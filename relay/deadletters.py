"""The dead-letter store: every record that will not reach Braze, with its reason, kept to replay.

Entries live in one Redis hash (id -> JSON) with a sorted-set index by last failure time, so they
can be listed by route and reason, shown, replayed through the normal delivery path, and purged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, cast

import redis

from relay import metrics, store
from relay.envelope import Envelope
from relay.modes import BY_KIND, Kind
from relay.text import dumps as safe_dumps
from relay.text import loads as safe_loads


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


# At most `limit` dead letters per route: past it the oldest are dropped, and counted. An id in the
# route's index that is no longer in the store (replayed or purged since) is only tidied away.
CAP = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
local dropped = 0
while over > 0 do
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  redis.call('ZREM', KEYS[1], oldest)
  if redis.call('HDEL', KEYS[2], oldest) == 1 then
    redis.call('ZREM', KEYS[3], oldest)
    dropped = dropped + 1
  end
  over = over - 1
end
if dropped > 0 then redis.call('HINCRBY', KEYS[4], ARGV[4], dropped) end
return dropped
"""
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
    pipe.hset(store.DEAD, item["id"], text)
    pipe.zadd(store.DEAD_INDEX, {item["id"]: item["last_failed_at"]})
    metrics.incr(pipe, "relay_records_dead_lettered", route=item["route"], reason=item["reason"])
    keys = [store.dead_route_index(item["route"]), store.DEAD, store.DEAD_INDEX, metrics.KEY]
    dropped = metrics.field("relay_dead_letters_dropped", route=item["route"])
    pipe.eval(CAP, len(keys), *keys, item["id"], item["last_failed_at"], limit or DEFAULT_LIMIT, dropped)


def iter_entries(
    client: redis.Redis, *, route: str | None = None, reason: str | None = None, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """Dead letters, newest first, optionally only one route's or those whose reason starts so."""
    ids = cast("list[bytes]", client.zrevrange(store.DEAD_INDEX, 0, -1))
    count = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for raw in client.hmget(store.DEAD, chunk):
            if raw is None:
                continue
            item = safe_loads(raw)
            if route and item["route"] != route:
                continue
            if reason and not item["reason"].startswith(reason):
                continue
            yield item
            count += 1
            if limit is not None and count >= limit:
                return


def get(client: redis.Redis, dead_id: str) -> dict[str, Any] | None:
    """One dead letter by id."""
    raw = client.hget(store.DEAD, dead_id)
    return safe_loads(raw) if raw else None


def remove(pipe: redis.client.Pipeline, dead_id: str) -> None:
    """Queue the removal of one dead letter on a pipeline."""
    pipe.hdel(store.DEAD, dead_id)
    pipe.zrem(store.DEAD_INDEX, dead_id)


# Move a dead letter back to its lane only if it is still there: two operators replaying the same
# dead letter at once must not send it twice.
REQUEUE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
return 1
"""


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
    if not client.eval(REQUEUE, len(keys), *keys, item["id"], payload, lane.name, counter):
        return None
    lane.wake(client, delivery)
    return lane.name
