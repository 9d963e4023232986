"""How a route's webhook senders sign: the closed set of schemes, and a route's signing built once.

The routes file names a scheme (`signature`) and, for the HMAC schemes, where and how the sender
puts its signature (`signature_header`, `_algorithm`, `_encoding`, `_prefix`, `delivery_id_header`).
The routes file's parsing checks them (`check_signing`) and builds each route's `Signing` once
(`build_signing`); the edge's verifiers (`receiver/signatures.py`, one per scheme) only read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from marshmallow import ValidationError


class SignatureScheme(StrEnum):
    """How a route's webhook senders sign (the routes file's `signature`)."""

    STANDARD = "standard"  # Standard Webhooks: id, timestamp and body signed together, ±5 minutes
    SHOPIFY = "shopify"  # base64 HMAC-SHA256 of the body in X-Shopify-Hmac-Sha256
    TD_SIGNED = "td_signed"  # TD's signed webhook: HMAC-SHA256 of the body, in the header the route names
    HMAC = "hmac"  # any HMAC of the body, in the header the route names

    @property
    def configurable(self) -> bool:
        """True for the schemes whose header, algorithm, encoding and prefix the route sets."""
        return self in (SignatureScheme.TD_SIGNED, SignatureScheme.HMAC)


class SignatureAlgorithm(StrEnum):
    """The hash of an HMAC scheme (the routes file's `signature_algorithm`)."""

    SHA256 = "sha256"
    SHA1 = "sha1"


class SignatureEncoding(StrEnum):
    """How an HMAC scheme writes its digest (the routes file's `signature_encoding`)."""

    HEX = "hex"
    BASE64 = "base64"


SHOPIFY_SIGNATURE = "X-Shopify-Hmac-Sha256"
SHOPIFY_DELIVERY_ID = "X-Shopify-Webhook-Id"


@dataclass(frozen=True)
class Signing:
    """How one route's senders sign: the scheme and, for HMAC schemes, where and how."""

    scheme: SignatureScheme = SignatureScheme.STANDARD
    header: str | None = None
    algorithm: SignatureAlgorithm = SignatureAlgorithm.SHA256
    encoding: SignatureEncoding = SignatureEncoding.HEX
    prefix: str = ""
    delivery_id_header: str | None = None


STANDARD = Signing()  # a route that names no scheme

# Shopify fixes every setting: an HMAC-SHA256 of the raw body keyed with the app's client secret.
SHOPIFY = Signing(
    SignatureScheme.SHOPIFY,
    header=SHOPIFY_SIGNATURE,
    encoding=SignatureEncoding.BASE64,
    delivery_id_header=SHOPIFY_DELIVERY_ID,
)


def build_signing(
    scheme: str,
    *,
    header: str | None = None,
    algorithm: str | None = None,
    encoding: str | None = None,
    prefix: str | None = None,
    delivery_id_header: str | None = None,
) -> Signing:
    """A route's signing from its validated routes-file values (a setting left out takes its default)."""
    chosen = SignatureScheme(scheme)
    if chosen is SignatureScheme.SHOPIFY:
        return SHOPIFY
    return Signing(
        chosen,
        header=header,
        algorithm=SignatureAlgorithm(algorithm or SignatureAlgorithm.SHA256),
        encoding=SignatureEncoding(encoding or SignatureEncoding.HEX),
        prefix=prefix or "",
        delivery_id_header=delivery_id_header,
    )


def check_signing(data: Mapping[str, Any]) -> None:
    """A route table's signature settings fit its scheme (ValidationError naming the key otherwise).

    Every scheme but standard needs the route's own secrets; hmac and td_signed need their header;
    only they take the header, algorithm, encoding, prefix and delivery id settings.
    """
    scheme = SignatureScheme(data["signature"])
    if scheme is not SignatureScheme.STANDARD and not data.get("webhook_secrets_env"):
        # The global secrets are Standard Webhooks secrets; a sender's own HMAC key must be named.
        raise ValidationError(
            f"signature = {scheme.value!r} needs the route's own webhook_secrets_env", "signature"
        )
    if scheme.configurable and not data.get("signature_header"):
        raise ValidationError(f"required when signature is {scheme.value!r}", "signature_header")
    tuning = ("signature_header", "signature_algorithm", "signature_encoding", "signature_prefix")
    if not scheme.configurable:
        for key in (*tuning, "delivery_id_header"):
            if data.get(key) is not None:
                raise ValidationError("only allowed when signature is 'hmac' or 'td_signed'", key)
    algorithm = data.get("signature_algorithm") or SignatureAlgorithm.SHA256
    if scheme is SignatureScheme.TD_SIGNED and algorithm != SignatureAlgorithm.SHA256:
        raise ValidationError("TD signs with HMAC-SHA256", "signature_algorithm")
