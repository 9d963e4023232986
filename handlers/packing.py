"""Packing items into Braze requests, within each endpoint's per-request limits and 4 MB."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from handlers.translate import Item
from relay.config import Delivery
from relay.modes import Endpoint

V2_GROUPS_PER_REQUEST = 25  # Braze does not document it; RudderStack's figure, the safe side
V2_IDS_PER_GROUP = 50


@dataclass
class BrazeRequest:
    """One request body in the making, and which item sits at each (array, index)."""

    endpoint: Endpoint
    group: tuple[str, ...]
    arrays: dict[str, list[Any]] = field(default_factory=dict)
    slots: dict[tuple[str, int], list[Item]] = field(default_factory=dict)
    size: int = 2  # bytes of JSON so far, roughly

    @property
    def items(self) -> list[Item]:
        """Every item in this request, once."""
        seen: dict[int, Item] = {}
        for items in self.slots.values():
            for item in items:
                seen[id(item)] = item
        return list(seen.values())

    def count(self) -> int:
        """Objects in the request (what Braze counts against its per-request limit)."""
        if self.endpoint == Endpoint.SUBSCRIPTION:
            return sum(len(group[group["_ids"]]) for group in self.arrays.get("subscription_groups", []))
        return sum(len(values) for values in self.arrays.values())

    def body(self) -> dict[str, Any]:
        """The JSON body to send."""
        if self.endpoint == Endpoint.SUBSCRIPTION:
            groups = [
                {k: v for k, v in group.items() if k != "_ids"}
                for group in self.arrays["subscription_groups"]
            ]
            return {"subscription_groups": groups}
        if self.group and self.endpoint == Endpoint.EMAIL_STATUS:
            return {"email": self.arrays["email"], "subscription_state": self.group[0]}
        return dict(self.arrays)

    def items_at(self, array: str, index: int) -> list[Item]:
        """The items Braze means by an error naming (input_array, index); [] if none."""
        return self.slots.get((array, index), [])


class Packer:
    """Fills requests item by item; a new request starts when the next item would not fit."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.requests: list[BrazeRequest] = []
        self._open: dict[tuple[str, tuple[str, ...]], BrazeRequest] = {}

    def add(self, item: Item) -> None:
        """Put an item in the open request of its endpoint and group, or in a new one."""
        key = (item.endpoint, item.group if item.endpoint != Endpoint.SUBSCRIPTION else ())
        size = len(json.dumps(item.obj, separators=(",", ":"))) + 1
        current = self._open.get(key)
        if current is None or not self._fits(current, item, size):
            current = BrazeRequest(item.endpoint, key[1])
            self._open[key] = current
            self.requests.append(current)
        self._place(current, item)
        current.size += size

    def _fits(self, request: BrazeRequest, item: Item, size: int) -> bool:
        if request.size + size > self.delivery.max_body_bytes:
            return False
        if request.endpoint == Endpoint.TRACK:
            limit = self.delivery.track_combined
            if limit is not None:
                return request.count() < limit
            return len(request.arrays.get(item.array, [])) < self.delivery.track_per_array
        if request.endpoint == Endpoint.SUBSCRIPTION:
            group = self._v2_group(request, item)
            if group is None:
                return len(request.arrays.get("subscription_groups", [])) < V2_GROUPS_PER_REQUEST
            return True
        return request.count() < self.delivery.batch_limit

    @staticmethod
    def _v2_group(request: BrazeRequest, item: Item) -> dict[str, Any] | None:
        gid, state, ids = item.group
        for group in request.arrays.get("subscription_groups", []):
            same = group["subscription_group_id"] == gid and group["subscription_state"] == state
            if same and group["_ids"] == ids and len(group[ids]) < V2_IDS_PER_GROUP:
                return group
        return None

    def _place(self, request: BrazeRequest, item: Item) -> None:
        if request.endpoint == Endpoint.SUBSCRIPTION:
            groups = request.arrays.setdefault("subscription_groups", [])
            group = self._v2_group(request, item)
            if group is None:
                gid, state, ids = item.group
                group = {"subscription_group_id": gid, "subscription_state": state, ids: [], "_ids": ids}
                groups.append(group)
            group[item.group[2]].append(item.obj)
            request.slots.setdefault(("subscription_groups", groups.index(group)), []).append(item)
            return
        values = request.arrays.setdefault(item.array, [])
        request.slots[(item.array, len(values))] = [item]
        values.append(item.obj)


def pack(items: list[Item], delivery: Delivery) -> list[BrazeRequest]:
    """Requests holding all the items, in order, none over Braze's limits."""
    packer = Packer(delivery)
    for item in items:
        packer.add(item)
    return packer.requests
