"""Duplicate identities: a repeated request gets the first answer and stores nothing new.

A request's identity depends on how it authenticated (receiver/auth.py `Authenticated`):
- **signed** by a webhook sender: the sender's own delivery id alone (Standard Webhooks'
  `webhook-id`, Shopify's `X-Shopify-Webhook-Id`, an `hmac` route's `delivery_id_header`), the same
  on every route. Where the signature does not cover that id (an HMAC of the body alone), the signed
  body is an identity too, so a replay under a fresh id is still a repeat. The identity is scoped by
  the secrets that can verify it, one key per configured secret of the route: routes sharing a
  secret share the scope (a capture replayed onto another route is a repeat), routes with secrets
  of their own do not, and a secret rotation keeps the scope. `Idempotency-Key` is ignored.
- **by key** (write key, Bearer): `Idempotency-Key` (or `webhook-id`), per route, in a scope of its
  own: a key holder can neither pre-claim a sender's delivery id nor re-store a signed request.

Identities are kept for RELAY_DEDUP_WINDOW_S (at least the 10 minutes a signed timestamp is
accepted for, ±5 minutes, so a replay inside the window is always a repeat) with a hash of the body
and only what the repeat's answer needs (not the list of rejected records, which the repeat's own
validation of the same body gives again). The same identity with another body is 409. Only
successful requests are remembered: a refused one (4xx, 503) stored nothing and may be sent again.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from receiver.auth import Authenticated, By
from receiver.enqueue import Claim
from receiver.errors import ApiError
from receiver.headers import lowered
from relay import store
from relay.routes import Route
from relay.secrets import Secret

HEADERS = ("idempotency-key", "webhook-id")
MAX_KEY = 255
NOT_KEPT = ("rejected",)  # recomputed from the repeat's own (identical) body


def _digest(value: str | bytes) -> str:
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).hexdigest()


def scope_of(secret: Secret) -> str:
    """A name for the scope of one secret: an HMAC of it, so no key name reveals anything of it."""
    return hmac.new(secret.reveal().encode(), b"braze-relay dedup scope v1", hashlib.sha256).hexdigest()[:24]


def identities(route: Route, authed: Authenticated, headers: Mapping[str, str], body: bytes) -> list[str]:
    """The Redis keys naming this request's duplicate identity (none: it has none)."""
    keys_of = store.keys(route.workspace)
    if authed.how is By.SIGNATURE and authed.verified is not None:
        verified = authed.verified
        keys = []
        for secret in authed.secrets:
            scope = scope_of(secret)
            if verified.delivery_id:
                keys.append(keys_of.signed_identity(scope, "id", _digest(verified.delivery_id)))
            if not verified.id_signed:
                keys.append(keys_of.signed_identity(scope, "body", _digest(body)))
        return keys
    lower = lowered(headers)
    value = next((lower[name] for name in HEADERS if lower.get(name)), None)
    if value is None:
        return []
    if len(value) > MAX_KEY:
        raise ApiError(400, f"Idempotency key longer than {MAX_KEY} characters.")
    return [keys_of.idempotency(route.name, _digest(value))]  # keys and insecure mode: never signed


def claim_for(
    route: Route,
    authed: Authenticated,
    headers: Mapping[str, str],
    body: bytes,
    *,
    window_s: int,
    answer: dict[str, Any],
    status: int,
) -> Claim | None:
    """The claim this request makes, if it has a duplicate identity; 400 for an unusable key."""
    keys = identities(route, authed, headers, body)
    if not keys:
        return None
    kept = {name: value for name, value in answer.items() if name not in NOT_KEPT}
    return Claim(
        key=keys[0],
        window_s=window_s,
        answer={"hash": _digest(body), "status": status, "body": kept},
        also=tuple(keys[1:]),
    )


def repeat_answer(claim: Claim, first: dict[str, Any], answer: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The answer for a repeat: the first request's (id, counts), or 409 if the body differs.

    `answer` is what this repeat would have been answered; it gives the parts not kept (the
    rejected records, the same for the same body) and the order of the fields.
    """
    if first["hash"] != claim.answer["hash"]:
        raise ApiError(409, "Idempotency key already used with a different body.")
    stored: dict[str, Any] = first["body"]
    merged = {name: stored.get(name, value) for name, value in answer.items()}
    merged.update({name: value for name, value in stored.items() if name not in merged})
    return merged, int(first["status"])
