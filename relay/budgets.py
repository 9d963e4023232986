"""What one route may make the relay hold: its budgets, resolved at start, and the counts that keep them.

A route's budgets bound what any holder of its key can make the relay keep or do, whoever else
shares the Redis: the records and bytes it holds queued (accepted, not ended yet), records per
minute, the size of one body, the records its transform may make per KB of body, and the bytes of
its dead letters. A route with `allowed_origins` has a key anyone can read from its pages, so its
defaults are smaller and it takes no exports. Each budget has a default (RELAY_* variables) and a
routes-file key of the same meaning for one route (docs/configuration.md).

The counts live in the workspace's `held` hash (relay/store.py `Keys.held`): per route, the records
and bytes queued, and the bytes of its dead letters. The edge adds what it stores (in the one script
of the common path, relay/lanes.py `PUSH`, which checks the budgets in the same step), the commit
takes away each record as it ends (a retry still holds it), a replay adds again; the dead-letter
store's scripts keep the dead-letter bytes. Records a worker sends once more on its own (a consent
change, after its user's earlier records) are not the caller's: they are not counted.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import redis

from relay import store

MINUTE_KEPT_S = 120  # a minute's count outlives its minute, for the scripts that read it late
TRANSFORM_FLOOR = 100  # records any transformed request may make, however small its body


class Budget(StrEnum):
    """The budgets of a route (relay_budget_refusals' `budget`)."""

    QUEUED_RECORDS = "queued_records"  # records accepted and not yet ended
    QUEUED_BYTES = "queued_bytes"  # their bytes, as stored
    RECORDS_PER_MINUTE = "records_per_minute"  # records accepted in the current minute
    BODY_BYTES = "body_bytes"  # one request's body
    TRANSFORM_RECORDS = "transform_records"  # records a transform makes per KB of body
    EXPORTS = "exports"  # a route whose key is public takes no exports


@dataclass(frozen=True)
class Budgets:
    """One route's budgets (0 records per minute: no such budget; no body limit: each path's own)."""

    queued_records: int = 2_000_000
    queued_bytes: int = 1_000_000_000
    records_per_minute: int = 0
    body_bytes: int | None = None
    transform_records_per_kb: int = 32
    dead_letter_bytes: int = 100_000_000
    exports: bool = True

    def body_limit(self, path_limit: int) -> int:
        """The byte limit of a body on a path whose own limit is `path_limit`."""
        return path_limit if self.body_bytes is None else min(path_limit, self.body_bytes)

    def transform_records(self, body_bytes: int) -> int:
        """How many records a transform may make of a body of this size."""
        return TRANSFORM_FLOOR + body_bytes * self.transform_records_per_kb // 1024


DEFAULTS = Budgets()
# A route whose key is in a web page (allowed_origins): anyone may use it, from anywhere. What its
# records make the relay remember once delivered bounds its records a minute (docs/operations.md,
# "What each request leaves in Redis"): a consent change keeps about 1.1 KB for 30 days (its audit
# trail), an attribute update about 0.6 KB for 72 h, so a page's route of either takes 600 a minute
# (under 1 GB a day); events and purchases leave nothing once delivered: 6,000.
PAGE_REMEMBERING_PER_MINUTE = 600
PAGE = Budgets(
    queued_records=100_000,
    queued_bytes=50_000_000,
    records_per_minute=6_000,
    body_bytes=256 * 1024,
    exports=False,
)
# The routes-file keys and the budget each sets.
ROUTE_KEYS = {
    "max_queued_records": "queued_records",
    "max_queued_bytes": "queued_bytes",
    "records_per_minute": "records_per_minute",
    "max_body_bytes": "body_bytes",
    "transform_records_per_kb": "transform_records_per_kb",
    "dead_letters_max_bytes": "dead_letter_bytes",
}


def resolve(table: Mapping[str, Any], defaults: Budgets, *, page: bool, remembers: bool = False) -> Budgets:
    """A route's budgets: its own keys, else the defaults (for a page route, the tighter of those and
    PAGE's, or PAGE_REMEMBERING_PER_MINUTE records a minute when its records leave the relay
    remembering each user; a page route takes no exports)."""
    chosen = defaults
    if page:
        per_minute = PAGE_REMEMBERING_PER_MINUTE if remembers else PAGE.records_per_minute
        chosen = Budgets(
            queued_records=min(defaults.queued_records, PAGE.queued_records),
            queued_bytes=min(defaults.queued_bytes, PAGE.queued_bytes),
            records_per_minute=_tighter(defaults.records_per_minute, per_minute) or 0,
            body_bytes=_tighter(defaults.body_bytes, PAGE.body_bytes),
            transform_records_per_kb=defaults.transform_records_per_kb,
            dead_letter_bytes=defaults.dead_letter_bytes,
            exports=False,
        )
    own = {name: table[key] for key, name in ROUTE_KEYS.items() if table.get(key) is not None}
    return replace(chosen, **own)


def _tighter(one: int | None, other: int | None) -> int | None:
    """The smaller of two limits, where 0 or None is no limit."""
    given = [limit for limit in (one, other) if limit]
    return min(given) if given else None


class OverBudget(Exception):
    """A request a route's budget refuses: 429 when waiting helps (with seconds to wait), else 413."""

    def __init__(
        self,
        route: str,
        budget: Budget,
        message: str,
        *,
        limit: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.route, self.budget, self.message = route, budget, message
        self.limit, self.retry_after = limit, retry_after

    @property
    def status(self) -> int:
        """429 when the same request may pass later, 413 when it never will (or 403: no exports here)."""
        if self.budget is Budget.EXPORTS:
            return 403
        return 429 if self.retry_after is not None else 413


@functools.lru_cache(maxsize=1024)
def queued_fields(route: str) -> tuple[str, str]:
    """A route's fields of queued records and bytes in its workspace's `held` hash."""
    return f"{route}|records", f"{route}|bytes"


def dead_field(route: str) -> str:
    """A route's field of dead-letter bytes in its workspace's `held` hash."""
    return f"{route}|dead_bytes"


def size_of(payload: str) -> int:
    """A stored record's bytes (UTF-8), as Redis counts them; no copy for ASCII text."""
    return len(payload) if payload.isascii() else len(payload.encode())


@dataclass(slots=True)  # made for every request: no frozen dataclass's slower __init__
class Hold:
    """What one request adds to its route's queued counts, and the budgets it must fit in."""

    workspace: str
    route: str
    budgets: Budgets
    records: int
    size: int
    now: float

    @property
    def fields(self) -> tuple[str, str]:
        """The route's fields of queued records and bytes in the `held` hash."""
        return queued_fields(self.route)

    @property
    def minute_key(self) -> str:
        """The route's count of records accepted in the current minute."""
        return store.keys(self.workspace).per_minute(self.route, int(self.now // 60))

    def alone(self) -> None:
        """413 when the request alone is over a budget: waiting would never let it in."""
        budgets = self.budgets
        per_minute = budgets.records_per_minute
        if (
            self.records <= budgets.queued_records
            and self.size <= budgets.queued_bytes
            and (not per_minute or self.records <= per_minute)
        ):
            return  # the common case, asked of every request: no more work than these comparisons
        for budget, amount, limit in (
            (Budget.QUEUED_RECORDS, self.records, budgets.queued_records),
            (Budget.QUEUED_BYTES, self.size, budgets.queued_bytes),
            (Budget.RECORDS_PER_MINUTE, self.records, budgets.records_per_minute),
        ):
            if limit and amount > limit:
                message = f"Route {self.route!r}: this request alone is over its {budget} of {limit}."
                raise OverBudget(self.route, budget, message, limit=limit)

    def refused(self, budget: Budget) -> OverBudget:
        """429 for a request the route's current counts leave no room for: when to try again."""
        if budget is Budget.RECORDS_PER_MINUTE:
            limit, wait = self.budgets.records_per_minute, 60 - int(self.now % 60)
            message = f"Route {self.route!r} took its {limit} records of this minute."
        else:
            limit = (
                self.budgets.queued_records if budget is Budget.QUEUED_RECORDS else self.budgets.queued_bytes
            )
            wait = 60  # records leave as they are delivered: a minute is a fair time to look again
            message = f"Route {self.route!r} holds its {budget} ({limit}) waiting for delivery."
        return OverBudget(self.route, budget, message, limit=limit, retry_after=max(wait, 1))

    def check(self, client: redis.Redis) -> None:
        """Before a transaction that stores the request: raise OverBudget unless it fits.

        Read, not watched: two requests checked at once may both pass and overshoot by one request.
        """
        self.alone()
        with client.pipeline(transaction=False) as pipe:
            pipe.hmget(store.keys(self.workspace).held, self.fields)
            pipe.get(self.minute_key)
            (records, size), minute = pipe.execute()
        if int(records or 0) + self.records > self.budgets.queued_records:
            raise self.refused(Budget.QUEUED_RECORDS)
        if int(size or 0) + self.size > self.budgets.queued_bytes:
            raise self.refused(Budget.QUEUED_BYTES)
        per_minute = self.budgets.records_per_minute
        if per_minute and int(minute or 0) + self.records > per_minute:
            raise self.refused(Budget.RECORDS_PER_MINUTE)

    def add(self, pipe: Any) -> None:
        """Queue counting the request's records (and this minute's) on the caller's transaction."""
        key = store.keys(self.workspace).held
        pipe.hincrby(key, self.fields[0], self.records)
        pipe.hincrby(key, self.fields[1], self.size)
        if self.budgets.records_per_minute:
            pipe.incrby(self.minute_key, self.records)
            pipe.expire(self.minute_key, MINUTE_KEPT_S)


# The PUSH script's answers when a budget leaves no room (relay/lanes.py).
SCRIPT_REFUSALS = {-1: Budget.QUEUED_RECORDS, -2: Budget.QUEUED_BYTES, -3: Budget.RECORDS_PER_MINUTE}


def release(pipe: Any, workspace: str, ended: Mapping[str, tuple[int, int]]) -> None:
    """Queue taking ended records off their routes' counts: route -> (records, bytes)."""
    key = store.keys(workspace).held
    for route, (records, size) in ended.items():
        records_field, bytes_field = queued_fields(route)
        if records:
            pipe.hincrby(key, records_field, -records)
        if size:
            pipe.hincrby(key, bytes_field, -size)


# While every lane of the workspace is empty no record is held: its routes' queued counts are reset to
# nothing, so any drift (records queued by a version that did not count them) heals. KEYS: the held
# hash, then every lane's list and retry set; answers 1 when it reset them.
RESET_WHEN_EMPTY = """
for i = 2, #KEYS, 2 do
  if redis.call('LLEN', KEYS[i]) > 0 or redis.call('ZCARD', KEYS[i + 1]) > 0 then return 0 end
end
local gone = {}
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(name, -8) == '|records' or string.sub(name, -6) == '|bytes' then table.insert(gone, name) end
end
if #gone > 0 then redis.call('HDEL', KEYS[1], unpack(gone)) end
return 1
"""


def reset_when_empty(client: redis.Redis, workspace: str, lanes: list[tuple[str, str]]) -> bool:
    """Reset the workspace's queued counts if all of its lanes, (list, retry set), are empty."""
    keys = [store.keys(workspace).held, *(key for pair in lanes for key in pair)]
    return bool(client.eval(RESET_WHEN_EMPTY, len(keys), *keys))


def held(client: redis.Redis, workspaces: list[str]) -> dict[tuple[str, str], int]:
    """Every route's counts in these workspaces, added up: (route, 'records'|'bytes'|'dead_bytes') -> n."""
    with client.pipeline(transaction=False) as pipe:
        for workspace in workspaces:
            pipe.hgetall(store.keys(workspace).held)
        found = pipe.execute()
    counts: dict[tuple[str, str], int] = {}
    for raw in found:
        for name, value in raw.items():
            route, _, what = name.decode().rpartition("|")
            counts[(route, what)] = counts.get((route, what), 0) + int(value)
    return counts
