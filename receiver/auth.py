"""Credential checks as pure functions: write keys in TD's forms, Standard Webhooks signatures.

Every check fails closed (no credential, no entry) and compares in constant time.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable, Mapping

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from relay.secrets import Secret


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names compared case-insensitively, as HTTP says."""
    return {name.lower(): value for name, value in headers.items()}


class AuthError(Exception):
    """The request carries no valid credential; the message says which kind was expected."""


def key_matches(presented: str, keys: Iterable[Secret]) -> bool:
    """Constant-time comparison against every configured key (no early exit on a match)."""
    given = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.reveal().encode())
    return matched


def td_write_key(
    headers: Mapping[str, str], query: Mapping[str, str], *, allow_query: bool, allow_basic: bool
) -> str | None:
    """The write key as TD sends it: X-TD-Write-Key, `Authorization: TD1 <key>`, ?td_write_key, Basic."""
    headers = _lower(headers)
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.upper() == "TD1" and value.strip():
        return value.strip()  # TD's v2 rule: Authorization wins over X-TD-Write-Key
    if headers.get("x-td-write-key"):
        return headers["x-td-write-key"]
    if allow_basic and scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except ValueError:  # binascii.Error, non-ASCII text, or bytes that are not UTF-8
            return None
        return decoded.partition(":")[2] or None  # TD's web export puts the key in the password
    if allow_query and query.get("td_write_key"):
        return query["td_write_key"]
    return None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of `Authorization: Bearer <token>`, if that is what was sent."""
    headers = _lower(headers)
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def verify_write_key(presented: str | None, *, keys: Iterable[Secret]) -> None:
    """Raise AuthError unless the presented key is one of the configured keys."""
    if not presented:
        raise AuthError("Missing write key.")
    if not key_matches(presented, keys):
        raise AuthError("Invalid write key.")


def verify_signature(body: bytes, *, headers: Mapping[str, str], secrets: Iterable[Secret]) -> None:
    """Raise AuthError unless a Standard Webhooks signature of the raw body matches a secret.

    The library checks the ±5 minute timestamp window and compares in constant time; several
    space-separated signatures (secret rotation) are each tried against each configured secret.
    """
    headers = _lower(headers)
    wanted = {
        name: headers.get(name, "") for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    if not all(wanted.values()):
        raise AuthError("Missing webhook-id, webhook-timestamp or webhook-signature header.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthError("Invalid webhook signature.") from None
    # The library splits each signature on ',' and fails on a malformed one; keep the well-formed.
    signatures = " ".join(sig for sig in wanted["webhook-signature"].split() if sig.count(",") == 1)
    if not signatures:
        raise AuthError("Invalid webhook signature.")
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
        return
    raise AuthError(reason)
