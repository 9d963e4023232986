"""Simulator settings fixed at start (`SimConfig`) and faults that tests change while it runs (`Faults`).

`SimConfig` fields: api_key, per_array_limit (75), combined_limit (75, Braze's default; None for a
legacy contract's 75 per array),
max_body_bytes (4 MiB), limits ({family: (requests, window_s)}), seed. The endpoints read the config on
every request, so assigning a field (or `config.limits["track"] = (5, 60.0)`) takes effect at once.

`Faults` fields (all settable from Python or with `Faults.update`, which `POST /_sim/faults` calls):
latency_ms, error_rate, error_status, fail_next, rate_limit_next, rate_limit_reset_s, slow_rate, slow_ms,
and the Python-only hooks reject_item(array_name, obj) -> error type or None, and
reject_request(path, body) -> message or None (the whole request answered 400 with that message,
as Braze does for a request it cannot take at all), and hold_answer(path, body), called once Braze has
taken a request (its state changed, its log entry written) and before the answer leaves: it may block,
to hold that answer back.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_API_KEY = "sandbox-braze-key"
FAMILIES = ("track", "users", "subscription", "rename", "remove", "catalog", "default")
# Braze's documented limits (https://www.braze.com/docs/api/api_limits/): requests per window in
# seconds, per endpoint family.
DEFAULT_LIMITS: dict[str, tuple[int, float]] = {
    "track": (3000, 3.0),
    "users": (20000, 60.0),
    "subscription": (5000, 60.0),
    "rename": (1000, 60.0),  # /users/external_ids/rename
    "remove": (1000, 60.0),  # /users/external_ids/remove
    "catalog": (16000, 60.0),  # the asynchronous catalog item endpoints, shared
    "default": (250000, 3600.0),
}

RejectItem = Callable[[str, dict[str, Any]], "str | None"]
RejectRequest = Callable[[str, dict[str, Any]], "str | None"]
HoldAnswer = Callable[[str, dict[str, Any]], None]


def parse_limit(text: str) -> tuple[int, float]:
    """Parse a limit written as `REQUESTS/SECONDS`, e.g. `3000/3`."""
    count, sep, window = text.partition("/")
    if not sep or int(count) < 1 or float(window) <= 0:
        raise ValueError(f"expected REQUESTS/SECONDS, got {text!r}")
    return int(count), float(window)


@dataclass
class SimConfig:
    """What the simulated Braze account allows; mutable, read on every request."""

    api_key: str = field(default=DEFAULT_API_KEY, repr=False)
    per_array_limit: int = 75
    # https://www.braze.com/docs/api/api_limits/: "Up to 75 total objects combined across attributes,
    # events, and purchases per API request. Customers on legacy rate limits can include up to 75
    # objects per array independently."
    combined_limit: int | None = 75
    max_body_bytes: int = 4 * 1024 * 1024
    limits: dict[str, tuple[int, float]] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        # A caller who overrides one family keeps Braze's figures for the others.
        self.limits = {**DEFAULT_LIMITS, **self.limits}


# Field name -> (type, minimum, maximum) for values accepted by `Faults.update`.
_BOUNDS: dict[str, tuple[type, float, float]] = {
    "latency_ms": (float, 0, 600_000),
    "error_rate": (float, 0, 1),
    "error_status": (int, 400, 599),
    "fail_next": (int, 0, 10**9),
    "rate_limit_next": (int, 0, 10**9),
    "rate_limit_reset_s": (float, 0, 86_400),
    "slow_rate": (float, 0, 1),
    "slow_ms": (float, 0, 600_000),
}


@dataclass
class Faults:
    """Failures to inject; counters and random draws go through one lock so threads share them fairly."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    fail_next: int = 0
    rate_limit_next: int = 0
    rate_limit_reset_s: float = 1.0
    slow_rate: float = 0.0
    slow_ms: float = 0.0
    reject_item: RejectItem | None = None
    reject_request: RejectRequest | None = None
    hold_answer: HoldAnswer | None = None
    seed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def update(self, values: dict[str, Any]) -> None:
        """Set several fault fields at once; raise ValueError naming a bad field before changing any."""
        checked: dict[str, Any] = {}
        for name, value in values.items():
            if name not in _BOUNDS:
                raise ValueError(f"unknown fault field {name!r}; known: {', '.join(_BOUNDS)}")
            kind, low, high = _BOUNDS[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number")
            if kind is int and value != int(value):
                raise ValueError(f"{name} must be an integer")
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}")
            checked[name] = kind(value)
        with self._lock:
            for name, value in checked.items():
                setattr(self, name, value)

    def clear(self) -> None:
        """Put every fault back to its default and re-seed the random draws."""
        with self._lock:
            for f in fields(self):
                if f.init and f.name != "seed":
                    setattr(self, f.name, f.default)
            self._rng = random.Random(self.seed)

    def take(self, counter: str) -> bool:
        """Consume one unit of `fail_next` or `rate_limit_next`; True when one was left."""
        with self._lock:
            left = getattr(self, counter)
            if left <= 0:
                return False
            setattr(self, counter, left - 1)
            return True

    def roll(self, rate: float) -> bool:
        """Draw whether this request is one of the `rate` share; no draw is spent when rate is 0."""
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def as_dict(self) -> dict[str, Any]:
        """The settable fields as JSON, plus whether a reject_item hook is installed."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _BOUNDS}
        data["reject_item"] = self.reject_item is not None
        data["reject_request"] = self.reject_request is not None
        data["hold_answer"] = self.hold_answer is not None
        return data
