"""The OpenAPI 3.1 description of the edge, generated from its marshmallow schemas; served at /openapi.json.

Record bodies come from `receiver.schemas` (one component per mode), the TD envelopes from
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
from flask import Blueprint, Response
from marshmallow import RAISE, Schema, fields, validate

from receiver import state
from receiver.fields import MAX_STRING, BrazeString, LooseFloat, LooseInteger, Time, UserAlias
from receiver.schemas import SCHEMAS, ExportSchema, IngestEventsSchema, IngestSchema
from receiver.views import JSON_TYPES
from relay.config import Limits, Settings
from relay.modes import MODES, Kind
from relay.routes import NAME, ROUTE_NAME, Route

bp = Blueprint("openapi", __name__)

VERSION = "0.1.0"

RECORD_NOTES = (
    " Fields starting with `td_` are TD's own and are dropped; `td_record_time` stands in for a missing"
    " `time`. Identifier fields are one of external_id, braze_id, user_alias (or alias_name +"
    " alias_label), email, phone, as the mode allows; null means absent. Strings up to 255 characters."
)
ERRORS = {
    400: "Malformed JSON, or a body of the wrong shape.",
    401: "Missing or wrong credential.",
    404: "No route by that name, or for that database and table.",
    405: "Wrong method for this path; `Allow` names the right ones.",
    409: "Idempotency key (`webhook-id` or `Idempotency-Key`) already used with a different body.",
    413: "Body, record count or row count over the limit.",
    415: "Content-Type is not JSON.",
    422: (
        "Records failed validation; `errors.records` is keyed by record index, then field. Nothing stored."
        " On a route with a transform it is keyed by input index: `transform` holds jq's message, or"
        " `emitted` the errors of the input's records by their index among them."
    ),
    503: "Redis unavailable: nothing of the request was stored. Retry later.",
}
INGEST_ERRORS = (400, 401, 404, 405, 409, 413, 415, 422, 503)
DESCRIPTION = (
    "Receives Treasure Data postbacks, ingestion batches, query-result exports and webhooks, validates "
    "every record against its route's mode, and stores it in Redis for workers that deliver it to Braze. "
    "A 2xx answer means every accepted record is stored. Errors are `{code, status, message, errors}`."
)


class UserAliasSchema(Schema):
    """Braze's user alias."""

    class Meta:
        unknown = RAISE

    alias_name = fields.String(required=True, validate=validate.Length(1, MAX_STRING))
    alias_label = fields.String(required=True, validate=validate.Length(1, MAX_STRING))


class ErrorSchema(Schema):
    """The one shape of every error answer, 4xx and 5xx alike."""

    class Meta:
        unknown = RAISE

    code = fields.Integer(required=True, metadata={"description": "The HTTP status code."})
    status = fields.String(required=True, metadata={"description": "The status phrase, e.g. 'Not Found'."})
    message = fields.String(required=True, metadata={"description": "What went wrong, for a person."})
    errors = fields.Dict(required=True, metadata={"description": "Details, keyed by record index and field."})


class RejectedSchema(Schema):
    """A record that failed validation on a route with `skip_on_invalid_records = true`."""

    index = fields.Integer(
        required=True, metadata={"description": "Its index in the request (with a transform: its input's)."}
    )
    emitted = fields.Integer(
        metadata={"description": "With a transform: the record's index among those its input made."}
    )
    errors = fields.Dict(required=True, metadata={"description": "Its errors, keyed by field."})


class PostbackAnswerSchema(Schema):
    """`{}`, as TD answers; names the record when the route skips invalid records."""

    rejected = fields.List(fields.Nested(RejectedSchema))
    filtered = fields.Integer(metadata={"description": "1 when the route's transform made no record of it."})


class CountsSchema(Schema):
    """What a TD ingestion or export request stored."""

    accepted = fields.Integer(required=True, metadata={"description": "Records stored for delivery."})
    filtered = fields.Integer(
        metadata={"description": "On a route with a transform: inputs it made no record of (not errors)."}
    )
    rejected = fields.List(fields.Nested(RejectedSchema), required=True)
    id = fields.String(required=True, metadata={"description": "The request id, also in X-Request-Id."})


class WebhookAnswerSchema(CountsSchema):
    """What a webhook request stored."""


class HealthSchema(Schema):
    """The process answers."""

    status = fields.String(required=True, validate=validate.OneOf(["ok"]))


class ReadySchema(Schema):
    """Configuration loaded and Redis answering."""

    status = fields.String(required=True, validate=validate.OneOf(["ready"]))
    routes = fields.Integer(required=True, metadata={"description": "How many routes are configured."})
    sandbox = fields.Boolean(required=True, metadata={"description": "Deliveries go to the simulator."})


def relay_fields(self: Any, field: Any, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """What the relay's own fields accept: numbers as strings, times in two forms, aliases as text."""
    if isinstance(field, UserAlias):
        alias = [{"$ref": "#/components/schemas/UserAlias"}, {"type": "string", "description": "as JSON"}]
        return {"anyOf": [*alias, {"type": "null"}] if field.allow_none else alias}
    extra: dict[str, Any] = {}
    if isinstance(field, BrazeString):
        types, extra = ["string", "number"], {"minLength": 1, "maxLength": MAX_STRING}
    elif isinstance(field, LooseInteger):
        types = ["integer", "string"]
    elif isinstance(field, LooseFloat):
        types = ["number", "string"]
    elif isinstance(field, Time):
        types = ["string", "number"]
        extra = {"description": "ISO-8601, or UNIX seconds (a number or numeric string); not milliseconds."}
    else:
        return {}
    return {"type": [*types, "null"] if field.allow_none else types, **extra}


def _ref(name: str, kind: str = "schemas") -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error_response(code: int) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": ERRORS[code], "content": _json(_ref("Error"))}
    if code == 405:
        answer["headers"] = {"Allow": {"schema": {"type": "string"}, "description": "The allowed methods."}}
    return answer


def _answer(description: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": content}


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

    # No field tells the modes apart (several accept almost any object), so the route named by
    # the path decides: `anyOf` here (a `oneOf` would refuse every record that fits two modes),
    # and which schema each configured route uses is in x-record-schema-by-route.
    record: dict[str, Any] = {
        "description": "One record; the route named by the path decides which schema applies.",
        "anyOf": [_ref(name) for name in names.values()],
    }
    transformed = {
        n: r.transform.label for n, r in sorted((settings.routes if settings else {}).items()) if r.transform
    }
    if transformed:  # such a route takes its sender's documents: its transform makes the records
        spec.components.schema("TransformInput", TRANSFORM_INPUT)
        record["anyOf"].append(_ref("TransformInput"))
        record["x-transform-by-route"] = transformed
    if settings:
        record["x-record-schema-by-route"] = {
            n: "TransformInput" if r.transform else names[r.kind] for n, r in sorted(settings.routes.items())
        }
    limits = settings.limits if settings else Limits()
    records = {"type": "array", "items": _ref("Record"), "minItems": 1}
    bodies = {
        "Record": record,
        # One of the two forms, never both keys (the relay refuses a body with both: 400).
        "IngestBody": {
            "oneOf": [
                {
                    "allOf": [
                        _ref("IngestEnvelope"),
                        {"properties": {"records": {**records, "maxItems": limits.ingest_records}}},
                    ],
                    "not": {"required": ["events"]},
                },
                {
                    "allOf": [
                        _ref("IngestEventsEnvelope"),
                        {"properties": {"events": {**records, "maxItems": limits.ingest_records}}},
                    ],
                    "not": {"required": ["records"]},
                },
            ]
        },
        "ExportBody": {
            "description": "Each row is zipped with column_names into one record.",
            "allOf": [
                _ref("ExportTable"),
                {
                    "properties": {
                        "column_names": {"uniqueItems": True},
                        "data": {"type": "array", "items": {"type": "array"}, "maxItems": limits.export_rows},
                    }
                },
            ],
        },
        "WebhookBody": {"anyOf": [_ref("Record"), {**records, "maxItems": limits.webhook_records}]},
    }
    for name, body in bodies.items():
        spec.components.schema(name, body)
    for code in ERRORS:
        spec.components.response(str(code), _error_response(code))
    for scheme_name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(scheme_name, scheme)


TRANSFORM_INPUT: dict[str, Any] = {
    "type": "object",
    "description": (
        "A document as its sender posts it (a Segment call, a Shopify order, ...): the route's jq"
        " transform (its `transform`, or a `preset`) makes zero or more records of it, each then checked"
        " by the record schema of its kind (`track_record_type` may choose it in a user_track route)."
        " An input that makes no record is counted as `filtered`."
    ),
}
SIGNATURE = (
    "Standard Webhooks, with webhook-id and webhook-timestamp: `webhook-signature: v1,<base64 "
    "HMAC-SHA256 of '{id}.{timestamp}.{body}'>`, several space-separated; timestamp within ±5 minutes."
)
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "TDWriteKey": {"type": "apiKey", "in": "header", "name": "X-TD-Write-Key"},
    "TD1": {"type": "http", "scheme": "TD1", "description": "`Authorization: TD1 <write key>`."},
    "TDWriteKeyQuery": {"type": "apiKey", "in": "query", "name": "td_write_key"},
    "ExportBasic": {"type": "http", "scheme": "basic", "description": "Any user, the write key as password."},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "A write key."},
    **{
        header: {"type": "apiKey", "in": "header", "name": header, "description": SIGNATURE}
        for header in ("webhook-id", "webhook-timestamp", "webhook-signature")
    },
    "ShopifyHmac": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Shopify-Hmac-Sha256",
        "description": 'Routes with `signature = "shopify"`: base64 HMAC-SHA256 of the raw body.',
    },
    "HmacSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "(the route's signature_header)",
        "description": (
            'Routes with `signature = "hmac"` or `"td_signed"`: an HMAC of the raw body in the header'
            " the route names (x-signature-by-route gives each route's header, algorithm and encoding)."
        ),
    },
}
TD_AUTH: list[dict[str, list[str]]] = [{"TDWriteKey": []}, {"TD1": []}]
SIGNED: dict[str, list[str]] = {"webhook-id": [], "webhook-timestamp": [], "webhook-signature": []}


# td-js-sdk adds these to every request (lib/record.js); the relay takes them and reads neither.
SDK_QUERY: list[dict[str, Any]] = [
    {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": f"{what} Accepted and ignored: a record's time is its own `time` field.",
    }
    for name, what in (
        ("modified", "td-js-sdk: the send time in milliseconds."),
        ("time", "td-js-sdk: the record's `time`, when it has one."),
    )
]
CORS = {
    "description": "Routes with `allowed_origins` answer CORS preflights (OPTIONS) on this path for those"
    " exact origins, with credentials allowed, so web pages can post with td-js-sdk; other origins get"
    " no CORS headers."
}


def _ingest(
    op_id: str, summary: str, *, security: list[Any], body: str, answer: str, code: int = 200
) -> dict[str, Any]:
    """An operation that takes records: its credentials, body, success answer and every error it may give."""
    types = (*JSON_TYPES, "text/plain", "application/octet-stream") if body == "ExportBody" else JSON_TYPES
    success = {
        "description": "Stored: every accepted record is in Redis.",
        "headers": {"X-Request-Id": {"schema": {"type": "string"}, "description": "This request's id."}},
        "content": _json(_ref(answer)),
    }
    errors = {str(err): _ref(str(err), "responses") for err in INGEST_ERRORS}
    return {
        "tags": ["ingest"],
        "operationId": op_id,
        "summary": summary,
        "security": security,
        "requestBody": {"required": True, "content": {t: {"schema": _ref(body)} for t in types}},
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
        how: dict[str, Any] = {"scheme": route.signature}
        if route.signature == "shopify":
            how["header"] = "X-Shopify-Hmac-Sha256"
        elif route.signature in ("hmac", "td_signed"):
            how |= {
                "header": route.signature_header,
                "algorithm": route.signature_algorithm,
                "encoding": route.signature_encoding,
                "prefix": route.signature_prefix,
            }
        found[name] = how
    return found


def _add_paths(spec: APISpec, settings: Settings | None) -> None:
    params = _path_params(settings)
    anyone: list[Any] = [{}] if settings and settings.insecure_no_auth else []  # RELAY_INSECURE_NO_AUTH
    td_auth = [*TD_AUTH, *anyone]
    paths: dict[str, dict[str, Any]] = {
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
        "/healthz": _get("healthz", "health", "Liveness.", {"200": _answer("Alive.", _json(_ref("Health")))}),
        "/readyz": _get(
            "readyz",
            "health",
            "Readiness: configuration loaded and Redis answering.",
            {"200": _answer("Ready.", _json(_ref("Ready"))), "503": _ref("503", "responses")},
        ),
        "/metrics": _get(
            "metrics",
            "health",
            "Prometheus metrics (counted in Redis, for all processes).",
            {"200": _answer("Prometheus text format.", {"text/plain": {"schema": {"type": "string"}}})},
        ),
        "/openapi.json": _get(
            "openapi", "docs", "This document.", {"200": _answer("OpenAPI 3.1.", _json({"type": "object"}))}
        ),
    }
    for path, operations in paths.items():
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


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI document (no credential: it holds no secret, only names of routes and schemes)."""
    return Response(document(), mimetype="application/json")
