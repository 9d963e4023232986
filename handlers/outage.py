"""Riding out a Redis outage in a worker process: one line when Redis goes away, one when it is back.

Every part of the process that finds Redis gone (the RQ loop, a drain job, the ticker) tells the
process's one `RedisWatch`; it logs the first loss and the return, with how long Redis was away,
and `wait` waits for the return with backoff. RQ logs each failed reconnection (and quits its work
loop with a traceback when a job's bookkeeping fails): `QuietRQ` turns those records into a report
to the watch instead, so an outage is two lines, not a traceback per second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)

GONE = (redis.ConnectionError, redis.TimeoutError)  # what "Redis is away" looks like to a client
FIRST_WAIT_S, LONGEST_WAIT_S = 0.25, 5.0  # reconnection backoff while waiting


class RedisWatch:
    """The process's view of whether Redis is there; thread-safe."""

    def __init__(self, client: redis.Redis, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.clock = clock
        self.down_since: float | None = None
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        """True between a reported loss and the return."""
        return self.down_since is not None

    def lost(self, error: BaseException, where: str) -> None:
        """Redis failed `where`; the first report of an outage logs one line."""
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = self.clock()
        log.warning(
            "redis unavailable: waiting for it; records in flight come back when their lease expires",
            extra={"where": where, "error": type(error).__name__},
        )

    def back(self) -> None:
        """Redis answered; after an outage this logs one line with how long it lasted."""
        with self._lock:
            if self.down_since is None:
                return
            away, self.down_since = self.clock() - self.down_since, None
        log.info("redis available again", extra={"down_s": round(away, 1)})

    def wait(self, stopping: Callable[[], bool] = lambda: False) -> bool:
        """Wait until Redis answers a PING (True), or until `stopping()` says to give up (False)."""
        pause = FIRST_WAIT_S
        while not stopping():
            try:
                self.client.ping()
            except GONE as exc:
                self.lost(exc, "waiting")
                time.sleep(pause)
                pause = min(pause * 2, LONGEST_WAIT_S)
                continue
            self.back()
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
        if isinstance(error, GONE):
            self.watch.lost(error, "rq")
            return False
        if any(text in str(record.msg) for text in self.MESSAGES):
            self.watch.lost(redis.ConnectionError(), "rq")
            return False
        return True
