"""JSON for stores an operator reads back: any string in, valid UTF-8 out, whatever it held.

A lone UTF-16 surrogate (a JSON escape such as "\\ud800" with no partner) is no character: written
to Redis as an escape and read back, it breaks every page or command that prints it. The edge
refuses such strings, but a store also keeps what others said (Braze's error messages) and what it
held before: these functions replace each lone surrogate with U+FFFD on the way in and on the way out.
"""

from __future__ import annotations

import json
import re
from typing import Any

SURROGATE = re.compile("[\ud800-\udfff]")
ESCAPED = re.compile(rb"\\u[dD][89a-fA-F]")


def scrub(text: str) -> str:
    """The text with every lone surrogate replaced by U+FFFD (the replacement character)."""
    return SURROGATE.sub("\ufffd", text)


def dumps(value: Any) -> str:
    """Compact JSON holding only valid text (lone surrogates replaced)."""
    return scrub(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def loads(raw: bytes | str) -> Any:
    """JSON read back from a store, any lone surrogate replaced (as written before the edge refused them)."""
    data = raw.encode() if isinstance(raw, str) else raw
    if not ESCAPED.search(data):  # the common case: nothing to scrub, no second pass
        return json.loads(data)
    return json.loads(scrub(json.dumps(json.loads(data), ensure_ascii=False)))
