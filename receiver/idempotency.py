"""Idempotency keys: a request that repeats a `webhook-id` or `Idempotency-Key` gets the first answer.

The key is remembered per route for the dedup window (RELAY_DEDUP_WINDOW_S, 72 h by default) with
a hash of the body; the same key with another body is refused with 409. Only successful requests
are remembered: a request that was refused (4xx, 503) stored nothing and may be sent again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from receiver.enqueue import Claim
from receiver.errors import ApiError
from relay import store

HEADERS = ("idempotency-key", "webhook-id")
MAX_KEY = 255


def claim_for(
    route: str, headers: Mapping[str, str], body: bytes, *, window_s: int, answer: dict[str, Any], status: int
) -> Claim | None:
    """The claim this request makes, if it carries an idempotency key; 400 for an unusable key."""
    lowered = {name.lower(): value for name, value in headers.items()}
    value = next((lowered[name] for name in HEADERS if lowered.get(name)), None)
    if value is None:
        return None
    if len(value) > MAX_KEY:
        raise ApiError(400, f"Idempotency key longer than {MAX_KEY} characters.")
    digest = hashlib.sha256(value.encode()).hexdigest()
    body_hash = hashlib.sha256(body).hexdigest()
    return Claim(
        key=store.idempotency_key(route, digest),
        window_s=window_s,
        answer={"hash": body_hash, "status": status, "body": answer},
    )


def repeat_answer(claim: Claim, first: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The answer for a repeat: the first request's, or 409 if the body differs."""
    if first["hash"] != claim.answer["hash"]:
        raise ApiError(409, "Idempotency key already used with a different body.")
    return first["body"], int(first["status"])
