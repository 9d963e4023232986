"""Routes with a jq transform: an input makes zero or more records, then schemas, lanes and Braze as ever."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from braze_sim.server import Simulator
from relay import deadletters, store
from relay.config import load_settings
from relay.errors import ConfigError
from relay.lanes import Lane
from tests.helpers import BRAZE_KEY, KEYS, REDIS_URL, ROUTES, WORKSPACES, WRITE_KEY, create_app_for
from tests.processes import ROOT, free_port, procfile_command, refused_start

T1 = 1_764_000_000  # 2025-11-24T16:00:00Z
T1_ISO = "2025-11-24T16:00:00.000Z"
BEARER = {"Authorization": f"Bearer {WRITE_KEY}"}
TD1 = {"Authorization": f"TD1 {WRITE_KEY}"}

ORDER_PROGRAM = """
  {external_id: .user, name: "order_placed", time: .at, properties: {order: .order}},
  {external_id: .user, track_record_type: "purchases", product_id: .sku, price: .price, currency: "EUR",
   time: .at},
  {external_id: .user, track_record_type: "user_profile_attributes", last_order: .order, time: .at}
"""
STRICT_PROGRAM = "{external_id: .user, name: (.event | ascii_downcase)}"
TRANSFORM_ROUTES = f"""
[routes.orders]
database = "db"
table = "orders"
mode = "user_track"
track_record_type = "custom_events"
transform = '''{ORDER_PROGRAM}'''

[routes.only_paid]
database = "db"
table = "only_paid"
mode = "user_track"
track_record_type = "custom_events"
transform = 'select(.status == "paid") | {{external_id: .user, name: "paid"}}'

[routes.strict]
database = "db"
table = "strict"
mode = "user_track"
track_record_type = "custom_events"
transform = '{STRICT_PROGRAM}'

[routes.lenient]
database = "db"
table = "lenient"
mode = "user_track"
track_record_type = "custom_events"
skip_on_invalid_records = true
transform = '{STRICT_PROGRAM}'

[routes.counter]
mode = "user_track"
track_record_type = "user_profile_attributes"
transform = 'range(3) as $i | {{external_id: .user, step: $i}}'

[routes.tight_transform]
mode = "user_track"
track_record_type = "custom_events"
transform = 'range(.n) | {{external_id: "t", name: "tick"}}'

[routes.runaway]
mode = "user_track"
track_record_type = "custom_events"
transform = 'range(.n) | {{external_id: "r", name: "tick"}}'
transform_records_per_kb = 1000000  # its budget per KB out of the way: the bounds below are what is tested

[routes.sees]
mode = "user_track"
track_record_type = "custom_events"
transform = '''{{external_id: .u, name: ($args.prefix + $route.name),
  properties: {{env: (env | length), ENV: ($ENV | length)}}}}'''
transform_args = {{ prefix = "via_" }}

[routes.consent_shaped]
mode = "user_subscription"
transform = '''{{external_id: .u, subscription_group_id: "g-1", subscription_state: .s,
  track_record_type: "purchases"}}'''
"""
ORDER = {"user": "buyer-1", "order": "o-17", "sku": "sku-9", "price": "12.50", "at": T1}


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    """The usual routes, and routes that reshape their inputs with jq."""
    path = tmp_path / "relay.toml"
    path.write_text(ROUTES + TRANSFORM_ROUTES)
    return path


def post(client: FlaskClient, shape: str, route: str, inputs: list[dict[str, Any]]) -> Any:
    """Send the inputs as a caller of `shape` does (one request; a postback carries one input)."""
    if shape == "postback":
        (body,) = inputs
        return client.post(f"/postback/v3/event/db/{route}", json=body, headers=TD1)
    if shape == "ingest":
        return client.post(f"/db/{route}", json={"records": inputs}, headers=TD1)
    if shape == "export":
        names = list(dict.fromkeys(key for item in inputs for key in item))
        rows = [[item.get(name) for name in names] for item in inputs]
        return client.put(f"/export/{route}", json={"column_names": names, "data": rows}, headers=TD1)
    return client.post(f"/webhooks/{route}", json=inputs, headers=BEARER)


def waiting(client: redis.Redis) -> int:
    """Records waiting in any lane."""
    return sum(int(client.llen(Lane(raw.decode()).list_key)) for raw in client.smembers(KEYS.lanes))


# --- one input, several records -----------------------------------------------------------------


@pytest.mark.parametrize("shape", ["postback", "ingest", "export", "webhook"])
def test_one_input_makes_an_event_a_purchase_and_an_attribute_update(
    shape: str, client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """Three records from one payload, each of its own kind (track_record_type), land field by field."""
    response = post(client, shape, "orders", [ORDER])
    assert response.status_code in (200, 202), response.get_json()
    if shape != "postback":
        assert response.get_json()["accepted"] == 3
        assert response.get_json()["filtered"] == 0
    drain()
    profile = braze.state.profile("buyer-1")
    (event,) = profile["events"]
    assert (event["name"], event["time"], event["properties"]) == ("order_placed", T1_ISO, {"order": "o-17"})
    (purchase,) = profile["purchases"]
    assert purchase["product_id"] == "sku-9"
    assert purchase["price"] == 12.5
    assert purchase["currency"] == "EUR"
    assert purchase["quantity"] == 1
    assert purchase["time"] == T1_ISO
    assert profile["attributes"] == {"last_order": "o-17"}


def test_records_of_one_input_keep_their_order(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """Three updates of one attribute from one input: the last one made is the one Braze keeps."""
    response = client.post("/webhooks/counter", json={"user": "counting"}, headers=BEARER)
    assert response.status_code == 202 and response.get_json()["accepted"] == 3
    drain()
    assert braze.state.profile("counting")["attributes"] == {"step": 2}


# --- filtered inputs ------------------------------------------------------------------------------


def test_an_input_that_makes_no_record_is_filtered_and_counted(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """Zero records is not an error: the answer and /metrics count it as filtered; the rest is delivered."""
    inputs = [
        {"user": "p1", "status": "paid"},
        {"user": "p2", "status": "pending"},
        {"user": "p3", "status": "paid"},
    ]
    answer = post(client, "ingest", "only_paid", inputs).get_json()
    assert (answer["accepted"], answer["filtered"], answer["rejected"]) == (2, 1, [])
    postback = post(client, "postback", "only_paid", [{"user": "p4", "status": "refunded"}])
    assert postback.status_code == 200 and postback.get_json() == {"filtered": 1}
    drain()
    assert [event["name"] for event in braze.state.profile("p1")["events"]] == ["paid"]
    assert braze.state.profile("p2") is None and braze.state.profile("p4") is None
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'relay_inputs_filtered_total{route="only_paid"} 2.0' in metrics
    assert 'relay_records_accepted_total{route="only_paid"} 2.0' in metrics


# --- failures ---------------------------------------------------------------------------------------

BATCH = [{"user": "s1", "event": "Signup"}, {"user": "s2", "event": 42}, {"user": "s3", "event": "Login"}]


def test_a_jq_error_on_one_input_refuses_the_batch_naming_route_input_and_message(
    client: FlaskClient, clean_redis: redis.Redis
) -> None:
    """jq failing on input 1 makes it invalid: 422 naming the route, the input's index and jq's message."""
    response = post(client, "ingest", "strict", BATCH)
    assert response.status_code == 422
    answer = response.get_json()
    assert "route 'strict'" in answer["message"] and "nothing was stored" in answer["message"]
    assert set(answer["errors"]["records"]) == {"1"}
    (message,) = answer["errors"]["records"]["1"]["transform"]
    assert message.startswith("route 'strict', input 1: transform failed: ")
    assert "explode input must be a string" in message  # jq's own words (ascii_downcase explodes)
    assert waiting(clean_redis) == 0
    assert list(deadletters.iter_entries(clean_redis, WORKSPACES)) == []


def test_a_jq_error_with_skip_on_invalid_records_dead_letters_that_input(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """With skip_on_invalid_records the failed input is named in the answer and kept; the others land."""
    answer = post(client, "ingest", "lenient", BATCH).get_json()
    assert answer["accepted"] == 2
    (rejected,) = answer["rejected"]
    assert rejected["index"] == 1 and "must be a string" in rejected["errors"]["transform"][0]
    (dead,) = deadletters.iter_entries(clean_redis, WORKSPACES)
    assert (dead["route"], dead["reason"]) == ("lenient", "invalid")
    assert dead["envelope"]["rec"]["raw"] == BATCH[1]
    assert "must be a string" in dead["message"]
    drain()
    assert [event["name"] for event in braze.state.profile("s1")["events"]] == ["signup"]
    assert [event["name"] for event in braze.state.profile("s3")["events"]] == ["login"]
    assert braze.state.profile("s2") is None


def test_an_export_row_of_wrong_length_on_a_lenient_route_is_rejected_untransformed(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator, clean_redis: redis.Redis
) -> None:
    """skip_on_invalid_records: a row that is not one value per column is named and dead-lettered as
    it came (never run through jq); the other rows are transformed and land."""
    body = {"column_names": ["user", "event"], "data": [["s1", "Signup"], ["s2"], ["s3", "Login"]]}
    answer = client.put("/export/lenient", json=body, headers=TD1).get_json()
    assert answer["accepted"] == 2
    assert answer["rejected"] == [
        {"index": 1, "errors": {"_row": ["A row must be a list of 2 values, one per column."]}}
    ]
    (dead,) = deadletters.iter_entries(clean_redis, WORKSPACES)
    assert (dead["route"], dead["reason"]) == ("lenient", "invalid")
    assert dead["envelope"]["rec"] == {"raw": ["s2"], "time": dead["envelope"]["rec"]["time"]}
    drain()
    assert [event["name"] for event in braze.state.profile("s1")["events"]] == ["signup"]
    assert [event["name"] for event in braze.state.profile("s3")["events"]] == ["login"]


def test_a_dead_lettered_input_is_replayed_through_the_fixed_transform(
    client: FlaskClient,
    drain: Callable[..., None],
    braze: Simulator,
    clean_redis: redis.Redis,
    routes_file: Path,
) -> None:
    """Replay runs the input through the route's current transform: failing it stays; fixed, it lands."""
    post(client, "ingest", "lenient", BATCH)
    first = client.application.test_cli_runner().invoke(args=["dead", "replay", "--route", "lenient"])
    assert "replayed 0 record(s); 1 still invalid" in first.output
    assert "the dead-lettered input: transform failed: explode input must be a string" in first.output
    fixed = "{external_id: .user, name: (.event | tostring | ascii_downcase)}"
    routes_file.write_text(
        routes_file.read_text().replace(f"transform = '{STRICT_PROGRAM}'", f"transform = '{fixed}'")
    )
    fixed_app = create_app_for(load_settings())
    second = fixed_app.test_cli_runner().invoke(args=["dead", "replay", "--route", "lenient"])
    assert "replayed 1 record(s); 0 still invalid" in second.output, second.output
    drain()
    assert [event["name"] for event in braze.state.profile("s2")["events"]] == ["42"]
    assert list(deadletters.iter_entries(clean_redis, WORKSPACES)) == []


def test_an_invalid_record_is_named_by_its_input_and_its_place_among_that_inputs_records(
    client: FlaskClient, clean_redis: redis.Redis
) -> None:
    """A record made that fails Braze's rules: 422 at errors.records[input].emitted[record].field."""
    good, bad = ORDER, {**ORDER, "user": "buyer-2", "price": "twelve"}
    answer = post(client, "webhook", "orders", [good, bad]).get_json()
    assert answer["code"] == 422
    assert answer["errors"]["records"] == {"1": {"emitted": {"1": {"price": ["Not a valid number."]}}}}
    assert waiting(clean_redis) == 0


def test_a_record_type_that_is_not_one_is_refused(client: FlaskClient) -> None:
    """track_record_type must be one of the three; outside a user_track route a record may not carry it."""
    route = "consent_shaped"
    answer = client.post(f"/webhooks/{route}", json={"u": "c1", "s": "subscribed"}, headers=BEARER).get_json()
    assert answer["code"] == 422
    errors = answer["errors"]["records"]["0"]["emitted"]["0"]
    assert "Only a user_track route's records may carry it" in errors["track_record_type"][0]


def test_a_runaway_program_fails_its_input_not_the_process(client: FlaskClient) -> None:
    """An input that would make more than 1,000 records is invalid with that reason."""
    answer = client.post("/webhooks/runaway", json={"n": 5000}, headers=BEARER).get_json()
    assert answer["code"] == 422
    assert "emitted more than 1000 records" in answer["errors"]["records"]["0"]["transform"][0]
    small = client.post("/webhooks/runaway", json={"n": 3}, headers=BEARER).get_json()
    assert small["accepted"] == 3


def test_a_transform_sees_its_args_and_route_but_not_the_environment(
    client: FlaskClient, drain: Callable[..., None], braze: Simulator
) -> None:
    """$args and $route are given; env and $ENV are empty, so no program can copy a secret into a record."""
    assert os.environ["BRAZE_API_KEY"] == BRAZE_KEY  # the relay's environment holds secrets ...
    assert client.post("/webhooks/sees", json={"u": "curious"}, headers=BEARER).status_code == 202
    drain()
    (event,) = braze.state.profile("curious")["events"]
    assert event["name"] == "via_sees"
    assert event["properties"] == {"env": 0, "ENV": 0}  # ... and the program sees none of it


def test_a_repeated_request_stores_its_records_once(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """Idempotency works as for any route: the same Idempotency-Key and body store the three records once."""
    headers = {**BEARER, "Idempotency-Key": "order-o-17"}
    first = client.post("/webhooks/orders", json=ORDER, headers=headers)
    again = client.post("/webhooks/orders", json=ORDER, headers=headers)
    assert first.get_json() == again.get_json()
    assert waiting(clean_redis) == 3


# --- the routes file ----------------------------------------------------------------------------------


def routes_with(extra: str) -> str:
    """A routes file of one route with these extra keys."""
    return f'[routes.shaped]\nmode = "user_track"\ntrack_record_type = "custom_events"\n{extra}\n'


BAD_FILES = {
    "does not compile": (
        "transform = '{external_id: .u, name: }'",
        ("'shaped'", "'transform'", "syntax error"),
    ),
    "unknown preset": ('preset = "mixpanel"', ("'shaped'", "'preset'")),
    "both": ("transform = '.'\npreset = \"segment\"", ("'shaped'", "not both")),
    "args without a program": ("transform_args = { a = 1 }", ("'shaped'", "transform_args")),
    "preset for another mode": ('preset = "td_js_consent"', ("'shaped'", "user_subscription")),
    "an import": ("transform = 'import \"x\" as x; .'", ("'shaped'", "'transform'")),
}


@pytest.mark.parametrize(("extra", "named"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_transform_stops_the_boot_with_one_line_naming_the_route(
    extra: str, named: tuple[str, ...], relay_env: dict[str, str], routes_file: Path
) -> None:
    """load_settings refuses a program that does not compile (or bad transform keys), naming the route."""
    routes_file.write_text(routes_with(extra))
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert "\n" not in message
    for part in named:
        assert part in message


def test_gunicorn_exits_2_naming_the_route_whose_transform_does_not_compile(tmp_path: Path) -> None:
    """The Procfile's web command, with a routes file whose program does not compile: exit 2, one line."""
    routes = tmp_path / "relay.toml"
    routes.write_text(routes_with("transform = '{external_id: .u, name: }'"))
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("RELAY_", "BRAZE_", "GUNICORN_", "WEB_CONCURRENCY", "PORT"))
    }
    environ.update(
        {
            "RELAY_CONFIG": str(routes),
            "RELAY_WRITE_KEYS": WRITE_KEY,
            "REDIS_URL": REDIS_URL,
            "PORT": str(free_port()),
            "HOST": "127.0.0.1",
            "WEB_CONCURRENCY": "1",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
    )
    web = refused_start(["bash", "-c", f"exec {procfile_command('web')}"], environ, "configuration error")
    worker = refused_start(["bash", "-c", f"exec {procfile_command('worker')}"], environ)
    for line in (web, worker):
        assert "route 'shaped'" in line and "key 'transform'" in line and "does not compile" in line


def test_check_shows_each_routes_transform(client: FlaskClient) -> None:
    """`check` names the transform or preset of each route that has one."""
    output = client.application.test_cli_runner().invoke(args=["check"]).output
    orders = next(line for line in output.splitlines() if line.strip().startswith("orders:"))
    assert orders.endswith("transform=jq transform")
    events = next(line for line in output.splitlines() if line.strip().startswith("events:"))
    assert "transform=" not in events


def test_answer_shapes_are_json_safe(client: FlaskClient) -> None:
    """The answer of a transformed route keeps the usual keys and adds `filtered`."""
    answer = post(client, "ingest", "orders", [ORDER]).get_json()
    assert list(answer) == ["accepted", "filtered", "rejected", "id"]
    json.dumps(answer)


def test_the_openapi_document_describes_transformed_routes(client: FlaskClient) -> None:
    """/openapi.json stays valid OpenAPI 3.1 and says which routes take their sender's documents, and how."""
    from openapi_spec_validator import validate

    doc = client.get("/openapi.json").get_json()
    validate(doc)
    record = doc["components"]["schemas"]["Record"]
    assert record["x-record-schema-by-route"]["orders"] == "TransformInput"
    assert record["x-record-schema-by-route"]["events"] == "EventRecord"
    assert set(record["x-transform-by-route"].values()) == {"jq transform"}
    assert {"orders", "only_paid", "strict"} <= set(record["x-transform-by-route"])
    assert "transform" in doc["components"]["schemas"]["TransformInput"]["description"]
    counts = doc["components"]["schemas"]["Counts"]["properties"]
    assert "filtered" in counts
    assert "emitted" in doc["components"]["schemas"]["Rejected"]["properties"]


def test_the_example_routes_file_has_a_route_per_preset(
    relay_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """relay.example.toml (the sandbox's) loads, with one route per preset and the browser routes' own key."""
    from relay.transforms import PRESETS

    monkeypatch.setenv("RELAY_CONFIG", str(ROOT / "relay.example.toml"))
    monkeypatch.setenv("SDK_WRITE_KEYS", "sandbox-sdk-key")
    monkeypatch.setenv("PRIVACY_WRITE_KEYS", "sandbox-privacy-key")  # deletions and consent: their own
    routes = load_settings().routes
    presets = {route.transform.preset for route in routes.values() if route.transform}
    assert presets == set(PRESETS)
    events, consent = routes["sdk_events"], routes["sdk_consent"]
    assert (events.database, events.table, events.transform.preset) == ("web", "events", "td_js_sdk")
    assert (consent.database, consent.table, consent.transform.preset) == (
        "web",
        "td_cm_consent",
        "td_js_consent",
    )
    assert events.write_keys_env == consent.write_keys_env == "SDK_WRITE_KEYS"


def test_a_request_may_make_at_most_200000_records(client: FlaskClient, clean_redis: redis.Redis) -> None:
    """201 inputs of 1,000 records each: 413 naming the route and the bound, and nothing is stored."""
    answer = client.post("/webhooks/runaway", json=[{"n": 1000}] * 201, headers=BEARER)
    assert answer.status_code == 413, answer.get_json()
    assert answer.get_json()["message"].startswith(
        "Route 'runaway': its transform made more than 200000 records"
    )
    stored = [
        key for pattern in ("q:*", "dead*") for key in clean_redis.scan_iter(f"{store.PREFIX}:{pattern}")
    ]
    assert stored == []


def test_a_program_is_stopped_at_the_records_left_to_its_request() -> None:
    """Transform.run with `most`: the program is stopped at its first value past it (not at the 1,000 of
    an input, and without making the rest)."""
    from relay.transforms import OverOutputs, compile_transform

    endless = compile_transform(source="range(.n)", preset=None, args={}, route={})
    assert endless.run({"n": 5}, most=5) == [0, 1, 2, 3, 4]
    with pytest.raises(OverOutputs):
        endless.run({"n": 10**9}, most=5)


def test_records_a_transform_makes_are_held_to_its_budget_per_kb(
    client: FlaskClient, clean_redis: redis.Redis
) -> None:
    """A small body may make 100 records plus 32 per KB: one more is 413 naming the route, and the
    inputs after the one that passed the budget are not transformed (the failing input at the end
    would be a 422 if they were); nothing is stored."""
    inputs: list[dict[str, Any]] = [{"n": 60}, {"n": 60}, {"n": 60}, {"no": "n"}]
    body = json.dumps(inputs).encode()
    allowed = 100 + len(body) * 32 // 1024  # 101: the second input passes it
    answer = client.post(
        "/webhooks/tight_transform", data=body, headers={**BEARER, "Content-Type": "application/json"}
    )
    assert answer.status_code == 413, answer.get_json()
    refused = answer.get_json()
    assert refused["errors"] == {"route": "tight_transform", "budget": "transform_records", "limit": allowed}
    assert refused["message"].startswith(
        f"Route 'tight_transform': its transform made more than {allowed} records"
    )
    assert list(clean_redis.scan_iter(KEYS.lane_list("*"))) == []
    assert not clean_redis.exists(KEYS.dead)
    fits = client.post("/webhooks/tight_transform", json=inputs[:1], headers=BEARER)
    assert fits.status_code == 202 and fits.get_json()["accepted"] == 60
