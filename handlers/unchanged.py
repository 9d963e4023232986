"""skip_unchanged: an attribute value equal to the last one delivered for the user is not sent again.

The memory, per workspace and user, lives in Redis (relay/unchanged.py keeps it); a value counts
as remembered for `RELAY_UNCHANGED_TTL_S` (30 days) from its delivery, and only if it was
delivered after the route's memory was last forgotten (`./scripts/relay unchanged forget`).

Which values take part is a pure rule (`eligible`): plain values do; subscription states
(email_subscribe, push_subscribe, subscription_groups: always sent), Braze's steering keys, array
and increment operations (`add`, `remove`, `inc`, `$add`, ...: sending one again changes the
profile again), and objects merged with `_merge_objects` do not. Items sent with
`_update_existing_only` are not remembered (Braze may have dropped them: the user may not exist).

A value is remembered only once Braze took it (in the drain job's commit, with the outcome), and
every attribute delivered in a workspace is remembered while one of its routes has skip_unchanged,
whatever the route: a value sent by another route must not leave an older memory standing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from handlers.translate import Item
from relay import unchanged as memory
from relay.modes import Kind, kind_of

NEVER = frozenset(
    {
        "email_subscribe",
        "push_subscribe",
        "subscription_groups",
        "push_tokens",
        "push_token_import",
        "_update_existing_only",
        "_merge_objects",
    }
)
OPERATIONS = frozenset({"add", "remove", "inc", "update"})  # plus every key starting with '$'


def digest(value: Any) -> bytes:
    """8 bytes standing for a value: equal values (objects in any key order) give equal digests."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=memory.DIGEST_BYTES).digest()


def is_operation(value: Any) -> bool:
    """True for Braze's array, increment and nested-array operations, which change a value each time."""
    return isinstance(value, dict) and any(
        key in OPERATIONS or (isinstance(key, str) and key.startswith("$")) for key in value
    )


def eligible(name: str, value: Any, obj: Mapping[str, Any]) -> bool:
    """May this attribute of this object be left out when unchanged (and be remembered when sent)?"""
    if name in NEVER or is_operation(value):
        return False
    # With _merge_objects an object is merged into what Braze holds: not a value that replaces it.
    return not (isinstance(value, dict) and obj.get("_merge_objects") is True)


@dataclass
class Memo:
    """What an item's delivery will teach the memory: its user's key and each sent field's digest."""

    key: str
    digests: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Dropped:
    """What a chunk left out: records with nothing left to send, fields left out per route."""

    records: set[str] = field(default_factory=set)
    fields: dict[str, int] = field(default_factory=dict)  # route -> attribute values left out


class Memory:
    """The memory in Redis: recall and drop unchanged values before packing; remember at commit."""

    def __init__(
        self, client: redis.Redis, ttl_s: int, skip_routes: Iterable[str], remembering: Iterable[str]
    ):
        self.client = client
        self.ttl_s = ttl_s
        self.skip_routes = frozenset(skip_routes)  # routes with skip_unchanged
        self.remembering = frozenset(remembering)  # workspaces with at least one such route
        self.store = memory.Store(client)

    def memos(self, items: list[Item]) -> dict[int, Memo]:
        """The memo of each attribute item to remember when delivered, by id(item)."""
        out: dict[int, Memo] = {}
        for item in items:
            env = item.envelope
            if env["ws"] not in self.remembering or item.array != "attributes" or env.get("uxo"):
                continue
            if kind_of(env["kind"]) is not Kind.ATTRIBUTES or not isinstance(item.obj, dict):
                continue
            digests = {
                name: digest(item.obj[name])
                for name in item.watermarks
                if name in item.obj and eligible(name, item.obj[name], item.obj)
            }
            if digests:
                out[id(item)] = Memo(memory.key(env["ws"], item.user), digests)
        return out

    def drop_unchanged(
        self,
        items: list[Item],
        memos: dict[int, Memo],
        *,
        pending: set[tuple[str, str]],
        now: float | None = None,
    ) -> tuple[list[Item], Dropped]:
        """Leave out the values of skip_unchanged routes equal to the remembered ones; items left empty go.

        `pending`: (key, field) pairs an uncommitted chunk is delivering: never left out, since what
        Braze will hold depends on that delivery.
        """
        now = time.time() if now is None else now
        dropped = Dropped()
        asked = [
            (item, memos[id(item)])
            for item in items
            if id(item) in memos and item.envelope["route"] in self.skip_routes
        ]
        if not asked:
            return items, dropped
        routes = sorted({(item.envelope["ws"], item.envelope["route"]) for item, _ in asked})
        forgotten = dict(zip(routes, memory.forgotten_at(self.client, routes), strict=True))
        found = self.store.recall([(memo.key, list(memo.digests)) for _, memo in asked])
        gone: set[int] = set()
        for (item, memo), entries in zip(asked, found, strict=True):
            route = item.envelope["route"]
            not_before = max(now - self.ttl_s, forgotten[(item.envelope["ws"], route)] or 0.0)
            same = [
                name
                for name, remembered in zip(memo.digests, entries, strict=True)
                if (memo.key, name) not in pending
                and memory.same(remembered, memo.digests[name], not_before=not_before)
            ]
            if not same:
                continue
            dropped.fields[route] = dropped.fields.get(route, 0) + len(same)
            for name in same:
                del memo.digests[name]
            item.obj = {key: value for key, value in item.obj.items() if key not in same}
            item.watermarks = [name for name in item.watermarks if name not in same]
            if not item.watermarks:  # nothing left to set: the object is not sent at all
                gone.add(id(item))
                dropped.records.add(item.envelope["id"])
        return [item for item in items if id(item) not in gone], dropped

    def remember(self, pipe: Any, memos: Iterable[Memo], now: float) -> None:
        """Queue the delivered values on the commit's transaction (one script call)."""
        self.store.remember(pipe, ((memo.key, memo.digests) for memo in memos), self.ttl_s, now)

    @staticmethod
    def forget(pipe: Any, workspace: str, users: Iterable[str]) -> None:
        """Queue forgetting users' memories (after Braze deleted or merged their profiles)."""
        memory.forget_users(pipe, workspace, users)
