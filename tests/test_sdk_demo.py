"""The sandbox demo page: the vendored SDK is the npm build it claims; its routes load in the sandbox."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

import pytest

from relay.config import load_settings
from relay.errors import ConfigError
from relay.modes import Kind
from sdk_demo.__main__ import ROUTES, page_config
from tests.helpers import WRITE_KEY
from tests.processes import ROOT, procfile_command, refused_start

VENDORED = ROOT / "sdk_demo" / "static" / "td-js-sdk"
SANDBOX = (ROOT / "scripts" / "sandbox").read_text()
DEMO_ORIGINS = ("http://127.0.0.1:8001", "http://localhost:8001")


def test_vendored_sdk_files_match_the_checksums_in_its_readme() -> None:
    """td.min.js, LICENSE and NOTICE are byte for byte the files whose sha256 the README records."""
    recorded = dict(
        re.findall(
            r"^\| `([A-Za-z.]+)` \|[^|]*\| `([0-9a-f]{64})` \|$", (VENDORED / "README.md").read_text(), re.M
        )
    )
    assert set(recorded) == {"td.min.js", "LICENSE", "NOTICE"}
    for name, digest in recorded.items():
        assert hashlib.sha256((VENDORED / name).read_bytes()).hexdigest() == digest, name
    version = (VENDORED / "VERSION").read_text().strip()
    assert version == "4.4.3"
    assert f'"{version}"' in (VENDORED / "td.min.js").read_text()
    assert "Apache License" in (VENDORED / "LICENSE").read_text()


def sandbox_default(name: str) -> str:
    """The value scripts/sandbox gives a variable when it is unset."""
    match = re.search(rf'export {name}="\$\{{{name}:-([^}}]+)\}}"', SANDBOX)
    assert match, name
    return match.group(1)


@pytest.fixture
def sandbox_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment scripts/sandbox runs the relay with (sandbox mode: no Braze variables)."""
    for name in list(os.environ):
        if name.startswith(("RELAY_", "BRAZE_", "SDK_")) or name in ("REDIS_URL", "PRIVACY_WRITE_KEYS"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(ROOT)
    for name in (
        "RELAY_CONFIG",
        "RELAY_WRITE_KEYS",
        "SDK_WRITE_KEYS",
        "PRIVACY_WRITE_KEYS",  # the example's deletion and consent routes take keys of their own
    ):
        monkeypatch.setenv(name, sandbox_default(name))


@pytest.mark.usefixtures("sandbox_env")
def test_example_routes_load_as_the_sandbox_runs_them_with_the_sdk_routes_open_to_the_demo_page() -> None:
    """relay.example.toml loads with the sandbox's variables; only the SDK routes take the demo's origins."""
    settings = load_settings()
    assert settings.sandbox
    sdk_routes = {
        "sdk_events": ("events", Kind.EVENTS, "td_js_sdk"),
        "sdk_pageviews": ("pageviews", Kind.EVENTS, "td_js_sdk"),
        "sdk_consent": ("td_cm_consent", Kind.CONSENT, "td_js_consent"),
        "sdk_consent_contexts": ("td_cm_context", Kind.CONSENT, "td_js_consent"),
    }
    for name, (table, kind, preset) in sdk_routes.items():
        route = settings.routes[name]
        assert route.transform is not None
        assert (route.database, route.table, route.kind, route.transform.preset) == (
            "web",
            table,
            kind,
            preset,
        )
        assert route.allowed_origins == DEMO_ORIGINS
        assert [key.reveal() for key in route.write_keys] == [sandbox_default("SDK_WRITE_KEYS")]
    port = re.search(r"--port \$\{SANDBOX_DEMO_PORT:-(\d+)\}", procfile_command("demo", "Procfile.sandbox"))
    assert port and all(origin.endswith(f":{port.group(1)}") for origin in DEMO_ORIGINS)
    # Every other example route is closed to pages.
    assert [name for name, route in settings.routes.items() if route.allowed_origins] == list(sdk_routes)


@pytest.mark.usefixtures("sandbox_env")
def test_demo_page_config_is_the_sdk_routes_one_client_and_the_simulators_views() -> None:
    """/config.js: one database and key for the three tables, the purposes, and the simulator's user views."""
    config = page_config(load_settings(), "http://127.0.0.1:8000", ROUTES)
    assert config["endpoint"] == "http://127.0.0.1:8000/"
    assert (config["database"], config["writeKey"]) == ("web", sandbox_default("SDK_WRITE_KEYS"))
    assert config["routes"] == {
        "events": {"route": "sdk_events", "table": "events"},
        "consent": {"route": "sdk_consent", "table": "td_cm_consent"},
        "contexts": {"route": "sdk_consent_contexts", "table": "td_cm_context"},
    }
    assert config["purposes"] == {
        "newsletter": "sandbox-newsletter-group",
        "marketing_email": "email_subscribe",
        "push": "push_subscribe",
    }
    assert config["allowedOrigins"] == list(DEMO_ORIGINS)
    assert config["braze"] == {
        "users": "http://127.0.0.1:9100/_sim/users/",
        "aliases": "http://127.0.0.1:9100/_sim/aliases/td_client_id/",
    }


def test_demo_page_without_its_routes_exits_2_naming_the_route(tmp_path: Path) -> None:
    """`python -m sdk_demo` on a routes file without sdk_events exits 2 with one line naming it."""
    path = tmp_path / "relay.toml"
    path.write_text('[routes.app_events]\nmode = "user_track"\ntrack_record_type = "custom_events"\n')
    environ = {name: value for name, value in os.environ.items() if not name.startswith(("RELAY_", "BRAZE_"))}
    environ.update({"RELAY_CONFIG": str(path), "RELAY_WRITE_KEYS": WRITE_KEY})
    line = refused_start([sys.executable, "-m", "sdk_demo", "--port", "0"], environ)
    assert "route 'sdk_events' is not in the routes file" in line


PAGE_ROUTE = """
[routes.{name}]
database = "{database}"
table = "{table}"
{mode}
{preset}
write_keys_env = "{keys}"
allowed_origins = ["http://127.0.0.1:8001"]
"""
PAGE_ROUTES = {
    "sdk_events": {
        "table": "events",
        "mode": 'mode = "user_track"\ntrack_record_type = "custom_events"',
        "preset": 'preset = "td_js_sdk"',
    },
    "sdk_consent": {
        "table": "td_cm_consent",
        "mode": 'mode = "user_subscription"',
        "preset": 'preset = "td_js_consent"',
    },
    "sdk_consent_contexts": {"table": "td_cm_context", "mode": 'mode = "user_subscription"', "preset": ""},
}


@pytest.mark.parametrize(
    ("route", "change", "refusal"),
    [
        (
            "sdk_consent",
            {"database": "other"},
            "routes 'sdk_events' and 'sdk_consent' must share a database and a key",
        ),
        (
            "sdk_consent_contexts",
            {"keys": "OTHER_KEYS"},
            "'sdk_consent_contexts' must share a database and a key",
        ),
        ("sdk_events", {"preset": ""}, "route 'sdk_events' needs preset = 'td_js_sdk'"),
        ("sdk_consent", {"preset": ""}, "route 'sdk_consent' needs preset = 'td_js_consent'"),
    ],
)
def test_demo_page_refuses_routes_its_one_sdk_client_cannot_post_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str, change: dict[str, str], refusal: str
) -> None:
    """Another database or key than the events route's, a table without its preset: ConfigError saying so."""
    routes = "".join(
        PAGE_ROUTE.format(
            name=name,
            **{"database": "web", "keys": "SDK_WRITE_KEYS", **fields, **(change if name == route else {})},
        )
        for name, fields in PAGE_ROUTES.items()
    )
    path = tmp_path / "relay.toml"
    path.write_text(routes)
    for name, value in {
        "RELAY_CONFIG": str(path),
        "RELAY_WRITE_KEYS": WRITE_KEY,
        "SDK_WRITE_KEYS": "sdk-key",
        "OTHER_KEYS": "other-key",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=re.escape(refusal)):
        page_config(load_settings(), "http://127.0.0.1:8000/", ROUTES)
