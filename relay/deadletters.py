"""The dead-letter store: every record that will not reach Braze, with its reason, kept to replay.

Each workspace keeps its own: entries in one Redis hash (id -> JSON), and sorted sets by last
failure time indexing them four ways: all, by route, by reason, and by route and reason, so that a
page of any filter, and its count, is read from Redis without reading the other entries. A route
keeps at most its limit of dead letters: past it the oldest are dropped, and counted. Every write,
drop and removal keeps the indexes in step inside one Lua script, which is given every key it
touches (the reasons are a closed set, so a route's keys are known before its entries are read).
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis

from relay import metrics, store
from relay.budgets import dead_field, queued_fields, size_of
from relay.envelope import Envelope
from relay.lanes import APPEND_LUA, Lane
from relay.modes import BY_KIND, DeadReason, Kind
from relay.text import dumps as safe_dumps
from relay.text import loads as safe_loads

CHUNK = 500  # entries read per round trip when walking an index
REASONS = tuple(reason.value for reason in DeadReason)

# Every script below works on the dead letters of one route of one workspace, whose keys it is
# given, all of them: KEYS[1] the hash, [2] the all-index, [3] the set of routes, [4] the metrics
# hash, [5] the route's index, then one index per reason and one per (route, reason), in REASONS'
# order, then the held hash (relay/budgets.py: the route's dead-letter bytes); ARGV[1] how many
# reasons, [2] the route, [3] its field of dead-letter bytes, then the reasons' names; the script's
# own arguments follow. drop(id) removes one dead letter of that route from the hash, every index
# and the route's bytes.
DROP = """
local n = tonumber(ARGV[1])
local route, bytes_field = ARGV[2], ARGV[3]
local held = KEYS[6 + 2 * n]
local slot = {}
for i = 1, n do slot[ARGV[3 + i]] = i end
local first = 4 + n  -- the script's own arguments start here
local function drop(id)
  local raw = redis.call('HGET', KEYS[1], id)
  if not raw then
    redis.call('ZREM', KEYS[2], id)
    return 0
  end
  local ok, item = pcall(cjson.decode, raw)
  local its_route, reason
  if ok and type(item) == 'table' then
    its_route, reason = item.route, item.reason
  else  -- nested deeper than cjson reads: the entry's own fields come first in its JSON
    its_route, reason = string.match(raw, '"route":"([^"]*)"'), string.match(raw, '"reason":"([^"]*)"')
  end
  if its_route ~= route then return 0 end  -- another route's: its caller names its keys
  redis.call('HDEL', KEYS[1], id)
  redis.call('HINCRBY', held, bytes_field, -#raw)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[5], id)
  local i = slot[reason]
  if i then
    redis.call('ZREM', KEYS[5 + i], id)
    redis.call('ZREM', KEYS[5 + n + i], id)
  end
  return 1
end
"""

# add: the id, its score, the entry's JSON, its reason, the route's limit, the metrics field of
# drops, the route's most bytes. Past either limit the route's oldest go, the new one last.
ADD = (
    DROP
    + """
local id, score, entry, reason = ARGV[first], ARGV[first + 1], ARGV[first + 2], ARGV[first + 3]
local limit, most_bytes = tonumber(ARGV[first + 4]), tonumber(ARGV[first + 6])
if redis.call('HEXISTS', KEYS[1], id) == 1 then drop(id) end
local i = slot[reason]
redis.call('HSET', KEYS[1], id, entry)
redis.call('HINCRBY', held, bytes_field, #entry)
redis.call('ZADD', KEYS[2], score, id)
redis.call('ZADD', KEYS[5], score, id)
redis.call('ZADD', KEYS[5 + i], score, id)
redis.call('ZADD', KEYS[5 + n + i], score, id)
redis.call('SADD', KEYS[3], route)
local function over()
  local count = redis.call('ZCARD', KEYS[5])
  local size = tonumber(redis.call('HGET', held, bytes_field)) or 0
  return count > 0 and (count > limit or size > most_bytes)
end
local dropped = 0
while over() do
  local oldest = redis.call('ZRANGE', KEYS[5], 0, 0)[1]
  redis.call('ZREM', KEYS[5], oldest)
  dropped = dropped + drop(oldest)
end
if dropped > 0 then redis.call('HINCRBY', KEYS[4], ARGV[first + 5], dropped) end
return dropped
"""
)

# remove: the ids; returns how many were there.
REMOVE = (
    DROP
    + """
local removed = 0
for i = first, #ARGV do removed = removed + drop(ARGV[i]) end
return removed
"""
)

# Move a dead letter back to its lane only if it is still there: two operators replaying the same
# dead letter at once must not send it twice. The lane's list and its set of lanes follow the
# route's keys; ARGV: the id, the record, the lane's name, the metrics field of replays, the route's
# queued records and bytes fields in the held hash and what the record adds to them.
PUT_BACK = (
    DROP
    + APPEND_LUA
    + """
if drop(ARGV[first]) == 0 then return 0 end
append_to_lane(KEYS[7 + 2 * n], KEYS[8 + 2 * n], ARGV[first + 2], ARGV[first + 1])
redis.call('HINCRBY', KEYS[4], ARGV[first + 3], 1)
redis.call('HINCRBY', held, ARGV[first + 4], ARGV[first + 6])
redis.call('HINCRBY', held, ARGV[first + 5], ARGV[first + 7])
return 1
"""
)


def _route_keys(workspace: str, route: str) -> list[str]:
    """Every key the scripts touch for one route's dead letters, in the order DROP reads them."""
    keys = store.keys(workspace)
    return [
        keys.dead,
        keys.dead_index,
        keys.dead_routes,
        keys.metrics,
        keys.dead_route(route),
        *(keys.dead_reason(reason) for reason in REASONS),
        *(keys.dead_pair(route, reason) for reason in REASONS),
        keys.held,
    ]


def _head(route: str) -> list[str | int]:
    """The arguments every script starts with."""
    return [len(REASONS), route, dead_field(route), *REASONS]


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
DEFAULT_BYTES = 100_000_000  # per route, likewise (RELAY_DEAD_LETTERS_MAX_BYTES)
TRUNCATED_HEAD = 2000  # characters of a record's JSON a truncated dead letter keeps, to tell what it was


def add(
    pipe: redis.client.Pipeline,
    item: dict[str, Any],
    *,
    limit: int | None = None,
    max_bytes: int | None = None,
    record_bytes: int | None = None,
) -> None:
    """Queue the writes of one dead letter on a pipeline (the caller runs it in its transaction).

    A route keeps at most `limit` dead letters and `max_bytes` of them: a key holder sending invalid
    records to a lenient route cannot grow Redis without bound. Past either the route's oldest are
    dropped and counted in `relay_dead_letters_dropped{route}`, never silently. An entry over
    `record_bytes` keeps only the start of its record, with a note (`truncated`), and is counted in
    `relay_dead_letters_truncated{route}`: it cannot be replayed.
    """
    workspace, route = item["envelope"]["ws"], item["route"]
    text = _text(item)
    if record_bytes and size_of(text) > record_bytes:
        text = _text(truncated(item, size_of(text)))
        metrics.DEAD_TRUNCATED.incr(pipe, workspace, route=route)
    metrics.DEAD_LETTERED.incr(pipe, workspace, route=route, reason=item["reason"])
    keys = _route_keys(workspace, route)
    args = [
        item["id"],
        item["last_failed_at"],
        text,
        str(item["reason"]),
        limit or DEFAULT_LIMIT,
        metrics.DEAD_DROPPED.field(route=route),
        max_bytes or DEFAULT_BYTES,
    ]
    pipe.eval(ADD, len(keys), *keys, *_head(route), *args)


def _text(item: dict[str, Any]) -> str:
    """A dead letter as stored: JSON of valid text (any string a record or Braze's answer held)."""
    try:
        return safe_dumps(item)
    except RecursionError:  # a refused record nested deeper than JSON encoding can follow
        return safe_dumps(
            {**item, "envelope": {**item["envelope"], "rec": {"raw": "(not kept: nested too deeply)"}}}
        )


def truncated(item: dict[str, Any], size: int) -> dict[str, Any]:
    """A dead letter too large to keep whole: the start of its record's JSON, and a note of its size."""
    try:
        head = safe_dumps(item["envelope"]["rec"])[:TRUNCATED_HEAD]
    except RecursionError:
        head = "(nested too deeply)"
    note = (
        f"kept truncated: {size} bytes; only the start of the record is kept: its sender must send it again"
    )
    return {**item, "truncated": note, "envelope": {**item["envelope"], "rec": {"start": head}}}


def get(client: redis.Redis, dead_id: str, workspaces: Iterable[str]) -> dict[str, Any] | None:
    """One dead letter by id, from whichever of these workspaces holds it."""
    with client.pipeline(transaction=False) as pipe:
        for workspace in workspaces:
            pipe.hget(store.keys(workspace).dead, dead_id)
        found = [raw for raw in pipe.execute() if raw]
    return safe_loads(found[0]) if found else None


def remove(client: redis.Redis, ids: Iterable[str], workspaces: Iterable[str]) -> int:
    """Delete these dead letters (and their index entries) for good; returns how many were there."""
    chosen = list(dict.fromkeys(ids))
    if not chosen:
        return 0
    removed = 0
    for workspace in workspaces:
        by_route: dict[str, list[str]] = {}
        raws = cast("list[bytes | None]", client.hmget(store.keys(workspace).dead, chosen))
        for dead_id, raw in zip(chosen, raws, strict=True):
            if raw is not None:
                by_route.setdefault(str(safe_loads(raw)["route"]), []).append(dead_id)
        for route, route_ids in by_route.items():
            keys = _route_keys(workspace, route)
            removed += int(cast("int", client.eval(REMOVE, len(keys), *keys, *_head(route), *route_ids)))
    return removed


def index_of(workspace: str, route: str | None, reason: str | None) -> str:
    """The index that holds exactly the dead letters of this filter, in one workspace."""
    keys = store.keys(workspace)
    if route and reason:
        return keys.dead_pair(route, reason)
    if route:
        return keys.dead_route(route)
    if reason:
        return keys.dead_reason(reason)
    return keys.dead_index


@dataclass(frozen=True)
class Page:
    """One page of a filter, newest first, and how many the filter holds in all."""

    items: list[dict[str, Any]]
    total: int


Part = tuple[redis.Redis, list[str]]  # one Redis and the workspaces whose dead letters it holds


def page(client: redis.Redis, workspaces: Iterable[str], **filters: Any) -> Page:
    """Dead letters of the workspaces on one Redis: `page_across` (its filters: route, reason, as_of,
    offset, count), newest first, each workspace's newest merged by failure time."""
    return page_across([(client, list(workspaces))], **filters)


def page_across(
    parts: list[Part],
    *,
    route: str | None = None,
    reason: str | None = None,
    as_of: float | None = None,
    offset: int = 0,
    count: int = 50,
) -> Page:
    """`page` over the workspaces of several Redis servers (relay/redises.py), merged by failure time."""
    top = "+inf" if as_of is None else repr(as_of)
    rows: list[tuple[float, bytes, str, int]] = []
    total = 0
    for number, (client, names) in enumerate(parts):
        with client.pipeline(transaction=False) as pipe:
            for workspace in names:
                index = index_of(workspace, route, reason)
                pipe.zrevrangebyscore(index, top, "-inf", start=0, num=offset + count, withscores=True)
                pipe.zcount(index, "-inf", top)
            found = pipe.execute()
        rows += [
            (score, dead_id, workspace, number)
            for workspace, ids in zip(names, found[0::2], strict=True)
            for dead_id, score in ids
        ]
        total += sum(int(held) for held in found[1::2])
    ranked = sorted(rows, key=lambda row: (-row[0], row[1]))[offset : offset + count]
    entries: dict[tuple[int, str, bytes], dict[str, Any]] = {}
    for number, (client, _) in enumerate(parts):
        mine = [(workspace, dead_id) for _, dead_id, workspace, which in ranked if which == number]
        entries.update({(number, *key): item for key, item in _entries(client, mine).items()})
    items = [
        entries[(number, ws, dead_id)]
        for _, dead_id, ws, number in ranked
        if (number, ws, dead_id) in entries
    ]
    return Page(items, total)


def iter_entries(
    client: redis.Redis,
    workspaces: Iterable[str],
    *,
    route: str | None = None,
    reason: str | None = None,
    as_of: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Every dead letter of a route and/or reason that failed by `as_of`, newest first, in chunks."""
    yield from iter_across([(client, list(workspaces))], route=route, reason=reason, as_of=as_of)


def iter_across(
    parts: list[Part], *, route: str | None = None, reason: str | None = None, as_of: float | None = None
) -> Iterator[dict[str, Any]]:
    """`iter_entries` over the workspaces of several Redis servers."""
    offset = 0
    while True:
        found = page_across(parts, route=route, reason=reason, as_of=as_of, offset=offset, count=CHUNK)
        yield from found.items
        if offset + CHUNK >= found.total:
            return
        offset += CHUNK


def _entries(client: redis.Redis, rows: list[tuple[str, bytes]]) -> dict[tuple[str, bytes], dict[str, Any]]:
    """The entries of these (workspace, id) that are there: one HMGET per workspace."""
    if not rows:
        return {}
    by_workspace: dict[str, list[bytes]] = {}
    for workspace, dead_id in rows:
        by_workspace.setdefault(workspace, []).append(dead_id)
    found: dict[tuple[str, bytes], dict[str, Any]] = {}
    with client.pipeline(transaction=False) as pipe:
        for workspace, ids in by_workspace.items():
            pipe.hmget(store.keys(workspace).dead, ids)
        for (workspace, ids), raws in zip(by_workspace.items(), pipe.execute(), strict=True):
            found.update(
                {(workspace, dead_id): safe_loads(raw) for dead_id, raw in zip(ids, raws, strict=True) if raw}
            )
    return found


@dataclass(frozen=True)
class Counts:
    """How many dead letters there are: in all, by route and by reason."""

    total: int
    by_route: dict[str, int]
    by_reason: dict[str, int]


def counts(client: redis.Redis, workspaces: Iterable[str], routes: Iterable[str] = ()) -> Counts:
    """The store's counts, from the indexes (one round trip; routes that hold none are left out)."""
    names = list(workspaces)
    with client.pipeline(transaction=False) as pipe:
        for workspace in names:
            pipe.smembers(store.keys(workspace).dead_routes)
        held = pipe.execute()
    known = {
        workspace: sorted(set(routes) | {name.decode() for name in members})
        for workspace, members in zip(names, held, strict=True)
    }
    total, by_route, by_reason = 0, collections.Counter[str](), collections.Counter[str]()
    with client.pipeline(transaction=False) as pipe:
        for workspace in names:
            keys = store.keys(workspace)
            pipe.zcard(keys.dead_index)
            for route in known[workspace]:
                pipe.zcard(keys.dead_route(route))
            for reason in REASONS:
                pipe.zcard(keys.dead_reason(reason))
        found = iter(pipe.execute())
    for workspace in names:
        total += int(next(found))
        for route in known[workspace]:
            by_route[route] += int(next(found))
        for reason in REASONS:
            by_reason[reason] += int(next(found))
    return Counts(
        total,
        {route: n for route, n in by_route.items() if n},
        {reason: n for reason, n in by_reason.items() if n},
    )


def put_back(
    client: redis.Redis, item: dict[str, Any], delivery: Any, record: dict[str, Any] | None = None
) -> str | None:
    """Put a dead letter's record back on its lane (fresh attempts) and remove the dead letter.

    `record` replaces the stored record (a re-validated invalid one). Returns the lane, or None if
    the dead letter was no longer there (replayed or purged meanwhile). The lane's drain job then
    delivers it through the normal path, ordering check included.
    """
    envelope: Envelope = dict(item["envelope"])  # type: ignore[assignment]
    for key in ("first", "why"):
        envelope.pop(key, None)  # type: ignore[misc]
    envelope["n"] = 0
    if record is not None:
        envelope["rec"] = record
        envelope["t"] = record["time"]
    lane = Lane.of(envelope["ws"], Kind(envelope["kind"]), envelope["rec"].get("_id"), delivery.track_shards)
    payload = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
    route = item["route"]
    keys = [*_route_keys(lane.workspace, route), lane.list_key, lane.keys.lanes]
    # Its route holds it again until it ends (a copy the relay sent on its own was never the route's).
    held = (0, 0) if envelope.get("again") else (1, size_of(payload))
    fields = queued_fields(envelope["route"])
    args = [item["id"], payload, lane.name, metrics.REPLAYED.field(route=envelope["route"]), *fields, *held]
    if not client.eval(PUT_BACK, len(keys), *keys, *_head(route), *args):
        return None
    lane.wake(client, delivery)
    return lane.name
