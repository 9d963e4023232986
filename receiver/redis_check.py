"""The web's own check of its Redis (relay/store.py `check_server`), made whenever Redis first answers.

gunicorn's master checks Redis at start and stops the web with one line if Redis would evict
records; a Redis that was down at that moment, or the one that answers after an outage (a managed
failover may bring another), is checked here: by each web process before it stores anything, after
it started or lost Redis. Until a check passes nothing is stored and writes answer 503, so a 2xx
never means "stored in a Redis that may drop it". The check costs one INFO and one CONFIG GET per
process and outage; after it, one attribute read per request.
"""

from __future__ import annotations

import logging
import threading

import redis

from relay import store
from relay.errors import ConfigError

log = logging.getLogger(__name__)


class Unfit(Exception):
    """Redis answers but may drop records (its eviction policy): the reason, as `check` says it."""


class RedisCheck:
    """Whether this process's Redis has passed `check_server` since the process started or lost it."""

    def __init__(self, client: redis.Redis, *, allow_eviction: bool, enabled: bool = True) -> None:
        self.client, self.allow_eviction, self.enabled = client, allow_eviction, enabled
        self.passed = not enabled  # the embedded Redis (sandbox) is checked by the workers that run it
        self._lock = threading.Lock()
        self._said: str | None = None  # the refusal last logged (one line per reason, not per request)

    def ensure(self) -> None:
        """Return once Redis is fit to keep records; raise Unfit, or the Redis error the check met."""
        if self.passed:
            return
        with self._lock:
            if self.passed:
                return
            try:
                # Its notes (no persistence, what could not be checked) are the master's and the
                # workers' to say, once: each process of the web saying them again adds nothing.
                store.check_server(self.client, allow_eviction=self.allow_eviction)
            except ConfigError as exc:
                if str(exc) != self._said:
                    log.critical("nothing is stored until Redis is fixed: %s", exc)
                    self._said = str(exc)
                raise Unfit(str(exc)) from None
            self.passed, self._said = True, None

    def lost(self) -> None:
        """Redis went away: check it again before the next store (it may come back as another Redis)."""
        if self.enabled:
            self.passed = False
