"""Metrics kept in Redis, so /metrics is exact however many web and worker processes write them.

Writers add to one Redis hash inside the transactions they already run (no extra round trip);
`/metrics` reads it at scrape time and renders it with prometheus-client, adding gauges read live
(lane depths, retry sets, dead letters, RQ workers per queue, Redis's memory). Field names are JSON
`[metric, {label: value}]`.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from rq import Queue, Worker

from relay import lanes, redis_health, store

KEY = store.METRICS
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)

COUNTERS = {
    "relay_records_received": ("Records received at the edge, accepted or not", ("route",)),
    "relay_records_accepted": ("Records stored for delivery", ("route",)),
    "relay_records_rejected": ("Records refused at the edge", ("route", "reason")),
    "relay_records_delivered": ("Records Braze accepted", ("route",)),
    "relay_records_superseded": ("Records not sent: a newer value was already sent", ("route",)),
    "relay_records_unchanged": (
        "Attribute objects not sent: every value equals the last one delivered (skip_unchanged)",
        ("route",),
    ),
    "relay_attributes_unchanged": (
        "Attribute values left out: equal to the last one delivered for the user (skip_unchanged)",
        ("route",),
    ),
    "relay_records_dead_lettered": ("Records put in the dead-letter store", ("route", "reason")),
    "relay_records_replayed": ("Dead letters put back for delivery", ("route",)),
    "relay_dead_letters_dropped": ("Oldest dead letters dropped: the route held its maximum", ("route",)),
    "relay_inputs_filtered": ("Inputs a route's transform turned into no record", ("route",)),
    "relay_retries": ("Records scheduled for another attempt", ("route", "reason")),
    "relay_braze_requests": ("Requests sent to Braze", ("endpoint", "status")),
    "relay_rate_limited": ("429 answers from Braze, or waits for the shared window", ("family", "source")),
}
HISTOGRAMS = {
    "relay_delivery_lag_seconds": ("From accepted at the edge to delivered to Braze", ("lane",)),
}


def field(name: str, /, **labels: Any) -> str:
    """The hash field of one series (for writers that cannot go through `incr`, such as a script)."""
    return _field(name, labels)


def _field(name: str, labels: dict[str, Any]) -> str:
    return json.dumps(
        [name, {key: str(value) for key, value in sorted(labels.items())}], separators=(",", ":")
    )


def incr(pipe: Any, name: str, value: int = 1, **labels: Any) -> None:
    """Queue `name{labels} += value` on a pipeline (or a client)."""
    if value:
        pipe.hincrby(KEY, _field(name, labels), value)


def _buckets(values: Iterable[float]) -> Counter[str]:
    """How many values fall in each histogram bucket (LAG_BUCKETS' upper bounds, then "+Inf")."""
    return Counter(next((str(b) for b in LAG_BUCKETS if value <= b), "+Inf") for value in values)


def observe(pipe: Any, name: str, values: Iterable[float], **labels: Any) -> None:
    """Queue observations of a histogram: one HINCRBY per bucket touched, plus count and sum."""
    values = list(values)
    if not values:
        return
    for bound, count in _buckets(values).items():
        pipe.hincrby(KEY, _field(name, {**labels, "le": bound}), count)
    pipe.hincrby(KEY, _field(f"{name}_count", labels), len(values))
    pipe.hincrbyfloat(KEY, _field(f"{name}_sum", labels), sum(values))


MINUTES_KEPT_S = 2 * 3600  # per-minute figures live this long: the overview charts the last hour


def note_minute(pipe: Any, lags: Iterable[float], now: float) -> None:
    """Queue the minute's figures of records delivered now with these lags (accepted to delivered)."""
    lags = list(lags)
    if not lags:
        return
    key = store.minute_key(int(now // 60))
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


def recent_minutes(client: redis.Redis, count: int = 60, now: float | None = None) -> list[Minute]:
    """The last `count` minutes, oldest first, the current one last, in one round trip."""
    last = int((time.time() if now is None else now) // 60)
    minutes = list(range(last - count + 1, last + 1))
    pipe = client.pipeline(transaction=False)
    for minute in minutes:
        pipe.hgetall(store.minute_key(minute))
    found = []
    for minute, raw in zip(minutes, pipe.execute(), strict=True):
        fields = {key.decode(): float(value) for key, value in raw.items()}
        delivered = int(fields.get("delivered", 0))
        found.append(
            Minute(
                start=minute * 60,
                delivered=delivered,
                lag_mean=fields.get("lag_sum", 0.0) / delivered if delivered else 0.0,
                lag_p95=_quantile(fields, delivered, 0.95),
            )
        )
    return found


def _quantile(fields: dict[str, float], total: int, share: float) -> float | None:
    """The smallest histogram bound with at least `share` of the observations under it."""
    if not total:
        return None
    seen = 0.0
    for bound in (*LAG_BUCKETS, math.inf):
        seen += fields.get(f"le:{'+Inf' if bound == math.inf else bound}", 0.0)
        if seen >= share * total:
            return bound
    return math.inf


def read(client: redis.Redis) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every stored value, keyed by (metric, sorted labels)."""
    raw = cast("dict[bytes, bytes]", client.hgetall(KEY))
    values = {}
    for field, value in raw.items():
        name, labels = json.loads(field)
        values[(name, tuple(sorted(labels.items())))] = float(value)
    return values


def with_received(values: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[Any, float]:
    """Add relay_records_received per route: the edge counts only accepted and rejected records."""
    received: Counter[str] = Counter()
    for (name, labels), value in values.items():
        if name in ("relay_records_accepted", "relay_records_rejected"):
            received[dict(labels)["route"]] += int(value)
    out = dict(values)
    for route, count in received.items():
        out[("relay_records_received", (("route", route),))] = float(count)
    return out


class RelayCollector(Collector):
    """Renders the Redis-held metrics, plus live gauges, for prometheus-client."""

    def __init__(self, client: redis.Redis, *, memory_warn: float) -> None:
        self.client = client
        self.memory_warn = memory_warn  # RELAY_REDIS_MEMORY_WARN

    def collect(self) -> Iterator[Metric]:
        """Read Redis once per scrape."""
        values = with_received(read(self.client))
        for name, (doc, label_names) in COUNTERS.items():
            family = CounterMetricFamily(name, doc, labels=label_names)
            for (metric, labels), value in sorted(values.items()):
                if metric == name:
                    found = dict(labels)
                    family.add_metric([found.get(label, "") for label in label_names], value)
            yield family
        for name, (doc, label_names) in HISTOGRAMS.items():
            yield self._histogram(name, doc, label_names, values)
        yield from self._gauges()

    @staticmethod
    def _histogram(name: str, doc: str, label_names: tuple[str, ...], values: dict[Any, float]) -> Metric:
        family = HistogramMetricFamily(name, doc, labels=label_names)
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

    def _gauges(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("relay_queue_depth", "Records waiting in a lane", labels=["lane"])
        retry = GaugeMetricFamily(
            "relay_retry_depth", "Records of a lane waiting for a retry", labels=["lane"]
        )
        for state in lanes.states(self.client, lanes.Lane.known(self.client)):
            depth.add_metric([state.lane.name], state.waiting)
            retry.add_metric([state.lane.name], state.retrying)
        yield depth
        yield retry
        yield GaugeMetricFamily(
            "relay_dead_letters", "Dead letters in the store", value=self.client.zcard(store.DEAD_INDEX)
        )
        yield self._workers()
        yield from self._memory()

    def _memory(self) -> Iterator[Metric]:
        """Redis's memory against its maxmemory: a full Redis refuses every write (none without INFO)."""
        memory = redis_health.memory(self.client)
        if memory is None:
            return
        yield GaugeMetricFamily(
            "relay_redis_memory_used_ratio",
            "Memory Redis uses over its maxmemory (0: no maxmemory)",
            value=memory.ratio or 0.0,
        )
        yield GaugeMetricFamily(
            "relay_redis_memory_warning",
            "1 once Redis uses RELAY_REDIS_MEMORY_WARN of its maxmemory (full, it refuses every write)",
            value=float(memory.warning(self.memory_warn) is not None),
        )

    def _workers(self) -> Metric:
        """RQ's registry of live workers per queue: 0 for a queue means its drain jobs wait for nobody."""
        workers = GaugeMetricFamily(
            "relay_workers",
            "RQ workers registered for a queue (one killed without warning counts until its key expires)",
            labels=["queue"],
        )
        for name in (store.QUEUE_CONSENT, store.QUEUE_BULK):
            queue = Queue(name, connection=self.client)
            workers.add_metric([name], len(Worker.all(queue=queue)))
        return workers
