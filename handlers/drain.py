"""The drain job: the one owner of a lane takes its records in batches and delivers them to Braze.

Records stay at the head of the lane's Redis list until the outcome of their batch is committed
(trimmed from the list, put on the retry set, or dead-lettered) in one transaction that checks
the owner still holds the lease. A worker killed mid-batch commits nothing, its lease expires,
and the next owner delivers the same records again: at least once, never lost.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from rq import Queue

from handlers import context
from handlers.braze import Delivered, RateLimited, Rejected, TooLarge, Unavailable, Verdict, classify
from handlers.packing import BrazeRequest, pack
from handlers.retry import backoff, exhausted
from handlers.translate import NOT_IDEMPOTENT, Item, to_items
from relay import audit, deadletters, metrics, store
from relay.envelope import Envelope, dumps, loads
from relay.lanes import Lane
from relay.modes import AuditEvent, DeadReason, Kind, LaneFamily

log = logging.getLogger("relay.worker")


@dataclass
class Outcome:
    """Where each record of a batch ends: delivered, retried later, or dead-lettered."""

    delivered: set[str] = field(default_factory=set)
    superseded: set[str] = field(default_factory=set)
    retry: dict[str, tuple[float, str, bool]] = field(default_factory=dict)  # id -> (due, why, counts)
    dead: dict[str, tuple[str, int | None, str]] = field(default_factory=dict)  # id -> (reason, status, msg)
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # (endpoint, status) -> requests
    waits: Counter[tuple[str, str]] = field(default_factory=Counter)  # (family, source) -> rate-limit waits

    def fail(self, item: Item, reason: str, status: int | None = None, message: str = "") -> None:
        """Dead-letter the item's record (a dead item outranks any other outcome of the record)."""
        self.dead.setdefault(item.envelope["id"], (reason, status, message))

    def later(self, item: Item, due: float, why: str, *, counts: bool = True) -> None:
        """Retry the item's record at `due`; `counts`: the failure uses up one of its attempts."""
        current = self.retry.get(item.envelope["id"])
        if current is None or due > current[0]:
            self.retry[item.envelope["id"]] = (due, why, counts)


class Drainer:
    """One run of a lane's drain job, for at most one time slice."""

    def __init__(self, lane: str, token: str) -> None:
        self.ctx = context.get()
        self.client: redis.Redis = self.ctx.redis
        self.delivery = self.ctx.settings.delivery
        self.lane, self.token = Lane(lane), token
        self.workspace = self.lane.workspace
        self.queue_key, self.retry_key = self.lane.queue_key, self.lane.retry_key
        family = self.lane.family
        self.batch_size = self.delivery.track_combined or self.delivery.track_per_array
        if family is not LaneFamily.TRACK:
            self.batch_size = self.delivery.batch_limit
        self.linger_s = (
            self.delivery.consent_linger_s if family is LaneFamily.CONSENT else self.delivery.linger_s
        )
        self.rq_queues = [
            Queue(name, connection=self.client) for name in (store.QUEUE_CONSENT, store.QUEUE_BULK)
        ]

    def renew(self) -> bool:
        """Extend the lease; False if another owner took the lane (then stop at once)."""
        return self.lane.renew(self.client, self.token, self.delivery)

    def run(self) -> dict[str, Any]:
        """Deliver batches until the lane is empty or the slice is over; then release or hand over."""
        deadline = time.monotonic() + self.delivery.slice_s
        batches = 0
        while self.renew():
            if time.monotonic() >= deadline:
                # Hand over to a fresh job at the back of the queue, so other lanes get a turn.
                self.lane.enqueue_drain(self.client, self.token, self.delivery)
                return {"lane": self.lane.name, "batches": batches, "handed_over": True}
            chunk = self.take()
            if chunk is None:
                continue  # lingering for company
            if not chunk:
                if self.release():
                    return {"lane": self.lane.name, "batches": batches}
                continue
            self.deliver(chunk)
            batches += 1
        return {"lane": self.lane.name, "batches": batches, "lease_lost": True}

    def take(self) -> list[tuple[bytes, Envelope, bool]] | None:
        """Due retries first, then the list head; None while a short batch lingers for company."""
        now = time.time()
        due = cast(
            "list[bytes]",
            self.client.zrangebyscore(self.retry_key, "-inf", now, start=0, num=self.batch_size),
        )
        if due:
            return [(raw, loads(raw), True) for raw in due]
        with self.client.pipeline(transaction=False) as pipe:
            pipe.llen(self.queue_key)
            pipe.lindex(self.queue_key, 0)
            waiting, head = pipe.execute()
        if not waiting:
            return []
        if waiting < self.batch_size:
            age = now - loads(head)["at"]
            if age < self.linger_s and not self.others_waiting():
                time.sleep(min(self.linger_s - age, 0.02))
                return None
        raws = cast("list[bytes]", self.client.lrange(self.queue_key, 0, self.batch_size - 1))
        return [(raw, loads(raw), False) for raw in raws]

    def others_waiting(self) -> bool:
        """True when drain jobs of other lanes wait for a worker: then send now rather than linger."""
        return any(queue.count for queue in self.rq_queues)

    def release(self) -> bool:
        """Give the lane up when it is empty; False if records arrived meanwhile and we kept it."""
        return self.lane.release(self.client, self.token, self.delivery)

    def deliver(self, chunk: list[tuple[bytes, Envelope, bool]]) -> None:
        """Send one batch and commit where each of its records ends."""
        outcome = Outcome()
        items: list[Item] = []
        for _, env, _ in chunk:
            try:
                items.extend(to_items(env))
            except (KeyError, ValueError, TypeError) as exc:
                outcome.dead[env["id"]] = (DeadReason.UNTRANSLATABLE, None, f"{type(exc).__name__}: {exc}")
        kept = self.ctx.watermarks.keep_newest(items)
        kept_ids = {id(item) for item in kept}
        for item in items:
            if id(item) not in kept_ids:
                outcome.superseded.add(item.envelope["id"])
        for request in pack(kept, self.delivery):
            self.send(request, outcome)
        self.commit(chunk, outcome)

    def send(self, request: BrazeRequest, outcome: Outcome) -> None:
        """Send one request (waiting for the shared rate limit) and sort its items by the verdict."""
        family = request.items[0].family
        wait_until = self.ctx.limiter.acquire(self.workspace, family)
        if wait_until is not None:
            for item in request.items:
                outcome.later(item, wait_until, "rate limited (waiting for the window)", counts=False)
            outcome.waits[(family, "window")] += 1
            return
        self.renew()
        client = self.ctx.braze(self.workspace)
        response, error = client.post(request.endpoint, request.body())
        verdict = classify(response, error)
        self.ctx.observe(self.workspace, request, response, verdict)
        status = str(response.status_code) if response is not None else type(error).__name__
        outcome.calls[(request.endpoint, status)] += 1
        self.apply(request, verdict, outcome)

    def apply(self, request: BrazeRequest, verdict: Verdict, outcome: Outcome) -> None:
        """What each verdict means for the items of the request."""
        now = time.time()
        items = request.items
        if isinstance(verdict, Delivered):
            refused: set[int] = set()
            for array, index, reason in verdict.errors:
                for item in request.items_at(array, index):
                    outcome.fail(item, DeadReason.BRAZE_REJECTED_ITEM, verdict.status, reason)
                    refused.add(id(item))
            for item in items:
                if id(item) not in refused:
                    outcome.delivered.add(item.envelope["id"])
        elif isinstance(verdict, RateLimited):
            self.ctx.limiter.pause(self.workspace, items[0].family, verdict.reset_at)
            outcome.waits[(items[0].family, "braze")] += 1
            for item in items:
                outcome.later(item, verdict.reset_at, "rate limited by Braze (429)", counts=False)
        elif isinstance(verdict, Unavailable):
            # One due time for the whole request, so its records come back as one batch.
            attempts = max(item.envelope.get("n", 0) for item in items) + 1
            due = now + backoff(attempts, self.delivery)
            for item in items:
                if verdict.ambiguous and item.array in NOT_IDEMPOTENT:
                    # Braze may have stored it; a resend could store it twice. An operator decides.
                    outcome.fail(item, DeadReason.AMBIGUOUS, verdict.status, verdict.reason)
                else:
                    outcome.later(item, due, verdict.reason)
        elif isinstance(verdict, (TooLarge, Rejected)):
            status = 413 if isinstance(verdict, TooLarge) else verdict.status
            # One bad record must not take the rest of the batch with it: halve and resend.
            if len(items) > 1 and status in (400, 413):
                for half in (items[: len(items) // 2], items[len(items) // 2 :]):
                    for sub in pack(half, self.delivery):
                        self.send(sub, outcome)
                return
            for item in items:
                outcome.fail(item, DeadReason.BRAZE_REJECTED, status, verdict.message)

    def commit(self, chunk: list[tuple[bytes, Envelope, bool]], outcome: Outcome) -> None:
        """Record every outcome in one transaction, only if we still own the lane."""
        now = time.time()
        from_list = sum(1 for _, _, retried in chunk if not retried)
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.lane.lease_key)
                if pipe.get(self.lane.lease_key) != self.token.encode():
                    log.warning(
                        "lease lost before commit; the next owner delivers again",
                        extra={"lane": self.lane.name},
                    )
                    return
                pipe.multi()
                if from_list:
                    pipe.ltrim(self.queue_key, from_list, -1)
                retried = [raw for raw, _, was_retry in chunk if was_retry]
                if retried:
                    pipe.zrem(self.retry_key, *retried)
                self.settle(pipe, chunk, outcome, now)
                for (endpoint, status), count in outcome.calls.items():
                    metrics.incr(pipe, "relay_braze_requests", count, endpoint=endpoint, status=status)
                for (family, source), count in outcome.waits.items():
                    metrics.incr(pipe, "relay_rate_limited", count, family=family, source=source)
                pipe.execute()
            except redis.WatchError:
                log.warning(
                    "lease changed during commit; the next owner delivers again",
                    extra={"lane": self.lane.name},
                )

    def settle(
        self, pipe: Any, chunk: list[tuple[bytes, Envelope, bool]], outcome: Outcome, now: float
    ) -> None:
        """Queue each record's ending (and its metrics and audit events) on the transaction."""
        ttl = self.ctx.settings.audit_ttl_s
        ended: Counter[tuple[str, str]] = Counter()  # (metric, route) -> records
        lags: list[float] = []
        for _, env, _ in chunk:
            rid = env["id"]
            consent = Kind(env["kind"]) is Kind.CONSENT
            if rid in outcome.dead:
                reason, status, message = outcome.dead[rid]
                env["n"] = env.get("n", 0) + (1 if reason != DeadReason.UNTRANSLATABLE else 0)
                self.dead_letter(pipe, env, reason, status, message)
            elif rid in outcome.retry:
                due, why, uses_attempt = outcome.retry[rid]
                env["n"] = env.get("n", 0) + (1 if uses_attempt else 0)
                env.setdefault("first", now)
                env["why"] = why
                if exhausted(env["n"], env["first"], now, self.delivery):
                    self.dead_letter(pipe, env, DeadReason.RETRIES_EXHAUSTED, None, why)
                    continue
                pipe.zadd(self.retry_key, {dumps(env): due})
                metrics.incr(pipe, "relay_retries", route=env["route"], reason=why.split(":")[0][:40])
                if consent:
                    audit.note(pipe, env, AuditEvent.RETRYING, ttl, reason=why, due=due)
            elif rid in outcome.delivered:
                ended[("relay_records_delivered", env["route"])] += 1
                lags.append(now - env["at"])
                if consent:
                    audit.note(pipe, env, AuditEvent.CONFIRMED, ttl)
            else:  # every field it set was already newer in Braze
                ended[("relay_records_superseded", env["route"])] += 1
                if consent:
                    audit.note(pipe, env, AuditEvent.SUPERSEDED, ttl)
        for (name, route), count in ended.items():
            metrics.incr(pipe, name, count, route=route)
        metrics.observe(pipe, "relay_delivery_lag_seconds", lags, lane=self.lane.name)

    def dead_letter(self, pipe: Any, env: Envelope, reason: str, status: int | None, message: str) -> None:
        """Queue one dead letter (and its audit event) on the transaction, and log it."""
        deadletters.add(pipe, deadletters.entry(env, reason=reason, status=status, message=message))
        if Kind(env["kind"]) is Kind.CONSENT:
            audit.note(
                pipe,
                env,
                AuditEvent.DEAD_LETTERED,
                self.ctx.settings.audit_ttl_s,
                reason=reason,
                status=status,
            )
        log.info(
            "dead-lettered",
            extra={"record": env["id"], "route": env["route"], "reason": reason, "status": status},
        )


def drain_lane(lane: str, token: str) -> dict[str, Any]:
    """RQ job: deliver a lane's records for one time slice (only the lease holder does anything)."""
    return Drainer(lane, token).run()
