"""Packing items into Braze requests, within each endpoint's per-request limits and 4 MB.

`pack` fills requests one after another (for requests sent one at a time: the halves of a batch
Braze refused). `plan` lays a chunk out as *rounds* of at most `width` requests: no user has items
in two requests of one round, a user's later items never go in an earlier round, and a user's items
go together where they fit and where Braze keeps their order: Braze applies a /users/track
request's attributes, then its events, then its purchases (each array in order), so a user's item
joins their request only if its array comes no earlier in that sequence than their items already
there (an attribute update after an event of the same user goes in a later request). The drain
job hands the requests to its window in that order (handlers/window.py decides when each may go),
so each user's updates reach Braze one request at a time, in order. Each item is encoded to JSON
once, here; a request's body is those bytes joined.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from handlers.translate import Item
from relay.config import Delivery
from relay.modes import Endpoint

V2_GROUPS_PER_REQUEST = 25  # Braze does not document it; RudderStack's figure, the safe side
V2_IDS_PER_GROUP = 50
# Endpoints whose body is plain arrays of objects: the body is built from each item's own bytes.
PLAIN_ARRAYS = frozenset(
    {
        Endpoint.TRACK,
        Endpoint.ALIAS,
        Endpoint.IDENTIFY,
        Endpoint.DELETE,
        Endpoint.MERGE,
        Endpoint.ALIAS_UPDATE,
        Endpoint.RENAME,
        Endpoint.REMOVE,
        Endpoint.CATALOG_ITEMS,
    }
)

Key = tuple[str, tuple[str, ...]]  # (endpoint, group): a request holds items of one key
# The order in which Braze applies a /users/track request's arrays; other arrays rank 0 (alone in
# their endpoint, or, for a delete's identifiers, with no order that matters).
ARRAY_RANK = {"attributes": 0, "events": 1, "purchases": 2}


def in_braze_order(items: list[Item]) -> bool:
    """True if Braze, applying arrays in its order, applies these items (of one user) in theirs."""
    ranks = [ARRAY_RANK.get(item.array, 0) for item in items]
    return all(a <= b for a, b in itertools.pairwise(ranks))


def encode(obj: Any) -> bytes:
    """Compact JSON as Braze gets it (orjson; the stdlib for what orjson cannot encode)."""
    try:
        return orjson.dumps(obj)
    except TypeError:  # an integer past 64 bits: Braze will say what it thinks of it
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(eq=False)  # each request is itself (hashable by identity: the window tracks them)
class BrazeRequest:
    """One request body in the making, and which item sits at each (array, index)."""

    endpoint: Endpoint
    group: tuple[str, ...]
    arrays: dict[str, list[Any]] = field(default_factory=dict)
    slots: dict[tuple[str, int], list[Item]] = field(default_factory=dict)  # v2 subscription groups
    members: dict[str, list[Item]] = field(default_factory=dict)  # array -> its items, by index
    size: int = 2  # bytes of JSON so far, roughly
    items: list[Item] = field(default_factory=list)  # every item in this request, once, in order
    encoded: dict[str, list[bytes]] = field(default_factory=dict)  # array -> each object's JSON
    objects: int = 0  # objects in its arrays so far (kept as they are placed: count() is asked per item)

    @property
    def method(self) -> str:
        """The HTTP method: POST, but for catalog items PUT (upsert) or DELETE (the request's group)."""
        return self.group[1] if self.endpoint is Endpoint.CATALOG_ITEMS else "POST"

    @property
    def path(self) -> str:
        """The path to send to: the endpoint, with the catalog's name for catalog items."""
        if self.endpoint is Endpoint.CATALOG_ITEMS:
            return self.endpoint.replace("{catalog_name}", self.group[0])
        return str(self.endpoint)

    def count(self) -> int:
        """Objects in the request (what Braze counts against its per-request limit)."""
        if self.endpoint == Endpoint.SUBSCRIPTION:
            return sum(len(group[group["_ids"]]) for group in self.arrays.get("subscription_groups", []))
        return self.objects

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
        """The items Braze means by an error naming (input_array, index); [] if none.

        An error naming an array of the request but no index (-1) is taken as naming every item of it:
        a refusal the relay cannot place must not pass for a delivery.
        """
        if self.endpoint == Endpoint.SUBSCRIPTION:
            return self.slots.get((array, index), [])
        members = self.members.get(array, [])
        if index == -1:
            return list(members)
        return [members[index]] if 0 <= index < len(members) else []

    def users(self) -> set[str]:
        """Every user the request changes."""
        return {user for item in self.items for user in item.users}


# An empty request of each plain-array endpoint, to ask whether a group of items fits in one at all.
# (Read only: `takes` never changes the request it is given.)
EMPTY = {endpoint: BrazeRequest(endpoint, ()) for endpoint in PLAIN_ARRAYS}


def v2_group_of(item: Item) -> tuple[str, str, str, str]:
    """(group id, state, kind of id, "double_opt_in" or "") of a v2 subscription item."""
    gid, state, ids, double_opt_in = item.group
    return gid, state, ids, double_opt_in


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
        if request.endpoint == Endpoint.SUBSCRIPTION:
            if request.size + size > self.delivery.max_body_bytes:
                return False
            group = self._v2_group(request, item)
            if group is None:
                return len(request.arrays.get("subscription_groups", [])) < V2_GROUPS_PER_REQUEST
            return True
        if request.size + size > self.delivery.max_body_bytes:
            return False
        if request.endpoint is not Endpoint.TRACK:
            return request.objects < self.delivery.batch_limit
        # One object more (the common case, asked per item): `takes` without building its counts.
        combined = self.delivery.track_combined
        if combined is not None and request.objects >= combined:
            return False
        values = request.arrays.get(item.array)
        return values is None or len(values) < self.delivery.track_per_array

    def takes(self, request: BrazeRequest, counts: dict[str, int], size: int) -> bool:
        """True if the request can take this many more objects per array, and bytes, within the limits."""
        if request.size + size > self.delivery.max_body_bytes:
            return False
        if request.endpoint == Endpoint.TRACK:
            # Braze's default counts the three arrays together (track_combined); legacy contracts count
            # each array alone. Both are checked, so BRAZE_TRACK_PER_ARRAY still caps an array.
            combined = self.delivery.track_combined
            if combined is not None and request.count() + sum(counts.values()) > combined:
                return False
            per_array = self.delivery.track_per_array
            return all(
                len(request.arrays.get(name, [])) + count <= per_array for name, count in counts.items()
            )
        return request.count() + sum(counts.values()) <= self.delivery.batch_limit

    @staticmethod
    def _v2_group(request: BrazeRequest, item: Item) -> dict[str, Any] | None:
        gid, state, ids, double_opt_in = v2_group_of(item)
        for group in request.arrays.get("subscription_groups", []):
            same = group["subscription_group_id"] == gid and group["subscription_state"] == state
            same = same and group.get("use_double_opt_in_logic", False) == bool(double_opt_in)
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
                gid, state, ids, double_opt_in = v2_group_of(item)
                group = {"subscription_group_id": gid, "subscription_state": state, ids: [], "_ids": ids}
                if double_opt_in:
                    # https://www.braze.com/docs/api/endpoints/subscription_groups/
                    # post_update_user_subscription_group_status_v2/: per group entry, optional.
                    group["use_double_opt_in_logic"] = True
                groups.append(group)
            group[item.group[2]].append(item.obj)
            request.slots.setdefault(("subscription_groups", groups.index(group)), []).append(item)
            return
        values = request.arrays.get(item.array)
        if values is None:
            values = request.arrays[item.array] = []
            request.members[item.array] = []
            request.encoded[item.array] = []
        values.append(item.obj)
        request.objects += 1
        request.members[item.array].append(item)
        request.encoded[item.array].append(encoded)

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
        self._rank: dict[str, int] = {}  # user -> the array rank of their last item (ARRAY_RANK)

    def add_group(self, group: list[Item]) -> None:
        """Put the items of users no other item touches, together in one request where they fit."""
        if len(group) == 1:
            self.add(group[0])
            return
        encoded = [encode(item.obj) for item in group]
        key = key_of(group[0])
        together = (
            len(group) > 1
            and key[0] in PLAIN_ARRAYS
            and all(key_of(item) == key for item in group)
            and not any(user in self._last for item in group for user in item.users)
            and in_braze_order(group)
        )
        if together:
            counts: dict[str, int] = {}
            for item in group:
                counts[item.array] = counts.get(item.array, 0) + 1
            size = sum(map(len, encoded)) + len(encoded)
            if self.takes(EMPTY[group[0].endpoint], counts, size):
                self._add_together(group, encoded, key, counts, size)
                return
        for item, one in zip(group, encoded, strict=True):
            self.add(item, one)

    def _add_together(
        self, group: list[Item], encoded: list[bytes], key: Key, counts: dict[str, int], size: int
    ) -> None:
        index = 0
        while True:
            if index == len(self.rounds):
                self.rounds.append([])
                self._open.append({})
            current = self._open[index].get(key)
            if current is None or not self.takes(current, counts, size):
                if len(self.rounds[index]) >= self.width:
                    index += 1
                    continue
                current = self._open[index][key] = self.new_request(group[0])
                self.rounds[index].append(current)
            for item, one in zip(group, encoded, strict=True):
                self._put(index, current, item, one)
            return

    def add(self, item: Item, encoded: bytes | None = None) -> None:
        """Put the item in the earliest round it may go in: after its users' earlier items."""
        encoded = encode(item.obj) if encoded is None else encoded
        size, key = len(encoded) + 1, key_of(item)
        users = item.users
        if len(users) == 1:
            last = self._last.get(users[0])
            seen = [last] if last is not None else []
        else:
            seen = [self._last[user] for user in users if user in self._last]
        index = max((found for found, _ in seen), default=0)
        if seen:
            # Its users already have a request in that round: that one, if it can take it, else later.
            homes = {id(request): request for found, request in seen if found == index}
            home = next(iter(homes.values())) if len(homes) == 1 else None
            rank = ARRAY_RANK.get(item.array, 0)
            in_order = all(self._rank.get(user, 0) <= rank for user in users)
            if home is not None and in_order and key_of(home.items[0]) == key and self.fits(home, item, size):
                return self._put(index, home, item, encoded)
            index += 1
        while True:
            if index == len(self.rounds):
                self.rounds.append([])
                self._open.append({})
            current = self._open[index].get(key)
            if current is not None and self.fits(current, item, size):
                return self._put(index, current, item, encoded)
            if len(self.rounds[index]) < self.width:
                current = self._open[index][key] = self.new_request(item)
                self.rounds[index].append(current)
                return self._put(index, current, item, encoded)
            index += 1

    def _put(self, index: int, request: BrazeRequest, item: Item, encoded: bytes) -> None:
        """Place the item and note it as its users' last (round, request and array rank)."""
        self.place(request, item, encoded)
        rank = ARRAY_RANK.get(item.array, 0)
        for user in item.users:
            self._last[user] = (index, request)
            self._rank[user] = rank


def by_user(items: list[Item]) -> list[list[Item]]:
    """Items grouped by user: items that share a user (even through a third item) share a group.

    Groups come in the order of their first item, and keep their items' order: any two items of one
    user stay in order, while different users' items need not (Braze keeps no order across profiles).
    """
    if all(len(item.users) == 1 for item in items):  # the usual case: one user per item
        simple: dict[str, list[Item]] = {}
        for item in items:
            simple.setdefault(item.users[0], []).append(item)
        return list(simple.values())
    parent: dict[str, str] = {}

    def root(user: str) -> str:
        while parent.get(user, user) != user:
            parent[user] = parent.get(parent[user], parent[user])
            user = parent[user]
        return user

    for item in items:
        first, *others = item.users or ("",)
        for other in others:
            a, b = root(first), root(other)
            if a != b:
                parent[b] = a
    groups: dict[object, list[Item]] = {}
    for item in items:
        group_key: object = root(item.users[0]) if item.users else id(item)
        groups.setdefault(group_key, []).append(item)
    return list(groups.values())


def plan(
    items: list[Item], delivery: Delivery, width: int, after: Callable[[str], int] | None = None
) -> list[list[BrazeRequest]]:
    """Rounds of at most `width` requests holding all the items: see the module's docstring.

    A user's items go together in one request where they fit, so that a wave of users with a few
    items each fills a whole round rather than one request per round. `after(user)` numbers the
    earlier request a user waits for (0: none; handlers/window.py): users are packed in that order,
    so the users of one earlier request share the next one and it waits for that request alone.
    """
    rounds = Rounds(delivery, width)
    groups = by_user(items)
    if after is not None:
        groups.sort(key=lambda group: max(after(user) for item in group for user in item.users))
    for group in groups:
        rounds.add_group(group)
    return rounds.rounds
