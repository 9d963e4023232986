"""Braze catalogs: items kept per catalog, and the asynchronous item endpoints that upsert and delete them.

`PUT /catalogs/{catalog_name}/items` replaces each item (creating it if it does not exist) and `DELETE`
removes items by id, up to 50 a request; both answer 202 `{"message": "success"}`, as Braze does
(https://www.braze.com/docs/api/endpoints/catalogs/catalog_items/asynchronous/put_update_catalog_items/,
.../delete_catalog_items_bulk/). A request Braze would refuse gets 400 `{"errors": [{id, message,
parameters, parameter_values}], "message": "Invalid Request"}` with the error ids of the pages'
Troubleshooting tables; an unknown catalog 404 `catalog-not-found`. The whole request is refused:
Braze names no item of a batch it takes.
"""

from __future__ import annotations

import copy
import re
import threading
from typing import Any

Answer = tuple[int, dict[str, Any]]
ITEM_ID = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_ITEMS = 50
MAX_ID = 250
MAX_VALUE = 5000


class Catalogs:
    """The simulated workspace's catalogs: name -> its fields (None: any) and items by id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.create_missing = False  # sandbox: a catalog the relay writes to is made on first use
        self.reset()

    def reset(self) -> None:
        """Forget every catalog."""
        with self._lock:
            self._fields: dict[str, set[str] | None] = {}
            self._items: dict[str, dict[str, dict[str, Any]]] = {}

    def create(self, name: str, fields: list[str] | None = None) -> None:
        """Make a catalog (as POST /catalogs would); `fields` limits the item fields it takes."""
        with self._lock:
            self._fields[name] = {"id", *fields} if fields is not None else None
            self._items.setdefault(name, {})

    def items(self, name: str) -> dict[str, dict[str, Any]] | None:
        """A copy of a catalog's items by id, or None when there is no such catalog."""
        with self._lock:
            found = self._items.get(name)
            return copy.deepcopy(found) if found is not None else None

    def handle(self, name: str, method: str, body: dict[str, Any]) -> Answer:
        """One PUT (upsert) or DELETE request of a catalog's items."""
        with self._lock:
            if name not in self._items:
                if not self.create_missing:
                    return 404, refusal(
                        "catalog-not-found", "Could not find catalog", ["catalog_name"], [name]
                    )
                self._fields[name], self._items[name] = None, {}
            problem = self._problem(name, method, body)
            if problem is not None:
                return 400, problem
            items = self._items[name]
            for item in body["items"]:
                if method == "DELETE":
                    items.pop(item["id"], None)
                else:
                    items[item["id"]] = copy.deepcopy(item)
        return 202, {"message": "success"}

    def _problem(self, name: str, method: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The refusal of a request Braze would refuse, or None."""
        items = body.get("items")
        if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
            return refusal("item-array-invalid", "items must be an array of objects", ["items"], [])
        if len(items) > MAX_ITEMS:
            return refusal(
                "request-includes-too-many-items", "Your request has too many items", ["items"], []
            )
        if any("id" not in item for item in items):
            count = sum(1 for item in items if "id" not in item)
            return refusal("items-missing-ids", f"There are {count} item(s) that do not have ids", [], [])
        ids = [item["id"] for item in items]
        checks = (
            ("ids-not-strings", "Item IDs must be of type string", lambda i: not isinstance(i, str)),
            ("ids-too-large", "Item IDs can't be more than 250 characters", lambda i: len(i) > MAX_ID),
            (
                "invalid-ids",
                "Item IDs can only include letters, numbers, hyphens, and underscores",
                lambda i: not ITEM_ID.match(i),
            ),
        )
        for error_id, message, bad in checks:
            found = [i for i in ids if bad(i)]
            if found:
                return refusal(error_id, message, ["id"], found)
        if len(set(ids)) != len(ids):
            return refusal("ids-not-unique", "Item IDs must be unique in the request", ["id"], ids)
        if method == "DELETE":
            return None
        return self._field_problem(name, items)

    def _field_problem(self, name: str, items: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The refusal of item fields Braze would refuse, or None."""
        known = self._fields[name]
        for item in items:
            unknown = [key for key in item if known is not None and key not in known]
            if unknown:
                return refusal(
                    "invalid-fields",
                    "Some of the fields given do not exist in the catalog",
                    ["id"],
                    [item["id"]],
                )
            problem = value_problem(item)
            if problem:
                return refusal(problem[0], problem[1], ["id"], [item["id"]])
        return None


def value_problem(value: Any) -> tuple[str, str] | None:
    """The error id and message Braze gives an item value it refuses, or None."""
    if isinstance(value, str):
        return (
            ("items-too-large", "Item values can't exceed 5,000 characters")
            if len(value) > MAX_VALUE
            else None
        )
    if isinstance(value, dict):
        if any("." in key or "$" in key for key in value):
            return "invalid-keys-in-value-object", "Item object keys can't include '.' or '$'"
        values: list[Any] = list(value.values())
    elif isinstance(value, list):
        values = value
    else:
        return None
    return next((found for found in map(value_problem, values) if found), None)


def refusal(error_id: str, message: str, parameters: list[str], values: list[Any]) -> dict[str, Any]:
    """Braze's error body for a catalog request it refuses."""
    error = {"id": error_id, "message": message, "parameters": parameters, "parameter_values": values}
    return {"errors": [error], "message": "Invalid Request"}
