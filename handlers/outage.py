"""Riding out a Redis outage in a worker process: one line when Redis goes away, one when it is back.

An outage is any Redis error that waiting cures (relay/redis_health.py `passing`): Redis gone, and
Redis answering but refusing for now (full under noeviction, read-only after a failover, loading,
busy with a script). Every part of the process that meets one (the RQ loop, a drain job, the
ticker) tells the process's one `RedisWatch`; it logs the first loss and the return, with how long
Redis was away, and `wait` waits with backoff until Redis takes a write again (PING answers on a
full or read-only Redis). RQ logs each failed reconnection (and quits its work loop with a
traceback when a job's bookkeeping fails): `QuietRQ` turns those records into a report to the
watch instead, so an outage is two lines, not a traceback per second. An error that waiting does
not cure (`refused`) is one line naming its code: the work that met it stops, its records stay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from relay import redis_health

log = logging.getLogger(__name__)

FIRST_WAIT_S, LONGEST_WAIT_S = 0.25, 5.0  # reconnection backoff while waiting
# An error can reach the watch this long after its command was sent (redis-py retries a command
# for seconds): one that comes so soon after Redis was back is checked before it counts.
STALE_S = 15.0


class RedisWatch:
    """The process's view of whether Redis is there; thread-safe."""

    def __init__(self, client: redis.Redis, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.clock = clock
        self.down_since: float | None = None
        self.back_at: float | None = None
        self.reports = 0  # losses reported since the process started (stale and repeated ones too)
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        """True between a reported loss and the return."""
        return self.down_since is not None

    def lost(self, error: redis.RedisError, where: str) -> None:
        """Redis failed `where`; the first report of an outage logs one line, naming why.

        Soon after Redis came back, the report may answer a command sent before: it counts only if
        Redis still refuses a write.
        """
        with self._lock:
            self.reports += 1
            if self.down_since is not None:
                return
            recent = self.back_at is not None and self.clock() - self.back_at < STALE_S
        if recent and self._takes_writes():
            return
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = self.clock()
        log.warning(
            "redis unavailable: waiting for it; records in flight come back when their lease expires",
            extra={"where": where, "error": redis_health.code(error), "reason": redis_health.describe(error)},
        )

    def back(self) -> None:
        """Redis answered; after an outage this logs one line with how long it lasted."""
        with self._lock:
            if self.down_since is None:
                return
            away, self.down_since = self.clock() - self.down_since, None
            self.back_at = self.clock()
        log.info("redis available again", extra={"down_s": round(away, 1)})

    def refused(self, error: redis.RedisError, where: str, **extra: str) -> None:
        """Redis refused the work done `where`, which stopped: an outage if waiting cures it, else a line."""
        if redis_health.passing(error):
            self.lost(error, where)
            return
        log.error(
            "redis refused a command that cannot succeed as sent; the work stopped, its records stay",
            extra={"where": where, "error": redis_health.code(error), **extra},
        )

    def _takes_writes(self) -> bool:
        """True if Redis takes a write now."""
        try:
            redis_health.take_write(self.client)
        except redis.RedisError:
            return False
        return True

    def check(self) -> None:
        """Write once: raise what Redis raised if waiting may cure it, else back() (Redis is there)."""
        try:
            redis_health.take_write(self.client)
        except redis.RedisError as exc:
            if redis_health.passing(exc):
                raise
            # Redis answered, and refused only the probe itself (an ACL, say): that is no outage.
        self.back()

    def wait(self, stopping: Callable[[], bool] = lambda: False) -> bool:
        """Wait until Redis takes a write (True), or until `stopping()` says to give up (False)."""
        pause = FIRST_WAIT_S
        while not stopping():
            try:
                self.check()
            except redis.RedisError as exc:
                self.lost(exc, "waiting")
                time.sleep(pause)
                pause = min(pause * 2, LONGEST_WAIT_S)
                continue
            return True
        return False


class QuietRQ(logging.Filter):
    """On RQ's logger: its lines about a lost Redis become one report to the watch."""

    MESSAGES = ("could not connect to Redis", "Redis connection timeout")

    def __init__(self, watch: RedisWatch) -> None:
        super().__init__()
        self.watch = watch

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop the line) for RQ's reconnection and lost-Redis lines, after telling the watch."""
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, redis.RedisError) and redis_health.passing(error):
            self.watch.lost(error, "rq")
            return False
        if any(text in str(record.msg) for text in self.MESSAGES):
            args = record.args if isinstance(record.args, tuple) else ()
            named = [arg for arg in args if isinstance(arg, redis.RedisError)]  # RQ's `conn_err`
            self.watch.lost(named[0] if named else redis.ConnectionError(), "rq")
            return False
        return True
