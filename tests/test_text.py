"""Any string (relay/text.py): lone surrogates refused at the edge, and stores, pages and commands safe
whatever a stored string holds.

The surrogate test runs against gunicorn (`stack`); the store and page tests
drive the app in-process on the real Redis; the fuzz pass builds strings from every Unicode general
category, surrogates (Cs) included, and sends them by every caller shape.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import audit, deadletters
from relay.config import load_settings
from tests.helpers import KEYS, WORKSPACES, WRITE_KEY, create_app_for, signed_headers
from tests.processes import Processes

LONE = '"\\ud800"'  # JSON text of a lone high surrogate
TD = {"Content-Type": "application/json", "X-TD-Write-Key": WRITE_KEY}
ADMIN_KEY = "any-string-admin-key-4d1e"
ADMIN = {"Authorization": "Basic " + base64.b64encode(f"ops:{ADMIN_KEY}".encode()).decode()}
# Every general category of Unicode, Cs (surrogates) and Cn (unassigned) included.
CATEGORIES = (
    *("Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe"),
    *("Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"),
)


def _by_category(keep: int = 4000) -> dict[str, list[str]]:
    """Characters of each general category (at most `keep` each, spread over the code space)."""
    import unicodedata

    found: dict[str, list[str]] = {name: [] for name in CATEGORIES}
    for point in range(0x110000):
        found[unicodedata.category(chr(point))].append(chr(point))
    return {name: chars[:: max(1, len(chars) // keep)] for name, chars in found.items()}


BY_CATEGORY = _by_category()
# A category first, uniformly, then a character of it: every category is drawn as often as any
# other (drawing code points would almost never give a surrogate, a line separator or a Lt letter).
ANY_CHAR = st.sampled_from(CATEGORIES).flatmap(lambda name: st.sampled_from(BY_CATEGORY[name]))
ANY_TEXT = st.lists(ANY_CHAR, max_size=12).map("".join)


def bodies(text: str) -> dict[str, tuple[str, str, dict[str, str], bytes]]:
    """One request per endpoint whose JSON carries `text` (a JSON string literal) as a value."""
    record = f'{{"external_id": "u-any", "plan": {text}}}'
    webhook = f'{{"external_id": "u-any", "name": {text}}}'.encode()
    export = f'{{"column_names": ["external_id", "plan"], "data": [["u-any", {text}]]}}'.encode()
    return {
        "postback": ("POST", "/postback/v3/event/db/profiles", TD, record.encode()),
        "ingest": ("POST", "/db/profiles_skip", TD, f'{{"records": [{record}]}}'.encode()),
        "export": ("PUT", "/export/profiles", TD, export),
        "webhook signed": ("POST", "/webhooks/events", signed_headers(webhook), webhook),
        "webhook bearer": (
            "POST",
            "/webhooks/profiles_skip",
            {"Content-Type": "application/json", "Authorization": f"Bearer {WRITE_KEY}"},
            record.encode(),
        ),
        "key in a record": ("POST", "/db/profiles_skip", TD, b'{"records": [{"\\udfff": 1}]}'),
    }


def test_lone_surrogate_is_400_on_every_endpoint(
    stack: tuple[Processes, str], clean_redis: redis.Redis
) -> None:
    """A "\\ud800" in a string or key: 400 naming it on every endpoint, never 500; nothing stored."""
    _, base = stack
    for name, (method, path, headers, body) in bodies(LONE).items():
        response = requests.request(method, base + path, data=body, headers=headers, timeout=10)
        assert response.status_code == 400, (name, response.text)
        assert "surrogate" in response.json()["message"], name
    assert not list(clean_redis.scan_iter(KEYS.lane_list("*")))
    assert clean_redis.hlen(KEYS.dead) == 0


def test_surrogate_pair_is_text(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """A surrogate pair escape ("\\ud83d\\ude00", one emoji) is ordinary text and is accepted."""
    for name, (method, path, headers, body) in bodies('"\\ud83d\\ude00"').items():
        if name == "key in a record":
            continue
        response = client.open(path, method=method, data=body, headers=headers)
        assert response.status_code in (200, 202), (name, response.get_data(as_text=True))


@pytest.fixture
def admin_app(relay_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Flask:
    """The relay's app with an admin key, so its pages can be read."""
    monkeypatch.setenv("RELAY_ADMIN_KEYS", ADMIN_KEY)
    return create_app_for(load_settings())


def plant(client: redis.Redis, text: str, *, message: str = "") -> None:
    """A dead letter whose record and Braze message hold `text` (as a worker would store Braze's words)."""
    envelope: Any = {
        "id": "plant-1.0",
        "route": "profiles_skip",
        "kind": "attributes",
        "ws": "default",
        "rec": {"raw": {"external_id": "u", "note": text}},
        "t": 1.0,
        "seq": "0",
        "at": 1.0,
        "n": 0,
    }
    with client.pipeline(transaction=True) as pipe:
        deadletters.add(
            pipe, deadletters.entry(envelope, reason="braze_rejected_item", message=message or text)
        )
        pipe.execute()


def test_pages_and_commands_show_a_dead_letter_holding_any_string(
    admin_app: Flask, clean_redis: redis.Redis
) -> None:
    """A dead letter holding a lone surrogate is listed, shown and dumped by pages and CLI."""
    plant(clean_redis, "before \ud800 after")
    client = admin_app.test_client()
    for page in ("/admin/", "/admin/dead", "/admin/dead/plant-1.0"):
        response = client.get(page, headers=ADMIN)
        assert response.status_code == 200, page
        if page != "/admin/":  # the overview only counts them
            assert "before \ufffd after" in response.get_data(as_text=True), page
    runner = admin_app.test_cli_runner()
    for args in (["dead", "list"], ["dead", "list", "--json"], ["dead", "show", "plant-1.0"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 0, (args, result.output)
        assert "plant-1.0" in result.output


def test_dead_letter_written_before_the_fix_is_read_safely(
    admin_app: Flask, clean_redis: redis.Redis
) -> None:
    """A lone surrogate stored as a JSON escape (as the store wrote it before) is read back as U+FFFD."""
    plant(clean_redis, "x")
    raw = clean_redis.hget(KEYS.dead, "plant-1.0")
    assert raw is not None
    clean_redis.hset(KEYS.dead, "plant-1.0", raw.replace(b'"note":"x"', b'"note":"\\ud800"'))
    item = deadletters.get(clean_redis, "plant-1.0", WORKSPACES)
    assert item is not None
    assert item["envelope"]["rec"]["raw"]["note"] == "\ufffd"
    assert admin_app.test_client().get("/admin/dead/plant-1.0", headers=ADMIN).status_code == 200


def test_consent_history_holds_any_string(admin_app: Flask, clean_redis: redis.Redis) -> None:
    """The consent audit trail keeps and prints any string (here a lone surrogate in a reason)."""
    envelope: Any = {
        "id": "c-1.0",
        "route": "consent",
        "ws": "default",
        "t": 1.0,
        "rec": {"_id": {"external_id": "u-audit"}, "email_subscribe": "unsubscribed"},
    }
    with clean_redis.pipeline(transaction=True) as pipe:
        audit.note(pipe, envelope, "dead_lettered", 60, reason="bad \udc80 reason")
        pipe.execute()
    result = admin_app.test_cli_runner().invoke(args=["consent", "history", "--external-id", "u-audit"])
    assert result.exit_code == 0, result.output
    assert "bad \ufffd reason" in result.output


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(values=st.lists(ANY_TEXT, min_size=1, max_size=4), keyed=st.booleans())
def test_strings_of_every_unicode_category_never_5xx(
    admin_app: Flask, clean_redis: redis.Redis, values: list[str], keyed: bool
) -> None:
    """Fuzz: strings of every Unicode category as values and keys, by every caller: never a 5xx."""
    client = admin_app.test_client()
    fields = {(value if keyed else f"f{n}"): value for n, value in enumerate(values)}
    text = json.dumps(" ".join(values))  # a JSON string literal: lone surrogates as \udXXX escapes
    record_json = json.dumps({"external_id": "u-fuzz", **fields})
    # As JSON reads it back: a high surrogate drawn just before a low one is a pair, one character.
    has_lone = any(0xD800 <= ord(char) <= 0xDFFF for char in json.loads(text))
    cases = {
        **bodies(text),
        "record": ("POST", "/db/profiles_skip", TD, f'{{"records": [{record_json}]}}'.encode()),
    }
    for name, (method, path, headers, body) in cases.items():
        response = client.open(path, method=method, data=body, headers=headers)
        assert response.status_code < 500, (name, response.get_data(as_text=True)[:300])
        if has_lone and name != "key in a record":
            assert response.status_code == 400, name
    for page in ("/admin/", "/admin/dead"):
        assert client.get(page, headers=ADMIN).status_code == 200
    assert admin_app.test_cli_runner().invoke(args=["dead", "list", "--json"]).exit_code == 0
