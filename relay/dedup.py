"""Record-level deduplication: a route's `dedup_key` names each input, and a repeat within the route's
`dedup_window_s` is answered as accepted, counted, and not stored again.

The key is read from each input as the sender posted it, before the route's transform: a postback
body, an ingestion record, an export row zipped with its column names, a webhook element. A plain
field name reads that field; anything else is a jq expression over the input (compiled at start).
An input with no key (null, empty, or a jq program that emits nothing) is not deduplicated.

What is remembered is a digest (12 bytes of BLAKE2b, as 16 characters) of the route's scope, the key
and the record's place among its input's records, in one Redis key per record under the workspace's
hash tag, set with NX and the window as its expiry: `relay:{workspace}:dd:<digest>`. The scope is the
route's credentials and `dedup_key`: routes that take the same credentials (the same sender) and
name the same key share one memory, so a repeat on either is a repeat on both. No key name holds a
key's value.

The check and the write are one Lua script with the records' push (this module owns it, beside the
lane's own push in relay/lanes.py): a repeat, even one arriving at the same moment on another web
process, is never stored twice, and a request Redis refuses stores neither its records nor their keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relay.budgets import MINUTE_KEPT_S
from relay.transforms import Transform, TransformError, compile_transform

FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a dedup_key that is a plain field name
DEFAULT_WINDOW_S = 86400
# Keeps the records whose key no earlier record set; KEYS from `first_key` on are the dedup keys,
# ARGV from `first_arg` on the records as (key index or 0, record) pairs. Answers the records kept,
# how many were repeats, and the bytes of those kept (what their route holds).
KEEP_NEW_LUA = """
local function keep_new(first_key, window, n, first_arg)
  local kept, dup, size = {}, 0, 0
  for i = 0, n - 1 do
    local at = tonumber(ARGV[first_arg + 2 * i])
    local record = ARGV[first_arg + 2 * i + 1]
    if at == 0 or redis.call('SET', KEYS[first_key + at - 1], '1', 'NX', 'EX', window) then
      kept[#kept + 1] = record
      size = size + #record
    else
      dup = dup + 1
    end
  end
  return kept, dup, size
end
"""
# The route's queued counts, as relay/lanes.py's PUSH keeps them (relay/budgets.py).
HOLD_LUA = f"""
local function hold_refusal(held, minute, records_field, bytes_field, n, size, most, most_bytes, per_minute)
  local counts = redis.call('HMGET', held, records_field, bytes_field)
  if (tonumber(counts[1]) or 0) + n > most then return -1 end
  if (tonumber(counts[2]) or 0) + size > most_bytes then return -2 end
  if per_minute > 0 and (tonumber(redis.call('GET', minute)) or 0) + n > per_minute then return -3 end
  return 0
end
local function hold_add(held, minute, records_field, bytes_field, n, size, per_minute)
  redis.call('HINCRBY', held, records_field, n)
  redis.call('HINCRBY', held, bytes_field, size)
  if per_minute > 0 then
    redis.call('INCRBY', minute, n)
    redis.call('EXPIRE', minute, {MINUTE_KEPT_S})
  end
end
"""
# The edge's common case (relay/lanes.py PUSH, with the repeats left out). KEYS: list, metrics hash,
# lease, lanes set, held hash, the route's minute, dedup keys...; ARGV: accepted field, accepted
# count, token, lease ms, lane name, duplicates field, the route's records and bytes fields, its most
# records and bytes, records per minute (0: none), window s, n, then n (key index, record) pairs.
# The budgets are checked against the records not known as repeats (a repeat changes nothing, so a
# route at its budget still answers it); only those kept are held. Answers as PUSH: 1 (took the
# lease), 0, or a refusal (nothing written).
PUSH_NEW = (
    KEEP_NEW_LUA
    + HOLD_LUA
    + """
local n = tonumber(ARGV[13])
local fresh, fresh_size = 0, 0  -- the records not known as repeats: what the route would hold
for i = 0, n - 1 do
  local at = tonumber(ARGV[14 + 2 * i])
  if at == 0 or redis.call('EXISTS', KEYS[7 + at - 1]) == 0 then
    fresh = fresh + 1
    fresh_size = fresh_size + #ARGV[15 + 2 * i]
  end
end
local per_minute = tonumber(ARGV[11])
local refusal = hold_refusal(KEYS[5], KEYS[6], ARGV[7], ARGV[8], fresh, fresh_size, tonumber(ARGV[9]),
  tonumber(ARGV[10]), per_minute)
if refusal < 0 then return refusal end
local kept, dup, kept_size = keep_new(7, ARGV[12], n, 14)
redis.call('HINCRBY', KEYS[2], ARGV[1], ARGV[2])
if dup > 0 then redis.call('HINCRBY', KEYS[2], ARGV[6], dup) end
if #kept == 0 then return 0 end
hold_add(KEYS[5], KEYS[6], ARGV[7], ARGV[8], #kept, kept_size, per_minute)
redis.call('RPUSH', KEYS[1], unpack(kept))
if redis.call('SET', KEYS[3], ARGV[3], 'NX', 'PX', ARGV[4]) then
  redis.call('SADD', KEYS[4], ARGV[5])
  return 1
end
return 0
"""
)
# Inside the edge's MULTI/EXEC (relay/lanes.py Lane.append, with the repeats left out; the budgets
# were checked before the transaction). KEYS: list, metrics hash, lanes set, held hash, the route's
# minute, dedup keys...; ARGV: lane name, duplicates field, the route's records and bytes fields,
# records per minute, window s, n, pairs.
APPEND_NEW = (
    KEEP_NEW_LUA
    + HOLD_LUA
    + """
local kept, dup, kept_size = keep_new(6, ARGV[6], tonumber(ARGV[7]), 8)
if dup > 0 then redis.call('HINCRBY', KEYS[2], ARGV[2], dup) end
if #kept > 0 then
  hold_add(KEYS[4], KEYS[5], ARGV[3], ARGV[4], #kept, kept_size, tonumber(ARGV[5]))
  redis.call('RPUSH', KEYS[1], unpack(kept))
  redis.call('SADD', KEYS[3], ARGV[1])
end
return #kept
"""
)


class DedupError(Exception):
    """The route's jq expression failed on an input; the message says how."""


@dataclass(frozen=True)
class Dedup:
    """A route's record identity: how to read an input's key, the memory it shares, the window."""

    source: str  # the routes file's dedup_key
    window_s: int
    scope: str  # names the memory: the route's credentials and key
    program: Transform | None  # None: `source` is a field name

    def key_of(self, document: Any) -> str | None:
        """The input's key as text, or None when it has none; DedupError when the jq expression fails."""
        if self.program is None:
            value = document.get(self.source) if isinstance(document, dict) else None
        else:
            try:
                found = self.program.run(document)
            except TransformError as exc:
                raise DedupError(str(exc)) from None
            value = found[0] if len(found) == 1 else (found or None)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return value
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def name(self, document: Any) -> str | None:
        """The digest of an input that makes one record, or None when it has no key (DedupError)."""
        key = self.key_of(document)
        return None if key is None else self.digest(key)

    def digest(self, key: str, ordinal: int = 0) -> str:
        """The remembered name of the `ordinal`-th record made from an input with this key."""
        raw = hashlib.blake2b(f"{self.scope}\0{key}\0{ordinal}".encode(), digest_size=12).digest()
        return base64.urlsafe_b64encode(raw).decode()


def compile_dedup(
    source: str, window_s: int, *, route: Mapping[str, Any], credentials: Sequence[str]
) -> Dedup:
    """A route's Dedup; TransformError when `source` is neither a field name nor a jq expression."""
    program = None
    if not FIELD.match(source):
        program = compile_transform(source=source, preset=None, args={}, route=route)
    scope = hashlib.sha256(json.dumps([list(credentials), source]).encode()).hexdigest()[:16]
    return Dedup(source, window_s, scope, program)


def _pairs(digests: Sequence[str | None], records: Sequence[str]) -> tuple[list[str], list[Any]]:
    """The distinct dedup keys, and each record as (its key's index, or 0, the record)."""
    at: dict[str, int] = {}
    pairs: list[Any] = []
    for digest, record in zip(digests, records, strict=True):
        index = 0 if digest is None else at.setdefault(digest, len(at) + 1)
        pairs += [index, record]
    return list(at), pairs


def known(
    client: Any, workspace_keys: Any, digests: Sequence[str | None], records: Sequence[str]
) -> tuple[int, int]:
    """How many of these records (and their bytes) are repeats Redis remembers now: read, not held,
    for a transaction's budget check (relay/budgets.py `Hold.check`)."""
    named = [(digest, record) for digest, record in zip(digests, records, strict=True) if digest]
    if not named:
        return 0, 0
    with client.pipeline(transaction=False) as pipe:
        for digest, _ in named:
            pipe.exists(workspace_keys.dedup(digest))
        found = pipe.execute()
    repeats = [record for (_, record), there in zip(named, found, strict=True) if there]
    return len(repeats), sum(len(record.encode()) for record in repeats)


def push_args(
    digests: Sequence[str | None], records: Sequence[str], window_s: int
) -> tuple[list[str], list[Any]]:
    """The distinct digests (each names a dedup key, KEYS after the lane's own) and the window, count
    and (key index, record) pairs (ARGV after the lane's)."""
    names, pairs = _pairs(digests, records)
    return names, [window_s, len(records), *pairs]
