"""Consent of a user known only by an alias (a browser): /users/track attributes, newest wins, audited."""

from __future__ import annotations

import json
from collections.abc import Callable

from flask.testing import FlaskClient

from braze_sim.server import Simulator
from tests.helpers import WRITE_KEY

TD1 = {"Authorization": f"TD1 {WRITE_KEY}"}
T1, T2 = 1_764_000_000, 1_764_000_600  # 2025-11-24T16:00Z and ten minutes later
ALIAS = {"alias_name": "browser-77", "alias_label": "td_client_id"}


def consent(client: FlaskClient, **fields: object) -> None:
    """One consent record for the alias through the untransformed user_subscription route."""
    record = {"user_alias": json.dumps(ALIAS), **fields}
    response = client.post("/db/consent", json={"records": [record]}, headers=TD1)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["accepted"] == 1


def test_an_alias_consent_creates_its_profile_with_group_and_global_states(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """Group state and email/push states of an alias no profile has yet reach Braze (subscription_groups)."""
    consent(
        client, subscription_group_id="g-news", subscription_state="subscribed", push_subscribe="opted_in"
    )
    drain()
    profile = braze.state.find(user_alias=ALIAS)
    assert profile is not None and profile["external_id"] is None
    assert profile["subscription_groups"] == {"g-news": "subscribed"}
    assert profile["push_subscribe"] == "opted_in"
    # The v2 endpoint takes no alias; sent at once, and once more after the user's earlier records.
    assert [entry["path"] for entry in braze.requests] == ["/users/track", "/users/track"]


def test_an_older_alias_state_arriving_later_does_not_overwrite_the_newer(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """Newest-wins per user and group holds for an alias: the older state is superseded, and audited so."""
    consent(client, subscription_group_id="g-news", subscription_state="unsubscribed", time=T2)
    drain()
    consent(client, subscription_group_id="g-news", subscription_state="subscribed", time=T1)
    drain()
    assert braze.state.find(user_alias=ALIAS)["subscription_groups"] == {"g-news": "unsubscribed"}
    history = client.application.test_cli_runner().invoke(
        args=["consent", "history", "--alias", "browser-77:td_client_id", "--json"]
    )
    events = [json.loads(line) for line in history.output.splitlines() if line.startswith("{")]
    assert [event["event"] for event in events] == [
        "superseded",
        "received",
        "confirmed",  # the newer state once more, after the user's earlier records
        "confirmed",
        "received",
    ]
    assert events[2].get("again") is True and "again" not in events[3]
