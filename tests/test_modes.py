"""The relay's vocabulary (relay/modes.py): one registry entry per mode, each kind in one lane family,
registries that must be complete. Pure. (Each endpoint's rate-limit family is test_translate.py's.)"""

from __future__ import annotations

import pytest

from receiver.records.schemas import schema_for
from relay.modes import (
    BY_KIND,
    MODES,
    ROUTE_MODES,
    TRACK_TYPE_MODES,
    TRACK_TYPES,
    Kind,
    KindRegistry,
    LaneFamily,
    Mode,
    kind_of,
    mode_of,
)
from relay.routes import Route


def test_every_kind_has_one_mode() -> None:
    """The registry names each kind once; the routes file's modes and track types come from it."""
    assert [mode.kind for mode in MODES] == list(Kind)
    assert set(BY_KIND) == set(Kind)
    assert ROUTE_MODES == (
        "user_track",
        "user_new_alias",
        "user_identifying",
        "user_delete",
        "user_subscription",
    )
    assert TRACK_TYPES == ("custom_events", "purchases", "user_profile_attributes")
    assert {"user_track"} == TRACK_TYPE_MODES


@pytest.mark.parametrize("mode", MODES, ids=[mode.kind.value for mode in MODES])
def test_a_modes_entry_is_found_by_what_the_routes_file_says(mode: Mode) -> None:
    """mode_of finds an entry by `mode` and, for user_track, `track_record_type`."""
    assert mode_of(mode.mode, mode.track_record_type) is mode


def test_a_mode_the_registry_does_not_hold_is_a_key_error() -> None:
    """An unknown mode, or user_track without a track type it knows, is not found."""
    for mode, track_type in (("user_tracking", None), ("user_track", None), ("user_track", "events")):
        with pytest.raises(KeyError):
            mode_of(mode, track_type)


@pytest.mark.parametrize("mode", MODES, ids=[mode.kind.value for mode in MODES])
def test_each_modes_send_test_record_loads_by_its_schema(mode: Mode) -> None:
    """`send-test`'s sample record of each mode is one its own schema accepts."""
    route = Route("sample", mode.mode, track_record_type=mode.track_record_type)
    loaded = schema_for(route).load(dict(mode.sample))
    assert loaded, "loads without a ValidationError, into a record"


def test_track_kinds_share_the_track_lane_and_the_rest_have_their_own() -> None:
    """Events, purchases and attributes go by /users/track, one lane family; every other kind alone."""
    lanes = {kind: BY_KIND[kind].lane for kind in Kind}
    assert {kind for kind, lane in lanes.items() if lane is LaneFamily.TRACK} == {
        Kind.EVENTS,
        Kind.PURCHASES,
        Kind.ATTRIBUTES,
    }
    others = [lane for lane in lanes.values() if lane is not LaneFamily.TRACK]
    assert len(others) == len(set(others)) == len(LaneFamily) - 1


def test_only_modes_that_cannot_harm_take_records_from_pages() -> None:
    """A page's key is public: deleting, aliasing and identifying users are not for pages; the order
    across lanes is kept by the modes that create, link or delete users."""
    assert {mode.kind for mode in MODES if mode.from_pages} == {
        Kind.EVENTS,
        Kind.PURCHASES,
        Kind.ATTRIBUTES,
        Kind.CONSENT,
    }
    assert {mode.kind for mode in MODES if mode.gate} == {Kind.ALIAS, Kind.IDENTIFY, Kind.DELETE}
    assert {mode.kind for mode in MODES if mode.erases} == {Kind.DELETE}
    assert {mode.kind for mode in MODES if mode.links} == {Kind.IDENTIFY}


def test_a_kind_queued_under_its_old_name_still_reads() -> None:
    """Records queued before consent's rename say `subscription`: they read as consent."""
    assert kind_of("subscription") is Kind.CONSENT is Kind("subscription")
    assert kind_of("events") is Kind.EVENTS
    with pytest.raises(ValueError, match="nothing"):
        kind_of("nothing")


def test_a_registry_is_checked_complete_and_takes_each_kind_once() -> None:
    """A kind registered twice is refused; a registry missing kinds names them when checked."""
    table: KindRegistry[str] = KindRegistry("translator")
    table.register(Kind.EVENTS)("one")
    with pytest.raises(ValueError, match="two translators for kind events"):
        table.register(Kind.EVENTS)("again")
    with pytest.raises(RuntimeError, match=r"no translator for kind\(s\) purchases"):
        table.complete()
    for kind in Kind:
        if kind not in table:
            table.register(kind)(kind.value)
    table.complete()
