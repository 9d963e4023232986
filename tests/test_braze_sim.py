"""The Braze simulator, over real HTTP: endpoint answers and state effects, limits, rate limiting, faults."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from braze_sim import Simulator

KEY = "test-braze-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
WHEN = "2024-05-01T12:00:00Z"
IDENTIFIER_REQUIRED = "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required"
TOO_MANY = "The max number of external_ids and aliases per request was exceeded"
EMAIL_OR_PHONE = "Either an email address or a phone number should be provided, but not both."
ALIAS = {"alias_name": "anon-1", "alias_label": "device_id"}


@pytest.fixture(scope="module")
def server() -> Iterator[Simulator]:
    """One simulator on a free loopback port for the whole module."""
    with Simulator(api_key=KEY) as sim:
        yield sim


@pytest.fixture
def sim(server: Simulator) -> Simulator:
    """The module's simulator with empty state, log, rate-limit windows and faults."""
    server.reset()
    return server


def post(sim: Simulator, path: str, body: Any, *, headers: dict[str, str] = AUTH, timeout: float = 5) -> Any:
    """POST a JSON body to the simulator with the test key."""
    return requests.post(sim.url + path, json=body, headers=headers, timeout=timeout)


def stored(sim: Simulator, external_id: str | None = None, **identifier: Any) -> dict[str, Any]:
    """The stored profile, failing the test when there is none."""
    found = sim.state.profile(external_id) if external_id else sim.state.find(**identifier)
    assert found is not None, f"no profile for {external_id or identifier}"
    return found


def event(external_id: str, name: str = "opened", **extra: Any) -> dict[str, Any]:
    """A valid event object."""
    return {"external_id": external_id, "name": name, "time": WHEN, **extra}


def purchase(external_id: str, **extra: Any) -> dict[str, Any]:
    """A valid purchase object."""
    return {
        "external_id": external_id,
        "product_id": "sku-1",
        "currency": "USD",
        "price": 9.5,
        "time": WHEN,
        **extra,
    }


def track(sim: Simulator, **arrays: list[Any]) -> Any:
    """POST /users/track with the given arrays."""
    return post(sim, "/users/track", arrays)


# -- /users/track ------------------------------------------------------------------------------


def test_track_creates_profile_and_counts_processed_items(sim: Simulator) -> None:
    """A valid track request answers 201 with *_processed for each array sent and stores everything."""
    answer = track(
        sim,
        attributes=[{"external_id": "u1", "first_name": "Ada"}],
        events=[event("u1")],
        purchases=[purchase("u1", quantity=2)],
    )
    assert answer.status_code == 201
    assert answer.json() == {
        "message": "success",
        "attributes_processed": 1,
        "events_processed": 1,
        "purchases_processed": 1,
    }
    profile = stored(sim, "u1")
    assert profile["attributes"] == {"first_name": "Ada"}
    assert [e["name"] for e in profile["events"]] == ["opened"]
    assert profile["purchases"][0]["quantity"] == 2


def test_every_answer_carries_rate_limit_headers(sim: Simulator) -> None:
    """201 and 401 answers carry X-RateLimit-Limit/Remaining/Reset; Reset is the window end in epoch s."""
    ok = track(sim, events=[event("u1")])
    refused = post(sim, "/users/track", {}, headers={})
    assert ok.headers["X-RateLimit-Limit"] == "3000"
    assert ok.headers["X-RateLimit-Remaining"] == "2999"
    assert 0 < int(ok.headers["X-RateLimit-Reset"]) - time.time() <= 3
    assert refused.headers["X-RateLimit-Remaining"] == "2999"  # a 401 spends no quota


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f'Bearer "{KEY}"'}]
)
def test_bad_key_is_401_and_changes_nothing(sim: Simulator, headers: dict[str, str]) -> None:
    """A missing, wrong or quoted key gets 401 Invalid API Key and no profile is written."""
    answer = post(sim, "/users/track", {"events": [event("u1")]}, headers=headers)
    assert answer.status_code == 401
    assert answer.json() == {"message": "Invalid API Key"}
    assert sim.state.count() == 0


def test_more_than_75_objects_combined_is_400(sim: Simulator) -> None:
    """Braze's default (https://www.braze.com/docs/api/api_limits/): 75 objects across the three arrays;
    40 attributes plus 36 events get 400 Max Input Length Exceeded, 40 plus 35 pass."""
    attributes = [{"external_id": f"u{i}", "n": i} for i in range(40)]
    too_many = track(sim, attributes=attributes, events=[event("u1")] * 36)
    assert too_many.status_code == 400
    assert too_many.json()["message"] == "Max Input Length Exceeded"
    assert sim.state.count() == 0
    assert track(sim, attributes=attributes, events=[event("u1")] * 35).status_code == 201


def test_legacy_contract_takes_75_per_array(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the combined limit (a legacy contract), 76 attributes get 400 Max Input Length Exceeded
    naming the array, and 75 of each array are accepted."""
    monkeypatch.setattr(sim.config, "combined_limit", None)
    too_many = track(sim, attributes=[{"external_id": f"u{i}", "n": i} for i in range(76)])
    assert too_many.status_code == 400
    assert too_many.json()["message"] == "Max Input Length Exceeded"
    assert too_many.json()["errors"][0]["input_array"] == "attributes"
    full = track(
        sim,
        attributes=[{"external_id": f"u{i}", "n": i} for i in range(75)],
        events=[event(f"u{i}") for i in range(75)],
        purchases=[purchase(f"u{i}") for i in range(75)],
    )
    assert full.status_code == 201
    assert sim.state.count() == 75


def test_combined_limit_counts_all_three_arrays(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """With combined_limit 50, 30 attributes plus 21 events are refused and 50 objects pass."""
    monkeypatch.setattr(sim.config, "combined_limit", 50)
    attributes = [{"external_id": f"u{i}", "n": i} for i in range(30)]
    assert track(sim, attributes=attributes, events=[event("u1")] * 21).status_code == 400
    assert track(sim, attributes=attributes, events=[event("u1")] * 20).status_code == 201


def test_body_over_4_mb_is_413(sim: Simulator) -> None:
    """A body over 4 MiB gets 413 Request Entity Too Large."""
    body = {"attributes": [{"external_id": "u1", "blob": "x" * (4 * 1024 * 1024)}]}
    answer = post(sim, "/users/track", body)
    assert answer.status_code == 413
    assert answer.json() == {"message": "Request Entity Too Large"}
    assert sim.state.count() == 0


def test_non_json_body_is_400_and_unknown_path_404(sim: Simulator) -> None:
    """A body that is not a JSON object gets 400; a path Braze does not have gets 404 Not Found."""
    garbled = requests.post(sim.url + "/users/track", data=b"{not json", headers=AUTH, timeout=5)
    assert garbled.status_code == 400
    assert post(sim, "/users/track", [1, 2]).status_code == 400
    missing = post(sim, "/users/nothing", {})
    assert missing.status_code == 404
    assert missing.json() == {"message": "Not Found"}


def test_invalid_items_are_reported_by_array_and_index(sim: Simulator) -> None:
    """Partial success is 201 with errors naming input_array and index; only valid items are applied."""
    answer = track(
        sim,
        attributes=[{"external_id": "u1", "a": 1}, {"first_name": "nobody"}],
        events=[
            event("u1"),
            {"external_id": "u1", "name": "no-time"},
            event("u1", properties={"$bad": 1}),
            event("u1", properties={"time": "reserved"}),
            {"external_id": "u1", "user_alias": ALIAS, "name": "two ids", "time": WHEN},
        ],
        purchases=[purchase("u1", currency="usd"), purchase("u1", quantity=101), purchase("u1", price="9")],
    )
    assert answer.status_code == 201
    body = answer.json()
    assert (body["attributes_processed"], body["events_processed"]) == (1, 1)
    assert "purchases_processed" not in body
    assert [(e["input_array"], e["index"]) for e in body["errors"]] == [
        ("attributes", 1),
        ("events", 1),
        ("events", 2),
        ("events", 3),
        ("events", 4),
        ("purchases", 0),
        ("purchases", 1),
        ("purchases", 2),
    ]
    assert body["errors"][0]["type"] == IDENTIFIER_REQUIRED
    assert len(stored(sim, "u1")["events"]) == 1


def test_no_valid_item_is_400_with_errors(sim: Simulator) -> None:
    """When every object is invalid Braze answers 400 with its fatal message and the errors."""
    answer = track(sim, events=[{"name": "orphan", "time": WHEN}], attributes=[{"email": "not-an-email"}])
    assert answer.status_code == 400
    assert answer.json()["message"].startswith("Valid data must be provided")
    assert {e["input_array"] for e in answer.json()["errors"]} == {"attributes", "events"}


def test_attribute_null_inc_add_remove_and_replace(sim: Simulator) -> None:
    """null removes, inc adds up, add/remove edit arrays without duplicates, a plain array replaces."""
    track(sim, attributes=[{"external_id": "u1", "gone": "x", "visits": {"inc": 2}, "tags": ["a", "b"]}])
    track(
        sim,
        attributes=[
            {
                "external_id": "u1",
                "gone": None,
                "visits": {"inc": 3},
                "tags": {"add": ["b", "c"], "remove": ["a"]},
            },
            {"external_id": "u1", "pets": ["cat", "cat", "dog"]},
        ],
    )
    attributes = stored(sim, "u1")["attributes"]
    assert attributes == {"visits": 5, "tags": ["b", "c"], "pets": ["cat", "dog"]}


def test_subscription_attributes_are_stored_as_subscription_state(sim: Simulator) -> None:
    """email_subscribe, push_subscribe and subscription_groups land in subscription state, not attributes."""
    track(
        sim,
        attributes=[
            {
                "external_id": "u1",
                "email": "ada@example.com",
                "email_subscribe": "opted_in",
                "push_subscribe": "unsubscribed",
                "subscription_groups": [{"subscription_group_id": "g1", "subscription_state": "subscribed"}],
            }
        ],
    )
    profile = stored(sim, "u1")
    assert profile["attributes"] == {"email": "ada@example.com"}
    assert (profile["email_subscribe"], profile["push_subscribe"]) == ("opted_in", "unsubscribed")
    assert profile["subscription_groups"] == {"g1": "subscribed"}


def test_update_existing_only_defaults(sim: Simulator) -> None:
    """Unknown external_ids create profiles unless _update_existing_only; aliases need it false to create."""
    answer = track(
        sim,
        attributes=[
            {"external_id": "new", "a": 1},
            {"external_id": "skipped", "_update_existing_only": True, "a": 1},
            {"user_alias": ALIAS, "a": 1},
        ],
    )
    assert answer.json()["attributes_processed"] == 3  # ignored objects still count as processed
    assert sim.state.profile("new") is not None
    assert sim.state.profile("skipped") is None
    assert sim.state.find(user_alias=ALIAS) is None
    track(sim, attributes=[{"user_alias": ALIAS, "_update_existing_only": False, "a": 2}])
    assert stored(sim, user_alias=ALIAS)["attributes"] == {"a": 2}


def test_duplicate_events_and_purchases_are_kept(sim: Simulator) -> None:
    """The same event and purchase sent twice are stored twice, as Braze does."""
    track(sim, events=[event("u1")] * 2, purchases=[purchase("u1")])
    track(sim, purchases=[purchase("u1")])
    profile = stored(sim, "u1")
    assert (len(profile["events"]), len(profile["purchases"])) == (2, 2)


def test_email_identifies_an_object_without_external_id(sim: Simulator) -> None:
    """An object identified only by email creates or updates the email-only profile."""
    track(sim, attributes=[{"email": "ada@example.com", "phone": "+15550100", "city": "Oslo"}])
    track(sim, events=[{"email": "ADA@example.com", "name": "opened", "time": WHEN}])
    profile = stored(sim, email="ada@example.com")
    assert profile["external_id"] is None
    assert profile["attributes"]["city"] == "Oslo"
    assert len(profile["events"]) == 1


def test_reject_item_hook_reports_like_a_validation_error(sim: Simulator) -> None:
    """A reject_item hook marks chosen objects invalid; they come back in errors and are not applied."""
    sim.faults.reject_item = lambda array, obj: "blocked" if obj.get("name") == "bad" else None
    answer = track(sim, events=[event("u1"), event("u1", name="bad")])
    assert answer.status_code == 201
    assert answer.json()["errors"] == [{"type": "blocked", "input_array": "events", "index": 1}]
    assert len(stored(sim, "u1")["events"]) == 1


# -- aliases, identify, merge, delete -----------------------------------------------------------


def test_alias_new_creates_alias_only_profile_or_attaches_to_known_user(sim: Simulator) -> None:
    """Without external_id alias/new makes an alias-only user; with one it joins that user if it exists."""
    track(sim, attributes=[{"external_id": "u1", "a": 1}])
    other = {"alias_name": "crm-9", "alias_label": "crm"}
    ghost = {"alias_name": "x", "alias_label": "crm", "external_id": "nobody"}
    answer = post(sim, "/users/alias/new", {"user_aliases": [ALIAS, {**other, "external_id": "u1"}, ghost]})
    assert answer.status_code == 201
    assert answer.json() == {"aliases_processed": 3, "message": "success"}
    alias_only = stored(sim, user_alias=ALIAS)
    assert alias_only["external_id"] is None
    assert stored(sim, user_alias=other)["external_id"] == "u1"
    assert sim.state.count() == 2


def test_alias_new_over_50_is_400(sim: Simulator) -> None:
    """More than 50 aliases in one request are refused with Braze's message."""
    aliases = [{"alias_name": f"a{i}", "alias_label": "l"} for i in range(51)]
    answer = post(sim, "/users/alias/new", {"user_aliases": aliases})
    assert answer.status_code == 400
    assert answer.json() == {"message": TOO_MANY}


def test_identify_merges_alias_profile_into_existing_user(sim: Simulator) -> None:
    """Identify folds the alias-only profile into the known user: its attributes win, events add up."""
    track(sim, attributes=[{"external_id": "u1", "name": "Known"}], events=[event("u1", "first")])
    post(sim, "/users/alias/new", {"user_aliases": [ALIAS]})
    track(
        sim,
        attributes=[{"user_alias": ALIAS, "name": "Anon", "city": "Oslo"}],
        events=[{"user_alias": ALIAS, "name": "second", "time": WHEN}],
    )
    answer = post(
        sim, "/users/identify", {"aliases_to_identify": [{"external_id": "u1", "user_alias": ALIAS}]}
    )
    assert answer.status_code == 201
    assert answer.json() == {"aliases_processed": 1, "message": "success"}
    profile = stored(sim, "u1")
    assert profile["attributes"] == {"name": "Known", "city": "Oslo"}
    assert [e["name"] for e in profile["events"]] == ["first", "second"]
    assert profile["user_aliases"] == [ALIAS]
    assert sim.state.count() == 1
    assert sim.state.snapshot()["identified_aliases"] == [{"external_id": "u1", "user_alias": ALIAS}]


def test_identify_gives_alias_profile_a_new_external_id(sim: Simulator) -> None:
    """With no user under that external_id, the alias-only profile simply becomes that user."""
    track(sim, attributes=[{"user_alias": ALIAS, "_update_existing_only": False, "city": "Oslo"}])
    post(sim, "/users/identify", {"aliases_to_identify": [{"external_id": "u7", "user_alias": ALIAS}]})
    profile = stored(sim, "u7")
    assert profile["attributes"] == {"city": "Oslo"}
    assert profile["user_aliases"] == [ALIAS]


def test_merge_folds_one_user_into_another(sim: Simulator) -> None:
    """/users/merge answers 202 and keeps identifier_to_keep with the other's gaps filled."""
    track(sim, attributes=[{"external_id": "old", "a": 1, "b": 1}, {"external_id": "keep", "b": 2}])
    body = {
        "merge_updates": [
            {"identifier_to_merge": {"external_id": "old"}, "identifier_to_keep": {"external_id": "keep"}}
        ]
    }
    assert post(sim, "/users/merge", body).status_code == 202
    assert sim.state.profile("old") is None
    assert stored(sim, "keep")["attributes"] == {"a": 1, "b": 2}


def test_delete_removes_profiles_and_remembers_identifiers(sim: Simulator) -> None:
    """/users/delete removes the named profiles, counts the identifiers and records every one of them."""
    track(
        sim,
        attributes=[
            {"external_id": "u1", "a": 1},
            {"external_id": "u2", "a": 1},
            {"user_alias": ALIAS, "_update_existing_only": False, "a": 1},
        ],
    )
    answer = post(sim, "/users/delete", {"external_ids": ["u1", "ghost"], "user_aliases": [ALIAS]})
    assert answer.status_code == 201
    assert answer.json() == {"deleted": 3, "message": "success"}
    assert [p["external_id"] for p in sim.state.profiles()] == ["u2"]
    deleted = sim.state.snapshot()["deleted"]
    assert deleted["external_ids"] == ["u1", "ghost"]
    assert deleted["user_aliases"] == [ALIAS]
    assert post(sim, "/users/delete", {"external_ids": [f"u{i}" for i in range(51)]}).status_code == 400


# -- subscriptions ------------------------------------------------------------------------------


def test_subscription_v1_sets_group_and_keeps_unknown_email_orphaned(sim: Simulator) -> None:
    """v1 sets the group on known users (by external_id or email) and keeps unknown emails' states."""
    track(sim, attributes=[{"external_id": "u1", "email": "ada@example.com"}, {"external_id": "u2"}])
    body = {
        "subscription_group_id": "g1",
        "subscription_state": "unsubscribed",
        "external_id": ["u2"],
        "email": ["ada@example.com", "new@example.com"],
    }
    answer = post(sim, "/subscription/status/set", body)
    assert answer.status_code == 201
    assert answer.json() == {"message": "success"}
    assert stored(sim, "u1")["subscription_groups"] == {"g1": "unsubscribed"}
    assert stored(sim, "u2")["subscription_groups"] == {"g1": "unsubscribed"}
    orphans = sim.state.snapshot()["orphans"]
    assert orphans["emails"] == {"new@example.com": {"subscription_groups": {"g1": "unsubscribed"}}}


def test_subscription_v1_refuses_email_and_phone_together(sim: Simulator) -> None:
    """Emails and phones in one v1 request get Braze's 'not both' 400."""
    body = {
        "subscription_group_id": "g1",
        "subscription_state": "subscribed",
        "email": ["a@b.co"],
        "phone": ["+1"],
    }
    answer = post(sim, "/subscription/status/set", body)
    assert answer.status_code == 400
    assert answer.json() == {"message": EMAIL_OR_PHONE}


def test_subscription_v2_sets_each_group_and_checks_limits(sim: Simulator) -> None:
    """v2 applies each group; emails with phones in a group, or over 25 groups, are 400 and change nothing."""
    track(sim, attributes=[{"external_id": "u1", "a": 1}])
    groups = [
        {"subscription_group_id": "g1", "subscription_state": "subscribed", "external_ids": ["u1"]},
        {"subscription_group_id": "g2", "subscription_state": "unsubscribed", "phones": ["+15550100"]},
    ]
    assert post(sim, "/v2/subscription/status/set", {"subscription_groups": groups}).status_code == 201
    assert stored(sim, "u1")["subscription_groups"] == {"g1": "subscribed"}
    assert sim.state.snapshot()["orphans"]["phones"] == {
        "+15550100": {"subscription_groups": {"g2": "unsubscribed"}}
    }
    half_bad = [{**groups[0], "subscription_group_id": "g3"}, {**groups[1], "subscription_state": "maybe"}]
    assert post(sim, "/v2/subscription/status/set", {"subscription_groups": half_bad}).status_code == 400
    assert "g3" not in stored(sim, "u1")["subscription_groups"]
    both = [{**groups[1], "emails": ["a@b.co"]}]
    assert post(sim, "/v2/subscription/status/set", {"subscription_groups": both}).json() == {
        "message": EMAIL_OR_PHONE
    }
    many = [groups[0]] * 26
    assert post(sim, "/v2/subscription/status/set", {"subscription_groups": many}).status_code == 400


def test_email_status_sets_known_and_orphans_unknown_until_a_profile_has_it(sim: Simulator) -> None:
    """/email/status sets email_subscribe; an unknown address keeps it until a profile gets that email."""
    track(sim, attributes=[{"external_id": "u1", "email": "ada@example.com"}])
    body = {"email": ["Ada@Example.com", "later@example.com"], "subscription_state": "opted_in"}
    assert post(sim, "/email/status", body).status_code == 201
    assert stored(sim, "u1")["email_subscribe"] == "opted_in"
    assert sim.state.snapshot()["orphans"]["emails"] == {"later@example.com": {"email_subscribe": "opted_in"}}
    track(sim, attributes=[{"external_id": "u9", "email": "later@example.com"}])
    assert stored(sim, "u9")["email_subscribe"] == "opted_in"
    assert sim.state.snapshot()["orphans"]["emails"] == {}


# -- rate limits and faults ---------------------------------------------------------------------


def test_rate_limit_gives_429_with_headers_and_no_state_change(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the family's limit Braze answers 429 with Remaining 0; refused requests write nothing."""
    monkeypatch.setitem(sim.config.limits, "track", (5, 3600.0))
    answers = [track(sim, events=[event(f"u{i}")]) for i in range(7)]
    assert [a.status_code for a in answers] == [201] * 5 + [429] * 2
    refused = answers[-1]
    assert refused.json() == {"message": "Rate limit exceeded"}
    assert refused.headers["X-RateLimit-Limit"] == "5"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert int(refused.headers["X-RateLimit-Reset"]) % 3600 == 0
    assert sim.state.profile("u5") is None
    assert sim.max_accepted_in_window("track", 3600) == 5
    assert sim.max_accepted_in_window("users", 3600) == 0
    assert post(sim, "/users/alias/new", {"user_aliases": [ALIAS]}).status_code == 201  # other family
    assert sim.stats()["rate_limited"] == {"track": 2}


def test_max_accepted_in_window_slides_over_arrival_times(sim: Simulator) -> None:
    """max_accepted_in_window counts accepted requests in the busiest sliding window, not in total."""
    track(sim, events=[event("u1")])
    time.sleep(0.3)
    track(sim, events=[event("u1")])
    track(sim, events=[event("u1")])
    assert sim.max_accepted_in_window("track", 0.2) == 2
    assert sim.max_accepted_in_window("track", 10) == 3


def test_error_rate_one_answers_500_and_changes_nothing(sim: Simulator) -> None:
    """With error_rate 1.0 every Braze request gets 500 Internal Server Error and no state change."""
    sim.faults.error_rate = 1.0
    answer = track(sim, events=[event("u1")])
    assert answer.status_code == 500
    assert answer.json() == {"message": "Internal Server Error"}
    assert sim.state.count() == 0
    assert sim.requests[-1]["fault"] == "error_rate"


def test_fail_next_fails_exactly_n_requests_with_error_status(sim: Simulator) -> None:
    """fail_next 2 with error_status 503 fails the next two requests, then requests succeed."""
    sim.faults.update({"fail_next": 2, "error_status": 503})
    codes = [track(sim, events=[event("u1")]).status_code for _ in range(3)]
    assert codes == [503, 503, 201]
    assert len(stored(sim, "u1")["events"]) == 1


def test_rate_limit_next_forces_429_with_reset_ahead(sim: Simulator) -> None:
    """rate_limit_next 1 answers one 429 whose Reset is rate_limit_reset_s ahead, then the window applies."""
    sim.faults.update({"rate_limit_next": 1, "rate_limit_reset_s": 30})
    limited = track(sim, events=[event("u1")])
    assert limited.status_code == 429
    assert 29 <= int(limited.headers["X-RateLimit-Reset"]) - time.time() <= 31
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert sim.state.count() == 0
    assert track(sim, events=[event("u1")]).status_code == 201
    assert sim.max_accepted_in_window("track", 60) == 1


def test_latency_delays_every_answer(sim: Simulator) -> None:
    """latency_ms holds the answer back long enough for a shorter client timeout to fire."""
    sim.faults.latency_ms = 400
    with pytest.raises(requests.ReadTimeout):
        post(sim, "/users/track", {"events": [event("u1")]}, timeout=0.1)
    sim.faults.latency_ms = 0
    assert track(sim, events=[event("u1")]).status_code == 201


def test_slow_request_applies_state_before_the_client_times_out(sim: Simulator) -> None:
    """A slow request times the client out although Braze stored it: the ambiguous case for retries."""
    sim.faults.update({"slow_rate": 1.0, "slow_ms": 500})
    with pytest.raises(requests.ReadTimeout):
        post(sim, "/users/track", {"events": [event("u1")]}, timeout=0.15)
    assert sim.state.profile("u1") is not None
    assert sim.requests[-1]["fault"] == "slow"


def test_connections_are_kept_alive_between_requests(sim: Simulator) -> None:
    """Requests on one connection stay on it, as with Braze, also after a refusal (its body unread)."""
    host, port = sim.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    body = json.dumps({"events": [event("u1")]})
    statuses, sockets = [], []
    for key in (KEY, "wrong-key", KEY):
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        connection.request("POST", "/users/track", body, headers)
        answer = connection.getresponse()
        answer.read()
        statuses.append(answer.status)
        sockets.append(connection.sock)  # None once the server said Connection: close
    connection.close()
    assert statuses == [201, 401, 201]
    assert sockets[0] is not None
    assert all(sock is sockets[0] for sock in sockets)


# -- control API and CLI ------------------------------------------------------------------------


def test_control_api_shows_state_log_stats_and_sets_faults(sim: Simulator) -> None:
    """/_sim/ serves state, a user by external id or alias, the log since an index, stats; faults, reset."""
    track(sim, attributes=[{"external_id": "u/1", "a": 1}], events=[event("u/1"), {"name": "bad"}])
    browser = {"alias_name": "c/9", "alias_label": "td_client_id"}
    track(sim, attributes=[{"user_alias": browser, "_update_existing_only": False, "b": 2}])
    track(sim, events=[event("u2")])
    base = sim.url + "/_sim"
    assert [p["external_id"] for p in requests.get(base + "/state", timeout=5).json()["profiles"]] == [
        "u/1",
        None,
        "u2",
    ]
    assert requests.get(base + "/users/u/1", timeout=5).json()["attributes"] == {"a": 1}
    assert requests.get(base + "/users/nobody", timeout=5).status_code == 404
    by_alias = requests.get(base + "/aliases/td_client_id/c/9", timeout=5).json()
    assert (by_alias["user_aliases"], by_alias["attributes"]) == ([browser], {"b": 2})
    assert requests.get(base + "/aliases/other_label/c/9", timeout=5).status_code == 404
    log = requests.get(base + "/requests", params={"since": 2}, timeout=5).json()
    assert [(e["index"], e["status"], e["counts"]) for e in log["requests"]] == [(2, 201, {"events": 1})]
    assert log["next"] == 3
    stats = requests.get(base + "/stats", timeout=5).json()
    assert stats["by_path"] == {"/users/track": {"201": 3}}
    assert stats["items_received"]["events"] == 3
    assert stats["items_processed"]["events"] == 2
    assert requests.post(base + "/faults", json={"nonsense": 1}, timeout=5).status_code == 400
    assert requests.post(base + "/faults", json={"fail_next": 1}, timeout=5).json()["fail_next"] == 1
    assert track(sim, events=[event("u2")]).status_code == 500
    requests.post(base + "/reset", timeout=5)
    assert sim.state.count() == 0
    assert sim.requests == []


def test_cli_serves_and_logs_one_line_per_request_without_the_key(tmp_path: Path) -> None:
    """`python -m braze_sim` serves the API and logs endpoint, status and counts, never the API key."""
    root = Path(__file__).resolve().parents[1]
    command = [
        sys.executable,
        "-m",
        "braze_sim",
        "--port",
        "0",
        "--api-key",
        "cli-secret-key",
        "--combined-limit",
        "0",
    ]
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            started = re.search(r"http://[\d.]+:\d+", process.stdout.readline())
            assert started, "the CLI did not log its URL"
            url = started.group(0)
            headers = {"Authorization": "Bearer cli-secret-key"}
            answer = requests.post(
                url + "/users/track", json={"events": [event("u1")]}, headers=headers, timeout=5
            )
            assert answer.status_code == 201
            line = process.stdout.readline()
        finally:
            process.terminate()
    assert "POST /users/track 201 events=1" in line
    assert "cli-secret-key" not in line


def test_sim_index_lists_what_the_simulator_offers(braze: Simulator) -> None:
    """GET /_sim/ lists the control API and every Braze endpoint the simulator answers."""
    index = requests.get(f"{braze.url}/_sim/", timeout=5).json()
    assert {"/users/track", "/users/delete", "/v2/subscription/status/set"} <= {
        entry["path"] for entry in index["braze_endpoints"]
    }
    assert {("GET", "/_sim/state"), ("POST", "/_sim/faults"), ("GET", "/_sim/")} <= {
        (entry["method"], entry["path"]) for entry in index["control"]
    }


def test_rename_answers_by_index_and_keeps_the_old_id_deprecated(sim: Simulator) -> None:
    """https://www.braze.com/docs/api/endpoints/user_data/external_id_migration/post_external_ids_rename/:
    successful renames in `external_ids`, refused ones in `rename_errors` by index; the deprecated id
    still names the user until /users/external_ids/remove, which takes deprecated ids only."""
    sim.state.seed_profile(external_id="old")
    renames = [
        {"current_external_id": "old", "new_external_id": "new"},
        {"current_external_id": "nobody", "new_external_id": "x"},
    ]
    answer = post(sim, "/users/external_ids/rename", {"external_id_renames": renames})
    assert answer.status_code == 201
    assert answer.json()["external_ids"] == ["new"]
    assert [error[0] for error in answer.json()["rename_errors"]] == [1]
    assert sim.state.profile("old") == sim.state.profile("new")
    refused = post(sim, "/users/external_ids/remove", {"external_ids": ["new", "old"]}).json()
    assert refused["removed_ids"] == ["old"] and [error[0] for error in refused["removal_errors"]] == [0]
    assert sim.state.profile("old") is None and sim.state.profile("new") is not None


def test_alias_update_renames_an_alias_under_its_label(sim: Simulator) -> None:
    """https://www.braze.com/docs/api/endpoints/user_data/post_users_alias_update/: the alias named by
    label and old name takes the new name; a missing one is left alone."""
    sim.state.add_alias(("a", "crm"), None)
    updates = [
        {"alias_label": "crm", "old_alias_name": "a", "new_alias_name": "b"},
        {"alias_label": "crm", "old_alias_name": "missing", "new_alias_name": "c"},
    ]
    assert post(sim, "/users/alias/update", {"alias_updates": updates}).status_code == 201
    assert sim.state.find(user_alias={"alias_name": "b", "alias_label": "crm"}) is not None
    assert sim.state.find(user_alias={"alias_name": "a", "alias_label": "crm"}) is None


def test_catalog_items_are_upserted_and_deleted_by_put_and_delete(sim: Simulator) -> None:
    """https://www.braze.com/docs/api/endpoints/catalogs/catalog_items/asynchronous/put_update_catalog_items/
    and .../delete_catalog_items_bulk/: 202 success; POST is not what the relay uses and a catalog
    Braze does not have is 404 catalog-not-found."""
    path = sim.url + "/catalogs/shop/items"
    missing = requests.put(path, json={"items": [{"id": "a"}]}, headers=AUTH, timeout=5)
    assert missing.status_code == 404 and missing.json()["errors"][0]["id"] == "catalog-not-found"
    sim.catalogs.create("shop", ["price"])
    put = requests.put(path, json={"items": [{"id": "a", "price": 1}, {"id": "b"}]}, headers=AUTH, timeout=5)
    assert put.status_code == 202 and put.json() == {"message": "success"}
    gone = requests.delete(path, json={"items": [{"id": "b"}]}, headers=AUTH, timeout=5)
    assert gone.status_code == 202
    assert sim.catalogs.items("shop") == {"a": {"id": "a", "price": 1}}
    assert requests.patch(path, json={"items": []}, headers=AUTH, timeout=5).status_code == 405


@pytest.mark.parametrize(
    ("items", "error"),
    [
        ([{"id": f"i{n}"} for n in range(51)], "request-includes-too-many-items"),
        ([{"price": 1}], "items-missing-ids"),
        ([{"id": 7}], "ids-not-strings"),
        ([{"id": "a b"}], "invalid-ids"),
        ([{"id": "a"}, {"id": "a"}], "ids-not-unique"),
        ([{"id": "a", "colour": "red"}], "invalid-fields"),
        ([{"id": "a", "price": "x" * 5001}], "items-too-large"),
    ],
)
def test_catalog_requests_braze_refuses_are_400_with_its_error_ids(
    sim: Simulator, items: list[dict[str, Any]], error: str
) -> None:
    """The Troubleshooting table of https://www.braze.com/docs/api/endpoints/catalogs/catalog_items/
    asynchronous/post_create_catalog_items_bulk/: the whole request refused, nothing written."""
    sim.catalogs.create("shop", ["price"])
    answer = requests.put(sim.url + "/catalogs/shop/items", json={"items": items}, headers=AUTH, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["message"] == "Invalid Request"
    assert answer.json()["errors"][0]["id"] == error
    assert sim.catalogs.items("shop") == {}


def test_new_families_have_brazes_limits(sim: Simulator) -> None:
    """https://www.braze.com/docs/api/api_limits/: rename and remove 1,000 a minute each, the catalog
    item endpoints 16,000 a minute, merge and alias update in the shared users family (20,000)."""
    sim.catalogs.create("shop")
    limits = {
        "/users/external_ids/rename": post(sim, "/users/external_ids/rename", {"external_id_renames": [{}]}),
        "/users/external_ids/remove": post(sim, "/users/external_ids/remove", {"external_ids": ["x"]}),
        "/users/alias/update": post(sim, "/users/alias/update", {"alias_updates": [{}]}),
        "/catalogs/shop/items": requests.put(
            sim.url + "/catalogs/shop/items", json={"items": [{"id": "a"}]}, headers=AUTH, timeout=5
        ),
    }
    assert {path: answer.headers["X-RateLimit-Limit"] for path, answer in limits.items()} == {
        "/users/external_ids/rename": "1000",
        "/users/external_ids/remove": "1000",
        "/users/alias/update": "20000",
        "/catalogs/shop/items": "16000",
    }


# -- what the order across calls depends on (each as Braze's page says) --------------------------


def test_an_event_by_an_alias_braze_does_not_have_is_dropped_with_a_201(sim: Simulator) -> None:
    """Events and purchases by user_alias are update-only: none for an unknown alias, still a 201
    (https://www.braze.com/docs/api/objects_filters/event_object/, .../purchase_object/)."""
    answer = track(sim, events=[{"user_alias": ALIAS, "name": "early", "time": WHEN}])
    assert answer.status_code == 201 and sim.state.find(user_alias=ALIAS) is None
    post(sim, "/users/alias/new", {"user_aliases": [ALIAS]})
    track(sim, events=[{"user_alias": ALIAS, "name": "late", "time": WHEN}])
    assert [event["name"] for event in stored(sim, user_alias=ALIAS)["events"]] == ["late"]


def test_a_track_after_a_delete_creates_a_new_profile(sim: Simulator) -> None:
    """A deleted profile cannot be restored; a later /users/track by its external_id makes a new one
    (https://www.braze.com/docs/api/endpoints/user_data/post_user_delete/)."""
    track(sim, attributes=[{"external_id": "gone", "plan": "gold"}])
    first = stored(sim, external_id="gone")["braze_id"]
    post(sim, "/users/delete", {"external_ids": ["gone"]})
    track(sim, events=[{"external_id": "gone", "name": "signup", "time": WHEN}])
    again = stored(sim, external_id="gone")
    assert again["braze_id"] != first and again["attributes"] == {}
    assert [event["name"] for event in again["events"]] == ["signup"]


def test_identify_of_an_alias_no_profile_has_adds_it_to_the_identified_user(sim: Simulator) -> None:
    """Identify combines an alias-only profile into the external_id's; with no alias-only profile the
    alias is added to the identified one (its label not taken), and no profile is made for an
    external_id that does not exist (https://www.braze.com/docs/api/endpoints/user_data/post_user_identify/,
    https://www.braze.com/docs/api/objects_filters/aliases_to_identify/: a non-fatal error)."""
    track(sim, attributes=[{"external_id": "known", "a": 1}])
    body = {"aliases_to_identify": [{"external_id": "known", "user_alias": ALIAS}]}
    assert post(sim, "/users/identify", body).status_code == 201
    assert stored(sim, external_id="known")["user_aliases"] == [ALIAS]
    other = {"alias_name": "nobody", "alias_label": "web"}
    post(sim, "/users/identify", {"aliases_to_identify": [{"external_id": "absent", "user_alias": other}]})
    assert sim.state.profile("absent") is None and sim.state.find(user_alias=other) is None


def test_a_subscription_state_for_an_unknown_external_id_is_lost(sim: Simulator) -> None:
    """Braze keeps subscription states for unknown emails and phones, not for an external_id no
    profile has: its subscription pages point to /users/track to create the user first
    (https://www.braze.com/docs/api/endpoints/subscription_groups/post_update_user_subscription_group_v2/)."""
    group = {"subscription_group_id": "g", "subscription_state": "unsubscribed", "external_ids": ["later"]}
    assert post(sim, "/v2/subscription/status/set", {"subscription_groups": [group]}).status_code == 201
    track(sim, attributes=[{"external_id": "later", "a": 1}])
    assert stored(sim, external_id="later")["subscription_groups"] == {}
