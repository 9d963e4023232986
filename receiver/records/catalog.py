"""The record schema of catalog items: one item of the Braze catalog the route names, to upsert or delete.

Braze's rules for items (https://www.braze.com/docs/api/endpoints/catalogs/catalog_items/asynchronous/
post_create_catalog_items_bulk/, Troubleshooting, and .../catalog_management/synchronous/
post_create_catalog/ for field names) are checked at the edge: an id of 1 to 250 letters, digits,
hyphens and underscores; field names likewise; no `.` or `$` in the keys of a nested object; no value
over 5,000 characters; at most 500 fields.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import INCLUDE, ValidationError, fields, post_load

from receiver.records.schemas import RecordSchema, record_schema
from relay.modes import Kind

NAME = re.compile(r"^[A-Za-z0-9_-]{1,250}$")  # an item id, and a field name
MAX_VALUE = 5000  # characters of one value ("items-too-large")
MAX_FIELDS = 500  # fields of a catalog ("too-many-fields")
DELETE = {"true": True, "1": True, "false": False, "0": False}  # `_deleted` as TD exports carry it
# The user identifier fields every record schema declares mean nothing to an item: here they are
# item fields like any other.
NOT_IDENTIFIERS = ("external_id", "braze_id", "user_alias", "alias_name", "alias_label", "email", "phone")


class ItemId(fields.Field):
    """A catalog item id: a string (a number is taken as its digits, as TD exports a long column)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not NAME.match(value):
            raise ValidationError("Must be 1 to 250 letters, digits, '-' and '_' (Braze's item ids).")
        return value


class Deleted(fields.Field):
    """`_deleted`: true (JSON true, "true" or 1) deletes the item; false or absent upserts it."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if isinstance(value, bool):
            return value
        found = DELETE.get(str(value).strip().lower()) if isinstance(value, (int, str)) else None
        if found is None:
            raise ValidationError('Must be true or false (or 1, 0, "true", "false").')
        return found


def value_problem(value: Any) -> str | None:
    """Why Braze would refuse this item value, or None."""
    pending = [value]
    while pending:
        current = pending.pop()
        if isinstance(current, str) and len(current) > MAX_VALUE:
            return f"A value longer than {MAX_VALUE} characters."
        if isinstance(current, dict):
            bad = next((key for key in current if "." in key or "$" in key), None)
            if bad is not None:
                return f"Key {bad[:40]!r} of a nested object holds '.' or '$'."
            pending.extend(current.values())
        elif isinstance(current, list):
            pending.extend(current)
    return None


@record_schema(Kind.CATALOG)
class CatalogItemSchema(RecordSchema):
    """catalog_items: one item of the route's catalog, `id` and its fields; `_deleted` deletes it."""

    class Meta:
        unknown = INCLUDE  # every other field is an item field
        exclude = NOT_IDENTIFIERS

    identifier_fields = None
    id = ItemId(required=True)
    deleted = Deleted(data_key="_deleted", load_default=False)

    @post_load
    def _shape(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        shaped = {"time": data.pop("time"), "catalog": self.route.catalog, "id": data.pop("id")}
        if data.pop("deleted"):
            return {**shaped, "delete": True}
        item = {key: value for key, value in data.items() if value is not None}
        if len(item) >= MAX_FIELDS:
            raise ValidationError(
                {"_record": [f"{len(item) + 1} fields: a catalog has at most {MAX_FIELDS}."]}
            )
        errors = {}
        for key, value in item.items():
            problem = None if NAME.match(key) else "Field names are 1 to 250 letters, digits, '-' and '_'."
            problem = problem or value_problem(value)
            if problem:
                errors[key[:64]] = [problem]
        if errors:
            raise ValidationError(errors)
        return {**shaped, "fields": item}
