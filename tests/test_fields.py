"""Record fields (receiver/records/fields.py): times as real senders write them, and no field costing more
than linear time: a 1 MB hostile string in any field is refused, naming it.

Each field of each mode's schema gets strings shaped against the patterns and parsers the edge
applies (runs of spaces before a letter, digits, repeated separators, JSON openings, escapes), through
the real schema and through the real app on the real Redis; and gunicorn, started as the Procfile
starts it, answers a hostile 60 KB time at once and keeps answering. Speed itself is measured by
bench/hostile_fields.py, never asserted here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask.testing import FlaskClient
from marshmallow import ValidationError

from braze_sim.server import Simulator
from receiver.records.fields import parse_time
from receiver.records.schemas import schema_for
from relay.routes import Route
from tests.helpers import REDIS_URL, WRITE_KEY, route_table
from tests.processes import running_stack

SIZE = 1_000_000  # characters of each hostile string
# Strings shaped against each pattern and parser a field's value meets: the zone-name suffix
# (spaces, then a letter that is no zone), numbers (digits, fraction, exponent), Braze's
# "T10:00:00:123" form, JSON text (pre-formatted fields, user_alias), surrogate escapes.
HOSTILE = {
    "spaces": " " * SIZE,
    "digit, spaces, letter": "1" + " " * (SIZE - 2) + "x",
    "digit, wide spaces, letter": "1" + "\u2003" * (SIZE - 2) + "x",
    "spaces before a zone, twice": "1" + " " * (SIZE - 8) + " UTC UTC",
    "digits": "9" * SIZE,
    "a long fraction": "1." + "1" * (SIZE - 2),
    "a long exponent": "1e" + "1" * (SIZE - 2),
    "repeated time separators": "T00:00:00:" * (SIZE // 10),
    "dashes and colons": "-:" * (SIZE // 2),
    "JSON openings": "[" * SIZE,
    "JSON keys": '{"a":' * (SIZE // 5),
    "surrogate escapes": "\\ud800" * (SIZE // 6),
}
# One route per mode (the routes of tests/helpers.py ROUTES) and a valid record of each.
ROUTES = {
    "events": (
        Route(
            "events",
            "user_track",
            track_record_type="custom_events",
            pre_formatted_fields=("properties", "tags"),
        ),
        {"external_id": "u1", "name": "signup"},
    ),
    "purchases": (
        Route("purchases", "user_track", track_record_type="purchases"),
        {"external_id": "u1", "product_id": "sku-1", "currency": "USD", "price": 9.99},
    ),
    "profiles": (
        Route("profiles", "user_track", track_record_type="user_profile_attributes"),
        {"external_id": "u1", "plan": "pro"},
    ),
    "aliases": (
        Route("aliases", "user_new_alias"),
        {"alias_name": "anon-9", "alias_label": "device", "external_id": "u1"},
    ),
    "identify": (
        Route("identify", "user_identifying"),
        {"external_id": "u1", "alias_name": "anon-9", "alias_label": "device"},
    ),
    "deletes": (Route("deletes", "user_delete"), {"external_id": "u1"}),
    "consent": (Route("consent", "user_subscription"), {"external_id": "u1", "email_subscribe": "opted_in"}),
}
FREE_FIELD = "plan"  # an undeclared field: a property or an attribute where the mode keeps them


def caller_fields(route: Route) -> list[str]:
    """Every field a caller can fill on this route: the schema's own, TD's time, a free one if kept."""
    schema = schema_for(route)
    names = [*schema.declared_fields, "td_record_time"]
    if schema.opts.unknown == "include":
        names.append(FREE_FIELD)
    return names


def expected_name(field: str) -> str:
    """The name the refusal gives a field (td_record_time is loaded as the record's time)."""
    return "time" if field == "td_record_time" else field


def names_in(errors: Any) -> set[str]:
    """Every key of a nested error dict (a free property is named under `properties`)."""
    if not isinstance(errors, dict):
        return set()
    return set(errors) | {name for value in errors.values() for name in names_in(value)}


def hostile_records() -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(route, field, shape, record): each route's valid record with one field made hostile."""
    for route_name, (route, valid) in ROUTES.items():
        for field in caller_fields(route):
            for shape, text in HOSTILE.items():
                yield route_name, field, shape, {**valid, field: text}


@pytest.mark.parametrize("route_name", ROUTES)
def test_the_schema_refuses_a_hostile_string_in_any_field(route_name: str) -> None:
    """Every field of the mode's schema, given each 1 MB hostile string, is refused by name."""
    route, valid = ROUTES[route_name]
    schema = schema_for(route)
    for field in caller_fields(route):
        for shape, text in HOSTILE.items():
            with pytest.raises(ValidationError) as refused:
                schema.load({**valid, field: text})
            assert expected_name(field) in names_in(refused.value.messages), (field, shape)


@pytest.mark.parametrize("route_name", ROUTES)
def test_the_edge_answers_a_hostile_string_in_any_field_with_422(
    client: FlaskClient, clean_redis: redis.Redis, route_name: str
) -> None:
    """Through the app (TD ingestion, the largest body limit): 422 naming the field, nothing stored."""
    route, valid = ROUTES[route_name]
    for field in caller_fields(route):
        for shape, text in HOSTILE.items():
            body = json.dumps({"records": [{**valid, field: text}]}, ensure_ascii=False).encode()
            answer = client.post(
                f"/db/{route_table(route_name)}",
                data=body,
                headers={"Content-Type": "application/json", "X-TD-Write-Key": WRITE_KEY},
            )
            assert answer.status_code == 422, (field, shape, answer.status_code)
            assert expected_name(field) in names_in(answer.json["errors"]["records"]["0"]), (field, shape)
    assert not clean_redis.keys("relay:q:*")


# The old zone-name pattern took about 30 s over this time (60 KB), holding the GIL: every thread of
# the web process stopped, and gunicorn killed it. The client waits far longer than an answer takes
# (milliseconds) but far less than that: a frozen process fails the test instead of slowing it.
HOSTILE_TIME = "1" + " " * 60_000 + "x"
CLIENT_TIMEOUT_S = 10.0


@pytest.mark.e2e
def test_a_hostile_time_leaves_the_web_process_answering(
    tmp_path: Path, routes_file: Path, braze: Simulator, clean_redis: redis.Redis
) -> None:
    """gunicorn with one process: the hostile postback is answered 422 naming `time`, then /healthz."""
    with running_stack(tmp_path, routes_file, braze, REDIS_URL, WEB_CONCURRENCY="1") as (_, base):
        hostile = requests.post(
            f"{base}/postback/v3/event/db/events",
            json={"external_id": "u1", "name": "signup", "time": HOSTILE_TIME},
            headers={"X-TD-Write-Key": WRITE_KEY},
            timeout=CLIENT_TIMEOUT_S,
        )
        assert hostile.status_code == 422
        assert "time" in hostile.json()["errors"]["records"]["0"]
        after = requests.get(f"{base}/healthz", timeout=CLIENT_TIMEOUT_S)
        assert after.status_code == 200


# --- times as senders write them: ISO-8601 with or without a zone, TD's form, UNIX seconds -----

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
