"""The operator's pages: admin authentication, dead-letter pages, replay, purge, CSRF, escaping, rq."""

from __future__ import annotations

import base64
import html
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from braze_sim.server import Simulator
from receiver.admin.pages import dashboard_redis_url
from relay import deadletters
from relay.config import Settings, load_settings
from tests.helpers import BRAZE_KEY, WORKSPACES, WRITE_KEY, create_app_for

ADMIN_KEY = "test-admin-key-3c9e0b"
ROTATED_ADMIN_KEY = "test-admin-key-next-71d0"
TD_HEADERS = {"Authorization": f"TD1 {WRITE_KEY}"}
PAGES = ("/admin", "/admin/", "/admin/dead", "/admin/rq/")


def basic(password: str, user: str = "ops") -> dict[str, str]:
    """An HTTP Basic Authorization header."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


AUTH = basic(ADMIN_KEY)


@pytest.fixture
def admin_app(relay_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Flask:
    """The relay's app with two admin keys configured (a rotation in progress)."""
    monkeypatch.setenv("RELAY_ADMIN_KEYS", f"{ADMIN_KEY},{ROTATED_ADMIN_KEY}")
    return create_app_for(load_settings())


@pytest.fixture
def admin(admin_app: Flask) -> FlaskClient:
    """A browser-like client of that app (it keeps the session cookie)."""
    return admin_app.test_client()


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


def test_pages_answer_404_without_admin_keys(client: FlaskClient) -> None:
    """With RELAY_ADMIN_KEYS unset every admin page and action is 404, whatever the credentials."""
    for path in PAGES:
        assert client.get(path, headers=AUTH).status_code == 404
    assert client.post("/admin/dead/replay", data={"scope": "filter"}, headers=AUTH).status_code == 404


def test_insecure_flag_does_not_open_the_pages(
    relay_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RELAY_INSECURE_NO_AUTH opens the ingest endpoints only: the admin pages stay 404."""
    monkeypatch.setenv("RELAY_INSECURE_NO_AUTH", "1")
    client = create_app_for(load_settings()).test_client()
    assert client.get("/admin/dead").status_code == 404


def test_pages_ask_for_an_admin_key(admin: FlaskClient) -> None:
    """No credential, a wrong key, a write key or another scheme get 401 with a Basic challenge."""
    for headers in (
        {},
        basic("wrong"),
        basic(WRITE_KEY),
        {"Authorization": f"Bearer {ADMIN_KEY}"},
        basic(""),
    ):
        for path in PAGES:
            response = admin.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.headers["WWW-Authenticate"].startswith('Basic realm="braze-relay admin"')
            assert ADMIN_KEY not in response.get_data(as_text=True)


def test_any_user_name_with_either_admin_key_gets_in(admin: FlaskClient) -> None:
    """The user name is ignored; every configured key (old and new, during rotation) opens the pages."""
    for headers in (basic(ADMIN_KEY, "alice"), basic(ROTATED_ADMIN_KEY, ""), basic(ADMIN_KEY, "Zoë Ops")):
        for path in PAGES:
            assert admin.get(path, headers=headers).status_code == 200, (path, headers)


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
    time.sleep(0.01)
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


def test_actions_need_this_sessions_csrf_token(admin_app: Flask, clean_redis: redis.Redis) -> None:
    """A POST without the token, or with another session's, is refused with 400 and changes nothing."""
    victim, other = admin_app.test_client(), admin_app.test_client()
    victim.post("/db/profiles_skip", json={"records": [{"a": 1}]}, headers=TD_HEADERS)
    (dead_id,) = dead_ids(clean_redis)
    page(victim, "/admin/dead")  # the victim has a session with a token
    for data in ({"id": dead_id, "confirm": "yes"}, {"id": dead_id, "confirm": "yes", "csrf": csrf(other)}):
        for action in ("/admin/dead/replay", "/admin/dead/purge"):
            response = victim.post(action, data=data, headers=AUTH)
            assert response.status_code == 400, action
            assert "security token" in response.get_data(as_text=True)
    assert dead_ids(clean_redis) == [dead_id]
    cookie = victim.get_cookie("relay_admin", path="/admin")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"


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


def test_rq_dashboard_refuses_cross_site_writes(admin: FlaskClient) -> None:
    """rq-dashboard's POSTs work from its own page only, and its GET 'requeue all' is refused."""
    path = "/admin/rq/job/no-such-job/delete"
    assert admin.post(path, headers=AUTH).status_code == 403
    assert admin.post(path, headers={**AUTH, "Origin": "https://evil.example"}).status_code == 403
    assert admin.post(path, headers={**AUTH, "Origin": "http://localhost"}).status_code == 200
    assert admin.post(path, headers={**AUTH, "Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert admin.get("/admin/rq/requeue/relay-bulk", headers=AUTH).status_code == 405
    assert admin.get("/admin/rq/0/data/queues.json", headers=AUTH).status_code == 200


def test_rq_dashboard_gets_the_apps_redis_without_its_password(settings: Settings) -> None:
    """The URL rq-dashboard shows names the app's Redis but not its password, which travels apart."""
    url = "redis://ops:s3cret-pw@10.0.0.5:6380/3?ssl_cert_reqs=none"
    shown, password = dashboard_redis_url(replace(settings, redis_url=url), redis.Redis.from_url(url))
    assert shown == "redis://ops@10.0.0.5:6380/3?ssl_cert_reqs=none&socket_timeout=5&socket_connect_timeout=2"
    assert password == "s3cret-pw"
    socket = redis.Redis(unix_socket_path="/tmp/relay-test.sock", db=0)
    shown, password = dashboard_redis_url(replace(settings, redis_url=None), socket)
    assert shown.startswith("unix:///tmp/relay-test.sock?db=0&") and password is None


def test_head_does_not_reach_rq_dashboard_actions(admin: FlaskClient, clean_redis: redis.Redis) -> None:
    """HEAD (and GET) to rq-dashboard's 'requeue all' is 405 and requeues nothing."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    queue = Queue("relay-bulk", connection=clean_redis, serializer=JSONSerializer)
    job = queue.enqueue("builtins.print", "failed once")
    queue.remove(job)
    queue.failed_job_registry.add(job, ttl=600, exc_string="boom")
    assert queue.failed_job_registry.count == 1
    for method in ("HEAD", "GET", "OPTIONS"):
        response = admin.open("/admin/rq/requeue/relay-bulk", method=method, headers=AUTH)
        assert response.status_code == 405, method
    assert queue.failed_job_registry.count == 1
    assert queue.count == 0


def test_session_cookie_is_secure_behind_https(admin: FlaskClient) -> None:
    """Behind a proxy saying X-Forwarded-Proto: https, the session cookie is Secure."""
    admin.post("/db/profiles_skip", json={"records": [{"a": 1}]}, headers=TD_HEADERS)  # a form to show
    admin.get("/admin/dead", headers={**AUTH, "X-Forwarded-Proto": "https"})
    cookie = admin.get_cookie("relay_admin", path="/admin")
    assert cookie is not None and cookie.secure and cookie.http_only


def test_session_cookie_over_plain_http_stays_usable(admin: FlaskClient) -> None:
    """Over plain HTTP (local use) the cookie is not Secure, so the browser still sends it back."""
    admin.post("/db/profiles_skip", json={"records": [{"a": 1}]}, headers=TD_HEADERS)
    admin.get("/admin/dead", headers=AUTH)
    cookie = admin.get_cookie("relay_admin", path="/admin")
    assert cookie is not None and not cookie.secure


def test_admin_headers_on_the_admin_pages_only(admin: FlaskClient, clean_redis: redis.Redis) -> None:
    """The guard and its headers are the admin blueprints' own: rq-dashboard's pages get them too,
    ingest answers do not."""
    for path in ("/admin/", "/admin/rq/"):
        response = admin.get(path, headers=AUTH)
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "no-store", path
        assert response.headers["X-Frame-Options"] == "DENY", path
    assert admin.get("/admin/rq/", headers={}).status_code == 401
    answer = admin.post(
        "/postback/v3/event/db/events", json={"external_id": "u1", "name": "e"}, headers=TD_HEADERS
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert "X-Frame-Options" not in answer.headers and "Cache-Control" not in answer.headers


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
