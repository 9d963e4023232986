"""The drain job: the one owner of a lane takes its records in batches and delivers them to Braze.

The owner takes a *wave* (up to `RELAY_INFLIGHT` requests' worth of records) and sends it in
rounds of requests at once, from a pool of sender threads: no user in two requests of a round
(handlers/packing.py `plan`), the shared rate limit taken and the lease checked before each send.
Records stay at the head of the lane's Redis list until the outcome of their wave is committed
(trimmed from the list, put on the retry set, or dead-lettered) in one transaction that checks
the owner still holds the lease. A worker killed mid-wave commits nothing, its lease expires,
and the next owner delivers the same records again: at least once, never lost.

This module does the I/O; what Braze's answers mean and where records end is decided by the pure
functions of handlers/braze.py (`classify`), handlers/outcomes.py (`judge`, `ending`),
handlers/packing.py and handlers/ordering.py.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import redis
import requests
from rq import Queue

from handlers import context
from handlers.braze import Answer, Verdict, classify, classify_failure
from handlers.context import Context
from handlers.outcomes import Dead, Judgement, Ledger, ending, judge, window_full
from handlers.packing import BrazeRequest, pack, plan
from handlers.translate import Item, to_items
from relay import audit, deadletters, metrics, store
from relay.config import dead_letter_limit
from relay.envelope import Envelope, dumps, loads
from relay.lanes import Lane
from relay.modes import AuditEvent, DeadReason, Kind, LaneFamily, Outcome

log = logging.getLogger(__name__)

Chunk = list[tuple[bytes, Envelope, bool]]  # (raw as stored, envelope, taken from the retry set)


class Drainer:
    """One run of a lane's drain job, for at most one time slice."""

    def __init__(self, ctx: Context, lane: Lane, token: str) -> None:
        self.ctx = ctx
        self.client: redis.Redis = ctx.redis
        self.delivery = ctx.settings.delivery
        self.lane, self.token = lane, token
        self.workspace = self.lane.workspace
        self.queue_key, self.retry_key = self.lane.queue_key, self.lane.retry_key
        family = self.lane.family
        self.batch_size = self.delivery.track_combined or self.delivery.track_per_array
        if family is not LaneFamily.TRACK:
            self.batch_size = self.delivery.batch_limit
        # A wave: as many records as `inflight` full requests hold, sent in rounds (packing.plan).
        self.width = self.delivery.inflight
        self.wave_size = self.width * self.batch_size
        self.linger_s = (
            self.delivery.consent_linger_s if family is LaneFamily.CONSENT else self.delivery.linger_s
        )
        self.rq_queues = [
            Queue(name, connection=self.client) for name in (store.QUEUE_CONSENT, store.QUEUE_BULK)
        ]

    def confirm(self) -> bool:
        """Renew the lease and check it is still ours; False: another owner took the lane (stop at once)."""
        return self.lane.confirm(self.client, self.token, self.delivery)

    def run(self) -> dict[str, Any]:
        """Deliver waves until the lane is empty or the slice is over; then release or hand over."""
        deadline = time.monotonic() + self.delivery.slice_s
        waves = 0
        while self.confirm():
            if time.monotonic() >= deadline:
                # Hand over to a fresh job at the back of the queue, so other lanes get a turn.
                self.lane.enqueue_drain(self.client, self.token, self.delivery)
                return {"lane": self.lane.name, "waves": waves, "handed_over": True}
            chunk = self.take()
            if chunk is None:
                continue  # lingering for company
            if not chunk:
                if self.release():
                    return {"lane": self.lane.name, "waves": waves}
                continue
            if not self.deliver(chunk):
                break
            waves += 1
        return {"lane": self.lane.name, "waves": waves, "lease_lost": True}

    def take(self) -> Chunk | None:
        """Due retries first, else the list head, up to one wave; None while a short batch lingers.

        From the list it takes whole requests' worth (the rest waits for company, so a stream of
        one-record postbacks still fills its requests), or what there is once the head has waited
        the linger out.
        """
        now = time.time()
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(self.retry_key, "-inf", now, start=0, num=self.wave_size)
            pipe.lrange(self.queue_key, 0, self.wave_size - 1)
            due, raws = cast("tuple[list[bytes], list[bytes]]", pipe.execute())
        if due:
            return [(raw, loads(raw), True) for raw in due]
        if not raws:
            return []
        if len(raws) < self.batch_size:
            age = now - loads(raws[0])["at"]
            if age < self.linger_s and not self.others_waiting():
                time.sleep(min(self.linger_s - age, 0.02))
                return None
        else:
            raws = raws[: len(raws) - len(raws) % self.batch_size]
        return [(raw, loads(raw), False) for raw in raws]

    def others_waiting(self) -> bool:
        """True when drain jobs of other lanes wait for a worker: then send now rather than linger."""
        return any(queue.count for queue in self.rq_queues)

    def release(self) -> bool:
        """Give the lane up when it is empty; False if records arrived meanwhile and we kept it."""
        return self.lane.release(self.client, self.token, self.delivery)

    def deliver(self, chunk: Chunk) -> bool:
        """Send one wave, round by round, and commit where each record ends; False if the lease was lost."""
        ledger, tally = Ledger(), Tally()
        items: list[Item] = []
        for _, env, _ in chunk:
            try:
                items.extend(to_items(env))
            except (KeyError, ValueError, TypeError) as exc:
                ledger.fail(env["id"], Dead(DeadReason.UNTRANSLATABLE, None, f"{type(exc).__name__}: {exc}"))
        for wave_round in plan(self.ctx.watermarks.keep_newest(items), self.delivery, self.width):
            if len(wave_round) == 1:
                results = [self.send(wave_round[0])]
            else:
                results = list(self.ctx.senders.map(self.send, wave_round))
            for sent in results:
                for judgement in sent.judgements:
                    ledger.add(judgement)
                tally.add(sent.tally)
            if any(sent.lease_lost for sent in results):
                log.warning(
                    "lease lost before a send; the next owner delivers again", extra={"lane": self.lane.name}
                )
                return False
        self.commit(chunk, ledger, tally)
        return True

    def send(self, request: BrazeRequest) -> Sent:
        """Send one request of a round (in a sender thread) and what Braze's answers mean for its items.

        Halves of a batch Braze refused are sent here too, one after another: they hold the same
        users, who must not be in two requests at once.
        """
        sent = Sent()
        self.send_into(request, sent)
        return sent

    def send_into(self, request: BrazeRequest, sent: Sent) -> None:
        """Wait for the shared rate limit, check the lease, send; then judge the answer."""
        family = request.items[0].family
        wait_until = self.ctx.limiter.acquire(self.workspace, family)
        if wait_until is not None:
            sent.judgements.append(window_full(request.items, wait_until))
            sent.tally.waits[(family, "window")] += 1
            return
        # Checked right before the send: a worker frozen past its lease must not send records
        # that a new owner now holds (and may already have sent, with newer values after them).
        if not self.confirm():
            sent.lease_lost = True
            return
        client = self.ctx.braze(self.workspace)
        answer: Answer | None = None
        verdict: Verdict
        try:
            answer = client.post(request.endpoint, request.data())
        except requests.RequestException as exc:
            verdict = classify_failure(exc)
            sent.tally.calls[(request.endpoint, type(exc).__name__)] += 1
        else:
            verdict = classify(answer)
            sent.tally.calls[(request.endpoint, str(answer.status))] += 1
        self.ctx.observe(self.workspace, request, answer, verdict)
        judgement = judge(request, verdict, now=time.time(), delivery=self.delivery)
        if judgement.pause_until is not None:
            self.ctx.limiter.pause(self.workspace, family, judgement.pause_until)
            sent.tally.waits[(family, "braze")] += 1
        sent.judgements.append(judgement)
        for half in judgement.resend:
            for sub in pack(half, self.delivery):
                self.send_into(sub, sent)

    def commit(self, chunk: Chunk, ledger: Ledger, tally: Tally) -> None:
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
                self.settle(pipe, chunk, ledger, now)
                for (endpoint, status), count in tally.calls.items():
                    metrics.incr(pipe, "relay_braze_requests", count, endpoint=endpoint, status=status)
                for (family, source), count in tally.waits.items():
                    metrics.incr(pipe, "relay_rate_limited", count, family=family, source=source)
                pipe.execute()
            except redis.WatchError:
                log.warning(
                    "lease changed during commit; the next owner delivers again",
                    extra={"lane": self.lane.name},
                )

    def settle(self, pipe: Any, chunk: Chunk, ledger: Ledger, now: float) -> None:
        """Queue each record's ending (and its metrics and audit events) on the transaction."""
        ttl = self.ctx.settings.audit_ttl_s
        ended: Counter[tuple[str, str]] = Counter()  # (metric, route) -> records
        lags: list[float] = []
        for _, env, _ in chunk:
            end = ending(env, ledger, now=now, delivery=self.delivery)
            consent = Kind(env["kind"]) is Kind.CONSENT
            if end.outcome is Outcome.DEAD_LETTERED:
                assert end.dead is not None
                self.dead_letter(pipe, end.envelope, end.dead)
            elif end.outcome is Outcome.RETRY:
                assert end.later is not None
                pipe.zadd(self.retry_key, {dumps(end.envelope): end.later.due})
                metrics.incr(
                    pipe, "relay_retries", route=env["route"], reason=end.later.why.split(":")[0][:40]
                )
                if consent:
                    audit.note(
                        pipe, end.envelope, AuditEvent.RETRYING, ttl, reason=end.later.why, due=end.later.due
                    )
            elif end.outcome is Outcome.DELIVERED:
                ended[("relay_records_delivered", env["route"])] += 1
                lags.append(now - env["at"])
                if consent:
                    audit.note(pipe, env, AuditEvent.CONFIRMED, ttl)
            else:
                ended[("relay_records_superseded", env["route"])] += 1
                if consent:
                    audit.note(pipe, env, AuditEvent.SUPERSEDED, ttl)
        for (name, route), count in ended.items():
            metrics.incr(pipe, name, count, route=route)
        metrics.observe(pipe, "relay_delivery_lag_seconds", lags, lane=self.lane.name)
        metrics.note_minute(pipe, lags, now)

    def dead_letter(self, pipe: Any, env: Envelope, dead: Dead) -> None:
        """Queue one dead letter (and its audit event) on the transaction, and log it."""
        item = deadletters.entry(env, reason=dead.reason, status=dead.status, message=dead.message)
        deadletters.add(pipe, item, limit=dead_letter_limit(self.ctx.settings, env["route"]))
        if Kind(env["kind"]) is Kind.CONSENT:
            audit.note(
                pipe,
                env,
                AuditEvent.DEAD_LETTERED,
                self.ctx.settings.audit_ttl_s,
                reason=dead.reason,
                status=dead.status,
            )
        log.info(
            "dead-lettered",
            extra={"record": env["id"], "route": env["route"], "reason": dead.reason, "status": dead.status},
        )


class Tally:
    """What one wave cost: Braze requests by (endpoint, status), rate-limit waits by (family, source)."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.waits: Counter[tuple[str, str]] = Counter()

    def add(self, other: Tally) -> None:
        """Count another tally in."""
        self.calls.update(other.calls)
        self.waits.update(other.waits)


@dataclass
class Sent:
    """What one request (and the halves sent after it) came to: judgements in order, cost, lease."""

    judgements: list[Judgement] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    lease_lost: bool = False  # the lease check before a send failed: nothing more may be sent


def drain_lane(lane: str, token: str) -> dict[str, Any]:
    """RQ job: deliver a lane's records for one time slice (only the lease holder does anything)."""
    return Drainer(context.current(), Lane(lane), token).run()
