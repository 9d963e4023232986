"""skip_unchanged (handlers/unchanged.py): which values take part, and the memory on the real Redis.

docs/delivery.md "skip_unchanged". The rules (`digest`, `eligible`, `unchanged`) are pure; `Memory` runs its
scripts on the real Redis (its own keys, no worker, no HTTP).
"""

from __future__ import annotations

import redis

from handlers.translate import Item, to_items
from handlers.unchanged import Memory, digest, eligible, is_operation
from relay.unchanged import entry
from relay.unchanged import same as unchanged
from tests.helpers import KEYS, envelopes

NOW = 1_800_000_000.0
TTL = 30 * 86400


def attribute_items(records: list[dict[str, object]], route: str = "unit") -> list[Item]:
    """Attribute items through the real schema and translator (route name `route`)."""
    envs = envelopes("user_track", records, track_record_type="user_profile_attributes")
    for env in envs:
        env["route"] = route
    return [item for env in envs for item in to_items(env)]


def memory(client: redis.Redis, skip: tuple[str, ...] = ("unit",)) -> Memory:
    return Memory(client, TTL, skip_routes=skip, remembering={"default"})


def deliver(client: redis.Redis, mem: Memory, items: list[Item], now: float = NOW) -> None:
    """What the drain job's commit does for delivered items: remember what they sent."""
    memos = mem.memos(items)
    with client.pipeline(transaction=True) as pipe:
        mem.remember(pipe, memos.values(), now)
        pipe.execute()


def sent(items: list[Item]) -> list[object]:
    return [item.obj for item in items]


def test_equal_values_have_equal_digests() -> None:
    """Objects in any key order are the same value; 1 and "1" are not."""
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest(1) != digest("1") and digest(True) != digest(1) and len(digest("x")) == 8


def test_subscription_states_operations_and_merges_are_always_sent() -> None:
    """Rule "Subscription states are always sent"; array/increment operations change a value each time."""
    assert (
        eligible("tier", "gold", {})
        and eligible("tags", ["a"], {})
        and eligible("home", {"city": "Oslo"}, {})
    )
    for name in ("email_subscribe", "push_subscribe", "subscription_groups", "_merge_objects"):
        assert not eligible(name, "subscribed", {})
    assert is_operation({"add": ["x"]}) and is_operation({"inc": 1}) and is_operation({"$add": [{}]})
    assert not eligible("tags", {"remove": ["x"]}, {})
    assert not eligible("home", {"city": "Oslo"}, {"_merge_objects": True})


def test_an_entry_counts_only_while_remembered() -> None:
    """Rule "remembered for RELAY_UNCHANGED_TTL_S": older entries, or before a forget, do not count."""
    value = digest("gold")
    assert unchanged(entry(value, NOW), value, not_before=NOW - TTL)
    assert not unchanged(entry(value, NOW - TTL - 1), value, not_before=NOW - TTL)
    assert not unchanged(entry(digest("silver"), NOW), value, not_before=0)
    assert not unchanged(None, value, not_before=0) and not unchanged(b"short", value, not_before=0)


def test_a_value_delivered_before_is_left_out(clean_redis: redis.Redis) -> None:
    """The same tier again is not sent; a changed city is, alone with the identifier."""
    mem = memory(clean_redis)
    deliver(clean_redis, mem, attribute_items([{"external_id": "u1", "tier": "gold", "city": "Oslo"}]))
    again = attribute_items([{"external_id": "u1", "tier": "gold", "city": "Bergen"}])
    kept, dropped = mem.drop_unchanged(again, mem.memos(again), pending=set(), now=NOW + 60)
    assert sent(kept) == [{"external_id": "u1", "city": "Bergen"}]
    assert dropped.fields == {"unit": 1} and dropped.records == set()


def test_an_object_with_nothing_new_is_not_sent(clean_redis: redis.Redis) -> None:
    """Every value unchanged: the item goes, and its record is counted unchanged."""
    mem = memory(clean_redis)
    deliver(clean_redis, mem, attribute_items([{"external_id": "u1", "tier": "gold"}]))
    again = attribute_items([{"external_id": "u1", "tier": "gold"}])
    kept, dropped = mem.drop_unchanged(again, mem.memos(again), pending=set(), now=NOW + 60)
    assert kept == [] and dropped.records == {again[0].envelope["id"]}


def test_routes_without_skip_unchanged_send_everything_but_teach_the_memory(clean_redis: redis.Redis) -> None:
    """Another route's delivery updates the memory, so an older memory never hides a newer value."""
    mem = memory(clean_redis)
    deliver(clean_redis, mem, attribute_items([{"external_id": "u1", "tier": "gold"}], route="unit"))
    deliver(clean_redis, mem, attribute_items([{"external_id": "u1", "tier": "silver"}], route="other"))
    other = attribute_items([{"external_id": "u1", "tier": "silver"}], route="other")
    kept, _ = mem.drop_unchanged(other, mem.memos(other), pending=set(), now=NOW)
    assert sent(kept) == [{"external_id": "u1", "tier": "silver"}]  # not a skip_unchanged route
    back = attribute_items([{"external_id": "u1", "tier": "gold"}], route="unit")
    kept, _ = mem.drop_unchanged(back, mem.memos(back), pending=set(), now=NOW)
    assert sent(kept) == [{"external_id": "u1", "tier": "gold"}]  # Braze holds silver now


def test_a_value_in_flight_is_never_left_out(clean_redis: redis.Redis) -> None:
    """A field an uncommitted chunk is delivering: what Braze will hold is not known yet."""
    mem = memory(clean_redis)
    deliver(clean_redis, mem, attribute_items([{"external_id": "u1", "tier": "gold"}]))
    again = attribute_items([{"external_id": "u1", "tier": "gold"}])
    key = KEYS.unchanged(again[0].user)
    kept, dropped = mem.drop_unchanged(again, mem.memos(again), pending={(key, "tier")}, now=NOW)
    assert sent(kept) == [{"external_id": "u1", "tier": "gold"}] and not dropped.records


def test_forgetting_a_route_and_the_ttl(clean_redis: redis.Redis) -> None:
    """After a route's memory is forgotten, or past the TTL, values are sent again."""
    mem = memory(clean_redis)
    deliver(clean_redis, mem, attribute_items([{"external_id": "u1", "tier": "gold"}]), now=NOW)
    again = attribute_items([{"external_id": "u1", "tier": "gold"}])
    kept, _ = mem.drop_unchanged(again, mem.memos(again), pending=set(), now=NOW + TTL + 1)
    assert len(kept) == 1
    clean_redis.set(KEYS.unchanged_forgotten("unit"), NOW + 10)
    again = attribute_items([{"external_id": "u1", "tier": "gold"}])
    kept, _ = mem.drop_unchanged(again, mem.memos(again), pending=set(), now=NOW + 20)
    assert len(kept) == 1


def test_memory_keys_hold_no_identifier_and_expire(clean_redis: redis.Redis) -> None:
    """No raw identifier in a key name; each user's memory expires with the TTL; 12 bytes per field."""
    mem = memory(clean_redis)
    deliver(clean_redis, mem, attribute_items([{"email": "ann@example.com", "tier": "gold"}]))
    (key,) = clean_redis.keys(KEYS.unchanged("x").rsplit(":", 1)[0] + ":*")
    assert b"ann" not in key and b"example" not in key
    assert 0 < clean_redis.ttl(key) <= TTL
    assert {name: len(value) for name, value in clean_redis.hgetall(key).items()} == {b"tier": 12}


def test_update_existing_only_items_are_not_remembered(clean_redis: redis.Redis) -> None:
    """Braze may have dropped them (no such user): they teach the memory nothing."""
    envs = envelopes(
        "user_track",
        [{"external_id": "u1", "tier": "gold"}],
        track_record_type="user_profile_attributes",
        update_existing_only=True,
    )
    items = [item for env in envs for item in to_items(env)]
    assert memory(clean_redis).memos(items) == {}
