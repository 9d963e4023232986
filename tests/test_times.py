"""Record times as real senders write them: ISO-8601 with or without a zone, TD's form, UNIX seconds."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from receiver.records.fields import parse_time

T = 1_764_000_000.0  # 2025-11-24T16:00:00Z
T_MS = T + 0.123

SENDERS = {
    "ISO-8601 with Z (Segment, Braze)": ("2025-11-24T16:00:00.123Z", T_MS),
    "ISO-8601 with an offset (Shopify)": ("2025-11-24T11:00:00-05:00", T),
    "offset without a colon (AppsFlyer's *_selected_timezone)": ("2025-11-24 16:00:00.123+0000", T_MS),
    "no zone, space, milliseconds: UTC (AppsFlyer, TD)": ("2025-11-24 16:00:00.123", T_MS),
    "no zone, T, seconds: UTC": ("2025-11-24T16:00:00", T),
    "a zone by name (Presto's timestamp with time zone)": ("2025-11-24 16:00:00.123 UTC", T_MS),
    "GMT": ("2025-11-24 16:00:00 GMT", T),
    "spaces before the zone name, and a tab": ("2025-11-24 16:00:00 \t utc", T),
    "lower-case z": ("2025-11-24T16:00:00z", T),
    "Braze's colon before milliseconds": ("2025-11-24T16:00:00:123Z", T_MS),
    "UNIX seconds": (1_764_000_000, T),
    "UNIX seconds with a fraction": (1_764_000_000.5, T + 0.5),
    "UNIX seconds as a string (TD postbacks)": ("1764000000", T),
}


@pytest.mark.parametrize(("value", "seconds"), SENDERS.values(), ids=SENDERS.keys())
def test_sender_times_are_understood(value: object, seconds: float) -> None:
    """Each form a real sender uses becomes the same UNIX seconds; a time without a zone is UTC."""
    assert parse_time(value) == pytest.approx(seconds, abs=1e-6)


REFUSED = {
    "milliseconds": (1_764_000_000_123, "milliseconds"),
    "a date in words": ("24 November 2025", "Not a valid time"),
    "a zone name other than UTC": ("2025-11-24 16:00:00 CET", "Not a valid time"),
    "before 1970": ("1969-12-31T23:59:59Z", "before 1970"),
    "more than a day ahead": ("2999-01-01T00:00:00Z", "future"),
    "longer than 64 characters, even if a time": ("2025-11-24 16:00:00" + " " * 50 + "UTC", "longer than 64"),
    "a number longer than 64 characters": ("1" * 65, "longer than 64"),
}


@pytest.mark.parametrize(("value", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_other_times_are_refused_with_a_reason(value: object, reason: str) -> None:
    """What is not one of those forms is refused, saying why (never guessed)."""
    with pytest.raises(ValidationError) as refused:
        parse_time(value)
    assert reason in str(refused.value)
