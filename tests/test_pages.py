"""The operator's pages (receiver/admin/pages.py): dead-letter pages, replay, purge, escaping, rq-dashboard's
Redis. Who may use them (admin keys, CSRF, cookies, headers) is test_access.py."""

from __future__ import annotations

import base64
import html
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis
from flask.testing import FlaskClient

from braze_sim.server import Simulator
from receiver.admin.pages import dashboard_redis_url
from relay import deadletters
from relay.config import Settings
from tests.helpers import ADMIN_KEY, BRAZE_KEY, ROTATED_ADMIN_KEY, WORKSPACES, WRITE_KEY, clock_past

TD_HEADERS = {"Authorization": f"TD1 {WRITE_KEY}"}
PAGES = ("/admin", "/admin/", "/admin/dead", "/admin/rq/")


def basic(password: str, user: str = "ops") -> dict[str, str]:
    """An HTTP Basic Authorization header."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


AUTH = basic(ADMIN_KEY)


def plant_dead_letters(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, records: list[dict[str, Any]]
) -> None:
    """Custom events that Braze refuses (a wrong API key), drained into the dead-letter store."""
    braze.config.api_key = "not-the-relays-key"
    try:
        response = client.post("/db/events", json={"records": records}, headers=TD_HEADERS)
        assert response.status_code == 200, response.get_data(as_text=True)
        drain()
    finally:
        braze.config.api_key = BRAZE_KEY


def dead_ids(client: redis.Redis) -> list[str]:
    """Ids of every dead letter, newest first."""
    return [item["id"] for item in deadletters.iter_entries(client, WORKSPACES)]


def page(client: FlaskClient, path: str) -> str:
    """A page's HTML, asserting it rendered."""
    response = client.get(path, headers=AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def csrf(client: FlaskClient) -> str:
    """The session's form token, as the dead-letter page puts it in its forms."""
    match = re.search(r'name="csrf" value="([^"]+)"', page(client, "/admin/dead"))
    assert match, "no CSRF token in the page"
    return match.group(1)


def flashes(client: FlaskClient) -> list[str]:
    """The flash messages the next page shows."""
    return [
        html.unescape(text)
        for text in re.findall(r'class="flash [^"]*"[^>]*>([^<]*)<', page(client, "/admin/dead"))
    ]


def test_pages_show_a_planted_dead_letter(
    admin: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """Overview counts it by reason and route, the list shows it, its page shows the record; no secret."""
    plant_dead_letters(admin, drain, braze, [{"external_id": "page-u", "name": "signup", "plan": "pro"}])
    (dead_id,) = dead_ids(clean_redis)
    overview = page(admin, "/admin/")
    assert re.search(r"braze_rejected</a></td><td class=\"num\">1<", overview)
    assert re.search(r"events</a></td><td class=\"num\">1<", overview)
    assert "default:track" in overview and "relay-bulk" in overview
    listing = page(admin, "/admin/dead?route=events&reason=braze_rejected")
    assert f'data-id="{dead_id}"' in listing and "1 matching, of 1 dead letter in the store" in listing
    assert "0 matching, of 1 dead letter" in page(admin, "/admin/dead?reason=invalid")
    detail = html.unescape(page(admin, f"/admin/dead/{dead_id}"))
    assert '"external_id": "page-u"' in detail and '"plan": "pro"' in detail
    assert "<dt>Braze status</dt><dd>401</dd>" in detail
    rq_page = page(admin, "/admin/rq/")
    for text in (overview, listing, detail, rq_page):
        for secret in (BRAZE_KEY, WRITE_KEY, ADMIN_KEY, ROTATED_ADMIN_KEY):
            assert secret not in text
    assert admin.get("/admin/dead/no-such-id", headers=AUTH).status_code == 404


def test_list_pages_fifty_per_page_newest_first(admin: FlaskClient, clean_redis: redis.Redis) -> None:
    """120 dead letters: page 1 holds the newest 50, page 3 the oldest 20."""
    for start in range(0, 120, 40):  # three requests of 40 records refused at the edge
        body = {"records": [{"bad": index} for index in range(start, start + 40)]}
        assert admin.post("/db/profiles_skip", json=body, headers=TD_HEADERS).status_code == 200
    ids = dead_ids(clean_redis)
    assert len(ids) == 120
    first, third = page(admin, "/admin/dead"), page(admin, "/admin/dead?page=3")
    assert re.findall(r'data-id="([^"]+)"', first) == ids[:50]
    assert re.findall(r'data-id="([^"]+)"', third) == ids[100:]
    assert "page 1 of 3" in first and "older" in first


def test_replay_puts_records_back_and_they_reach_braze(
    admin: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """Replay one by id, then all matching a filter: redirects with a flash; after a drain Braze has them."""
    plant_dead_letters(
        admin, drain, braze, [{"external_id": "rp-u", "name": "a"}, {"external_id": "rp-u", "name": "b"}]
    )
    first, second = dead_ids(clean_redis)
    token = csrf(admin)
    response = admin.post("/admin/dead/replay", data={"csrf": token, "id": first}, headers=AUTH)
    assert response.status_code == 303 and response.headers["Location"] == "/admin/dead"
    assert flashes(admin) == ["replayed 1 record"]
    assert dead_ids(clean_redis) == [second]
    form = {
        "csrf": token,
        "scope": "filter",
        "route": "events",
        "reason": "braze_rejected",
        "as_of": str(time.time()),
    }
    response = admin.post("/admin/dead/replay", data=form, headers=AUTH)
    assert response.headers["Location"] == "/admin/dead?route=events&reason=braze_rejected"
    assert flashes(admin) == ["replayed 1 record"]
    assert dead_ids(clean_redis) == []
    drain()
    assert sorted(event["name"] for event in braze.state.profile("rp-u")["events"]) == ["a", "b"]


def test_replay_leaves_still_invalid_records_and_says_so(
    admin: FlaskClient, clean_redis: redis.Redis
) -> None:
    """A record refused at the edge is validated again: still invalid, it stays, and the flash says it."""
    admin.post("/db/profiles_skip", json={"records": [{"a": 1}]}, headers=TD_HEADERS)
    (dead_id,) = dead_ids(clean_redis)
    admin.post("/admin/dead/replay", data={"csrf": csrf(admin), "id": dead_id}, headers=AUTH)
    assert flashes(admin) == ["replayed 0 records; 1 still invalid, left in place"]
    assert dead_ids(clean_redis) == [dead_id]


def test_purge_asks_for_confirmation_then_deletes_what_the_page_showed(
    admin: FlaskClient, clean_redis: redis.Redis
) -> None:
    """Purge without confirmation only shows what would go; confirmed, it deletes those, not newer ones."""
    admin.post("/db/profiles_skip", json={"records": [{"a": 1}, {"b": 2}]}, headers=TD_HEADERS)
    as_of = str(time.time())
    clock_past(float(as_of))
    admin.post("/db/profiles_skip", json={"records": [{"c": 3}]}, headers=TD_HEADERS)
    newest = dead_ids(clean_redis)[0]
    form = {
        "csrf": csrf(admin),
        "scope": "filter",
        "route": "profiles_skip",
        "reason": "invalid",
        "as_of": as_of,
    }
    confirm = admin.post("/admin/dead/purge", data=form, headers=AUTH)
    assert confirm.status_code == 200 and "Purge 2 dead letters for good?" in confirm.get_data(as_text=True)
    assert len(dead_ids(clean_redis)) == 3
    done = admin.post("/admin/dead/purge", data={**form, "confirm": "yes"}, headers=AUTH)
    assert done.status_code == 303
    assert flashes(admin) == ["purged 2 dead letters"]
    assert dead_ids(clean_redis) == [newest]
    admin.post("/admin/dead/purge", data={"csrf": csrf(admin), "id": newest, "confirm": "yes"}, headers=AUTH)
    assert flashes(admin) == ["purged 1 dead letter"]
    assert dead_ids(clean_redis) == []


def test_records_are_html_escaped(admin: FlaskClient, clean_redis: redis.Redis) -> None:
    """A record holding markup is shown as text on every page, under a CSP that runs no script."""
    hostile = "<script>alert('pwned')</script>"
    admin.post(
        "/db/profiles_skip",
        json={"records": [{hostile: hostile, "x": '"><img src=x onerror=alert(1)>'}]},
        headers=TD_HEADERS,
    )
    (dead_id,) = dead_ids(clean_redis)
    for path in ("/admin/", "/admin/dead", f"/admin/dead/{dead_id}"):
        response = admin.get(path, headers=AUTH)
        text = response.get_data(as_text=True)
        assert "<script>" not in text and "<img" not in text, path
        assert "script-src" not in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
    assert "&lt;script&gt;alert(" in page(admin, f"/admin/dead/{dead_id}")


def test_rq_dashboard_gets_the_apps_redis_without_its_password(settings: Settings) -> None:
    """The URL rq-dashboard shows names the app's Redis but not its password, which travels apart."""
    url = "redis://ops:s3cret-pw@10.0.0.5:6380/3?ssl_cert_reqs=none"
    shown, password = dashboard_redis_url(replace(settings, redis_url=url), redis.Redis.from_url(url))
    assert shown == "redis://ops@10.0.0.5:6380/3?ssl_cert_reqs=none&socket_timeout=5&socket_connect_timeout=2"
    assert password == "s3cret-pw"
    socket = redis.Redis(unix_socket_path="/tmp/relay-test.sock", db=0)
    shown, password = dashboard_redis_url(replace(settings, redis_url=None), socket)
    assert shown.startswith("unix:///tmp/relay-test.sock?db=0&") and password is None


def test_a_users_history_shows_their_deletes_beside_their_consent(
    admin: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """The user history page, asked by POST (no identifier in a URL), lists a user's consent change and
    delete with what became of them, and a record not sent because the delete came after it."""
    headers = {"X-TD-Write-Key": WRITE_KEY}
    user = "history-user"
    consent = {"external_id": user, "subscription_group_id": "g", "subscription_state": "unsubscribed"}
    for path, record in (("consent", consent), ("events", {"external_id": user, "name": "e"})):
        assert admin.post(f"/postback/v3/event/db/{path}", json=record, headers=headers).status_code == 200
    drain()
    for path, record in (
        ("events", {"external_id": user, "name": "late"}),
        ("deletes", {"external_id": user}),
    ):
        assert admin.post(f"/postback/v3/event/db/{path}", json=record, headers=headers).status_code == 200
    drain()
    token = re.search(r'name="csrf" value="([^"]+)"', page(admin, "/admin/history"))
    assert token is not None
    form = {"csrf": token.group(1), "kind": "external_id", "value": user, "workspace": "default"}
    shown = admin.post("/admin/history", data=form, headers=AUTH).get_data(as_text=True)
    rows = re.findall(r'<span class="tag">(\w+)</span></td>\s*<td>(\w+)', shown)
    assert ("delete", "received") in rows and ("delete", "confirmed") in rows
    assert ("consent", "received") in rows and ("consent", "confirmed") in rows
    assert "reason deleted" in shown, "the event accepted before the delete, never sent"
    assert [event["name"] for event in braze.state.snapshot()["profiles"] for event in event["events"]] == []
    assert user not in admin.get("/admin/history", headers=AUTH).get_data(as_text=True)
    refused = admin.post("/admin/history", data={**form, "csrf": "forged"}, headers=AUTH)
    assert refused.status_code == 400
