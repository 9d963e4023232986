"""How a command that cannot run ends: one line on stderr (`braze-relay: ...`) and exit status 2.

The same line whether the command runs under `scripts/relay`, `python -m receiver` or `flask --app
receiver`, and never a traceback: a configuration that cannot run, a file that cannot be read, a
Redis that does not answer.
"""

from __future__ import annotations

from typing import IO, Any

import click
import redis
from flask.cli import AppGroup

from relay import config
from relay.errors import ConfigError


class Refusal(click.ClickException):
    """A command that cannot run, said on one line; exit status 2, as the processes exit."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        """The one line, on stderr."""
        click.echo(f"braze-relay: {self.format_message()}", err=True)


class Command(click.Command):
    """One of the relay's commands: a Redis that does not answer ends it as a Refusal, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a Redis error is one line (its class only: its text may name the server)."""
        try:
            return super().invoke(ctx)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise Refusal(f"Redis does not answer ({type(exc).__name__})") from None
        except redis.RedisError as exc:  # a read-only replica, out of memory, ...
            raise Refusal(f"Redis refused the command ({type(exc).__name__})") from None


class Group(AppGroup):
    """A group of the relay's commands (`dead`, `consent`, ...): each of them a Command."""

    command_class = Command


def load_settings() -> config.Settings:
    """The settings; under a command, a configuration that cannot run is a Refusal, else ConfigError.

    The app factory reads its settings through this, so that `flask --app receiver check`, which
    calls the factory itself, ends in one line too.
    """
    try:
        return config.load_settings()
    except ConfigError as exc:
        if click.get_current_context(silent=True) is None:
            raise  # a server or a test: its caller says it (gunicorn.conf.py in one line, exit 2)
        raise Refusal(f"configuration error: {exc}") from None
