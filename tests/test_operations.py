"""Operator actions written once (receiver/admin/operations.py): the CLI and the admin pages agree."""

from __future__ import annotations

import json
import time

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from receiver.admin import operations
from relay import deadletters
from relay.config import load_settings
from tests.helpers import KEYS, WORKSPACES, WRITE_KEY, clock_past, create_app_for
from tests.test_pages import ADMIN_KEY, AUTH

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s ago"), (59.9, "59s ago"), (60, "1m ago"), (5400, "1h ago"), (7199, "1h ago"), (90000, "1d ago")],
)
def test_ago_rounds_down(seconds: float, shown: str) -> None:
    """Ages are whole units rounded down, everywhere: a 90-minute-old dead letter is "1h ago"."""
    assert operations.ago(NOW - seconds, now=NOW) == shown


def plant(client: FlaskClient, count: int) -> None:
    """Invalid records on the lenient route: dead letters with reason `invalid`."""
    response = client.post(
        "/db/profiles_skip",
        json={"records": [{"n": index} for index in range(count)]},
        headers={"Authorization": f"TD1 {WRITE_KEY}"},
    )
    assert response.status_code == 200


def age_all(client: redis.Redis, seconds: float) -> None:
    """Make every dead letter `seconds` old (as if it failed then)."""
    for item in deadletters.iter_entries(client, WORKSPACES):
        item["last_failed_at"] = time.time() - seconds
        client.hset(KEYS.dead, item["id"], json.dumps(item))
        client.zadd(KEYS.dead_index, {item["id"]: item["last_failed_at"]})


def test_cli_and_page_show_the_same_age(
    client: FlaskClient, clean_redis: redis.Redis, relay_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's list and the admin page say the same of one dead letter 90 minutes old."""
    plant(client, 1)
    age_all(clean_redis, 90 * 60)
    monkeypatch.setenv("RELAY_ADMIN_KEYS", ADMIN_KEY)
    app: Flask = create_app_for(load_settings())
    listed = app.test_cli_runner().invoke(args=["dead", "list"])
    assert "1h ago" in listed.output and "2h ago" not in listed.output
    html = app.test_client().get("/admin/dead", headers=AUTH).get_data(as_text=True)
    assert "1h ago" in html and "2h ago" not in html


def test_purge_goes_in_bounded_transactions(
    app: Flask, client: FlaskClient, clean_redis: redis.Redis
) -> None:
    """More dead letters than one transaction takes are purged all the same, by the CLI too."""
    plant(client, 500)
    plant(client, 300)
    assert clean_redis.zcard(KEYS.dead_index) == 800 > operations.PURGE_CHUNK
    result = app.test_cli_runner().invoke(args=["dead", "purge", "--all", "--yes"])
    assert "purged 800 dead letter(s)" in result.output
    assert clean_redis.zcard(KEYS.dead_index) == 0 and clean_redis.hlen(KEYS.dead) == 0


def test_matching_takes_the_whole_reason_and_the_moment(
    app: Flask, client: FlaskClient, clean_redis: redis.Redis
) -> None:
    """A filter matches whole reasons, and `as_of` leaves out what failed after the page was shown."""
    plant(client, 2)
    as_of = time.time()
    clock_past(as_of)
    plant(client, 1)
    with app.app_context():
        assert len(list(operations.matching(clean_redis, reason="invalid"))) == 3
        assert list(operations.matching(clean_redis, reason="inval")) == []
        assert len(list(operations.matching(clean_redis, reason="invalid", as_of=as_of))) == 2


def test_cli_refuses_a_reason_that_does_not_exist(app: Flask) -> None:
    """`--reason` offers the closed list of reasons, and says so for a wrong one."""
    result = app.test_cli_runner().invoke(args=["dead", "list", "--reason", "braze"])
    assert result.exit_code == 2 and "braze_rejected_item" in result.output
