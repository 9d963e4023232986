"""The operator's command line: `scripts/relay COMMAND` (or `python -m receiver COMMAND`).

From any shell and any directory: it reads the project's `.env` (variables already set win), or,
without one, the running sandbox's `var/sandbox.env`; relative paths in the relay's variables are
taken from the project directory, where the Procfile's processes run. A configuration error is one
line on stderr and exit status 2, as for the processes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dotenv import load_dotenv
from flask.cli import FlaskGroup

ROOT = Path(__file__).resolve().parent.parent
PATHS = {"RELAY_CONFIG": "relay.toml", "RELAY_EMBEDDED_REDIS": "var/relay.db"}  # and their defaults
SANDBOX_ENV = ROOT / "var" / "sandbox.env"  # written by scripts/sandbox while it runs


def environment_file() -> Path | None:
    """Where the variables come from: the project's .env, else the running sandbox's, else none."""
    for candidate in (ROOT / ".env", SANDBOX_ENV):
        if candidate.is_file():
            return candidate
    return None


def prepare_environment() -> None:
    """Load the variables file (set variables win) and anchor relative paths at the project."""
    found = environment_file()
    if found is not None:
        load_dotenv(found, override=False)
    for name, default in PATHS.items():
        value = os.environ.get(name) or default
        os.environ[name] = value if os.path.isabs(value) else str(ROOT / value)


def main(argv: list[str] | None = None) -> int:
    """Run one command of the relay's CLI; 2 with one line when the configuration cannot run."""
    prepare_environment()
    from receiver import create_app
    from relay.secrets import ConfigError

    try:
        app = create_app()
    except ConfigError as exc:
        print(f"braze-relay: configuration error: {exc}", file=sys.stderr)
        return 2
    group = FlaskGroup(
        name="relay",
        help="braze-relay's operator commands (check, dead, consent, send-test, ...).",
        create_app=lambda: app,
        add_version_option=False,
        load_dotenv=False,
        set_debug_flag=False,
    )
    try:
        group.main(args=argv, prog_name="scripts/relay", standalone_mode=True)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
