"""Every answer carries X-Request-Id (docs/design.md), errors and health included, and the access
log line of the running web names the same id."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from receiver import create_app
from relay.config import load_settings
from tests.helpers import WRITE_KEY, signed_headers
from tests.processes import Processes, free_port

ID = re.compile(r"^[0-9a-f]+-[0-9a-f]{12}$")
TD = {"X-TD-Write-Key": WRITE_KEY, "Content-Type": "application/json"}
BASIC = {"Authorization": "Basic " + base64.b64encode(f"td:{WRITE_KEY}".encode()).decode()}
EVENT = {"external_id": "rid-user", "name": "tap"}
EXPORT = {"column_names": ["external_id", "name"], "data": [["rid-user", "tap"]]}

# (method, path, keyword arguments, the status it must answer): every endpoint, every error status.
ANSWERS = [
    ("GET", "/healthz", {}, 200),
    ("GET", "/readyz", {}, 200),
    ("GET", "/metrics", {}, 200),
    ("GET", "/openapi.json", {}, 200),
    ("POST", "/postback/v3/event/db/events", {"json": EVENT, "headers": TD}, 200),
    ("POST", "/db/events", {"json": {"records": [EVENT]}, "headers": TD}, 200),
    ("PUT", "/export/events", {"json": EXPORT, "headers": BASIC}, 200),
    ("POST", "/postback/v3/event/db/events", {"data": b"{", "headers": TD}, 400),
    ("POST", "/postback/v3/event/db/events", {"json": EVENT}, 401),
    ("POST", "/postback/v3/event/db/nowhere", {"json": EVENT, "headers": TD}, 404),
    ("GET", "/postback/v3/event/db/events", {"headers": TD}, 405),
    ("POST", "/postback/v3/event/db/events", {"data": b"{" + b" " * (1 << 21), "headers": TD}, 413),
    ("POST", "/postback/v3/event/db/events", {"data": b"{}", "headers": {"X-TD-Write-Key": WRITE_KEY}}, 415),
    ("POST", "/postback/v3/event/db/events", {"json": {"name": "no user"}, "headers": TD}, 422),
    ("GET", "/no/such/path/at/all", {}, 404),
    ("GET", "/admin/", {}, 404),
]


def stamped(response: object) -> str:
    """The answer's X-Request-Id, checked for shape."""
    rid = response.headers.get("X-Request-Id")  # type: ignore[attr-defined]
    assert rid and ID.match(rid), rid
    return str(rid)


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), ANSWERS)
def test_every_answer_has_a_request_id(
    client: FlaskClient, method: str, path: str, kwargs: dict[str, object], status: int
) -> None:
    """The id is on successes, on each error status, on health checks and on the documents."""
    response = client.open(path, method=method, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    stamped(response)


def test_webhooks_and_their_refusals_have_request_ids(client: FlaskClient) -> None:
    """202 for a signed webhook, 401 for a bad signature, 409 for a reused idempotency key: all stamped."""
    body = json.dumps([EVENT]).encode()
    headers = signed_headers(body)
    assert stamped(client.post("/webhooks/events", data=body, headers=headers))
    forged = {**headers, "webhook-signature": "v1,AAAA"}
    response = client.post("/webhooks/events", data=body, headers=forged)
    assert response.status_code == 401 and stamped(response)
    reused = {**TD, "Idempotency-Key": "rid-key"}
    client.post("/db/events", json={"records": [EVENT]}, headers=reused)
    conflict = client.post("/db/events", json={"records": [{**EVENT, "name": "other"}]}, headers=reused)
    assert conflict.status_code == 409 and stamped(conflict)


def test_503_without_redis_has_a_request_id(
    relay_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis unreachable: the 503 of a postback and of /readyz carry the id too."""
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    client = create_app(load_settings()).test_client()
    for response in (
        client.post("/postback/v3/event/db/events", json=EVENT, headers=TD),
        client.get("/readyz"),
    ):
        assert response.status_code == 503 and stamped(response)


def test_an_unexpected_error_has_a_request_id(app: Flask) -> None:
    """A 500 (here from a view the test adds that raises) carries the id, and no stack trace."""

    def broken() -> str:
        raise RuntimeError("boom")

    app.add_url_rule("/test-only-broken", view_func=broken)
    response = app.test_client().get("/test-only-broken")
    assert response.status_code == 500 and stamped(response)
    assert "boom" not in response.get_data(as_text=True)


def test_each_request_gets_its_own_id(client: FlaskClient) -> None:
    """Two answers, two ids; a caller's own X-Request-Id is not taken over."""
    first = stamped(client.get("/healthz"))
    second = stamped(client.get("/healthz", headers={"X-Request-Id": "caller-chosen"}))
    assert second not in (first, "caller-chosen")


@pytest.mark.e2e
def test_access_log_names_the_answers_request_id(stack: tuple[Processes, str], tmp_path: Path) -> None:
    """Through gunicorn: the access log line of a 422 and of /healthz carries the answer's id."""
    procs, base = stack
    refused = requests.post(f"{base}/postback/v3/event/db/events", json={"name": "x"}, headers=TD, timeout=10)
    health = requests.get(f"{base}/healthz", timeout=10)
    ids = {stamped(refused), stamped(health)}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        logged = set()
        for line in procs.logs().splitlines():
            if line.startswith("{"):
                logged.add(json.loads(line).get("request_id"))
        if ids <= logged:
            return
        time.sleep(0.1)
    raise AssertionError(f"{ids} not in the access log")
