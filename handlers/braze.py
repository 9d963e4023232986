"""Talking to Braze: one requests.Session per workspace, and one function that reads an answer.

`classify` maps Braze's answer (status, headers, body) and `classify_failure` a call that got no
answer (by the exception's type) to one verdict that says what to do next: Delivered (read
`errors`), RateLimited (wait for the reset), Unavailable (retry with backoff), TooLarge (split),
Rejected (dead-letter, or narrow a batch down to the bad record). Both are pure: tests call them
with plain values.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

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


@dataclass(frozen=True)
class Answer:
    """What Braze sent back: status, headers (names in lower case) and the raw body."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""

    @classmethod
    def of(cls, response: requests.Response) -> Answer:
        """The answer of a `requests` response."""
        headers = {name.lower(): value for name, value in response.headers.items()}
        return cls(response.status_code, headers, response.content)

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def _message(answer: Answer) -> str:
    """Braze's message (and its `errors`, shortened) for a dead letter."""
    body = answer.json()
    if body is None:
        return answer.body.decode("utf-8", "replace")[:300]
    if isinstance(body, dict):
        message = str(body.get("message", ""))
        errors = body.get("errors")
        if errors:
            message = f"{message}: {json.dumps(errors)[:700]}"
        return message
    return str(body)[:300]


# The external id calls name refused items in arrays of their own: "Error messages in the
# rename_errors field will reference the index of the object in the array of the original request"
# (https://www.braze.com/docs/api/endpoints/user_data/external_id_migration/post_external_ids_rename/;
# removal_errors likewise, .../post_external_ids_remove/). Each is an array: the index, the message.
INDEXED_ERRORS = {"rename_errors": "external_id_renames", "removal_errors": "external_ids"}


def _errors(body: Any) -> list[tuple[str, int, str]]:
    """Braze's `errors` items as (input_array, index, type); items without an index name the request."""
    if not isinstance(body, dict):
        return []
    found = []
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            array, index = error.get("input_array"), error.get("index")
            reason = str(error.get("type") or error.get("message") or error)
            found.append((str(array) if array else "", index if isinstance(index, int) else -1, reason))
        else:
            found.append(("", -1, str(error)))
    for key, array in INDEXED_ERRORS.items():
        for error in body.get(key) or []:
            parts = error if isinstance(error, list) else [error]
            index = next((part for part in parts if isinstance(part, int) and not isinstance(part, bool)), -1)
            reason = "; ".join(str(part) for part in parts if not isinstance(part, int)) or str(error)
            found.append((array, index, reason[:300]))
    return found


def classify(answer: Answer, *, now: float | None = None) -> Verdict:
    """What Braze's answer means for the items of the request (docs/delivery.md, "Braze's answers")."""
    status = answer.status
    if 200 <= status < 300:
        # Delivered, except the items Braze names in `errors` (a partial success).
        return Delivered(status, _errors(answer.json()))
    if status == 429:
        # Braze's advice: pause every sender until X-RateLimit-Reset (UTC epoch seconds).
        try:
            reset_at = float(answer.headers.get("x-ratelimit-reset", ""))
        except ValueError:
            reset_at = (now or time.time()) + 1.0  # no header: wait a little, then the backoff decides
        return RateLimited(reset_at)
    if status == 413:
        # Over Braze's 4 MB: smaller requests will pass.
        return TooLarge(_message(answer))
    if status >= 500:
        # Braze answered with an error: it says to retry 5xx with backoff, and the answer means it
        # did not take the request (502/503/504 never reached it; 500 is its own failure).
        return Unavailable(f"Braze answered {status}", status=status)
    # 400, 401, 403, 404 and the rest: resending the request unchanged cannot help.
    return Rejected(status, _message(answer))


def classify_failure(error: Exception) -> Unavailable:
    """What a call that got no answer means: retry; `ambiguous` when the body may have been stored."""
    if never_sent(error):
        # The connection was never made, so Braze cannot have the body.
        return Unavailable(f"connection failed: {type(error).__name__}")
    # A read timeout or a dropped connection after sending: Braze may have stored the body.
    return Unavailable(f"no answer: {type(error).__name__}", ambiguous=True)


def never_sent(error: BaseException) -> bool:
    """True for failures before the request body is written: the connection was never made.

    requests raises ConnectTimeout for a connect timeout, and a ConnectionError wrapping urllib3's
    MaxRetryError(reason=NewConnectionError) for a refused or unresolvable connection; both are
    urllib3 ConnectTimeoutErrors underneath. A read timeout or a dropped connection is not.
    """
    if isinstance(error, requests.ConnectTimeout):
        return True
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectTimeoutError):
            return True
        if isinstance(current, MaxRetryError):
            stack.append(current.reason)
        stack.extend(arg for arg in current.args if isinstance(arg, BaseException))
        stack.extend((current.__cause__, current.__context__))
    return False


class BrazeClient:
    """Sends request bodies to one workspace with a kept-alive session and timeouts on every call.

    One per sending thread (a `requests.Session` is not documented as thread-safe). The proxy and
    CA bundle settings of the environment (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE) are read once
    here rather than by `requests` on every call, which costs more than the rest of the call.
    """

    def __init__(self, workspace: Workspace, delivery: Delivery) -> None:
        self.workspace = workspace
        self.timeout = (delivery.connect_timeout_s, delivery.read_timeout_s)
        self.session = requests.Session()
        self.session.proxies = requests.utils.get_environ_proxies(workspace.endpoint)
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self.session.verify = bundle or True
        self.session.trust_env = False
        self._templates: dict[tuple[str, str], requests.PreparedRequest] = {}
        self.session.headers.update(
            {
                "Authorization": f"Bearer {workspace.api_key.reveal()}",
                "Content-Type": "application/json",
                "User-Agent": "braze-relay/0.1",
            }
        )

    def send(self, method: str, path: str, data: bytes) -> Answer:
        """Send one JSON body (POST; PUT or DELETE for catalog items); raises requests.RequestException
        when no answer came.

        Each (method, path)'s request is prepared once (URL, headers) and copied per call: preparing it
        anew costs a fifth of a call. Braze's REST API does not redirect; a 3xx is an answer.
        """
        template = self._templates.get((method, path))
        if template is None:
            template = self.session.prepare_request(requests.Request(method, self.workspace.endpoint + path))
            self._templates[(method, path)] = template
        prepared = template.copy()
        prepared.prepare_body(data, None)
        response = self.session.send(prepared, timeout=self.timeout, allow_redirects=False)
        return Answer.of(response)
