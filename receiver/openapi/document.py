"""The OpenAPI 3.1 description of the edge, generated from its marshmallow schemas; served at /openapi.json.

Record bodies come from `receiver.records.schemas` (one component per mode), the TD envelopes from
`IngestSchema`, `IngestEventsSchema` (td-js-sdk's form) and `ExportSchema`, and the answers from the
small schemas below, which only describe.
With settings, the configured route names, databases and tables become path parameter enums. The
document names variables and schemes, never a key or secret; it is built once per app.
"""

from __future__ import annotations

import json
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response
from marshmallow import Schema

from receiver import state
from receiver.body import JSON_TYPES
from receiver.metrics_access import guarded
from receiver.openapi.parts import (
    CORS,
    DESCRIPTION,
    ERRORS,
    INGEST_ERRORS,
    RECORD_NOTES,
    SDK_QUERY,
    SECURITY_SCHEMES,
    SIGNED,
    TD_AUTH,
    TRANSFORM_INPUT,
    VERSION,
    CountsSchema,
    ErrorSchema,
    HealthSchema,
    PostbackAnswerSchema,
    ReadySchema,
    RejectedSchema,
    UserAliasSchema,
    WebhookAnswerSchema,
    described_answer,
    error_answer,
    json_content,
    ref,
    relay_fields,
)
from receiver.records.schemas import SCHEMAS, ExportSchema, IngestEventsSchema, IngestSchema
from relay.config import Limits, Settings
from relay.modes import MODES, Kind
from relay.routes import NAME, ROUTE_NAME, Route
from relay.signing import SignatureScheme

bp = Blueprint("openapi", __name__)

PATH_PARAMS = {
    "database": (str(NAME.regex.pattern), "The `database` of a route."),
    "table": (str(NAME.regex.pattern), "The `table` of a route; with the database it names one route."),
    "route": (str(ROUTE_NAME.regex.pattern), "The name of a route: `[routes.NAME]` in the routes file."),
}


def _path_params(settings: Settings | None) -> dict[str, dict[str, Any]]:
    """database, table and route; with settings, each an enum of what the routes file configures."""
    values: dict[str, list[str]] = {}
    if settings:
        tabled = [route for route in settings.routes.values() if route.database and route.table]
        values = {
            "database": sorted({route.database or "" for route in tabled}),
            "table": sorted({route.table or "" for route in tabled}),
            "route": sorted(settings.routes),
        }
    params = {}
    for name, (pattern, description) in PATH_PARAMS.items():
        schema: dict[str, Any] = {"type": "string", "pattern": pattern}
        if settings:
            schema["enum"] = values[name]
        params[name] = {
            "name": name,
            "in": "path",
            "required": True,
            "description": description,
            "schema": schema,
        }
    return params


def _add_components(spec: APISpec, settings: Settings | None) -> None:
    """Record schemas per mode, envelopes, answers, error responses and security schemes."""
    spec.components.schema("UserAlias", schema=UserAliasSchema)
    kinds = {route.kind for route in settings.routes.values()} if settings else set(Kind)
    names: dict[Kind, str] = {}
    for mode in MODES:
        if mode.kind in kinds:
            names[mode.kind] = mode.openapi_name
            record_class = SCHEMAS[mode.kind]
            summary = (record_class.__doc__ or "").strip().splitlines()[0]
            # A route of the mode, only so that its record schema can be built to be described.
            schema = record_class(Route("doc", mode.mode, track_record_type=mode.track_record_type))
            spec.components.schema(mode.openapi_name, {"description": summary + RECORD_NOTES}, schema=schema)
    described: tuple[tuple[str, type[Schema]], ...] = (
        ("IngestEnvelope", IngestSchema),
        ("IngestEventsEnvelope", IngestEventsSchema),
        ("ExportTable", ExportSchema),
        ("Rejected", RejectedSchema),
        ("Error", ErrorSchema),
        ("PostbackAnswer", PostbackAnswerSchema),
        ("Counts", CountsSchema),
        ("WebhookAnswer", WebhookAnswerSchema),
        ("Health", HealthSchema),
        ("Ready", ReadySchema),
    )
    for name, schema_class in described:
        doc = (schema_class.__doc__ or "").strip()
        spec.components.schema(name, {"description": doc}, schema=schema_class)

    _add_bodies(spec, settings, names)
    for code in ERRORS:
        spec.components.response(str(code), error_answer(code))
    for scheme_name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(scheme_name, scheme)


def _add_bodies(spec: APISpec, settings: Settings | None, names: dict[Kind, str]) -> None:
    """The request bodies: one record (any mode's, or a transformed route's input), and the envelopes."""
    # No field tells the modes apart (several accept almost any object), so the route named by
    # the path decides: `anyOf` here (a `oneOf` would refuse every record that fits two modes),
    # and which schema each configured route uses is in x-record-schema-by-route.
    record: dict[str, Any] = {
        "description": "One record; the route named by the path decides which schema applies.",
        "anyOf": [ref(name) for name in names.values()],
    }
    transformed = {
        n: r.transform.label for n, r in sorted((settings.routes if settings else {}).items()) if r.transform
    }
    if transformed:  # such a route takes its sender's documents: its transform makes the records
        spec.components.schema("TransformInput", TRANSFORM_INPUT)
        record["anyOf"].append(ref("TransformInput"))
        record["x-transform-by-route"] = transformed
    if settings:
        record["x-record-schema-by-route"] = {
            n: "TransformInput" if r.transform else names[r.kind] for n, r in sorted(settings.routes.items())
        }
    limits = settings.limits if settings else Limits()
    records = {"type": "array", "items": ref("Record"), "minItems": 1}
    bodies = {
        "Record": record,
        # One of the two forms, never both keys (the relay refuses a body with both: 400).
        "IngestBody": {
            "oneOf": [
                {
                    "allOf": [
                        ref("IngestEnvelope"),
                        {"properties": {"records": {**records, "maxItems": limits.ingest_records}}},
                    ],
                    "not": {"required": ["events"]},
                },
                {
                    "allOf": [
                        ref("IngestEventsEnvelope"),
                        {"properties": {"events": {**records, "maxItems": limits.ingest_records}}},
                    ],
                    "not": {"required": ["records"]},
                },
            ]
        },
        "ExportBody": {
            "description": "Each row is zipped with column_names into one record.",
            "allOf": [
                ref("ExportTable"),
                {
                    "properties": {
                        "column_names": {"uniqueItems": True},
                        "data": {"type": "array", "items": {"type": "array"}, "maxItems": limits.export_rows},
                    }
                },
            ],
        },
        "WebhookBody": {"anyOf": [ref("Record"), {**records, "maxItems": limits.webhook_records}]},
    }
    for name, body in bodies.items():
        spec.components.schema(name, body)


def _ingest(
    op_id: str,
    summary: str,
    *,
    security: list[Any],
    body: str,
    answer: str,
    code: int = 200,
    also: tuple[int, ...] = (),
) -> dict[str, Any]:
    """An operation that takes records: its credentials, body, success answer and every error it may give
    (INGEST_ERRORS, and `also` those of this operation alone)."""
    types = (*JSON_TYPES, "text/plain", "application/octet-stream") if body == "ExportBody" else JSON_TYPES
    success = {
        "description": "Stored: every accepted record is in Redis.",
        "headers": {"X-Request-Id": {"schema": {"type": "string"}, "description": "This request's id."}},
        "content": json_content(ref(answer)),
    }
    errors = {str(err): ref(str(err), "responses") for err in sorted((*INGEST_ERRORS, *also))}
    return {
        "tags": ["ingest"],
        "operationId": op_id,
        "summary": summary,
        "security": security,
        "requestBody": {"required": True, "content": {t: {"schema": ref(body)} for t in types}},
        "responses": {str(code): success, **errors},
    }


def _get(op_id: str, tag: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    """A GET with no credential."""
    return {
        "get": {
            "tags": [tag],
            "operationId": op_id,
            "summary": summary,
            "security": [],
            "responses": responses,
        }
    }


def signatures_by_route(settings: Settings) -> dict[str, dict[str, Any]]:
    """How each route's webhook senders sign (scheme and where; never a secret)."""
    found: dict[str, dict[str, Any]] = {}
    for name, route in sorted(settings.routes.items()):
        signing = route.signing
        how: dict[str, Any] = {"scheme": signing.scheme.value}
        if signing.scheme is SignatureScheme.SHOPIFY:
            how["header"] = signing.header
        elif signing.scheme.configurable:
            how |= {
                "header": signing.header,
                "algorithm": signing.algorithm.value,
                "encoding": signing.encoding.value,
                "prefix": signing.prefix,
            }
        found[name] = how
    return found


def _ingest_paths(settings: Settings | None) -> dict[str, dict[str, Any]]:
    """The four ingest endpoints: TD postback, TD ingestion (td-js-sdk), TD export, webhooks."""
    anyone: list[Any] = [{}] if settings and settings.insecure_no_auth else []  # RELAY_INSECURE_NO_AUTH
    td_auth = [*TD_AUTH, *anyone]
    return {
        "/postback/v3/event/{database}/{table}": {
            "post": _ingest(
                "postback",
                "TD Postback API: one JSON object is one record; answers `{}` as TD does.",
                security=[*td_auth, {"TDWriteKeyQuery": []}],
                body="Record",
                answer="PostbackAnswer",
            )
            | CORS
        },
        "/{database}/{table}": {
            "post": _ingest(
                "ingest",
                'TD Data Ingestion API: {"records": [...]}, or {"events": [...]} as td-js-sdk sends it.',
                security=td_auth,
                body="IngestBody",
                answer="Counts",
            )
            | CORS
            | {"parameters": SDK_QUERY}
        },
        "/export/{route}": {
            method: _ingest(
                f"export{method.capitalize()}",
                "TD query-result export to a web server: column_names, column_types, data rows.",
                security=[*td_auth, {"ExportBasic": []}],
                body="ExportBody",
                answer="Counts",
                also=(403,),
            )
            for method in ("put", "post")
        },
        "/webhooks/{route}": {
            "post": _ingest(
                "webhook",
                "Any caller: one JSON object, or an array of them.",
                security=[{"Bearer": []}, SIGNED, {"ShopifyHmac": []}, {"HmacSignature": []}, *anyone],
                body="WebhookBody",
                answer="WebhookAnswer",
                code=202,
            )
            | ({"x-signature-by-route": signatures_by_route(settings)} if settings else {})
        },
    }


KEYED = (
    "With RELAY_METRICS_KEYS set: `Authorization: Bearer <a key of it>`, or an admin key by HTTP Basic"
    " (401 otherwise)."
)


def _service_paths() -> dict[str, dict[str, Any]]:
    """Health, readiness, metrics and this document."""
    return {
        "/healthz": _get(
            "healthz", "health", "Liveness.", {"200": described_answer("Alive.", json_content(ref("Health")))}
        ),
        "/readyz": _get(
            "readyz",
            "health",
            "Readiness: configuration loaded and Redis taking writes, held by RELAY_REDIS_MIN_REPLICAS "
            "replicas when set (200 may name a warning).",
            {"200": described_answer("Ready.", json_content(ref("Ready"))), "503": ref("503", "responses")},
        ),
        "/metrics": _get(
            "metrics",
            "health",
            f"Prometheus metrics (counted in Redis, for all processes). {KEYED}",
            {
                "200": described_answer(
                    "Prometheus text format.", {"text/plain": {"schema": {"type": "string"}}}
                )
            },
        ),
        "/openapi.json": _get(
            "openapi",
            "docs",
            f"This document. {KEYED}",
            {"200": described_answer("OpenAPI 3.1.", json_content({"type": "object"}))},
        ),
    }


def _add_paths(spec: APISpec, settings: Settings | None) -> None:
    """Every path, with its path parameters (the configured routes' names as enums, with settings)."""
    params = _path_params(settings)
    for path, operations in (_ingest_paths(settings) | _service_paths()).items():
        names = [part.strip("{}") for part in path.split("/") if part.startswith("{")]
        spec.path(path, parameters=[params[name] for name in names], operations=operations)


def build_spec(settings: Settings | None = None) -> dict[str, Any]:
    """The OpenAPI document; with settings, the configured routes are enums of the path parameters."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="braze-relay",
        version=VERSION,
        openapi_version="3.1.0",
        plugins=[plugin],
        info={"description": DESCRIPTION},
        tags=[
            {"name": "ingest", "description": "Records in: validated, stored in Redis, delivered to Braze."},
            {"name": "health", "description": "For load balancers and monitoring."},
            {"name": "docs", "description": "This description."},
        ],
    )
    assert plugin.converter is not None  # set when the spec registers the plugin
    plugin.converter.add_attribute_function(relay_fields)
    _add_components(spec, settings)
    _add_paths(spec, settings)
    doc: dict[str, Any] = spec.to_dict()
    return doc


def document() -> bytes:
    """The app's document as JSON bytes, built on first use and kept in the app's state."""
    edge = state.current()
    if edge.openapi is None:
        edge.openapi = json.dumps(build_spec(edge.settings), ensure_ascii=False).encode()
    return edge.openapi


def register(app: Flask) -> None:
    """Serve the document at /openapi.json."""
    app.register_blueprint(bp)


@bp.get("/openapi.json")
@guarded
def openapi_json() -> Response:
    """The OpenAPI document: no secret, only names of routes and schemes (receiver/metrics_access.py)."""
    return Response(document(), mimetype="application/json")
