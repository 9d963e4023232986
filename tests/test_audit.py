"""The audit trail (relay/audit.py) on the real Redis: per identifier, newest first, capped, expiring, and
kept under a hash of the identifier, never the identifier itself."""

from __future__ import annotations

import redis

from relay import audit
from relay.envelope import Envelope
from tests.helpers import envelopes

EMAIL = {"email": "ann@example.com"}
TTL_S = 3600


def consent_change(state: str, ident: dict[str, str] = EMAIL) -> Envelope:
    """One consent change of this identifier, as the edge queues it."""
    (env,) = envelopes(
        "user_subscription", [{**ident, "subscription_group_id": "g1", "subscription_state": state}]
    )
    return env


def noted(client: redis.Redis, *events: tuple[Envelope, str]) -> None:
    """Write audit events as the edge and the commit do: queued on a transaction."""
    with client.pipeline(transaction=True) as pipe:
        for env, event in events:
            audit.note(pipe, env, event, TTL_S, reason="why" if event == "retrying" else None)
        pipe.execute()


def test_a_trail_is_newest_first_with_each_changes_fields(clean_redis: redis.Redis) -> None:
    """Each event names its record, route, kind, the record's time and the consent fields it changes."""
    subscribe, unsubscribe = consent_change("subscribed"), consent_change("unsubscribed")
    noted(clean_redis, (subscribe, "received"), (unsubscribe, "received"), (unsubscribe, "retrying"))
    trail = audit.history(clean_redis, "default", EMAIL)
    assert [(event["event"], event["record"]) for event in trail] == [
        ("retrying", unsubscribe["id"]),
        ("received", unsubscribe["id"]),
        ("received", subscribe["id"]),
    ]
    assert trail[0]["reason"] == "why"
    assert trail[0]["changes"] == {"subscription_group_id": "g1", "subscription_state": "unsubscribed"}
    assert (trail[0]["route"], trail[0]["kind"]) == ("unit", "consent")
    assert audit.history(clean_redis, "default", {"email": "bob@example.com"}) == []
    assert audit.history(clean_redis, "other-workspace", EMAIL) == []


def test_a_trail_keeps_its_newest_entries_and_expires(clean_redis: redis.Redis) -> None:
    """At most KEEP events per identifier (the oldest go), for the audit TTL after the last change."""
    change = consent_change("subscribed")
    noted(clean_redis, *[(change, "retrying")] * (audit.KEEP + 5))
    assert len(audit.history(clean_redis, "default", EMAIL)) == audit.KEEP
    assert 0 < clean_redis.ttl(audit.audit_key("default", EMAIL)) <= TTL_S


def test_the_key_names_no_one(clean_redis: redis.Redis) -> None:
    """The trail's key is a hash under the workspace's tag: no email, phone or id in any key name."""
    noted(clean_redis, (consent_change("subscribed"), "received"))
    noted(clean_redis, (consent_change("subscribed", {"phone": "+15551234567"}), "received"))
    keys = [key.decode() for key in clean_redis.keys("*")]
    assert len(keys) == 2 and all(key.startswith("relay:{default}:") for key in keys)
    assert not [key for key in keys if "ann" in key or "example" in key or "5551234567" in key]


def test_records_without_one_identifier_have_no_trail(clean_redis: redis.Redis) -> None:
    """An alias creation names no single user: nothing is written for it."""
    (alias,) = envelopes("user_new_alias", [{"alias_name": "a1", "alias_label": "web"}])
    noted(clean_redis, (alias, "received"))
    assert clean_redis.keys("*") == []
