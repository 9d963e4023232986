"""The OpenAPI document at /openapi.json: valid, complete, true to the routes file and answers, no secret."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from receiver import state
from receiver.openapi.document import build_spec
from relay.config import Settings, load_settings
from tests.helpers import (
    BRAZE_KEY,
    OTHER_WRITE_KEY,
    ROUTES,
    WEBHOOK_SECRET,
    WRITE_KEY,
    create_app_for,
    signed_headers,
)

T1 = 1_764_000_000
SECRETS = (WRITE_KEY, OTHER_WRITE_KEY, WEBHOOK_SECRET, WEBHOOK_SECRET.removeprefix("whsec_"), BRAZE_KEY)
INGEST_METHODS = {"get", "put", "post", "delete", "patch"}
# Valid records of each mode, in the looser forms callers send (numbers as strings, aliases as text).
VALID_RECORDS = {
    "EventRecord": {"external_id": 42, "name": "signup", "time": "2025-11-24T16:00:00Z", "plan": "pro"},
    "PurchaseRecord": {
        "braze_id": "b1",
        "product_id": "sku",
        "currency": "usd",
        "price": "9.99",
        "quantity": "2",
    },
    "AttributesRecord": {"user_alias": '{"alias_name": "a", "alias_label": "l"}', "first_name": "Ann"},
    "AliasRecord": {"alias_name": "a", "alias_label": "l", "external_id": None, "td_record_time": T1},
    "IdentifyRecord": {"external_id": "u1", "user_alias": {"alias_name": "a", "alias_label": "l"}},
    "DeleteRecord": {"email": "a@example.com", "time": T1},
    "SubscriptionRecord": {
        "phone": "+15550100",
        "subscription_group_id": "g",
        "subscription_state": "subscribed",
    },
    "MergeRecord": {"merge": '{"email": "a@example.com"}', "keep_external_id": 7},
    "ExternalIdRenameRecord": {"current_external_id": "u1", "new_external_id": "crm-1"},
    "ExternalIdRemoveRecord": {"external_id": "u1", "td_record_time": T1},
    "AliasUpdateRecord": {"alias_label": "l", "old_alias_name": "a", "new_alias_name": "b"},
    "CatalogItemRecord": {"id": 42, "Name": "Shoe", "Price": 9.5, "_deleted": "false", "email": "x"},
}


SHOP_ROUTE = """
[routes.shop]
database = "shop"
table = "orders"
mode = "user_track"
track_record_type = "purchases"
write_keys_env = "SHOP_KEYS"
webhook_secrets_env = "SHOP_SECRETS"
braze_endpoint = "http://127.0.0.1:9"
braze_api_key_env = "SHOP_BRAZE_KEY"
"""


def doc_of(client: FlaskClient) -> dict[str, Any]:
    """The document the app serves."""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document: dict[str, Any] = response.get_json()
    return document


def validator(document: dict[str, Any], ref: str) -> Draft202012Validator:
    """A JSON Schema validator for one schema of the document, its $refs resolved inside it."""
    return Draft202012Validator({"$ref": ref, "components": document["components"]})


def openapi_path(rule: str) -> str:
    """A Werkzeug rule as an OpenAPI path: <table> becomes {table}; <name> is the contract's {route}."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule).replace("{name}", "{route}")


def test_served_document_is_valid_openapi_31(client: FlaskClient) -> None:
    """GET /openapi.json needs no credential and is a valid OpenAPI 3.1 document."""
    document = doc_of(client)
    validate(document)
    assert document["openapi"] == "3.1.0"


def test_document_without_settings_is_valid_and_has_no_enums() -> None:
    """Built without an app, the document is valid and leaves the path parameters open (pattern only)."""
    document = build_spec()
    validate(document)
    for path in document["paths"].values():
        for param in path.get("parameters", []):
            assert "enum" not in param["schema"]
            assert param["schema"]["pattern"]


def test_document_names_every_endpoint_and_only_those(app: Flask, client: FlaskClient) -> None:
    """Every method and path of the ingest and openapi blueprints is in the document, and nothing else."""
    document = doc_of(client)
    served = {
        (openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint.split(".")[0] in ("ingest", "openapi")
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    described = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in INGEST_METHODS
    }
    assert described == served
    assert {
        ("/postback/v3/event/{database}/{table}", "post"),
        ("/{database}/{table}", "post"),
        ("/export/{route}", "put"),
        ("/export/{route}", "post"),
        ("/webhooks/{route}", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    } <= described


def test_route_enums_match_the_routes_file(client: FlaskClient) -> None:
    """{route}, {database} and {table} list exactly the routes file's names, databases and tables."""
    routes = tomllib.loads(ROUTES)["routes"]
    expected = {
        "route": sorted(routes),
        "database": sorted({route["database"] for route in routes.values()}),
        "table": sorted({route["table"] for route in routes.values()}),
    }
    document = doc_of(client)
    seen = set()
    for item in document["paths"].values():
        for param in item.get("parameters", []):
            assert param["schema"]["enum"] == expected[param["name"]], param["name"]
            seen.add(param["name"])
    assert seen == set(expected)
    by_route = document["components"]["schemas"]["Record"]["x-record-schema-by-route"]
    assert set(by_route) == set(routes)
    assert by_route["events"] == "EventRecord"
    assert by_route["consent"] == "SubscriptionRecord"


def test_each_ingest_operation_names_its_credentials_and_errors(client: FlaskClient) -> None:
    """Credentials per docs/design.md, and every error status answered with the one error shape."""
    document = doc_of(client)
    paths = document["paths"]
    schemes = {
        frozenset(requirement)
        for requirement in paths["/postback/v3/event/{database}/{table}"]["post"]["security"]
    }
    assert schemes == {frozenset({"TDWriteKey"}), frozenset({"TD1"}), frozenset({"TDWriteKeyQuery"})}
    assert {"ExportBasic": []} in paths["/export/{route}"]["put"]["security"]
    assert {"TDWriteKeyQuery": []} not in paths["/{database}/{table}"]["post"]["security"]
    webhook = paths["/webhooks/{route}"]["post"]["security"]
    assert {"webhook-id": [], "webhook-timestamp": [], "webhook-signature": []} in webhook
    assert {"Bearer": []} in webhook
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert paths[path]["get"]["security"] == []
    for path, method in (("/postback/v3/event/{database}/{table}", "post"), ("/webhooks/{route}", "post")):
        responses = paths[path][method]["responses"]
        for code in ("400", "401", "404", "405", "409", "413", "415", "422", "503"):
            assert responses[code] == {"$ref": f"#/components/responses/{code}"}
    for code, response in document["components"]["responses"].items():
        assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, (
            code
        )
    assert set(document["components"]["schemas"]["Error"]["required"]) == {
        "code",
        "status",
        "message",
        "errors",
    }


def test_insecure_mode_says_no_credential_is_needed(settings: Settings) -> None:
    """With RELAY_INSECURE_NO_AUTH the ingest operations list the empty requirement."""
    document = build_spec(dataclasses.replace(settings, insecure_no_auth=True))
    validate(document)
    assert {} in document["paths"]["/webhooks/{route}"]["post"]["security"]
    assert {} not in build_spec(settings)["paths"]["/webhooks/{route}"]["post"]["security"]


def test_document_holds_no_secret(client: FlaskClient) -> None:
    """No write key, webhook secret or Braze key appears in the served document."""
    text = client.get("/openapi.json").get_data(as_text=True)
    for secret in SECRETS:
        assert secret not in text


def test_route_own_credentials_stay_out_of_the_document(
    relay_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route with its own write keys, webhook secrets and Braze workspace: only variable names show."""
    own = {
        "SHOP_KEYS": "shop-write-key-0c1d",
        "SHOP_SECRETS": "whsec_" + base64.b64encode(b"shop-webhook-secret").decode(),
        "SHOP_BRAZE_KEY": "shop-braze-key-77e0",
    }
    routes = tmp_path / "own.toml"
    routes.write_text(ROUTES + SHOP_ROUTE)
    monkeypatch.setenv("RELAY_CONFIG", str(routes))
    for name, value in own.items():
        monkeypatch.setenv(name, value)
    app = create_app_for(load_settings())
    text = app.test_client().get("/openapi.json").get_data(as_text=True)
    assert "shop" in json.loads(text)["paths"]["/export/{route}"]["parameters"][0]["schema"]["enum"]
    for secret in (*own.values(), own["SHOP_SECRETS"].removeprefix("whsec_"), *SECRETS):
        assert secret not in text


def test_document_is_built_once_per_app(app: Flask, client: FlaskClient) -> None:
    """The second request gets the very bytes the first one built."""
    first = client.get("/openapi.json").get_data()
    cached = state.of(app).openapi
    second = client.get("/openapi.json").get_data()
    assert first == second
    assert cached is not None and state.of(app).openapi is cached


@pytest.mark.parametrize(("component", "record"), VALID_RECORDS.items(), ids=VALID_RECORDS.keys())
def test_valid_records_fit_their_schema_and_the_record_union(
    client: FlaskClient, component: str, record: dict[str, Any]
) -> None:
    """The document is no stricter than the relay: records it accepts validate against their schema."""
    document = doc_of(client)
    validator(document, f"#/components/schemas/{component}").validate(record)
    validator(document, "#/components/schemas/Record").validate(record)


def test_records_the_relay_accepts_fit_the_request_bodies(client: FlaskClient, clean_redis: Any) -> None:
    """A body the relay stores validates against the operation's request body schema."""
    document = doc_of(client)
    record = VALID_RECORDS["EventRecord"]
    key = {"X-TD-Write-Key": WRITE_KEY}
    cases = [
        ("/postback/v3/event/db/events", "Record", record, key),
        ("/db/events", "IngestBody", {"records": [record]}, key),
        (
            "/export/events",
            "ExportBody",
            {"column_names": list(record), "data": [list(record.values())]},
            key,
        ),
        ("/webhooks/events", "WebhookBody", [record, record], None),
    ]
    for path, component, body, headers in cases:
        raw = json.dumps(body).encode()
        response = client.post(
            path, data=raw, headers=headers or signed_headers(raw), content_type="application/json"
        )
        assert response.status_code in (200, 202), response.get_json()
        validator(document, f"#/components/schemas/{component}").validate(body)


def test_answers_match_their_documented_schemas(client: FlaskClient, clean_redis: Any) -> None:
    """Success and error answers of the live app validate against the document's schemas for them."""
    document = doc_of(client)
    event = json.dumps(VALID_RECORDS["EventRecord"]).encode()
    key = {"X-TD-Write-Key": WRITE_KEY, "Content-Type": "application/json"}
    cases = [
        (client.post("/postback/v3/event/db/events", data=event, headers=key), 200, "PostbackAnswer"),
        (client.post("/db/events", data=b'{"records": [' + event + b"]}", headers=key), 200, "Counts"),
        (client.post("/webhooks/events", data=event, headers=signed_headers(event)), 202, "WebhookAnswer"),
        (client.get("/healthz"), 200, "Health"),
        (client.get("/readyz"), 200, "Ready"),
        (client.post("/db/events", data=b"{", headers=key), 400, "Error"),
        (client.post("/db/events", data=event, content_type="application/json"), 401, "Error"),
        (client.post("/db/nope", data=event, headers=key), 404, "Error"),
        (client.get("/webhooks/events"), 405, "Error"),
        (client.post("/db/events", data=event, headers={**key, "Content-Type": "text/csv"}), 415, "Error"),
        (client.post("/db/events", data=b'{"records": [{"name": "x"}]}', headers=key), 422, "Error"),
    ]
    for response, status, component in cases:
        assert response.status_code == status, response.get_data(as_text=True)
        validator(document, f"#/components/schemas/{component}").validate(response.get_json())


def test_each_webhook_routes_signature_scheme_is_described(
    relay_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """x-signature-by-route names each route's scheme and header (never a secret); the schemes are listed."""
    routes = tmp_path / "signed.toml"
    routes.write_text(
        ROUTES
        + '\n[routes.orders]\nmode = "user_track"\ntrack_record_type = "purchases"\nsignature = "shopify"\n'
        + 'webhook_secrets_env = "ORDER_SECRETS"\n'
        + '\n[routes.partner]\nmode = "user_track"\ntrack_record_type = "custom_events"\nsignature = "hmac"\n'
        + 'signature_header = "X-Partner-Signature"\nsignature_encoding = "base64"\n'
        + 'webhook_secrets_env = "PARTNER_SECRETS"\n'
    )
    monkeypatch.setenv("RELAY_CONFIG", str(routes))
    monkeypatch.setenv("ORDER_SECRETS", "shopify-secret-9a1f")
    monkeypatch.setenv("PARTNER_SECRETS", "partner-secret-77c2")
    text = create_app_for(load_settings()).test_client().get("/openapi.json").get_data(as_text=True)
    document = json.loads(text)
    validate(document)
    webhook = document["paths"]["/webhooks/{route}"]["post"]
    by_route = webhook["x-signature-by-route"]
    assert by_route["events"] == {"scheme": "standard"}
    assert by_route["orders"] == {"scheme": "shopify", "header": "X-Shopify-Hmac-Sha256"}
    assert (
        by_route["partner"]["header"] == "X-Partner-Signature" and by_route["partner"]["encoding"] == "base64"
    )
    assert {"ShopifyHmac": []} in webhook["security"] and {"HmacSignature": []} in webhook["security"]
    assert "shopify-secret-9a1f" not in text and "partner-secret-77c2" not in text
