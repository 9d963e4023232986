"""Storing accepted records: one Redis transaction per request, then waking the lane's drain job.

A 2xx is sent only after the transaction has run, so every record it accepts is in Redis; if
Redis refuses (down, out of memory) nothing of the request is stored and the caller gets a 503.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from receiver.group_commit import GroupCommit
from relay import audit, budgets, deadletters, dedup, metrics, order, redis_health, replicas, store
from relay.config import Settings, dead_letter_limit
from relay.envelope import Envelope, dumps
from relay.lanes import PUSH_CHUNK, Lane, new_token
from relay.modes import BY_KIND, AuditEvent, DeadReason, Kind
from relay.routes import Route

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """What one request brings: its accepted records, serialized for the queue, and the refused ones.

    Records are wrapped and serialized as they are loaded, so a 100,000-row export holds one
    compact string per record rather than every loaded dict at once.
    """

    route: Route
    request_id: str
    shards: int = 1  # track lanes split by user (Delivery.track_shards)
    received: float = field(default_factory=time.time)
    received_ns: int = field(default_factory=time.time_ns)
    payloads: dict[Lane, list[str]] = field(default_factory=dict)  # lane -> serialized records
    # lane -> each record's dedup digest (relay/dedup.py), or None: kept only where one has a digest
    digests: dict[Lane, list[str | None]] = field(default_factory=dict)
    size: int = 0  # bytes of every serialized record (what the route's queued bytes count)
    audited: list[Envelope] = field(default_factory=list)  # consent changes and deletes: the audit trail
    gating: list[Envelope] = field(default_factory=list)  # records later ones wait for (relay/order.py)
    invalid: list[tuple[int, Any, dict[str, Any]]] = field(default_factory=list)
    filtered: int = 0  # inputs the route's transform turned into no record
    probably_truncated: bool = False  # a TD export of exactly TD's row limit: counted in the metrics

    @property
    def accepted(self) -> int:
        """How many records this request stores for delivery."""
        return sum(map(len, self.payloads.values()))

    def add(
        self, index: int, record: dict[str, Any], kind: Kind | None = None, digest: str | None = None
    ) -> None:
        """Take one loaded record (of `kind`, when a transform chose another than the route's), and the
        digest its route's dedup_key gave it (then a repeat within the window is not stored)."""
        env = self.envelope(index, record, kind)
        if digest is not None:
            env["dd"] = 1  # a worker marks its sends, so that a retry never sends it twice (handlers/sent.py)
        kind = kind or self.route.kind
        lane = Lane.of(self.route.workspace, kind, record.get("_id"), self.shards)
        payloads = self.payloads.setdefault(lane, [])
        digests = self.digests.get(lane)
        if digest is not None and digests is None:
            digests = self.digests[lane] = [None] * len(payloads)
        if digests is not None:
            digests.append(digest)
        payload = dumps(env)
        payloads.append(payload)
        self.size += budgets.size_of(payload)
        if kind in audit.AUDITED:
            self.audited.append(env)
        if BY_KIND[kind].gate:
            self.gating.append(env)

    def hold(self, *, deduplicated: bool = True) -> budgets.Hold:
        """What storing the batch adds to its route's queued counts, and the budgets it must fit in.

        Without `deduplicated`, the records of lanes whose repeats are left out in Redis (`dedup`
        routes) are not in it: their script counts the records it keeps.
        """
        route = self.route
        records, size = self.accepted, self.size
        if not deduplicated and route.dedup is not None:
            for lane in self.digests:
                payloads = self.payloads[lane]
                records -= len(payloads)
                size -= sum(map(budgets.size_of, payloads))
        return budgets.Hold(route.workspace, route.name, route.budgets, records, size, self.received)

    def without_repeats(self, client: redis.Redis, hold: budgets.Hold) -> budgets.Hold:
        """The hold less the records Redis remembers as repeats now (a transaction's budget check: a
        repeat changes nothing, so a route at its budget still answers it)."""
        if self.route.dedup is None:
            return hold
        keys = store.keys(self.route.workspace)
        for lane, digests in self.digests.items():
            records, size = dedup.known(client, keys, digests, self.payloads[lane])
            hold = replace(hold, records=hold.records - records, size=hold.size - size)
        return hold

    def rejected(self) -> list[dict[str, Any]]:
        """The records the route skipped as invalid, named by index with their errors (the answer's)."""
        return [{"index": index, "errors": errors} for index, _, errors in self.invalid]

    def counts(self) -> dict[str, int]:
        """What a transformed batch adds to the answer's counts (nothing here)."""
        return {}

    def envelope(self, index: int, record: dict[str, Any], kind: Kind | None = None) -> Envelope:
        """Wrap one loaded record for the queue; the receive time stands in for a missing `time`."""
        if record.get("time") is None:
            record["time"] = self.received
        env: Envelope = {
            "id": f"{self.request_id}.{index}",
            "route": self.route.name,
            "kind": kind or self.route.kind,
            "ws": self.route.workspace,
            "rec": record,
            "t": record["time"],
            "seq": f"{self.received_ns:020d}.{index:06d}",
            "at": self.received,
            "n": 0,
        }
        if self.route.update_existing_only:
            env["uxo"] = True
        return env


@dataclass(frozen=True)
class Claim:
    """An idempotency key taken by this request, and the answer to give its repeats."""

    key: str
    window_s: int
    answer: dict[str, Any]
    also: tuple[str, ...] = ()  # further names of the same identity (receiver/idempotency.py), taken together


def store_batch(
    client: redis.Redis,
    batch: Batch,
    settings: Settings,
    claim: Claim | None = None,
    *,
    group: GroupCommit | None = None,
) -> dict[str, Any] | None:
    """Write the batch's records (and its dead-lettered invalid records) at once, then answer.

    Records that fit one RPUSH with nothing else to keep (the common case) go in one script call;
    everything else (several RPUSHes, dead letters, audit events, order marks, an idempotency key)
    in one MULTI/EXEC. Either way all of it is written, or none.

    With a claim, the idempotency key is written in the same transaction, watched so that of two
    concurrent repeats only one stores anything; the other (and any later repeat) gets back the
    first request's stored answer instead of None. With `group`, the one-script write shares its
    round trip with those of the process's other threads (receiver/group_commit.py).

    With RELAY_REDIS_MIN_REPLICAS, the answer waits for that many replicas to hold the writes
    (relay/replicas.py): NotReplicated, with everything stored and drains woken, when they do not.

    The route's budgets are checked first (relay/budgets.py): OverBudget, with nothing stored, when
    its records leave no room; in the one script at no extra round trip, else read just before the
    transaction (two requests read at once may both pass: the route overshoots by one request).
    """
    token = new_token()
    hold = batch.hold()
    if hold.records:
        hold.alone()
    kept = batch.invalid or batch.audited or batch.gating or batch.filtered or batch.probably_truncated
    plain = claim is None and not kept and len(batch.payloads) == 1
    if plain and hold.records <= PUSH_CHUNK:
        armed = _store_plain(client, batch, settings, token, group, hold=hold)
    else:
        first, armed = _store_together(client, batch, settings, token, claim, hold=hold)
        if first is not None:
            _confirm(client, batch, settings)  # the first request's answer may not be on them yet
            return first
    for lane in armed:
        # The lane had no owner: this request woke it (and the store remembered the lane). If this
        # process dies right here, or Redis refuses the job (full since the store), the lease
        # expires and a worker's ticker re-arms the lane: the records are stored, the answer says so.
        try:
            lane.enqueue_drain(client, token, settings.delivery)
        except redis.RedisError as exc:
            log.warning(
                "records stored, drain job not enqueued: the ticker wakes the lane when its lease expires",
                extra={"lane": lane.name, "error": redis_health.code(exc)},
            )
    _confirm(client, batch, settings)
    return None


def _confirm(client: redis.Redis, batch: Batch, settings: Settings) -> None:
    """Wait for RELAY_REDIS_MIN_REPLICAS replicas (relay/replicas.py); a NotReplicated is counted for
    the route (best effort: Redis may be why) and raised for the edge's 503."""
    try:
        replicas.confirm(client, settings.durability)
    except replicas.NotReplicated:
        try:
            metrics.NOT_REPLICATED.incr(client, batch.route.workspace, route=batch.route.name)
        except redis.RedisError:
            log.warning(
                "not-replicated answer not counted: redis unavailable", extra={"route": batch.route.name}
            )
        raise


def _store_plain(
    client: redis.Redis,
    batch: Batch,
    settings: Settings,
    token: str,
    group: GroupCommit | None,
    *,
    hold: budgets.Hold,
) -> list[Lane]:
    """Records of one lane, fitting one push, nothing else to keep: one script call; lanes armed."""
    ((lane, payloads),) = batch.payloads.items()
    digests = batch.digests.get(lane)
    if digests is not None and batch.route.dedup is not None:
        armed = lane.push_new(
            client,
            payloads,
            digests,
            counter=metrics.ACCEPTED.field(route=batch.route.name),
            duplicates=metrics.DUPLICATES.field(route=batch.route.name),
            window_s=batch.route.dedup.window_s,
            hold=hold,
            token=token,
            delivery=settings.delivery,
            runner=group.run if group is not None else None,
        )
        return [lane] if armed else []
    armed = lane.push(
        client,
        payloads,
        counter=metrics.ACCEPTED.field(route=batch.route.name),
        hold=hold,
        token=token,
        delivery=settings.delivery,
        runner=group.run if group is not None else None,
    )
    return [lane] if armed else []


def _store_together(
    client: redis.Redis,
    batch: Batch,
    settings: Settings,
    token: str,
    claim: Claim | None,
    *,
    hold: budgets.Hold,
) -> tuple[dict[str, Any] | None, list[Lane]]:
    """Everything else in one MULTI/EXEC: (the first answer if this repeats a claim, lanes armed).

    Gating records (relay/order.py) leave their marks in the same transaction, after their users'
    links are read under WATCH: a link added meanwhile makes the transaction start again.
    """
    delivery = settings.delivery
    gating = batch.gating if delivery.order_across_lanes else []
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                names = (claim.key, *claim.also) if claim is not None else ()
                if names:
                    pipe.watch(*names)
                    first = next((found for found in pipe.mget(names) if found is not None), None)
                    if first is not None:
                        pipe.unwatch()
                        return json.loads(first), []
                if hold.records:
                    # After the claim: a repeat gets its first answer, whatever the counts.
                    batch.without_repeats(client, hold).check(client)
                ws = batch.route.workspace
                marks = order.plan_acceptance(client, ws, gating, delivery.watermark_ttl_s, watch=pipe)
                pipe.multi()
                if claim is not None:
                    for name in names:
                        pipe.set(name, json.dumps(claim.answer), ex=claim.window_s)
                if marks is not None:
                    order.accept(pipe, client, marks)
                batch.hold(deduplicated=False).add(pipe)  # a dedup lane's script counts what it keeps
                arming = _queue_writes(pipe, batch, settings=settings, token=token, hold=hold)
                results = pipe.execute()
                taken = results[len(results) - len(arming) :] if arming else []
                return None, [lane for lane, took in zip(arming, taken, strict=True) if took]
            except redis.WatchError:
                continue  # a concurrent repeat stored first: read its answer


def _queue_writes(
    pipe: Any, batch: Batch, *, settings: Settings, token: str, hold: budgets.Hold
) -> list[Lane]:
    """Queue the batch's writes on the pipeline; the last commands try to arm these lanes, in order."""
    for env in batch.audited:
        audit.note(pipe, env, AuditEvent.RECEIVED, settings.audit_ttl_s)
    for lane, payloads in batch.payloads.items():
        digests = batch.digests.get(lane)
        if digests is not None and batch.route.dedup is not None:
            duplicates = metrics.DUPLICATES.field(route=batch.route.name)
            window_s = batch.route.dedup.window_s
            lane.append_new(pipe, payloads, digests, duplicates=duplicates, window_s=window_s, hold=hold)
        else:
            lane.append(pipe, payloads)
    for index, raw, errors in batch.invalid:
        env = batch.envelope(index, {"raw": raw})
        item = deadletters.entry(env, reason=DeadReason.INVALID, message=_flatten(errors))
        deadletters.add(
            pipe,
            item,
            limit=dead_letter_limit(settings, batch.route.name),
            max_bytes=batch.route.budgets.dead_letter_bytes,
            record_bytes=settings.dead_letter_record_bytes,
        )
    route, workspace = batch.route.name, batch.route.workspace  # received = accepted + rejected
    metrics.ACCEPTED.incr(pipe, workspace, batch.accepted, route=route)
    metrics.REJECTED.incr(pipe, workspace, len(batch.invalid), route=route, reason=metrics.Rejection.INVALID)
    metrics.FILTERED.incr(pipe, workspace, batch.filtered, route=route)
    metrics.EXPORTS_TRUNCATED.incr(pipe, workspace, int(batch.probably_truncated), route=route)
    arming = list(batch.payloads)
    for lane in arming:
        lane.take_lease(pipe, token, settings.delivery)
    return arming


def _flatten(errors: dict[str, Any]) -> str:
    """A validation error dict as one line: 'field: message; field: message'."""
    parts = []
    for key, value in errors.items():
        if isinstance(value, dict):
            parts.append(f"{key}.{_flatten(value)}")
        else:
            parts.append(f"{key}: {' '.join(map(str, value)) if isinstance(value, list) else value}")
    return "; ".join(parts)
