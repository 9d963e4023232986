"""A request's body: read within its limit, a malformed one refused cleanly, parsed as strict JSON.

The body is read only after the credential is checked wherever the credential does not depend on
it (every route's write key, a webhook's Bearer key); a signed webhook's signature covers the raw
bytes, so there it is read first, within the same limit. A body gunicorn cannot read (a chunked
body with a bad chunk size or extension, a connection that ends early) is 400, never a 500.
"""

from __future__ import annotations

import json
from typing import Any

from flask import request
from gunicorn.http.errors import NoMoreData, ParseException

from receiver import refusals
from receiver.errors import ApiError
from receiver.records.fields import strict_json
from relay.budgets import Budget
from relay.routes import Route

# TD's own types: the ingestion API's, and the one td-js-sdk sends in signed mode with a global id.
JSON_TYPES = (
    "application/json",
    "application/vnd.treasuredata.v1+json",
    "application/vnd.treasuredata.v1.js+json",
)
MALFORMED = "Malformed request body: it could not be read as its headers announce it."
# A body this large is parsed only if it opens as its endpoint's shape does; a smaller one is parsed
# at once, so that its error names the exact fault (parsing it costs little).
SHAPE_CHECK_BYTES = 1_000_000
JSON_SPACE = b" \t\r\n"


def over_limit(limit: int) -> ApiError:
    """413 naming the limit."""
    return ApiError(413, f"Request body over the limit of {limit} bytes.", {"limit": limit})


def check_type(*, lenient_type: bool = False) -> None:
    """415 unless the body is announced as JSON (or, `lenient_type`, untyped or text: TD's web export)."""
    mimetype = request.mimetype
    is_json = mimetype in JSON_TYPES or (mimetype.startswith("application/") and mimetype.endswith("+json"))
    if not is_json and not (lenient_type and mimetype in ("", "text/plain", "application/octet-stream")):
        raise ApiError(415, f"Content-Type must be application/json (got {mimetype or 'none'}).")


def read_body(limit: int, *, lenient_type: bool = False) -> bytes:
    """The raw body within the byte limit; 415 for a non-JSON type, 413 over the limit, 400 unreadable."""
    check_type(lenient_type=lenient_type)
    if request.content_length is not None and request.content_length > limit:
        raise over_limit(limit)
    # A chunked body has no Content-Length: read one byte past the limit to tell "over" from "at".
    request.max_content_length = limit + 1
    try:
        body = request.get_data(cache=True)
    except (ParseException, NoMoreData):  # gunicorn's: the chunks or the length do not add up
        raise ApiError(400, MALFORMED) from None
    if len(body) > limit:
        raise over_limit(limit)
    if not body:
        raise ApiError(400, "Empty body: expected JSON.")
    return body


def parse_json(body: bytes) -> Any:
    """The body as JSON; 400 with the reason for anything that is not strict JSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "Body is not valid UTF-8.") from None
    try:
        return strict_json(text)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"Malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.") from None
    except ValueError as exc:  # NaN/Infinity, numbers out of range, integers too long, too deep
        raise ApiError(400, f"Malformed JSON: {exc}.") from None


def route_body(route: Route, path_limit: int, *, lenient_type: bool = False) -> bytes:
    """The body within the route's limit on this path (its own `max_body_bytes`, if smaller); a 413
    counts against the route's body_bytes budget."""
    try:
        return read_body(route.budgets.body_limit(path_limit), lenient_type=lenient_type)
    except ApiError as exc:
        if exc.code == 413:
            refusals.count(route.workspace, route.name, Budget.BODY_BYTES)
        raise


def opening(body: bytes) -> bytes:
    """How a JSON body opens: its first character and, for an object, its first key ('{"data"')."""
    head = body[:512].lstrip(JSON_SPACE)
    if not head.startswith(b"{"):
        return head[:1]
    rest = head[1:].lstrip(JSON_SPACE)
    end = rest.find(b'"', 1)
    return b"{" + rest[: end + 1] if rest.startswith(b'"') and end > 0 else b"{"


def check_opening(body: bytes, openings: tuple[bytes, ...], message: str) -> None:
    """400 with `message` for a large body that does not open as one of `openings`, before parsing it."""
    if len(body) > SHAPE_CHECK_BYTES and opening(body) not in openings:
        raise ApiError(400, message)
