"""Settings read once from the environment at start (environs); docs/configuration.md lists them."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from environs import Env, EnvError

from relay.budgets import Budgets
from relay.connection import SentinelTarget, Tls, parse_sentinels
from relay.errors import ConfigError
from relay.modes import SENSITIVE
from relay.routes import Route, Workspace, load_routes
from relay.secrets import Secret, split_secrets
from relay.signing import SignatureScheme

SANDBOX_BRAZE_URL = "http://127.0.0.1:9100"
SANDBOX_BRAZE_KEY = "sandbox-braze-key"  # the bundled simulator's key; not a secret
DEFAULT_WORKSPACE = "default"
# A Standard Webhooks timestamp is accepted from 5 minutes before now to 5 minutes after: one
# signed request can be replayed for 10 minutes, so its duplicate identity must be kept that long.
SIGNATURE_SPAN_S = 600


@dataclass(frozen=True)
class Limits:
    """Request size and shape limits at the edge (bytes and counts)."""

    postback_bytes: int = 1024 * 1024
    ingest_bytes: int = 5_000_000
    export_bytes: int = 64_000_000
    webhook_bytes: int = 1024 * 1024
    ingest_records: int = 500
    export_rows: int = 100_000
    webhook_records: int = 500
    record_fields: int = 500  # fields in one record (after pre-formatted fields are parsed)
    record_depth: int = 16  # nesting of objects and arrays inside one record


@dataclass(frozen=True)
class Delivery:
    """How workers batch, pace and retry deliveries to Braze."""

    # Braze's default today: 75 objects per /users/track request across its three arrays. Legacy
    # contracts take 75 per array instead: BRAZE_TRACK_COMBINED_LIMIT=0 (no combined limit).
    track_per_array: int = 75
    track_combined: int | None = 75
    batch_limit: int = 50  # alias, identify, delete, subscription
    track_shards: int = 2  # track lanes split by user, drained in parallel
    inflight: int = 192  # Braze requests a drain job keeps in flight at once (docs/delivery.md)
    max_body_bytes: int = 3_900_000  # Braze refuses 4 MB; keep a margin for headers
    linger_s: float = 0.2
    consent_linger_s: float = 0.05  # consent is latency first: batches form while a request is in flight
    lease_s: float = 30.0
    slice_s: float = 1.0
    connect_timeout_s: float = 3.05
    read_timeout_s: float = 10.0
    # 100 attempts take at least 7.5 h of backoff, so the 6 h age bound below ends retries first:
    # a Braze outage of hours is ridden out (50 would run out after 3.4 to 6.8 h, by the jitter).
    max_attempts: int = 100
    retry_base_s: float = 1.0
    retry_cap_s: float = 600.0
    retry_max_age_s: float = 6 * 3600.0
    rate_track: str = "3000/3 seconds"
    rate_users: str = "20000/minute"
    rate_consent: str = "5000/minute"
    rate_rename: str = "1000/minute"
    rate_remove: str = "1000/minute"
    rate_catalog: str = "16000/minute"
    rate_default: str = "250000/hour"
    watermark_ttl_s: int = 72 * 3600  # newest-value watermarks, and the marks that order across lanes
    order_across_lanes: bool = True  # relay/order.py; off only to measure what it costs
    order_max_wait_s: float = 6 * 3600.0 + 600  # a record waits on another at most this long, then goes on
    unchanged_ttl_s: int = 30 * 86400  # skip_unchanged: how long a delivered value is remembered

    @property
    def longest_job_s(self) -> float:
        """How long a drain job keeps its lane past its slice while no other drain job waits."""
        return 10 * self.slice_s

    @property
    def lease_ms(self) -> int:
        """The lane lease's expiry, as Redis takes it."""
        return int(self.lease_s * 1000)


@dataclass(frozen=True)
class Durability:
    """What a 2xx waits for beyond the primary: this many replicas holding the write (Redis `WAIT`)."""

    min_replicas: int = 0  # 0: the primary's answer is enough (replication stays asynchronous)
    wait_ms: int = 500  # how long to wait for them before answering 503


@dataclass(frozen=True)
class Settings:
    """Everything a web or worker process needs, loaded once at start."""

    redis_url: str | None = field(repr=False)  # may hold a password
    routes: Mapping[str, Route]
    workspaces: Mapping[str, Workspace]
    write_keys: tuple[Secret, ...]
    webhook_secrets: tuple[Secret, ...]
    insecure_no_auth: bool = False
    sandbox: bool = False
    config_path: str = ""
    embedded_redis_path: str = "var/relay.db"
    limits: Limits = field(default_factory=Limits)
    delivery: Delivery = field(default_factory=Delivery)
    audit_ttl_s: int = 30 * 86400
    dedup_window_s: int = 72 * 3600
    dead_letters_max: int = 10_000  # per route (a route's dead_letters_max overrides it)
    dead_letter_record_bytes: int = 65_536  # a dead letter over this keeps only the start of its record
    budgets: Budgets = field(default_factory=Budgets)  # every route's defaults (a route's keys override them)
    admin_keys: tuple[Secret, ...] = ()  # HTTP Basic passwords of the /admin/ pages; none: pages answer 404
    metrics_keys: tuple[Secret, ...] = ()  # Bearer keys of /metrics and /openapi.json; none: open to all
    allow_eviction: bool = False  # accept a Redis whose maxmemory-policy may evict queued records
    redis_memory_warn: float = 0.8  # share of Redis's maxmemory from which /readyz and /metrics warn
    redis_sentinel: SentinelTarget | None = None  # the primary is found through Sentinel (REDIS_SENTINELS)
    redis_tls: Tls = field(default_factory=Tls)  # REDIS_SSL_*: the files of a rediss:// connection
    durability: Durability = field(default_factory=Durability)

    @property
    def redis_external(self) -> bool:
        """True when the relay is given a Redis server (a URL or Sentinel), False for the embedded one."""
        return bool(self.redis_url or self.redis_sentinel)


def valid_webhook_secret(value: str) -> bool:
    """True for 'whsec_' followed by non-empty base64, as the Standard Webhooks spec says."""
    if not value.startswith("whsec_"):
        return False
    try:
        encoded = value[len("whsec_") :]
        return bool(base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True))
    except ValueError:
        return False


def load_settings() -> Settings:
    """Read the environment and the routes file; raise ConfigError naming what is wrong."""
    return _load(Env(eager=False), os.environ)


def _limits(env: Env) -> Limits:
    """The edge's size limits (RELAY_*_MAX_*)."""
    return Limits(
        postback_bytes=env.int("RELAY_POSTBACK_MAX_BYTES", Limits.postback_bytes),
        ingest_bytes=env.int("RELAY_INGEST_MAX_BYTES", Limits.ingest_bytes),
        export_bytes=env.int("RELAY_EXPORT_MAX_BYTES", Limits.export_bytes),
        webhook_bytes=env.int("RELAY_WEBHOOK_MAX_BYTES", Limits.webhook_bytes),
        export_rows=env.int("RELAY_EXPORT_MAX_ROWS", Limits.export_rows),
        record_fields=env.int("RELAY_RECORD_MAX_FIELDS", Limits.record_fields),
        record_depth=env.int("RELAY_RECORD_MAX_DEPTH", Limits.record_depth),
    )


def _budgets(env: Env) -> Budgets:
    """Every route's default budgets (a route's own keys override them: relay/budgets.py)."""
    return Budgets(
        queued_records=env.int("RELAY_MAX_QUEUED_RECORDS", Budgets.queued_records),
        queued_bytes=env.int("RELAY_MAX_QUEUED_BYTES", Budgets.queued_bytes),
        records_per_minute=env.int("RELAY_RECORDS_PER_MINUTE", Budgets.records_per_minute),
        transform_records_per_kb=env.int("RELAY_TRANSFORM_RECORDS_PER_KB", Budgets.transform_records_per_kb),
        dead_letter_bytes=env.int("RELAY_DEAD_LETTERS_MAX_BYTES", Budgets.dead_letter_bytes),
    )


def _delivery(env: Env) -> Delivery:
    """How the workers deliver: Braze's per-request limits, flight, lingers, leases, retries, rates."""
    return Delivery(
        track_per_array=env.int("BRAZE_TRACK_PER_ARRAY", Delivery.track_per_array),
        track_combined=env.int("BRAZE_TRACK_COMBINED_LIMIT", Delivery.track_combined or 0) or None,
        track_shards=max(1, env.int("RELAY_TRACK_SHARDS", Delivery.track_shards)),
        inflight=max(1, env.int("RELAY_INFLIGHT", Delivery.inflight)),
        linger_s=env.float("RELAY_LINGER_MS", Delivery.linger_s * 1000) / 1000,
        consent_linger_s=env.float("RELAY_CONSENT_LINGER_MS", Delivery.consent_linger_s * 1000) / 1000,
        lease_s=env.float("RELAY_LEASE_S", Delivery.lease_s),
        slice_s=env.float("RELAY_SLICE_S", Delivery.slice_s),
        connect_timeout_s=env.float("BRAZE_CONNECT_TIMEOUT_S", Delivery.connect_timeout_s),
        read_timeout_s=env.float("BRAZE_READ_TIMEOUT_S", Delivery.read_timeout_s),
        max_attempts=env.int("RELAY_MAX_ATTEMPTS", Delivery.max_attempts),
        retry_base_s=env.float("RELAY_RETRY_BASE_S", Delivery.retry_base_s),
        retry_cap_s=env.float("RELAY_RETRY_CAP_S", Delivery.retry_cap_s),
        retry_max_age_s=env.float("RELAY_RETRY_MAX_AGE_S", Delivery.retry_max_age_s),
        rate_track=env.str("BRAZE_RATE_TRACK", Delivery.rate_track),
        rate_users=env.str("BRAZE_RATE_USERS", Delivery.rate_users),
        rate_consent=env.str("BRAZE_RATE_SUBSCRIPTION", Delivery.rate_consent),
        rate_rename=env.str("BRAZE_RATE_RENAME", Delivery.rate_rename),
        rate_remove=env.str("BRAZE_RATE_REMOVE", Delivery.rate_remove),
        rate_catalog=env.str("BRAZE_RATE_CATALOG", Delivery.rate_catalog),
        rate_default=env.str("BRAZE_RATE_DEFAULT", Delivery.rate_default),
        unchanged_ttl_s=env.int("RELAY_UNCHANGED_TTL_S", Delivery.unchanged_ttl_s),
        order_across_lanes=env.bool("RELAY_ORDER_ACROSS_LANES", Delivery.order_across_lanes),
        order_max_wait_s=env.float("RELAY_ORDER_MAX_WAIT_S", Delivery.order_max_wait_s),
    )


def _redis(env: Env) -> dict[str, Any]:
    """Settings' keywords for the Redis server: REDIS_URL, or Sentinel (REDIS_SENTINELS and
    REDIS_SENTINEL_SERVICE, REDIS_URL then naming only user, password, database and scheme), the TLS
    files, and what a 2xx waits for."""
    sentinels = parse_sentinels(env.str("REDIS_SENTINELS", ""), env.str("REDIS_SENTINEL_SERVICE", ""))
    return {
        "redis_url": env.str("REDIS_URL", None) or None,
        "redis_sentinel": sentinels,
        "redis_tls": _tls(env),
        "durability": _durability(env),
    }


def _durability(env: Env) -> Durability:
    """RELAY_REDIS_MIN_REPLICAS and RELAY_REDIS_WAIT_MS."""
    return Durability(
        min_replicas=env.int("RELAY_REDIS_MIN_REPLICAS", Durability.min_replicas),
        wait_ms=env.int("RELAY_REDIS_WAIT_MS", Durability.wait_ms),
    )


def _tls(env: Env) -> Tls:
    """REDIS_SSL_CA_CERTS, REDIS_SSL_CERTFILE, REDIS_SSL_KEYFILE (paths; unset: redis-py's defaults)."""
    return Tls(
        ca_certs=env.str("REDIS_SSL_CA_CERTS", "") or None,
        certfile=env.str("REDIS_SSL_CERTFILE", "") or None,
        keyfile=env.str("REDIS_SSL_KEYFILE", "") or None,
    )


def _check_durability(durability: Durability) -> None:
    """ConfigError for a replica count below 0 or a wait that is not positive."""
    if durability.min_replicas < 0:
        raise ConfigError(f"RELAY_REDIS_MIN_REPLICAS={durability.min_replicas}: give 0 or more replicas")
    if durability.min_replicas and durability.wait_ms <= 0:
        raise ConfigError(
            f"RELAY_REDIS_WAIT_MS={durability.wait_ms}: give a wait above 0 ms (Redis's WAIT 0 never ends)"
        )


def _check_credentials(
    routes: Mapping[str, Route], write_keys: tuple[Secret, ...], secrets: tuple[Secret, ...], insecure: bool
) -> None:
    """Every route has a credential to check (its own, else the globals); secrets are well formed."""
    _check_whsec(secrets, "")
    for route in routes.values():
        keys, route_secrets = route.credentials(write_keys, secrets)
        if not (keys or route_secrets or insecure):
            raise ConfigError(
                f"no credentials for route {route.name!r}: set RELAY_WRITE_KEYS and/or RELAY_WEBHOOK_SECRETS "
                "(or RELAY_INSECURE_NO_AUTH=1, for local use only)"
            )
        if route.signing.scheme is SignatureScheme.STANDARD:
            _check_whsec(route.webhook_secrets, f"route {route.name!r}: ")


def _check_whsec(secrets: tuple[Secret, ...], where: str) -> None:
    """Standard Webhooks secrets are 'whsec_' and base64; ConfigError (prefixed by `where`) otherwise."""
    if not all(valid_webhook_secret(secret.reveal()) for secret in secrets):
        raise ConfigError(f"{where}webhook secrets must be 'whsec_' followed by base64 (Standard Webhooks)")


def _load(env: Env, source: Mapping[str, str]) -> Settings:
    redis_options = _redis(env)
    endpoint = env.str("BRAZE_REST_ENDPOINT", "") or ""
    api_key = env.str("BRAZE_API_KEY", "") or ""
    config_path = env.str("RELAY_CONFIG", "relay.toml")
    write_keys = split_secrets(env.str("RELAY_WRITE_KEYS", ""))
    secrets = split_secrets(env.str("RELAY_WEBHOOK_SECRETS", ""))
    admin_keys = split_secrets(env.str("RELAY_ADMIN_KEYS", ""))
    metrics_keys = split_secrets(env.str("RELAY_METRICS_KEYS", ""))
    insecure = env.bool("RELAY_INSECURE_NO_AUTH", False)
    allow_eviction = env.bool("RELAY_ALLOW_EVICTION", False)
    memory_warn = env.float("RELAY_REDIS_MEMORY_WARN", Settings.redis_memory_warn)
    limits, delivery, budgets = _limits(env), _delivery(env), _budgets(env)
    audit_ttl = env.int("RELAY_AUDIT_TTL_S", 30 * 86400)
    dedup_window = env.int("RELAY_DEDUP_WINDOW_S", 72 * 3600)
    dead_letters_max = env.int("RELAY_DEAD_LETTERS_MAX", Settings.dead_letters_max)
    dead_letter_record_bytes = env.int(
        "RELAY_DEAD_LETTER_RECORD_MAX_BYTES", Settings.dead_letter_record_bytes
    )
    embedded = env.str("RELAY_EMBEDDED_REDIS", "var/relay.db")
    sandbox_url = env.str("RELAY_SANDBOX_BRAZE_URL", SANDBOX_BRAZE_URL)
    try:
        env.seal()
    except EnvError as exc:
        raise ConfigError(f"bad environment: {exc}") from None

    if bool(endpoint) != bool(api_key):
        missing = "BRAZE_API_KEY" if endpoint else "BRAZE_REST_ENDPOINT"
        raise ConfigError(f"{missing} is not set: set both BRAZE_REST_ENDPOINT and BRAZE_API_KEY, or neither")
    sandbox = not endpoint
    if sandbox:
        endpoint = sandbox_url
        api_key = SANDBOX_BRAZE_KEY
    default = Workspace(DEFAULT_WORKSPACE, endpoint.rstrip("/"), Secret(api_key))
    routes, workspaces = load_routes(config_path, default, source, budgets)
    if dedup_window < SIGNATURE_SPAN_S:
        raise ConfigError(
            f"RELAY_DEDUP_WINDOW_S={dedup_window} is shorter than the {SIGNATURE_SPAN_S} s for which a "
            "signed webhook's timestamp is accepted (±5 minutes): a replay could outlive its identity; "
            f"set it to at least {SIGNATURE_SPAN_S}"
        )
    if not 0 < memory_warn <= 1:
        raise ConfigError(
            f"RELAY_REDIS_MEMORY_WARN={memory_warn} is not a share of maxmemory: give a number above 0, "
            "at most 1 (0.8: warn once Redis holds 80% of its maxmemory)"
        )
    _check_credentials(routes, write_keys, secrets, insecure)
    _check_durability(redis_options["durability"])
    return Settings(
        **redis_options,
        routes=routes,
        workspaces=workspaces,
        write_keys=write_keys,
        webhook_secrets=secrets,
        insecure_no_auth=insecure,
        sandbox=sandbox,
        config_path=config_path,
        embedded_redis_path=embedded,
        limits=limits,
        delivery=delivery,
        audit_ttl_s=audit_ttl,
        dedup_window_s=dedup_window,
        dead_letters_max=dead_letters_max,
        dead_letter_record_bytes=dead_letter_record_bytes,
        budgets=budgets,
        admin_keys=admin_keys,
        metrics_keys=metrics_keys,
        allow_eviction=allow_eviction,
        redis_memory_warn=memory_warn,
    )


def dead_letter_limit(settings: Settings, route: str) -> int:
    """How many dead letters a route keeps: its own dead_letters_max, else RELAY_DEAD_LETTERS_MAX."""
    found = settings.routes.get(route)
    return (found.dead_letters_max if found else None) or settings.dead_letters_max


def dead_letter_bytes(settings: Settings, route: str) -> int:
    """How many bytes of dead letters a route keeps: its budget (relay/budgets.py), else the default's."""
    found = settings.routes.get(route)
    return (found.budgets if found else settings.budgets).dead_letter_bytes


def global_only_sensitive_routes(settings: Settings) -> list[str]:
    """Routes that delete, merge or rename users or change consent with only the global credentials
    (shared by every route)."""
    if settings.insecure_no_auth:
        return []
    return sorted(
        route.name
        for route in settings.routes.values()
        if route.kind in SENSITIVE and not route.own_credentials
    )


def warn_at_start(settings: Settings, process: str) -> None:
    """One JSON log line naming the routes of global_only_sensitive_routes, if there are any."""
    import logging

    from relay.logs import configure_logging

    names = global_only_sensitive_routes(settings)
    if not names:
        return
    configure_logging()
    logging.getLogger("relay.config").warning(
        "routes that delete, merge or rename users or change consent take the global credentials, "
        "which every other route shares (a postback key in a URL would also delete users): give them "
        "write_keys_env and/or webhook_secrets_env of their own",
        extra={"role": process, "routes": names},
    )
