"""docs/operations.md and .env.example against the code: commands, variables and Procfile roles exist."""

from __future__ import annotations

import re
import shlex

import click
from flask import Flask

from handlers.worker import parse_args
from receiver.cli.main import relay_cli
from tests.processes import ROOT, procfile_command

DOC = (ROOT / "docs" / "operations.md").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
VENV_BIN = "/opt/braze-relay/.venv/bin/"
# The relay's own variables (and gunicorn's), as the doc and .env.example spell them.
ENV_NAME = re.compile(r"\b(?:(?:RELAY|BRAZE|GUNICORN)_[A-Z0-9_]+|REDIS_URL|WEB_CONCURRENCY|PORT|HOST)\b")


def flask_commands() -> list[list[str]]:
    """Every `scripts/relay ...` command in the doc, as words (comments, pipes and quotes cut)."""
    found = []
    for match in re.finditer(r"scripts/relay ([^`|#\n\\]*)", DOC):
        words = shlex.split(match.group(1))
        if words[:1] in (["-e"], ["--env-file"]):  # scripts/relay's own option, before the command
            assert words[0] in {opt for param in relay_cli.params for opt in param.opts}
            words = words[2:]
        found.append(words)
    return found


def resolve(app: Flask, words: list[str]) -> tuple[list[str], click.Command]:
    """The command path the words name (sub-commands until the first option or argument) and its command."""
    command: click.Command = app.cli
    path: list[str] = []
    for word in words:
        if not isinstance(command, click.Group) or word not in command.commands:
            break
        command = command.commands[word]
        path.append(word)
    return path, command


def test_every_flask_command_in_the_doc_exists_with_its_options(app: Flask) -> None:
    """Each `scripts/relay` command answers --help, and every option it uses is one it takes."""
    commands = flask_commands()
    assert len(commands) >= 8, "the doc's CLI commands were not found"
    runner = app.test_cli_runner()
    for words in commands:
        path, command = resolve(app, words)
        assert path and not isinstance(command, click.Group), f"not a command: scripts/relay {words}"
        result = runner.invoke(args=[*path, "--help"])
        assert result.exit_code == 0, (words, result.output)
        known = {opt for param in command.params for opt in param.opts}
        for word in words[len(path) :]:
            if word.startswith("--"):
                assert word in known, f"scripts/relay {' '.join(path)} has no option {word}"


def test_every_variable_in_the_doc_is_in_env_example() -> None:
    """Each environment variable the doc names is listed (with its default) in .env.example."""
    named = set(ENV_NAME.findall(DOC))
    assert {"REDIS_URL", "BRAZE_API_KEY", "RELAY_WRITE_KEYS", "RELAY_ADMIN_KEYS"} <= named
    missing = sorted(name for name in named if not re.search(rf"^#? ?{name}=", ENV_EXAMPLE, re.MULTILINE))
    assert missing == []


# Where the product reads its environment: the Python of its packages (and gunicorn's settings), its
# scripts and Procfiles, and the credential variables relay.example.toml's routes name.
PYTHON_READERS = [
    *(
        path
        for package in ("relay", "receiver", "handlers", "braze_sim", "sdk_demo")
        for path in (ROOT / package).rglob("*.py")
    ),
    ROOT / "gunicorn.conf.py",
]
SHELL_READERS = [ROOT / name for name in ("scripts/sandbox", "scripts/relay", "Procfile", "Procfile.sandbox")]
PYTHON_READ = re.compile(
    r"""(?:os\.environ\.get\(|os\.getenv\(|os\.environ\[|\benv\.\w+\()\s*["']([A-Z][A-Z0-9_]*)["']"""
)
SHELL_READ = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)")
ROUTE_CREDENTIALS = re.compile(r'^\w+_env = "([A-Z][A-Z0-9_]*)"', re.MULTILINE)
# Not the relay's to list: the shell's own, and requests' CA bundle variables (read as requests reads them).
OTHERS = {"PATH", "PWD", "PYTHONPATH", "BASH_SOURCE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"}


def test_every_variable_the_code_reads_is_in_env_example() -> None:
    """Each variable the code, the scripts, the Procfiles and the example routes read is in .env.example,
    and each one .env.example lists is read by one of them."""
    read = {name for path in PYTHON_READERS for name in PYTHON_READ.findall(path.read_text())}
    read |= {name for path in SHELL_READERS for name in SHELL_READ.findall(path.read_text())}
    read |= set(ROUTE_CREDENTIALS.findall((ROOT / "relay.example.toml").read_text()))
    read -= OTHERS
    assert {"RELAY_CONFIG", "GUNICORN_THREADS", "SANDBOX_DEMO_PORT", "SDK_WRITE_KEYS"} <= read, (
        "readers not found"
    )
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE, re.MULTILINE))
    assert sorted(read - listed) == []
    assert sorted(listed - read) == []


def test_procfile_roles_in_the_doc_exist_with_their_commands() -> None:
    """The roles table, the scale commands and the systemd ExecStart lines match the Procfile."""
    table = re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", DOC, re.MULTILINE)
    assert {role for role, _ in table} == {"web", "worker", "consent"}
    for role, command in table:
        assert procfile_command(role) == command, role
    for scale in re.findall(r"ps:scale (?:[\w-]+ )?((?:\w+=\d+ ?)+)", DOC):
        for role in re.findall(r"(\w+)=\d+", scale):
            procfile_command(role)  # KeyError names a role the Procfile does not have
    commands = {procfile_command(role) for role, _ in table}
    starts = re.findall(r"ExecStart=([^`\n]+)", DOC)
    assert len(starts) == 3
    for start in starts:
        assert start.removeprefix(VENV_BIN) in commands, start


def test_worker_options_in_the_doc_exist() -> None:
    """Every `python -m handlers.worker ...` in the doc parses with the worker's own options."""
    uses = re.findall(r"python -m handlers\.worker((?: --[a-z-]+)*)", DOC)
    assert uses
    for options in uses:
        parse_args(options.split())
