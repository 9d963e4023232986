"""Who may read /metrics and /openapi.json (receiver/metrics_access.py), on the relay's app."""

from __future__ import annotations

import base64

import pytest
from flask.testing import FlaskClient

from relay.config import load_settings
from tests.helpers import create_app_for

METRICS_KEY = "metrics-key-4d1e"
ADMIN_KEY = "admin-key-9c2f"
GUARDED = ("/metrics", "/openapi.json")


def basic(password: str) -> dict[str, str]:
    """HTTP Basic with any user name and this password."""
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}


@pytest.fixture
def keyed(relay_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    """The app with a metrics key and an admin key set."""
    monkeypatch.setenv("RELAY_METRICS_KEYS", f"old-key,{METRICS_KEY}")
    monkeypatch.setenv("RELAY_ADMIN_KEYS", ADMIN_KEY)
    return create_app_for(load_settings()).test_client()


def test_open_to_all_by_default(client: FlaskClient) -> None:
    """Without RELAY_METRICS_KEYS both answer anyone (a scrape on a private network)."""
    for path in GUARDED:
        assert client.get(path).status_code == 200


def test_a_metrics_key_or_an_admin_key_opens_them(keyed: FlaskClient) -> None:
    """With keys set: 401 without a key or a wrong one; a metrics key (Bearer) or the admin key opens both."""
    for path in GUARDED:
        assert keyed.get(path).status_code == 401
        assert keyed.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert keyed.get(path, headers=basic(METRICS_KEY)).status_code == 401  # not an admin key
        assert keyed.get(path, headers={"Authorization": f"Bearer {ADMIN_KEY}"}).status_code == 401
        assert keyed.get(path, headers={"Authorization": f"Bearer {METRICS_KEY}"}).status_code == 200
        assert keyed.get(path, headers=basic(ADMIN_KEY)).status_code == 200
    refused = keyed.get("/metrics")
    assert refused.get_json()["code"] == 401
    assert b"relay_" not in refused.data


def test_health_checks_stay_open(keyed: FlaskClient) -> None:
    """A load balancer's probes need no key."""
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/readyz").status_code == 200
