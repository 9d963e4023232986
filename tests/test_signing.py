"""How a route's senders sign (relay/signing.py): the routes file's signature settings checked against
their scheme, and each route's signing built once. Pure: plain route tables in, values or errors out."""

from __future__ import annotations

from typing import Any

import pytest
from marshmallow import ValidationError

from relay.signing import (
    SHOPIFY,
    SHOPIFY_DELIVERY_ID,
    SHOPIFY_SIGNATURE,
    SignatureAlgorithm,
    SignatureEncoding,
    SignatureScheme,
    Signing,
    build_signing,
    check_signing,
)

OWN_SECRETS = {"webhook_secrets_env": "SENDER_SECRETS"}


def refused(data: dict[str, Any]) -> tuple[str, str]:
    """The key a route table's refusal names, and its message."""
    with pytest.raises(ValidationError) as caught:
        check_signing(data)
    ((key, messages),) = caught.value.normalized_messages().items()
    return key, " ".join(messages)


def test_only_hmac_and_td_signed_are_configurable() -> None:
    """The header, algorithm, encoding and prefix are the route's to set for hmac and td_signed only."""
    assert {scheme for scheme in SignatureScheme if scheme.configurable} == {
        SignatureScheme.HMAC,
        SignatureScheme.TD_SIGNED,
    }


@pytest.mark.parametrize(
    "data",
    [
        {"signature": "standard"},
        {"signature": "shopify", **OWN_SECRETS},
        {"signature": "hmac", "signature_header": "X-Sig", "signature_algorithm": "sha1", **OWN_SECRETS},
        {"signature": "td_signed", "signature_header": "X-TD-Signature", **OWN_SECRETS},
    ],
)
def test_settings_that_fit_their_scheme_pass(data: dict[str, Any]) -> None:
    """Each scheme with what it needs passes the check."""
    check_signing(data)


REFUSED = {
    "shopify on the global secrets": ({"signature": "shopify"}, "signature", "webhook_secrets_env"),
    "hmac without its header": ({"signature": "hmac", **OWN_SECRETS}, "signature_header", "required"),
    "a header for shopify": (
        {"signature": "shopify", "signature_header": "X-Sig", **OWN_SECRETS},
        "signature_header",
        "only allowed",
    ),
    "a delivery id header for standard": (
        {"signature": "standard", "delivery_id_header": "X-Id"},
        "delivery_id_header",
        "only allowed",
    ),
    "td_signed with sha1": (
        {"signature": "td_signed", "signature_header": "X-Sig", "signature_algorithm": "sha1", **OWN_SECRETS},
        "signature_algorithm",
        "HMAC-SHA256",
    ),
}


@pytest.mark.parametrize(("data", "key", "says"), REFUSED.values(), ids=REFUSED.keys())
def test_settings_that_do_not_fit_are_refused_naming_the_key(
    data: dict[str, Any], key: str, says: str
) -> None:
    """A setting its scheme does not take, or one it lacks, is refused naming that key and why."""
    assert refused(data)[0] == key
    assert says in refused(data)[1]


def test_shopify_fixes_every_setting() -> None:
    """Shopify's signing is Shopify's alone: base64 HMAC-SHA256 in its header, its delivery id header."""
    assert build_signing("shopify", header="X-Other", algorithm="sha1", prefix="v1=") is SHOPIFY
    assert (SHOPIFY.header, SHOPIFY.encoding, SHOPIFY.delivery_id_header) == (
        SHOPIFY_SIGNATURE,
        SignatureEncoding.BASE64,
        SHOPIFY_DELIVERY_ID,
    )


def test_a_setting_left_out_takes_its_default() -> None:
    """hmac without algorithm, encoding or prefix is SHA-256, hex, no prefix; given ones are kept."""
    assert build_signing("hmac", header="X-Sig") == Signing(SignatureScheme.HMAC, header="X-Sig")
    built = build_signing("hmac", header="X-Sig", algorithm="sha1", encoding="base64", prefix="sha1=")
    assert (built.algorithm, built.encoding, built.prefix) == (
        SignatureAlgorithm.SHA1,
        SignatureEncoding.BASE64,
        "sha1=",
    )
    assert build_signing("standard") == Signing()
