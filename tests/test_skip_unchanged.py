"""skip_unchanged end to end: the edge, the real worker in-process, the simulator over HTTP, the CLI
and the admin page (docs/delivery.md, "skip_unchanged")."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from braze_sim.server import Simulator
from handlers import context
from relay import metrics
from relay.config import Settings, load_settings
from tests.helpers import WRITE_KEY, create_app_for
from tests.test_pages import basic

HEADERS = {"Authorization": f"TD1 {WRITE_KEY}"}
ADMIN_KEY = "test-admin-key-3f0c2b8e91d4a7c6"
SKIPPING = """
[routes.daily_profiles]
database = "db"
table = "daily_profiles"
mode = "user_track"
track_record_type = "user_profile_attributes"
skip_unchanged = true
"""


@pytest.fixture
def skip_settings(routes_file: Path, relay_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test routes plus a skip_unchanged route, and admin keys for the page."""
    routes_file.write_text(routes_file.read_text() + SKIPPING)
    monkeypatch.setenv("RELAY_ADMIN_KEYS", ADMIN_KEY)
    return load_settings()


@pytest.fixture
def skip_app(skip_settings: Settings, clean_redis: redis.Redis) -> Flask:
    """The app, and the worker's context, on those settings."""
    context.install(context.Context(skip_settings, clean_redis))
    return create_app_for(skip_settings)


def export(client: FlaskClient, table: str, records: list[dict[str, Any]]) -> None:
    """Records through TD's ingestion endpoint (as a daily export's rows)."""
    response = client.post(f"/db/{table}", json={"records": records}, headers=HEADERS)
    assert response.status_code == 200, response.get_json()


def attribute_objects(braze: Simulator, since: int = 0) -> list[dict[str, Any]]:
    """Every attributes object Braze received from index `since` of its log."""
    return [
        obj
        for entry in braze.requests_since(since)
        if entry["path"] == "/users/track" and 200 <= entry["status"] < 300
        for obj in entry["body"].get("attributes", [])
    ]


def counted(client: redis.Redis, name: str, route: str) -> float:
    """One route's counter from /metrics' store."""
    return metrics.read(client, ["default"]).get((name, (("route", route),)), 0)


PROFILES = [{"external_id": f"p{i}", "tier": "gold", "city": "Oslo", "score": i} for i in range(10)]


def test_a_daily_reexport_sends_only_what_changed(
    skip_app: Flask, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """Second export, one profile changed: one object sent, holding only the changed value."""
    client = skip_app.test_client()
    export(client, "daily_profiles", PROFILES)
    drain()
    assert len(attribute_objects(braze)) == 10
    mark = len(braze.requests)
    changed = [dict(profile) for profile in PROFILES]
    changed[3]["city"] = "Bergen"
    export(client, "daily_profiles", changed)
    drain()
    assert attribute_objects(braze, mark) == [{"external_id": "p3", "city": "Bergen"}]
    assert braze.state.profile("p3")["attributes"] == {"tier": "gold", "city": "Bergen", "score": 3}
    assert counted(clean_redis, "relay_records_unchanged", "daily_profiles") == 9
    assert counted(clean_redis, "relay_attributes_unchanged", "daily_profiles") == 9 * 3 + 2
    assert counted(clean_redis, "relay_records_delivered", "daily_profiles") == 11


def test_routes_without_it_send_everything(
    skip_app: Flask, drain: Callable[..., None], braze: Simulator
) -> None:
    """The plain profiles route sends the same values again (and teaches the memory)."""
    client = skip_app.test_client()
    for _ in range(2):
        export(client, "profiles", PROFILES[:3])
        drain()
    assert len(attribute_objects(braze)) == 6


def test_forgetting_a_route_or_a_user_sends_again(
    skip_app: Flask, drain: Callable[..., None], braze: Simulator
) -> None:
    """`unchanged forget --external-id` sends that user's values again; `--route` every user's."""
    client = skip_app.test_client()
    runner = skip_app.test_cli_runner()
    export(client, "daily_profiles", PROFILES[:3])
    drain()
    done = runner.invoke(args=["unchanged", "forget", "--external-id", "p1"])
    assert done.exit_code == 0 and "forgotten" in done.output
    mark = len(braze.requests)
    export(client, "daily_profiles", PROFILES[:3])
    drain()
    assert [obj["external_id"] for obj in attribute_objects(braze, mark)] == ["p1"]
    done = runner.invoke(args=["unchanged", "forget", "--route", "daily_profiles"])
    assert done.exit_code == 0 and "no longer count" in done.output
    mark = len(braze.requests)
    export(client, "daily_profiles", PROFILES[:3])
    drain()
    assert sorted(obj["external_id"] for obj in attribute_objects(braze, mark)) == ["p0", "p1", "p2"]
    shown = runner.invoke(args=["unchanged", "show"])
    assert "daily_profiles  delivered=7  not_sent=2  values_left_out=6" in shown.output


def test_subscription_states_are_always_sent(
    skip_app: Flask, drain: Callable[..., None], braze: Simulator
) -> None:
    """email_subscribe set as an attribute is sent every time, even when unchanged."""
    client = skip_app.test_client()
    record = {"external_id": "s1", "tier": "gold", "email_subscribe": "opted_in"}
    for _ in range(2):
        export(client, "daily_profiles", [record])
        drain()
    assert attribute_objects(braze)[-1] == {"external_id": "s1", "email_subscribe": "opted_in"}


def test_admin_overview_shows_it_and_forgets_a_route(
    skip_app: Flask, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """The overview card counts objects not sent and values left out; its button forgets the route."""
    client = skip_app.test_client()
    for _ in range(2):
        export(client, "daily_profiles", PROFILES[:2])
        drain()
    admin = skip_app.test_client()
    header = basic(ADMIN_KEY)
    page = admin.get("/admin/", headers=header).get_data(as_text=True)
    card = page.split('id="unchanged"', 1)[1].split("</section>", 1)[0]
    cells = re.findall(r'<td class="num">(\d+)</td>', card)
    assert "daily_profiles" in card and cells == ["2", "2", "6"]  # delivered, not sent, left out
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token
    answer = admin.post(
        "/admin/unchanged/forget", data={"csrf": token.group(1), "route": "daily_profiles"}, headers=header
    )
    assert answer.status_code == 303
    mark = len(braze.requests)
    export(client, "daily_profiles", PROFILES[:2])
    drain()
    assert len(attribute_objects(braze, mark)) == 2


def test_values_braze_refused_are_not_remembered(
    skip_app: Flask, drain: Callable[..., None], braze: Simulator
) -> None:
    """Only what Braze took is remembered: a profile it refused (dead-lettered) is sent in full next time."""
    client = skip_app.test_client()
    braze.faults.reject_item = lambda array, obj: "refused" if obj.get("external_id") == "p1" else None
    export(client, "daily_profiles", PROFILES[:3])
    drain()
    braze.faults.reject_item = None
    mark = len(braze.requests)
    export(client, "daily_profiles", PROFILES[:3])
    drain()
    assert attribute_objects(braze, mark) == [
        {"external_id": "p1", "tier": "gold", "city": "Oslo", "score": 1}
    ]


def test_a_deleted_user_is_sent_in_full_again(
    skip_app: Flask, drain: Callable[..., None], braze: Simulator
) -> None:
    """A delivered deletion forgets what Braze held of the user: the next export sends all of it."""
    client = skip_app.test_client()
    export(client, "daily_profiles", PROFILES[:2])
    drain()
    export(client, "deletes", [{"external_id": "p0"}])
    drain()
    mark = len(braze.requests)
    export(client, "daily_profiles", PROFILES[:2])
    drain()
    assert attribute_objects(braze, mark) == [
        {"external_id": "p0", "tier": "gold", "city": "Oslo", "score": 0}
    ]
    assert braze.state.profile("p0")["attributes"] == {"tier": "gold", "city": "Oslo", "score": 0}


def test_only_a_skip_unchanged_route_can_be_forgotten(skip_app: Flask) -> None:
    """The CLI and the admin page refuse the same routes (receiver/admin/operations.py decides for both)."""
    refused = skip_app.test_cli_runner().invoke(args=["unchanged", "forget", "--route", "profiles"])
    assert refused.exit_code == 2 and "no skip_unchanged route named 'profiles'" in refused.output
    unknown = skip_app.test_cli_runner().invoke(args=["unchanged", "forget", "--route", "nope"])
    assert unknown.exit_code == 2 and "no skip_unchanged route named 'nope'" in unknown.output


def test_forgetting_a_user_by_alias(skip_app: Flask, drain: Callable[..., None], braze: Simulator) -> None:
    """`--alias NAME:LABEL`, as `consent history` spells it, forgets an alias's memory."""
    client = skip_app.test_client()
    alias = {"user_alias": {"alias_name": "c-1", "alias_label": "td_client_id"}, "tier": "gold"}
    export(client, "daily_profiles", [alias])
    drain()
    runner = skip_app.test_cli_runner()
    done = runner.invoke(args=["unchanged", "forget", "--alias", "c-1:td_client_id"])
    assert done.exit_code == 0 and done.output.strip() == "forgotten", done.output
    bad = runner.invoke(args=["unchanged", "forget", "--alias", "c-1"])
    assert bad.exit_code == 2 and "is not NAME:LABEL" in bad.output
