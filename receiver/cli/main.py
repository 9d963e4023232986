"""`scripts/relay COMMAND` (or `python -m receiver COMMAND`): the variables, then the command.

From any shell and any directory: it reads the variables file given with `-e FILE`, else the
project's `.env`, else the running sandbox's `var/sandbox.env` (variables already set always win);
relative paths in the relay's variables are taken from the project directory, where the Procfile's
processes run. `--help` works without any configuration; a command whose configuration cannot run
prints one line on stderr and exits with status 2, as the processes do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import click
from dotenv import load_dotenv
from flask import Flask
from flask.cli import ScriptInfo

from receiver.cli.commands import COMMANDS
from receiver.cli.errors import Refusal

ROOT = Path(__file__).resolve().parents[2]  # the project directory
PATHS = {"RELAY_CONFIG": "relay.toml", "RELAY_EMBEDDED_REDIS": "var/relay.db"}  # and their defaults
SANDBOX_ENV = ROOT / "var" / "sandbox.env"  # written by scripts/sandbox while it runs
NO_VARIABLES = (
    "no variables file was found (no -e FILE, no .env, no running sandbox): start the sandbox with "
    "./scripts/sandbox, or give -e FILE, or set RELAY_CONFIG and the variables .env.example lists"
)


def environment_file(given: Path | None = None) -> Path | None:
    """Where the variables come from: the file given, the project's .env, the running sandbox's, or none."""
    if given is not None:
        return given
    for candidate in (ROOT / ".env", SANDBOX_ENV):
        if candidate.is_file():
            return candidate
    return None


def prepare_environment(given: Path | None = None) -> None:
    """Load the variables file (set variables win) and anchor relative paths at the project."""
    found = environment_file(given)
    if found is not None:
        load_dotenv(found, override=False)
    for name, default in PATHS.items():
        value = os.environ.get(name) or default
        os.environ[name] = value if os.path.isabs(value) else str(ROOT / value)


def app_for(create_app: Callable[[], Flask], *, bare: bool) -> Flask:
    """The relay's app for a command; a configuration that cannot run is one line (a Refusal), which
    in a `bare` shell (no variables file, no RELAY_CONFIG) also says where the variables come from."""
    try:
        return create_app()
    except Refusal as refused:
        if not bare:
            raise
        raise Refusal(f"{refused.message}; {NO_VARIABLES}") from None


@click.group(
    name="relay",
    help="braze-relay's operator commands (check, dead, consent, unchanged, send-test, transform).",
)
@click.option(
    "-e",
    "--env-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the variables from this file (default: the project's .env, else the running sandbox's).",
)
@click.pass_context
def relay_cli(ctx: click.Context, env_file: Path | None) -> None:
    """Runs before any command (never for --help): the environment, then the app when a command needs it."""
    bare = environment_file(env_file) is None and not os.environ.get("RELAY_CONFIG")
    prepare_environment(env_file)
    create_app = ctx.obj  # main's app factory; the commands find their app through flask's ScriptInfo
    ctx.obj = ScriptInfo(
        create_app=lambda: app_for(create_app, bare=bare), set_debug_flag=False, load_dotenv_defaults=False
    )


def main(create_app: Callable[[], Flask], argv: list[str] | None = None) -> int:
    """Run one command of the relay's CLI, on the app `create_app` builds; its exit status."""
    for command in COMMANDS:
        relay_cli.add_command(command)
    try:
        relay_cli.main(args=argv, prog_name="scripts/relay", obj=create_app, standalone_mode=True)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0
