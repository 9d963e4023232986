"""Credential checks as pure functions (receiver/auth.py): TD write keys in each form, Bearer tokens.
Webhook signatures are test_signatures.py."""

from __future__ import annotations

import base64
from collections.abc import Mapping

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from receiver import auth
from relay.secrets import Secret

KEY = "write-key-0a71"
ROTATED_KEY = "write-key-rotated-93cd"
KEYS = (Secret(KEY), Secret(ROTATED_KEY))
NO_QUERY: Mapping[str, str] = {}


def basic(credentials: bytes) -> dict[str, str]:
    """An Authorization header carrying HTTP Basic credentials."""
    return {"Authorization": "Basic " + base64.b64encode(credentials).decode()}


def td_key(
    headers: Mapping[str, str],
    query: Mapping[str, str] = NO_QUERY,
    *,
    allow_query: bool = False,
    allow_basic: bool = False,
) -> str | None:
    """The write key td_write_key finds in these headers and query arguments."""
    return auth.td_write_key(headers, query, allow_query=allow_query, allow_basic=allow_basic)


# --- td_write_key ------------------------------------------------------------------------------

FOUND = {
    "X-TD-Write-Key": ({"X-TD-Write-Key": KEY}, NO_QUERY, KEY),
    "Authorization TD1": ({"Authorization": f"TD1 {KEY}"}, NO_QUERY, KEY),
    "TD1 in lower case": ({"Authorization": f"td1 {KEY}"}, NO_QUERY, KEY),
    "TD1 with blanks": ({"Authorization": f"TD1   {KEY}  "}, NO_QUERY, KEY),
    "TD1 wins over X-TD-Write-Key": (
        {"Authorization": f"TD1 {KEY}", "X-TD-Write-Key": ROTATED_KEY},
        NO_QUERY,
        KEY,
    ),
    "empty TD1 falls back to the header": ({"Authorization": "TD1 ", "X-TD-Write-Key": KEY}, NO_QUERY, KEY),
    "header wins over query": ({"X-TD-Write-Key": KEY}, {"td_write_key": ROTATED_KEY}, KEY),
    "nothing": ({}, NO_QUERY, None),
    "Bearer is not a TD form": ({"Authorization": f"Bearer {KEY}"}, NO_QUERY, None),
}


@pytest.mark.parametrize(("headers", "query", "expected"), FOUND.values(), ids=FOUND.keys())
def test_td_write_key_forms_and_precedence(
    headers: dict[str, str], query: Mapping[str, str], expected: str | None
) -> None:
    """The key is taken from `Authorization: TD1` first, then X-TD-Write-Key (TD's v2 rule)."""
    assert td_key(headers, query, allow_query=True) == expected


@pytest.mark.parametrize(
    ("allow_query", "expected"), [(True, KEY), (False, None)], ids=["allowed", "not allowed"]
)
def test_query_key_only_when_allowed(allow_query: bool, expected: str | None) -> None:
    """?td_write_key= counts only where the endpoint allows it (the postback)."""
    assert td_key({}, {"td_write_key": KEY}, allow_query=allow_query) == expected


@pytest.mark.parametrize(
    ("allow_basic", "expected"), [(True, KEY), (False, None)], ids=["allowed", "not allowed"]
)
def test_basic_password_only_when_allowed(allow_basic: bool, expected: str | None) -> None:
    """HTTP Basic counts only where the endpoint allows it (the export), and the password is the key."""
    assert td_key(basic(f"td:{KEY}".encode()), allow_basic=allow_basic) == expected


def test_basic_password_may_hold_colons() -> None:
    """Everything after the first colon of Basic credentials is the password."""
    assert td_key(basic(b"td:key:with:colons"), allow_basic=True) == "key:with:colons"


def test_header_wins_over_basic() -> None:
    """X-TD-Write-Key is taken before Basic credentials."""
    headers = {**basic(f"td:{ROTATED_KEY}".encode()), "X-TD-Write-Key": KEY}
    assert td_key(headers, allow_basic=True) == KEY


MALFORMED_BASIC = {
    "not base64": {"Authorization": "Basic %%%"},
    "no value": {"Authorization": "Basic"},
    "no colon": basic(KEY.encode()),
    "empty password": basic(b"td:"),
    "not UTF-8": basic(b"td:\xff\xfe"),
    "base64 with junk": {"Authorization": "Basic dGQ6a2V5*"},
}


@pytest.mark.parametrize("headers", MALFORMED_BASIC.values(), ids=MALFORMED_BASIC.keys())
def test_malformed_basic_gives_no_key(headers: dict[str, str]) -> None:
    """Basic credentials that do not decode to user:password with a password give no key."""
    assert td_key(headers, allow_basic=True) is None


def test_non_ascii_basic_gives_no_key() -> None:
    """Basic credentials with non-ASCII characters are malformed: no key, no exception."""
    assert td_key({"Authorization": "Basic \u00e9t\u00e9"}, allow_basic=True) is None


# --- bearer_token ------------------------------------------------------------------------------

BEARERS = {
    "Bearer": ({"Authorization": f"Bearer {KEY}"}, KEY),
    "lower-case scheme": ({"Authorization": f"bearer {KEY}"}, KEY),
    "blanks around": ({"Authorization": f"Bearer   {KEY}  "}, KEY),
    "empty": ({"Authorization": "Bearer "}, None),
    "other scheme": ({"Authorization": f"TD1 {KEY}"}, None),
    "none": ({}, None),
}


@pytest.mark.parametrize(("headers", "expected"), BEARERS.values(), ids=BEARERS.keys())
def test_bearer_token(headers: dict[str, str], expected: str | None) -> None:
    """The token of `Authorization: Bearer <token>`, and None for anything else."""
    assert auth.bearer_token(headers) == expected


# --- verify_write_key --------------------------------------------------------------------------


@pytest.mark.parametrize("presented", [KEY, ROTATED_KEY], ids=["first", "rotated"])
def test_any_configured_key_passes(presented: str) -> None:
    """Any of the configured keys passes (rotation)."""
    auth.verify_write_key(presented, keys=KEYS)


WRONG_KEYS = {
    "missing": (None, "Missing"),
    "empty": ("", "Missing"),
    "wrong": ("nope", "Invalid"),
    "prefix of a key": (KEY[:-1], "Invalid"),
    "key with a suffix": (KEY + "x", "Invalid"),
    "both keys joined": (f"{KEY},{ROTATED_KEY}", "Invalid"),
}


@pytest.mark.parametrize(("presented", "said"), WRONG_KEYS.values(), ids=WRONG_KEYS.keys())
def test_wrong_or_missing_key_fails(presented: str | None, said: str) -> None:
    """A missing or wrong key raises AuthError saying which."""
    with pytest.raises(auth.AuthError, match=said):
        auth.verify_write_key(presented, keys=KEYS)


def test_no_configured_key_fails_closed() -> None:
    """With no key configured, every key is refused."""
    with pytest.raises(auth.AuthError):
        auth.verify_write_key(KEY, keys=())


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_only_configured_keys_pass(presented: str) -> None:
    """Any string that is not a configured key is refused."""
    assume(presented not in (KEY, ROTATED_KEY))
    with pytest.raises(auth.AuthError):
        auth.verify_write_key(presented, keys=KEYS)
