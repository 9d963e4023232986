"""A route's records loaded the one way (receiver/records/loader.py): the edge, `transform try`,
`send-test` and replay all go through it."""

from __future__ import annotations

from pathlib import Path

import pytest
from marshmallow import ValidationError

from receiver.records.loader import STAGE, RecordLoader
from relay.config import Settings
from relay.modes import Kind
from tests.helpers import ROUTES
from tests.test_transformed import ORDER, T1, TRANSFORM_ROUTES

RECEIVED = 1_764_000_500.0  # when a dead letter's request came in


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    """The usual routes and the transform test routes."""
    path = tmp_path / "relay.toml"
    path.write_text(ROUTES + TRANSFORM_ROUTES)
    return path


def loader(settings: Settings, route: str) -> RecordLoader:
    """The loader of a configured route."""
    return RecordLoader(settings.routes[route], settings.limits)


def test_an_untransformed_input_is_one_record_and_keeps_track_record_type(settings: Settings) -> None:
    """Without a transform an input is one record of the route's kind; `track_record_type` is a field
    of the sender's like any other (a property of the event), not a choice of kind."""
    made = loader(settings, "events").load(
        {"external_id": "u", "name": "a", "track_record_type": "purchases"}
    )
    (record,) = made.records
    assert made.error is None and record.kind is Kind.EVENTS and record.errors is None
    assert record.record["properties"] == {"track_record_type": "purchases"}


def test_a_transformed_input_makes_records_of_the_kinds_they_name(settings: Settings) -> None:
    """The order program makes an event, a purchase and an attribute update from one input."""
    made = loader(settings, "orders").load(ORDER)
    assert made.error is None
    assert [record.kind for record in made.records] == [Kind.EVENTS, Kind.PURCHASES, Kind.ATTRIBUTES]
    assert all(record.errors is None for record in made.records)


def test_a_failed_transform_names_the_route_and_the_input(settings: Settings) -> None:
    """jq failing on an input is that input's error, named as the caller says (`where`); no record."""
    made = loader(settings, "strict").load({"user": "u", "event": 7}, "input 3")
    assert made.records == [] and made.error is not None
    assert made.error.startswith("route 'strict', input 3: transform failed:")


def test_an_invalid_record_carries_its_errors_by_field(settings: Settings) -> None:
    """A record its schema refuses keeps what was sent and the errors, keyed by field."""
    record = loader(settings, "events").record({"external_id": "u"})
    assert record.errors == {"name": ["Missing data for required field."]} and record.record == {}


def test_a_dead_letter_is_loaded_again_with_its_time_or_the_receive_time(settings: Settings) -> None:
    """Replay loads a record as it was made; one without a time takes its request's receive time."""
    events = loader(settings, "events")
    untimed = {"external_id": "u", "name": "a"}
    again = events.load_again({"kind": Kind.EVENTS, "at": RECEIVED, "rec": {"raw": untimed}})
    assert again["time"] == RECEIVED and again["name"] == "a"
    timed = events.load_again({"kind": Kind.EVENTS, "at": RECEIVED, "rec": {"raw": {**untimed, "time": T1}}})
    assert timed["time"] == float(T1)


def test_a_failed_input_is_replayed_only_when_it_makes_one_record_of_its_kind(settings: Settings) -> None:
    """An input jq failed on goes through the current transform again: three records is refused,
    with the reason; a record of another kind than the dead letter's is refused too."""
    orders = loader(settings, "orders")
    failed = {"kind": Kind.EVENTS, "at": RECEIVED, "rec": {"raw": ORDER, "stage": STAGE}}
    with pytest.raises(ValidationError, match="makes 3 records of this input"):
        orders.load_again(failed)
    purchase = {"external_id": "u", "track_record_type": "purchases", "product_id": "p", "price": 1}
    made = {**purchase, "currency": "EUR"}
    with pytest.raises(ValidationError, match="now purchases, was events"):
        orders.load_again({"kind": Kind.EVENTS, "at": RECEIVED, "rec": {"raw": made}})
