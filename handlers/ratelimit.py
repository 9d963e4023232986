"""Braze's rate limits, kept for the relay as a whole: one window per workspace and family in Redis.

Every worker asks the same moving window (the `limits` library, Redis storage) before each call,
so however many workers run, a family never gets more requests than its limit. After a 429, or an
answer saying no requests remain, the family is paused until Braze's X-RateLimit-Reset for all.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import redis
from limits import parse, strategies
from limits.storage import RedisStorage

from relay import pauses, store
from relay.config import Delivery
from relay.modes import RateFamily

SHORT_WAIT_S = 1.0  # waits this short are slept through; longer ones hand the records to the retry set
# A pause read from Redis this recently stands for the next sends of the process (one read fewer per
# request); a pause this process sets is seen at once, one another worker sets within this time.
PAUSE_FRESH_S = 0.02


class Limiter:
    """Shared per-family request windows and 429 pauses."""

    def __init__(self, client: redis.Redis, delivery: Delivery) -> None:
        self.client = client
        storage = RedisStorage(
            "redis://", connection_pool=client.connection_pool, key_prefix=store.RATE_PREFIX
        )
        self.window = strategies.MovingWindowRateLimiter(storage)
        self.items = {
            RateFamily.TRACK: parse(delivery.rate_track),
            RateFamily.USERS: parse(delivery.rate_users),
            RateFamily.CONSENT: parse(delivery.rate_consent),
            RateFamily.RENAME: parse(delivery.rate_rename),
            RateFamily.REMOVE: parse(delivery.rate_remove),
            RateFamily.CATALOG: parse(delivery.rate_catalog),
            RateFamily.DEFAULT: parse(delivery.rate_default),
        }
        self.known: dict[tuple[str, RateFamily], tuple[float, float]] = {}  # -> (paused until, read at)

    def paused_until(self, workspace: str, family: RateFamily) -> float:
        """The time before which nothing may go to this family (0 if not paused)."""
        return pauses.paused_until(self.client, workspace, family)

    def pause(self, workspace: str, family: RateFamily, until: float) -> None:
        """Stop every worker sending to this family until `until` (UNIX seconds)."""
        pauses.pause(self.client, workspace, family, until)
        self.known[(workspace, family)] = (until, time.monotonic())

    def recent_pause(self, workspace: str, family: RateFamily) -> float:
        """`paused_until`, read again from Redis when the last read is older than PAUSE_FRESH_S."""
        until, read_at = self.known.get((workspace, family), (0.0, -PAUSE_FRESH_S))
        now = time.monotonic()
        if now - read_at >= PAUSE_FRESH_S:
            until = self.paused_until(workspace, family)
            self.known[(workspace, family)] = (until, now)
        return until

    def acquire(self, workspace: str, family: RateFamily) -> float | None:
        """Take one request from the family's window: None to send now, or when to try again."""
        item = self.items[family]
        while True:
            now = time.time()
            paused = self.recent_pause(workspace, family)
            if paused > now:
                if paused - now > SHORT_WAIT_S:
                    return paused
                time.sleep(paused - now)
                continue
            if self.window.hit(item, workspace, family):
                return None
            reset = self.window.get_window_stats(item, workspace, family).reset_time
            if reset - now > SHORT_WAIT_S:
                return reset
            time.sleep(max(reset - now, 0.01))

    def observe(self, workspace: str, family: RateFamily, headers: Mapping[str, str]) -> None:
        """Braze's own count: when it says no requests remain, pause until its reset (names in lower case)."""
        remaining, reset = headers.get("x-ratelimit-remaining"), headers.get("x-ratelimit-reset")
        if remaining is not None and reset is not None and remaining.strip() == "0":
            try:
                self.pause(workspace, family, float(reset))
            except ValueError:
                return
