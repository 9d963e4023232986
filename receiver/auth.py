"""Credential checks as pure functions: write keys in TD's forms; signatures in receiver/signatures.py.

Every check fails closed (no credential, no entry) and compares in constant time.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from receiver import signatures
from receiver.headers import lowered
from relay.secrets import Secret


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
    headers = lowered(headers)
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
    headers = lowered(headers)
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def verify_write_key(presented: str | None, *, keys: Iterable[Secret]) -> None:
    """Raise AuthError unless the presented key is one of the configured keys."""
    if not presented:
        raise AuthError("Missing write key.")
    if not key_matches(presented, keys):
        raise AuthError("Invalid write key.")


class By(StrEnum):
    """How a request authenticated."""

    KEY = "key"  # a write key (TD's forms, Bearer)
    SIGNATURE = "signature"  # a webhook signed by one of the route's secrets
    OPEN = "open"  # no credential: RELAY_INSECURE_NO_AUTH


@dataclass(frozen=True)
class Authenticated:
    """How a request proved itself, which decides the scope of its duplicate identity.

    `secrets` is the route's whole set when signed. A key holder's Idempotency-Key lives in the key
    scope and can never claim, or be mistaken for, a signed sender's delivery id.
    """

    how: By
    verified: signatures.Verified | None = None
    secrets: tuple[Secret, ...] = field(default=(), repr=False)
