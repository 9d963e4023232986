"""When to try a record again: exponential backoff with full jitter, bounded by attempts and age.

The one retry layer for delivery failures. A record gets at most `max_attempts` deliveries that
failed with 5xx or no answer, and is dead-lettered once `retry_max_age_s` has passed since its
first failure (with the defaults the age bound, 6 h, comes first); 429s wait for Braze's reset and
do not use up attempts (the age bound still holds).
"""

from __future__ import annotations

import random

from relay.config import Delivery


def backoff(attempt: int, delivery: Delivery, rng: random.Random | None = None) -> float:
    """Seconds to wait after failure number `attempt`: uniform in [c/2, c], c = min(cap, base*2**(n-1))."""
    ceiling = min(delivery.retry_cap_s, delivery.retry_base_s * (2 ** max(attempt - 1, 0)))
    return (rng or random).uniform(ceiling / 2, ceiling)


def exhausted(attempts: int, first_failed: float, now: float, delivery: Delivery) -> bool:
    """True when a record has had all the tries it gets."""
    return attempts >= delivery.max_attempts or now - first_failed >= delivery.retry_max_age_s
