"""Metrics kept in Redis, so /metrics is exact however many web and worker processes write them.

Writers add to their workspace's Redis hash inside the transactions they already run (no extra
round trip), through the typed counters below, which check their labels; `/metrics` reads every
workspace's hash at scrape time, adds them up and renders them with prometheus-client, adding
gauges read live (lane counts, retry sets, dead letters, RQ workers per queue, Redis's memory).
Field names are JSON `[metric, {label: value}]`.
"""

from __future__ import annotations

import bisect
import collections
import functools
import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from rq import Queue, Worker

from relay import budgets, lanes, redis_health, store

if TYPE_CHECKING:  # relay/redises.py reads the settings, which import this module's counters
    from relay.redises import Redises

LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
Series = tuple[str, tuple[tuple[str, str], ...]]  # (metric, sorted labels)


@functools.lru_cache(maxsize=8192)
def _field(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    return json.dumps([name, dict(labels)], separators=(",", ":"))


@dataclass(frozen=True, eq=False)  # one object per counter, hashed as itself: cheap, it is counted per record
class Count:
    """A counter kept in Redis: its name, help text and the labels every series of it carries."""

    name: str
    doc: str
    labels: tuple[str, ...]

    def field(self, **labels: Any) -> str:
        """The hash field of one series; ValueError unless exactly the counter's labels are given."""
        if labels.keys() != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(sorted(labels))}")
        return _field(self.name, tuple(sorted((key, str(value)) for key, value in labels.items())))

    def incr(self, pipe: Any, workspace: str, value: int = 1, **labels: Any) -> None:
        """Queue `name{labels} += value` in the workspace's counts, on a pipeline (or a client)."""
        if value:
            pipe.hincrby(store.keys(workspace).metrics, self.field(**labels), value)


class Rejection(StrEnum):
    """Why the edge refused a record (relay_records_rejected's `reason`)."""

    INVALID = "invalid"  # the record failed validation
    REQUEST_REFUSED = "request_refused"  # valid, but refused with the rest of its request (a 422)


RECEIVED = Count("relay_records_received", "Records received at the edge, accepted or not", ("route",))
ACCEPTED = Count(
    "relay_records_accepted", "Records accepted at the edge: stored for delivery, or repeats", ("route",)
)
DUPLICATES = Count(
    "relay_records_duplicate",
    "Records accepted but not stored: a repeat of one its route remembers (dedup_key)",
    ("route",),
)
EXPORTS_TRUNCATED = Count(
    "relay_exports_probably_truncated",
    "TD exports of exactly 100,000 rows: TD drops the rows past 100,000 without a word",
    ("route",),
)
REJECTED = Count("relay_records_rejected", "Records refused at the edge", ("route", "reason"))
DELIVERED = Count("relay_records_delivered", "Records Braze accepted", ("route",))
SUPERSEDED = Count("relay_records_superseded", "Records not sent: a newer value was already sent", ("route",))
UNCHANGED = Count(
    "relay_records_unchanged",
    "Attribute objects not sent: every value equals the last one delivered (skip_unchanged)",
    ("route",),
)
ATTRIBUTES_UNCHANGED = Count(
    "relay_attributes_unchanged",
    "Attribute values left out: equal to the last one delivered for the user (skip_unchanged)",
    ("route",),
)
DEAD_LETTERED = Count(
    "relay_records_dead_lettered", "Records put in the dead-letter store", ("route", "reason")
)
REPLAYED = Count("relay_records_replayed", "Dead letters put back for delivery", ("route",))
DEAD_DROPPED = Count(
    "relay_dead_letters_dropped", "Oldest dead letters dropped: the route held its maximum", ("route",)
)
DEAD_TRUNCATED = Count(
    "relay_dead_letters_truncated",
    "Dead letters over RELAY_DEAD_LETTER_RECORD_MAX_BYTES: only the start of the record kept, not replayable",
    ("route",),
)
FILTERED = Count("relay_inputs_filtered", "Inputs a route's transform turned into no record", ("route",))
RETRIES = Count("relay_retries", "Records scheduled for another attempt", ("route", "reason"))
BRAZE_REQUESTS = Count("relay_braze_requests", "Requests sent to Braze", ("endpoint", "status"))
RATE_LIMITED = Count(
    "relay_rate_limited", "429 answers from Braze, or waits for the shared window", ("family", "source")
)
ERASED = Count(
    "relay_records_erased",
    "Records not sent: a delete of their user was accepted after them (counted as superseded too)",
    ("route",),
)
ORDER_WAITS = Count(
    "relay_order_waits",
    "Records that waited for an earlier alias, identify or delete of their user in another lane",
    ("lane",),
)
ORDER_GAVE_UP = Count(
    "relay_order_gave_up",
    "Records that went on after waiting RELAY_ORDER_MAX_WAIT_S for an earlier call of their user",
    ("lane",),
)
CONSENT_RESENT = Count(
    "relay_consent_resent",
    "Consent changes sent once more after their user's earlier records (not counted as delivered again)",
    ("route",),
)
BUDGET_REFUSALS = Count(
    "relay_budget_refusals",
    "Requests a route's budget refused (429 or 413; 403 for an export on a route whose key is public)",
    ("route", "budget"),
)
NOT_REPLICATED = Count(
    "relay_requests_not_replicated",
    "Requests answered 503 because fewer replicas than RELAY_REDIS_MIN_REPLICAS confirmed them in time "
    "(their records are stored)",
    ("route",),
)
COUNTERS = (
    RECEIVED,
    ACCEPTED,
    DUPLICATES,
    EXPORTS_TRUNCATED,
    REJECTED,
    DELIVERED,
    SUPERSEDED,
    UNCHANGED,
    ATTRIBUTES_UNCHANGED,
    DEAD_LETTERED,
    REPLAYED,
    DEAD_DROPPED,
    DEAD_TRUNCATED,
    FILTERED,
    RETRIES,
    BRAZE_REQUESTS,
    RATE_LIMITED,
    ERASED,
    ORDER_WAITS,
    ORDER_GAVE_UP,
    CONSENT_RESENT,
    BUDGET_REFUSALS,
    NOT_REPLICATED,
)


@dataclass(frozen=True)
class Histogram:
    """A histogram kept in Redis, with LAG_BUCKETS' bounds."""

    name: str
    doc: str
    labels: tuple[str, ...]

    def observe(self, pipe: Any, workspace: str, values: Iterable[float], **labels: Any) -> None:
        """Queue observations: one HINCRBY per bucket touched, plus count and sum."""
        values = list(values)
        if not values:
            return
        if labels.keys() != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(sorted(labels))}")
        key = store.keys(workspace).metrics
        plain = tuple(sorted((name, str(value)) for name, value in labels.items()))
        for bound, count in _buckets(values).items():
            pipe.hincrby(key, _field(self.name, tuple(sorted((*plain, ("le", bound))))), count)
        pipe.hincrby(key, _field(f"{self.name}_count", plain), len(values))
        pipe.hincrbyfloat(key, _field(f"{self.name}_sum", plain), sum(values))


DELIVERY_LAG = Histogram(
    "relay_delivery_lag_seconds", "From accepted at the edge to delivered to Braze", ("lane",)
)
ORDER_WAIT = Histogram(
    "relay_order_wait_seconds",
    "How long records waited for an earlier call of their user in another lane, when they went on",
    ("lane",),
)
HISTOGRAMS = (DELIVERY_LAG, ORDER_WAIT)


BUCKET_NAMES = (*(str(bound) for bound in LAG_BUCKETS), "+Inf")


def _buckets(values: Iterable[float]) -> collections.Counter[str]:
    """How many values fall in each histogram bucket (LAG_BUCKETS' upper bounds, then "+Inf")."""
    return collections.Counter(BUCKET_NAMES[bisect.bisect_left(LAG_BUCKETS, value)] for value in values)


MINUTES_KEPT_S = 2 * 3600  # per-minute figures live this long: the overview charts the last hour


def note_minute(pipe: Any, workspace: str, lags: Iterable[float], now: float) -> None:
    """Queue the minute's figures of records delivered now with these lags (accepted to delivered)."""
    lags = list(lags)
    if not lags:
        return
    key = store.keys(workspace).minute(int(now // 60))
    pipe.hincrby(key, "delivered", len(lags))
    pipe.hincrbyfloat(key, "lag_sum", sum(lags))
    for bound, count in _buckets(lags).items():
        pipe.hincrby(key, f"le:{bound}", count)
    pipe.expire(key, MINUTES_KEPT_S)


@dataclass(frozen=True)
class Minute:
    """One minute's deliveries: how many, their mean lag and the bound under which 95% of them fell."""

    start: int  # UNIX seconds
    delivered: int
    lag_mean: float  # seconds; 0 when nothing was delivered
    lag_p95: float | None  # seconds (a histogram bound: LAG_BUCKETS, or inf); None when nothing was delivered


def recent_minutes(
    client: redis.Redis, workspaces: Iterable[str], count: int = 60, now: float | None = None
) -> list[Minute]:
    """The last `count` minutes of these workspaces together, oldest first, the current one last."""
    return recent_minutes_across([(client, list(workspaces))], count, now)


def recent_minutes_across(
    parts: list[tuple[redis.Redis, list[str]]], count: int = 60, now: float | None = None
) -> list[Minute]:
    """`recent_minutes` of the workspaces of several Redis servers (each with its client), together."""
    last = int((time.time() if now is None else now) // 60)
    minutes = list(range(last - count + 1, last + 1))
    fields: list[collections.defaultdict[str, float]] = [collections.defaultdict(float) for _ in minutes]
    for client, names in parts:
        pipe = client.pipeline(transaction=False)
        for minute in minutes:
            for workspace in names:
                pipe.hgetall(store.keys(workspace).minute(minute))
        raws = pipe.execute()
        for i, added in enumerate(fields):
            for raw in raws[i * len(names) : (i + 1) * len(names)]:
                for key, value in raw.items():
                    added[key.decode()] += float(value)
    found = []
    for minute, added in zip(minutes, fields, strict=True):
        delivered = int(added.get("delivered", 0))
        found.append(
            Minute(
                start=minute * 60,
                delivered=delivered,
                lag_mean=added.get("lag_sum", 0.0) / delivered if delivered else 0.0,
                lag_p95=_quantile(added, delivered, 0.95),
            )
        )
    return found


def _quantile(fields: Mapping[str, float], total: int, share: float) -> float | None:
    """The smallest histogram bound with at least `share` of the observations under it."""
    if not total:
        return None
    seen = 0.0
    for bound in (*LAG_BUCKETS, math.inf):
        seen += fields.get(f"le:{'+Inf' if bound == math.inf else bound}", 0.0)
        if seen >= share * total:
            return bound
    return math.inf


def read(client: redis.Redis, workspaces: Iterable[str]) -> dict[Series, float]:
    """Every stored value of these workspaces, added up, keyed by (metric, sorted labels)."""
    names = list(workspaces)
    with client.pipeline(transaction=False) as pipe:
        for workspace in names:
            pipe.hgetall(store.keys(workspace).metrics)
        raws = cast("list[dict[bytes, bytes]]", pipe.execute())
    values: collections.defaultdict[Series, float] = collections.defaultdict(float)
    for raw in raws:
        for field, value in raw.items():
            name, labels = json.loads(field)
            values[(name, tuple(sorted(labels.items())))] += float(value)
    return dict(values)


def with_received(values: dict[Series, float]) -> dict[Series, float]:
    """Add relay_records_received per route: the edge counts only accepted and rejected records."""
    received: collections.Counter[str] = collections.Counter()
    for (name, labels), value in values.items():
        if name in (ACCEPTED.name, REJECTED.name):
            received[dict(labels)["route"]] += int(value)
    out = dict(values)
    for route, count in received.items():
        out[(RECEIVED.name, (("route", route),))] = float(count)
    return out


# The `held` hash's counts as gauges: (what, metric, help).
HELD = (
    ("records", "relay_route_queued_records", "Records of a route accepted and not yet ended"),
    ("bytes", "relay_route_queued_bytes", "Bytes of those records, as stored"),
    ("dead_bytes", "relay_route_dead_letter_bytes", "Bytes of a route's dead letters"),
)


@dataclass
class _Scraped:
    """What one Redis holds for /metrics: its workspaces' counts, lanes, dead letters, budgets, workers."""

    name: str
    values: dict[Series, float]
    lanes: list[lanes.LaneState]
    dead: int
    held: dict[tuple[str, str], int]
    workers: dict[str, int]  # RQ workers registered per queue
    memory: redis_health.Memory | None


class RelayCollector(Collector):
    """Renders the Redis-held metrics of every workspace, plus live gauges, for prometheus-client.

    Counts are added up over every Redis the workspaces live on (relay/redises.py); gauges of a Redis
    itself (its memory, the workers registered on it, whether it answers) carry its name as `redis`.
    A Redis that does not answer leaves out its workspaces' series (`relay_redis_up` 0); when none
    answers, the scrape fails as a request meeting Redis down does.
    """

    def __init__(self, redises: Redises, *, memory_warn: float = 0.8) -> None:
        self.redises = redises
        self.memory_warn = memory_warn  # RELAY_REDIS_MEMORY_WARN

    def collect(self) -> Iterator[Metric]:
        """Read each Redis once per scrape."""
        scraped: list[_Scraped] = []
        up = GaugeMetricFamily(
            "relay_redis_up", "1 when a Redis of the relay answered this scrape", labels=["redis"]
        )
        failed: redis.RedisError | None = None
        for server, client in self.redises:
            try:
                scraped.append(self._scrape(server.name, client, server.workspaces))
            except redis.RedisError as exc:
                failed = exc
                up.add_metric([server.name], 0.0)
            else:
                up.add_metric([server.name], 1.0)
        if not scraped and failed is not None:
            raise failed
        values = with_received(_sum(item.values for item in scraped))
        for counter in COUNTERS:
            family = CounterMetricFamily(counter.name, counter.doc, labels=counter.labels)
            for (metric, labels), value in sorted(values.items()):
                if metric == counter.name:
                    found = dict(labels)
                    family.add_metric([found.get(label, "") for label in counter.labels], value)
            yield family
        for histogram in HISTOGRAMS:
            yield self._histogram(histogram, values)
        yield from self._gauges(scraped)
        yield up

    @staticmethod
    def _scrape(name: str, client: redis.Redis, configured: Iterable[str]) -> _Scraped:
        """Everything /metrics reads from one Redis, for the workspaces it holds (and those it remembers)."""
        names = store.workspaces(client, configured)
        with client.pipeline(transaction=False) as pipe:
            for workspace in names:
                pipe.zcard(store.keys(workspace).dead_index)
            dead = sum(pipe.execute())
        workers = {queue: len(Worker.all(queue=Queue(queue, connection=client))) for queue in store.RQ_QUEUES}
        return _Scraped(
            name=name,
            values=read(client, names),
            lanes=lanes.states(client, lanes.Lane.in_workspaces(client, names)),
            dead=dead,
            held=budgets.held(client, names),
            workers=workers,
            memory=redis_health.memory(client),
        )

    @staticmethod
    def _histogram(histogram: Histogram, values: dict[Series, float]) -> Metric:
        name, label_names = histogram.name, histogram.labels
        family = HistogramMetricFamily(name, histogram.doc, labels=label_names)
        series: dict[tuple[str, ...], dict[str, float]] = {}
        sums: dict[tuple[str, ...], float] = {}
        for (metric, labels), value in values.items():
            found = dict(labels)
            key = tuple(found.get(label, "") for label in label_names)
            if metric == name:
                series.setdefault(key, {})[found["le"]] = value
            elif metric == f"{name}_sum":
                sums[key] = value
        for key, counts in sorted(series.items()):
            cumulative, buckets = 0.0, []
            for bound in [*map(str, LAG_BUCKETS), "+Inf"]:
                cumulative += counts.get(bound, 0.0)
                buckets.append((bound, cumulative))
            family.add_metric(list(key), buckets, sums.get(key, 0.0))
        return family

    def _gauges(self, scraped: list[_Scraped]) -> Iterator[Metric]:
        waiting = GaugeMetricFamily("relay_queue_depth", "Records waiting in a lane", labels=["lane"])
        retry = GaugeMetricFamily(
            "relay_retry_depth", "Records of a lane waiting for a retry", labels=["lane"]
        )
        for state in (state for item in scraped for state in item.lanes):
            waiting.add_metric([state.lane.name], state.waiting)
            retry.add_metric([state.lane.name], state.retrying)
        yield waiting
        yield retry
        total = sum(item.dead for item in scraped)
        yield GaugeMetricFamily("relay_dead_letters", "Dead letters in the store", value=total)
        yield from self._held(scraped)
        yield self._workers(scraped)
        yield from self._memory(scraped)

    def _memory(self, scraped: list[_Scraped]) -> Iterator[Metric]:
        """Each Redis's memory against its maxmemory: a full Redis refuses every write (none without INFO)."""
        ratio = GaugeMetricFamily(
            "relay_redis_memory_used_ratio",
            "Memory Redis uses over its maxmemory (0: no maxmemory)",
            labels=["redis"],
        )
        warning = GaugeMetricFamily(
            "relay_redis_memory_warning",
            "1 once Redis uses RELAY_REDIS_MEMORY_WARN of its maxmemory (full, it refuses every write)",
            labels=["redis"],
        )
        measured = [item for item in scraped if item.memory is not None]
        for item in measured:
            assert item.memory is not None
            ratio.add_metric([item.name], item.memory.ratio or 0.0)
            warning.add_metric([item.name], float(item.memory.warning(self.memory_warn) is not None))
        if measured:
            yield ratio
            yield warning

    @staticmethod
    def _held(scraped: list[_Scraped]) -> Iterator[Metric]:
        """What each route holds against its budgets (relay/budgets.py)."""
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        for item in scraped:
            counts.update(item.held)
        for what, name, doc in HELD:
            family = GaugeMetricFamily(name, doc, labels=["route"])
            for (route, found), value in sorted(counts.items()):
                if found == what:
                    family.add_metric([route], max(value, 0))  # below 0 only until a workspace is idle
            yield family

    @staticmethod
    def _workers(scraped: list[_Scraped]) -> Metric:
        """RQ's registry of live workers per queue: 0 for a queue means its drain jobs wait for nobody."""
        workers = GaugeMetricFamily(
            "relay_workers",
            "RQ workers registered for a queue of a Redis (one killed without warning counts until its "
            "key expires)",
            labels=["queue", "redis"],
        )
        for item in scraped:
            for queue, count in item.workers.items():
                workers.add_metric([queue, item.name], count)
        return workers


def _sum(parts: Iterable[dict[Series, float]]) -> dict[Series, float]:
    """Series of several Redis servers, added up."""
    total: collections.defaultdict[Series, float] = collections.defaultdict(float)
    for part in parts:
        for series, value in part.items():
            total[series] += value
    return dict(total)
