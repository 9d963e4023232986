"""Subscription groups as Braze's v2 endpoint takes them: a route's double opt-in, and phones that must
already be E.164 (refused at the edge, never rewritten)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from braze_sim.server import Simulator
from relay.config import load_settings
from relay.errors import ConfigError
from tests.helpers import ROUTES, WRITE_KEY

HEADERS = {"Authorization": f"TD1 {WRITE_KEY}"}
V2 = "/v2/subscription/status/set"
SMS_CONSENT = """
[routes.sms_consent]
database = "db"
table = "sms_consent"
mode = "user_subscription"
double_opt_in = true
"""


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    """The tests' routes, and a consent route with double opt-in."""
    path = tmp_path / "relay.toml"
    path.write_text(ROUTES + SMS_CONSENT)
    return path


def post(client: FlaskClient, table: str, records: list[dict[str, Any]], status: int = 200) -> Any:
    """Send records through the TD ingestion endpoint; require `status`; the answer's JSON."""
    response = client.post(f"/db/{table}", json={"records": records}, headers=HEADERS)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def test_double_opt_in_route_asks_braze_for_it_on_subscribes(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """`double_opt_in = true`: a subscribe's v2 group entry carries `use_double_opt_in_logic: true`
    (https://www.braze.com/docs/api/endpoints/subscription_groups/post_update_user_subscription_group_status_v2/,
    request body: per group, optional boolean); an unsubscribe's does not (Braze applies it to a
    subscribe only), and the same subscribe on a route without it does not either."""
    post(
        client,
        "sms_consent",
        [
            {"phone": "+14155550100", "subscription_group_id": "sms", "subscription_state": "subscribed"},
            {"phone": "+14155550101", "subscription_group_id": "sms", "subscription_state": "unsubscribed"},
        ],
    )
    post(
        client,
        "consent",
        [{"phone": "+14155550102", "subscription_group_id": "sms", "subscription_state": "subscribed"}],
    )
    drain()
    first = next(entry for entry in braze.requests if entry["path"] == V2)  # each goes once more, later
    groups = first["body"]["subscription_groups"]
    assert sorted(groups, key=lambda group: group["phones"]) == [
        {
            "subscription_group_id": "sms",
            "subscription_state": "subscribed",
            "phones": ["+14155550100"],
            "use_double_opt_in_logic": True,
        },
        {"subscription_group_id": "sms", "subscription_state": "unsubscribed", "phones": ["+14155550101"]},
        {"subscription_group_id": "sms", "subscription_state": "subscribed", "phones": ["+14155550102"]},
    ]


def test_double_opt_in_for_an_alias_goes_in_its_track_group(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """An alias's group state goes through /users/track `subscription_groups`, which takes
    `use_double_opt_in_logic` in the group object (https://www.braze.com/docs/api/objects_filters/
    user_attributes_object/, subscription groups)."""
    alias = {"alias_name": "web-1", "alias_label": "td_client_id"}
    post(
        client, "sms_consent", [{**alias, "subscription_group_id": "sms", "subscription_state": "subscribed"}]
    )
    drain()
    call = next(entry for entry in braze.requests if entry["path"] == "/users/track")
    assert call["body"]["attributes"][0]["subscription_groups"] == [
        {"subscription_group_id": "sms", "subscription_state": "subscribed", "use_double_opt_in_logic": True}
    ]


@pytest.mark.parametrize(
    "phone", ["4155550100", "+1 415 555 0100", "+1-415-555-0100", "+0123456789", "+1234567", "0033612345678"]
)
def test_a_phone_not_in_e164_is_refused_naming_record_and_field(
    client: FlaskClient, braze: Simulator, phone: str
) -> None:
    """A consent record's phone must already be E.164: 422 naming the record's index and `phone`,
    nothing stored, nothing sent (the relay does not rewrite it)."""
    records = [
        {"phone": "+14155550100", "subscription_group_id": "sms", "subscription_state": "subscribed"},
        {"phone": phone, "subscription_group_id": "sms", "subscription_state": "subscribed"},
    ]
    answer = post(client, "consent", records, status=422)
    assert list(answer["errors"]["records"]) == ["1"]
    assert "E.164" in answer["errors"]["records"]["1"]["phone"][0]


def test_an_e164_phone_is_sent_as_it_came(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """+ and 8 to 15 digits is taken and sent unchanged."""
    phones = ["+4781549300", "+861012345678901"]
    post(
        client,
        "consent",
        [{"phone": p, "subscription_group_id": "g", "subscription_state": "subscribed"} for p in phones],
    )
    drain()
    call = next(entry for entry in braze.requests if entry["path"] == V2)
    assert call["body"]["subscription_groups"][0]["phones"] == phones


def test_double_opt_in_is_a_consent_routes_key(
    tmp_path: Path, relay_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`double_opt_in` on a route of another mode stops the start, naming route and key."""
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[routes.events]\nmode = "user_track"\ntrack_record_type = "custom_events"\ndouble_opt_in = true\n'
    )
    monkeypatch.setenv("RELAY_CONFIG", str(routes))
    with pytest.raises(
        ConfigError, match=r"route 'events'.*key 'double_opt_in': only allowed when mode is user_subscription"
    ):
        load_settings()
