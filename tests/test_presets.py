"""Each preset on the sample payloads of its sender's public documentation, end to end into the simulator.

Samples live in tests/samples/<sender>/; each test names the page its sample comes from. Every test
posts over HTTP into the relay's app, drains with the real RQ worker into the Braze simulator, and
checks the user's state there field by field. Webhook senders authenticate with a Bearer write key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from braze_sim.server import Simulator
from tests.helpers import ROUTES, SAMPLES, WRITE_KEY

SDK_KEY = "test-sdk-key-5e0d"  # the browser routes' own key (write_keys_env), public in a page
BEARER = {"Authorization": f"Bearer {WRITE_KEY}"}
PRESET_ROUTES = """
[routes.sdk_events]
database = "web"
table = "events"
mode = "user_track"
track_record_type = "custom_events"
preset = "td_js_sdk"
write_keys_env = "SDK_WRITE_KEYS"

[routes.sdk_profiles]
database = "web"
table = "profiles"
mode = "user_track"
track_record_type = "user_profile_attributes"
preset = "td_js_sdk"
write_keys_env = "SDK_WRITE_KEYS"

[routes.sdk_profiles_utm]
database = "web"
table = "profiles_utm"
mode = "user_track"
track_record_type = "user_profile_attributes"
preset = "td_js_sdk"
transform_args = { utm_attributes = true }
write_keys_env = "SDK_WRITE_KEYS"

[routes.sdk_consent]
database = "web"
table = "td_cm_consent"
mode = "user_subscription"
preset = "td_js_consent"
write_keys_env = "SDK_WRITE_KEYS"

[routes.sdk_consent.transform_args.purposes]
marketing_email = "email_subscribe"
push = "push_subscribe"
recommendations = "g-recs"

[routes.segment]
mode = "user_track"
track_record_type = "custom_events"
preset = "segment"

[routes.segment_identify]
mode = "user_identifying"
preset = "segment"

[routes.shopify_orders]
mode = "user_track"
track_record_type = "purchases"
preset = "shopify_orders"
transform_args = { currency_default = "USD" }

[routes.shopify_by_email]
mode = "user_track"
track_record_type = "purchases"
preset = "shopify_orders"
transform_args = { identifier = "email", order_event = "ecommerce.order_placed" }

[routes.appsflyer]
mode = "user_track"
track_record_type = "custom_events"
preset = "appsflyer"
"""
CLIENT_ID = "a2d3c1f0-3c77-4c5b-9d8e-6f0a1b2c3d4e"  # the SDK's td_client_id in the samples
BROWSER = {"alias_name": CLIENT_ID, "alias_label": "td_client_id"}


@pytest.fixture
def routes_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The usual routes, one route per preset, and the browser routes' own key."""
    monkeypatch.setenv("SDK_WRITE_KEYS", SDK_KEY)
    path = tmp_path / "relay.toml"
    path.write_text(ROUTES + PRESET_ROUTES)
    return path


def sample(sender: str, name: str) -> Any:
    """A sample payload of tests/samples/<sender>/<name>.json."""
    return json.loads((SAMPLES / sender / f"{name}.json").read_text())


def webhook(client: FlaskClient, route: str, body: Any) -> dict[str, Any]:
    """POST a webhook with a Bearer write key; require 202 and return the answer."""
    response = client.post(f"/webhooks/{route}", json=body, headers=BEARER)
    assert response.status_code == 202, response.get_json()
    answer: dict[str, Any] = response.get_json()
    return answer


def sdk_post(client: FlaskClient, table: str, record: dict[str, Any]) -> dict[str, Any]:
    """What td-js-sdk's addRecord sends (lib/record.js _sendRecord), with the routes' own key."""
    headers = {"Authorization": f"TD1 {SDK_KEY}", "Content-Type": "application/vnd.treasuredata.v1+json"}
    path = f"/web/{table}?modified=1764000000000"
    response = client.post(path, data=json.dumps({"events": [record]}), headers=headers)
    assert response.status_code == 200, response.get_json()
    answer: dict[str, Any] = response.get_json()
    return answer


# --- td_js_sdk ------------------------------------------------------------------------------------
# Samples from treasure-data/td-js-sdk 4.x: lib/plugins/track.js (trackEvent adds the td_* values:
# td_version, td_client_id, ... td_referrer), lib/record.js (addRecord merges $global, the table's
# properties and the record; td_client_id is sent in signed mode only).
# https://github.com/treasure-data/td-js-sdk/blob/master/lib/plugins/track.js


def test_td_js_sdk_event_of_an_anonymous_browser_lands_on_its_alias(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """trackEvent in signed mode: the alias td_client_id, the record's `event` as name, page context kept."""
    answer = sdk_post(client, "events", sample("td_js_sdk", "track_event_signed_mode"))
    assert answer["accepted"] == 2  # the alias's profile first (Braze takes no event for an unknown alias)
    drain()
    profile = braze.state.find(user_alias=BROWSER)
    assert profile is not None and profile["external_id"] is None
    assert profile["attributes"] == {"web_client_id": CLIENT_ID}
    (event,) = profile["events"]
    assert event["name"] == "coupon_clicked"
    assert event["properties"] == {
        "coupon": "SPRING20",
        "page_url": "https://shop.example.com/sale?utm_source=newsletter",
        "page_title": "Spring sale | Example Shop",
        "page_referrer": "https://mail.example.com/",
    }


def test_td_js_sdk_record_of_a_known_user_lands_on_the_external_id_set_in_global(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """addRecord after td.set('$global', {external_id}): that user, the record's name, time and properties."""
    sdk_post(client, "events", sample("td_js_sdk", "add_record_with_global"))
    drain()
    (event,) = braze.state.profile("customer-4711")["events"]
    assert event["name"] == "wishlist_added"
    assert event["time"] == "2026-01-01T00:00:00.000Z"
    assert event["properties"] == {"site": "example-shop", "product_id": "sku-123"}


UTM = ("utm_id", "utm_source", "utm_medium", "utm_source_platform", "utm_campaign", "utm_marketing_tactic")


def test_td_js_sdk_keeps_utm_parameters_out_of_attributes_unless_asked(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """td-js-sdk 4.4 puts the page's UTM parameters in $global, so in every record (its UTMTracking
    plugin: utm_id, utm_medium, utm_source_platform, utm_source, utm_campaign, utm_marketing_tactic).
    On an attribute route each would be a custom attribute: left out, unless the route's
    `transform_args = { utm_attributes = true }` asks for them; an event keeps them as properties."""
    record = sample("td_js_sdk", "add_record_with_utm")
    sdk_post(client, "profiles", record)
    drain()
    assert braze.state.profile("customer-4711")["attributes"] == {"plan": "gold"}
    sdk_post(client, "profiles_utm", {**record, "external_id": "customer-4712"})
    sdk_post(client, "events", {**record, "external_id": "customer-4713", "name": "visit"})
    drain()
    kept = braze.state.profile("customer-4712")["attributes"]
    assert {name: kept.get(name) for name in UTM} == {name: record[name] for name in UTM}
    (event,) = braze.state.profile("customer-4713")["events"]
    assert {name: event["properties"].get(name) for name in UTM} == {name: record[name] for name in UTM}


def test_td_js_sdk_event_without_a_name_takes_the_tables(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """A record with neither name nor event is an event named after the route's table."""
    sdk_post(client, "events", {"external_id": "customer-9", "plan": "pro"})
    drain()
    (event,) = braze.state.profile("customer-9")["events"]
    assert (event["name"], event["properties"]) == ("events", {"plan": "pro"})


def test_td_js_sdk_record_with_no_user_is_refused_saying_how_to_name_one(client: FlaskClient) -> None:
    """No external_id in $global and no td_client_id (anonymous mode): 422 naming the input and the fix."""
    record = {
        key: value
        for key, value in sample("td_js_sdk", "track_event_signed_mode").items()
        if key != "td_client_id"
    }
    headers = {"Authorization": f"TD1 {SDK_KEY}"}
    answer = client.post("/web/events", json={"events": [record]}, headers=headers).get_json()
    assert answer["code"] == 422
    (message,) = answer["errors"]["records"]["0"]["transform"]
    assert "route 'sdk_events', input 0" in message and "td.set('$global'" in message


def test_td_js_sdk_routes_take_only_their_own_key(client: FlaskClient) -> None:
    """The browser routes name their own key: the global write key (not in any page) is refused there."""
    record = sample("td_js_sdk", "add_record_with_global")
    refused = client.post(
        "/web/events", json={"records": [record]}, headers={"Authorization": f"TD1 {WRITE_KEY}"}
    )
    assert refused.status_code == 401


# --- td_js_consent --------------------------------------------------------------------------------
# Samples from treasure-data/td-js-sdk lib/plugins/consent-manager.js: _getNormalizedConsent makes
# {description, datatype, status, expiry_date, issuer, identifier: td.client.track.uuid, purpose,
# context_id}, sent by addConsentRecord to the consent table (default td_cm_consent), no $global.
# https://github.com/treasure-data/td-js-sdk/blob/master/lib/plugins/consent-manager.js


def test_td_js_consent_sets_the_browsers_states_in_braze(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """On the alias: given -> subscribed (email), refused -> unsubscribed (group), notgiven -> none."""
    assert sdk_post(client, "td_cm_consent", sample("td_js_sdk", "consent_given"))["accepted"] == 1
    assert sdk_post(client, "td_cm_consent", sample("td_js_sdk", "consent_refused"))["accepted"] == 1
    notgiven = sdk_post(client, "td_cm_consent", sample("td_js_sdk", "consent_notgiven"))
    assert (notgiven["accepted"], notgiven["filtered"]) == (0, 1)
    drain()
    profile = braze.state.find(user_alias=BROWSER)
    assert profile is not None and profile["external_id"] is None
    assert profile["email_subscribe"] == "subscribed"
    assert profile["subscription_groups"] == {"g-recs": "unsubscribed"}
    assert profile["push_subscribe"] is None


def test_td_js_consent_newest_change_wins_and_is_in_the_audit_trail(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """Given then refused ends refused; `consent history --alias` shows both, the refusal confirmed."""
    given = {**sample("td_js_sdk", "consent_refused"), "status": "given"}
    sdk_post(client, "td_cm_consent", given)
    sdk_post(client, "td_cm_consent", sample("td_js_sdk", "consent_refused"))
    drain()
    assert braze.state.find(user_alias=BROWSER)["subscription_groups"] == {"g-recs": "unsubscribed"}
    history = client.application.test_cli_runner().invoke(
        args=["consent", "history", "--alias", f"{CLIENT_ID}:td_client_id", "--json"]
    )
    events = [json.loads(line) for line in history.output.splitlines() if line.startswith("{")]
    states = [(event["event"], event["changes"].get("subscription_state")) for event in events]
    assert ("received", "subscribed") in states and ("received", "unsubscribed") in states
    assert ("confirmed", "unsubscribed") in states  # the older change was sent or superseded, never last


def test_td_js_consent_context_records_and_unmapped_purposes_make_no_record(client: FlaskClient) -> None:
    """A context record (no purpose) and a purpose transform_args does not map are filtered, not errors."""
    context = {"brand": "shop.example.com", "domain_name": "shop.example.com", "context_id": "c-1"}
    assert sdk_post(client, "td_cm_consent", context)["filtered"] == 1
    unmapped = {**sample("td_js_sdk", "consent_given"), "purpose": "analytics"}
    assert sdk_post(client, "td_cm_consent", unmapped)["filtered"] == 1


# --- segment --------------------------------------------------------------------------------------
# Samples: the complete examples of Segment's spec pages (segmentio/segment-docs
# src/connections/spec/{track,identify,page,screen,group}.md, https://segment.com/docs/connections/spec/),
# the Order Completed example of https://segment.com/docs/connections/spec/ecommerce/v2/ as the track
# call analytics.js makes of it, and RudderStack's identify (traits in context.traits,
# https://www.rudderstack.com/docs/event-spec/standard-events/identify/), as their webhook
# destinations POST them (https://segment.com/docs/connections/destinations/catalog/webhooks/,
# https://www.rudderstack.com/docs/destinations/webhooks/).


def test_segment_track_is_a_custom_event(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """track: userId as external_id, event as name, timestamp as time, properties as they are."""
    webhook(client, "segment", sample("segment", "track"))
    drain()
    (event,) = braze.state.profile("AiUGstSDIg")["events"]
    assert event["name"] == "Course Clicked"
    assert event["time"] == "2015-12-12T19:11:01.249Z"
    assert event["properties"] == {"title": "Intro to Analytics"}


def test_segment_identify_sets_standard_and_custom_attributes(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """identify: reserved traits as standard attributes (email, home_city, country), the rest custom."""
    webhook(client, "segment", sample("segment", "identify"))
    drain()
    attributes = braze.state.profile("97980cfea0067")["attributes"]
    assert attributes["email"] == "peter@example.com"
    assert attributes["home_city"] == "San Francisco"
    assert attributes["country"] == "USA"
    assert attributes["name"] == "Peter Gibbons"
    assert attributes["plan"] == "premium"
    assert attributes["logins"] == 5
    assert attributes["address"]["postalCode"] == "94103"


def test_rudderstack_identify_takes_traits_from_context(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """RudderStack's identify carries its traits in context.traits: they are attributes all the same."""
    webhook(client, "segment", sample("segment", "rudderstack_identify"))
    drain()
    attributes = braze.state.profile("27340af5c8819")["attributes"]
    assert attributes == {"name": "Richard Hendricks", "email": "rhedricks@example.com", "logins": 2}


def test_segment_page_and_screen_are_viewed_events(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """page and screen: "Viewed <name> Page|Screen", with the page's properties and its name."""
    webhook(client, "segment", [sample("segment", "page"), sample("segment", "screen")])
    drain()
    page, screen = braze.state.profile("97980cfea0067")["events"]
    assert page["name"] == "Viewed Home Page"
    assert page["properties"] == {
        "title": "Welcome | Initech",
        "url": "http://www.example.com",
        "name": "Home",
    }
    assert screen["name"] == "Viewed Home Screen"
    assert screen["properties"] == {"variation": "blue signup button", "name": "Home"}


def test_segment_order_completed_is_a_purchase_per_product(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """Order Completed (Segment's e-commerce spec) is revenue: one purchase per product, with its quantity."""
    answer = webhook(client, "segment", sample("segment", "order_completed"))
    assert answer["accepted"] == 2
    drain()
    profile = braze.state.profile("97980cfea0067")
    assert profile["events"] == []
    monopoly, uno = profile["purchases"]
    assert (monopoly["product_id"], monopoly["price"], monopoly["quantity"]) == (
        "507f1f77bcf86cd799439011",
        19,
        1,
    )
    assert (uno["product_id"], uno["price"], uno["quantity"]) == ("505bd76785ebb509fc183733", 3, 2)
    assert monopoly["currency"] == uno["currency"] == "USD"
    assert monopoly["time"] == "2015-12-12T19:11:01.249Z"
    assert monopoly["properties"]["order_id"] == "50314b8e9bcf000000000000"
    assert monopoly["properties"]["sku"] == "45790-32"
    assert uno["properties"] == {
        "order_id": "50314b8e9bcf000000000000",
        "checkout_id": "fksdjfsdjfisjf9sdfjsd9f",
        "affiliation": "Google Store",
        "coupon": "hasbros",
        "sku": "46493-32",
        "name": "Uno Card Game",
        "category": "Games",
    }


def test_segment_anonymous_call_lands_on_the_anonymous_alias(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """Without userId: the alias {anonymousId, "anonymous_id"}, its profile created before its event."""
    anonymous = {key: value for key, value in sample("segment", "screen").items() if key != "userId"}
    assert webhook(client, "segment", anonymous)["accepted"] == 2
    drain()
    profile = braze.state.find(
        user_alias={"alias_name": "3a12eab0-bca7-11e4-8dfc-aa07a5b093db", "alias_label": "anonymous_id"}
    )
    assert profile is not None
    assert [event["name"] for event in profile["events"]] == ["Viewed Home Screen"]


def test_segment_group_makes_no_record(client: FlaskClient) -> None:
    """group calls have nothing to set on a Braze user: filtered, and counted."""
    answer = webhook(client, "segment", sample("segment", "group"))
    assert (answer["accepted"], answer["filtered"]) == (0, 1)


def test_segment_identify_in_a_user_identifying_route_merges_the_anonymous_profile(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """In a user_identifying route: an identify with userId and anonymousId identifies the alias."""
    alias = {"alias_name": "507f191e810c19729de860ea", "alias_label": "anonymous_id"}
    braze.state.seed_profile(user_alias=alias, attributes={"seen_pricing": True})
    assert (
        webhook(client, "segment_identify", [sample("segment", "identify"), sample("segment", "track")])[
            "filtered"
        ]
        == 1
    )
    drain()
    profile = braze.state.profile("97980cfea0067")
    assert alias in profile["user_aliases"]
    assert profile["attributes"] == {"seen_pricing": True}


# --- shopify_orders -------------------------------------------------------------------------------
# Sample: Shopify's orders/create example payload (the order Shopify sends as a test notification and
# shows for the topic, https://shopify.dev/docs/api/webhooks?reference=toml#list-orders/create);
# orders/paid sends the same Order resource (https://shopify.dev/docs/api/admin-rest/latest/resources/webhook).


def test_shopify_order_is_a_purchase_per_line_item_and_the_customers_attributes(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """orders/create: a purchase per line (unit price, quantity, currency, time), ids exact as text."""
    answer = webhook(client, "shopify_orders", sample("shopify", "orders_create"))
    assert answer["accepted"] == 3
    drain()
    profile = braze.state.profile("115310627314723954")  # Shopify's ids exceed 2^53: sent as strings, exact
    assert profile["attributes"] == {
        "first_name": "John",
        "last_name": "Smith",
        "email": "john@test.com",
        "home_city": "Ottawa",
        "country": "CA",
    }
    first, second = profile["purchases"]
    for purchase in (first, second):
        assert purchase["product_id"] == "632910392"
        assert (purchase["price"], purchase["quantity"], purchase["currency"]) == (199.0, 1, "USD")
        assert purchase["time"] == "2019-06-04T17:53:06.000Z"
        assert purchase["properties"]["order_id"] == "820982911946154508"
        assert purchase["properties"]["order_name"] == "#9999"
        assert purchase["properties"]["variant_id"] == "808950810"
        assert purchase["properties"]["sku"] == "IPOD2008PINK"
    assert first["properties"]["line_item_id"] == "866550311766439020"
    assert second["properties"]["line_item_id"] == "141249953214522974"
    assert (first["properties"]["total_discount"], second["properties"]["total_discount"]) == ("0.00", "5.00")


def test_shopify_orders_paid_and_a_guest_checkout(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """orders/paid (same Order) takes processed_at as time; an order without a customer is its email's."""
    order = sample("shopify", "orders_create")
    paid = {
        **order,
        "financial_status": "paid",
        "processed_at": "2019-06-05T09:00:00-04:00",
        "customer": None,
    }
    webhook(client, "shopify_orders", paid)
    drain()
    guest = braze.state.find(email="jon@doe.ca")
    assert guest is not None and guest["external_id"] is None
    assert [purchase["time"] for purchase in guest["purchases"]] == ["2019-06-05T13:00:00.000Z"] * 2


def test_shopify_by_email_with_an_order_event(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """transform_args: identifier = "email", order_event: the order's totals as an event too."""
    webhook(client, "shopify_by_email", sample("shopify", "orders_create"))
    drain()
    profile = braze.state.find(email="jon@doe.ca")
    assert len(profile["purchases"]) == 2
    (event,) = profile["events"]
    assert event["name"] == "ecommerce.order_placed"
    assert event["properties"]["total_price"] == "403.00"
    assert event["properties"]["line_items"] == 2
    assert event["properties"]["order_id"] == "820982911946154508"


# --- appsflyer ------------------------------------------------------------------------------------
# Samples: AppsFlyer Push API V2.0 in-app event messages, with the fields and formats of
# https://support.appsflyer.com/hc/en-us/articles/207034356 (timestamps in UTC as
# "yyyy-mm-dd hh:mm:ss.sss"; event_value a JSON string), values as in its example message (also
# reproduced in rudderlabs/rudder-transformer test/integrations/sources/appsflyer/data.ts), the
# purchase's event_value from https://dev.appsflyer.com/hc/reference/s2s-events-api3-overview.


def test_appsflyer_in_app_event_is_a_custom_event(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """An in-app event: customer_user_id, event_name, event_time (UTC), attribution as properties."""
    webhook(client, "appsflyer", sample("appsflyer", "in_app_event"))
    drain()
    (event,) = braze.state.profile("hi.from@appsflyer.example.com")["events"]
    assert event["name"] == "My Apps"
    assert event["time"] == "2020-01-15T14:57:24.898Z"
    assert event["properties"] == {
        "media_source": "organic",
        "platform": "ios",
        "app_id": "id1217828636",
        "app_version": "1.4.1",
        "country_code": "VN",
        "appsflyer_id": "1547985076649-5309999",
    }


def test_appsflyer_event_with_revenue_is_a_purchase(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """af_purchase with event_revenue: a purchase of af_content_id at that revenue, in its currency."""
    webhook(client, "appsflyer", sample("appsflyer", "in_app_purchase"))
    drain()
    profile = braze.state.profile("hi.from@appsflyer.example.com")
    assert profile["events"] == []
    (purchase,) = profile["purchases"]
    assert (purchase["product_id"], purchase["price"], purchase["currency"]) == ("15854", 1006.0, "ZAR")
    assert purchase["quantity"] == 1
    assert purchase["time"] == "2020-01-15T15:03:41.118Z"
    assert purchase["properties"]["af_event"] == "af_purchase"
    assert purchase["properties"]["af_content_type"] == "wallets"
    assert purchase["properties"]["af_quantity"] == "1"


def test_appsflyer_without_customer_user_id_is_the_devices_alias_and_installs_are_filtered(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """No customer_user_id: the alias {appsflyer_id, "appsflyer_id"}; an install message makes no record."""
    answer = webhook(
        client,
        "appsflyer",
        [sample("appsflyer", "in_app_event_no_customer_user_id"), sample("appsflyer", "install")],
    )
    assert (answer["accepted"], answer["filtered"]) == (2, 1)
    drain()
    profile = braze.state.find(
        user_alias={"alias_name": "1547985076649-5309999", "alias_label": "appsflyer_id"}
    )
    (event,) = profile["events"]
    assert event["name"] == "af_level_achieved"
    assert (event["properties"]["af_level"], event["properties"]["af_score"]) == ("3", "1200")
