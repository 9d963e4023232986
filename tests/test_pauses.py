"""The 429 pauses (relay/pauses.py) on the real Redis: one per workspace and family, set only forward in
time, gone with their reset, and listed for the admin page in one look."""

from __future__ import annotations

import time

import redis

from relay import pauses, store
from relay.modes import RateFamily


def test_a_pause_holds_its_family_of_its_workspace_until_its_reset(clean_redis: redis.Redis) -> None:
    """The reset time is read back exactly; other families and workspaces are not paused."""
    until = time.time() + 30
    pauses.pause(clean_redis, "default", RateFamily.TRACK, until)
    assert pauses.paused_until(clean_redis, "default", RateFamily.TRACK) == until
    assert pauses.paused_until(clean_redis, "default", RateFamily.USERS) == 0.0
    assert pauses.paused_until(clean_redis, "eu", RateFamily.TRACK) == 0.0
    left = clean_redis.pttl(store.keys("default").pause(RateFamily.TRACK))
    assert 0 < left <= 30_001, "the key goes with the reset"


def test_a_reset_already_past_pauses_nothing(clean_redis: redis.Redis) -> None:
    """A 429 whose reset has passed writes no key."""
    pauses.pause(clean_redis, "default", RateFamily.TRACK, time.time() - 1)
    assert clean_redis.keys("*") == []


def test_the_pauses_in_force_are_listed_by_workspace_and_family(clean_redis: redis.Redis) -> None:
    """`active` lists the pauses in force at `now`, sorted by workspace; a reset before `now` is not."""
    now = time.time()
    pauses.pause(clean_redis, "eu", RateFamily.CONSENT, now + 60)
    pauses.pause(clean_redis, "default", RateFamily.TRACK, now + 10)
    assert pauses.active(clean_redis, ["eu", "default", "us"], now=now) == [
        pauses.Pause("default", RateFamily.TRACK, now + 10),
        pauses.Pause("eu", RateFamily.CONSENT, now + 60),
    ]
    assert pauses.active(clean_redis, ["eu", "default"], now=now + 30) == [
        pauses.Pause("eu", RateFamily.CONSENT, now + 60)
    ]
    assert pauses.active(clean_redis, [], now=now) == []
