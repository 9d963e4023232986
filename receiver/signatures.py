"""Webhook signature schemes as pure functions: Standard Webhooks, Shopify, TD's signed webhook, any HMAC.

Each `verify_*` checks the raw body against every configured secret in constant time, fails closed
(a missing header, an undecodable value or no secret is a failure, never another exception) and
returns what the relay needs to refuse a replay: the sender's own delivery id, and whether the
signature covers it (a Standard Webhooks signature signs its `webhook-id` and timestamp; an HMAC of
the body alone does not, so for those the signed body itself is a duplicate identity as well).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from receiver.headers import lowered
from relay.secrets import Secret
from relay.signing import SignatureEncoding, SignatureScheme, Signing

MAX_DELIVERY_ID = 255
STANDARD_WINDOW = timedelta(minutes=5)  # Standard Webhooks' tolerance, either side of now
INVALID = "Invalid webhook signature."
STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class SignatureError(Exception):
    """The request is not signed by a configured secret; the message says what was wrong."""


@dataclass(frozen=True)
class Verified:
    """A request whose signature matched: the sender's delivery id, and whether the signature covers it."""

    delivery_id: str | None
    id_signed: bool
    secret: Secret  # the configured secret that matched (never logged: Secret hides itself)


class Verifier(Protocol):
    """One scheme's check: the verified request, or SignatureError."""

    def __call__(
        self,
        body: bytes,
        *,
        signing: Signing,
        headers: Mapping[str, str],
        secrets: Sequence[Secret],
        now: datetime,
    ) -> Verified: ...


def _delivery_id(value: str | None) -> str | None:
    """A sender's delivery id, if it is a usable one (an overlong id is refused, not cut)."""
    if not value:
        return None
    if len(value) > MAX_DELIVERY_ID:
        raise SignatureError(f"Delivery id longer than {MAX_DELIVERY_ID} characters.")
    return value


def verify_standard(
    body: bytes, *, signing: Signing, headers: Mapping[str, str], secrets: Sequence[Secret], now: datetime
) -> Verified:
    """A Standard Webhooks signature (`v1,<base64>` of "{id}.{timestamp}.{body}"), ±5 minutes of `now`.

    The library makes the signature to compare with; the window is judged here, against `now`, so
    the check reads no clock. Several space-separated signatures (the sender's rotation) are each
    tried against each configured secret, in constant time.
    """
    lower = lowered(headers)
    msg_id, stamp, sent = (lower.get(name, "") for name in STANDARD_HEADERS)
    if not (msg_id and stamp and sent):
        raise SignatureError("Missing webhook-id, webhook-timestamp or webhook-signature header.")
    _delivery_id(msg_id)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError(INVALID) from None
    entries = [entry for entry in sent.split() if entry.count(",") == 1]  # `version,value`
    signers = _standard_signers(secrets)
    if not entries or not signers:
        raise SignatureError(INVALID)
    when = _standard_time(stamp, now)
    given = _standard_signatures(entries)
    for secret, signer in signers:
        expected = base64.b64decode(signer.sign(msg_id, when, text).split(",", 1)[1])
        if any(hmac.compare_digest(expected, one) for one in given):
            return Verified(delivery_id=msg_id, id_signed=True, secret=secret)
    raise SignatureError(INVALID)


def _standard_signatures(entries: Iterable[str]) -> list[bytes]:
    """The `v1` signatures among `version,value` entries, decoded; one that does not decode is left out."""
    found = []
    for entry in entries:
        version, value = entry.split(",")
        if version != "v1":
            continue
        try:
            found.append(base64.b64decode(value))
        except ValueError:  # binascii.Error, or a value that is not ASCII
            continue
    return found


def _standard_signers(secrets: Iterable[Secret]) -> list[tuple[Secret, Webhook]]:
    """The library's signer of each configured secret (one it cannot read matches nothing)."""
    signers = []
    for secret in secrets:
        try:
            signers.append((secret, Webhook(secret.reveal())))
        except (ValueError, EmptyWebhookSecretError):
            continue
    return signers


def _standard_time(stamp: str, now: datetime) -> datetime:
    """The webhook-timestamp, if it lies within the window around `now`; SignatureError otherwise."""
    try:
        when = datetime.fromtimestamp(float(stamp), tz=UTC)
    except (ValueError, OverflowError, OSError):
        raise SignatureError(INVALID) from None
    if abs(when - now) > STANDARD_WINDOW:
        raise SignatureError("Webhook timestamp outside the allowed window (±5 minutes).")
    return when


def _decode(value: str, encoding: SignatureEncoding) -> bytes:
    """A signature as bytes; SignatureError for anything that is not strictly hex or base64."""
    try:
        if encoding is SignatureEncoding.HEX:
            return bytes.fromhex(value)
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise SignatureError(INVALID) from None


def verify_hmac(
    body: bytes,
    *,
    signing: Signing,
    headers: Mapping[str, str],
    secrets: Sequence[Secret],
    now: datetime,  # an HMAC of the body alone carries no time
) -> Verified:
    """An HMAC of the raw body in one header: `<prefix><hex or base64 digest>`, sha256 or sha1."""
    if not signing.header:
        raise SignatureError("No signature header configured.")  # fail closed; config refuses this
    lower = lowered(headers)
    sent = lower.get(signing.header.lower(), "").strip()
    if not sent:
        raise SignatureError(f"Missing {signing.header} header.")
    if signing.prefix:
        if not sent.startswith(signing.prefix):
            raise SignatureError(INVALID)
        sent = sent[len(signing.prefix) :]
    given = _decode(sent, signing.encoding)
    id_header = (signing.delivery_id_header or "").lower()
    delivery = _delivery_id(lower.get(id_header)) if id_header else None
    matched: Secret | None = None
    for secret in secrets:  # every secret is tried: the time taken does not say which one matched
        expected = hmac.new(secret.reveal().encode(), body, signing.algorithm.value).digest()
        if hmac.compare_digest(expected, given) and matched is None:
            matched = secret
    if matched is None:
        raise SignatureError(INVALID)
    return Verified(delivery_id=delivery, id_signed=False, secret=matched)


# One verifier per scheme. Shopify and TD's signed webhook are HMACs of the body whose settings
# the route's signing holds (Shopify's fixed, TD's named by the route; docs/webhooks.md).
VERIFIERS: dict[SignatureScheme, Verifier] = {
    SignatureScheme.STANDARD: verify_standard,
    SignatureScheme.SHOPIFY: verify_hmac,
    SignatureScheme.TD_SIGNED: verify_hmac,
    SignatureScheme.HMAC: verify_hmac,
}
if set(VERIFIERS) != set(SignatureScheme):
    raise RuntimeError("a signature scheme without a verifier")


def verify(
    body: bytes, *, signing: Signing, headers: Mapping[str, str], secrets: Iterable[Secret], now: datetime
) -> Verified:
    """Check the request's signature by the route's scheme, at `now`; raise SignatureError (fail closed)."""
    configured = tuple(secrets)
    if not configured:
        raise SignatureError("No webhook secret is configured for this route.")
    return VERIFIERS[signing.scheme](body, signing=signing, headers=headers, secrets=configured, now=now)
