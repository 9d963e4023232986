"""The one error a configuration that cannot run raises, whichever part of it is at fault."""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration cannot run: the message names the variable, route or key at fault."""
