"""The 429 pauses: after Braze says a rate-limit family is spent, nothing goes to it before the reset.

One key per workspace and family holds the reset time (UNIX seconds) and expires with it. The
drain jobs' rate limiter (handlers/ratelimit.py) sets and reads them; the admin page shows them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from relay import store
from relay.modes import RateFamily


@dataclass(frozen=True)
class Pause:
    """One family paused until a time."""

    workspace: str
    family: RateFamily
    until: float  # UNIX seconds


def paused_until(client: redis.Redis, workspace: str, family: RateFamily) -> float:
    """The time before which nothing may go to this family (0 if not paused)."""
    raw = client.get(store.keys(workspace).pause(family))
    return float(raw) if raw else 0.0


def pause(client: redis.Redis, workspace: str, family: RateFamily, until: float) -> None:
    """Stop every worker sending to this family until `until` (UNIX seconds); a past time does nothing."""
    if until > time.time():
        client.set(store.keys(workspace).pause(family), repr(until), pxat=int(until * 1000) + 1)


def active(client: redis.Redis, workspaces: Iterable[str], now: float | None = None) -> list[Pause]:
    """Every pause in force now, by workspace and family (one round trip)."""
    now = time.time() if now is None else now
    pairs = [(workspace, family) for workspace in sorted(workspaces) for family in RateFamily]
    with client.pipeline(transaction=False) as pipe:
        for workspace, family in pairs:
            pipe.get(store.keys(workspace).pause(family))
        found = pipe.execute()
    return [
        Pause(workspace, family, float(raw))
        for (workspace, family), raw in zip(pairs, found, strict=True)
        if raw and float(raw) > now
    ]
