"""Group commit: the one-script writes of concurrent requests in one web process share a round trip.

Under gunicorn's threaded workers (gthread) several requests of one process store their records at
the same moment, and the Redis round trip is the largest part of what one postback costs. Each
request puts its write (one script call) in a queue; the first to find no flush under way leads:
it sends every queued write in one pipeline, gives each writer its own result or error, and hands
the lead to a writer that queued meanwhile. A request still answers only once its own write is in
Redis, and a write Redis refuses (out of memory) fails only its own request: each stays its own
script call, so each is stored whole or not at all. With one thread per process (sync workers),
every write leads and goes alone.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.commands.core import Script

MAX_BATCH = 64  # writes per pipeline


@dataclass
class _Write:
    """One request's script call, and what became of it."""

    script: Script
    keys: Sequence[Any]
    args: Sequence[Any]
    woken: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # this writer flushes the queue (it was first, or the lead was handed to it)
    finished: bool = False
    result: Any = None
    error: BaseException | None = None


class GroupCommit:
    """Runs script calls for the threads of one process, several per round trip when they coincide."""

    def __init__(self, client: redis.Redis, *, wait_s: float) -> None:
        self.client = client
        self.wait_s = wait_s  # longest a writer waits for another's flush (the client's timeouts, twice)
        self._lock = threading.Lock()
        self._queue: list[_Write] = []
        self._leading = False

    def run(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The script's result for these keys and arguments, once it has run; raises what Redis raised."""
        write = _Write(script, keys, args)
        with self._lock:
            self._queue.append(write)
            if not self._leading:
                self._leading = write.lead = True
        if not write.lead and not write.woken.wait(self.wait_s):
            with self._lock:  # nobody took it in time: give it up, unless a flush has just taken it
                abandoned = not write.lead and write in self._queue
                if abandoned:
                    self._queue.remove(write)
            if abandoned:
                raise redis.TimeoutError("no answer from Redis within the write's time")
            write.woken.wait()  # its batch is being sent, or the lead is being handed to it
        if not write.finished:  # first in, or handed the lead: flush what waits, this write first
            self._flush()
        if write.error is not None:
            raise write.error
        return write.result

    def _flush(self) -> None:
        """Send the queued writes (up to MAX_BATCH) in one pipeline; wake them; hand the lead on."""
        with self._lock:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        try:
            self._send(batch)
        except BaseException as exc:
            for write in batch:
                write.error = exc
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._leading = False
                else:
                    successor.lead = True
            for write in batch:
                write.finished = True
                write.woken.set()
            if successor is not None:
                successor.woken.set()

    def _send(self, batch: list[_Write]) -> None:
        """One pipeline of EVALSHAs; a script Redis does not know yet is loaded and that write sent again."""
        pipe = self.client.pipeline(transaction=False)
        for write in batch:
            pipe.evalsha(write.script.sha, len(write.keys), *write.keys, *write.args)
        results = pipe.execute(raise_on_error=False)
        for write, sent in zip(batch, results, strict=True):
            outcome = sent
            if isinstance(sent, redis.exceptions.NoScriptError):
                try:
                    outcome = write.script(keys=write.keys, args=write.args)  # loads it, then runs it
                except redis.RedisError as exc:
                    outcome = exc
            if isinstance(outcome, Exception):
                write.error = outcome
            else:
                write.result = outcome
