"""Braze's identity calls end to end (edge -> real Redis -> worker -> simulator over HTTP): identify by
email or phone, merge, external id rename and removal, alias update. Request bodies are checked
against the examples of Braze's own pages, cited in each test."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from braze_sim.server import Simulator
from relay import deadletters, metrics
from tests.helpers import WORKSPACES, WRITE_KEY

HEADERS = {"Authorization": f"TD1 {WRITE_KEY}"}
PRIORITIZATION = ["unidentified", "most_recently_updated"]


def ingest(client: FlaskClient, table: str, records: list[dict[str, Any]], status: int = 200) -> Any:
    """Send records through the TD ingestion endpoint; require `status`; the answer's JSON."""
    response = client.post(f"/db/{table}", json={"records": records}, headers=HEADERS)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def bodies(braze: Simulator, path: str) -> list[dict[str, Any]]:
    """The bodies the simulator received on a path, in order."""
    return [entry["body"] for entry in braze.requests if entry["path"] == path]


def dead(client: redis.Redis) -> list[dict[str, Any]]:
    """Every dead letter."""
    return list(deadletters.iter_entries(client, WORKSPACES))


def test_identify_by_alias_and_email_is_brazes_example(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """https://www.braze.com/docs/api/endpoints/user_data/post_user_identify/ "Request example": an
    alias and an email (with the route's default prioritization) in one request, as Braze shows it; the
    email-only profile then answers to the external id."""
    braze.state.seed_profile(email="john.smith@braze.com", attributes={"first_name": "John"})
    records = [
        {"external_id": "external_identifier", "alias_name": "example_alias", "alias_label": "example_label"},
        {"external_id": "external_identifier_2", "email": "john.smith@braze.com"},
    ]
    ingest(client, "identify", records)
    drain()
    assert bodies(braze, "/users/identify") == [
        {
            "aliases_to_identify": [
                {
                    "external_id": "external_identifier",
                    "user_alias": {"alias_name": "example_alias", "alias_label": "example_label"},
                }
            ],
            "emails_to_identify": [
                {
                    "external_id": "external_identifier_2",
                    "email": "john.smith@braze.com",
                    "prioritization": ["unidentified", "most_recently_updated"],
                }
            ],
        }
    ]
    assert braze.state.profile("external_identifier_2")["attributes"]["first_name"] == "John"


def test_identify_by_phone_takes_the_records_prioritization(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """phone_numbers_to_identify carries the record's own prioritization (a JSON string in a TD column)."""
    braze.state.seed_profile(phone="+15555555555", attributes={"tier": "gold"})
    record = {
        "external_id": "u-phone",
        "phone": "+15555555555",
        "prioritization": '["least_recently_updated"]',
    }
    ingest(client, "identify", [record])
    drain()
    assert bodies(braze, "/users/identify") == [
        {
            "phone_numbers_to_identify": [
                {
                    "external_id": "u-phone",
                    "phone": "+15555555555",
                    "prioritization": ["least_recently_updated"],
                }
            ]
        }
    ]
    assert braze.state.profile("u-phone")["attributes"]["tier"] == "gold"


def test_at_most_50_identifications_per_request_across_the_three_arrays(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """ "You can add up to 50 user aliases per request" (post_user_identify): 40 aliases and 40 emails
    make requests of 50 and 30 identifications, the arrays counted together."""
    aliases = [{"external_id": f"a{n}", "alias_name": f"n{n}", "alias_label": "crm"} for n in range(40)]
    emails = [{"external_id": f"e{n}", "email": f"e{n}@example.com"} for n in range(40)]
    ingest(client, "identify", aliases + emails)
    drain()
    counts = [sum(len(array) for array in body.values()) for body in bodies(braze, "/users/identify")]
    assert sorted(counts) == [30, 50]  # sent at once (no user in both): either may arrive first


def test_merge_is_brazes_example(client: FlaskClient, drain: Callable[..., None], braze: Simulator) -> None:
    """https://www.braze.com/docs/api/endpoints/user_data/post_users_merge/ "Example request": by
    external_id (given as merge_external_id / keep_external_id) and by alias (objects, one as its JSON
    string); Braze answers 202 and the old profiles are folded into the kept ones."""
    braze.state.seed_profile(external_id="old-user1", attributes={"city": "Oslo"})
    braze.state.seed_profile(external_id="current-user1")
    old_alias = {"alias_name": "old-user2@example.com", "alias_label": "email"}
    new_alias = {"alias_name": "current-user2@example.com", "alias_label": "email"}
    records = [
        {"merge_external_id": "old-user1", "keep_external_id": "current-user1"},
        {"merge": json.dumps({"user_alias": old_alias}), "keep": {"user_alias": new_alias}},
    ]
    ingest(client, "merges", records)
    drain()
    assert bodies(braze, "/users/merge") == [
        {
            "merge_updates": [
                {
                    "identifier_to_merge": {"external_id": "old-user1"},
                    "identifier_to_keep": {"external_id": "current-user1"},
                },
                {
                    "identifier_to_merge": {"user_alias": old_alias},
                    "identifier_to_keep": {"user_alias": new_alias},
                },
            ]
        }
    ]
    assert [entry["status"] for entry in braze.requests] == [202]
    assert braze.state.profile("current-user1")["attributes"] == {"city": "Oslo"}
    assert braze.state.profile("old-user1") is None


def test_merge_by_email_sends_prioritization(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """post_users_merge: an email names a user with a prioritization, the record's or the route's."""
    ingest(client, "merges", [{"merge": {"email": "a@example.com"}, "keep_external_id": "u-keep"}])
    drain()
    (body,) = bodies(braze, "/users/merge")
    assert body["merge_updates"][0]["identifier_to_merge"] == {
        "email": "a@example.com",
        "prioritization": PRIORITIZATION,
    }


def test_a_merge_braze_refuses_is_dead_lettered_alone(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """Braze refuses a whole merge request with 400 for one bad identifier (post_users_merge,
    Troubleshooting): the batch is halved until the bad merge stands alone, dead-lettered with Braze's
    message; the good ones are delivered."""
    braze.state.seed_profile(external_id="m-keep")
    records = [{"merge_external_id": f"m-{n}", "keep_external_id": "m-keep"} for n in range(3)]
    records.insert(1, {"merge": {"email": "not-an-email"}, "keep_external_id": "m-keep"})
    ingest(client, "merges", records)
    drain()
    (letter,) = dead(clean_redis)
    assert letter["reason"] == "braze_rejected" and letter["status"] == 400
    assert letter["envelope"]["rec"]["merge"]["email"] == "not-an-email"
    merged = [update for body in bodies(braze, "/users/merge") for update in body["merge_updates"]]
    assert sum(1 for update in merged if update["identifier_to_merge"].get("external_id")) >= 3


def test_rename_and_remove_are_brazes_examples(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """https://www.braze.com/docs/api/endpoints/user_data/external_id_migration/post_external_ids_rename/
    and .../post_external_ids_remove/ "Request example": the rename, then the removal of the id it
    deprecated (one lane keeps their order); the user answers to the new id only."""
    braze.state.seed_profile(external_id="existing_external_id", attributes={"tier": "gold"})
    ingest(
        client,
        "renames",
        [{"current_external_id": "existing_external_id", "new_external_id": "new_external_id"}],
    )
    ingest(client, "removals", [{"external_id": "existing_external_id"}])
    drain()
    assert bodies(braze, "/users/external_ids/rename") == [
        {
            "external_id_renames": [
                {"current_external_id": "existing_external_id", "new_external_id": "new_external_id"}
            ]
        }
    ]
    assert bodies(braze, "/users/external_ids/remove") == [{"external_ids": ["existing_external_id"]}]
    assert braze.state.profile("new_external_id")["attributes"] == {"tier": "gold"}
    assert braze.state.profile("existing_external_id") is None


def test_rename_errors_dead_letter_their_records_alone(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """A rename Braze refuses is named by index in `rename_errors` (post_external_ids_rename, Response):
    that record alone is dead-lettered with Braze's message; the other is delivered."""
    braze.state.seed_profile(external_id="r-1")
    records = [
        {"current_external_id": "no-such-user", "new_external_id": "r-x"},
        {"current_external_id": "r-1", "new_external_id": "r-2"},
    ]
    ingest(client, "renames", records)
    drain()
    (letter,) = dead(clean_redis)
    assert letter["reason"] == "braze_rejected_item"
    assert letter["envelope"]["rec"]["current_external_id"] == "no-such-user"
    assert "primary external_id" in letter["message"]
    assert braze.state.profile("r-2") is not None


def test_removal_errors_dead_letter_their_records_alone(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """ "Only deprecated IDs can be removed" (post_external_ids_remove): a primary id is named in
    `removal_errors` and dead-lettered alone."""
    braze.state.seed_profile(external_id="still-primary")
    ingest(client, "removals", [{"external_id": "still-primary"}])
    drain()
    (letter,) = dead(clean_redis)
    assert letter["reason"] == "braze_rejected_item"
    assert "deprecated" in letter["message"]


def test_alias_update_is_brazes_example(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """https://www.braze.com/docs/api/endpoints/user_data/post_users_alias_update/ "Example request":
    the alias is renamed under its label, after its creation (both travel in the alias lane)."""
    ingest(
        client, "aliases", [{"alias_name": "example_old_alias_name", "alias_label": "example_alias_label"}]
    )
    update = {
        "alias_label": "example_alias_label",
        "old_alias_name": "example_old_alias_name",
        "new_alias_name": "example_new_alias_name",
    }
    ingest(client, "alias_updates", [update])
    drain()
    assert bodies(braze, "/users/alias/update") == [{"alias_updates": [update]}]
    renamed = {"alias_name": "example_new_alias_name", "alias_label": "example_alias_label"}
    assert braze.state.find(user_alias=renamed) is not None


@pytest.mark.parametrize(
    ("table", "record", "field"),
    [
        (
            "identify",
            {"external_id": "u", "email": "a@b.c", "prioritization": ["identified", "unidentified"]},
            "prioritization",
        ),
        (
            "identify",
            {"external_id": "u", "alias_name": "a", "alias_label": "l", "prioritization": ["identified"]},
            "prioritization",
        ),
        ("merges", {"merge_external_id": "u"}, "keep"),
        ("merges", {"merge_external_id": "u", "keep": {"external_id": "u"}}, "keep"),
        ("merges", {"merge": {"email": "a@b.c", "external_id": "u"}, "keep_external_id": "v"}, "merge"),
        ("renames", {"current_external_id": "u", "new_external_id": "u"}, "new_external_id"),
        ("removals", {"email": "a@b.c"}, "external_id"),
        ("alias_updates", {"alias_label": "l", "old_alias_name": "a"}, "new_alias_name"),
    ],
    ids=[
        "both identified and unidentified",
        "prioritization with an alias",
        "no keep",
        "same user",
        "two identifiers",
        "rename to itself",
        "no external_id",
        "no new name",
    ],
)
def test_records_braze_would_refuse_are_422_naming_the_field(
    client: FlaskClient, table: str, record: dict[str, Any], field: str
) -> None:
    """Braze's rules for each call are checked at the edge: 422, naming the record and the field."""
    answer = ingest(client, table, [record], status=422)
    assert field in answer["errors"]["records"]["0"]


@pytest.mark.parametrize(
    ("table", "record", "path", "family"),
    [
        ("identify", {"external_id": "u", "email": "a@example.com"}, "/users/identify", "users"),
        ("merges", {"merge_external_id": "u0", "keep_external_id": "u"}, "/users/merge", "users"),
        (
            "renames",
            {"current_external_id": "u", "new_external_id": "v"},
            "/users/external_ids/rename",
            "rename",
        ),
        ("removals", {"external_id": "u-old"}, "/users/external_ids/remove", "remove"),
        (
            "alias_updates",
            {"alias_label": "l", "old_alias_name": "a", "new_alias_name": "b"},
            "/users/alias/update",
            "users",
        ),
    ],
)
def test_a_429_pauses_the_family_then_the_record_goes(
    client: FlaskClient,
    drain: Callable[..., None],
    braze: Simulator,
    clean_redis: redis.Redis,
    table: str,
    record: dict[str, Any],
    path: str,
    family: str,
) -> None:
    """A 429 (https://www.braze.com/docs/api/api_limits/) is waited out until X-RateLimit-Reset, counted
    against the endpoint's family, and the record is sent again without using up an attempt."""
    braze.state.seed_profile(external_id="u-old")
    braze.state.rename_external_id("u-old", "u")  # "u-old" is deprecated: removable
    braze.faults.rate_limit_next = 1
    ingest(client, table, [record])
    drain()
    statuses = [entry["status"] for entry in braze.requests if entry["path"] == path]
    assert statuses[0] == 429 and 200 <= statuses[-1] < 300
    assert dead(clean_redis) == []
    counted = metrics.read(clean_redis, WORKSPACES)
    assert counted[(metrics.RATE_LIMITED.name, (("family", family), ("source", "braze")))] == 1
