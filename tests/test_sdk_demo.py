"""The sandbox demo page: the vendored SDK is the npm build it claims; its routes load in the sandbox."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

import pytest

from relay.config import load_settings
from relay.modes import Kind
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
        if name.startswith(("RELAY_", "BRAZE_", "DEMO_", "SDK_")) or name in (
            "REDIS_URL",
            "PRIVACY_WRITE_KEYS",
        ):
            monkeypatch.delenv(name)
    monkeypatch.chdir(ROOT)
    for name in (
        "RELAY_CONFIG",
        "RELAY_WRITE_KEYS",
        "DEMO_WRITE_KEYS",
        "SDK_WRITE_KEYS",
        "PRIVACY_WRITE_KEYS",  # the example's deletion and consent routes take keys of their own
    ):
        monkeypatch.setenv(name, sandbox_default(name))


@pytest.mark.usefixtures("sandbox_env")
def test_example_routes_load_as_the_sandbox_runs_them_with_the_demo_routes() -> None:
    """relay.example.toml loads with the sandbox's variables; the demo routes take the demo page's origins."""
    settings = load_settings()
    assert settings.sandbox
    events, consent = settings.routes["demo_events"], settings.routes["demo_consent"]
    assert (events.database, events.table, events.kind) == ("web", "demo_events", Kind.EVENTS)
    assert (consent.database, consent.table, consent.kind) == ("web", "demo_consent", Kind.CONSENT)
    for route in (events, consent):
        assert route.allowed_origins == DEMO_ORIGINS
        assert [key.reveal() for key in route.write_keys] == [sandbox_default("DEMO_WRITE_KEYS")]
    port = re.search(r"--port \$\{SANDBOX_DEMO_PORT:-(\d+)\}", procfile_command("demo", "Procfile.sandbox"))
    assert port and all(origin.endswith(f":{port.group(1)}") for origin in DEMO_ORIGINS)
    # The routes of the SDK's own records (presets td_js_sdk, td_js_consent) take the same pages, with
    # a key of their own; every other example route is closed to pages.
    for name in ("sdk_events", "sdk_consent"):
        assert settings.routes[name].allowed_origins == DEMO_ORIGINS
        assert [key.reveal() for key in settings.routes[name].write_keys] == [
            sandbox_default("SDK_WRITE_KEYS")
        ]
    assert [name for name, route in settings.routes.items() if route.allowed_origins] == [
        "demo_events",
        "demo_consent",
        "sdk_events",
        "sdk_consent",
    ]


def test_demo_page_without_its_routes_exits_2_naming_the_route(tmp_path: Path) -> None:
    """`python -m sdk_demo` on a routes file without demo_events exits 2 with one line naming it."""
    path = tmp_path / "relay.toml"
    path.write_text('[routes.app_events]\nmode = "user_track"\ntrack_record_type = "custom_events"\n')
    environ = {name: value for name, value in os.environ.items() if not name.startswith(("RELAY_", "BRAZE_"))}
    environ.update({"RELAY_CONFIG": str(path), "RELAY_WRITE_KEYS": WRITE_KEY})
    line = refused_start([sys.executable, "-m", "sdk_demo", "--port", "0"], environ)
    assert "'demo_events'" in line
