"""What the OpenAPI document only describes (receiver/openapi/document.py assembles it): the answers'
schemas, the error texts, the security schemes, td-js-sdk's query parameters, CORS and transform notes.

Nothing here validates a request: the edge's own schemas (receiver/records/schemas.py) do that.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from receiver.records.fields import (
    MAX_NUMBER_TEXT,
    MAX_STRING,
    BrazeString,
    LooseFloat,
    LooseInteger,
    Time,
    UserAlias,
)
from relay.signing import SHOPIFY_SIGNATURE

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
    403: "An export to a route whose key is public (`allowed_origins`): such a route takes none.",
    413: (
        "Body, record count or row count over the limit, or one request alone over a budget of its route"
        " (`errors.route`, `errors.budget`, `errors.limit`): the records its transform makes, its queued"
        " records or bytes, its records a minute."
    ),
    415: "Content-Type is not JSON.",
    422: (
        "Records failed validation; `errors.records` is keyed by record index, then field. Nothing stored."
        " On a route with a transform it is keyed by input index: `transform` holds jq's message, or"
        " `emitted` the errors of the input's records by their index among them."
    ),
    429: (
        "The route holds its most records or bytes waiting for delivery, or took its records of this"
        " minute (`errors.route`, `errors.budget`, `errors.limit`): nothing stored; retry after"
        " `Retry-After` seconds."
    ),
    503: "Redis unavailable: nothing of the request was stored. Retry later.",
}
INGEST_ERRORS = (400, 401, 404, 405, 409, 413, 415, 422, 429, 503)
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
    """Configuration loaded and Redis taking writes."""

    status = fields.String(
        required=True,
        validate=validate.OneOf(["ready", "degraded"]),
        metadata={"description": "degraded: a workspace's own Redis is down (its routes answer 503)."},
    )
    routes = fields.Integer(required=True, metadata={"description": "How many routes are configured."})
    sandbox = fields.Boolean(required=True, metadata={"description": "Deliveries go to the simulator."})
    warnings = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"description": "What an operator should act on before it stops the relay (redis_memory)."},
    )
    redis_down = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"description": "Each Redis that takes no writes now (by its variable's name), and why."},
    )


def relay_fields(self: Any, field: Any, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """What the relay's own fields accept: numbers as strings, times in two forms, aliases as text."""
    if isinstance(field, UserAlias):
        alias = [{"$ref": "#/components/schemas/UserAlias"}, {"type": "string", "description": "as JSON"}]
        return {"anyOf": [*alias, {"type": "null"}] if field.allow_none else alias}
    extra: dict[str, Any] = {}
    if isinstance(field, BrazeString):
        types, extra = ["string", "number"], {"minLength": 1, "maxLength": MAX_STRING}
    elif isinstance(field, LooseInteger):
        types, extra = ["integer", "string"], {"maxLength": MAX_NUMBER_TEXT}
    elif isinstance(field, LooseFloat):
        types, extra = ["number", "string"], {"maxLength": MAX_NUMBER_TEXT}
    elif isinstance(field, Time):
        types = ["string", "number"]
        extra = {
            "description": "ISO-8601, or UNIX seconds (a number or numeric string); not milliseconds.",
            "maxLength": MAX_NUMBER_TEXT,
        }
    else:
        return {}
    return {"type": [*types, "null"] if field.allow_none else types, **extra}


def ref(name: str, kind: str = "schemas") -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def error_answer(code: int) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": ERRORS[code], "content": json_content(ref("Error"))}
    if code == 405:
        answer["headers"] = {"Allow": {"schema": {"type": "string"}, "description": "The allowed methods."}}
    return answer


def described_answer(description: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": content}


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
        "name": SHOPIFY_SIGNATURE,
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
