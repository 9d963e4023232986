"""The operator's commands (receiver/cli/commands.py): check, send-test, and the dead-letter list, show,
replay and purge."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from braze_sim.server import Simulator
from receiver import state
from relay import deadletters
from relay.config import load_settings
from tests.helpers import BRAZE_KEY, REDIS_URL, WORKSPACES, WRITE_KEY, create_app_for, relay_environment
from tests.processes import flask_command, free_port
from tests.test_skip_unchanged import SKIPPING

HEADERS = {"Authorization": f"TD1 {WRITE_KEY}"}
# Every command with arguments that reach Redis (`transform try` never does).
ON_REDIS = {
    "check": [],
    "dead list": [],
    "dead show": ["some-id"],
    "dead replay": ["--all"],
    "dead purge": ["--all", "--yes"],
    "consent history": ["--email", "a@example.com"],
    "unchanged show": [],
    "unchanged forget": ["--external-id", "u"],
    "send-test": ["events"],
}


def dead_ids(client: redis.Redis) -> list[str]:
    """Ids of every dead letter."""
    return [item["id"] for item in deadletters.iter_entries(client, WORKSPACES)]


def test_check_prints_routes_without_secrets(app: Flask) -> None:
    """`check` confirms the configuration and Redis, lists the routes and prints no key."""
    result = app.test_cli_runner().invoke(args=["check"])
    assert result.exit_code == 0, result.output
    assert "configuration OK: 8 route(s)" in result.output
    assert "consent: user_subscription/consent" in result.output
    assert BRAZE_KEY not in result.output and WRITE_KEY not in result.output


def test_flask_check_on_a_routes_file_that_cannot_run_is_one_line(tmp_path: Path) -> None:
    """`flask --app receiver check` (the README offers it) on a bad routes file: one line naming the
    route and the key, status 2, no traceback."""
    routes = tmp_path / "relay.toml"
    routes.write_text('[routes.bad]\nmode = "user_track"\n')
    env = {**os.environ, **relay_environment(REDIS_URL, "http://127.0.0.1:9", routes)}
    result = flask_command("check", env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "route 'bad'" in result.stderr and "track_record_type" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def leaf_commands(group: click.Group, prefix: str = "") -> Iterator[str]:
    """The name of every command under a group, sub-groups walked."""
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from leaf_commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}"


def test_every_command_says_a_redis_that_does_not_answer_in_one_line(
    routes_file: Path, relay_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing listening at REDIS_URL, each command that reads Redis ends with one line naming
    it and status 2, not a traceback."""
    routes_file.write_text(routes_file.read_text() + SKIPPING)
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    app = create_app_for(load_settings())
    assert set(ON_REDIS) == set(leaf_commands(app.cli)) - {"transform try"}, "a command is not tried"
    runner = app.test_cli_runner()
    for name, args in ON_REDIS.items():
        result = runner.invoke(args=[*name.split(), *args])
        assert result.exit_code == 2, (name, result.output, result.exception)
        assert result.output == "braze-relay: Redis does not answer (ConnectionError)\n", name


def test_replay_delivers_dead_letters_through_the_normal_path(
    app: Flask, client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """Records dead-lettered by a wrong Braze key are listed, shown, replayed once it is fixed, and land."""
    braze.config.api_key = "not-the-relays-key"
    client.post(
        "/db/events",
        json={"records": [{"external_id": "cli-u", "name": "a"}, {"external_id": "cli-u", "name": "b"}]},
        headers=HEADERS,
    )
    drain()
    braze.config.api_key = BRAZE_KEY
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["dead", "list", "--route", "events"])
    assert listed.exit_code == 0 and listed.output.count("braze_rejected") == 2
    first = dead_ids(clean_redis)[0]
    shown = runner.invoke(args=["dead", "show", first])
    assert json.loads(shown.output)["status"] == 401
    replayed = runner.invoke(args=["dead", "replay", "--reason", "braze_rejected"])
    assert "replayed 2 record(s)" in replayed.output
    drain()
    assert sorted(event["name"] for event in braze.state.profile("cli-u")["events"]) == ["a", "b"]
    assert dead_ids(clean_redis) == []


def test_replay_validates_invalid_records_again(
    app: Flask, client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """A record refused at the edge stays dead while still invalid; a named replay says why."""
    response = client.post(
        "/db/profiles_skip", json={"records": [{"external_id": "ok", "a": 1}, {"a": 2}]}, headers=HEADERS
    )
    assert response.get_json()["rejected"][0]["index"] == 1
    (dead_id,) = dead_ids(clean_redis)
    result = app.test_cli_runner().invoke(args=["dead", "replay", dead_id])
    assert "still invalid" in result.output and "identifier" in result.output
    assert dead_ids(clean_redis) == [dead_id]


def test_purge_needs_a_selection_and_removes(
    app: Flask, client: FlaskClient, clean_redis: redis.Redis
) -> None:
    """`purge` refuses to run without ids or a filter, and removes what it is told to."""
    client.post("/db/profiles_skip", json={"records": [{"a": 1}, {"b": 2}]}, headers=HEADERS)
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["dead", "purge"])
    assert refused.exit_code != 0 and "--all" in refused.output
    done = runner.invoke(args=["dead", "purge", "--route", "profiles_skip", "--yes"])
    assert "purged 2 dead letter(s)" in done.output
    assert dead_ids(clean_redis) == []


def test_replaying_twice_sends_once(
    app: Flask, client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """Two replays of the same dead letter (two operators at once) put it back once."""
    braze.config.api_key = "not-the-relays-key"
    client.post("/db/events", json={"records": [{"external_id": "twice", "name": "a"}]}, headers=HEADERS)
    drain()
    braze.config.api_key = BRAZE_KEY
    (item,) = deadletters.iter_entries(clean_redis, WORKSPACES)
    settings = state.of(app).settings
    first = deadletters.put_back(clean_redis, item, settings.delivery)
    second = deadletters.put_back(clean_redis, item, settings.delivery)
    assert (first, second) == ("default:track", None)
    drain()
    assert [event["name"] for event in braze.state.profile("twice")["events"]] == ["a"]


def test_send_test_goes_through_the_delivery_path(
    app: Flask, drain: Callable[..., None], braze: Simulator
) -> None:
    """`send-test ROUTE` queues a sample record like the edge does; the worker delivers it."""
    runner = app.test_cli_runner()
    result = runner.invoke(args=["send-test", "events", "--field", "plan=gold"])
    assert result.exit_code == 0, result.output
    assert "on lane default:track as request cli-" in result.output
    drain()
    (event,) = braze.state.profile("braze-relay-test-user")["events"]
    assert (event["name"], event["properties"]) == ("braze_relay_test", {"plan": "gold"})


def test_send_test_refuses_a_delete_route_without_yes(app: Flask) -> None:
    """A delete route needs --yes; an unknown route is named with the ones that exist."""
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["send-test", "deletes"])
    assert refused.exit_code != 0 and "--yes" in refused.output
    unknown = runner.invoke(args=["send-test", "nope"])
    assert unknown.exit_code != 0 and "routes: events" in unknown.output
