"""The record envelope: what the edge stores in Redis and a worker reads back (JSON, no secrets)."""

from __future__ import annotations

import json
import re
from typing import Any, TypedDict

import orjson


class Envelope(TypedDict, total=False):
    """One accepted record on its way to Braze.

    id: '<request id>.<index>', unique and stable across retries and replays
    route, kind, ws: the route name, what the record becomes (events, attributes, alias, ...), workspace
    rec: the record as the edge loaded it (identifier under '_id', time as UNIX seconds)
    t: the record's time; seq: arrival order for ties (receive time in ns, then index)
    at: when the edge accepted it (UNIX seconds); uxo: Braze's _update_existing_only
    n: delivery attempts so far; first: first failure time; why: last failure reason
    w: when it first waited for an earlier call of its user in another lane (relay/order.py)
    again: a consent change sent once more, after its user's earlier records (handlers/commit.py)
    dd: 1 when its route's dedup_key named it: its sends are marked (handlers/sent.py)
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
    w: float
    again: bool
    dd: int


def dumps(envelope: Envelope) -> str:
    """Compact JSON for Redis (orjson; the stdlib for what orjson cannot encode, such as a huge integer)."""
    try:
        return orjson.dumps(envelope).decode()
    except TypeError:
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# orjson reads an integer outside [-2**63, 2**64) as a float: a record that may hold one (a negative
# of 19 digits or more, any of 20 or more) is read by the stdlib. (A number token: after ':', ',' or
# '['. The same text inside a string only costs the slower read.)
_LONG_NUMBER = re.compile(rb"[:,\[]\s*(?:-[0-9]{19}|[0-9]{20})")
# Read per record by every drain job, that search costs twice orjson's read. So runs of 19 digits are
# found first, with every digit made a 0 (bytes.translate and find, in C): most envelopes hold one,
# inside a string (`seq`, after a quote); only a run after ':', ',' or '[' (a '-' or white space
# between) may be a long number, and the search above says whether it is.
_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_RUN = b"0" * 19
_ZERO_RUN = re.compile(rb"0+")
_TOKEN_STARTS = frozenset(b":,[")
_SPACE = frozenset(b" \t\r\n")


def may_hold_long_number(data: bytes) -> bool:
    """True if a number of 19 digits or more may stand in this JSON text (False: it holds none)."""
    text = data.translate(_ZEROS)
    at = text.find(_RUN)
    while at != -1:
        before = at - 1
        if before >= 0 and text[before] == 0x2D:  # '-'
            before -= 1
        while before >= 0 and text[before] in _SPACE:
            before -= 1
        if before >= 0 and text[before] in _TOKEN_STARTS:
            return True
        at = text.find(_RUN, _ZERO_RUN.match(text, at).end())  # type: ignore[union-attr]  # past this run
    return False


def loads(raw: bytes | str) -> Envelope:
    """Back from Redis."""
    data = raw.encode() if isinstance(raw, str) else raw
    long_number = may_hold_long_number(data) and _LONG_NUMBER.search(data)
    envelope: Envelope = json.loads(data) if long_number else orjson.loads(data)
    return envelope
