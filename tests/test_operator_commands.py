"""The documented commands, as a newcomer runs them: a fresh shell (no virtualenv activated,
nothing exported by hand) in a fresh copy of the checkout.

The copy holds what a clone holds (git's tracked and not-ignored files); its `.venv` is the
project's, linked rather than installed again. Commands are taken from the docs themselves: the
README's sandbox and its request that delivers, the operations guide's operator commands and the
transforms guide's `transform try` lines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

import pytest
import redis
import requests

from braze_sim.server import Simulator
from tests.helpers import BRAZE_KEY, KEYS, REDIS_URL, WRITE_KEY
from tests.processes import ROOT, free_port, wait_for

README = (ROOT / "README.md").read_text()
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()
TRANSFORMS = (ROOT / "docs" / "transforms.md").read_text()


def first_block(doc: str, heading: str) -> str:
    """The first ```sh block of the section under `heading`."""
    section = doc.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```sh", 1)[1].split("```", 1)[0]


def relay_lines(block: str) -> list[str]:
    """The block's `./scripts/relay` lines, comments cut."""
    return [
        line.split("  #", 1)[0].strip() for line in block.splitlines() if line.startswith("./scripts/relay")
    ]


def operator_commands() -> list[str]:
    """The `./scripts/relay` lines of the operations guide's "Operator commands" block."""
    return relay_lines(first_block(OPERATIONS, "## Operator commands"))


def transform_commands() -> list[str]:
    """The `./scripts/relay transform try` lines of the transforms guide's "Trying a transform" block."""
    return relay_lines(first_block(TRANSFORMS, "## Trying a transform before going live"))


def readme_requests() -> list[str]:
    """The README's "One request that delivers" commands, each joined across its continued lines."""
    joined = first_block(README, "## One request that delivers").replace("\\\n", " ")
    return [line.split("  #", 1)[0].strip() for line in joined.splitlines() if line.startswith("curl ")]


@pytest.fixture
def fresh_copy(tmp_path: Path) -> Path:
    """What `git clone` of this checkout gives, with the project's virtualenv linked in."""
    return clone_checkout(tmp_path / "clone")


def clone_checkout(copy: Path) -> Path:
    """Copy into `copy` what `git clone` of this checkout gives, and link the project's virtualenv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    (copy / ".venv").symlink_to(ROOT / ".venv")
    return copy


def fresh_shell(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a new login shell: no virtualenv, none of the relay's variables."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", **extra}


def run(command: str, *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One command line, as typed into that shell."""
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def start_sandbox(copy: Path, env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """`./scripts/sandbox` in the copy, in a session of its own (as a terminal's job), printing to `log`."""
    return subprocess.Popen(
        ["./scripts/sandbox"], cwd=copy, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def write_env(copy: Path, braze: Simulator, **overrides: str) -> None:
    """The operator's `.env`: .env.example with the values of this machine filled in."""
    values = {
        "REDIS_URL": REDIS_URL,
        "BRAZE_REST_ENDPOINT": braze.url,
        "BRAZE_API_KEY": BRAZE_KEY,
        "RELAY_CONFIG": "relay.example.toml",
        "RELAY_WRITE_KEYS": WRITE_KEY,
        "PRIVACY_WRITE_KEYS": "privacy-key-for-the-copy",  # the example's deletion and consent routes
        "SDK_WRITE_KEYS": "sdk-key-for-the-copy",
        **overrides,
    }
    example = (copy / ".env.example").read_text()
    lines = [line for line in example.splitlines() if line.split("=", 1)[0].lstrip("# ") not in values]
    lines += [f"{name}={value}" for name, value in values.items() if value]
    (copy / ".env").write_text("\n".join(lines) + "\n")


def plant_dead_letter(
    copy: Path, braze: Simulator, monkeypatch: pytest.MonkeyPatch, client: redis.Redis
) -> str:
    """An invalid record on the copy's lenient `profiles` route, through the edge: its dead letter's id."""
    from receiver import create_app
    from relay.config import load_settings

    for name, value in {
        "REDIS_URL": REDIS_URL,
        "BRAZE_REST_ENDPOINT": braze.url,
        "BRAZE_API_KEY": BRAZE_KEY,
        "RELAY_CONFIG": str(copy / "relay.example.toml"),
        "RELAY_WRITE_KEYS": WRITE_KEY,
        "PRIVACY_WRITE_KEYS": "privacy-key-for-the-copy",  # the example's deletion and consent routes
        "SDK_WRITE_KEYS": "sdk-key-for-the-copy",
    }.items():
        monkeypatch.setenv(name, value)
    edge = create_app(load_settings()).test_client()
    posted = edge.post(
        "/marketing/profiles", json={"records": [{"tier": "no user"}]}, headers={"X-TD-Write-Key": WRITE_KEY}
    )
    assert posted.status_code == 200 and posted.get_json()["rejected"]
    (dead_id,) = [raw.decode() for raw in client.zrange(KEYS.dead_index, 0, -1)]
    return dead_id


@pytest.mark.e2e
def test_operator_commands_work_from_a_fresh_shell(
    fresh_copy: Path,
    braze: Simulator,
    clean_redis: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every `./scripts/relay` line of the operations guide runs (exit 0) elsewhere, with the .env."""
    write_env(fresh_copy, braze)
    dead_id = plant_dead_letter(fresh_copy, braze, monkeypatch, clean_redis)
    shell = fresh_shell(tmp_path)
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    relay = str(fresh_copy / "scripts" / "relay")
    commands = operator_commands()
    assert len(commands) >= 7, commands
    for line in commands:
        command = line.replace("./scripts/relay", relay, 1).replace("DEAD_LETTER_ID", dead_id)
        done = run(command, cwd=elsewhere, env=shell)
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        assert "Traceback" not in done.stdout + done.stderr, line
    listed = run(f"{relay} dead list", cwd=elsewhere, env=shell)
    assert "0 shown, 0 dead letter(s)" in listed.stderr, "the guide's purge removed the planted one"


@pytest.mark.e2e
def test_transform_commands_run_on_the_shipped_samples(
    fresh_copy: Path, braze: Simulator, tmp_path: Path
) -> None:
    """The transforms guide's `transform try` lines, as typed in the project directory of a fresh clone."""
    write_env(fresh_copy, braze)
    commands = transform_commands()
    assert len(commands) == 3, commands
    for line in commands:
        done = run(line, cwd=fresh_copy, env=fresh_shell(tmp_path))
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        assert "valid" in done.stdout and "POST /" in done.stdout, (line, done.stdout)


@pytest.mark.e2e
def test_configuration_errors_are_one_line_and_status_2(
    fresh_copy: Path, braze: Simulator, tmp_path: Path
) -> None:
    """A broken routes file, or a missing variable: `check` prints one line and exits 2, no traceback."""
    shell = fresh_shell(tmp_path)
    relay = str(fresh_copy / "scripts" / "relay")
    (fresh_copy / "broken.toml").write_text('[routes.bad]\nmode = "user_track"\n')
    write_env(fresh_copy, braze, RELAY_CONFIG="broken.toml")
    broken = run(f"{relay} check", cwd=tmp_path, env=shell)
    assert broken.returncode == 2
    assert broken.stderr.strip().count("\n") == 0 and "route 'bad'" in broken.stderr, broken.stderr
    assert "track_record_type" in broken.stderr and broken.stdout == ""
    write_env(fresh_copy, braze, RELAY_WRITE_KEYS="")
    missing = run(f"{relay} dead list", cwd=tmp_path, env=shell)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0, missing.stderr
    assert "RELAY_WRITE_KEYS" in missing.stderr
    assert "Traceback" not in broken.stderr + missing.stderr


@pytest.mark.e2e
def test_help_needs_no_configuration_and_e_names_the_variables_file(
    fresh_copy: Path, braze: Simulator, tmp_path: Path
) -> None:
    """A fresh clone lists its commands before anything is set up; `-e FILE` reads another file
    (as systemd's EnvironmentFile or a container's --env-file holds them) instead of the .env."""
    shell = fresh_shell(tmp_path)
    relay = str(fresh_copy / "scripts" / "relay")
    listed = run(f"{relay} --help", cwd=tmp_path, env=shell)
    assert listed.returncode == 0, listed.stderr
    assert all(name in listed.stdout for name in ("check", "dead", "consent", "unchanged", "transform"))
    assert run(f"{relay} dead list --help", cwd=tmp_path, env=shell).returncode == 0
    unset = run(f"{relay} check", cwd=tmp_path, env=shell)
    assert unset.returncode == 2 and unset.stderr.strip().count("\n") == 0, unset.stderr
    write_env(fresh_copy, braze)
    (fresh_copy / ".env").rename(tmp_path / "relay.env")
    checked = run(f"{relay} -e {tmp_path / 'relay.env'} check", cwd=tmp_path, env=shell)
    assert checked.returncode == 0 and "app_events" in checked.stdout, checked.stderr
    missing = run(f"{relay} -e {tmp_path / 'nothing.env'} check", cwd=tmp_path, env=shell)
    assert missing.returncode == 2 and "nothing.env" in missing.stderr


@pytest.mark.e2e
def test_without_a_variables_file_the_error_says_what_to_do(fresh_copy: Path, tmp_path: Path) -> None:
    """No .env, no running sandbox, no -e and no RELAY_CONFIG: the one line says to start the sandbox,
    give -e FILE or set RELAY_CONFIG; with variables given, a configuration error is that error alone."""
    shell = fresh_shell(tmp_path)
    relay = str(fresh_copy / "scripts" / "relay")
    unset = run(f"{relay} dead list", cwd=tmp_path, env=shell)
    assert unset.returncode == 2 and unset.stderr.strip().count("\n") == 0, unset.stderr
    assert "not found (set RELAY_CONFIG)" in unset.stderr
    assert "./scripts/sandbox" in unset.stderr and "-e FILE" in unset.stderr
    (tmp_path / "relay.env").write_text("RELAY_CONFIG=nothing.toml\n")
    named = run(f"{relay} -e {tmp_path / 'relay.env'} check", cwd=tmp_path, env=shell)
    assert named.returncode == 2 and named.stderr.strip().count("\n") == 0, named.stderr
    assert "nothing.toml" in named.stderr and "./scripts/sandbox" not in named.stderr
    exported = run(f"RELAY_CONFIG=nothing.toml {relay} check", cwd=tmp_path, env=shell)
    assert exported.returncode == 2 and "nothing.toml" in exported.stderr
    assert "./scripts/sandbox" not in exported.stderr, "variables set in the shell are a setup"


@pytest.mark.e2e
def test_sandbox_shows_everything_safely(fresh_copy: Path, tmp_path: Path) -> None:
    """`./scripts/sandbox` binds 127.0.0.1, prints a session admin key, secret and a signed-webhook
    example that works, the README's request delivers, and `./scripts/relay` in another shell finds
    the session; Ctrl-C cleans up."""
    ports = {
        "PORT": str(free_port()),
        "SANDBOX_BRAZE_PORT": str(free_port()),
        "SANDBOX_DEMO_PORT": str(free_port()),
    }
    shell = fresh_shell(tmp_path, **ports)
    log = (tmp_path / "sandbox.log").open("wb")
    sandbox = start_sandbox(fresh_copy, shell, log)
    relay = f"http://127.0.0.1:{ports['PORT']}"

    def up() -> bool:
        try:
            return requests.get(f"{relay}/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return sandbox.poll() is not None

    try:
        wait_for(up, 120, "the sandbox's web to answer")
        assert sandbox.poll() is None
        printed = (tmp_path / "sandbox.log").read_text()
        admin_key = re.search(r"password: (\S+)\)", printed)
        secret = re.search(r"webhook secret: (whsec_\S+)", printed)
        assert admin_key and secret, printed[:3000]
        assert f"Listening at: http://127.0.0.1:{ports['PORT']}" in printed, "web binds loopback only"
        session = (fresh_copy / "var" / "sandbox.env").read_text()
        assert admin_key.group(1) in session and secret.group(1) in session
        assert oct((fresh_copy / "var" / "sandbox.env").stat().st_mode & 0o777) == "0o600"
        admin = requests.get(f"{relay}/admin/", auth=("ops", admin_key.group(1)), timeout=10)
        assert admin.status_code == 200 and "Overview" in admin.text
        example = re.search(r"signed webhook: (.+)", printed)
        assert example
        sent = run(example.group(1).strip(), cwd=fresh_copy, env={**shell, "RELAY_URL": relay})
        assert sent.returncode == 0 and sent.stdout.startswith("202"), (sent.stdout, sent.stderr)
        sim = requests.get(f"http://127.0.0.1:{ports['SANDBOX_BRAZE_PORT']}/_sim/", timeout=10).json()
        assert {"/users/track", "/users/delete"} <= {entry["path"] for entry in sim["braze_endpoints"]}
        checked = run(f"{fresh_copy}/scripts/relay check", cwd=tmp_path, env=fresh_shell(tmp_path))
        assert checked.returncode == 0 and "sandbox (bundled Braze simulator)" in checked.stdout, (
            checked.stderr
        )
        wait_for(
            lambda: bool(
                requests.get(
                    f"http://127.0.0.1:{ports['SANDBOX_BRAZE_PORT']}/_sim/users/user-1", timeout=5
                ).ok
            ),
            30,
            "the signed webhook's event in the sandbox Braze",
        )
        sim_url = f"http://127.0.0.1:{ports['SANDBOX_BRAZE_PORT']}"
        post, look = [
            command.replace("http://127.0.0.1:8000", relay).replace("http://127.0.0.1:9100", sim_url)
            for command in readme_requests()
        ]
        posted = run(post, cwd=tmp_path, env=shell)
        assert (posted.returncode, posted.stdout.strip()) == (0, "{}"), (post, posted.stdout, posted.stderr)

        def delivered() -> bool:
            seen = run(look, cwd=tmp_path, env=shell)
            return seen.returncode == 0 and '"name":"signup"' in seen.stdout.replace(" ", "")

        wait_for(delivered, 30, "the README's postback in the sandbox Braze")
    finally:
        os.killpg(sandbox.pid, signal.SIGINT)
        stopping = time.monotonic()
        try:
            sandbox.wait(timeout=120)  # a stop waits for drain jobs and gunicorn to finish: slow under load
        except subprocess.TimeoutExpired:
            os.killpg(sandbox.pid, signal.SIGKILL)
        stopped = f"stopped after {time.monotonic() - stopping:.1f} s, exit {sandbox.wait()}"
        log.close()
    lines = (tmp_path / "sandbox.log").read_text().splitlines()
    assert not (fresh_copy / "var" / "sandbox.env").exists(), (
        "the session's keys are forgotten",
        stopped,
        lines[-15:],
    )
    assert any(json.loads(line).get("msg") == "worker started" for line in lines if line.startswith("{"))
