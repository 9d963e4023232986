"""Per-family rate limiting in fixed windows, and the request log tests read to check a client's pacing."""

from __future__ import annotations

import math
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from braze_sim.validate import ARRAYS


@dataclass(frozen=True)
class Quota:
    """What the X-RateLimit-* headers of one answer say."""

    allowed: bool
    limit: int
    remaining: int
    reset: int

    def headers(self) -> dict[str, str]:
        """The three X-RateLimit-* headers."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


class RateLimiter:
    """Fixed windows aligned to epoch multiples of the window length, one counter per family."""

    def __init__(self, limits: dict[str, tuple[int, float]]) -> None:
        # The dict is shared with SimConfig, so a test that changes a limit changes it here too.
        self._limits = limits
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    def acquire(self, family: str, now: float) -> Quota:
        """Count one request against the family's window unless the window is full."""
        return self._quota(family, now, spend=True)

    def peek(self, family: str, now: float) -> Quota:
        """The family's quota without spending any (for answers that never reach the limiter)."""
        return self._quota(family, now, spend=False)

    def reset(self) -> None:
        """Start every family with an empty window."""
        with self._lock:
            self._windows.clear()

    def _quota(self, family: str, now: float, *, spend: bool) -> Quota:
        limit, window = self._limits[family]
        start = math.floor(now / window) * window
        with self._lock:
            began, used = self._windows.get(family, (start, 0))
            if began != start:
                used = 0
            allowed = used < limit
            if spend and allowed:
                used += 1
            self._windows[family] = (start, used)
        return Quota(allowed, limit, max(limit - used, 0), math.ceil(start + window))


class RequestLog:
    """Every request the simulator answered, in arrival order, with its body and answer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []

    def append(self, entry: dict[str, Any]) -> int:
        """Store an entry (index added) and return its index."""
        with self._lock:
            index = len(self._entries)
            entry["index"] = index
            self._entries.append(entry)
            return index

    def entries(self, since: int = 0) -> list[dict[str, Any]]:
        """A copy of the entries from index `since` on."""
        with self._lock:
            return list(self._entries[since:])

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()

    def max_accepted_in_window(self, family: str, seconds: float) -> int:
        """Most requests of a family that passed the rate limiter within any sliding window of `seconds`."""
        times = sorted(e["time"] for e in self.entries() if e["family"] == family and e["counted"])
        best, first = 0, 0
        for last, arrived in enumerate(times):
            while arrived - times[first] >= seconds:
                first += 1
            best = max(best, last - first + 1)
        return best

    def stats(self) -> dict[str, Any]:
        """Requests per path and status, 429s per family, and track items received and processed."""
        by_path: dict[str, Counter[str]] = defaultdict(Counter)
        limited: Counter[str] = Counter()
        received: Counter[str] = Counter()
        processed: Counter[str] = Counter()
        entries = self.entries()
        for entry in entries:
            by_path[entry["path"]][str(entry["status"])] += 1
            if entry["status"] == 429:
                limited[entry["family"]] += 1
            if entry["path"] != "/users/track":
                continue
            received.update({name: entry["counts"].get(name, 0) for name in ARRAYS})
            answer = entry.get("response") or {}
            processed.update({name: answer.get(f"{name}_processed", 0) for name in ARRAYS})
        return {
            "requests": len(entries),
            "by_path": {path: dict(statuses) for path, statuses in by_path.items()},
            "rate_limited": dict(limited),
            "items_received": {name: received[name] for name in ARRAYS},
            "items_processed": {name: processed[name] for name in ARRAYS},
        }
