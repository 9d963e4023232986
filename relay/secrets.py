"""Credentials that never show themselves, read from comma-separated variables so keys can rotate."""

from __future__ import annotations


class Secret:
    """A credential that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The raw value, for the one place that sends or compares it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def split_secrets(raw: str) -> tuple[Secret, ...]:
    """A comma-separated variable (so keys can be rotated) as a tuple of secrets."""
    return tuple(Secret(part.strip()) for part in raw.split(",") if part.strip())
