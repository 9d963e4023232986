"""Every caller shape and every Braze mode, end to end: edge -> real Redis -> RQ worker -> simulator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from braze_sim.server import Simulator
from tests.helpers import SHAPES, requests_for

T1 = 1_764_000_000  # 2025-11-24T16:00:00Z
T1_ISO = "2025-11-24T16:00:00.000Z"


def post_all(client: FlaskClient, shape: str, route: str, records: list[dict[str, Any]]) -> None:
    """Send the records as a caller of `shape` would, and require a 2xx for each request."""
    for req in requests_for(shape, route, records):
        response = client.open(req["path"], method=req["method"], data=req["body"], headers=req["headers"])
        assert 200 <= response.status_code < 300, response.get_json()


def only(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The single element of a list."""
    assert len(items) == 1, items
    return items[0]


@pytest.mark.parametrize("shape", SHAPES)
def test_custom_event_reaches_braze(
    shape: str, client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """A custom event arrives with its name, time and properties (extra fields and parsed JSON)."""
    record = {
        "external_id": "u1",
        "name": "signup",
        "time": T1,
        "plan": "pro",
        "properties": '{"source": "ad", "n": 2}',
        "td_client_id": "dropped",
    }
    post_all(client, shape, "events", [record])
    drain()
    event = only(braze.state.profile("u1")["events"])
    assert event["name"] == "signup"
    assert event["time"] == T1_ISO
    assert event["properties"] == {"plan": "pro", "source": "ad", "n": 2}


@pytest.mark.parametrize("shape", SHAPES)
def test_purchase_reaches_braze(
    shape: str, client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """A purchase arrives with numbers coerced from strings, currency upper-cased, extras as properties."""
    record = {
        "external_id": "u2",
        "product_id": "sku-1",
        "currency": "usd",
        "price": "9.99",
        "quantity": "2",
        "time": "2025-11-24T16:00:00Z",
        "color": "red",
    }
    post_all(client, shape, "purchases", [record])
    drain()
    purchase = only(braze.state.profile("u2")["purchases"])
    assert purchase["product_id"] == "sku-1"
    assert purchase["currency"] == "USD"
    assert purchase["price"] == 9.99
    assert purchase["quantity"] == 2
    assert purchase["time"] == T1_ISO
    assert purchase["properties"] == {"color": "red"}


@pytest.mark.parametrize("shape", SHAPES)
def test_profile_attributes_reach_braze(
    shape: str, client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """Every field but the identifier, time and td_ fields becomes an attribute; nulls are left out."""
    records = [
        {
            "external_id": "u3",
            "first_name": "Ann",
            "email": "ann@example.com",
            "score": 5,
            "home_city": None,
            "td_ip": "10.0.0.1",
            "time": T1,
        },
        {
            "user_alias": '{"alias_name": "anon-9", "alias_label": "device"}',
            "first_name": "Bo",
            "email": None,
            "score": None,
            "home_city": "Oslo",
            "td_ip": None,
            "time": T1,
        },
    ]
    post_all(client, shape, "profiles", records)
    drain()
    profile = braze.state.profile("u3")
    assert profile["attributes"] == {"first_name": "Ann", "email": "ann@example.com", "score": 5}
    alias_only = braze.state.find(user_alias={"alias_name": "anon-9", "alias_label": "device"})
    assert alias_only is not None and alias_only["external_id"] is None
    assert alias_only["attributes"] == {"first_name": "Bo", "home_city": "Oslo"}


@pytest.mark.parametrize("shape", SHAPES)
def test_new_alias_reaches_braze(
    shape: str, client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """An alias without external_id makes an alias-only user; with one, it joins that user."""
    braze.state.seed_profile(external_id="u4", attributes={"first_name": "Cy"})
    records = [
        {"alias_name": "a-1", "alias_label": "crm"},
        {"alias_name": "a-2", "alias_label": "crm", "external_id": "u4"},
    ]
    post_all(client, shape, "aliases", records)
    drain()
    alone = braze.state.find(user_alias={"alias_name": "a-1", "alias_label": "crm"})
    assert alone is not None and alone["external_id"] is None
    assert {"alias_name": "a-2", "alias_label": "crm"} in braze.state.profile("u4")["user_aliases"]


@pytest.mark.parametrize("shape", SHAPES)
def test_identify_reaches_braze(
    shape: str, client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """An alias-only user is identified with the external_id and keeps what it had."""
    braze.state.seed_profile(
        user_alias={"alias_name": "anon-1", "alias_label": "device"}, attributes={"seen": True}
    )
    post_all(
        client, shape, "identify", [{"external_id": "u5", "alias_name": "anon-1", "alias_label": "device"}]
    )
    drain()
    profile = braze.state.profile("u5")
    assert profile is not None
    assert {"alias_name": "anon-1", "alias_label": "device"} in profile["user_aliases"]
    assert profile["attributes"] == {"seen": True}


@pytest.mark.parametrize("shape", SHAPES)
def test_delete_reaches_braze(
    shape: str, client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """Users named by external_id, email or alias are deleted."""
    braze.state.seed_profile(external_id="u6")
    braze.state.seed_profile(email="gone@example.com")
    braze.state.seed_profile(user_alias={"alias_name": "x", "alias_label": "y"})
    braze.state.seed_profile(external_id="keep")
    records = [{"external_id": "u6"}, {"email": "gone@example.com"}, {"alias_name": "x", "alias_label": "y"}]
    post_all(client, shape, "deletes", records)
    drain()
    assert braze.state.profile("u6") is None
    assert braze.state.find(email="gone@example.com") is None
    assert braze.state.find(user_alias={"alias_name": "x", "alias_label": "y"}) is None
    assert braze.state.profile("keep") is not None


@pytest.mark.parametrize("shape", SHAPES)
def test_subscription_reaches_braze(
    shape: str, client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """Group states by external_id and by an email with no profile, and global email/push states."""
    braze.state.seed_profile(external_id="u7")
    records = [
        {
            "external_id": "u7",
            "subscription_group_id": "g-news",
            "subscription_state": "unsubscribed",
            "push_subscribe": "opted_in",
            "time": T1,
        },
        {
            "email": "new@example.com",
            "subscription_group_id": "g-news",
            "subscription_state": "subscribed",
            "email_subscribe": "unsubscribed",
            "time": T1,
        },
    ]
    post_all(client, shape, "consent", records)
    drain()
    profile = braze.state.profile("u7")
    assert profile["subscription_groups"] == {"g-news": "unsubscribed"}
    assert profile["push_subscribe"] == "opted_in"
    orphans = braze.state.snapshot()["orphans"]
    assert "new@example.com" in str(orphans)
    # A profile created later for that email picks up the states Braze kept for it.
    braze.state.seed_profile(email="new@example.com")
    adopted = braze.state.find(email="new@example.com")
    assert adopted["subscription_groups"] == {"g-news": "subscribed"}
    assert adopted["email_subscribe"] == "unsubscribed"
