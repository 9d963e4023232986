"""No stale overwrite: per user and field, only a record at least as new as the newest seen is sent.

Each profile attribute and subscription state a record sets has a newest-value *watermark* in
Redis: the (time, arrival) stamp of the newest record sent for that user and field. A record
raises the watermark if no newer stamp holds the field (its own stamp passes again on a retry), and
otherwise drops that field (counted as superseded). One drain job owns a lane at a time, so the
watermarks and sends of a lane move in order.
"""

from __future__ import annotations

import redis

from handlers.translate import Item
from relay import store

RAISE_WATERMARKS = """
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


class Watermarks:
    """The newest-value watermarks in Redis: raises them for the items of one batch."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.script = client.register_script(RAISE_WATERMARKS)
        self.ttl_s = ttl_s

    def keep_newest(self, items: list[Item]) -> list[Item]:
        """Drop from each item the fields a newer record holds, in this batch or already sent."""
        items = newest_in_batch(items)
        marked = [item for item in items if item.watermarks]
        if not marked:
            return items
        keys, args = [], [str(self.ttl_s)]
        for item in marked:
            keys.append(store.keys(item.envelope["ws"]).watermark(item.user))
            args += [
                repr(float(item.envelope["t"])),
                item.envelope["seq"],
                str(len(item.watermarks)),
                *item.watermarks,
            ]
        results = self.script(keys=keys, args=args)
        kept_items = {id(item) for item in items if not item.watermarks}
        for item, kept in zip(marked, results, strict=True):
            won = {name.decode() if isinstance(name, bytes) else name for name in kept}
            lost = [name for name in item.watermarks if name not in won]
            if not won:
                continue
            if lost:
                item.obj = _without(item, lost)
                item.watermarks = [name for name in item.watermarks if name in won]
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
        for name in item.watermarks:
            key = (item.envelope["ws"], item.user, name)
            if key not in newest or stamp >= newest[key][0]:
                newest[key] = (stamp, id(item))
    kept = []
    for item in items:
        if not item.watermarks:
            kept.append(item)
            continue
        won = [
            name for name in item.watermarks if newest[(item.envelope["ws"], item.user, name)][1] == id(item)
        ]
        if not won:
            continue
        if len(won) < len(item.watermarks):
            item.obj = _without(item, [name for name in item.watermarks if name not in won])
            item.watermarks = won
        kept.append(item)
    return kept


def _without(item: Item, lost: list[str]) -> object:
    """The item's object without the fields it lost (attributes are plain keys of the object)."""
    if isinstance(item.obj, dict):
        return {key: value for key, value in item.obj.items() if key not in lost}
    return item.obj
