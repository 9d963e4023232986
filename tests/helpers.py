"""Posting records the way each caller does: TD postback, TD ingestion, TD export, webhook."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

from standardwebhooks.webhooks import Webhook

from relay.envelope import Envelope
from tests.conftest import ROUTES, WEBHOOK_SECRET, WRITE_KEY

SHAPES = ("postback", "ingest", "export", "webhook")


def route_table(route: str) -> str:
    """The table the routes file gives a route."""
    section = ROUTES.split(f"[routes.{route}]")[1]
    return section.split('table = "')[1].split('"')[0]


def signed_headers(
    body: bytes, *, secret: str = WEBHOOK_SECRET, msg_id: str | None = None, timestamp: float | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for a body, signed with the spec's own library."""
    from datetime import UTC, datetime

    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(timestamp if timestamp is not None else time.time(), UTC)
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


def requests_for(shape: str, route: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The HTTP requests (method, path, headers, body bytes) a caller of this shape sends."""
    table = route_table(route)
    json_type = {"Content-Type": "application/json"}
    if shape == "postback":
        return [
            {
                "method": "POST",
                "path": f"/postback/v3/event/db/{table}",
                "headers": {**json_type, "X-TD-Write-Key": WRITE_KEY},
                "body": json.dumps(record).encode(),
            }
            for record in records
        ]
    if shape == "ingest":
        return [
            {
                "method": "POST",
                "path": f"/db/{table}",
                "headers": {
                    "Content-Type": "application/vnd.treasuredata.v1+json",
                    "Authorization": f"TD1 {WRITE_KEY}",
                },
                "body": json.dumps({"records": records}).encode(),
            }
        ]
    if shape == "export":
        names = list(dict.fromkeys(key for record in records for key in record))
        rows = [[record.get(name) for name in names] for record in records]
        basic = base64.b64encode(f"td:{WRITE_KEY}".encode()).decode()
        body = {"column_names": names, "column_types": ["string"] * len(names), "data": rows}
        return [
            {
                "method": "PUT",
                "path": f"/export/{route}",
                "headers": {**json_type, "Authorization": f"Basic {basic}"},
                "body": json.dumps(body).encode(),
            }
        ]
    if shape == "webhook":
        body = json.dumps(records).encode()
        return [
            {"method": "POST", "path": f"/webhooks/{route}", "headers": signed_headers(body), "body": body}
        ]
    raise ValueError(shape)


def envelopes(
    mode: str, records: list[dict[str, Any]], *, track_record_type: str | None = None, **route: Any
) -> list[Envelope]:
    """Records loaded by the route's real schema and wrapped as the edge queues them (no Redis)."""
    from receiver.enqueue import Batch
    from receiver.schemas import schema_for
    from relay.routes import Route

    target = Route("unit", mode, track_record_type=track_record_type, **route)
    schema = schema_for(target)
    batch = Batch(route=target, request_id="req")
    return [batch.envelope(index, schema.load(record)) for index, record in enumerate(records)]
