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
from handlers.outcomes import Dead, Ending, Later, Ledger, ending
from handlers.translate import to_items
from handlers.unchanged import Memo
from relay import audit, budgets, deadletters, metrics, order
from relay.config import dead_letter_bytes, dead_letter_limit
from relay.envelope import Envelope, dumps
from relay.lanes import Lane
from relay.modes import AuditEvent, Kind, LaneFamily, Outcome, kind_of

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
    member: str = ""  # its fence (relay/order.py); '' when order across lanes is off
    checked: order.Checked | None = None  # what its records' users' marks said
    waited: list[float] = field(default_factory=list)  # how long its records that had waited, waited
    gave_up: int = 0  # records that went on after waiting their longest

    from_list: int = field(init=False)  # records it took from the list's head (the commit trims them)
    retried: list[bytes] = field(init=False)  # records it took from the retry set, as stored there

    def __post_init__(self) -> None:
        self.retried = [raw for raw, _, retried in self.chunk if retried]
        self.from_list = len(self.chunk) - len(self.retried)

    def pending(self) -> set[tuple[str, str]]:
        """(memory key, field) pairs this chunk may deliver."""
        return {(memo.key, name) for memos in self.memos.values() for memo in memos for name in memo.digests}


def commit(ctx: Context, lane: Lane, token: str, flight: Flight, lease_lock: threading.Lock) -> bool:
    """Record every outcome of a chunk in one transaction, only if `token` still holds the lane.

    The endings are decided before the lease is locked: senders wait for `lease_lock` to check the
    lease (renewing writes the key the transaction watches), so it is held only for the transaction.
    Lanes that consent changes were sent to once more are woken after it.
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
            again = settle_order(pipe, ctx, lane, flight, endings)
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
    for other in again:
        other.wake(ctx.redis, delivery)  # if this process dies first, the ticker wakes it
    return True


def settle(pipe: Any, ctx: Context, lane: Lane, flight: Flight, endings: list[Ending], *, now: float) -> None:
    """Queue each record's ending (and its metrics, audit events and memory) on the transaction."""
    settlement = Settlement(pipe, ctx, lane, flight, now)
    for (raw, env, _), end in zip(flight.chunk, endings, strict=True):
        settlement.end(env, end, len(raw))
    settlement.count()


@dataclass
class Settlement:
    """One chunk's endings being queued on its commit, and what they add up to."""

    pipe: Any
    ctx: Context
    lane: Lane
    flight: Flight
    now: float
    ended: Counter[tuple[metrics.Count, str]] = field(default_factory=Counter)  # (counter, route) -> n
    lags: list[float] = field(default_factory=list)
    learnt: list[Memo] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)
    released: dict[str, tuple[int, int]] = field(
        default_factory=dict
    )  # route -> (records, bytes) it no longer holds

    def end(self, env: Envelope, end: Ending, size: int) -> None:
        """Queue one record's ending; `size` is its bytes as stored, which its route no longer holds
        once it ended (a retry holds it again, as rewritten)."""
        pipe, ttl, route = self.pipe, self.ctx.settings.audit_ttl_s, env["route"]
        kind = kind_of(env["kind"])
        audited = kind in audit.AUDITED
        if end.outcome is Outcome.RETRY:
            assert end.later is not None
            kept = self.retry(env, end.envelope, end.later, audited)
            self.release(env, 0, size - kept)
            return
        self.release(env, 1, size)
        if end.outcome is Outcome.DEAD_LETTERED:
            assert end.dead is not None
            dead_letter(pipe, self.ctx, end.envelope, end.dead)
        elif end.outcome is Outcome.DELIVERED:
            self.delivered(env, kind, audited)
        elif end.outcome is Outcome.UNCHANGED:
            self.ended[(metrics.UNCHANGED, route)] += 1
        else:
            self.ended[(metrics.SUPERSEDED, route)] += 1
            if end.erased:
                self.ended[(metrics.ERASED, route)] += 1
                audit.note(pipe, env, AuditEvent.SUPERSEDED, ttl, reason="deleted")
            elif audited:
                audit.note(pipe, env, AuditEvent.SUPERSEDED, ttl)

    def release(self, env: Envelope, records: int, size: int) -> None:
        """Take a record (or bytes of it) off its route's queued counts; a copy the relay sends on
        its own (a consent change once more) was never counted."""
        if env.get("again") or not (records or size):
            return
        held = self.released.get(env["route"], (0, 0))
        self.released[env["route"]] = (held[0] + records, held[1] + size)

    def retry(self, env: Envelope, stored: Envelope, later: Later, audited: bool) -> int:
        """Back to the retry set: a failure to try again, or a wait for an earlier call of its user.
        Returns its bytes as stored there."""
        lane = self.lane
        payload = dumps(stored)
        lane.schedule(self.pipe, payload, later.due)
        if later.wait:
            if "w" not in env:  # it starts waiting now
                metrics.ORDER_WAITS.incr(self.pipe, lane.workspace, lane=lane.name)
            return budgets.size_of(payload)
        metrics.RETRIES.incr(
            self.pipe, lane.workspace, route=env["route"], reason=later.why.split(":")[0][:40]
        )
        if audited:
            ttl = self.ctx.settings.audit_ttl_s
            audit.note(self.pipe, stored, AuditEvent.RETRYING, ttl, reason=later.why, due=later.due)
        return budgets.size_of(payload)

    def delivered(self, env: Envelope, kind: Kind, audited: bool) -> None:
        """Braze took it: count it, its lag, what skip_unchanged learns or forgets, its audit event."""
        ttl = self.ctx.settings.audit_ttl_s
        if env.get("again"):
            self.ended[(metrics.CONSENT_RESENT, env["route"])] += 1
            audit.note(self.pipe, env, AuditEvent.CONFIRMED, ttl, again=True)
            return
        self.ended[(metrics.DELIVERED, env["route"])] += 1
        self.lags.append(self.now - env["at"])
        self.learnt += self.flight.memos.get(env["id"], ())
        if audited:
            audit.note(self.pipe, env, AuditEvent.CONFIRMED, ttl)
        if kind in FORGETTING and env["ws"] in self.ctx.unchanged.remembering:
            # Braze deleted or merged the profile: what it held of it is no longer known.
            self.forget += [user for item in to_items(env) for user in item.users]

    def count(self) -> None:
        """Queue what the endings add up to: counters, lags, skip_unchanged's memory."""
        pipe, workspace = self.pipe, self.lane.workspace
        for (counter, route), n in self.ended.items():
            counter.incr(pipe, workspace, n, route=route)
        for route, n in self.flight.unchanged.items():
            metrics.ATTRIBUTES_UNCHANGED.incr(pipe, workspace, n, route=route)
        metrics.DELIVERY_LAG.observe(pipe, workspace, self.lags, lane=self.lane.name)
        metrics.note_minute(pipe, workspace, self.lags, self.now)
        budgets.release(pipe, workspace, self.released)
        self.ctx.unchanged.remember(pipe, self.learnt, self.now)
        self.ctx.unchanged.forget(pipe, workspace, self.forget)


def settle_order(pipe: Any, ctx: Context, lane: Lane, flight: Flight, endings: list[Ending]) -> list[Lane]:
    """Queue what the chunk's endings mean for the order across lanes; the lanes to wake after.

    Gates of records that ended (not those retried) are settled, so the records waiting on them go
    on; the chunk's fence is dropped; each consent change Braze took is sent once more from its
    user's track lane, after the user's earlier records (`follow_up`).
    """
    if not flight.member:
        return []
    workspace = lane.workspace
    own = flight.checked.own_gates if flight.checked is not None else {}
    gates = [
        (env["seq"], own[env["id"]][1])
        for (_, env, _), end in zip(flight.chunk, endings, strict=True)
        if own and env["id"] in own and end.outcome is not Outcome.RETRY
    ]
    order.settle(pipe, ctx.redis, workspace, gates, flight.member)
    metrics.ORDER_WAIT.observe(pipe, workspace, flight.waited, lane=lane.name)
    if flight.gave_up:
        metrics.ORDER_GAVE_UP.incr(pipe, workspace, flight.gave_up, lane=lane.name)
    woken: dict[str, Lane] = {}
    if lane.family is not LaneFamily.CONSENT:  # consent changes travel on consent lanes (their copies not)
        return []
    for (_, env, _), end in zip(flight.chunk, endings, strict=True):
        if end.outcome is Outcome.DELIVERED and kind_of(env["kind"]) is Kind.CONSENT and not env.get("again"):
            other = follow_up(pipe, env, ctx.settings.delivery.track_shards)
            woken[other.name] = other
    return list(woken.values())


def follow_up(pipe: Any, env: Envelope, shards: int) -> Lane:
    """Queue a consent change once more, at the back of its user's track lane: it takes effect even
    when a record accepted before it (one that creates the profile, or an older state of it, still
    on its way) reaches Braze after it. Its own time makes it lose to any newer state."""
    again: Envelope = {**env, "id": f"{env['id']}+again", "again": True, "n": 0}
    for name in ("first", "why", "w"):
        again.pop(name, None)  # type: ignore[misc]
    lane = Lane.track_of(env["ws"], env["rec"].get("_id"), shards)
    lane.append(pipe, [dumps(again)])
    return lane


def dead_letter(pipe: Any, ctx: Context, env: Envelope, dead: Dead) -> None:
    """Queue one dead letter (and its audit event) on the transaction, and log it."""
    item = deadletters.entry(env, reason=dead.reason, status=dead.status, message=dead.message)
    deadletters.add(
        pipe,
        item,
        limit=dead_letter_limit(ctx.settings, env["route"]),
        max_bytes=dead_letter_bytes(ctx.settings, env["route"]),
        record_bytes=ctx.settings.dead_letter_record_bytes,
    )
    if kind_of(env["kind"]) in audit.AUDITED:
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
