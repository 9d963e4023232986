"""Checks on /users/track objects, reported the way Braze does: one error per bad item, by array and index.

The identifier rule: at most one of external_id, braze_id and user_alias; with none of them, email and
then phone identify the object (both may be present: email wins). In an attributes object that has an
external_id, `email` and `phone` are ordinary profile fields.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from braze_sim.attributes import ARRAY_OPS, is_array_op, is_increment, is_number
from braze_sim.config import RejectItem
from braze_sim.profile import Identifier, TrackItem

ARRAYS = ("attributes", "events", "purchases")
IDENTIFIER_REQUIRED = "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required"
IDENTIFIER_AMBIGUOUS = "only one of 'external_id', 'braze_id' or 'user_alias' may be given"
INVALID_EMAIL = "The value provided for the 'email' field is not a valid email."
MAX_STRING = 255
SUBSCRIBE_STATES = ("opted_in", "subscribed", "unsubscribed")
GROUP_STATES = ("subscribed", "unsubscribed")
RESERVED_PROPERTIES = ("time", "event_name")
CURRENCY = re.compile(r"[A-Z]{3}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# Braze also accepts yyyy-MM-dd'T'HH:mm:ss:SSSZ, with a colon before the milliseconds.
BRAZE_MILLIS = re.compile(r"(T\d{2}:\d{2}:\d{2}):(\d{3})")


def is_text(value: Any) -> bool:
    """True for a non-empty string."""
    return isinstance(value, str) and value != ""


def parse_time(value: Any) -> datetime | None:
    """Parse an ISO-8601 time (or Braze's colon-millis variant); None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(BRAZE_MILLIS.sub(r"\1.\2", value))
    except ValueError:
        return None


def alias_of(value: Any) -> tuple[str, str] | None:
    """The (alias_name, alias_label) pair of a user_alias object, or None when malformed."""
    if isinstance(value, dict) and is_text(value.get("alias_name")) and is_text(value.get("alias_label")):
        return value["alias_name"], value["alias_label"]
    return None


def identifier_of(obj: dict[str, Any]) -> Identifier | str:
    """The identifier of a Braze object (track item, merge or delete entry), or an error type."""
    primary = [k for k in ("external_id", "braze_id", "user_alias") if obj.get(k) is not None]
    if len(primary) > 1:
        return IDENTIFIER_AMBIGUOUS
    if primary == ["user_alias"]:
        alias = alias_of(obj["user_alias"])
        return ("user_alias", alias) if alias else IDENTIFIER_REQUIRED
    if primary:
        return (primary[0], obj[primary[0]]) if is_text(obj[primary[0]]) else IDENTIFIER_REQUIRED
    if obj.get("email") is not None:
        return (
            ("email", obj["email"])
            if isinstance(obj["email"], str) and EMAIL.fullmatch(obj["email"])
            else INVALID_EMAIL
        )
    if is_text(obj.get("phone")):
        return "phone", obj["phone"]
    return IDENTIFIER_REQUIRED


def over_limit(arrays: dict[str, list[Any]], per_array: int, combined: int | None) -> list[dict[str, Any]]:
    """Errors for arrays longer than Braze allows: `combined` across the three (75 by default), and
    `per_array` each (75), as https://www.braze.com/docs/api/api_limits/ gives them; the caller answers
    400 "Max Input Length Exceeded" (https://www.braze.com/docs/api/errors/)."""
    errors = [
        {"type": f"'{name}' has {len(items)} objects; at most {per_array} are allowed", "input_array": name}
        for name, items in arrays.items()
        if len(items) > per_array
    ]
    total = sum(len(items) for items in arrays.values())
    if combined is not None and total > combined:
        errors.append({"type": f"{total} objects in total; at most {combined} are allowed combined"})
    return errors


def validate_track(
    arrays: dict[str, list[Any]], reject_item: RejectItem | None = None
) -> tuple[list[TrackItem], list[dict[str, Any]]]:
    """Split track objects into valid items (in Braze's processing order) and Braze-shaped errors."""
    valid: list[TrackItem] = []
    errors: list[dict[str, Any]] = []
    for name in ARRAYS:
        for index, obj in enumerate(arrays.get(name, [])):
            problem, ident = _check(name, obj)
            if problem is None and reject_item is not None:
                problem = reject_item(name, obj)
            if problem is None and ident is not None:
                valid.append((name, ident, obj))
            else:
                errors.append({"type": problem, "input_array": name, "index": index})
    return valid, errors


def _check(name: str, obj: Any) -> tuple[str | None, Identifier | None]:
    if not isinstance(obj, dict):
        return "each object must be a JSON object", None
    ident = identifier_of(obj)
    if isinstance(ident, str):
        return ident, None
    if "_update_existing_only" in obj and not isinstance(obj["_update_existing_only"], bool):
        return "'_update_existing_only' must be a boolean", None
    check = {"attributes": _attributes_error, "events": _event_error, "purchases": _purchase_error}[name]
    return check(obj), ident


def _attributes_error(obj: dict[str, Any]) -> str | None:
    for key, value in obj.items():
        if len(key) > MAX_STRING:
            return "attribute names must be 255 characters or fewer"
        if isinstance(value, str) and len(value) > MAX_STRING:
            return f"'{key}' must be 255 characters or fewer"
        if key == "email" and value is not None and not (isinstance(value, str) and EMAIL.fullmatch(value)):
            return INVALID_EMAIL
        if (
            key in ("email_subscribe", "push_subscribe")
            and value is not None
            and value not in SUBSCRIBE_STATES
        ):
            return f"'{key}' must be 'opted_in', 'subscribed' or 'unsubscribed'"
        if key == "subscription_groups" and not _groups_ok(value):
            return "'subscription_groups' must be [{subscription_group_id, subscription_state}]"
        if is_increment(value) and (not isinstance(value["inc"], int) or isinstance(value["inc"], bool)):
            return f"'{key}' increment must be an integer"
        if is_array_op(value) and not all(isinstance(value[op], list) for op in ARRAY_OPS & set(value)):
            return f"'{key}' add and remove must be arrays"
    return None


def _groups_ok(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(g, dict)
        and is_text(g.get("subscription_group_id"))
        and g.get("subscription_state") in GROUP_STATES
        for g in value
    )


def _event_error(obj: dict[str, Any]) -> str | None:
    if not is_text(obj.get("name")):
        return "'name' is required"
    if len(obj["name"]) > MAX_STRING:
        return "'name' must be 255 characters or fewer"
    return _time_error(obj) or _properties_error(obj.get("properties"))


def _purchase_error(obj: dict[str, Any]) -> str | None:
    if not is_text(obj.get("product_id")) or len(obj["product_id"]) > MAX_STRING:
        return "'product_id' is required and must be 255 characters or fewer"
    if not isinstance(obj.get("currency"), str) or not CURRENCY.fullmatch(obj["currency"]):
        return "'currency' must be a three-letter ISO-4217 code in capitals"
    if not is_number(obj.get("price")):
        return "'price' is required and must be a number"
    quantity = obj.get("quantity", 1)
    if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= 100:
        return "'quantity' must be an integer from 1 to 100"
    return _time_error(obj) or _properties_error(obj.get("properties"))


def _time_error(obj: dict[str, Any]) -> str | None:
    if "time" not in obj:
        return "'time' is required"
    return None if parse_time(obj["time"]) else "'time' must be an ISO-8601 date-time"


def _properties_error(properties: Any) -> str | None:
    if properties is None:
        return None
    if not isinstance(properties, dict):
        return "'properties' must be an object"
    for key, value in properties.items():
        if key.startswith("$"):
            return f"property name '{key}' must not start with '$'"
        if key in RESERVED_PROPERTIES:
            return f"'{key}' is a reserved property name"
        if len(key) > MAX_STRING:
            return "property names must be 255 characters or fewer"
        if isinstance(value, str) and len(value) > MAX_STRING:
            return f"property '{key}' must be 255 characters or fewer"
    return None
