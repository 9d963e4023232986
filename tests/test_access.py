"""Who may use the operator's pages (receiver/admin/access.py): no admin key configured, no pages; HTTP
Basic with an admin key, any user name; forms only with this session's token; rq-dashboard's actions only
by POST from our own pages; a session cookie that is Secure behind HTTPS; safe headers on admin pages only.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from receiver.admin.access import session_key
from relay.config import Settings, load_settings
from relay.secrets import Secret
from tests.helpers import ADMIN_KEY, ROTATED_ADMIN_KEY, WRITE_KEY, create_app_for
from tests.test_pages import AUTH, PAGES, TD_HEADERS, basic, csrf, dead_ids, page


def test_every_process_signs_sessions_with_the_same_key(settings: Settings) -> None:
    """The session key comes from the admin keys alone: the same in every process, another for other keys."""
    keys = (Secret(ADMIN_KEY), Secret(ROTATED_ADMIN_KEY))
    one = session_key(replace(settings, admin_keys=keys))
    assert one == session_key(replace(settings, admin_keys=keys))
    assert one != session_key(replace(settings, admin_keys=keys[:1]))
    assert ADMIN_KEY.encode() not in one


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


def test_rq_dashboard_refuses_cross_site_writes(admin: FlaskClient) -> None:
    """rq-dashboard's POSTs work from its own page only, and its GET 'requeue all' is refused."""
    path = "/admin/rq/job/no-such-job/delete"
    assert admin.post(path, headers=AUTH).status_code == 403
    assert admin.post(path, headers={**AUTH, "Origin": "https://evil.example"}).status_code == 403
    assert admin.post(path, headers={**AUTH, "Origin": "http://localhost"}).status_code == 200
    assert admin.post(path, headers={**AUTH, "Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert admin.get("/admin/rq/requeue/relay-bulk", headers=AUTH).status_code == 405
    assert admin.get("/admin/rq/0/data/queues.json", headers=AUTH).status_code == 200


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
