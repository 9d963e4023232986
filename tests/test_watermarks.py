"""No stale overwrite (handlers/watermarks.py): newest-in-batch and the newest-value watermarks.

docs/delivery.md, rule "No stale overwrite". `newest_in_batch` is pure; `Watermarks` runs its
script on the real Redis (its own keys, no worker, no HTTP).
"""

from __future__ import annotations

from typing import Any

import redis
from flask.testing import FlaskClient

from handlers.translate import Item, to_items
from handlers.watermarks import Watermarks, newest_in_batch
from relay.envelope import Envelope
from tests.helpers import KEYS, WRITE_KEY, envelopes

TD = {"Content-Type": "application/json", "X-TD-Write-Key": WRITE_KEY}


def attribute_items(records: list[dict[str, object]]) -> list[Item]:
    """Attribute items through the real schema and translator, with arrival order as indexed."""
    envs = envelopes("user_track", records, track_record_type="user_profile_attributes")
    return [item for env in envs for item in to_items(env)]


def consent_items(records: list[dict[str, object]]) -> list[Item]:
    envs: list[Envelope] = envelopes("user_subscription", records)
    return [item for env in envs for item in to_items(env)]


def objs(items: list[Item]) -> list[object]:
    return [item.obj for item in items]


def test_batch_keeps_the_newest_value_of_each_field() -> None:
    """Rule "A record older than the watermark drops that field": within one batch, per field."""
    items = attribute_items(
        [
            {"external_id": "u", "tier": "new", "city": "Paris", "time": 200},
            {"external_id": "u", "tier": "old", "time": 100},
            {"external_id": "u", "city": "Lyon", "time": 150},
        ]
    )
    kept = newest_in_batch(items)
    assert objs(kept) == [{"external_id": "u", "tier": "new", "city": "Paris"}]


def test_arrival_order_breaks_ties() -> None:
    """Rule "arrival order breaking ties": equal times, the later arrival wins."""
    items = attribute_items(
        [{"external_id": "u", "tier": "a", "time": 100}, {"external_id": "u", "tier": "b", "time": 100}]
    )
    assert objs(newest_in_batch(items)) == [{"external_id": "u", "tier": "b"}]


def test_users_and_unordered_items_are_left_alone() -> None:
    """Other users' fields do not compete; events carry no watermark and always pass."""
    items = attribute_items(
        [{"external_id": "u1", "tier": "a", "time": 200}, {"external_id": "u2", "tier": "b", "time": 100}]
    )
    events = [
        item
        for env in envelopes(
            "user_track", [{"external_id": "u1", "name": "tap", "time": 1}], track_record_type="custom_events"
        )
        for item in to_items(env)
    ]
    assert len(newest_in_batch(items + events)) == 3


def test_subscription_states_of_one_group_keep_the_newest() -> None:
    """A v2 request groups by state, losing order: only the newest state of a user and group is sent."""
    items = consent_items(
        [
            {
                "external_id": "u",
                "subscription_group_id": "g",
                "subscription_state": "unsubscribed",
                "time": 300,
            },
            {
                "external_id": "u",
                "subscription_group_id": "g",
                "subscription_state": "subscribed",
                "time": 100,
            },
        ]
    )
    (kept,) = newest_in_batch(items)
    assert kept.group == ("g", "unsubscribed", "external_ids")


def test_watermark_drops_an_older_record_already_beaten(clean_redis: redis.Redis) -> None:
    """Rule "A record older than the watermark drops that field (counted as superseded)"."""
    marks = Watermarks(clean_redis, ttl_s=60)
    (newer,) = attribute_items([{"external_id": "u", "tier": "new", "city": "Paris", "time": 200}])
    assert objs(marks.keep_newest([newer])) == [{"external_id": "u", "tier": "new", "city": "Paris"}]
    (older,) = attribute_items([{"external_id": "u", "tier": "old", "zip": "75001", "time": 100}])
    (kept,) = marks.keep_newest([older])
    assert kept.obj == {"external_id": "u", "zip": "75001"}, "tier was newer in Braze; zip was never set"
    (stale,) = attribute_items([{"external_id": "u", "tier": "older", "time": 50}])
    assert marks.keep_newest([stale]) == [], "every field was newer: nothing to send"


def test_a_retry_passes_its_own_watermark(clean_redis: redis.Redis) -> None:
    """Rule "watermarks and sends are in order, retries included": the same record passes again."""
    marks = Watermarks(clean_redis, ttl_s=60)
    (item,) = attribute_items([{"external_id": "u", "tier": "gold", "time": 200}])
    assert marks.keep_newest([item]) == [item]
    (again,) = attribute_items([{"external_id": "u", "tier": "gold", "time": 200}])
    again.envelope["seq"] = item.envelope["seq"]
    assert marks.keep_newest([again]) == [again]


def test_watermarks_expire_with_their_ttl(clean_redis: redis.Redis) -> None:
    """Rule "in Redis for 72 h": each user's watermark key carries the configured expiry."""
    marks = Watermarks(clean_redis, ttl_s=3600)
    (item,) = attribute_items([{"external_id": "u", "tier": "gold", "time": 200}])
    marks.keep_newest([item])
    ttl = clean_redis.ttl(KEYS.watermark(item.user))
    assert 3590 <= ttl <= 3600


def test_watermark_keys_name_no_email_or_phone(
    client: FlaskClient, clean_redis: redis.Redis, drain: Any
) -> None:
    """Delivering attributes by email and phone leaves no raw address or number in a key name."""
    records = [
        {"email": "private.person@example.com", "plan": "gold", "time": 1_764_000_000},
        {"phone": "+14155550123", "plan": "silver", "time": 1_764_000_000},
    ]
    assert client.post("/db/profiles", json={"records": records}, headers=TD).status_code == 200
    drain()
    keys = [key.decode() for key in clean_redis.scan_iter("relay:*")]
    assert any(key.startswith(KEYS.watermark("x").rsplit(":", 1)[0]) for key in keys), keys
    for key in keys:
        assert "private.person" not in key and "example.com" not in key and "4155550123" not in key, key
