"""The routes file (relay/routes.py), loaded as every process loads it at start: a bad route stops the boot
with one message naming the route and the key; a route may have its own Braze workspace and its own
credentials, which replace the global ones on that route only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient

from relay.config import load_settings
from relay.lanes import Lane
from relay.routes import user_key
from tests.helpers import (
    EU_BRAZE_KEY,
    GOOD_ROUTE,
    REDIS_URL,
    WEBHOOK_SECRET,
    WRITE_KEY,
    create_app_for,
    signed_headers,
)
from tests.test_config import (
    EU_ENDPOINT,
    EVENT,
    PARTNER_KEY,
    PARTNER_KEY_ROTATED,
    PARTNER_ROUTES,
    PARTNER_SECRET,
    config_error,
    route,
)


def test_a_users_key_names_the_identifier_and_its_value() -> None:
    """Per-user state is keyed by one identifier: its name and value (an alias as sorted JSON)."""
    assert user_key({"email": "a@b.c"}) == "email:a@b.c"
    alias = {"user_alias": {"alias_name": "n", "alias_label": "l"}}
    assert user_key(alias) == 'user_alias:{"alias_label": "l", "alias_name": "n"}'
    with pytest.raises(ValueError, match="unpack"):
        user_key({"email": "a@b.c", "external_id": "u1"})


TRACK = (
    'database = "marketing"\ntable = "app_events"\nmode = "user_track"\ntrack_record_type = "custom_events"\n'
)

# A broken routes file: (file text, the route the message must name, the key it must name).
BAD_ROUTES = {
    "unknown key (typo)": (
        route(TRACK + "skip_on_invalid_record = true"),
        "app_events",
        "skip_on_invalid_record",
    ),
    "bad mode": (route('database = "m"\ntable = "t"\nmode = "user_tracking"'), "app_events", "mode"),
    "skip_unchanged outside user_track": (
        route('mode = "user_subscription"\nskip_unchanged = true'),
        "app_events",
        "skip_unchanged",
    ),
    "missing mode": (route('database = "m"\ntable = "t"'), "app_events", "mode"),
    "user_track without track_record_type": (
        route('database = "m"\ntable = "t"\nmode = "user_track"'),
        "app_events",
        "track_record_type",
    ),
    "track_record_type outside user_track": (
        route('mode = "user_delete"\ntrack_record_type = "purchases"'),
        "app_events",
        "track_record_type",
    ),
    "bad track_record_type": (
        route('mode = "user_track"\ntrack_record_type = "events"'),
        "app_events",
        "track_record_type",
    ),
    "bad database name": (
        route('database = "mar-keting"\ntable = "t"\nmode = "user_delete"'),
        "app_events",
        "database",
    ),
    "bad table name": (
        route('database = "m"\ntable = "app events"\nmode = "user_delete"'),
        "app_events",
        "table",
    ),
    "table without database": (route('table = "t"\nmode = "user_delete"'), "app_events", "table"),
    "duplicate database/table": (route(TRACK) + route(TRACK, "again"), "again", "database/table"),
    "braze_api_key_env unset": (
        route(TRACK + f'braze_endpoint = "{EU_ENDPOINT}"\nbraze_api_key_env = "UNSET_BRAZE_KEY"'),
        "app_events",
        "braze_api_key_env",
    ),
    "braze_endpoint without braze_api_key_env": (
        route(TRACK + f'braze_endpoint = "{EU_ENDPOINT}"'),
        "app_events",
        "braze_api_key_env",
    ),
    "braze_endpoint not http": (
        route(TRACK + 'braze_endpoint = "ftp://braze.example"\nbraze_api_key_env = "EU_BRAZE_KEY"'),
        "app_events",
        "braze_endpoint",
    ),
    "write_keys_env unset": (route(TRACK + 'write_keys_env = "UNSET_KEYS"'), "app_events", "write_keys_env"),
    "webhook_secrets_env not a variable name": (
        route(TRACK + 'webhook_secrets_env = "my secrets"'),
        "app_events",
        "webhook_secrets_env",
    ),
    "skip_on_invalid_records not a boolean": (
        route(TRACK + 'skip_on_invalid_records = "sometimes"'),
        "app_events",
        "skip_on_invalid_records",
    ),
    "route not a table": ('[routes]\napp_events = "user_track"\n', "app_events", "table"),
    "route name with a space": (route(TRACK, '"app events"'), "app events", "name"),
}


@pytest.mark.parametrize(("text", "route_name", "key"), BAD_ROUTES.values(), ids=BAD_ROUTES.keys())
def test_bad_route_stops_naming_route_and_key(
    config_env: pytest.MonkeyPatch, routes_path: Path, text: str, route_name: str, key: str
) -> None:
    """A bad route stops the boot with one message naming the route and the key at fault."""
    routes_path.write_text(text)
    message = config_error()
    assert f"route '{route_name}'" in message
    assert key in message
    assert "\n" not in message


BAD_FILES = {
    "invalid TOML": ("[routes.app_events\nmode = ", "not valid TOML"),
    "no [routes] table": ("[server]\nport = 8000\n", "no [routes.NAME] table"),
    "empty [routes]": ("[routes]\n", "no [routes.NAME] table"),
    "unknown top-level key": (GOOD_ROUTE + "\n[server]\nport = 8000\n", "'server'"),
}


@pytest.mark.parametrize(("text", "said"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_routes_file_stops_saying_why(
    config_env: pytest.MonkeyPatch, routes_path: Path, text: str, said: str
) -> None:
    """A routes file that is not TOML, or holds no routes, stops the boot naming the file and the fault."""
    routes_path.write_text(text)
    message = config_error()
    assert said in message
    assert str(routes_path) in message


def test_missing_routes_file_stops_naming_it(config_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A RELAY_CONFIG naming no file stops the boot naming the path and the variable."""
    missing = tmp_path / "nowhere.toml"
    config_env.setenv("RELAY_CONFIG", str(missing))
    message = config_error()
    assert str(missing) in message
    assert "RELAY_CONFIG" in message


def test_old_td_spelling_of_pre_formatted_fields_is_taken(
    config_env: pytest.MonkeyPatch, routes_path: Path
) -> None:
    """TD's older spelling `pre_formated_fields` works like `pre_formatted_fields`."""
    routes_path.write_text(route(TRACK + 'pre_formated_fields = ["properties"]'))
    assert load_settings().routes["app_events"].pre_formatted_fields == ("properties",)


def test_route_webhook_secret_without_prefix_stops(config_env: pytest.MonkeyPatch, routes_path: Path) -> None:
    """A route's own webhook secret is held to the same whsec_ form."""
    routes_path.write_text(route(TRACK + 'webhook_secrets_env = "PARTNER_WEBHOOK_SECRETS"'))
    config_env.setenv("PARTNER_WEBHOOK_SECRETS", "plain-secret-3b1d")
    assert "whsec_" in config_error()


def test_route_with_own_braze_workspace(config_env: pytest.MonkeyPatch, routes_path: Path) -> None:
    """A route naming its own Braze endpoint and key variable gets a workspace of its own."""
    routes_path.write_text(PARTNER_ROUTES)
    config_env.setenv("PARTNER_WRITE_KEYS", PARTNER_KEY)
    config_env.setenv("PARTNER_WEBHOOK_SECRETS", PARTNER_SECRET)
    settings = load_settings()
    workspace = settings.workspaces[settings.routes["eu_events"].workspace]
    assert workspace.endpoint == EU_ENDPOINT
    assert workspace.api_key.reveal() == EU_BRAZE_KEY
    assert settings.routes["shared"].workspace == "default"
    assert Lane.of_route(settings.routes["eu_events"], 1) != Lane.of_route(settings.routes["shared"], 1)


@pytest.fixture
def partner_client(
    config_env: pytest.MonkeyPatch, routes_path: Path, clean_redis: redis.Redis
) -> FlaskClient:
    """The app with a route that names its own write keys and webhook secrets, beside a shared route."""
    routes_path.write_text(PARTNER_ROUTES)
    config_env.setenv("REDIS_URL", REDIS_URL)
    config_env.setenv("RELAY_WEBHOOK_SECRETS", WEBHOOK_SECRET)
    config_env.setenv("PARTNER_WRITE_KEYS", f"{PARTNER_KEY},{PARTNER_KEY_ROTATED}")
    config_env.setenv("PARTNER_WEBHOOK_SECRETS", PARTNER_SECRET)
    return create_app_for(load_settings()).test_client()


ROUTE_KEYS = {
    "global key refused on partner": ("partner", WRITE_KEY, 401),
    "partner key on partner": ("partner", PARTNER_KEY, 200),
    "rotated partner key on partner": ("partner", PARTNER_KEY_ROTATED, 200),
    "partner key refused on shared": ("shared", PARTNER_KEY, 401),
    "global key on shared": ("shared", WRITE_KEY, 200),
}


@pytest.mark.parametrize(("database", "key", "status"), ROUTE_KEYS.values(), ids=ROUTE_KEYS.keys())
def test_route_write_keys_replace_global_ones(
    partner_client: FlaskClient, database: str, key: str, status: int
) -> None:
    """A route's write_keys_env keys replace the global keys on that route, and only there."""
    response = partner_client.post(
        f"/postback/v3/event/{database}/events",
        data=json.dumps(EVENT),
        headers={"Content-Type": "application/json", "X-TD-Write-Key": key},
    )
    assert response.status_code == status, response.get_json()


@pytest.mark.parametrize(
    ("secret", "status"),
    [(WEBHOOK_SECRET, 401), (PARTNER_SECRET, 202)],
    ids=["global secret refused", "route secret"],
)
def test_route_webhook_secrets_replace_global_ones(
    partner_client: FlaskClient, secret: str, status: int
) -> None:
    """A route's webhook_secrets_env secrets replace the global secrets on that route."""
    body = json.dumps(EVENT).encode()
    response = partner_client.post(
        "/webhooks/partner", data=body, headers=signed_headers(body, secret=secret)
    )
    assert response.status_code == status, response.get_json()
