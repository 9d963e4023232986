"""Signature schemes as pure functions (receiver/signatures.py), each fed requests signed the way its sender
signs them.

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
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook
from werkzeug.datastructures import Headers

from receiver import signatures
from receiver.signatures import SignatureError
from relay.secrets import Secret
from relay.signing import SHOPIFY, STANDARD, SignatureAlgorithm, SignatureEncoding, SignatureScheme, Signing
from tests.helpers import WEBHOOK_SECRET

SHOP_SECRET = "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"
SHOP_ROTATED = "shpss_rotated_8e7d6c5b4a39281706f5e4d3"
ORDER = json.dumps({"id": 820982911946154508, "email": "jon@example.com", "total_price": "199.65"}).encode()
WEBHOOK_ID = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)  # far from the clock: the window is judged against `now`
SECOND_SECRET = "whsec_" + base64.b64encode(b"the-rotated-webhook-secret-0042!").decode()
UNKNOWN_SECRET = "whsec_" + base64.b64encode(b"a-secret-the-relay-does-not-know").decode()
BODY = b'{"external_id": "u1", "name": "signup"}'
MSG_ID = "msg_2b1f9c"


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


def signature(
    secret: str = WEBHOOK_SECRET, *, when: datetime | None = None, msg_id: str = MSG_ID, body: bytes = BODY
) -> str:
    """`v1,<base64>`: the Standard Webhooks signature of a body, made with the spec's own library."""
    return Webhook(secret).sign(msg_id, when or NOW, body.decode())


def webhook_headers(sig: str, *, when: datetime | None = None, msg_id: str = MSG_ID) -> dict[str, str]:
    """The three Standard Webhooks headers."""
    moment = when or NOW
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(moment.timestamp())), "webhook-signature": sig}


def verify(
    headers: Mapping[str, str], *, body: bytes = BODY, secrets: tuple[str, ...] = (WEBHOOK_SECRET,)
) -> None:
    """Check a Standard Webhooks signature (receiver/signatures.py) with these headers and secrets, at NOW."""
    configured = tuple(Secret(value) for value in secrets)
    signatures.verify_standard(body, signing=STANDARD, headers=headers, secrets=configured, now=NOW)


def test_valid_signature_passes() -> None:
    """A body signed with the configured secret at the time of the check passes."""
    verify(webhook_headers(signature()))


def test_signature_headers_match_case_insensitively() -> None:
    """Header names are matched as HTTP does, whatever their case (a request's Headers object)."""
    headers = Headers({name.title(): value for name, value in webhook_headers(signature()).items()})
    verify(headers)


def test_signature_within_window_passes() -> None:
    """A timestamp four minutes old is inside the ±5 minute window."""
    when = NOW - timedelta(minutes=4)
    verify(webhook_headers(signature(when=when), when=when))


@pytest.mark.parametrize("order", ["second valid", "first valid"])
def test_any_of_several_signatures_passes(order: str) -> None:
    """Several space-separated signatures (sender's rotation) pass when any one matches."""
    good, other = signature(), signature(UNKNOWN_SECRET)
    sig = f"{other} {good}" if order == "second valid" else f"{good} {other}"
    verify(webhook_headers(sig))


def test_second_configured_secret_passes() -> None:
    """With two secrets configured (relay's rotation), a signature made with the second passes."""
    verify(webhook_headers(signature(SECOND_SECRET)), secrets=(WEBHOOK_SECRET, SECOND_SECRET))


def test_malformed_signature_beside_a_valid_one_passes() -> None:
    """A malformed entry in the list does not hide a valid signature after it."""
    verify(webhook_headers(f"v1 v1,a,b {signature()}"))


@pytest.mark.parametrize("minutes", [-6, 6], ids=["stale", "future"])
def test_timestamp_outside_window_fails(minutes: int) -> None:
    """A signature made more than 5 minutes before or after now fails, saying the timestamp is the cause."""
    when = NOW + timedelta(minutes=minutes)
    with pytest.raises(signatures.SignatureError, match="timestamp"):
        verify(webhook_headers(signature(when=when), when=when))


def test_tampered_body_fails() -> None:
    """A body changed after signing fails."""
    with pytest.raises(signatures.SignatureError):
        verify(webhook_headers(signature()), body=BODY.replace(b"signup", b"signuq"))


def test_other_message_id_fails() -> None:
    """A signature made for another webhook-id fails (the id is signed)."""
    with pytest.raises(signatures.SignatureError):
        verify(webhook_headers(signature(msg_id="msg_other")))


def test_unknown_secret_fails() -> None:
    """A signature made with a secret the relay does not hold fails."""
    with pytest.raises(signatures.SignatureError):
        verify(webhook_headers(signature(UNKNOWN_SECRET)))


def test_no_configured_secret_fails_closed() -> None:
    """With no secret configured, every signature fails."""
    with pytest.raises(signatures.SignatureError):
        verify(webhook_headers(signature()), secrets=())


def test_body_not_utf8_fails() -> None:
    """A body that is not UTF-8 cannot be a signed Standard Webhooks payload: it fails."""
    with pytest.raises(signatures.SignatureError):
        verify(webhook_headers(signature()), body=b"\xff\xfe")


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_fails(missing: str) -> None:
    """Each of the three headers is required (fail closed)."""
    headers = webhook_headers(signature())
    del headers[missing]
    with pytest.raises(signatures.SignatureError, match="Missing"):
        verify(headers)


MALFORMED_SIGNATURES = {
    "v1 without comma": "v1",
    "v1 with empty value": "v1,",
    "garbage base64": "v1,!!!not*base64!!!",
    "bad padding": "v1,abc",
    "too many commas": "v1,abc,def",
    "non-ASCII": "v1,\u00e9\u00e9",
    "unknown version": "v9,dGVzdA==",
    "blank": "   ",
    "valid value under another version": "v2," + "x" * 44,
}


@pytest.mark.parametrize("value", MALFORMED_SIGNATURES.values(), ids=MALFORMED_SIGNATURES.keys())
def test_malformed_signature_fails(value: str) -> None:
    """A malformed webhook-signature value raises AuthError, never another exception."""
    with pytest.raises(signatures.SignatureError):
        verify(webhook_headers(value))


@pytest.mark.parametrize("value", MALFORMED_SIGNATURES.values(), ids=MALFORMED_SIGNATURES.keys())
def test_malformed_signature_does_not_hide_a_valid_one(value: str) -> None:
    """A malformed entry before a valid signature is left out: the valid one still passes."""
    verify(webhook_headers(f"{value} {signature()}"))


def test_valid_signature_under_another_version_fails() -> None:
    """The right HMAC labelled with a version other than v1 fails."""
    with pytest.raises(signatures.SignatureError):
        verify(webhook_headers(signature().replace("v1,", "v2,", 1)))


@pytest.mark.parametrize(
    "value", ["yesterday", "1e400", "nan", "-1", ""], ids=["word", "inf", "nan", "neg", "empty"]
)
def test_malformed_timestamp_fails(value: str) -> None:
    """A webhook-timestamp that is not a time now raises AuthError, never another exception."""
    headers = {**webhook_headers(signature()), "webhook-timestamp": value}
    with pytest.raises(signatures.SignatureError):
        verify(headers)


def test_secret_with_no_key_bytes_does_not_hide_a_good_one() -> None:
    """A configured secret that decodes to nothing is skipped; the next secret still verifies."""
    verify(webhook_headers(signature(SECOND_SECRET)), secrets=("whsec_", SECOND_SECRET))
