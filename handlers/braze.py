"""Talking to Braze: one requests.Session per workspace, and one function that reads an answer.

`classify` maps every outcome of a call to one verdict that says what to do next:
Delivered (read `errors`), RateLimited (wait for the reset), Unavailable (retry with backoff),
TooLarge (split), Rejected (dead-letter, or narrow a batch down to the bad record).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from relay.config import Delivery
from relay.routes import Workspace


@dataclass(frozen=True)
class Delivered:
    """2xx: Braze took the request; items named in `errors` were refused (array, index, message)."""

    status: int
    errors: list[tuple[str, int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class RateLimited:
    """429: nothing was taken; nothing may go to this family before `reset_at` (UNIX seconds)."""

    reset_at: float


@dataclass(frozen=True)
class Unavailable:
    """5xx, or no answer. `ambiguous`: the body was sent and Braze may have stored it."""

    reason: str
    status: int | None = None
    ambiguous: bool = False


@dataclass(frozen=True)
class TooLarge:
    """413: the body was over Braze's limit; smaller requests will pass."""

    message: str


@dataclass(frozen=True)
class Rejected:
    """Another 4xx: Braze refused the request as it stands; resending it unchanged cannot help."""

    status: int
    message: str


Verdict = Delivered | RateLimited | Unavailable | TooLarge | Rejected


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        message = str(body.get("message", ""))
        errors = body.get("errors")
        if errors:
            message = f"{message}: {json.dumps(errors)[:700]}"
        return message
    return str(body)[:300]


def _errors(body: Any) -> list[tuple[str, int, str]]:
    """Braze's `errors` items as (input_array, index, type); items without an index name the request."""
    found = []
    for error in body.get("errors") or [] if isinstance(body, dict) else []:
        if isinstance(error, dict):
            array, index = error.get("input_array"), error.get("index")
            reason = str(error.get("type") or error.get("message") or error)
            found.append((str(array) if array else "", index if isinstance(index, int) else -1, reason))
        else:
            found.append(("", -1, str(error)))
    return found


def classify(
    response: requests.Response | None, error: Exception | None = None, *, now: float | None = None
) -> Verdict:
    """What Braze's answer (or the failure to get one) means for the items of the request."""
    if response is None:
        if _never_sent(error):
            return Unavailable(f"connection failed: {type(error).__name__}")
        # A read timeout or a dropped connection after sending: Braze may have stored the body.
        return Unavailable(f"no answer: {type(error).__name__}", ambiguous=True)
    status = response.status_code
    if 200 <= status < 300:
        try:
            body = response.json()
        except ValueError:
            body = {}
        return Delivered(status, _errors(body))
    if status == 429:
        # Braze's advice: pause every sender until X-RateLimit-Reset (UTC epoch seconds).
        reset = response.headers.get("X-RateLimit-Reset", "")
        try:
            reset_at = float(reset)
        except ValueError:
            reset_at = (now or time.time()) + 1.0  # no header: wait a little, then the backoff decides
        return RateLimited(reset_at)
    if status == 413:
        return TooLarge(_message(response))
    if status >= 500:
        # Braze answered with an error: it says to retry 5xx with backoff, and the answer means it
        # did not take the request (502/503/504 never reached it; 500 is its own failure).
        return Unavailable(f"Braze answered {status}", status=status)
    return Rejected(status, _message(response))


def _never_sent(error: Exception | None) -> bool:
    """True for failures that happen before the request body is written (connect errors)."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    text = repr(error)
    return any(sign in text for sign in ("NewConnectionError", "ConnectionRefused", "Failed to establish"))


class BrazeClient:
    """Sends request bodies to one workspace with a kept-alive session and timeouts on every call."""

    def __init__(self, workspace: Workspace, delivery: Delivery) -> None:
        self.workspace = workspace
        self.timeout = (delivery.connect_timeout_s, delivery.read_timeout_s)
        self.session = requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {workspace.api_key.reveal()}",
                "Content-Type": "application/json",
                "User-Agent": "braze-relay/0.1",
            }
        )

    def post(self, endpoint: str, body: dict[str, Any]) -> tuple[requests.Response | None, Exception | None]:
        """POST one body; return the response, or the exception when there was none."""
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            return self.session.post(
                self.workspace.endpoint + endpoint, data=data, timeout=self.timeout
            ), None
        except requests.RequestException as exc:
            return None, exc
