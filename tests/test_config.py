"""Settings from the environment (relay/config.py): what starts, and what stops with a message naming it.
The routes file itself is test_routes.py."""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import pytest

from relay.config import SANDBOX_BRAZE_URL, load_settings
from relay.errors import ConfigError
from tests.helpers import EU_BRAZE_KEY, GOOD_ROUTE, WEBHOOK_SECRET, WRITE_KEY
from tests.processes import refused_start

ROOT = Path(__file__).resolve().parent.parent
BRAZE_ENDPOINT = "https://rest.iad-01.braze.com"
BRAZE_KEY = "braze-api-key-0d41"
EU_ENDPOINT = "https://rest.fra-01.braze.eu"
PARTNER_KEY = "partner-write-key-5a0c"
PARTNER_KEY_ROTATED = "partner-write-key-rotated-19fe"
PARTNER_SECRET = "whsec_" + base64.b64encode(b"partner-webhook-secret-32-bytes!").decode()
SECOND_SECRET = "whsec_" + base64.b64encode(b"the-rotated-webhook-secret-0042!").decode()


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


def config_error() -> str:
    """The message of the ConfigError that loading the settings raises."""
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return str(caught.value)


def test_good_configuration_loads(config_env: pytest.MonkeyPatch) -> None:
    """One good route and one write key load, with the route's mode and database/table."""
    settings = load_settings()
    assert list(settings.routes) == ["app_events"]
    assert settings.routes["app_events"].database == "marketing"
    assert settings.routes["app_events"].kind == "events"


def test_bad_number_in_environment_stops_naming_it(config_env: pytest.MonkeyPatch) -> None:
    """A limit variable that is not a number stops the boot naming the variable."""
    config_env.setenv("RELAY_POSTBACK_MAX_BYTES", "lots")
    assert "RELAY_POSTBACK_MAX_BYTES" in config_error()


@pytest.mark.parametrize("value", ["0", "-0.5", "1.5", "80"])
def test_memory_warning_that_is_no_share_stops_naming_it(config_env: pytest.MonkeyPatch, value: str) -> None:
    """RELAY_REDIS_MEMORY_WARN is a share of maxmemory (above 0, at most 1): anything else stops the boot."""
    config_env.setenv("RELAY_REDIS_MEMORY_WARN", value)
    assert "RELAY_REDIS_MEMORY_WARN" in config_error()


def test_memory_warning_defaults_to_80_percent(config_env: pytest.MonkeyPatch) -> None:
    """Unset, the warning starts at 0.8 of maxmemory; set, it is taken as given."""
    assert load_settings().redis_memory_warn == 0.8
    config_env.setenv("RELAY_REDIS_MEMORY_WARN", "0.95")
    assert load_settings().redis_memory_warn == 0.95


# --- credentials -------------------------------------------------------------------------------


def test_no_credentials_stops(config_env: pytest.MonkeyPatch) -> None:
    """With no write key and no webhook secret anywhere, the boot stops naming RELAY_WRITE_KEYS."""
    config_env.delenv("RELAY_WRITE_KEYS")
    message = config_error()
    assert "RELAY_WRITE_KEYS" in message
    assert "app_events" in message


def test_insecure_flag_allows_no_credentials(config_env: pytest.MonkeyPatch) -> None:
    """RELAY_INSECURE_NO_AUTH=1 lets the relay start without credentials, and says so in the settings."""
    config_env.delenv("RELAY_WRITE_KEYS")
    config_env.setenv("RELAY_INSECURE_NO_AUTH", "1")
    assert load_settings().insecure_no_auth is True


def test_webhook_secrets_alone_are_credentials(config_env: pytest.MonkeyPatch) -> None:
    """Webhook secrets without write keys are enough to start; both rotated secrets are kept."""
    config_env.delenv("RELAY_WRITE_KEYS")
    config_env.setenv("RELAY_WEBHOOK_SECRETS", f"{WEBHOOK_SECRET}, {SECOND_SECRET}")
    settings = load_settings()
    assert settings.write_keys == ()
    assert [secret.reveal() for secret in settings.webhook_secrets] == [WEBHOOK_SECRET, SECOND_SECRET]


def test_write_keys_are_comma_separated(config_env: pytest.MonkeyPatch) -> None:
    """RELAY_WRITE_KEYS is a comma-separated list (for rotation); blanks around commas are ignored."""
    config_env.setenv("RELAY_WRITE_KEYS", f" {WRITE_KEY} ,, {PARTNER_KEY} ")
    assert [key.reveal() for key in load_settings().write_keys] == [WRITE_KEY, PARTNER_KEY]


@pytest.mark.parametrize(
    "value", ["plain-secret-3b1d", f"{WEBHOOK_SECRET},plain-secret-3b1d"], ids=["only", "second of two"]
)
def test_webhook_secret_without_prefix_stops(config_env: pytest.MonkeyPatch, value: str) -> None:
    """A webhook secret not in Standard Webhooks form (whsec_...) stops the boot, without repeating it."""
    config_env.setenv("RELAY_WEBHOOK_SECRETS", value)
    message = config_error()
    assert "whsec_" in message
    assert "plain-secret-3b1d" not in message


@pytest.mark.parametrize("value", ["whsec_", "whsec_!!!!"], ids=["empty", "not base64"])
def test_webhook_secret_with_no_key_bytes_stops(config_env: pytest.MonkeyPatch, value: str) -> None:
    """A webhook secret whose base64 part decodes to nothing stops the boot."""
    config_env.setenv("RELAY_WEBHOOK_SECRETS", value)
    config_error()


# --- Braze connection --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("present", "missing"),
    [("BRAZE_REST_ENDPOINT", "BRAZE_API_KEY"), ("BRAZE_API_KEY", "BRAZE_REST_ENDPOINT")],
)
def test_half_a_braze_connection_stops_naming_the_missing_half(
    config_env: pytest.MonkeyPatch, present: str, missing: str
) -> None:
    """Only one of BRAZE_REST_ENDPOINT and BRAZE_API_KEY stops the boot, naming the one not set."""
    config_env.setenv(present, BRAZE_ENDPOINT if present == "BRAZE_REST_ENDPOINT" else BRAZE_KEY)
    message = config_error()
    assert message.startswith(f"{missing} is not set")
    assert BRAZE_KEY not in message


def test_no_braze_connection_is_sandbox(config_env: pytest.MonkeyPatch) -> None:
    """With neither Braze variable set, the relay runs in sandbox mode against the bundled simulator."""
    settings = load_settings()
    assert settings.sandbox is True
    assert settings.workspaces["default"].endpoint == SANDBOX_BRAZE_URL == "http://127.0.0.1:9100"


def test_braze_connection_is_not_sandbox(config_env: pytest.MonkeyPatch) -> None:
    """With both Braze variables set, the default workspace uses them (endpoint without a trailing slash)."""
    config_env.setenv("BRAZE_REST_ENDPOINT", BRAZE_ENDPOINT + "/")
    config_env.setenv("BRAZE_API_KEY", BRAZE_KEY)
    settings = load_settings()
    assert settings.sandbox is False
    assert settings.workspaces["default"].endpoint == BRAZE_ENDPOINT
    assert settings.workspaces["default"].api_key.reveal() == BRAZE_KEY


# --- secrets stay secret -----------------------------------------------------------------------


def test_settings_repr_shows_no_secret(config_env: pytest.MonkeyPatch, routes_path: Path) -> None:
    """repr() and str() of the settings show no Braze key, write key or webhook secret."""
    routes_path.write_text(PARTNER_ROUTES)
    config_env.setenv("BRAZE_REST_ENDPOINT", BRAZE_ENDPOINT)
    config_env.setenv("BRAZE_API_KEY", BRAZE_KEY)
    config_env.setenv("RELAY_WRITE_KEYS", f"{WRITE_KEY},{PARTNER_KEY_ROTATED}")
    config_env.setenv("RELAY_WEBHOOK_SECRETS", f"{WEBHOOK_SECRET},{SECOND_SECRET}")
    config_env.setenv("PARTNER_WRITE_KEYS", PARTNER_KEY)
    config_env.setenv("PARTNER_WEBHOOK_SECRETS", PARTNER_SECRET)
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
