"""What the relay's Redis says about itself: whether waiting helps after an error, whether it takes
writes now, and how full it is.

Redis refuses for a while in more ways than a lost connection: full under `noeviction` (OOM), a
replica after a failover (READONLY), loading its dataset after a restart (LOADING), running a long
script (BUSY), and the rest of `REFUSING`. Waiting helps with each: the workers ride them out as an
outage and the web answers 503. Any other error is a command that cannot succeed as sent (WRONGTYPE,
a script error, NOSCRIPT until the script is loaded again): waiting does not help, the work that met
it stops and its records stay where they are. PING answers on a full or read-only Redis, so whether
Redis takes writes is asked with a write (`take_write`).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from relay import store

AWAY = (redis.ConnectionError, redis.TimeoutError)  # no answer (LOADING is a ConnectionError in redis-py)
# Redis's error codes for "not now", with words for callers and operators.
REFUSING = {
    "OOM": "out of memory (maxmemory reached)",
    "READONLY": "read-only (a replica, as after a failover)",
    "LOADING": "loading its dataset",
    "BUSY": "busy running a script",
    "MASTERDOWN": "a replica that lost its master",
    "UNBLOCKED": "changing role (a failover woke its blocked clients)",
    "MISCONF": "refusing writes after a failed snapshot",
    "NOREPLICAS": "short of the replicas it must write to",
    "TRYAGAIN": "moving keys between shards",
    "CLUSTERDOWN": "a cluster that is down",
}
PROBE_TTL_MS = 10_000
PIPELINE_NOTE = " of pipeline caused error: "  # redis-py's prefix to an error met inside a pipeline


def code(exc: redis.RedisError) -> str:
    """The error's Redis code ('OOM', 'WRONGTYPE', ...), or its class name when Redis sent none.

    Only the code: an error's text may hold the address of the server or, inside a pipeline, the
    command with its keys and values, which must not reach a log.
    """
    if isinstance(exc, AWAY) and not exc.status_code:
        return type(exc).__name__
    text = str(exc.args[0]) if exc.args else ""
    text = text.partition(PIPELINE_NOTE)[2] or text
    found = exc.status_code or _code_word(text)  # redis-py strips the codes it knows from the text
    if found == "ERR":  # a script's error: Redis 6 wraps the code of the call that failed ("...: -OOM ...")
        found = _code_word(text.partition(": -")[2]) or found
    return found or type(exc).__name__


def _code_word(text: str) -> str:
    """The first word of an error's text if it is a code (capitals only), else ''."""
    word = text.split(" ", 1)[0]
    return word if word.isalpha() and word.isupper() else ""


def passing(exc: redis.RedisError) -> bool:
    """True when waiting helps: Redis is away, or refuses for now (`REFUSING`)."""
    return isinstance(exc, AWAY) or code(exc) in REFUSING


def describe(exc: redis.RedisError) -> str:
    """What the error says about Redis, in words (no address, key or value)."""
    if isinstance(exc, AWAY) and code(exc) not in REFUSING:
        return "unreachable"
    return REFUSING.get(code(exc), f"refusing a command ({code(exc)})")


def take_write(client: redis.Redis) -> None:
    """Raise what Redis raises for a write now, if anything: one small SET that expires by itself."""
    client.set(store.PROBE, "1", px=PROBE_TTL_MS)


@dataclass(frozen=True)
class Memory:
    """Redis's memory as INFO gives it: bytes used, and its `maxmemory` (0: no limit)."""

    used: int
    limit: int

    @property
    def ratio(self) -> float | None:
        """Used over maxmemory; None without a limit."""
        return self.used / self.limit if self.limit else None

    def warning(self, warn_at: float) -> str | None:
        """A sentence for operators once used memory reaches `warn_at` of maxmemory; None below."""
        if self.ratio is None or self.ratio < warn_at:
            return None
        return (
            f"Redis uses {self.ratio:.0%} of its maxmemory (warning from {warn_at:.0%}, "
            "RELAY_REDIS_MEMORY_WARN): when it is full every write is refused (the web answers 503, "
            "workers wait); raise maxmemory or free memory"
        )


def memory(client: redis.Redis) -> Memory | None:
    """Redis's memory use, or None where INFO is not allowed (some managed services)."""
    try:
        info = client.info("memory")
    except redis.ResponseError:
        return None
    return Memory(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)))
