"""What a drain job writes once a chunk's requests are all answered: one transaction per chunk.

The chunk's records leave the lane (trimmed from the list's head, removed from the retry set) and
each record's ending is written with them: delivered (counted, its lag, its consent audit event,
what skip_unchanged now knows Braze holds), due again later (the retry set), dead-lettered (the
capped store), unchanged or superseded. All of it only while the job still holds the lane's lease:
the transaction watches the lease key. The endings are decided by handlers/outcomes.py (`ending`);
this module only writes them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from handlers.context import Context
from handlers.outcomes import Dead, Ending, Ledger, ending
from handlers.translate import to_items
from handlers.unchanged import Memo
from relay import audit, deadletters, metrics
from relay.config import dead_letter_limit
from relay.envelope import Envelope, dumps
from relay.lanes import Lane
from relay.modes import AuditEvent, Kind, Outcome, kind_of

log = logging.getLogger(__name__)

Chunk = list[tuple[bytes, Envelope, bool]]  # (raw as stored, envelope, taken from the retry set)
FORGETTING = frozenset(
    {Kind.DELETE, Kind.IDENTIFY, Kind.MERGE}
)  # after these skip_unchanged forgets the users


class Tally:
    """What a chunk cost: Braze requests by (endpoint, status), rate-limit waits by (family, source)."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.waits: Counter[tuple[str, str]] = Counter()

    def add(self, other: Tally) -> None:
        """Count another tally in."""
        self.calls.update(other.calls)
        self.waits.update(other.waits)


@dataclass(eq=False)
class Flight:
    """One chunk on its way: its records, where they stand, and its requests not answered yet."""

    chunk: Chunk
    ledger: Ledger = field(default_factory=Ledger)
    tally: Tally = field(default_factory=Tally)
    open: int = 0  # its requests not yet answered
    memos: dict[str, list[Memo]] = field(default_factory=dict)  # record id -> skip_unchanged memos
    unchanged: dict[str, int] = field(default_factory=dict)  # route -> attribute values left out

    def pending(self) -> set[tuple[str, str]]:
        """(memory key, field) pairs this chunk may deliver."""
        return {(memo.key, name) for memos in self.memos.values() for memo in memos for name in memo.digests}

    @property
    def from_list(self) -> int:
        """Records it took from the list's head (the commit trims them)."""
        return sum(1 for _, _, retried in self.chunk if not retried)

    @property
    def retried(self) -> list[bytes]:
        """Records it took from the retry set, as stored there."""
        return [raw for raw, _, retried in self.chunk if retried]


def commit(ctx: Context, lane: Lane, token: str, flight: Flight, lease_lock: threading.Lock) -> bool:
    """Record every outcome of a chunk in one transaction, only if `token` still holds the lane.

    The endings are decided before the lease is locked: senders wait for `lease_lock` to check the
    lease (renewing writes the key the transaction watches), so it is held only for the transaction.
    """
    now = time.time()
    delivery = ctx.settings.delivery
    endings = [ending(env, flight.ledger, now=now, delivery=delivery) for _, env, _ in flight.chunk]
    with lease_lock, ctx.redis.pipeline(transaction=True) as pipe:
        try:
            if not lane.watch(pipe, token):
                log.warning(
                    "lease lost before commit; the next owner delivers again",
                    extra={"lane": lane.name},
                )
                return False
            pipe.multi()
            lane.settle(pipe, flight.from_list, flight.retried)
            ctx.marks.clear(pipe, [env for _, env, _ in flight.chunk])
            settle(pipe, ctx, lane, flight, endings, now=now)
            workspace = lane.workspace
            for (endpoint, status), count in flight.tally.calls.items():
                metrics.BRAZE_REQUESTS.incr(pipe, workspace, count, endpoint=endpoint, status=status)
            for (family, source), count in flight.tally.waits.items():
                metrics.RATE_LIMITED.incr(pipe, workspace, count, family=family, source=source)
            pipe.execute()
        except redis.WatchError:
            log.warning(
                "lease changed during commit; the next owner delivers again",
                extra={"lane": lane.name},
            )
            return False
    return True


def settle(pipe: Any, ctx: Context, lane: Lane, flight: Flight, endings: list[Ending], *, now: float) -> None:
    """Queue each record's ending (and its metrics, audit events and memory) on the transaction."""
    ttl = ctx.settings.audit_ttl_s
    ended: Counter[tuple[metrics.Count, str]] = Counter()  # (counter, route) -> records
    lags: list[float] = []
    learnt: list[Memo] = []
    forget: list[str] = []
    memory = ctx.unchanged
    for (_, env, _), end in zip(flight.chunk, endings, strict=True):
        consent = kind_of(env["kind"]) is Kind.CONSENT
        if end.outcome is Outcome.DEAD_LETTERED:
            assert end.dead is not None
            dead_letter(pipe, ctx, end.envelope, end.dead)
        elif end.outcome is Outcome.RETRY:
            assert end.later is not None
            lane.schedule(pipe, dumps(end.envelope), end.later.due)
            reason = end.later.why.split(":")[0][:40]
            metrics.RETRIES.incr(pipe, lane.workspace, route=env["route"], reason=reason)
            if consent:
                audit.note(
                    pipe, end.envelope, AuditEvent.RETRYING, ttl, reason=end.later.why, due=end.later.due
                )
        elif end.outcome is Outcome.DELIVERED:
            ended[(metrics.DELIVERED, env["route"])] += 1
            lags.append(now - env["at"])
            learnt += flight.memos.get(env["id"], ())
            if consent:
                audit.note(pipe, env, AuditEvent.CONFIRMED, ttl)
            elif env["ws"] in memory.remembering and kind_of(env["kind"]) in FORGETTING:
                # Braze deleted or merged the profile: what it held of it is no longer known.
                forget += [user for item in to_items(env) for user in item.users]
        elif end.outcome is Outcome.UNCHANGED:
            ended[(metrics.UNCHANGED, env["route"])] += 1
        else:
            ended[(metrics.SUPERSEDED, env["route"])] += 1
            if consent:
                audit.note(pipe, env, AuditEvent.SUPERSEDED, ttl)
    workspace = lane.workspace
    for (counter, route), count in ended.items():
        counter.incr(pipe, workspace, count, route=route)
    for route, count in flight.unchanged.items():
        metrics.ATTRIBUTES_UNCHANGED.incr(pipe, workspace, count, route=route)
    metrics.DELIVERY_LAG.observe(pipe, workspace, lags, lane=lane.name)
    metrics.note_minute(pipe, workspace, lags, now)
    memory.remember(pipe, learnt, now)
    memory.forget(pipe, lane.workspace, forget)


def dead_letter(pipe: Any, ctx: Context, env: Envelope, dead: Dead) -> None:
    """Queue one dead letter (and its audit event) on the transaction, and log it."""
    item = deadletters.entry(env, reason=dead.reason, status=dead.status, message=dead.message)
    deadletters.add(pipe, item, limit=dead_letter_limit(ctx.settings, env["route"]))
    if kind_of(env["kind"]) is Kind.CONSENT:
        audit.note(
            pipe,
            env,
            AuditEvent.DEAD_LETTERED,
            ctx.settings.audit_ttl_s,
            reason=dead.reason,
            status=dead.status,
        )
    log.info(
        "dead-lettered",
        extra={"record": env["id"], "route": env["route"], "reason": dead.reason, "status": dead.status},
    )
