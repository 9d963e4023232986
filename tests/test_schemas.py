"""Record schemas per mode: what a loaded record holds, and which records Braze's rules refuse at the edge."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from receiver.records.schemas import schema_for
from relay.routes import Route

T1 = 1_764_000_000  # 2025-11-24T16:00:00Z
ALIAS = {"alias_name": "anon-9", "alias_label": "device"}

EVENTS = Route(
    name="events",
    mode="user_track",
    track_record_type="custom_events",
    pre_formatted_fields=("properties", "tags"),
)
PURCHASES = Route(name="purchases", mode="user_track", track_record_type="purchases")
PROFILES = Route(name="profiles", mode="user_track", track_record_type="user_profile_attributes")
PROFILES_UNSET = Route(
    name="profiles_unset", mode="user_track", track_record_type="user_profile_attributes", null_unsets=True
)
ALIASES = Route(name="aliases", mode="user_new_alias")
IDENTIFY = Route(name="identify", mode="user_identifying")
DELETES = Route(name="deletes", mode="user_delete")
CONSENT = Route(name="consent", mode="user_subscription")

EVENT = {"external_id": "u1", "name": "signup", "time": T1}
PURCHASE = {"external_id": "u1", "product_id": "sku-1", "currency": "USD", "price": 9.99, "time": T1}


def load(route: Route, record: Any) -> dict[str, Any]:
    """The record as the route's schema loads it."""
    return schema_for(route).load(record)


def errors_of(route: Route, record: Any) -> dict[str, Any]:
    """The validation messages the route's schema gives for the record (which must be refused)."""
    with pytest.raises(ValidationError) as caught:
        load(route, record)
    messages = caught.value.messages
    assert isinstance(messages, dict)
    return messages


def event(**fields: Any) -> dict[str, Any]:
    """The valid event with some fields changed."""
    return {**EVENT, **fields}


def purchase(**fields: Any) -> dict[str, Any]:
    """The valid purchase with some fields changed."""
    return {**PURCHASE, **fields}


# --- time --------------------------------------------------------------------------------------

GOOD_TIMES = {
    "ISO with Z": ("2025-11-24T16:00:00Z", T1),
    "ISO with fraction and Z": ("2025-11-24T16:00:00.250Z", T1 + 0.25),
    "ISO with +01:00": ("2025-11-24T17:00:00+01:00", T1),
    "ISO with -05:00": ("2025-11-24T11:00:00-05:00", T1),
    "ISO naive is UTC": ("2025-11-24T16:00:00", T1),
    "ISO with a space": ("2025-11-24 16:00:00+00:00", T1),
    "UNIX int": (T1, T1),
    "UNIX float": (T1 + 0.5, T1 + 0.5),
    "UNIX string": ("1764000000", T1),
    "UNIX float string with blanks": (" 1764000000.5 ", T1 + 0.5),
}


@pytest.mark.parametrize(("value", "expected"), GOOD_TIMES.values(), ids=GOOD_TIMES.keys())
def test_time_loads_as_unix_seconds(value: Any, expected: float) -> None:
    """ISO-8601 (Z, offset, naive = UTC) and UNIX seconds (number or string) load as float UNIX seconds."""
    loaded = load(EVENTS, event(time=value))["time"]
    assert isinstance(loaded, float)
    assert loaded == expected


BAD_TIMES = {
    "bad ISO": "2025-13-45T25:61:00Z",
    "words": "yesterday",
    "milliseconds": T1 * 1000,
    "milliseconds as string": str(T1 * 1000),
    "negative": -1,
    "boolean": True,
    "list": [T1],
    "NaN string": "NaN",
    "infinity string": "inf",
    "empty string": "",
}


@pytest.mark.parametrize("value", BAD_TIMES.values(), ids=BAD_TIMES.keys())
def test_bad_time_is_refused_on_time(value: Any) -> None:
    """A time that is neither ISO-8601 nor UNIX seconds (milliseconds included) is refused on `time`."""
    assert "time" in errors_of(EVENTS, event(time=value))


def test_milliseconds_are_named_as_such() -> None:
    """A time in milliseconds is refused with a message saying to send seconds."""
    assert "milliseconds" in errors_of(EVENTS, event(time=T1 * 1000))["time"][0]


def test_absent_time_is_none() -> None:
    """A record without time loads with time None (the edge fills in the receive time)."""
    assert load(EVENTS, {"external_id": "u1", "name": "signup"})["time"] is None


@pytest.mark.parametrize(
    "record",
    [
        {"external_id": "u1", "name": "signup", "td_record_time": T1},
        {"external_id": "u1", "name": "signup", "td_record_time": str(T1)},
        {"external_id": "u1", "name": "signup", "time": None, "td_record_time": T1},
    ],
    ids=["number", "string", "null time"],
)
def test_td_record_time_stands_in_for_time(record: dict[str, Any]) -> None:
    """td_record_time (TD's postback time) is the record's time when `time` is absent or null."""
    assert load(EVENTS, record)["time"] == T1


def test_time_wins_over_td_record_time() -> None:
    """When both are given, `time` is the record's time."""
    assert load(EVENTS, event(time=T1 + 60, td_record_time=T1))["time"] == T1 + 60


def test_bad_td_record_time_is_refused_on_time() -> None:
    """A td_record_time that is not a time is refused on `time`."""
    assert "time" in errors_of(EVENTS, {"external_id": "u1", "name": "signup", "td_record_time": "soon"})


def test_td_fields_are_dropped() -> None:
    """Fields starting with td_ are TD's own and never become properties."""
    loaded = load(EVENTS, event(plan="pro", td_client_id="c-1", td_ip="10.0.0.1", td_host="x"))
    assert loaded["properties"] == {"plan": "pro"}


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=1.79e9, allow_nan=False))
def test_unix_seconds_round_trip(seconds: float) -> None:
    """Any past UNIX-seconds time, as a number or as its string, loads as that same float."""
    assert load(EVENTS, event(time=seconds))["time"] == seconds
    assert load(EVENTS, event(time=repr(seconds)))["time"] == seconds


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=1_790_000_000))
def test_unix_integer_seconds_round_trip(seconds: int) -> None:
    """Any whole past UNIX-seconds time, as an int or a string, loads as float(seconds)."""
    assert load(EVENTS, event(time=seconds))["time"] == float(seconds)
    assert load(EVENTS, event(time=str(seconds)))["time"] == float(seconds)


# --- events and Braze's property rules ---------------------------------------------------------


def test_event_extra_fields_become_properties() -> None:
    """Fields an event does not declare become properties, beside the properties object."""
    loaded = load(EVENTS, event(plan="pro", properties={"source": "ad"}, app_id="app-1"))
    assert loaded == {
        "_id": {"external_id": "u1"},
        "time": float(T1),
        "name": "signup",
        "app_id": "app-1",
        "properties": {"plan": "pro", "source": "ad"},
    }


def test_numeric_identifier_becomes_a_string() -> None:
    """TD exports long ids as numbers: an external_id of 12345 loads as "12345"."""
    assert load(EVENTS, event(external_id=12345))["_id"] == {"external_id": "12345"}


PROPERTY_REFUSALS = {
    "value over 255": ({"note": "x" * 256}, "note"),
    "name over 255": ({"k" * 256: 1}, "k" * 64),
    "name starting with $": ({"$color": "red"}, "$color"),
    "named time": ({"time": 1}, "time"),
    "named event_name": ({"event_name": "x"}, "event_name"),
}


@pytest.mark.parametrize(("properties", "key"), PROPERTY_REFUSALS.values(), ids=PROPERTY_REFUSALS.keys())
def test_property_rules_are_checked(properties: dict[str, Any], key: str) -> None:
    """Braze's property rules hold: names and string values up to 255, no `$` start, no time or event_name."""
    assert key in errors_of(EVENTS, event(properties=properties))["properties"]


def test_property_rules_hold_for_extra_fields() -> None:
    """The same rules hold for fields that become properties by not being declared."""
    messages = errors_of(EVENTS, event(**{"$color": "red", "event_name": "x"}))
    assert set(messages["properties"]) == {"$color", "event_name"}


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=256, max_size=600))
def test_property_string_over_255_is_refused(value: str) -> None:
    """Any string longer than 255 characters as an event property value is refused on that property."""
    assert "note" in errors_of(EVENTS, event(note=value))["properties"]


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=255))
def test_property_string_up_to_255_is_kept(value: str) -> None:
    """Any string of up to 255 characters as an event property value is kept as it is."""
    assert load(EVENTS, event(note=value))["properties"] == {"note": value}


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40).map(lambda rest: "$" + rest))
def test_property_name_starting_with_dollar_is_refused(name: str) -> None:
    """Any property name starting with `$` is refused."""
    assert name[:64] in errors_of(EVENTS, event(properties={name: 1}))["properties"]


BAD_EVENTS = {
    "name over 255": (event(name="n" * 256), "name"),
    "empty name": (event(name=""), "name"),
    "no name": ({"external_id": "u1"}, "name"),
    "empty external_id": (event(external_id=""), "external_id"),
    "no identifier": ({"name": "signup"}, "identifier"),
    "two identifiers": (event(email="ann@example.com"), "identifier"),
    "properties not an object": (event(properties="[1, 2]"), "properties"),
    "not an object": ("signup", "_record"),
}


@pytest.mark.parametrize(("record", "field"), BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_bad_event_is_refused_on_field(record: Any, field: str) -> None:
    """An event Braze would refuse is refused, naming the field."""
    assert field in errors_of(EVENTS, record)


# --- pre-formatted fields ----------------------------------------------------------------------


def test_pre_formatted_fields_are_parsed() -> None:
    """Fields listed in pre_formatted_fields hold JSON strings, loaded as the object or array they hold."""
    loaded = load(EVENTS, event(properties='{"source": "ad", "n": 2}', tags='["a", "b"]'))
    assert loaded["properties"] == {"tags": ["a", "b"], "source": "ad", "n": 2}


@pytest.mark.parametrize("field", ["properties", "tags"])
def test_invalid_pre_formatted_json_is_refused_on_that_field(field: str) -> None:
    """A pre-formatted field that is not valid JSON is refused on that field."""
    assert set(errors_of(EVENTS, event(**{field: '{"source": '}))) == {field}


def test_fields_not_listed_are_not_parsed() -> None:
    """A JSON string in a field the route does not list stays a string (so properties must be an object)."""
    assert "properties" in errors_of(PURCHASES, purchase(properties='{"a": 1}'))
    assert load(EVENTS, event(note='{"a": 1}'))["properties"] == {"note": '{"a": 1}'}


def test_pre_formatted_properties_obey_property_rules() -> None:
    """Properties parsed from a pre-formatted string are held to Braze's property rules."""
    assert "$x" in errors_of(EVENTS, event(properties='{"$x": 1}'))["properties"]


@pytest.mark.parametrize("text", ['{"score": NaN}', '{"score": Infinity}'], ids=["NaN", "Infinity"])
def test_non_finite_number_in_pre_formatted_json_is_refused(text: str) -> None:
    """NaN or Infinity inside a pre-formatted JSON string is refused on that field (not JSON)."""
    assert "properties" in errors_of(EVENTS, event(properties=text))


# --- purchases ---------------------------------------------------------------------------------


def test_purchase_numbers_as_strings_are_coerced() -> None:
    """price and quantity may arrive as strings (TD postbacks) and load as numbers; currency upper-cased."""
    loaded = load(PURCHASES, purchase(price="9.99", quantity="2", currency="usd", color="red"))
    assert loaded == {
        "_id": {"external_id": "u1"},
        "time": float(T1),
        "product_id": "sku-1",
        "currency": "USD",
        "price": 9.99,
        "quantity": 2,
        "properties": {"color": "red"},
    }


@pytest.mark.parametrize(("value", "expected"), [("3", 3), ("3.0", 3), (4.0, 4), (1, 1), (100, 100)])
def test_quantity_whole_numbers_load(value: Any, expected: int) -> None:
    """A quantity that is a whole number, as an int, a float or a string, loads as that int."""
    assert load(PURCHASES, purchase(quantity=value))["quantity"] == expected


def test_quantity_defaults_to_one() -> None:
    """A purchase without quantity has quantity 1."""
    assert load(PURCHASES, PURCHASE)["quantity"] == 1


BAD_PURCHASES = {
    "quantity 0": (purchase(quantity=0), "quantity"),
    "quantity 101": (purchase(quantity=101), "quantity"),
    "quantity fractional string": (purchase(quantity="2.5"), "quantity"),
    "quantity boolean": (purchase(quantity=True), "quantity"),
    "price word": (purchase(price="cheap"), "price"),
    "price NaN string": (purchase(price="NaN"), "price"),
    "price boolean": (purchase(price=True), "price"),
    "currency XXX": (purchase(currency="XXX"), "currency"),
    "currency word": (purchase(currency="dollars"), "currency"),
    "no product_id": ({k: v for k, v in PURCHASE.items() if k != "product_id"}, "product_id"),
    "no price": ({k: v for k, v in PURCHASE.items() if k != "price"}, "price"),
    "no currency": ({k: v for k, v in PURCHASE.items() if k != "currency"}, "currency"),
}


@pytest.mark.parametrize(("record", "field"), BAD_PURCHASES.values(), ids=BAD_PURCHASES.keys())
def test_bad_purchase_is_refused_on_field(record: dict[str, Any], field: str) -> None:
    """A purchase Braze would refuse (quantity 1..100, ISO 4217 currency, numeric price) names the field."""
    assert field in errors_of(PURCHASES, record)


def test_fractional_quantity_is_refused() -> None:
    """A quantity of 2.5 is refused rather than silently sent to Braze as 2."""
    assert "quantity" in errors_of(PURCHASES, purchase(quantity=2.5))


# --- identifiers and user_alias ----------------------------------------------------------------

ALIAS_FORMS = {
    "object": {"user_alias": ALIAS},
    "JSON string": {"user_alias": json.dumps(ALIAS)},
    "name and label pair": dict(ALIAS),
}


@pytest.mark.parametrize("identifier", ALIAS_FORMS.values(), ids=ALIAS_FORMS.keys())
def test_user_alias_forms_load_alike(identifier: dict[str, Any]) -> None:
    """user_alias as an object, as its JSON string, or as alias_name + alias_label loads as one object."""
    assert load(EVENTS, {**identifier, "name": "signup"})["_id"] == {"user_alias": ALIAS}


BAD_ALIASES = {
    "name without label": ({"alias_name": "anon-9"}, "alias_label"),
    "label without name": ({"alias_label": "device"}, "alias_name"),
    "object and pair": ({"user_alias": ALIAS, **ALIAS}, "user_alias"),
    "extra key": ({"user_alias": {**ALIAS, "x": "y"}}, "user_alias"),
    "missing label in object": ({"user_alias": {"alias_name": "anon-9"}}, "user_alias"),
    "string not JSON": ({"user_alias": "anon-9/device"}, "user_alias"),
    "name over 255": ({"user_alias": {**ALIAS, "alias_name": "a" * 256}}, "user_alias"),
    "not an object": ({"user_alias": ["anon-9", "device"]}, "user_alias"),
}


@pytest.mark.parametrize(("identifier", "field"), BAD_ALIASES.values(), ids=BAD_ALIASES.keys())
def test_bad_user_alias_is_refused(identifier: dict[str, Any], field: str) -> None:
    """A user_alias that is not {alias_name, alias_label} in one of its forms is refused, naming the field."""
    assert field in errors_of(EVENTS, {**identifier, "name": "signup"})


# --- profile attributes ------------------------------------------------------------------------


def test_attributes_keep_email_when_external_id_identifies() -> None:
    """With external_id as the identifier, email (and phone) stay as attributes."""
    loaded = load(
        PROFILES,
        {
            "external_id": "u1",
            "email": "ann@example.com",
            "phone": "+4790000000",
            "first_name": "Ann",
            "time": T1,
        },
    )
    assert loaded == {
        "_id": {"external_id": "u1"},
        "time": float(T1),
        "attributes": {"email": "ann@example.com", "phone": "+4790000000", "first_name": "Ann"},
    }


def test_attributes_identified_by_email() -> None:
    """With email as the only identifier, it identifies and is not repeated as an attribute."""
    loaded = load(PROFILES, {"email": "ann@example.com", "first_name": "Ann"})
    assert loaded["_id"] == {"email": "ann@example.com"}
    assert loaded["attributes"] == {"first_name": "Ann"}


def test_null_attributes_are_left_out_by_default() -> None:
    """Null fields are left out of the attributes unless the route sets null_unsets."""
    loaded = load(PROFILES, {"external_id": "u1", "first_name": "Ann", "home_city": None, "email": None})
    assert loaded["attributes"] == {"first_name": "Ann"}


def test_null_unsets_keeps_nulls() -> None:
    """With null_unsets = true, null fields are kept (Braze unsets them), email included."""
    loaded = load(
        PROFILES_UNSET, {"external_id": "u1", "first_name": "Ann", "home_city": None, "email": None}
    )
    assert loaded["attributes"] == {"first_name": "Ann", "home_city": None, "email": None}


def test_braze_own_attribute_names_pass_through() -> None:
    """Braze's own attribute names, such as email_subscribe, pass through as attributes."""
    loaded = load(PROFILES, {"external_id": "u1", "email_subscribe": "opted_in", "country": "NO"})
    assert loaded["attributes"] == {"email_subscribe": "opted_in", "country": "NO"}


BAD_PROFILES = {
    "identifier only": ({"external_id": "u1", "time": T1}, "_record"),
    "only nulls besides identifier": ({"external_id": "u1", "home_city": None}, "_record"),
    "no identifier": ({"first_name": "Ann"}, "identifier"),
    "string over 255": ({"external_id": "u1", "bio": "x" * 256}, "bio"),
    "name over 255": ({"external_id": "u1", "k" * 256: 1}, "k" * 64),
}


@pytest.mark.parametrize(("record", "field"), BAD_PROFILES.values(), ids=BAD_PROFILES.keys())
def test_bad_profile_is_refused(record: dict[str, Any], field: str) -> None:
    """A profile record with nothing to set, no identifier or an over-long value is refused, naming it."""
    assert field in errors_of(PROFILES, record)


# --- new alias, identify -----------------------------------------------------------------------


def test_new_alias_loads_with_optional_external_id() -> None:
    """user_new_alias takes alias_name + alias_label, keeps an external_id, and ignores other columns."""
    assert load(ALIASES, {**ALIAS, "external_id": "u4", "crm_row": 7}) == {
        "time": None,
        **ALIAS,
        "external_id": "u4",
    }
    assert load(ALIASES, ALIAS) == {"time": None, **ALIAS}


@pytest.mark.parametrize("missing", ["alias_name", "alias_label"])
def test_new_alias_requires_name_and_label(missing: str) -> None:
    """user_new_alias refuses a record missing alias_name or alias_label, naming it."""
    record = {key: value for key, value in ALIAS.items() if key != missing}
    assert missing in errors_of(ALIASES, record)


@pytest.mark.parametrize(
    "alias",
    [dict(ALIAS), {"user_alias": ALIAS}, {"user_alias": json.dumps(ALIAS)}],
    ids=["pair", "object", "JSON string"],
)
def test_identify_takes_external_id_and_alias(alias: dict[str, Any]) -> None:
    """user_identifying loads external_id with the alias, in any of its forms; other columns are ignored."""
    loaded = load(IDENTIFY, {"external_id": "u5", **alias, "crm_row": 7})
    assert loaded == {"time": None, "external_id": "u5", "user_alias": ALIAS}


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"external_id": "u5"}, "identifier"),
        (dict(ALIAS), "external_id"),
        ({"external_id": "u5", "email": "ann@example.com", **ALIAS}, "identifier"),
    ],
    ids=["no alias", "no external_id", "email beside the alias"],
)
def test_identify_requires_external_id_and_alias(record: dict[str, Any], field: str) -> None:
    """user_identifying refuses a record without both external_id and an alias."""
    assert field in errors_of(IDENTIFY, record)


# --- consent -----------------------------------------------------------------------------------

GOOD_CONSENTS = {
    "group state": {
        "external_id": "u7",
        "subscription_group_id": "g-news",
        "subscription_state": "unsubscribed",
    },
    "email_subscribe": {"email": "ann@example.com", "email_subscribe": "opted_in"},
    "push_subscribe": {"phone": "+4790000000", "push_subscribe": "unsubscribed"},
    "group and global": {
        "external_id": "u7",
        "subscription_group_id": "g-news",
        "subscription_state": "subscribed",
        "email_subscribe": "subscribed",
        "push_subscribe": "opted_in",
    },
}


@pytest.mark.parametrize("record", GOOD_CONSENTS.values(), ids=GOOD_CONSENTS.keys())
def test_consent_loads(record: dict[str, Any]) -> None:
    """A consent record keeps its identifier under _id and its states as given."""
    loaded = load(CONSENT, {**record, "time": T1, "extra_column": "x"})
    identifier = {key: record[key] for key in ("external_id", "email", "phone") if key in record}
    states = {key: value for key, value in record.items() if key not in identifier}
    assert loaded == {"_id": identifier, "time": float(T1), **states}


BAD_CONSENTS = {
    "group id without state": (
        {"external_id": "u7", "subscription_group_id": "g-news"},
        "subscription_state",
    ),
    "state without group id": (
        {"external_id": "u7", "subscription_state": "subscribed"},
        "subscription_group_id",
    ),
    "group state opted_in": (
        {"external_id": "u7", "subscription_group_id": "g", "subscription_state": "opted_in"},
        "subscription_state",
    ),
    "email_subscribe unknown": ({"external_id": "u7", "email_subscribe": "maybe"}, "email_subscribe"),
    "push_subscribe unknown": ({"external_id": "u7", "push_subscribe": "yes"}, "push_subscribe"),
    "nothing to set": ({"external_id": "u7"}, "_record"),
    "braze_id identifier": ({"braze_id": "b-1", "email_subscribe": "opted_in"}, "identifier"),
    "no identifier": ({"email_subscribe": "opted_in"}, "identifier"),
}


@pytest.mark.parametrize(("record", "field"), BAD_CONSENTS.values(), ids=BAD_CONSENTS.keys())
def test_bad_consent_is_refused(record: dict[str, Any], field: str) -> None:
    """Group id and state go together, states take only their allowed values, and the identifier fits."""
    assert field in errors_of(CONSENT, record)


# --- delete ------------------------------------------------------------------------------------

DELETE_IDENTIFIERS = {
    "external_id": ({"external_id": "u6"}, {"external_id": "u6"}),
    "braze_id": ({"braze_id": "5f1c0e"}, {"braze_id": "5f1c0e"}),
    "email": ({"email": "gone@example.com"}, {"email": "gone@example.com"}),
    "phone": ({"phone": "+4790000000"}, {"phone": "+4790000000"}),
    "user_alias object": ({"user_alias": ALIAS}, {"user_alias": ALIAS}),
    "user_alias string": ({"user_alias": json.dumps(ALIAS)}, {"user_alias": ALIAS}),
    "alias pair": (dict(ALIAS), {"user_alias": ALIAS}),
    "null others ignored": (
        {"external_id": None, "email": "gone@example.com"},
        {"email": "gone@example.com"},
    ),
}


@pytest.mark.parametrize(("record", "identifier"), DELETE_IDENTIFIERS.values(), ids=DELETE_IDENTIFIERS.keys())
def test_delete_takes_each_identifier(record: dict[str, Any], identifier: dict[str, Any]) -> None:
    """user_delete loads the one identifier of the user, whichever kind it is; other columns are ignored."""
    assert load(DELETES, {**record, "crm_row": 7}) == {"_id": identifier, "time": None}


@pytest.mark.parametrize(
    "record", [{}, {"external_id": "u6", "email": "gone@example.com"}], ids=["none", "two"]
)
def test_delete_requires_exactly_one_identifier(record: dict[str, Any]) -> None:
    """user_delete refuses a record with no identifier or with two."""
    assert "identifier" in errors_of(DELETES, record)


@pytest.mark.parametrize(
    "value",
    [time.time() + 2 * 86400, "9999-12-31T00:00:00Z", "١٢٣", "1_000", "nan"],
    ids=["two days ahead", "year 9999", "arabic digits", "underscore", "nan"],  # alike in every process
)
def test_far_future_and_odd_times_are_refused(value: object) -> None:
    """A time over a day ahead (it would pin the newest-value mark) or a non-ASCII number is refused."""
    with pytest.raises(ValidationError) as refused:
        load(EVENTS, event(time=value))
    assert "time" in refused.value.messages
