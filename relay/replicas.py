"""Answering 2xx only once replicas hold the write (RELAY_REDIS_MIN_REPLICAS, Redis `WAIT`).

Redis replicates asynchronously: a record the primary has taken is on no replica for a moment, and a
primary lost in that moment loses it, even though the caller heard 2xx. With a replica count set,
the edge asks Redis to `WAIT` for that many replicas to acknowledge the write before it answers; if
they do not within RELAY_REDIS_WAIT_MS, the answer is 503 and says why. The records stay stored on
the primary (they are delivered unless the primary is lost first): docs/operations.md says what a
caller's retry does then.
"""

from __future__ import annotations

import redis

from relay import redis_health, store
from relay.config import Durability


class NotReplicated(Exception):
    """Stored on the primary, but fewer replicas than asked for confirmed it in time."""

    def __init__(self, wanted: int, confirmed: int | None, wait_ms: int, reason: str = "") -> None:
        super().__init__(f"{confirmed} of {wanted} replicas within {wait_ms} ms")
        self.wanted, self.confirmed, self.wait_ms = wanted, confirmed, wait_ms
        self.reason = reason  # why no count came back (Redis unreachable ...); '' when WAIT answered


def confirm(client: redis.Redis, durability: Durability) -> None:
    """Return once `min_replicas` replicas hold every write Redis took before this call (at once when
    none is asked for); raise NotReplicated otherwise.

    `WAIT` waits for the writes of the connection it is sent on, and a request's writes may have
    gone out on another (the group commit's, a transaction's): a small write sent first on the same
    connection, in the same round trip, stands after all of them in the replication stream.
    """
    wanted = durability.min_replicas
    if not wanted:
        return
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.set(store.PROBE, "1", px=redis_health.PROBE_TTL_MS)
            pipe.execute_command("WAIT", wanted, durability.wait_ms)
            _, confirmed = pipe.execute()
    except redis.RedisError as exc:
        raise NotReplicated(wanted, None, durability.wait_ms, redis_health.describe(exc)) from None
    if int(confirmed) < wanted:
        raise NotReplicated(wanted, int(confirmed), durability.wait_ms)
