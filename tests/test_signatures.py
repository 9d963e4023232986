"""Signature schemes as pure functions, each fed requests signed the way its sender signs them.

Shopify: the recipe of Shopify's documentation ("Verify the webhook",
https://shopify.dev/docs/apps/build/webhooks/subscribe/https): base64 of the HMAC-SHA256 of the raw
body, keyed with the app's client secret, in X-Shopify-Hmac-Sha256. Standard Webhooks: the
`standardwebhooks` library's own signer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from receiver import signatures
from receiver.signatures import SignatureError
from relay.secrets import Secret
from relay.signing import SHOPIFY, STANDARD, SignatureAlgorithm, SignatureEncoding, SignatureScheme, Signing
from tests.helpers import WEBHOOK_SECRET

SHOP_SECRET = "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"
SHOP_ROTATED = "shpss_rotated_8e7d6c5b4a39281706f5e4d3"
ORDER = json.dumps({"id": 820982911946154508, "email": "jon@example.com", "total_price": "199.65"}).encode()
WEBHOOK_ID = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def shopify_hmac(body: bytes, secret: str = SHOP_SECRET) -> str:
    """What Shopify sends in X-Shopify-Hmac-Sha256 (Shopify's documented recipe)."""
    return base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()).decode()


def shopify_headers(body: bytes, secret: str = SHOP_SECRET) -> dict[str, str]:
    """The headers of a Shopify webhook delivery."""
    return {
        "X-Shopify-Hmac-Sha256": shopify_hmac(body, secret),
        "X-Shopify-Webhook-Id": WEBHOOK_ID,
        "X-Shopify-Topic": "orders/create",
        "Content-Type": "application/json",
    }


def secrets(*values: str) -> tuple[Secret, ...]:
    """Configured secrets."""
    return tuple(Secret(value) for value in values)


def shopify(body: bytes, headers: dict[str, str], *configured: str) -> signatures.Verified:
    """Verify as a shopify route configured with these secrets."""
    configured_secrets = secrets(*(configured or (SHOP_SECRET,)))
    return signatures.verify(body, signing=SHOPIFY, headers=headers, secrets=configured_secrets, now=NOW)


# --- shopify -------------------------------------------------------------------------------------


def test_shopify_signed_webhook_passes_with_its_delivery_id() -> None:
    """A body signed as Shopify signs it passes; its X-Shopify-Webhook-Id is the delivery id, not signed."""
    verified = shopify(ORDER, shopify_headers(ORDER))
    assert verified.delivery_id == WEBHOOK_ID
    assert verified.id_signed is False


def test_shopify_tampered_body_fails() -> None:
    """One byte changed after signing fails."""
    with pytest.raises(SignatureError):
        shopify(ORDER.replace(b"199.65", b"199.66"), shopify_headers(ORDER))


def test_shopify_rotation_takes_either_secret() -> None:
    """With the old and the new secret configured, a webhook signed with either passes."""
    for used in (SHOP_SECRET, SHOP_ROTATED):
        shopify(ORDER, shopify_headers(ORDER, used), SHOP_SECRET, SHOP_ROTATED)


def test_shopify_wrong_secret_fails() -> None:
    """A webhook signed with a secret the route does not hold fails."""
    with pytest.raises(SignatureError):
        shopify(ORDER, shopify_headers(ORDER, "shpss_someone_else"))


def test_shopify_missing_header_fails_closed() -> None:
    """No X-Shopify-Hmac-Sha256 header fails, naming it."""
    headers = shopify_headers(ORDER)
    del headers["X-Shopify-Hmac-Sha256"]
    with pytest.raises(SignatureError, match="X-Shopify-Hmac-Sha256"):
        shopify(ORDER, headers)


@pytest.mark.parametrize("value", ["", "   ", "not base64!!", shopify_hmac(ORDER).encode().hex()])
def test_shopify_malformed_signature_fails(value: str) -> None:
    """An empty, non-base64 or hex-encoded value fails with SignatureError, never another exception."""
    with pytest.raises(SignatureError):
        shopify(ORDER, {**shopify_headers(ORDER), "X-Shopify-Hmac-Sha256": value})


def test_no_secret_fails_closed() -> None:
    """With no secret configured every request fails, whatever its headers."""
    with pytest.raises(SignatureError):
        signatures.verify(ORDER, signing=SHOPIFY, headers=shopify_headers(ORDER), secrets=(), now=NOW)


def test_overlong_delivery_id_fails() -> None:
    """A delivery id over 255 characters is refused rather than cut."""
    with pytest.raises(SignatureError, match="Delivery id"):
        shopify(ORDER, {**shopify_headers(ORDER), "X-Shopify-Webhook-Id": "x" * 256})


# --- generic hmac (and td_signed, which is hmac with TD's documented HMAC-SHA256) ----------------

HMAC_CASES = {
    "sha256 hex with prefix (GitHub style)": ("sha256", "hex", "sha256="),
    "sha1 hex": ("sha1", "hex", ""),
    "sha256 base64": ("sha256", "base64", ""),
    "sha1 base64 with prefix": ("sha1", "base64", "v1="),
}


def hmac_signature(body: bytes, secret: str, algorithm: str, encoding: str, prefix: str) -> str:
    """A sender's HMAC of the body, encoded and prefixed as configured."""
    digest = hmac.new(secret.encode(), body, getattr(hashlib, algorithm)).digest()
    text = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    return prefix + text


def hmac_verify(body: bytes, signing: Signing, headers: dict[str, str]) -> signatures.Verified:
    """Verify as a route signed this way, holding SHOP_SECRET."""
    return signatures.verify(body, signing=signing, headers=headers, secrets=secrets(SHOP_SECRET), now=NOW)


@pytest.mark.parametrize(("algorithm", "encoding", "prefix"), HMAC_CASES.values(), ids=HMAC_CASES.keys())
def test_hmac_settings_verify_what_they_describe(algorithm: str, encoding: str, prefix: str) -> None:
    """Each algorithm, encoding and prefix verifies a body signed that way, and a tampered one fails."""
    signing = Signing(
        SignatureScheme.HMAC,
        "X-Signature",
        SignatureAlgorithm(algorithm),
        SignatureEncoding(encoding),
        prefix,
        delivery_id_header="X-Delivery",
    )
    sig = hmac_signature(ORDER, SHOP_SECRET, algorithm, encoding, prefix)
    headers = {"x-signature": sig, "X-Delivery": "d-1"}
    verified = hmac_verify(ORDER, signing, headers)
    assert verified.delivery_id == "d-1"
    with pytest.raises(SignatureError):
        hmac_verify(ORDER + b" ", signing, headers)


def test_hmac_wrong_prefix_fails() -> None:
    """A signature without the configured prefix fails."""
    signing = Signing(SignatureScheme.HMAC, "X-Signature", prefix="sha256=")
    sig = hmac_signature(ORDER, SHOP_SECRET, "sha256", "hex", "")
    with pytest.raises(SignatureError):
        hmac_verify(ORDER, signing, {"X-Signature": sig})


def test_td_signed_is_hmac_sha256_of_the_body() -> None:
    """td_signed verifies an HMAC-SHA256 of the raw body in the header the route names."""
    signing = Signing(SignatureScheme.TD_SIGNED, "X-TD-Signature")
    sig = hmac_signature(ORDER, SHOP_SECRET, "sha256", "hex", "")
    hmac_verify(ORDER, signing, {"X-TD-Signature": sig})


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.text(max_size=80))
def test_hmac_only_the_right_signature_passes(body: bytes, sent: str) -> None:
    """Any header value other than the body's own signature fails with SignatureError, never another error."""
    signing = Signing(SignatureScheme.HMAC, "X-Signature", encoding=SignatureEncoding.BASE64)
    right = hmac_signature(body, SHOP_SECRET, "sha256", "base64", "")
    if sent.strip() == right:
        return
    with pytest.raises(SignatureError):
        hmac_verify(body, signing, {"X-Signature": sent})


# --- standard ------------------------------------------------------------------------------------


def test_standard_signature_covers_its_id() -> None:
    """A Standard Webhooks signature (made by the library) passes; its webhook-id is signed."""
    body = b'{"external_id": "u1"}'
    when = NOW
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(WEBHOOK_SECRET).sign("msg_1", when, body.decode()),
    }
    verified = signatures.verify(
        body, signing=STANDARD, headers=headers, secrets=secrets(WEBHOOK_SECRET), now=NOW
    )
    assert (verified.delivery_id, verified.id_signed) == ("msg_1", True)
