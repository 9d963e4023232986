"""Backoff and exhaustion (handlers/retry.py): docs/delivery.md, rule "Attempts"."""

from __future__ import annotations

import random

import pytest

from handlers.retry import backoff, exhausted
from relay.config import Delivery

DELIVERY = Delivery()  # the defaults docs/delivery.md states: base 1 s, cap 600 s, 100 attempts, 6 h


@pytest.mark.parametrize(
    ("attempt", "step"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 512.0), (11, 600.0), (40, 600.0)]
)
def test_each_wait_is_between_half_and_all_of_its_step(attempt: int, step: float) -> None:
    """Rule "waits of about 1, 2, 4, ... seconds up to RELAY_RETRY_CAP_S (600 s)", each drawn "between
    half and all of its step"."""
    rng = random.Random(attempt)
    waits = [backoff(attempt, DELIVERY, rng) for _ in range(200)]
    assert step / 2 <= min(waits) and max(waits) <= step
    assert max(waits) - min(waits) > step / 4, "jitter spreads the retries of many records"


def test_first_ten_waits_take_9_to_17_minutes() -> None:
    """Rule "the first ten take 8.5 to 17 minutes in all" (docs/delivery.md's arithmetic, both bounds)."""
    lowest = sum(min(600.0, 2.0 ** (n - 1)) / 2 for n in range(1, 11))
    highest = sum(min(600.0, 2.0 ** (n - 1)) for n in range(1, 11))
    assert (round(lowest / 60, 1), round(highest / 60)) == (8.5, 17)
    rng = random.Random(3)
    total = sum(backoff(n, DELIVERY, rng) for n in range(1, 11))
    assert lowest <= total <= highest


def test_a_pinned_rng_gives_the_same_waits() -> None:
    """Jitter lives in one function that takes its random source, so a test can pin it."""
    assert backoff(5, DELIVERY, random.Random(42)) == backoff(5, DELIVERY, random.Random(42))


def test_exhausted_by_attempts() -> None:
    """Rule "at most RELAY_MAX_ATTEMPTS (100) deliveries that fail with 5xx or no answer"."""
    assert not exhausted(99, first_failed=1000.0, now=1001.0, delivery=DELIVERY)
    assert exhausted(100, first_failed=1000.0, now=1001.0, delivery=DELIVERY)


def test_exhausted_by_age() -> None:
    """Rule "dead-lettered once RELAY_RETRY_MAX_AGE_S (6 h) has passed since its first failure"."""
    six_hours = 6 * 3600.0
    assert not exhausted(1, first_failed=0.0, now=six_hours - 1, delivery=DELIVERY)
    assert exhausted(1, first_failed=0.0, now=six_hours, delivery=DELIVERY)


def test_with_the_defaults_the_age_bound_comes_first() -> None:
    """Rule "With the defaults a record is retried for 6 hours": its attempts cannot run out sooner.

    Even with every wait at its shortest (half its step), the waits between the allowed attempts
    add up to more than the age bound, so an outage of up to 6 h is ridden out.
    """
    waits = DELIVERY.max_attempts - 1
    shortest = sum(
        min(DELIVERY.retry_cap_s, DELIVERY.retry_base_s * 2.0 ** (n - 1)) / 2 for n in range(1, waits + 1)
    )
    assert shortest > DELIVERY.retry_max_age_s
