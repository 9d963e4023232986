"""Packing items into Braze requests, within each endpoint's per-request limits and 4 MB.

`pack` fills requests one after another (for requests sent one at a time: the halves of a batch
Braze refused). `plan` lays a whole wave out as *rounds* of at most `width` requests, which are
sent at once: no user has items in two requests of one round, and a user's later items never go
in an earlier round, so each user's updates still reach Braze one request at a time, in order.
Each item is encoded to JSON once, here; a request's body is those bytes joined.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from handlers.translate import Item
from relay.config import Delivery
from relay.modes import Endpoint

V2_GROUPS_PER_REQUEST = 25  # Braze does not document it; RudderStack's figure, the safe side
V2_IDS_PER_GROUP = 50
# Endpoints whose body is plain arrays of objects: the body is built from each item's own bytes.
PLAIN_ARRAYS = frozenset({Endpoint.TRACK, Endpoint.ALIAS, Endpoint.IDENTIFY, Endpoint.DELETE})

Key = tuple[str, tuple[str, ...]]  # (endpoint, group): a request holds items of one key


def encode(obj: Any) -> bytes:
    """Compact JSON as Braze gets it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class BrazeRequest:
    """One request body in the making, and which item sits at each (array, index)."""

    endpoint: Endpoint
    group: tuple[str, ...]
    arrays: dict[str, list[Any]] = field(default_factory=dict)
    slots: dict[tuple[str, int], list[Item]] = field(default_factory=dict)
    size: int = 2  # bytes of JSON so far, roughly
    items: list[Item] = field(default_factory=list)  # every item in this request, once, in order
    encoded: dict[str, list[bytes]] = field(default_factory=dict)  # array -> each object's JSON

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

    def data(self) -> bytes:
        """The body as the bytes to send: `body()` encoded, from each object's JSON made at packing."""
        if self.endpoint not in PLAIN_ARRAYS:
            return encode(self.body())
        arrays = [b'"%s":[%s]' % (name.encode(), b",".join(parts)) for name, parts in self.encoded.items()]
        return b"{" + b",".join(arrays) + b"}"

    def items_at(self, array: str, index: int) -> list[Item]:
        """The items Braze means by an error naming (input_array, index); [] if none."""
        return self.slots.get((array, index), [])


def key_of(item: Item) -> Key:
    """The requests an item may share: one endpoint and group (v2 subscription groups share a body)."""
    return (item.endpoint, item.group if item.endpoint != Endpoint.SUBSCRIPTION else ())


class Packer:
    """Places items in requests within Braze's limits; subclasses choose which request."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.requests: list[BrazeRequest] = []

    def fits(self, request: BrazeRequest, item: Item, size: int) -> bool:
        """True if the item may join the request within Braze's per-request limits."""
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

    def place(self, request: BrazeRequest, item: Item, encoded: bytes) -> None:
        """Put the item (and its JSON) in the request."""
        request.items.append(item)
        request.size += len(encoded) + 1
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
        request.encoded.setdefault(item.array, []).append(encoded)

    def new_request(self, item: Item) -> BrazeRequest:
        """An empty request for the item's endpoint and group."""
        request = BrazeRequest(item.endpoint, key_of(item)[1])
        self.requests.append(request)
        return request


class Sequence(Packer):
    """Fills requests one after another; a new one starts when the next item would not fit."""

    def __init__(self, delivery: Delivery) -> None:
        super().__init__(delivery)
        self._open: dict[Key, BrazeRequest] = {}

    def add(self, item: Item) -> None:
        """Put an item in the open request of its endpoint and group, or in a new one."""
        encoded = encode(item.obj)
        key = key_of(item)
        current = self._open.get(key)
        if current is None or not self.fits(current, item, len(encoded) + 1):
            current = self._open[key] = self.new_request(item)
        self.place(current, item, encoded)


def pack(items: list[Item], delivery: Delivery) -> list[BrazeRequest]:
    """Requests holding all the items, in order, none over Braze's limits."""
    packer = Sequence(delivery)
    for item in items:
        packer.add(item)
    return packer.requests


class Rounds(Packer):
    """Lays items out in rounds of at most `width` requests sent at once, no user in two of a round."""

    def __init__(self, delivery: Delivery, width: int) -> None:
        super().__init__(delivery)
        self.width = max(1, width)
        self.rounds: list[list[BrazeRequest]] = []
        self._open: list[dict[Key, BrazeRequest]] = []  # per round: the request still filling, per key
        self._last: dict[str, tuple[int, BrazeRequest]] = {}  # user -> (round, request) of their last item

    def add(self, item: Item) -> None:
        """Put the item in the earliest round it may go in: after its users' earlier items."""
        encoded = encode(item.obj)
        size, key = len(encoded) + 1, key_of(item)
        seen = [self._last[user] for user in item.users if user in self._last]
        first = max((index for index, _ in seen), default=0)
        homes = {id(request): request for index, request in seen if index == first}
        index = first
        while True:
            if index == len(self.rounds):
                self.rounds.append([])
                self._open.append({})
            target: BrazeRequest | None = None
            if homes and index == first:
                # Its users already have a request in this round: that one, or a later round.
                home = next(iter(homes.values())) if len(homes) == 1 else None
                if home is not None and key_of(home.items[0]) == key and self.fits(home, item, size):
                    target = home
            else:
                current = self._open[index].get(key)
                if current is not None and self.fits(current, item, size):
                    target = current
                elif len(self.rounds[index]) < self.width:
                    target = self.new_request(item)
                    self.rounds[index].append(target)
                    self._open[index][key] = target
            if target is not None:
                self.place(target, item, encoded)
                for user in item.users:
                    self._last[user] = (index, target)
                return
            index += 1


def plan(items: list[Item], delivery: Delivery, width: int) -> list[list[BrazeRequest]]:
    """Rounds of at most `width` requests holding all the items: see the module's docstring."""
    rounds = Rounds(delivery, width)
    for item in items:
        rounds.add(item)
    return rounds.rounds
