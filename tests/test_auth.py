"""Credential checks as pure functions: TD write keys in each form, Bearer tokens, webhook signatures."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook
from werkzeug.datastructures import Headers

from receiver import auth, signatures
from relay.secrets import Secret
from relay.signing import STANDARD
from tests.helpers import WEBHOOK_SECRET

KEY = "write-key-0a71"
ROTATED_KEY = "write-key-rotated-93cd"
KEYS = (Secret(KEY), Secret(ROTATED_KEY))
SECOND_SECRET = "whsec_" + base64.b64encode(b"the-rotated-webhook-secret-0042!").decode()
UNKNOWN_SECRET = "whsec_" + base64.b64encode(b"a-secret-the-relay-does-not-know").decode()
BODY = b'{"external_id": "u1", "name": "signup"}'
MSG_ID = "msg_2b1f9c"
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)  # far from the clock: the window is judged against `now`
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


def signature(
    secret: str = WEBHOOK_SECRET, *, when: datetime | None = None, msg_id: str = MSG_ID, body: bytes = BODY
) -> str:
    """`v1,<base64>`: the Standard Webhooks signature of a body, made with the spec's own library."""
    return Webhook(secret).sign(msg_id, when or NOW, body.decode())


def webhook_headers(sig: str, *, when: datetime | None = None, msg_id: str = MSG_ID) -> dict[str, str]:
    """The three Standard Webhooks headers."""
    moment = when or NOW
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(moment.timestamp())), "webhook-signature": sig}


def verify(
    headers: Mapping[str, str], *, body: bytes = BODY, secrets: tuple[str, ...] = (WEBHOOK_SECRET,)
) -> None:
    """Check a Standard Webhooks signature (receiver/signatures.py) with these headers and secrets, at NOW."""
    configured = tuple(Secret(value) for value in secrets)
    signatures.verify_standard(body, signing=STANDARD, headers=headers, secrets=configured, now=NOW)


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


# --- verify_standard --------------------------------------------------------------------------


def test_valid_signature_passes() -> None:
    """A body signed with the configured secret at the time of the check passes."""
    verify(webhook_headers(signature()))


def test_signature_headers_match_case_insensitively() -> None:
    """Header names are matched as HTTP does, whatever their case (a request's Headers object)."""
    headers = Headers({name.title(): value for name, value in webhook_headers(signature()).items()})
    verify(headers)


def test_signature_within_window_passes() -> None:
    """A timestamp four minutes old is inside the ±5 minute window."""
    when = NOW - timedelta(minutes=4)
    verify(webhook_headers(signature(when=when), when=when))


@pytest.mark.parametrize("order", ["second valid", "first valid"])
def test_any_of_several_signatures_passes(order: str) -> None:
    """Several space-separated signatures (sender's rotation) pass when any one matches."""
    good, other = signature(), signature(UNKNOWN_SECRET)
    sig = f"{other} {good}" if order == "second valid" else f"{good} {other}"
    verify(webhook_headers(sig))


def test_second_configured_secret_passes() -> None:
    """With two secrets configured (relay's rotation), a signature made with the second passes."""
    verify(webhook_headers(signature(SECOND_SECRET)), secrets=(WEBHOOK_SECRET, SECOND_SECRET))


def test_malformed_signature_beside_a_valid_one_passes() -> None:
    """A malformed entry in the list does not hide a valid signature after it."""
    verify(webhook_headers(f"v1 v1,a,b {signature()}"))


@pytest.mark.parametrize("minutes", [-6, 6], ids=["stale", "future"])
def test_timestamp_outside_window_fails(minutes: int) -> None:
    """A signature made more than 5 minutes before or after now fails, saying the timestamp is the cause."""
    when = NOW + timedelta(minutes=minutes)
    with pytest.raises(signatures.SignatureError, match="timestamp"):
        verify(webhook_headers(signature(when=when), when=when))


def test_tampered_body_fails() -> None:
    """A body changed after signing fails."""
    with pytest.raises(signatures.SignatureError):
        verify(webhook_headers(signature()), body=BODY.replace(b"signup", b"signuq"))


def test_other_message_id_fails() -> None:
    """A signature made for another webhook-id fails (the id is signed)."""
    with pytest.raises(signatures.SignatureError):
        verify(webhook_headers(signature(msg_id="msg_other")))


def test_unknown_secret_fails() -> None:
    """A signature made with a secret the relay does not hold fails."""
    with pytest.raises(signatures.SignatureError):
        verify(webhook_headers(signature(UNKNOWN_SECRET)))


def test_no_configured_secret_fails_closed() -> None:
    """With no secret configured, every signature fails."""
    with pytest.raises(signatures.SignatureError):
        verify(webhook_headers(signature()), secrets=())


def test_body_not_utf8_fails() -> None:
    """A body that is not UTF-8 cannot be a signed Standard Webhooks payload: it fails."""
    with pytest.raises(signatures.SignatureError):
        verify(webhook_headers(signature()), body=b"\xff\xfe")


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_fails(missing: str) -> None:
    """Each of the three headers is required (fail closed)."""
    headers = webhook_headers(signature())
    del headers[missing]
    with pytest.raises(signatures.SignatureError, match="Missing"):
        verify(headers)


MALFORMED_SIGNATURES = {
    "v1 without comma": "v1",
    "v1 with empty value": "v1,",
    "garbage base64": "v1,!!!not*base64!!!",
    "bad padding": "v1,abc",
    "too many commas": "v1,abc,def",
    "non-ASCII": "v1,\u00e9\u00e9",
    "unknown version": "v9,dGVzdA==",
    "blank": "   ",
    "valid value under another version": "v2," + "x" * 44,
}


@pytest.mark.parametrize("value", MALFORMED_SIGNATURES.values(), ids=MALFORMED_SIGNATURES.keys())
def test_malformed_signature_fails(value: str) -> None:
    """A malformed webhook-signature value raises AuthError, never another exception."""
    with pytest.raises(signatures.SignatureError):
        verify(webhook_headers(value))


@pytest.mark.parametrize("value", MALFORMED_SIGNATURES.values(), ids=MALFORMED_SIGNATURES.keys())
def test_malformed_signature_does_not_hide_a_valid_one(value: str) -> None:
    """A malformed entry before a valid signature is left out: the valid one still passes."""
    verify(webhook_headers(f"{value} {signature()}"))


def test_valid_signature_under_another_version_fails() -> None:
    """The right HMAC labelled with a version other than v1 fails."""
    with pytest.raises(signatures.SignatureError):
        verify(webhook_headers(signature().replace("v1,", "v2,", 1)))


@pytest.mark.parametrize(
    "value", ["yesterday", "1e400", "nan", "-1", ""], ids=["word", "inf", "nan", "neg", "empty"]
)
def test_malformed_timestamp_fails(value: str) -> None:
    """A webhook-timestamp that is not a time now raises AuthError, never another exception."""
    headers = {**webhook_headers(signature()), "webhook-timestamp": value}
    with pytest.raises(signatures.SignatureError):
        verify(headers)


def test_secret_with_no_key_bytes_does_not_hide_a_good_one() -> None:
    """A configured secret that decodes to nothing is skipped; the next secret still verifies."""
    verify(webhook_headers(signature(SECOND_SECRET)), secrets=("whsec_", SECOND_SECRET))
