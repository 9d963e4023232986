"""Records to Braze objects (handlers/translate.py): one translator per kind, exact objects.

docs/design.md "Records" (the mode table) and docs/delivery.md; records come through the edge's real schemas.
"""

from __future__ import annotations

import pytest

from handlers.translate import TRANSLATORS, braze_time, to_items
from relay.modes import Endpoint, Kind, RateFamily
from tests.helpers import envelopes

T = 1_700_000_000


def one(
    mode: str, record: dict[str, object], track_record_type: str | None = None, **route: object
) -> list[tuple[Endpoint, str, object]]:
    """(endpoint, array, object) of each item of one record."""
    (env,) = envelopes(mode, [record], track_record_type=track_record_type, **route)
    return [(item.endpoint, item.array, item.obj) for item in to_items(env)]


def test_every_kind_has_a_translator() -> None:
    """The registry is complete: adding a kind without a translator fails at import, not in a worker."""
    assert set(TRANSLATORS) == set(Kind)


def test_event() -> None:
    """user_track / custom_events -> /users/track `events`; other fields become properties."""
    items = one(
        "user_track",
        {"external_id": "u", "name": "signup", "plan": "pro", "time": T, "app_id": "a"},
        "custom_events",
    )
    assert items == [
        (
            Endpoint.TRACK,
            "events",
            {
                "external_id": "u",
                "name": "signup",
                "time": braze_time(T),
                "app_id": "a",
                "properties": {"plan": "pro"},
            },
        )
    ]


def test_purchase_with_update_existing_only() -> None:
    """user_track / purchases -> `purchases`; the route's update_existing_only is Braze's flag."""
    record = {"email": "a@example.com", "product_id": "p", "currency": "eur", "price": "9.5", "time": T}
    items = one("user_track", record, "purchases", update_existing_only=True)
    assert items == [
        (
            Endpoint.TRACK,
            "purchases",
            {
                "email": "a@example.com",
                "time": braze_time(T),
                "_update_existing_only": True,
                "product_id": "p",
                "currency": "EUR",
                "price": 9.5,
                "quantity": 1,
            },
        )
    ]


def test_attributes_of_an_alias_create_the_alias_profile() -> None:
    """Attributes for a user_alias say `_update_existing_only: false`, else Braze creates no profile."""
    items = one(
        "user_track", {"alias_name": "n", "alias_label": "l", "tier": "gold"}, "user_profile_attributes"
    )
    assert items == [
        (
            Endpoint.TRACK,
            "attributes",
            {
                "user_alias": {"alias_name": "n", "alias_label": "l"},
                "tier": "gold",
                "_update_existing_only": False,
            },
        )
    ]


def test_alias_identify_delete() -> None:
    """user_new_alias, user_identifying and user_delete go to their endpoints and arrays."""
    assert one("user_new_alias", {"alias_name": "n", "alias_label": "l", "external_id": "u"}) == [
        (Endpoint.ALIAS, "user_aliases", {"alias_name": "n", "alias_label": "l", "external_id": "u"})
    ]
    assert one("user_identifying", {"external_id": "u", "alias_name": "n", "alias_label": "l"}) == [
        (
            Endpoint.IDENTIFY,
            "aliases_to_identify",
            {"external_id": "u", "user_alias": {"alias_name": "n", "alias_label": "l"}},
        )
    ]
    assert one("user_delete", {"email": "a@example.com"}) == [
        (
            Endpoint.DELETE,
            "email_addresses",
            {"email": "a@example.com", "prioritization": ["most_recently_updated"]},
        )
    ]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {"external_id": "u", "subscription_group_id": "g", "subscription_state": "subscribed"},
            [(Endpoint.SUBSCRIPTION, "external_ids", "u")],
        ),
        (
            {"email": "a@example.com", "email_subscribe": "unsubscribed"},
            [(Endpoint.EMAIL_STATUS, "email", "a@example.com")],
        ),
        (
            {"external_id": "u", "email_subscribe": "opted_in", "push_subscribe": "unsubscribed"},
            [
                (
                    Endpoint.TRACK,
                    "attributes",
                    {"external_id": "u", "email_subscribe": "opted_in", "push_subscribe": "unsubscribed"},
                )
            ],
        ),
    ],
)
def test_consent_goes_by_the_endpoint_that_fits(record: dict[str, object], expected: list[object]) -> None:
    """docs/design.md "Records": group states by /v2/subscription/status/set, email_subscribe by email via
    /email/status, otherwise /users/track attributes."""
    assert one("user_subscription", record) == expected


def test_endpoints_count_against_their_rate_family() -> None:
    """Rate families (https://www.braze.com/docs/api/api_limits/): track; alias/new, alias/update,
    identify, delete and merge share `users`; consent calls, each external id call and the catalog
    item endpoints have their own."""
    assert {endpoint: endpoint.rate_family for endpoint in Endpoint} == {
        Endpoint.TRACK: RateFamily.TRACK,
        Endpoint.ALIAS: RateFamily.USERS,
        Endpoint.IDENTIFY: RateFamily.USERS,
        Endpoint.DELETE: RateFamily.USERS,
        Endpoint.MERGE: RateFamily.USERS,
        Endpoint.ALIAS_UPDATE: RateFamily.USERS,
        Endpoint.SUBSCRIPTION: RateFamily.CONSENT,
        Endpoint.EMAIL_STATUS: RateFamily.DEFAULT,
        Endpoint.RENAME: RateFamily.RENAME,
        Endpoint.REMOVE: RateFamily.REMOVE,
        Endpoint.CATALOG_ITEMS: RateFamily.CATALOG,
    }


def test_records_queued_before_the_consent_rename_still_translate() -> None:
    """A record queued as kind `subscription` (before the vocabulary became `consent`) still translates."""
    (env,) = envelopes("user_subscription", [{"external_id": "u", "push_subscribe": "subscribed"}])
    env["kind"] = "subscription"
    assert [item.endpoint for item in to_items(env)] == [Endpoint.TRACK]
