"""How one /users/track attribute value changes a stored attribute: set, remove, increment, array ops."""

from __future__ import annotations

from typing import Any

ARRAY_OPS = frozenset({"add", "remove"})


def is_number(value: Any) -> bool:
    """True for JSON numbers; bool is excluded because JSON true is not a number."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def dedup(values: list[Any]) -> list[Any]:
    """Keep the first of equal values, in order, as Braze de-duplicates array attributes."""
    kept: list[Any] = []
    for value in values:
        if value not in kept:
            kept.append(value)
    return kept


def deep_merge(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge `update` into a copy of `current`, recursing into nested objects (`_merge_objects: true`)."""
    merged = dict(current)
    for key, value in update.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            merged[key] = deep_merge(old, value)
        elif value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def is_increment(value: Any) -> bool:
    """True for `{"inc": n}`."""
    return isinstance(value, dict) and set(value) == {"inc"}


def is_array_op(value: Any) -> bool:
    """True for `{"add": [...]}`, `{"remove": [...]}` or both."""
    return isinstance(value, dict) and bool(value) and set(value) <= ARRAY_OPS


def apply_attribute(attributes: dict[str, Any], key: str, value: Any, *, merge_objects: bool) -> None:
    """Apply one validated attribute update to a profile's attribute dict in place."""
    current = attributes.get(key)
    if value is None:
        attributes.pop(key, None)
    elif is_increment(value):
        attributes[key] = (current if is_number(current) else 0) + value["inc"]
    elif is_array_op(value):
        # Braze applies add before remove, so remove wins when a value is in both.
        items = list(current) if isinstance(current, list) else []
        items = dedup(items + list(value.get("add", [])))
        removed = value.get("remove", [])
        attributes[key] = [item for item in items if item not in removed]
    elif isinstance(value, list):
        attributes[key] = dedup(value)
    elif isinstance(value, dict) and merge_objects and isinstance(current, dict):
        attributes[key] = deep_merge(current, value)
    else:
        attributes[key] = value
