"""No stale overwrite: per user and field, only a record at least as new as the newest seen is sent.

Each profile attribute and subscription state a record sets is claimed in Redis with the record's
(time, arrival) stamp. A claim succeeds if no newer stamp holds the field; the record's own stamp
passes again on a retry. One drain job owns a lane at a time, so claims and sends of a lane are in
order; a record that lost a claim to a newer one drops that field (counted as superseded).
"""

from __future__ import annotations

import redis

from handlers.translate import Item
from relay import store

CLAIM = """
local ttl = tonumber(ARGV[1])
local out = {}
local a = 2
for i, key in ipairs(KEYS) do
  local t = tonumber(ARGV[a]); local stamp = ARGV[a] .. '|' .. ARGV[a + 1]; local seq = ARGV[a + 1]
  local n = tonumber(ARGV[a + 2]); a = a + 3
  local kept = {}
  for j = 1, n do
    local field = ARGV[a]; a = a + 1
    local cur = redis.call('HGET', key, field)
    local ok = true
    if cur then
      local sep = string.find(cur, '|', 1, true)
      local ct = tonumber(string.sub(cur, 1, sep - 1)); local cs = string.sub(cur, sep + 1)
      if ct > t or (ct == t and cs > seq) then ok = false end
    end
    if ok then
      redis.call('HSET', key, field, stamp)
      table.insert(kept, field)
    end
  end
  redis.call('EXPIRE', key, ttl)
  out[i] = kept
end
return out
"""


class Claims:
    """Runs the claim script for the items of one batch."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.script = client.register_script(CLAIM)
        self.ttl_s = ttl_s

    def keep_newest(self, items: list[Item]) -> list[Item]:
        """Drop from each item the fields a newer record holds, in this batch or already sent."""
        items = newest_in_batch(items)
        claiming = [item for item in items if item.claims]
        if not claiming:
            return items
        keys, args = [], [str(self.ttl_s)]
        for item in claiming:
            keys.append(store.watermark_key(item.envelope["ws"], item.user))
            args += [
                repr(float(item.envelope["t"])),
                item.envelope["seq"],
                str(len(item.claims)),
                *item.claims,
            ]
        results = self.script(keys=keys, args=args)
        kept_items = {id(item) for item in items if not item.claims}
        for item, kept in zip(claiming, results, strict=True):
            won = {name.decode() if isinstance(name, bytes) else name for name in kept}
            lost = [name for name in item.claims if name not in won]
            if not won:
                continue
            if lost:
                item.obj = _without(item, lost)
                item.claims = [name for name in item.claims if name in won]
            kept_items.add(id(item))
        return [item for item in items if id(item) in kept_items]


def newest_in_batch(items: list[Item]) -> list[Item]:
    """Per user and field, only the batch's newest item keeps the field; items left empty go.

    Needed because a request does not keep the batch's order: subscription groups are grouped by
    state, so an older and a newer state of one user in one request would land in either order.
    """
    newest: dict[tuple[str, str, str], tuple[tuple[float, str], int]] = {}
    for item in items:
        stamp = (float(item.envelope["t"]), item.envelope["seq"])
        for name in item.claims:
            key = (item.envelope["ws"], item.user, name)
            if key not in newest or stamp >= newest[key][0]:
                newest[key] = (stamp, id(item))
    kept = []
    for item in items:
        if not item.claims:
            kept.append(item)
            continue
        won = [name for name in item.claims if newest[(item.envelope["ws"], item.user, name)][1] == id(item)]
        if not won:
            continue
        if len(won) < len(item.claims):
            item.obj = _without(item, [name for name in item.claims if name not in won])
            item.claims = won
        kept.append(item)
    return kept


def _without(item: Item, lost: list[str]) -> object:
    """The item's object without the fields it lost (attributes are plain keys of the object)."""
    if isinstance(item.obj, dict):
        return {key: value for key, value in item.obj.items() if key not in lost}
    return item.obj
