"""skip_unchanged's memory in Redis: per workspace and user, the last value delivered of each attribute.

One hash per user, its key under a hash of the identifier (never the identifier itself): field =
the attribute's name, value = 12 bytes, an 8-byte digest of the value delivered and the 4-byte UNIX
second it was delivered. A value counts as remembered for its time to live from its delivery, and
only if it was delivered after its route's memory was last forgotten. The drain jobs recall and
remember (handlers/unchanged.py decides what takes part); the CLI and the admin page forget.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from relay import store

DIGEST_BYTES = 8
ENTRY = struct.Struct(">8sI")  # digest, delivered at (UNIX seconds)

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


def key(workspace: str, user: str) -> str:
    """The key of one user's memory."""
    return store.keys(workspace).unchanged(user)


def entry(value_digest: bytes, now: float) -> bytes:
    """What is remembered of a value delivered at `now`."""
    return ENTRY.pack(value_digest, int(now))


def same(remembered: bytes | None, value_digest: bytes, *, not_before: float) -> bool:
    """True if a remembered entry holds this digest and was delivered at or after `not_before`."""
    if remembered is None or len(remembered) != ENTRY.size:
        return False
    found, delivered_at = ENTRY.unpack(remembered)
    return bool(found == value_digest and delivered_at >= not_before)


class Store:
    """The memory's scripts, registered once per client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._recall = client.register_script(RECALL)
        self._remember = client.register_script(REMEMBER)

    def recall(self, asks: Sequence[tuple[str, Sequence[str]]]) -> list[list[bytes | None]]:
        """For each (user key, fields), the remembered entries of those fields, in one round trip."""
        keys: list[str] = []
        args: list[Any] = []
        for user_key, names in asks:
            keys.append(user_key)
            args += [len(names), *names]
        return list(self._recall(keys=keys, args=args))

    def remember(
        self, pipe: Any, learnt: Iterable[tuple[str, dict[str, bytes]]], ttl_s: int, now: float
    ) -> None:
        """Queue remembering delivered values, (user key, {field: digest}), on the commit's transaction."""
        keys: list[str] = []
        args: list[Any] = [ttl_s]
        for user_key, digests in learnt:
            if digests:
                keys.append(user_key)
                args.append(len(digests))
                for name, value_digest in digests.items():
                    args += [name, entry(value_digest, now)]
        if keys:
            self._remember(keys=keys, args=args, client=pipe)


def forget_users(pipe: Any, workspace: str, users: Iterable[str]) -> None:
    """Queue forgetting users' memories (after Braze deleted or merged their profiles)."""
    names = [key(workspace, user) for user in users]
    if names:
        pipe.delete(*names)


def forget_user(client: redis.Redis, workspace: str, user: str) -> bool:
    """Forget what was delivered for one user (every route); True if something was remembered."""
    return bool(client.delete(key(workspace, user)))


def forget_route(client: redis.Redis, workspace: str, route: str, when: float) -> None:
    """Values of the route remembered before `when` no longer count: each is sent again once."""
    client.set(store.keys(workspace).unchanged_forgotten(route), repr(when))


def forgotten_at(client: redis.Redis, routes: Sequence[tuple[str, str]]) -> list[float | None]:
    """When each (workspace, route) was last forgotten, or None (one round trip)."""
    if not routes:
        return []
    raws = client.mget([store.keys(workspace).unchanged_forgotten(route) for workspace, route in routes])
    return [float(raw) if raw else None for raw in raws]
