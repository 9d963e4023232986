"""relay/envelope.py: what goes into Redis comes back the same, integers of any size included."""

from __future__ import annotations

import json

import pytest

from handlers.packing import encode
from relay.envelope import dumps, loads

EDGES = [
    2**63 - 1,
    -(2**63),
    -(2**63) - 1,  # 19 digits: below what orjson reads as an integer
    -9_999_999_999_999_999_999,
    2**64 - 1,
    2**64,
    -(2**64),
    10**30,
    -(10**30),
]


@pytest.mark.parametrize("number", EDGES)
def test_integers_of_any_size_come_back_exact(number: int) -> None:
    """A record's integer is delivered as it was accepted, never rounded to a float."""
    envelope = {"id": "r.0", "rec": {"n": number, "list": [1, number]}}
    back = loads(dumps(envelope))  # type: ignore[arg-type]
    assert back["rec"]["n"] == number and isinstance(back["rec"]["n"], int)
    assert back["rec"]["list"] == [1, number]
    assert loads(dumps(envelope).encode()) == back  # type: ignore[arg-type]


@pytest.mark.parametrize("number", EDGES)
def test_braze_gets_the_same_integer(number: int) -> None:
    """handlers/packing.py encodes the object Braze gets with the integer as it was."""
    assert json.loads(encode({"properties": {"n": number}})) == {"properties": {"n": number}}
