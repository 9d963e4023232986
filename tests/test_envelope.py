"""relay/envelope.py: what goes into Redis comes back the same, integers of any size included."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.packing import encode
from relay.envelope import _LONG_NUMBER, dumps, loads, may_hold_long_number

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


PIECES = [b"1" * 19, b"9" * 20, b"12", b"0", b":", b",", b"[", b"-", b" ", b'"', b".", b"a", b"{"]


@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_the_quick_look_for_long_numbers_misses_none(pieces: list[bytes]) -> None:
    """`may_hold_long_number` is False only for text the exact search finds no long number in."""
    text = b"".join(pieces)
    if not may_hold_long_number(text):
        assert _LONG_NUMBER.search(text) is None


@pytest.mark.parametrize("digits", [19, 20, 4000])
def test_a_run_of_digits_inside_a_string_reads_fast_and_exact(digits: int) -> None:
    """Digits inside a string (an id, the envelope's own `seq`) are no number: orjson reads them; a
    number of as many digits beside them is read by the stdlib, exact."""
    quoted = {"id": "r.0", "seq": "1" * digits, "rec": {"n": 1}}
    assert not may_hold_long_number(dumps(quoted).encode())  # type: ignore[arg-type]
    number = int("9" * digits)
    both = {"id": "r.0", "seq": "1" * digits, "rec": {"n": number}}
    assert loads(dumps(both))["rec"]["n"] == number  # type: ignore[arg-type]
