"""What an operator does, written once: the CLI and the admin pages both call these.

Dead letters: selecting (by ids, or by route and reason as of a moment), re-validating a record
refused at the edge, replaying through the normal delivery path, purging in bounded transactions,
and telling ages and times the same way everywhere. skip_unchanged: what each route left out, and
forgetting a route's or a user's memory (handlers/unchanged.py), so that values are sent again.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
from marshmallow import ValidationError

from receiver import state
from relay import audit, deadletters, metrics, pauses, store
from relay import unchanged as memory
from relay.config import Settings
from relay.modes import DeadReason
from relay.redises import Redises
from relay.routes import user_key

# What an operation reads: every configured Redis (the pages and the CLI), or one Redis's client.
Source = Redises | redis.Redis

PURGE_CHUNK = 500  # dead letters per script call: a purge of any size never blocks Redis for long


def ago(then: float | None, now: float | None = None) -> str:
    """How long ago, in whole units, rounded down: '5s ago', '3m ago', '1h ago' (for 90 min), '4d ago'."""
    if not then:
        return "-"
    seconds = max((time.time() if now is None else now) - then, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def utc(then: float | None) -> str:
    """A UNIX time as 'YYYY-MM-DD HH:MM:SS UTC'."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(then)) if then else "-"


def workspaces(client: redis.Redis) -> list[str]:
    """Every workspace whose keys this Redis holds: the configured ones placed on it (all, for a Redis
    the app does not know) and those it remembers."""
    edge = state.current()
    placed = [server.workspaces for server, known in edge.redises if known is client]
    return store.workspaces(client, placed[0] if placed else edge.settings.workspaces)


def parts(source: Source) -> list[tuple[redis.Redis, list[str]]]:
    """Each Redis of the source with the workspaces whose keys it holds."""
    clients = [known for _, known in source] if isinstance(source, Redises) else [source]
    return [(client, workspaces(client)) for client in clients]


def client_of(source: Source, workspace: str) -> redis.Redis:
    """The client of the Redis that holds a workspace."""
    return source.of(workspace) if isinstance(source, Redises) else source


def matching(
    source: Source, *, route: str | None = None, reason: str | None = None, as_of: float | None = None
) -> Iterator[dict[str, Any]]:
    """Dead letters of this route and this reason (the whole reason), newest first, failed by `as_of`.

    `as_of` (the moment a page was shown) keeps an action on "all that match" to what the operator
    saw: dead letters that arrived after it are left alone.
    """
    yield from deadletters.iter_across(parts(source), route=route, reason=reason, as_of=as_of)


def dead_page(
    source: Source, *, route: str | None, reason: str | None, as_of: float, offset: int, count: int
) -> deadletters.Page:
    """One page of the dead letters of a route and/or reason, newest first."""
    return deadletters.page_across(
        parts(source), route=route, reason=reason, as_of=as_of, offset=offset, count=count
    )


def dead_counts(source: Source) -> deadletters.Counts:
    """How many dead letters there are, in all, by route (every configured route named) and by reason."""
    routes = state.current().settings.routes
    found = [deadletters.counts(client, names, routes) for client, names in parts(source)]
    by_route: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    for counted in found:
        by_route.update(counted.by_route)
        by_reason.update(counted.by_reason)
    return deadletters.Counts(sum(counted.total for counted in found), dict(by_route), dict(by_reason))


def pauses_now(source: Source) -> list[pauses.Pause]:
    """Every 429 pause in force, by workspace and family."""
    return [pause for client, names in parts(source) for pause in pauses.active(client, names)]


def recent_minutes(source: Source, count: int = 60) -> list[metrics.Minute]:
    """The last `count` minutes' deliveries of every workspace together, oldest first."""
    return metrics.recent_minutes_across(parts(source), count)


@dataclass
class Found:
    """Dead letters named by id: those found, and the ids that were not there."""

    items: list[dict[str, Any]]
    missing: list[str]


def by_ids(source: Source, ids: Iterable[str]) -> Found:
    """The dead letters with these ids, each once, in the order given."""
    found = Found([], [])
    held = parts(source)
    for dead_id in dict.fromkeys(ids):
        item = next(
            (got for client, names in held if (got := deadletters.get(client, dead_id, names)) is not None),
            None,
        )
        if item is None:
            found.missing.append(dead_id)
        else:
            found.items.append(item)
    return found


def revalidate(item: dict[str, Any]) -> dict[str, Any] | None:
    """For a record refused at the edge, load it again with its route's current schema.

    Returns the loaded record (None for records Braze refused, which are replayed as stored);
    raises ValidationError when it is still invalid, its route is gone, or only its start was kept.
    """
    if item.get("truncated"):
        raise ValidationError({"_record": [item["truncated"]]})
    if item["reason"] != DeadReason.INVALID:
        return None
    loader = state.current().loaders.get(item["route"])
    if loader is None:
        raise ValidationError({"_route": [f"route {item['route']!r} is no longer configured"]})
    return loader.load_again(item["envelope"])


@dataclass
class Replayed:
    """What a replay did: records put back on their lanes, and those still invalid (with why)."""

    replayed: int = 0
    still_invalid: list[tuple[str, Any]] = field(default_factory=list)  # (id, validation messages)


def replay(source: Source, items: Iterable[dict[str, Any]]) -> Replayed:
    """Put dead letters back on their lanes, fresh attempts; records refused at the edge are validated first.

    A dead letter replayed or purged meanwhile (by another operator) is skipped: it is sent once.
    """
    delivery = state.current().settings.delivery
    done = Replayed()
    for item in items:
        try:
            record = revalidate(item)
        except ValidationError as exc:
            done.still_invalid.append((item["id"], exc.messages))
            continue
        client = client_of(source, item["envelope"]["ws"])
        if deadletters.put_back(client, item, delivery, record) is not None:
            done.replayed += 1
    return done


def purge(source: Source, ids: Iterable[str]) -> int:
    """Delete dead letters for good, a bounded number per script call; returns how many were there."""
    chosen = list(dict.fromkeys(ids))
    return sum(
        deadletters.remove(client, chosen[start : start + PURGE_CHUNK], names)
        for client, names in parts(source)
        for start in range(0, len(chosen), PURGE_CHUNK)
    )


@dataclass(frozen=True)
class RouteMemory:
    """One skip_unchanged route: what it sent and left out (from /metrics), and when it last forgot."""

    route: str
    workspace: str
    delivered: int  # records delivered
    unchanged: int  # attribute objects not sent at all: nothing in them had changed
    values_left_out: int  # attribute values left out of the objects that were sent, and of those
    forgotten_at: float | None


def unchanged_summary(source: Source, settings: Settings) -> list[RouteMemory]:
    """Every route with skip_unchanged, by name."""
    routes = sorted(
        (route for route in settings.routes.values() if route.skip_unchanged), key=lambda r: r.name
    )
    if not routes:
        return []
    counted: Counter[metrics.Series] = Counter()
    for client, names in parts(source):
        counted.update(metrics.read(client, names))

    def count(counter: metrics.Count, route: str) -> int:
        return int(counted.get((counter.name, (("route", route),)), 0))

    forgotten = [
        memory.forgotten_at(client_of(source, route.workspace), [(route.workspace, route.name)])[0]
        for route in routes
    ]
    return [
        RouteMemory(
            route=route.name,
            workspace=route.workspace,
            delivered=count(metrics.DELIVERED, route.name),
            unchanged=count(metrics.UNCHANGED, route.name),
            values_left_out=count(metrics.ATTRIBUTES_UNCHANGED, route.name),
            forgotten_at=when,
        )
        for route, when in zip(routes, forgotten, strict=True)
    ]


def forget_route(source: Source, settings: Settings, route: str, now: float | None = None) -> float:
    """From now on the route sends every value again once (values remembered before now do not count).

    LookupError, with the message to show, unless it is a configured skip_unchanged route.
    """
    found = settings.routes.get(route)
    if found is None or not found.skip_unchanged:
        raise LookupError(f"no skip_unchanged route named {route!r}")
    when = time.time() if now is None else now
    memory.forget_route(client_of(source, found.workspace), found.workspace, route, when)
    return when


IDENTIFIER_KINDS = ("external_id", "email", "phone", "user_alias", "braze_id")


def user_history(source: Source, workspace: str, identifier: dict[str, Any]) -> list[dict[str, Any]]:
    """One user's audit trail, newest first: consent changes and deletes, and records not sent
    because the user's delete came after them."""
    return audit.history(client_of(source, workspace), workspace, identifier)


def forget_user(source: Source, workspace: str, identifier: dict[str, Any]) -> bool:
    """Forget what was delivered for one user (every route); True if something was remembered."""
    return memory.forget_user(client_of(source, workspace), workspace, user_key(identifier))
