"""Settings from the environment and the routes file: what starts, and what stops with a message naming it."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient

from receiver import create_app
from relay.config import SANDBOX_BRAZE_URL, load_settings
from relay.errors import ConfigError
from relay.lanes import Lane
from tests.helpers import REDIS_URL, WEBHOOK_SECRET, WRITE_KEY, signed_headers
from tests.processes import refused_start

ROOT = Path(__file__).resolve().parent.parent
BRAZE_ENDPOINT = "https://rest.iad-01.braze.com"
BRAZE_KEY = "braze-api-key-0d41"
EU_ENDPOINT = "https://rest.fra-01.braze.eu"
EU_BRAZE_KEY = "eu-braze-api-key-77e2"
PARTNER_KEY = "partner-write-key-5a0c"
PARTNER_KEY_ROTATED = "partner-write-key-rotated-19fe"
PARTNER_SECRET = "whsec_" + base64.b64encode(b"partner-webhook-secret-32-bytes!").decode()
SECOND_SECRET = "whsec_" + base64.b64encode(b"the-rotated-webhook-secret-0042!").decode()

GOOD_ROUTE = """
[routes.app_events]
database = "marketing"
table = "app_events"
mode = "user_track"
track_record_type = "custom_events"
"""

PARTNER_ROUTES = """
[routes.partner]
database = "partner"
table = "events"
mode = "user_track"
track_record_type = "custom_events"
write_keys_env = "PARTNER_WRITE_KEYS"
webhook_secrets_env = "PARTNER_WEBHOOK_SECRETS"

[routes.shared]
database = "shared"
table = "events"
mode = "user_track"
track_record_type = "custom_events"

[routes.eu_events]
database = "eu"
table = "events"
mode = "user_track"
track_record_type = "custom_events"
braze_endpoint = "https://rest.fra-01.braze.eu"
braze_api_key_env = "EU_BRAZE_KEY"
"""
EVENT = {"external_id": "u1", "name": "signup", "time": 1_764_000_000}


def route(body: str, name: str = "app_events") -> str:
    """One route table with the given keys."""
    return f"[routes.{name}]\n{body.strip()}\n"


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


@pytest.fixture
def routes_path(tmp_path: Path) -> Path:
    """Where the routes file of a test lives."""
    return tmp_path / "relay.toml"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, routes_path: Path) -> pytest.MonkeyPatch:
    """An operator's environment: one good route and one write key; nothing else the relay reads."""
    for name in list(os.environ):
        if name.startswith(("RELAY_", "BRAZE_", "PARTNER_", "EU_BRAZE")) or name == "REDIS_URL":
            monkeypatch.delenv(name)
    routes_path.write_text(GOOD_ROUTE)
    monkeypatch.setenv("RELAY_CONFIG", str(routes_path))
    monkeypatch.setenv("RELAY_WRITE_KEYS", WRITE_KEY)
    monkeypatch.setenv("EU_BRAZE_KEY", EU_BRAZE_KEY)
    return monkeypatch


def config_error() -> str:
    """The message of the ConfigError that loading the settings raises."""
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return str(caught.value)


def test_good_configuration_loads(env: pytest.MonkeyPatch) -> None:
    """One good route and one write key load, with the route's mode and database/table."""
    settings = load_settings()
    assert list(settings.routes) == ["app_events"]
    assert settings.routes["app_events"].database == "marketing"
    assert settings.routes["app_events"].kind == "events"


# --- the routes file ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "route_name", "key"), BAD_ROUTES.values(), ids=BAD_ROUTES.keys())
def test_bad_route_stops_naming_route_and_key(
    env: pytest.MonkeyPatch, routes_path: Path, text: str, route_name: str, key: str
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
    env: pytest.MonkeyPatch, routes_path: Path, text: str, said: str
) -> None:
    """A routes file that is not TOML, or holds no routes, stops the boot naming the file and the fault."""
    routes_path.write_text(text)
    message = config_error()
    assert said in message
    assert str(routes_path) in message


def test_missing_routes_file_stops_naming_it(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A RELAY_CONFIG naming no file stops the boot naming the path and the variable."""
    missing = tmp_path / "nowhere.toml"
    env.setenv("RELAY_CONFIG", str(missing))
    message = config_error()
    assert str(missing) in message
    assert "RELAY_CONFIG" in message


def test_old_td_spelling_of_pre_formatted_fields_is_taken(env: pytest.MonkeyPatch, routes_path: Path) -> None:
    """TD's older spelling `pre_formated_fields` works like `pre_formatted_fields`."""
    routes_path.write_text(route(TRACK + 'pre_formated_fields = ["properties"]'))
    assert load_settings().routes["app_events"].pre_formatted_fields == ("properties",)


def test_bad_number_in_environment_stops_naming_it(env: pytest.MonkeyPatch) -> None:
    """A limit variable that is not a number stops the boot naming the variable."""
    env.setenv("RELAY_POSTBACK_MAX_BYTES", "lots")
    assert "RELAY_POSTBACK_MAX_BYTES" in config_error()


@pytest.mark.parametrize("value", ["0", "-0.5", "1.5", "80"])
def test_memory_warning_that_is_no_share_stops_naming_it(env: pytest.MonkeyPatch, value: str) -> None:
    """RELAY_REDIS_MEMORY_WARN is a share of maxmemory (above 0, at most 1): anything else stops the boot."""
    env.setenv("RELAY_REDIS_MEMORY_WARN", value)
    assert "RELAY_REDIS_MEMORY_WARN" in config_error()


def test_memory_warning_defaults_to_80_percent(env: pytest.MonkeyPatch) -> None:
    """Unset, the warning starts at 0.8 of maxmemory; set, it is taken as given."""
    assert load_settings().redis_memory_warn == 0.8
    env.setenv("RELAY_REDIS_MEMORY_WARN", "0.95")
    assert load_settings().redis_memory_warn == 0.95


# --- credentials -------------------------------------------------------------------------------


def test_no_credentials_stops(env: pytest.MonkeyPatch) -> None:
    """With no write key and no webhook secret anywhere, the boot stops naming RELAY_WRITE_KEYS."""
    env.delenv("RELAY_WRITE_KEYS")
    message = config_error()
    assert "RELAY_WRITE_KEYS" in message
    assert "app_events" in message


def test_insecure_flag_allows_no_credentials(env: pytest.MonkeyPatch) -> None:
    """RELAY_INSECURE_NO_AUTH=1 lets the relay start without credentials, and says so in the settings."""
    env.delenv("RELAY_WRITE_KEYS")
    env.setenv("RELAY_INSECURE_NO_AUTH", "1")
    assert load_settings().insecure_no_auth is True


def test_webhook_secrets_alone_are_credentials(env: pytest.MonkeyPatch) -> None:
    """Webhook secrets without write keys are enough to start; both rotated secrets are kept."""
    env.delenv("RELAY_WRITE_KEYS")
    env.setenv("RELAY_WEBHOOK_SECRETS", f"{WEBHOOK_SECRET}, {SECOND_SECRET}")
    settings = load_settings()
    assert settings.write_keys == ()
    assert [secret.reveal() for secret in settings.webhook_secrets] == [WEBHOOK_SECRET, SECOND_SECRET]


def test_write_keys_are_comma_separated(env: pytest.MonkeyPatch) -> None:
    """RELAY_WRITE_KEYS is a comma-separated list (for rotation); blanks around commas are ignored."""
    env.setenv("RELAY_WRITE_KEYS", f" {WRITE_KEY} ,, {PARTNER_KEY} ")
    assert [key.reveal() for key in load_settings().write_keys] == [WRITE_KEY, PARTNER_KEY]


@pytest.mark.parametrize(
    "value", ["plain-secret-3b1d", f"{WEBHOOK_SECRET},plain-secret-3b1d"], ids=["only", "second of two"]
)
def test_webhook_secret_without_prefix_stops(env: pytest.MonkeyPatch, value: str) -> None:
    """A webhook secret not in Standard Webhooks form (whsec_...) stops the boot, without repeating it."""
    env.setenv("RELAY_WEBHOOK_SECRETS", value)
    message = config_error()
    assert "whsec_" in message
    assert "plain-secret-3b1d" not in message


def test_route_webhook_secret_without_prefix_stops(env: pytest.MonkeyPatch, routes_path: Path) -> None:
    """A route's own webhook secret is held to the same whsec_ form."""
    routes_path.write_text(route(TRACK + 'webhook_secrets_env = "PARTNER_WEBHOOK_SECRETS"'))
    env.setenv("PARTNER_WEBHOOK_SECRETS", "plain-secret-3b1d")
    assert "whsec_" in config_error()


@pytest.mark.parametrize("value", ["whsec_", "whsec_!!!!"], ids=["empty", "not base64"])
def test_webhook_secret_with_no_key_bytes_stops(env: pytest.MonkeyPatch, value: str) -> None:
    """A webhook secret whose base64 part decodes to nothing stops the boot."""
    env.setenv("RELAY_WEBHOOK_SECRETS", value)
    config_error()


# --- Braze connection --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("present", "missing"),
    [("BRAZE_REST_ENDPOINT", "BRAZE_API_KEY"), ("BRAZE_API_KEY", "BRAZE_REST_ENDPOINT")],
)
def test_half_a_braze_connection_stops_naming_the_missing_half(
    env: pytest.MonkeyPatch, present: str, missing: str
) -> None:
    """Only one of BRAZE_REST_ENDPOINT and BRAZE_API_KEY stops the boot, naming the one not set."""
    env.setenv(present, BRAZE_ENDPOINT if present == "BRAZE_REST_ENDPOINT" else BRAZE_KEY)
    message = config_error()
    assert message.startswith(f"{missing} is not set")
    assert BRAZE_KEY not in message


def test_no_braze_connection_is_sandbox(env: pytest.MonkeyPatch) -> None:
    """With neither Braze variable set, the relay runs in sandbox mode against the bundled simulator."""
    settings = load_settings()
    assert settings.sandbox is True
    assert settings.workspaces["default"].endpoint == SANDBOX_BRAZE_URL == "http://127.0.0.1:9100"


def test_braze_connection_is_not_sandbox(env: pytest.MonkeyPatch) -> None:
    """With both Braze variables set, the default workspace uses them (endpoint without a trailing slash)."""
    env.setenv("BRAZE_REST_ENDPOINT", BRAZE_ENDPOINT + "/")
    env.setenv("BRAZE_API_KEY", BRAZE_KEY)
    settings = load_settings()
    assert settings.sandbox is False
    assert settings.workspaces["default"].endpoint == BRAZE_ENDPOINT
    assert settings.workspaces["default"].api_key.reveal() == BRAZE_KEY


def test_route_with_own_braze_workspace(env: pytest.MonkeyPatch, routes_path: Path) -> None:
    """A route naming its own Braze endpoint and key variable gets a workspace of its own."""
    routes_path.write_text(PARTNER_ROUTES)
    env.setenv("PARTNER_WRITE_KEYS", PARTNER_KEY)
    env.setenv("PARTNER_WEBHOOK_SECRETS", PARTNER_SECRET)
    settings = load_settings()
    workspace = settings.workspaces[settings.routes["eu_events"].workspace]
    assert workspace.endpoint == EU_ENDPOINT
    assert workspace.api_key.reveal() == EU_BRAZE_KEY
    assert settings.routes["shared"].workspace == "default"
    assert Lane.of_route(settings.routes["eu_events"], 1) != Lane.of_route(settings.routes["shared"], 1)


# --- a route's own credentials, through the app ------------------------------------------------


@pytest.fixture
def partner_client(env: pytest.MonkeyPatch, routes_path: Path, clean_redis: redis.Redis) -> FlaskClient:
    """The app with a route that names its own write keys and webhook secrets, beside a shared route."""
    routes_path.write_text(PARTNER_ROUTES)
    env.setenv("REDIS_URL", REDIS_URL)
    env.setenv("RELAY_WEBHOOK_SECRETS", WEBHOOK_SECRET)
    env.setenv("PARTNER_WRITE_KEYS", f"{PARTNER_KEY},{PARTNER_KEY_ROTATED}")
    env.setenv("PARTNER_WEBHOOK_SECRETS", PARTNER_SECRET)
    return create_app(load_settings()).test_client()


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


# --- secrets stay secret -----------------------------------------------------------------------


def test_settings_repr_shows_no_secret(env: pytest.MonkeyPatch, routes_path: Path) -> None:
    """repr() and str() of the settings show no Braze key, write key or webhook secret."""
    routes_path.write_text(PARTNER_ROUTES)
    env.setenv("BRAZE_REST_ENDPOINT", BRAZE_ENDPOINT)
    env.setenv("BRAZE_API_KEY", BRAZE_KEY)
    env.setenv("RELAY_WRITE_KEYS", f"{WRITE_KEY},{PARTNER_KEY_ROTATED}")
    env.setenv("RELAY_WEBHOOK_SECRETS", f"{WEBHOOK_SECRET},{SECOND_SECRET}")
    env.setenv("PARTNER_WRITE_KEYS", PARTNER_KEY)
    env.setenv("PARTNER_WEBHOOK_SECRETS", PARTNER_SECRET)
    settings = load_settings()
    shown = repr(settings) + str(settings)
    for value in (
        BRAZE_KEY,
        EU_BRAZE_KEY,
        WRITE_KEY,
        PARTNER_KEY_ROTATED,
        PARTNER_KEY,
        WEBHOOK_SECRET,
        SECOND_SECRET,
        PARTNER_SECRET,
        WEBHOOK_SECRET.removeprefix("whsec_"),
    ):
        assert value not in shown


# --- the process-level check -------------------------------------------------------------------

WORKER_FAILURES = {
    "bad routes file": (
        route('database = "m"\ntable = "t"\nmode = "user_tracking"'),
        {},
        ("app_events", "mode"),
    ),
    "no credentials": (GOOD_ROUTE, {"RELAY_WRITE_KEYS": ""}, ("RELAY_WRITE_KEYS",)),
}


@pytest.mark.parametrize(("text", "extra", "named"), WORKER_FAILURES.values(), ids=WORKER_FAILURES.keys())
def test_worker_with_bad_configuration_exits_2_with_one_line(
    tmp_path: Path, text: str, extra: dict[str, str], named: tuple[str, ...]
) -> None:
    """`python -m handlers.worker` with a bad configuration exits 2 and prints one line naming the fault."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    environ = {
        name: value
        for name, value in os.environ.items()
        if name != "RELAY_INSECURE_NO_AUTH" and not name.startswith(("RELAY_WEBHOOK", "BRAZE_"))
    }
    environ.update({"RELAY_CONFIG": str(path), "RELAY_WRITE_KEYS": WRITE_KEY, **extra})
    line = refused_start([sys.executable, "-m", "handlers.worker"], environ)
    for name in named:
        assert name in line
