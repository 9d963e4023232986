"""What a Braze verdict means for the records of a batch, and where each record ends: pure rules.

`judge` turns one request's verdict into a `Judgement` (which items are delivered, which wait for
another attempt and until when, which are dead-lettered and why, whether the family pauses, which
halves to send again); a `Ledger` gathers the judgements of a batch; `ending` decides each record's
one `Outcome` from the ledger, the record's attempts and age. Nothing here does I/O: the drain job
(handlers/drain.py) sends, and handlers/commit.py writes what these functions decided.

How many attempts a record gets, and where each comes from (the one retry layer for delivery):
- 5xx and connection failures: at most `RELAY_MAX_ATTEMPTS` sends, with backoff between them
  (handlers/retry.py), and never past `RELAY_RETRY_MAX_AGE_S` after the first failure;
- 429 and a full rate-limit window: wait for the reset, not counted as an attempt (the age bound
  still holds);
- 400 or 413 for a batch of several: halved and sent again at once, not counted;
- RQ's own retry is not used; a worker killed mid-batch sends the batch again once its lease
  expires (at least once), not counted either.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from handlers.braze import Delivered, RateLimited, Rejected, TooLarge, Unavailable, Verdict
from handlers.packing import BrazeRequest
from handlers.retry import backoff, exhausted
from handlers.translate import NOT_IDEMPOTENT, Item
from relay.config import Delivery
from relay.envelope import Envelope
from relay.modes import DeadReason, Outcome


@dataclass(frozen=True)
class Later:
    """Try the record again at `due`; `counts`: this failure uses up one of its attempts.

    `wait`: not a failure at all, the record waits for an earlier call of its user in another lane
    (relay/order.py); neither attempts nor the age bound apply, the longest wait does.
    """

    due: float
    why: str
    counts: bool = True
    wait: bool = False


@dataclass(frozen=True)
class Dead:
    """Put the record in the dead-letter store."""

    reason: DeadReason
    status: int | None = None
    message: str = ""


@dataclass
class Judgement:
    """What one request's verdict means for its items."""

    delivered: list[Item] = field(default_factory=list)
    later: list[tuple[Item, Later]] = field(default_factory=list)
    dead: list[tuple[Item, Dead]] = field(default_factory=list)
    pause_until: float | None = None  # a 429: nothing goes to the family before this
    resend: list[list[Item]] = field(default_factory=list)  # halves to pack and send again


def judge(
    request: BrazeRequest,
    verdict: Verdict,
    *,
    now: float,
    delivery: Delivery,
    rng: random.Random | None = None,
) -> Judgement:
    """The rules of docs/delivery.md, "Braze's answers", for one request's items."""
    out = Judgement()
    items = request.items
    if isinstance(verdict, Delivered):
        # 2xx: delivered, except the items named in `errors`, dead-lettered with Braze's message.
        refused: dict[int, str] = {}
        for array, index, reason in verdict.errors:
            for item in request.items_at(array, index):
                refused.setdefault(id(item), reason)
        for item in items:
            if id(item) in refused:
                out.dead.append(
                    (item, Dead(DeadReason.BRAZE_REJECTED_ITEM, verdict.status, refused[id(item)]))
                )
            else:
                out.delivered.append(item)
    elif isinstance(verdict, RateLimited):
        # 429: wait for the reset, then send again; the wait does not use up an attempt.
        out.pause_until = verdict.reset_at
        out.later = [
            (item, Later(verdict.reset_at, "rate limited by Braze (429)", counts=False)) for item in items
        ]
    elif isinstance(verdict, Unavailable):
        # 5xx or no answer: the whole request again later, one due time so it comes back as one batch.
        attempts = max(item.envelope.get("n", 0) for item in items) + 1
        due = now + backoff(attempts, delivery, rng)
        for item in items:
            if verdict.ambiguous and item.array in NOT_IDEMPOTENT:
                # Braze may have stored it; a resend could store it twice. An operator decides.
                out.dead.append((item, Dead(DeadReason.AMBIGUOUS, verdict.status, verdict.reason)))
            else:
                out.later.append((item, Later(due, verdict.reason)))
    elif isinstance(verdict, (TooLarge, Rejected)):
        status = 413 if isinstance(verdict, TooLarge) else verdict.status
        if len(items) > 1 and status in (400, 413):
            # One bad (or huge) record must not take the rest of the batch with it: halve and resend.
            half = len(items) // 2
            out.resend = [items[:half], items[half:]]
        else:
            # 401, 403, 404, other 4xx, or a lone record Braze refuses: dead-letter at once.
            out.dead = [(item, Dead(DeadReason.BRAZE_REJECTED, status, verdict.message)) for item in items]
    return out


def window_full(items: list[Item], until: float) -> Judgement:
    """The shared rate-limit window has no room before `until`: wait, without using an attempt."""
    return Judgement(
        later=[(item, Later(until, "rate limited (waiting for the window)", counts=False)) for item in items]
    )


@dataclass
class Ledger:
    """Where each record of a batch stands after its requests, by record id."""

    delivered: set[str] = field(default_factory=set)
    later: dict[str, Later] = field(default_factory=dict)
    dead: dict[str, Dead] = field(default_factory=dict)
    unchanged: set[str] = field(default_factory=set)  # left with nothing to send by skip_unchanged
    erased: set[str] = field(default_factory=set)  # a delete of their user was accepted after them

    def add(self, judgement: Judgement) -> None:
        """Take in one request's judgement."""
        for item in judgement.delivered:
            self.delivered.add(item.envelope["id"])
        for item, later in judgement.later:
            self.postpone(item.envelope["id"], later)
        for item, dead in judgement.dead:
            self.fail(item.envelope["id"], dead)

    def fail(self, record_id: str, dead: Dead) -> None:
        """Dead-letter the record (its first dead reason stands; a dead item outranks every other)."""
        self.dead.setdefault(record_id, dead)

    def postpone(self, record_id: str, later: Later) -> None:
        """Retry the record; of several waits for one record, the latest due time stands."""
        current = self.later.get(record_id)
        if current is None or later.due > current.due:
            self.later[record_id] = later


@dataclass(frozen=True)
class Ending:
    """Where one record ends after its batch, and its envelope as it is to be stored."""

    outcome: Outcome
    envelope: Envelope
    dead: Dead | None = None
    later: Later | None = None
    erased: bool = False  # superseded because a delete of its user was accepted after it


def ending(env: Envelope, ledger: Ledger, *, now: float, delivery: Delivery) -> Ending:
    """The one outcome of a record: dead-lettered, retried, delivered, unchanged or superseded.

    A record whose items ended differently takes the strongest: dead, then retry (a retry sends the
    whole record again, which is safe for the kinds a record splits into), then delivered.
    """
    rid = env["id"]
    if rid in ledger.erased:
        return Ending(Outcome.SUPERSEDED, env, erased=True)
    if rid in ledger.dead:
        dead = ledger.dead[rid]
        counted = 0 if dead.reason is DeadReason.UNTRANSLATABLE else 1
        return Ending(Outcome.DEAD_LETTERED, {**env, "n": env.get("n", 0) + counted}, dead=dead)
    if rid in ledger.later:
        later = ledger.later[rid]
        if later.wait:
            return Ending(Outcome.RETRY, {**env, "w": env.get("w", now), "why": later.why}, later=later)
        retried: Envelope = {**env, "n": env.get("n", 0) + (1 if later.counts else 0), "why": later.why}
        retried.setdefault("first", now)
        if exhausted(retried["n"], retried["first"], now, delivery):
            return Ending(
                Outcome.DEAD_LETTERED, retried, dead=Dead(DeadReason.RETRIES_EXHAUSTED, None, later.why)
            )
        return Ending(Outcome.RETRY, retried, later=later)
    if rid in ledger.delivered:
        return Ending(Outcome.DELIVERED, env)
    if rid in ledger.unchanged:
        # Every value it set that was not superseded, Braze already has from us: nothing was sent.
        return Ending(Outcome.UNCHANGED, env)
    # Every field it set was already newer in Braze (or in its own batch): nothing was sent for it.
    return Ending(Outcome.SUPERSEDED, env)
