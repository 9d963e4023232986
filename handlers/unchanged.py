"""skip_unchanged: an attribute value equal to the last one delivered for the user is not sent again.

The memory, per workspace and user, is one Redis hash (its key under a hash of the user's
identifier, never the identifier itself): field = the attribute's name, value = 12 bytes, an
8-byte digest of the value delivered and the 4-byte UNIX second it was delivered. A value counts
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
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from handlers.translate import Item
from relay import store
from relay.modes import Kind, kind_of

DIGEST_BYTES = 8
ENTRY = struct.Struct(">8sI")  # digest, delivered at (UNIX seconds)
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

# Every remembered entry of each user, in one call (KEYS: users; ARGV: n1, fields..., n2, fields...).
RECALL = """
local out = {}
local a = 1
for i, key in ipairs(KEYS) do
  local n = tonumber(ARGV[a]); a = a + 1
  out[i] = redis.call('HMGET', key, unpack(ARGV, a, a + n - 1))
  a = a + n
end
return out
"""
# Remember delivered values (ARGV: ttl, then n1, field, entry, ..., n2, ...): called in the commit.
REMEMBER = """
local ttl = tonumber(ARGV[1])
local a = 2
for i, key in ipairs(KEYS) do
  local n = tonumber(ARGV[a]); a = a + 1
  redis.call('HSET', key, unpack(ARGV, a, a + 2 * n - 1))
  redis.call('EXPIRE', key, ttl)
  a = a + 2 * n
end
return #KEYS
"""


def digest(value: Any) -> bytes:
    """8 bytes standing for a value: equal values (objects in any key order) give equal digests."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=DIGEST_BYTES).digest()


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


def unchanged(entry: bytes | None, value_digest: bytes, *, not_before: float) -> bool:
    """True if a remembered entry holds this digest and was delivered at or after `not_before`."""
    if entry is None or len(entry) != ENTRY.size:
        return False
    remembered, delivered_at = ENTRY.unpack(entry)
    return remembered == value_digest and delivered_at >= not_before


def entry(value_digest: bytes, now: float) -> bytes:
    """What is remembered of a value delivered at `now`."""
    return ENTRY.pack(value_digest, int(now))


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
        self.recall = client.register_script(RECALL)
        self.remember_script = client.register_script(REMEMBER)

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
                out[id(item)] = Memo(store.unchanged_key(env["ws"], item.user), digests)
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
        routes = sorted({item.envelope["route"] for item, _ in asked})
        forgotten = dict(
            zip(routes, self.client.mget([store.unchanged_forgotten_key(r) for r in routes]), strict=True)
        )
        keys: list[str] = []
        args: list[Any] = []
        for _, memo in asked:
            keys.append(memo.key)
            args += [len(memo.digests), *memo.digests]
        found = self.recall(keys=keys, args=args)
        gone: set[int] = set()
        for (item, memo), entries in zip(asked, found, strict=True):
            route = item.envelope["route"]
            raw = forgotten[route]
            not_before = max(now - self.ttl_s, float(raw) if raw else 0.0)
            same = [
                name
                for name, remembered in zip(memo.digests, entries, strict=True)
                if (memo.key, name) not in pending
                and unchanged(remembered, memo.digests[name], not_before=not_before)
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
        keys: list[str] = []
        args: list[Any] = [self.ttl_s]
        for memo in memos:
            if memo.digests:
                keys.append(memo.key)
                args.append(len(memo.digests))
                for name, value_digest in memo.digests.items():
                    args += [name, entry(value_digest, now)]
        if keys:
            self.remember_script(keys=keys, args=args, client=pipe)

    @staticmethod
    def forget(pipe: Any, workspace: str, users: Iterable[str]) -> None:
        """Queue forgetting users' memories (after Braze deleted or merged their profiles)."""
        keys = [store.unchanged_key(workspace, user) for user in users]
        if keys:
            pipe.delete(*keys)
