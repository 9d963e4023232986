"""`flask --app receiver transform try`: what a transform makes of a file, its errors and Braze bodies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from flask import Flask

from tests.helpers import ROUTES, SAMPLES
from tests.test_transformed import BATCH, TRANSFORM_ROUTES


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    """The usual routes and the transform test routes."""
    path = tmp_path / "relay.toml"
    path.write_text(ROUTES + TRANSFORM_ROUTES)
    return path


def run(app: Flask, *args: str) -> tuple[int, str]:
    """Invoke `transform try ...`; (exit code, output)."""
    result = app.test_cli_runner().invoke(args=["transform", "try", *args])
    return result.exit_code, result.output


def test_a_routes_transform_on_a_file_prints_records_and_braze_bodies(
    app: Flask, tmp_path: Path, clean_redis: redis.Redis
) -> None:
    """Each input's records with their kind, the /users/track body they become, and nothing stored."""
    path = tmp_path / "order.json"
    path.write_text(
        json.dumps({"user": "buyer-1", "order": "o-17", "sku": "sku-9", "price": "12.50", "at": 1764000000})
    )
    code, output = run(app, "orders", str(path))
    assert code == 0, output
    assert "input 0: 3 record(s)" in output
    assert "record 0 (events): valid" in output
    assert "record 1 (purchases): valid" in output
    assert "record 2 (attributes): valid" in output
    body = json.loads(output[output.index("POST /users/track") + len("POST /users/track") :])
    assert body["events"][0]["name"] == "order_placed"
    assert body["purchases"][0] == {
        "external_id": "buyer-1",
        "time": "2025-11-24T16:00:00.000Z",
        "product_id": "sku-9",
        "currency": "EUR",
        "price": 12.5,
        "quantity": 1,
    }
    assert body["attributes"] == [{"external_id": "buyer-1", "last_order": "o-17"}]
    assert clean_redis.dbsize() == 0


def test_failures_are_shown_per_input_and_the_exit_code_says_so(app: Flask, tmp_path: Path) -> None:
    """A jq error names the input; an invalid record shows its errors; the command exits 1."""
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps({"records": BATCH}))
    code, output = run(app, "strict", str(batch))
    assert code == 1
    assert 'read as a TD ingestion body ("records"): 3 input(s)' in output
    assert (
        "input 1: FAILED: route 'strict', input 1: transform failed: explode input must be a string" in output
    )
    assert output.count("(events): valid") == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"user": "u", "order": "o", "sku": "s", "price": "twelve", "at": 1764000000}))
    code, output = run(app, "orders", str(bad))
    assert code == 1
    assert 'record 1 (purchases): INVALID {"price": ["Not a valid number."]}' in output


def test_a_preset_alone_with_its_args_as_json(app: Flask) -> None:
    """--preset with --arg: td_js_consent on the SDK's consent record, as one JSON report."""
    code, output = run(
        app,
        "--preset",
        "td_js_consent",
        "--arg",
        'purposes={"marketing_email": "email_subscribe"}',
        "--json",
        str(SAMPLES / "td_js_sdk" / "consent_given.json"),
    )
    assert code == 0, output
    report = json.loads(output)
    assert report["transform"] == "preset td_js_consent"
    (record,) = report["inputs"][0]["records"]
    assert (record["kind"], record["valid"]) == ("consent", True)
    (request,) = report["requests"]
    assert request["endpoint"] == "/users/track"
    (attributes,) = request["body"]["attributes"]
    assert attributes["email_subscribe"] == "subscribed"
    assert attributes["user_alias"] == {
        "alias_name": "a2d3c1f0-3c77-4c5b-9d8e-6f0a1b2c3d4e",
        "alias_label": "td_client_id",
    }


def test_every_preset_runs_on_its_samples(app: Flask) -> None:
    """Each shipped sample is valid for its preset (the sender's documented payloads all load)."""
    for preset, folder in [("segment", "segment"), ("shopify_orders", "shopify"), ("appsflyer", "appsflyer")]:
        for path in sorted((SAMPLES / folder).glob("*.json")):
            code, output = run(app, "--preset", preset, str(path))
            assert code == 0, (path, output)
    code, output = run(
        app,
        "--preset",
        "td_js_sdk",
        "--table",
        "events",
        str(SAMPLES / "td_js_sdk" / "track_event_signed_mode.json"),
    )
    assert code == 0 and "(events): valid" in output


def test_a_filtered_input_and_an_untransformed_route(app: Flask, tmp_path: Path) -> None:
    """An input that makes no record says so; a route without a transform takes each input as its record."""
    path = tmp_path / "pending.json"
    path.write_text(json.dumps([{"user": "p", "status": "pending"}]))
    assert "input 0: filtered (the transform made no record)" in run(app, "only_paid", str(path))[1]
    record = tmp_path / "event.json"
    record.write_text(json.dumps({"external_id": "u", "name": "signup"}))
    code, output = run(app, "events", str(record))
    assert code == 0 and "route events (no transform)" in output and "(events): valid" in output


def test_usage_errors(app: Flask, tmp_path: Path) -> None:
    """ROUTE FILE or --preset NAME FILE; an unknown route is named."""
    path = tmp_path / "x.json"
    path.write_text("{}")
    assert run(app, str(path))[0] == 2
    code, output = run(app, "nope", str(path))
    assert code == 2 and "no route 'nope'" in output


def test_a_file_that_cannot_be_read_is_one_line_and_status_2(app: Flask, tmp_path: Path) -> None:
    """A FILE that is not there, or is a directory: one line naming it and why, status 2."""
    code, output = run(app, "orders", str(tmp_path / "missing.json"))
    assert code == 2 and output.strip().count("\n") == 0, output
    assert "missing.json" in output and "No such file" in output
    code, output = run(app, "orders", str(tmp_path))
    assert code == 2 and output.strip().count("\n") == 0, output
    assert str(tmp_path) in output


def test_a_body_the_edge_refuses_whole_is_refused_as_the_edge_says(app: Flask, tmp_path: Path) -> None:
    """An export row that does not match column_names, or "records" beside "events": the edge's own
    answer, not records made of a truncated row (exit status 1)."""
    export = tmp_path / "export.json"
    export.write_text(json.dumps({"column_names": ["user", "order"], "data": [["u1", "o1"], ["u2"]]}))
    code, output = run(app, "orders", str(export))
    assert code == 1
    assert "the edge would answer 422: 1 row(s) do not match column_names; nothing was stored." in output
    assert '"1": {"_row": ["A row must be a list of 2 values, one per column."]}' in output
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"records": [{"user": "u1"}], "events": [{"user": "u2"}]}))
    code, output = run(app, "orders", str(both))
    assert code == 1 and 'the edge would answer 400: The body must hold "records" or "events"' in output


def test_a_lenient_routes_export_row_of_wrong_length_fails_alone(app: Flask, tmp_path: Path) -> None:
    """On a skip_on_invalid_records route a row that does not match column_names fails as the edge
    rejects it (its index, its error); the other rows make their records and Braze bodies (exit 1)."""
    export = tmp_path / "export.json"
    export.write_text(json.dumps({"column_names": ["user", "event"], "data": [["s1", "Signup"], ["s2"]]}))
    code, output = run(app, "lenient", str(export))
    assert code == 1, output
    assert "input 0: 1 record(s)" in output and "record 0 (events): valid" in output
    assert 'input 1: FAILED: {"_row": ["A row must be a list of 2 values, one per column."]}' in output
    body = json.loads(output[output.index("POST /users/track") + len("POST /users/track") :].split("\n1 ")[0])
    assert [event["external_id"] for event in body["events"]] == ["s1"]
