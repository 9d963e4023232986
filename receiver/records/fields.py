"""Marshmallow fields for what TD and webhook callers send: times, aliases, numbers as strings."""

from __future__ import annotations

import json
import math
import re
import time
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError, fields

from relay.text import SURROGATE

MAX_STRING = 255  # Braze: string values and keys up to 255 characters
MS_THRESHOLD = 1e11  # a UNIX time in seconds stays below this until the year 5138
MAX_AHEAD_S = 86400
# A time or a number written as text: the longest a sender writes is about 35 characters
# ("2026-11-30T10:00:00.123456+05:30"); a longer string is refused before any pattern or parser
# sees it, so none costs more than this.
MAX_NUMBER_TEXT = 64
NUMBER = re.compile(r"^[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?$")
# JSON may spell a UTF-16 surrogate as an escape; a lone one is no character and cannot be stored
# as UTF-8. Text without such an escape cannot hold one (the body was decoded as strict UTF-8).
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # relay/text.py's ESCAPED, for text
# A zone written as a name ("2026-11-30 10:00:00.123 UTC", as Presto prints a timestamp with zone).
ZONE_NAMES = ("UTC", "GMT", "Z")
# Braze's own event-time form: yyyy-MM-dd'T'HH:mm:ss:SSSZ, a colon before the milliseconds.
BRAZE_MILLIS = re.compile(r"(T\d{2}:\d{2}:\d{2}):(\d{3})")


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def strict_json(text: str | bytes) -> Any:
    """Parse JSON as Braze and the relay's storage need it: no NaN or Infinity, no repeated keys.

    Raises ValueError for anything else (malformed, too deep, a number too large to be finite).
    """
    try:
        value = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float, object_pairs_hook=_unique_keys
        )
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if SURROGATE_ESCAPE.search(text if isinstance(text, str) else text.decode("utf-8", "replace")):
        _refuse_lone_surrogates(value)
    return value


def _refuse_lone_surrogates(value: Any) -> None:
    """ValueError if any string or key holds a lone UTF-16 surrogate (a pair decodes to one character)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if SURROGATE.search(item):
                raise ValueError(
                    "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"
                )
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different: a repeated key makes the record ambiguous."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:64]!r}")
            seen.add(key)
    return obj


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def parse_time(value: Any) -> float:
    """ISO-8601 or UNIX seconds (number or numeric string) as UNIX seconds; naive times are UTC.

    ISO-8601 as senders write it: with a zone or without (UTC), 'T' or a space between date and
    time ("2026-11-30 10:00:00.123", AppsFlyer's and TD's form), a zone as an offset (+00:00, +0000)
    or as Z, UTC or GMT, and Braze's own "...T10:00:00:123Z".

    A time more than a day ahead is refused: it would hold a user's newest-value mark for its
    fields (no stale overwrite) and shut out every real change until the mark expires.
    """
    seconds = _seconds(value)
    if seconds > time.time() + MAX_AHEAD_S:
        raise ValidationError("Time is more than a day in the future.")
    return seconds


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValidationError("Not a valid time: use ISO-8601 or UNIX seconds.")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValidationError("Not a valid time: use ISO-8601 or UNIX seconds.") from None
    elif isinstance(value, str):
        if len(value) > MAX_NUMBER_TEXT:
            raise ValidationError(f"Not a valid time: longer than {MAX_NUMBER_TEXT} characters.")
        text = value.strip()
        try:
            if not NUMBER.match(text):
                raise ValueError(text)  # float() would take "1_000", " ١٢٣" and "nan" too
            seconds = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(BRAZE_MILLIS.sub(r"\1.\2", _zone_as_offset(text)))
            except ValueError:
                raise ValidationError("Not a valid time: use ISO-8601 or UNIX seconds.") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            if parsed.timestamp() < 0:
                raise ValidationError("Not a valid time: before 1970.") from None
            return parsed.timestamp()
    else:
        raise ValidationError("Not a valid time: use ISO-8601 or UNIX seconds.")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValidationError("Not a valid time: use ISO-8601 or UNIX seconds.")
    if seconds >= MS_THRESHOLD:
        raise ValidationError("Looks like milliseconds: send UNIX seconds.")
    return seconds


def _zone_as_offset(text: str) -> str:
    """A trailing zone name (Z, UTC or GMT, any case, spaces before it allowed) written as +00:00.

    String methods, not a pattern: `\\s*(?:Z|UTC|GMT)$` searched a run of spaces again from each of
    its characters, which made a long run of spaces cost its length squared.
    """
    for name in ZONE_NAMES:
        if text[-len(name) :].upper() == name:
            return text[: -len(name)].rstrip() + "+00:00"
    return text


class Time(fields.Field):
    """A record time: ISO-8601 or UNIX seconds, loaded as float UNIX seconds."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        return parse_time(value)


class BrazeString(fields.String):
    """A string Braze will accept: at most 255 characters."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # TD exports ids as numbers when the column is a long
        text: str = super()._deserialize(value, attr, data, **kwargs)
        if not text:
            raise ValidationError("Must not be empty.")
        if len(text) > MAX_STRING:
            raise ValidationError(f"Longer than {MAX_STRING} characters.")
        return text


def _refuse_long_number(value: Any) -> None:
    """ValidationError for a number written as a string longer than any sender writes one."""
    if isinstance(value, str) and len(value) > MAX_NUMBER_TEXT:
        raise ValidationError(f"Not a valid number: longer than {MAX_NUMBER_TEXT} characters.")


class LooseFloat(fields.Float):
    """A number that may arrive as a string, as TD postbacks send every value."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_nan=False, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        _refuse_long_number(value)
        return float(super()._deserialize(value, attr, data, **kwargs))


class LooseInteger(fields.Integer):
    """An integer that may arrive as a string ("2") or a whole float (2.0)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        _refuse_long_number(value)
        if isinstance(value, float):
            if not value.is_integer():
                raise self.make_error("invalid")
            value = int(value)
        elif isinstance(value, str) and value.strip().endswith(".0"):
            value = value.strip()[:-2]
        return int(super()._deserialize(value, attr, data, **kwargs))


class UserAlias(fields.Field):
    """Braze's user_alias: an object {alias_name, alias_label}, or that object as a JSON string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, str]:
        if isinstance(value, str):
            try:
                value = strict_json(value)
            except ValueError:
                raise ValidationError("Not a valid user_alias: expected {alias_name, alias_label}.") from None
        if not isinstance(value, dict) or set(value) != {"alias_name", "alias_label"}:
            raise ValidationError("Not a valid user_alias: expected {alias_name, alias_label}.")
        for key in ("alias_name", "alias_label"):
            if not isinstance(value[key], str) or not value[key] or len(value[key]) > MAX_STRING:
                raise ValidationError(f"user_alias.{key} must be a string of 1 to {MAX_STRING} characters.")
        return {"alias_name": value["alias_name"], "alias_label": value["alias_label"]}
