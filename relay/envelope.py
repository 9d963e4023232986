"""The record envelope: what the edge stores in Redis and a worker reads back (JSON, no secrets)."""

from __future__ import annotations

import json
from typing import Any, TypedDict


class Envelope(TypedDict, total=False):
    """One accepted record on its way to Braze.

    id: '<request id>.<index>', unique and stable across retries and replays
    route, kind, ws: the route name, what the record becomes (events, attributes, alias, ...), workspace
    rec: the record as the edge loaded it (identifier under '_id', time as UNIX seconds)
    t: the record's time; seq: arrival order for ties (receive time in ns, then index)
    at: when the edge accepted it (UNIX seconds); uxo: Braze's _update_existing_only
    n: delivery attempts so far; first: first failure time; why: last failure reason
    """

    id: str
    route: str
    kind: str
    ws: str
    rec: dict[str, Any]
    t: float
    seq: str
    at: float
    uxo: bool
    n: int
    first: float
    why: str


def dumps(envelope: Envelope) -> str:
    """Compact JSON for Redis."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def loads(raw: bytes | str) -> Envelope:
    """Back from Redis."""
    envelope: Envelope = json.loads(raw)
    return envelope
