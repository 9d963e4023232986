"""Braze's rate limits for the relay as a whole (handlers/ratelimit.py), on the real Redis.

docs/delivery.md, rule "Rate limits": one moving window per workspace and family shared by every
worker; after a 429, or an answer with `X-RateLimit-Remaining: 0`, nothing goes to that family
before `X-RateLimit-Reset`.
"""

from __future__ import annotations

import time
from dataclasses import replace

import redis

from handlers.ratelimit import PAUSE_FRESH_S, SHORT_WAIT_S, Limiter
from relay.config import Delivery
from relay.modes import RateFamily

TIGHT = replace(Delivery(), rate_track="3/10 seconds")


def test_window_is_shared_by_every_limiter(clean_redis: redis.Redis) -> None:
    """Two workers' limiters draw from one window: the fourth request of three allowed must wait."""
    first, second = Limiter(clean_redis, TIGHT), Limiter(clean_redis, TIGHT)
    assert first.acquire("default", RateFamily.TRACK) is None
    assert second.acquire("default", RateFamily.TRACK) is None
    assert first.acquire("default", RateFamily.TRACK) is None
    wait_until = second.acquire("default", RateFamily.TRACK)
    assert wait_until is not None and wait_until > time.time() + SHORT_WAIT_S


def test_families_and_workspaces_have_windows_of_their_own(clean_redis: redis.Redis) -> None:
    """A full track window stops neither the users family nor another workspace's track window."""
    limiter = Limiter(clean_redis, TIGHT)
    for _ in range(3):
        assert limiter.acquire("default", RateFamily.TRACK) is None
    assert limiter.acquire("default", RateFamily.USERS) is None
    assert limiter.acquire("ws-other", RateFamily.TRACK) is None


def test_a_pause_stops_the_family_for_everyone_until_reset(clean_redis: redis.Redis) -> None:
    """After a 429 (`pause`), every limiter's next request waits for the reset, then goes."""
    one, other = Limiter(clean_redis, Delivery()), Limiter(clean_redis, Delivery())
    reset = time.time() + 30
    one.pause("default", RateFamily.TRACK, reset)
    assert other.paused_until("default", RateFamily.TRACK) == reset
    assert other.acquire("default", RateFamily.TRACK) == reset
    assert other.acquire("default", RateFamily.CONSENT) is None, "other families go on"


def test_a_pause_another_worker_sets_is_seen_within_its_freshness(clean_redis: redis.Redis) -> None:
    """A limiter reads the pause at most every PAUSE_FRESH_S: one that had just read "no pause" sees
    another worker's pause once that time has passed; its own pauses it sees at once."""
    one, other = Limiter(clean_redis, Delivery()), Limiter(clean_redis, Delivery())
    assert other.acquire("default", RateFamily.TRACK) is None  # read: no pause
    reset = time.time() + 30
    one.pause("default", RateFamily.TRACK, reset)
    assert one.acquire("default", RateFamily.TRACK) == reset
    time.sleep(PAUSE_FRESH_S)
    assert other.acquire("default", RateFamily.TRACK) == reset


def test_remaining_zero_pauses_until_reset(clean_redis: redis.Redis) -> None:
    """Braze's own count: `X-RateLimit-Remaining: 0` pauses the family until `X-RateLimit-Reset`."""
    limiter = Limiter(clean_redis, Delivery())
    reset = time.time() + 20
    limiter.observe(
        "default", RateFamily.TRACK, {"x-ratelimit-remaining": "5", "x-ratelimit-reset": str(reset)}
    )
    assert limiter.paused_until("default", RateFamily.TRACK) == 0.0
    limiter.observe(
        "default", RateFamily.TRACK, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
    )
    assert limiter.paused_until("default", RateFamily.TRACK) == reset


def test_a_short_pause_is_slept_through(clean_redis: redis.Redis) -> None:
    """A pause shorter than SHORT_WAIT_S is waited out in place rather than sent to the retry set."""
    limiter = Limiter(clean_redis, Delivery())
    limiter.pause("default", RateFamily.TRACK, time.time() + 0.1)
    assert limiter.acquire("default", RateFamily.TRACK) is None
    assert limiter.paused_until("default", RateFamily.TRACK) <= time.time()


def test_a_pause_in_the_past_is_not_kept(clean_redis: redis.Redis) -> None:
    """A reset already passed (a clock behind Braze's) pauses nothing."""
    limiter = Limiter(clean_redis, Delivery())
    limiter.pause("default", RateFamily.TRACK, time.time() - 5)
    assert limiter.paused_until("default", RateFamily.TRACK) == 0.0
