"""Request headers with their names in lower case (HTTP compares names case-insensitively), made once.

The edge lowers a request's header names once (`views.headers()`); the pure checks (auth,
signatures, idempotency) take any mapping and lower it only when it is not lowered already.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class HeaderItems(Protocol):
    """Anything with header (name, value) items: a dict, or werkzeug's request headers."""

    def items(self) -> Iterable[tuple[str, str]]: ...


class Lowered(dict[str, str]):
    """Headers whose names are already in lower case."""


def lowered(headers: HeaderItems) -> Lowered:
    """The headers with lower-case names (the same object when it already is)."""
    if isinstance(headers, Lowered):
        return headers
    return Lowered((name.lower(), value) for name, value in headers.items())
