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
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from receiver.headers import lowered
from relay.routes import Route
from relay.secrets import Secret

SHOPIFY_SIGNATURE = "X-Shopify-Hmac-Sha256"
SHOPIFY_DELIVERY_ID = "X-Shopify-Webhook-Id"
MAX_DELIVERY_ID = 255


class SignatureError(Exception):
    """The request is not signed by a configured secret; the message says what was wrong."""


@dataclass(frozen=True)
class Scheme:
    """How one route's senders sign: the scheme and, for HMAC schemes, where and how."""

    name: str = "standard"
    header: str | None = None
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""
    delivery_id_header: str | None = None


def scheme_of(route: Route) -> Scheme:
    """The route's signature scheme, as the routes file says it."""
    return Scheme(
        name=route.signature,
        header=route.signature_header,
        algorithm=route.signature_algorithm,
        encoding=route.signature_encoding,
        prefix=route.signature_prefix,
        delivery_id_header=route.delivery_id_header,
    )


@dataclass(frozen=True)
class Verified:
    """A request whose signature matched: the sender's delivery id, and whether the signature covers it."""

    delivery_id: str | None
    id_signed: bool
    secret: Secret  # the configured secret that matched (never logged: Secret hides itself)


def _delivery_id(value: str | None) -> str | None:
    """A sender's delivery id, if it is a usable one (an overlong id is refused, not cut)."""
    if not value:
        return None
    if len(value) > MAX_DELIVERY_ID:
        raise SignatureError(f"Delivery id longer than {MAX_DELIVERY_ID} characters.")
    return value


def verify_standard(body: bytes, *, headers: Mapping[str, str], secrets: Iterable[Secret]) -> Verified:
    """A Standard Webhooks signature (`v1,<base64>` of "{id}.{timestamp}.{body}"), ±5 minutes.

    The library checks the timestamp window and compares in constant time; several space-separated
    signatures (the sender's rotation) are each tried against each configured secret.
    """
    lower = lowered(headers)
    wanted = {name: lower.get(name, "") for name in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    if not all(wanted.values()):
        raise SignatureError("Missing webhook-id, webhook-timestamp or webhook-signature header.")
    msg_id = _delivery_id(wanted["webhook-id"])
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("Invalid webhook signature.") from None
    # The library splits each signature on ',' and fails on a malformed one; keep the well-formed.
    signatures = " ".join(sig for sig in wanted["webhook-signature"].split() if sig.count(",") == 1)
    if not signatures:
        raise SignatureError("Invalid webhook signature.")
    wanted["webhook-signature"] = signatures
    reason = "Invalid webhook signature."
    for secret in secrets:
        try:
            Webhook(secret.reveal()).verify(text, wanted, json_parse=False)
        except WebhookVerificationError as exc:
            if "timestamp" in str(exc).lower():
                reason = "Webhook timestamp outside the allowed window (±5 minutes)."
            continue
        except Exception:  # noqa: S112 - the library's other errors (bad base64, empty secret) mean no match
            continue
        return Verified(delivery_id=msg_id, id_signed=True, secret=secret)
    raise SignatureError(reason)


def _decode(value: str, encoding: str) -> bytes:
    """A signature as bytes; SignatureError for anything that is not strictly hex or base64."""
    try:
        if encoding == "hex":
            return bytes.fromhex(value)
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise SignatureError("Invalid webhook signature.") from None


def verify_hmac(
    body: bytes, *, headers: Mapping[str, str], secrets: Iterable[Secret], scheme: Scheme
) -> Verified:
    """An HMAC of the raw body in one header: `<prefix><hex or base64 digest>`, sha256 or sha1."""
    if not scheme.header:
        raise SignatureError("No signature header configured.")  # fail closed; config refuses this
    lower = lowered(headers)
    sent = lower.get(scheme.header.lower(), "").strip()
    if not sent:
        raise SignatureError(f"Missing {scheme.header} header.")
    if scheme.prefix:
        if not sent.startswith(scheme.prefix):
            raise SignatureError("Invalid webhook signature.")
        sent = sent[len(scheme.prefix) :]
    given = _decode(sent, scheme.encoding)
    digest = hashlib.sha1 if scheme.algorithm == "sha1" else hashlib.sha256
    id_header = (scheme.delivery_id_header or "").lower()
    delivery = _delivery_id(lower.get(id_header)) if id_header else None
    matched: Secret | None = None
    for secret in secrets:  # every secret is tried: the time taken does not say which one matched
        expected = hmac.new(secret.reveal().encode(), body, digest).digest()
        if hmac.compare_digest(expected, given) and matched is None:
            matched = secret
    if matched is None:
        raise SignatureError("Invalid webhook signature.")
    return Verified(delivery_id=delivery, id_signed=False, secret=matched)


def verify_shopify(body: bytes, *, headers: Mapping[str, str], secrets: Iterable[Secret]) -> Verified:
    """Shopify: base64 HMAC-SHA256 of the raw body with the app's secret in X-Shopify-Hmac-Sha256."""
    scheme = Scheme(
        "shopify", header=SHOPIFY_SIGNATURE, encoding="base64", delivery_id_header=SHOPIFY_DELIVERY_ID
    )
    return verify_hmac(body, headers=headers, secrets=secrets, scheme=scheme)


def verify(body: bytes, *, headers: Mapping[str, str], secrets: Iterable[Secret], scheme: Scheme) -> Verified:
    """Check the request's signature by the route's scheme; raise SignatureError (fail closed)."""
    secrets = tuple(secrets)
    if not secrets:
        raise SignatureError("No webhook secret is configured for this route.")
    if scheme.name == "standard":
        return verify_standard(body, headers=headers, secrets=secrets)
    if scheme.name == "shopify":
        return verify_shopify(body, headers=headers, secrets=secrets)
    if scheme.name in ("hmac", "td_signed"):  # TD documents HMAC-SHA256 of the body (docs/webhooks.md)
        return verify_hmac(body, headers=headers, secrets=secrets, scheme=scheme)
    raise SignatureError(f"Unknown signature scheme {scheme.name!r}.")
