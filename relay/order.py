"""Order across lanes: one user's calls take effect at Braze in the order the relay accepted them.

Records travel in lanes by kind of call, and order holds inside a lane by construction; this module
owns what orders them across lanes, in Redis, per workspace:

- a *gate*: a record of a gating mode (relay/modes.py `Mode.gate`: an alias creation, an identify,
  a delete) writes, when the edge stores it, one pending mark on each user it names (and on the
  users linked to them). A record of any lane naming such a user and accepted after the gate waits
  (back in its lane's retry set, not counted as an attempt) until the gate's own commit settles
  it: Braze has answered it, or it ended in the dead-letter store (then the records waiting go on).
- an *erase mark*: an erasing record (`Mode.erases`: a delete) leaves the newest erasing arrival
  on each user it names: records of that user accepted before it and not yet sent are not sent at
  all (superseded), whenever their lane reaches them.
- a *link*: a linking record (`Mode.links`: an identify) ties its users from then on, so a later
  gate on one holds records of the other.
- a *fence*: each drain job registers, for each chunk it takes, the moment (Redis's clock) it
  checked that chunk against the marks, until the chunk is committed. An erasing record is sent
  only when no other lane holds a chunk checked before the erasing record was stored: a record
  accepted before a delete and already on its way reaches Braze before the delete, never after.

"The same user" is an identifier as given (`relay.routes.user_key`), plus the links. Acceptance
order is the edge's arrival order (`seq`, the web host's clock in nanoseconds). Every key here is a
key of the workspace (hash tag `{workspace}`), declared by each script.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis

from relay import store
from relay.envelope import Envelope
from relay.modes import BY_KIND, Kind, kind_of
from relay.routes import user_key

ERASE_MARK = "del"
GATE = "g:"
LINK = "ln:"
RECENT_ERASE_S = 120.0  # a chunk whose records are all this much newer than the last erase is not checked

# The edge, for a batch's gating records: KEYS[1] the count of pending gates, [2] the newest erase's
# acceptance time, then the users' order hashes. ARGV[1] ttl, [2] newest erase (web time, or ''),
# then operations: 'g' key seq kind digests (a gate on the user at KEYS[key]), 'd' key seq (an
# erase mark), 'l' key digest (a link). A gate's value is "<kind>|<Redis time>|<digests>".
ACCEPT = """
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local ttl = tonumber(ARGV[1])
local gates = 0
local i = 3
while i <= #ARGV do
  local op, key = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
  if op == 'g' then
    if redis.call('HSET', key, 'g:' .. ARGV[i + 2], ARGV[i + 3] .. '|' .. now .. '|' .. ARGV[i + 4]) == 1 then
      gates = gates + 1
    end
    i = i + 5
  elseif op == 'd' then
    local current = redis.call('HGET', key, 'del')
    if not current or current < ARGV[i + 2] then redis.call('HSET', key, 'del', ARGV[i + 2]) end
    i = i + 3
  else
    redis.call('HSET', key, 'ln:' .. ARGV[i + 2], '1')
    i = i + 3
  end
  redis.call('EXPIRE', key, ttl)
end
if gates > 0 then
  redis.call('INCRBY', KEYS[1], gates)
  redis.call('EXPIRE', KEYS[1], ttl)
end
if ARGV[2] ~= '' then
  local last = redis.call('GET', KEYS[2])
  if not last or tonumber(last) < tonumber(ARGV[2]) then redis.call('SET', KEYS[2], ARGV[2], 'EX', ttl) end
end
return gates
"""

# A drain job takes a chunk: register its fence (KEYS[1], member ARGV[1]) at Redis's time, and say
# whether any gate is pending (KEYS[2]) and when the newest erase was accepted (KEYS[3]).
LOOK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
return {tostring(now), redis.call('GET', KEYS[2]) or '0', redis.call('GET', KEYS[3]) or ''}
"""

# The marks of these users: for each order hash, its erase mark ('' if none) and its pending gates.
MARKS = """
local out = {}
for i, key in ipairs(KEYS) do
  local mark = redis.call('HGET', key, 'del') or ''
  local gates = {}
  local fields = redis.call('HGETALL', key)
  for j = 1, #fields, 2 do
    if string.sub(fields[j], 1, 2) == 'g:' then
      table.insert(gates, string.sub(fields[j], 3))
      table.insert(gates, fields[j + 1])
    end
  end
  out[i] = {mark, gates}
end
return out
"""

# Settle gates (KEYS[1] the count, then order hashes; ARGV: pairs key index, seq) and drop a fence
# (KEYS[2] the fences, ARGV[1] its member, '' for none).
SETTLE = """
local settled = 0
for i = 2, #ARGV, 2 do
  settled = settled + redis.call('HDEL', KEYS[tonumber(ARGV[i])], 'g:' .. ARGV[i + 1])
end
if settled > 0 then
  local left = redis.call('DECRBY', KEYS[1], settled)
  if left <= 0 then redis.call('DEL', KEYS[1]) end
end
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[2], ARGV[1]) end
return settled
"""

# May an erasing record checked at ARGV[1] go? Not while a chunk of another lane checked before it
# is uncommitted by a drain job that still holds its lane. KEYS[1] the fences, then the lease of
# each lane named in ARGV[3..]; ARGV[2] the asking lane. Fences of owners that lost their lease go.
FENCES_CLEAR = """
local lease_of = {}
for i = 3, #ARGV do lease_of[ARGV[i]] = KEYS[i - 1] end
local blocked = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])) do
  local lane, token = string.match(member, '^(.*)|([^|]*)|[^|]*$')
  if lane ~= ARGV[2] then
    local lease = lease_of[lane]
    if lease and redis.call('GET', lease) == token then
      blocked = blocked + 1
    elseif not lease then
      blocked = blocked + 1  -- a lane this job does not know yet: it will, and then see its lease
    else
      redis.call('ZREM', KEYS[1], member)
    end
  end
end
return blocked
"""


@functools.cache
def _script(client: redis.Redis, text: str) -> Any:
    """A Lua script registered once per client (then sent by its SHA)."""
    return client.register_script(text)


def named_users(kind: Kind, record: Mapping[str, Any]) -> list[str]:
    """The users (user_key strings) a loaded record names, as handlers/translate.py sees them."""
    if kind is Kind.ALIAS:
        alias = {"alias_name": record["alias_name"], "alias_label": record["alias_label"]}
        named = [user_key({"user_alias": alias})]
        if record.get("external_id"):
            named.append(user_key({"external_id": record["external_id"]}))
        return named
    if kind is Kind.IDENTIFY:
        other = next(name for name in ("user_alias", "email", "phone") if name in record)
        return [user_key({"external_id": record["external_id"]}), user_key({other: record[other]})]
    if kind is Kind.MERGE:
        return [_named(record["keep"]), _named(record["merge"])]
    if kind is Kind.EXTERNAL_ID_RENAME:
        return [
            user_key({"external_id": record[name]}) for name in ("current_external_id", "new_external_id")
        ]
    if kind is Kind.EXTERNAL_ID_REMOVE:
        return [user_key({"external_id": record["external_id"]})]
    if kind is Kind.ALIAS_UPDATE:
        label = record["alias_label"]
        return [
            user_key({"user_alias": {"alias_name": record[name], "alias_label": label}})
            for name in ("old_alias_name", "new_alias_name")
        ]
    ident = record.get("_id")
    return [user_key(ident)] if ident else []


def _named(ident: Mapping[str, Any]) -> str:
    """The user an identifier object names (its prioritization aside), as a user_key string."""
    return user_key({key: value for key, value in ident.items() if key != "prioritization"})


def users_of(env: Envelope) -> list[str]:
    """The users an envelope's record names."""
    try:
        return named_users(kind_of(env["kind"]), env["rec"])
    except (KeyError, TypeError, ValueError):  # a record its kind cannot read: its translation says why
        return []


# --- the edge -------------------------------------------------------------------------------------


@dataclass
class Acceptance:
    """The marks a batch's gating records leave, worked out before its transaction is queued."""

    workspace: str
    keys: list[str] = field(default_factory=list)  # order hashes, in KEYS order after the two counters
    args: list[Any] = field(default_factory=list)
    erased_at: float | None = None

    def key(self, user_digest: str) -> int:
        """The KEYS index of a user's order hash (added if new)."""
        name = store.keys(self.workspace).order(user_digest)
        if name not in self.keys:
            self.keys.append(name)
        return self.keys.index(name) + 3


def plan_acceptance(
    client: redis.Redis, workspace: str, gating: Sequence[Envelope], ttl_s: int, *, watch: Any = None
) -> tuple[list[str], list[Any]] | None:
    """The ACCEPT call for a batch's gating records: (keys, args), or None when there is none.

    The named users' links are read first (on `watch`, a pipeline in WATCH mode, so that a link
    added meanwhile aborts the transaction and the caller tries again).
    """
    if not gating:
        return None
    keys_of = store.keys(workspace)
    named = {id(env): [store.digest(workspace, user) for user in users_of(env)] for env in gating}
    everyone = sorted({digest for digests in named.values() for digest in digests})
    reader = watch if watch is not None else client
    if watch is not None:
        watch.watch(*(keys_of.order(digest) for digest in everyone))
    links = _links(reader, workspace, everyone)
    plan = Acceptance(workspace)
    for env in gating:
        mode = BY_KIND[kind_of(env["kind"])]
        users = named[id(env)]
        gated = sorted({*users, *(linked for user in users for linked in links.get(user, ()))})
        for digest in gated:
            plan.args += ["g", plan.key(digest), env["seq"], env["kind"], ",".join(gated)]
            if mode.erases:
                plan.args += ["d", plan.key(digest), env["seq"]]
        if mode.erases:
            plan.erased_at = max(plan.erased_at or 0.0, env["at"])
        if mode.links:
            for one in users:
                for other in users:
                    if one != other:
                        plan.args += ["l", plan.key(one), other]
    head = [ttl_s, "" if plan.erased_at is None else repr(plan.erased_at)]
    return [keys_of.order_gates, keys_of.order_erased, *plan.keys], [*head, *plan.args]


def _links(reader: Any, workspace: str, digests: Sequence[str]) -> dict[str, list[str]]:
    """Each user's linked users (digests), read from their order hashes."""
    if not digests:
        return {}
    keys_of = store.keys(workspace)
    found = [reader.hkeys(keys_of.order(digest)) for digest in digests]
    return {
        digest: [name.decode()[len(LINK) :] for name in names if name.startswith(LINK.encode())]
        for digest, names in zip(digests, found, strict=True)
    }


def accept(pipe: Any, client: redis.Redis, call: tuple[list[str], list[Any]]) -> None:
    """Queue the ACCEPT script on the batch's transaction."""
    keys, args = call
    _script(client, ACCEPT)(keys=keys, args=args, client=pipe)


# --- the drain job ------------------------------------------------------------------------------


class Verdict(StrEnum):
    """What the marks say of one record: go, wait for a gate, or never send (erased)."""

    GO = "go"
    WAIT = "wait"
    ERASED = "erased"


@dataclass
class Checked:
    """A chunk's look at the marks: when (Redis's clock), each record's verdict, what a gate holds."""

    at: float
    member: str
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # record id -> verdict (GO when absent)
    waiting_on: dict[str, str] = field(default_factory=dict)  # record id -> the kind it waits for
    own_gates: dict[str, tuple[float, list[str]]] = field(default_factory=dict)  # id -> (time, digests)


def look(
    client: redis.Redis,
    workspace: str,
    member: str,
    records: Sequence[Envelope],
    *,
    erase_gates_only: bool = False,
) -> Checked:
    """Register the chunk's fence and check its records against their users' marks.

    `erase_gates_only`: the consent lane waits only for erasing gates (its records are sent at once
    and again after the user's earlier records: handlers/commit.py `follow_up`).
    """
    keys_of = store.keys(workspace)
    fence, gates, erased = _script(client, LOOK)(
        keys=[keys_of.fences, keys_of.order_gates, keys_of.order_erased], args=[member]
    )
    checked = Checked(float(fence), member)
    oldest = min((env["at"] for env in records), default=0.0)
    recent_erase = bool(erased) and float(erased) > oldest - RECENT_ERASE_S
    if int(gates) <= 0 and not recent_erase:
        return checked
    users = {env["id"]: [store.digest(workspace, user) for user in users_of(env)] for env in records}
    everyone = sorted({digest for digests in users.values() for digest in digests})
    if not everyone:
        return checked
    found = _script(client, MARKS)(keys=[keys_of.order(digest) for digest in everyone])
    marks = dict(zip(everyone, found, strict=True))
    for env in records:
        _judge(env, users[env["id"]], marks, checked, erase_gates_only)
    return checked


def _judge(
    env: Envelope, digests: list[str], marks: Mapping[str, Any], checked: Checked, erase_gates_only: bool
) -> None:
    """One record's verdict from its users' marks (and its own gate, to settle once it has ended)."""
    seq = env["seq"]
    erased, waits_on = False, None
    for digest in digests:
        mark, gates = marks[digest]
        erased = erased or (bool(mark) and _text(mark) > seq)
        for i in range(0, len(gates), 2):
            gate_seq, (kind, at, gated) = _text(gates[i]), _text(gates[i + 1]).split("|", 2)
            if gate_seq == seq:
                checked.own_gates[env["id"]] = (float(at), gated.split(","))
            elif gate_seq < seq and (not erase_gates_only or BY_KIND[kind_of(kind)].erases):
                waits_on = kind
    if erased:
        checked.verdicts[env["id"]] = Verdict.ERASED
    elif waits_on is not None:
        checked.verdicts[env["id"]] = Verdict.WAIT
        checked.waiting_on[env["id"]] = waits_on


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def settle(
    pipe: Any, client: redis.Redis, workspace: str, gates: Iterable[tuple[str, list[str]]], member: str
) -> None:
    """Queue settling gates, (seq, user digests), and dropping the chunk's fence, on the commit."""
    keys_of = store.keys(workspace)
    keys = [keys_of.order_gates, keys_of.fences]
    args: list[Any] = [member]
    for seq, digests in gates:
        for digest in digests:
            name = keys_of.order(digest)
            if name not in keys:
                keys.append(name)
            args += [keys.index(name) + 1, seq]
    _script(client, SETTLE)(keys=keys, args=args, client=pipe)


def fences_clear(client: redis.Redis, workspace: str, at: float, lane: str, lanes: Sequence[str]) -> bool:
    """True when no other lane's chunk checked before `at` is still on its way (see FENCES_CLEAR)."""
    keys_of = store.keys(workspace)
    leases = [keys_of.lane_lease(name.split(":", 1)[1]) for name in lanes]
    blocked = _script(client, FENCES_CLEAR)(keys=[keys_of.fences, *leases], args=[repr(at), lane, *lanes])
    return not int(blocked)
