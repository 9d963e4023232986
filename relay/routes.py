"""The routes file (TOML): each route names a mode and where its records go, validated at start."""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from relay.budgets import DEFAULTS, Budgets, resolve
from relay.dedup import DEFAULT_WINDOW_S, Dedup, compile_dedup
from relay.errors import ConfigError
from relay.modes import ROUTE_MODES, TRACK_TYPE_MODES, TRACK_TYPES, Kind, Mode, mode_of
from relay.secrets import Secret, split_secrets
from relay.signing import (
    STANDARD,
    SignatureAlgorithm,
    SignatureEncoding,
    SignatureScheme,
    Signing,
    build_signing,
    check_signing,
)
from relay.transforms import PRESETS, Transform, TransformError, compile_transform

NAME = validate.Regexp(r"^[A-Za-z0-9_]{1,128}$", error="only letters, digits and '_' are allowed")
ROUTE_NAME = validate.Regexp(
    r"^[A-Za-z0-9_\-]{1,128}$", error="only letters, digits, '_' and '-' are allowed"
)
ENV_NAME = validate.Regexp(r"^[A-Z_][A-Z0-9_]*$", error="must be an environment variable name")
HEADER_NAME = validate.Regexp(r"^[A-Za-z0-9-]{1,128}$", error="must be an HTTP header name")
# An exact web origin, as a browser sends it in `Origin`: scheme, host, optional port; no path or wildcard.
ORIGIN = validate.Regexp(
    r"^https?://(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?\Z",
    error="must be an exact origin such as https://www.example.com (scheme, host, optional port; "
    "no path, no trailing slash, no wildcard)",
)

# /{database}/{table} would collide with these paths.
RESERVED_DATABASES = frozenset({"webhooks", "export"})
# A Braze catalog's name: "Catalog name can only include letters, numbers, hyphens, and underscores",
# "Character limit for a catalog name is 250" (https://www.braze.com/docs/api/endpoints/catalogs/
# catalog_management/synchronous/post_create_catalog/, Troubleshooting).
CATALOG_NAME = validate.Regexp(
    r"^[A-Za-z0-9_-]{1,250}$", error="a Braze catalog name: 1 to 250 letters, digits, '-' and '_'"
)
# How Braze picks one of several users sharing an email or phone (/users/identify, /users/merge):
# https://www.braze.com/docs/api/endpoints/user_data/post_user_identify/ ("Identifying users by email
# addresses and phone numbers"): an ordered array; only one of identified and unidentified.
PRIORITIES = ("identified", "unidentified", "most_recently_updated", "least_recently_updated")
DEFAULT_PRIORITIZATION = ("unidentified", "most_recently_updated")


def prioritization_problem(values: Any) -> str | None:
    """Why `values` is not a prioritization Braze takes, or None when it is one."""
    if not isinstance(values, list) or not values or not all(isinstance(value, str) for value in values):
        return f"a non-empty array of {', '.join(PRIORITIES)}"
    unknown = [value for value in values if value not in PRIORITIES]
    if unknown:
        return f"{unknown[0][:40]!r} is not one of {', '.join(PRIORITIES)}"
    if len(set(values)) != len(values):
        return "a value appears twice"
    if {"identified", "unidentified"} <= set(values):
        return "only one of identified and unidentified"
    return None


def user_key(ident: dict[str, Any]) -> str:
    """A stable string for one identifier object, e.g. 'email:a@b.c' (for per-user state)."""
    ((name, value),) = ident.items()
    return f"{name}:{json.dumps(value, sort_keys=True) if isinstance(value, dict) else value}"


@dataclass(frozen=True)
class Workspace:
    """One Braze connection: REST endpoint and API key. Rate limits are kept per workspace.

    A workspace lives on one Redis: REDIS_URL's, or its own when its routes name `redis_url_env`
    (then `redis_env` is that variable's name, and `redis_url` its value).
    """

    id: str
    endpoint: str
    api_key: Secret
    redis_env: str | None = None
    redis_url: str | None = field(default=None, repr=False)  # may hold a password


@dataclass(frozen=True)
class Route:
    """One configured route, as the routes file says, plus what follows from it."""

    name: str
    mode: str
    database: str | None = None
    table: str | None = None
    track_record_type: str | None = None
    pre_formatted_fields: tuple[str, ...] = ()
    skip_on_invalid_records: bool = False
    update_existing_only: bool = False
    null_unsets: bool = False
    workspace: str = "default"
    write_keys_env: str | None = None
    webhook_secrets_env: str | None = None
    # The route's own credentials, when it names variables for them; they replace the global ones.
    write_keys: tuple[Secret, ...] = ()
    webhook_secrets: tuple[Secret, ...] = ()
    # How webhook senders sign (signature = ...), and where the sender's own delivery id travels.
    signing: Signing = STANDARD
    dead_letters_max: int | None = None  # None: the global RELAY_DEAD_LETTERS_MAX
    # Web pages that may post to this route from a browser (CORS); their key is public.
    allowed_origins: tuple[str, ...] = ()
    # The route's jq program (`transform` or `preset`), compiled at start; None: records as they come.
    transform: Transform | None = None
    # Attribute values equal to the last ones delivered for the user are not sent again
    # (handlers/unchanged.py); only user_track routes, whose records may set attributes.
    skip_unchanged: bool = False
    # How Braze picks among users sharing an email or phone, where a record gives none
    # (user_identifying, user_merge).
    prioritization: tuple[str, ...] = DEFAULT_PRIORITIZATION
    catalog: str | None = None  # catalog_items: the Braze catalog the items go to
    double_opt_in: bool = False  # user_subscription: subscribing enters Braze's SMS double opt-in
    # Record-level deduplication (relay/dedup.py): how an input names itself, and for how long.
    dedup: Dedup | None = None
    # What any holder of its key may make the relay hold or do (relay/budgets.py).
    budgets: Budgets = DEFAULTS

    @property
    def own_credentials(self) -> bool:
        """True when the route names a credential of its own: then no global credential applies to it."""
        return bool(self.write_keys_env or self.webhook_secrets_env)

    def credentials(
        self, write_keys: tuple[Secret, ...], webhook_secrets: tuple[Secret, ...]
    ) -> tuple[tuple[Secret, ...], tuple[Secret, ...]]:
        """The keys and secrets it takes: its own when it names any, else these global ones (never a mix)."""
        if self.own_credentials:
            return self.write_keys, self.webhook_secrets
        return write_keys, webhook_secrets

    @cached_property
    def spec(self) -> Mode:
        """The registry entry of the route's mode."""
        return mode_of(self.mode, self.track_record_type)

    @property
    def kind(self) -> Kind:
        """What a record of this route becomes: events, purchases, attributes, alias, ..."""
        return self.spec.kind


class RouteSchema(Schema):
    """One `[routes.NAME]` table of the routes file."""

    class Meta:
        unknown = RAISE  # a typo in a key must stop the boot, not be silently ignored

    database = fields.String(validate=NAME, load_default=None)
    table = fields.String(validate=NAME, load_default=None)
    mode = fields.String(required=True, validate=validate.OneOf(ROUTE_MODES))
    track_record_type = fields.String(validate=validate.OneOf(TRACK_TYPES), load_default=None)
    pre_formatted_fields = fields.List(fields.String(), load_default=list)
    # TD's older docs spell it this way; accept both so a copied TD config works.
    pre_formated_fields = fields.List(fields.String(), load_default=None)
    skip_on_invalid_records = fields.Boolean(load_default=False)
    update_existing_only = fields.Boolean(load_default=False)
    null_unsets = fields.Boolean(load_default=False)
    braze_endpoint = fields.Url(load_default=None, schemes={"http", "https"}, require_tld=False)
    braze_api_key_env = fields.String(validate=ENV_NAME, load_default=None)
    write_keys_env = fields.String(validate=ENV_NAME, load_default=None)
    webhook_secrets_env = fields.String(validate=ENV_NAME, load_default=None)
    signature = fields.String(validate=validate.OneOf(tuple(SignatureScheme)), load_default="standard")
    signature_header = fields.String(validate=HEADER_NAME, load_default=None)
    signature_algorithm = fields.String(validate=validate.OneOf(tuple(SignatureAlgorithm)), load_default=None)
    signature_encoding = fields.String(validate=validate.OneOf(tuple(SignatureEncoding)), load_default=None)
    signature_prefix = fields.String(validate=validate.Length(max=64), load_default=None)
    delivery_id_header = fields.String(validate=HEADER_NAME, load_default=None)
    dead_letters_max = fields.Integer(validate=validate.Range(min=1), load_default=None)
    allowed_origins = fields.List(fields.String(validate=ORIGIN), load_default=list)
    transform = fields.String(validate=validate.Length(min=1), load_default=None)
    preset = fields.String(validate=validate.OneOf(sorted(PRESETS)), load_default=None)
    transform_args = fields.Dict(keys=fields.String(), load_default=None)
    skip_unchanged = fields.Boolean(load_default=False)
    prioritization = fields.Raw(load_default=None)
    catalog = fields.String(validate=CATALOG_NAME, load_default=None)
    double_opt_in = fields.Boolean(load_default=False)
    dedup_key = fields.String(validate=validate.Length(min=1, max=1000), load_default=None)
    dedup_window_s = fields.Integer(validate=validate.Range(min=1, max=400 * 86400), load_default=None)
    max_queued_records = fields.Integer(validate=validate.Range(min=1), load_default=None)
    max_queued_bytes = fields.Integer(validate=validate.Range(min=1), load_default=None)
    records_per_minute = fields.Integer(validate=validate.Range(min=0), load_default=None)
    max_body_bytes = fields.Integer(validate=validate.Range(min=1), load_default=None)
    transform_records_per_kb = fields.Integer(validate=validate.Range(min=1), load_default=None)
    dead_letters_max_bytes = fields.Integer(validate=validate.Range(min=1), load_default=None)
    redis_url_env = fields.String(validate=ENV_NAME, load_default=None)

    @validates_schema
    def _mode_keys(self, data: dict[str, Any], **_: Any) -> None:
        """Keys that belong to some modes only, and what those modes require."""
        mode = data["mode"]
        if mode == "catalog_items" and not data.get("catalog"):
            raise ValidationError("required when mode is catalog_items: the Braze catalog", "catalog")
        if mode != "catalog_items" and data.get("catalog") is not None:
            raise ValidationError("only allowed when mode is catalog_items", "catalog")
        if mode != "user_subscription" and data.get("double_opt_in"):
            raise ValidationError("only allowed when mode is user_subscription", "double_opt_in")
        if data.get("dedup_window_s") is not None and not data.get("dedup_key"):
            raise ValidationError("only allowed with dedup_key", "dedup_window_s")
        if data.get("dedup_key") and mode not in ("user_track", "catalog_items"):
            # A repeat of the other calls changes nothing in Braze, and a repeated call that orders
            # others (relay/order.py) or is audited must not leave marks for a record never stored.
            raise ValidationError(
                "only for user_track and catalog_items routes: Braze takes the other calls twice to the "
                "same effect",
                "dedup_key",
            )
        if data.get("prioritization") is not None:
            if mode not in ("user_identifying", "user_merge"):
                raise ValidationError(
                    "only allowed when mode is user_identifying or user_merge", "prioritization"
                )
            problem = prioritization_problem(data["prioritization"])
            if problem:
                raise ValidationError(
                    f"must be {problem}" if problem.startswith("a ") else problem, "prioritization"
                )

    @validates_schema
    def _public_key(self, data: dict[str, Any], **_: Any) -> None:
        """A route that web pages post to has a key anyone can read: keep what it opens small."""
        if not data.get("allowed_origins"):
            return
        try:
            from_pages = mode_of(data["mode"], data.get("track_record_type")).from_pages
        except KeyError:
            return  # user_track without a valid track_record_type: _consistent says so
        if not from_pages:
            raise ValidationError(
                f"not allowed in mode {data['mode']}: a key used in a web page is public, and anyone "
                "holding it could delete users or attach profiles to any external id",
                "allowed_origins",
            )
        if not data.get("database"):
            raise ValidationError(
                "needs database and table: browsers post to /{database}/{table}", "allowed_origins"
            )
        if not data.get("write_keys_env"):
            raise ValidationError(
                "required with allowed_origins: a key used in a web page is public, so the route needs "
                "keys of its own that open no other route",
                "write_keys_env",
            )

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        typed = data["mode"] in TRACK_TYPE_MODES
        if typed and not data.get("track_record_type"):
            raise ValidationError("required when mode is user_track", "track_record_type")
        if not typed and data.get("track_record_type"):
            raise ValidationError("only allowed when mode is user_track", "track_record_type")
        if data.get("skip_unchanged") and not typed:
            raise ValidationError(
                "only for user_track routes: it leaves out attribute values Braze already has",
                "skip_unchanged",
            )
        if data.get("database") in RESERVED_DATABASES:
            raise ValidationError(
                f"'{data['database']}' is a path of its own; choose another name", "database"
            )
        if bool(data.get("database")) != bool(data.get("table")):
            raise ValidationError("database and table go together", "table")
        if bool(data.get("braze_endpoint")) != bool(data.get("braze_api_key_env")):
            raise ValidationError("braze_endpoint and braze_api_key_env go together", "braze_api_key_env")
        if data.get("transform") and data.get("preset"):
            raise ValidationError("give transform or preset, not both", "preset")
        if data.get("transform_args") is not None and not (data.get("transform") or data.get("preset")):
            raise ValidationError("only allowed with transform or preset", "transform_args")
        preset = PRESETS.get(data.get("preset") or "")
        if preset and data["mode"] not in preset.modes:
            raise ValidationError(
                f"preset {data['preset']!r} needs mode {' or '.join(preset.modes)}", "preset"
            )
        check_signing(data)


def _first_error(messages: Any, prefix: str = "") -> str:
    """Flatten marshmallow's nested messages into 'key: message' for a one-line boot error."""
    if isinstance(messages, dict):
        key, value = next(iter(messages.items()))
        return _first_error(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
    if isinstance(messages, list):
        return f"key '{prefix}': {messages[0]}" if prefix else str(messages[0])
    return f"key '{prefix}': {messages}"


def load_routes(
    path: str,
    default: Workspace,
    environ: Mapping[str, str],
    budgets: Budgets = DEFAULTS,
) -> tuple[dict[str, Route], dict[str, Workspace]]:
    """Parse and validate the routes file; raise ConfigError that names the route and the key.

    `budgets` are the defaults of every route's budgets (RELAY_* variables).
    """
    routes: dict[str, Route] = {}
    workspaces = {default.id: default}
    placement = _Placement(path, environ)
    seen_tables: dict[tuple[str, str], str] = {}
    for name, table in _route_tables(path).items():
        where = f"routes file {path!r}: route {name!r}"
        try:
            ROUTE_NAME(name)
        except ValidationError:
            raise ConfigError(f"{where}: the name may hold only letters, digits, '_' and '-'") from None
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        try:
            data = RouteSchema().load(table)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {_first_error(exc.messages)}") from None
        for key in ("write_keys_env", "webhook_secrets_env", "braze_api_key_env", "redis_url_env"):
            if data.get(key) and not environ.get(data[key]):
                raise ConfigError(f"{where}: key '{key}' names {data[key]}, which is not set")
        workspace = _workspace(data, default, environ, workspaces)
        placement.place(name, workspace, data["redis_url_env"], where)
        if data["database"]:
            pair = (data["database"], data["table"])
            if pair in seen_tables:
                raise ConfigError(
                    f"{where}: database/table {'/'.join(pair)} already used by {seen_tables[pair]!r}"
                )
            seen_tables[pair] = name
        route = _route(name, data, workspace, _transform(name, data, where), environ)
        page, remembers = bool(route.allowed_origins), route.kind in (Kind.ATTRIBUTES, Kind.CONSENT)
        budgeted = resolve(data, budgets, page=page, remembers=remembers)
        routes[name] = replace(route, dedup=_dedup(data, route, where), budgets=budgeted)
    return routes, placement.apply(workspaces)


REDIS_SCHEMES = ("redis", "rediss", "unix")  # what redis-py's from_url takes


class _Placement:
    """Which Redis each workspace's routes name (redis_url_env), checked to be one per workspace."""

    def __init__(self, path: str, environ: Mapping[str, str]) -> None:
        self.path, self.environ = path, environ
        self.named: dict[str, tuple[str | None, str]] = {}  # workspace -> (variable or None, first route)

    def place(self, route: str, workspace: str, env: str | None, where: str) -> None:
        """Note the route's Redis; ConfigError when its workspace's routes name different ones."""
        if env is not None:
            scheme = self.environ[env].partition("://")[0]
            if scheme not in REDIS_SCHEMES:
                raise ConfigError(
                    f"{where}: key 'redis_url_env': {env} does not hold a Redis URL "
                    "(redis://, rediss:// or unix://)"
                )
        first = self.named.setdefault(workspace, (env, route))
        if first[0] != env:
            said = " and ".join(
                f"{name!r} ({variable or 'none'})" for variable, name in (first, (env, route))
            )
            raise ConfigError(
                f"routes file {self.path!r}: routes {said} share workspace {workspace!r} but not its "
                "Redis: give every route of a workspace the same redis_url_env, or none"
            )

    def apply(self, workspaces: dict[str, Workspace]) -> dict[str, Workspace]:
        """The workspaces, each with the Redis its routes name."""
        for workspace, (env, _) in self.named.items():
            if env is not None:
                workspaces[workspace] = replace(
                    workspaces[workspace], redis_env=env, redis_url=self.environ[env]
                )
        return workspaces


def _route_tables(path: str) -> dict[str, Any]:
    """The file's [routes.NAME] tables, or ConfigError naming what is wrong with the file."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"routes file {path!r} not found (set RELAY_CONFIG)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"routes file {path!r} is not valid TOML: {exc}") from None
    tables = doc.get("routes")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"routes file {path!r} defines no [routes.NAME] table")
    extra = set(doc) - {"routes"}
    if extra:
        raise ConfigError(f"routes file {path!r}: unknown top-level key {sorted(extra)[0]!r}")
    return tables


def _workspace(
    data: dict[str, Any], default: Workspace, environ: Mapping[str, str], workspaces: dict[str, Workspace]
) -> str:
    """The route's workspace id: the default, or one per Braze endpoint and key (added to `workspaces`)."""
    if not data["braze_endpoint"]:
        return default.id
    endpoint = data["braze_endpoint"].rstrip("/")
    digest = hashlib.sha256(f"{endpoint}|{data['braze_api_key_env']}".encode()).hexdigest()[:10]
    workspace = f"ws-{digest}"
    workspaces[workspace] = Workspace(workspace, endpoint, Secret(environ[data["braze_api_key_env"]]))
    return workspace


def _transform(name: str, data: dict[str, Any], where: str) -> Transform | None:
    """The route's jq program (its transform or preset), compiled once; None without one."""
    if not (data["transform"] or data["preset"]):
        return None
    variables = {key: data[key] for key in ("database", "table", "mode", "track_record_type")}
    try:
        return compile_transform(
            source=data["transform"],
            preset=data["preset"],
            args=data["transform_args"] or {},
            route={"name": name, **variables},
        )
    except TransformError as exc:
        key = "preset" if data["preset"] else "transform"
        raise ConfigError(f"{where}: key '{key}': {exc}") from None


def _dedup(data: dict[str, Any], route: Route, where: str) -> Dedup | None:
    """The route's record identity (its dedup_key, compiled once), or None without one."""
    if not data["dedup_key"]:
        return None
    credentials = (
        (route.write_keys_env or "", route.webhook_secrets_env or "") if route.own_credentials else ()
    )
    try:
        return compile_dedup(
            data["dedup_key"],
            data["dedup_window_s"] or DEFAULT_WINDOW_S,
            route={"name": route.name, "database": route.database, "table": route.table, "mode": route.mode},
            credentials=credentials,
        )
    except TransformError as exc:
        raise ConfigError(f"{where}: key 'dedup_key': not a field name, and as jq it {exc}") from None


def _route(
    name: str, data: dict[str, Any], workspace: str, transform: Transform | None, environ: Mapping[str, str]
) -> Route:
    """The Route of a validated table."""
    return Route(
        name=name,
        mode=data["mode"],
        database=data["database"],
        table=data["table"],
        track_record_type=data["track_record_type"],
        pre_formatted_fields=tuple(data["pre_formatted_fields"] or data["pre_formated_fields"] or ()),
        skip_on_invalid_records=data["skip_on_invalid_records"],
        update_existing_only=data["update_existing_only"],
        null_unsets=data["null_unsets"],
        workspace=workspace,
        write_keys_env=data["write_keys_env"],
        webhook_secrets_env=data["webhook_secrets_env"],
        write_keys=split_secrets(environ.get(data["write_keys_env"] or "", "")),
        webhook_secrets=split_secrets(environ.get(data["webhook_secrets_env"] or "", "")),
        signing=build_signing(
            data["signature"],
            header=data["signature_header"],
            algorithm=data["signature_algorithm"],
            encoding=data["signature_encoding"],
            prefix=data["signature_prefix"],
            delivery_id_header=data["delivery_id_header"],
        ),
        dead_letters_max=data["dead_letters_max"],
        allowed_origins=tuple(data["allowed_origins"]),
        transform=transform,
        skip_unchanged=data["skip_unchanged"],
        prioritization=tuple(data["prioritization"] or DEFAULT_PRIORITIZATION),
        catalog=data["catalog"],
        double_opt_in=data["double_opt_in"],
    )
