"""Packing items into Braze requests within Braze's per-request limits (handlers/packing.py).

Pure and exact; each test names the rule of docs/delivery.md it pins
("Batching").
"""

from __future__ import annotations

import json
from dataclasses import replace

from handlers.packing import V2_GROUPS_PER_REQUEST, BrazeRequest, pack, plan
from handlers.translate import Item, to_items
from relay.config import Delivery
from relay.modes import Endpoint
from tests.helpers import envelopes

DELIVERY = Delivery()


def items(mode: str, records: list[dict[str, object]], track_record_type: str | None = None) -> list[Item]:
    """The Braze items of these records, through the real schemas and translators."""
    return [
        item
        for env in envelopes(mode, records, track_record_type=track_record_type)
        for item in to_items(env)
    ]


def events(count: int, user: str = "u") -> list[Item]:
    return items(
        "user_track", [{"external_id": f"{user}{i}", "name": "tap"} for i in range(count)], "custom_events"
    )


def test_track_requests_hold_at_most_75() -> None:
    """Rule "75 objects per /users/track request": 200 events make requests of 75, 75 and 50, in order."""
    requests = pack(events(200), DELIVERY)
    assert [len(request.arrays["events"]) for request in requests] == [75, 75, 50]
    names = [obj["external_id"] for request in requests for obj in request.body()["events"]]
    assert names == [f"u{i}" for i in range(200)]


def mixed(n: int) -> list[Item]:
    """`n` events, then as many purchases, then as many attribute updates, each of its own user."""
    return (
        events(n)
        + items(
            "user_track",
            [{"external_id": f"p{i}", "product_id": "x", "currency": "USD", "price": 1} for i in range(n)],
            "purchases",
        )
        + items(
            "user_track",
            [{"external_id": f"a{i}", "tier": "t"} for i in range(n)],
            "user_profile_attributes",
        )
    )


def test_track_arrays_count_together_by_default() -> None:
    """Rule "75 across its three arrays": 75 events, purchases and attributes make three requests of 75."""
    requests = pack(mixed(75), DELIVERY)
    assert [request.count() for request in requests] == [75, 75, 75]
    assert max(request.count() for request in plan(mixed(75), DELIVERY, 8)[0]) <= 75


def test_legacy_setting_fills_the_arrays_side_by_side() -> None:
    """BRAZE_TRACK_PER_ARRAY=75 with BRAZE_TRACK_COMBINED_LIMIT=0: 75 of each array share one request."""
    (request,) = pack(mixed(75), replace(DELIVERY, track_combined=None))
    assert {name: len(values) for name, values in request.arrays.items()} == {
        "events": 75,
        "purchases": 75,
        "attributes": 75,
    }


def test_combined_limit_counts_every_array() -> None:
    """Rule "BRAZE_TRACK_COMBINED_LIMIT sets the combined limit": 50 with BRAZE_TRACK_COMBINED_LIMIT=50."""
    both = events(40) + items(
        "user_track", [{"external_id": f"a{i}", "tier": "t"} for i in range(40)], "user_profile_attributes"
    )
    requests = pack(both, replace(DELIVERY, track_combined=50))
    assert [request.count() for request in requests] == [50, 30]


def test_alias_identify_delete_hold_at_most_50() -> None:
    """Rule "50 on alias, identify, delete and subscription calls"."""
    aliases = items("user_new_alias", [{"alias_name": f"n{i}", "alias_label": "l"} for i in range(120)])
    assert [request.count() for request in pack(aliases, DELIVERY)] == [50, 50, 20]
    deletes = items("user_delete", [{"external_id": f"d{i}"} for i in range(60)])
    requests = pack(deletes, DELIVERY)
    assert [len(request.body()["external_ids"]) for request in requests] == [50, 10]


def test_body_stays_under_the_size_limit() -> None:
    """Rule "under 4 MB": a request starts afresh before its JSON would pass max_body_bytes."""
    big = items(
        "user_track",
        [{"external_id": f"u{i}", "name": "tap", "blob": "x" * 250} for i in range(60)],
        "custom_events",
    )
    small = replace(DELIVERY, max_body_bytes=5_000)
    requests = pack(big, small)
    assert len(requests) > 1
    for request in requests:
        assert len(json.dumps(request.body(), separators=(",", ":"))) <= small.max_body_bytes


def test_subscription_groups_by_group_and_state() -> None:
    """v2 subscription bodies group users by (group, state); at most 50 users per group entry."""
    records = [
        {
            "external_id": f"u{i}",
            "subscription_group_id": "g1",
            "subscription_state": "subscribed" if i % 2 else "unsubscribed",
        }
        for i in range(120)
    ]
    consent = items("user_subscription", records)
    requests = pack(consent, DELIVERY)
    assert all(request.endpoint is Endpoint.SUBSCRIPTION for request in requests)
    groups = [group for request in requests for group in request.body()["subscription_groups"]]
    assert all(len(group["external_ids"]) <= 50 for group in groups)
    assert sum(len(group["external_ids"]) for group in groups) == 120
    assert {group["subscription_state"] for group in groups} == {"subscribed", "unsubscribed"}
    assert all(len(request.body()["subscription_groups"]) <= V2_GROUPS_PER_REQUEST for request in requests)


def test_email_status_requests_hold_one_state() -> None:
    """/email/status takes one state per request: subscribed and unsubscribed emails go apart."""
    records = [
        {"email": f"e{i}@example.com", "email_subscribe": "subscribed" if i % 2 else "unsubscribed"}
        for i in range(6)
    ]
    requests = pack(items("user_subscription", records), DELIVERY)
    bodies = sorted(
        (request.body()["subscription_state"], len(request.body()["email"])) for request in requests
    )
    assert bodies == [("subscribed", 3), ("unsubscribed", 3)]


def test_items_at_maps_braze_error_positions_back() -> None:
    """An `errors` entry (input_array, index) names exactly the item at that position."""
    (request,) = pack(events(3), DELIVERY)
    (item,) = request.items_at("events", 2)
    assert item.envelope["id"] == "req.2"
    assert request.items_at("events", 3) == [] and request.items_at("purchases", 0) == []


def test_data_is_the_body_as_json() -> None:
    """The bytes sent are the body, built from each object's JSON made once at packing."""
    for request in pack(events(3) + items("user_delete", [{"email": "a@example.com"}]), DELIVERY):
        assert json.loads(request.data()) == request.body()
    consent = items("user_subscription", [{"email": "e@example.com", "email_subscribe": "subscribed"}])
    for request in pack(consent, DELIVERY):
        assert json.loads(request.data()) == request.body()


# --- plan: rounds of requests sent at once (docs/delivery.md, "Several requests in flight") ---


def users_of(request: BrazeRequest) -> set[str]:
    return {user for item in request.items for user in item.users}


def test_plan_fills_a_round_of_requests_sent_at_once() -> None:
    """600 events of 600 users, width 8: one round of 8 full requests, every item once, in order."""
    rounds = plan(events(600), DELIVERY, width=8)
    assert [[request.count() for request in one] for one in rounds] == [[75] * 8]
    names = [obj["external_id"] for request in rounds[0] for obj in request.body()["events"]]
    assert names == [f"u{i}" for i in range(600)]


def test_plan_keeps_each_user_in_one_request_of_a_round() -> None:
    """Rule "no two requests in flight at once carry updates for the same user"."""
    records = [{"external_id": f"u{i % 7}", "name": "tap", "n": i} for i in range(300)]
    rounds = plan(items("user_track", records, "custom_events"), DELIVERY, width=4)
    for one in rounds:
        assert len(one) <= 4
        seen: list[str] = [user for request in one for user in users_of(request)]
        assert len(seen) == len(set(seen)), "a user in two requests of one round"
    assert sum(request.count() for one in rounds for request in one) == 300


def test_plan_keeps_each_users_order_across_rounds() -> None:
    """A user with more items than one request takes: later items in later rounds, in order."""
    records = [{"external_id": "busy", "name": "tap", "n": i} for i in range(160)]
    records += [{"external_id": f"other{i}", "name": "tap", "n": i} for i in range(10)]
    rounds = plan(items("user_track", records, "custom_events"), DELIVERY, width=4)
    busy = [
        obj["properties"]["n"]
        for one in rounds
        for request in one
        for obj in request.body()["events"]
        if obj["external_id"] == "busy"
    ]
    assert busy == list(range(160))
    assert len(rounds) == 3  # 75 + 75 + 10 of one user: three requests, one after another
    assert len(rounds[0]) == 2  # the others travel beside the busy user's first request


def test_plan_an_identify_touches_both_its_users() -> None:
    """An identify changes the alias and the external_id: neither shares a round with it elsewhere."""
    records = [
        {"external_id": "x1", "alias_name": "a", "alias_label": "l"},
        {"external_id": "x2", "alias_name": "a", "alias_label": "l"},
        {"external_id": "x1", "alias_name": "b", "alias_label": "l"},
    ]
    rounds = plan(items("user_identifying", records), DELIVERY, width=8)
    for one in rounds:
        seen = [user for request in one for user in users_of(request)]
        assert len(seen) == len(set(seen))


def test_plan_a_user_in_two_endpoints_waits_a_round() -> None:
    """One consent record sending a group state and push_subscribe: two endpoints, two rounds."""
    consent = items(
        "user_subscription",
        [{"external_id": "u", "subscription_group_id": "g", "subscription_state": "subscribed",
          "push_subscribe": "opted_in"}],
    )  # fmt: skip
    rounds = plan(consent, DELIVERY, width=8)
    assert [[request.endpoint for request in one] for one in rounds] == [
        [Endpoint.SUBSCRIPTION],
        [Endpoint.TRACK],
    ]


def test_plan_width_one_is_one_request_at_a_time() -> None:
    """RELAY_INFLIGHT=1: one request per round, as full as Braze's limits allow."""
    rounds = plan(events(200), DELIVERY, width=1)
    assert [[request.count() for request in one] for one in rounds] == [[75], [75], [50]]


def test_plan_puts_each_users_items_together() -> None:
    """200 users with 3 events each, in arrival order: each user's three in one request, one round."""
    records = [{"external_id": f"u{i}", "name": "tap", "n": n} for n in range(3) for i in range(200)]
    rounds = plan(items("user_track", records, "custom_events"), DELIVERY, width=16)
    assert len(rounds) == 1 and sum(request.count() for request in rounds[0]) == 600
    for request in rounds[0]:
        by_user: dict[str, list[int]] = {}
        for obj in request.body()["events"]:
            by_user.setdefault(obj["external_id"], []).append(obj["properties"]["n"])
        assert all(seqs == [0, 1, 2] for seqs in by_user.values())


def one_user(*kinds: str) -> list[Item]:
    """One user's items of these record types, in this order ('events', 'purchases', 'attributes')."""
    made = {
        "events": ({"external_id": "u", "name": "tap"}, "custom_events"),
        "purchases": ({"external_id": "u", "product_id": "x", "currency": "USD", "price": 1}, "purchases"),
        "attributes": ({"external_id": "u", "tier": "gold"}, "user_profile_attributes"),
    }
    return [item for kind in kinds for item in items("user_track", [made[kind][0]], made[kind][1])]


def test_plan_a_user_rides_together_only_in_brazes_order() -> None:
    """Braze applies attributes, then events, then purchases: a user's items in that order share one
    request; an attribute update after their event waits for a later request, as does an event after
    their purchase."""
    for kinds in (["attributes", "events", "purchases"], ["events", "events", "purchases"]):
        rounds = plan(one_user(*kinds), DELIVERY, width=8)
        assert [len(one) for one in rounds] == [1], kinds
    rounds = plan(one_user("events", "attributes", "events"), DELIVERY, width=8)
    assert [[list(request.arrays) for request in one] for one in rounds] == [
        [["events"]],
        [["attributes", "events"]],
    ]
    rounds = plan(one_user("purchases", "events"), DELIVERY, width=8)
    assert [[list(request.arrays) for request in one] for one in rounds] == [[["purchases"]], [["events"]]]


def test_plan_packs_users_by_the_earlier_request_they_wait_for() -> None:
    """Users that wait for one earlier request share their next request, so it waits for that request
    alone: 150 users interleaved over two earlier requests (even users in request 1, odd in 2)."""
    records = [{"external_id": f"u{i}", "name": "tap", "n": i} for i in range(150)]
    waits_for = {f"external_id:u{i}": 1 + i % 2 for i in range(150)}
    events = items("user_track", records, "custom_events")
    rounds = plan(events, DELIVERY, width=4, after=waits_for.__getitem__)
    assert [sorted({waits_for[user] for user in users_of(request)}) for request in rounds[0]] == [[1], [2]]
    # Without it, each request would mix users of both earlier requests.
    mixed = plan(events, DELIVERY, width=4)
    assert [sorted({waits_for[user] for user in users_of(request)}) for request in mixed[0]] == [[1, 2]] * 2
