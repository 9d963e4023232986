"""The ingest endpoints of docs/design.md: TD postback, TD ingestion, TD export, webhooks, health."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Blueprint, Flask, Response, g, jsonify, request
from marshmallow import Schema, ValidationError
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from receiver import auth, idempotency, signatures, state
from receiver.body import check_opening, parse_json, route_body
from receiver.enqueue import Batch, store_batch
from receiver.errors import ApiError, as_dict, error_response
from receiver.headers import Lowered, lowered
from receiver.metrics_access import guarded
from receiver.records import transformed
from receiver.records.schemas import ExportSchema, IngestEventsSchema, IngestSchema
from receiver.redis_check import Unfit
from receiver.request_ids import request_id
from receiver.state import settings, workspace_client
from relay import metrics, redis_health, replicas
from relay.budgets import Budget, OverBudget
from relay.config import Durability
from relay.dedup import DedupError
from relay.metrics import Rejection
from relay.routes import Route

bp = Blueprint("ingest", __name__)
log = logging.getLogger(__name__)

UNFIT = "Storage refused: the relay's Redis may evict records (see the web log); nothing was stored."
EXPORT_SHAPE = "The body must hold column_names and data (TD's export shape)."
TD_EXPORT_ROWS = 100_000  # TD's web export sends at most this many rows and drops the rest
EXPORT_OPENINGS = (b'{"column_names"', b'{"column_types"', b'{"data"')  # TD writes column_names first
INGEST_SHAPE = 'The body must be {"records": [ ... ]} or {"events": [ ... ]} with at least one record.'


def load_envelope(schema: Schema, body: Any, message: str) -> dict[str, Any]:
    """The request body's outer shape (records list, export table), or 400 with `message`."""
    if not isinstance(body, dict):
        raise ApiError(400, message)
    try:
        loaded: dict[str, Any] = schema.load(body)
    except ValidationError as exc:
        raise ApiError(400, message, as_dict(exc.messages)) from None
    return loaded


def ingest_records(body: Any) -> list[Any]:
    """The records of an ingestion body: {"records": [...]}, or {"events": [...]} as td-js-sdk sends."""
    if isinstance(body, dict) and "events" in body:
        if "records" in body:
            raise ApiError(400, 'The body must hold "records" or "events", not both.')
        events: list[Any] = load_envelope(IngestEventsSchema(), body, INGEST_SHAPE)["events"]
        return events
    records: list[Any] = load_envelope(IngestSchema(), body, INGEST_SHAPE)["records"]
    return records


@dataclass(frozen=True)
class ExportTable:
    """A TD export's column names and rows, and its misfits: the rows that are not one value per
    column, by index, with the errors the answer gives them."""

    names: list[str]
    rows: list[Any]
    misfits: dict[int, dict[str, Any]]

    def inputs(self) -> Iterator[Any]:
        """Each row zipped with the column names; a misfit as it came (it is rejected, not loaded)."""
        for index, row in enumerate(self.rows):
            yield row if index in self.misfits else dict(zip(self.names, row, strict=True))


def export_table(body: Any, max_rows: int, *, lenient: bool) -> ExportTable:
    """A TD export's table: 400 for another shape, 413 over `max_rows`; a row that is not one value per
    column is a misfit on a `lenient` route (skip_on_invalid_records), else 422 naming each (nothing of
    the export is stored)."""
    table = load_envelope(ExportSchema(), body, EXPORT_SHAPE)
    if len(table["data"]) > max_rows:
        raise ApiError(413, f"At most {max_rows} rows per export.", {"limit": max_rows})
    names, rows = table["column_names"], table["data"]
    misfits = {
        index: {"_row": [f"A row must be a list of {len(names)} values, one per column."]}
        for index, row in enumerate(rows)
        if not isinstance(row, list) or len(row) != len(names)
    }
    if misfits and not lenient:
        raise ApiError(
            422,
            f"{len(misfits)} row(s) do not match column_names; nothing was stored.",
            {"records": {str(index): errors for index, errors in misfits.items()}},
        )
    return ExportTable(names, rows, misfits)


def route_by_name(name: str) -> Route:
    """The route named in the path, or 404."""
    route = settings().routes.get(name)
    if route is None:
        raise ApiError(404, f"No route named {name!r}.")
    return route


def route_by_table(database: str, table: str) -> Route:
    """The route whose database and table match the path, or 404."""
    route = state.current().tables.get((database, table))
    if route is None:
        raise ApiError(404, f"No route for database {database!r} and table {table!r}.")
    return route


def authenticate(
    route: Route,
    *,
    td_style: bool,
    allow_query: bool = False,
    allow_basic: bool = False,
    signed_body: Callable[[], bytes] | None = None,
) -> auth.Authenticated:
    """Check the caller's credential for this route; raise 401 (fail closed).

    A route that names a credential of its own takes only its own, of every kind; a route that
    names none takes the global keys and secrets. A key is checked before any of the body is read;
    `signed_body` reads it (within its limit) only when a webhook's signature has to be checked.
    """
    conf = settings()
    if conf.insecure_no_auth:
        return auth.Authenticated(auth.By.OPEN)
    keys, secrets_ = route.credentials(conf.write_keys, conf.webhook_secrets)
    try:
        if td_style:
            presented = auth.td_write_key(
                headers(),
                request.args.to_dict() if allow_query else {},
                allow_query=allow_query,
                allow_basic=allow_basic,
            )
            auth.verify_write_key(presented, keys=keys)
            return auth.Authenticated(auth.By.KEY)
        token = auth.bearer_token(headers())
        if token is not None:
            auth.verify_write_key(token, keys=keys)
            return auth.Authenticated(auth.By.KEY)
        if signed_body is None:
            raise auth.AuthError("Missing credential.")
        body = signed_body()
        try:
            verified = signatures.verify(
                body, signing=route.signing, headers=headers(), secrets=secrets_, now=datetime.now(UTC)
            )
        except signatures.SignatureError as exc:
            raise auth.AuthError(str(exc)) from None
        return auth.Authenticated(auth.By.SIGNATURE, verified, secrets_)
    except auth.AuthError as exc:
        raise ApiError(401, str(exc)) from None


def load_records(
    route: Route,
    raw_records: Iterable[Any],
    total: int,
    misfits: Mapping[int, dict[str, Any]] | None = None,
    *,
    body_bytes: int,
) -> Batch:
    """Validate every record; 422 naming index and field unless the route skips invalid records.

    `misfits` are records refused by their envelope (an export row that does not fit the columns), by
    index with their errors: rejected as invalid without being loaded. `body_bytes`, the size of the
    request's body, bounds the records a transform may make of it (relay/budgets.py).
    """
    misfits = misfits or {}
    loader = state.current().loaders[route.name]
    shards = settings().delivery.track_shards
    if route.transform is not None:  # each input through the route's jq program first
        made = transformed.TransformedBatch(route=route, request_id=request_id(), shards=shards)
        problems = transformed.load_inputs(loader, raw_records, made, misfits, body_bytes)
        if problems and not route.skip_on_invalid_records:
            count_refused(route, made.numbered, len(made.invalid))
            raise ApiError(422, transformed.refusal(route, problems, total), {"records": problems})
        return made
    batch = Batch(route=route, request_id=request_id(), shards=shards)
    errors: dict[str, Any] = {}
    dedup = route.dedup
    for index, raw in enumerate(raw_records):
        messages = misfits.get(index)
        if messages is None:
            (loaded,) = loader.load(raw).records  # an untransformed input is one record
            messages = loaded.errors
            if messages is None:
                try:
                    batch.add(index, loaded.record, digest=dedup.name(raw) if dedup else None)
                    continue
                except DedupError as exc:
                    messages = {"dedup_key": [str(exc)]}
        errors[str(index)] = messages
        batch.invalid.append((index, raw, messages))
    if errors and not route.skip_on_invalid_records:
        count = len(errors)
        count_refused(route, total, count)
        raise ApiError(
            422,
            f"{count} of {total} record(s) failed validation; nothing was stored.",
            {"records": errors},
        )
    return batch


def count_refused(route: Route, received: int, invalid: int) -> None:
    """Count a request refused with 422 (best effort: the answer does not wait on it)."""
    client = workspace_client(route.workspace)
    try:
        with client.pipeline(transaction=False) as pipe:
            workspace, name = route.workspace, route.name
            metrics.REJECTED.incr(pipe, workspace, invalid, route=name, reason=Rejection.INVALID)
            # Valid records of a refused request are refused with it.
            refused = received - invalid
            metrics.REJECTED.incr(pipe, workspace, refused, route=name, reason=Rejection.REQUEST_REFUSED)
            pipe.execute()
    except redis.RedisError:
        log.warning("metrics not counted: redis unavailable", extra={"route": route.name})


def headers() -> Lowered:
    """The request's headers, names in lower case (made once per request; the checks take mappings)."""
    if "relay_headers" not in g:
        g.relay_headers = lowered(request.headers)
    found: Lowered = g.relay_headers
    return found


def accept(
    batch: Batch, authed: auth.Authenticated, answer: dict[str, Any], status: int = 200
) -> tuple[Response, int]:
    """Store the batch in Redis and answer; only after the store may the caller hear success.

    A request with an idempotency key that was seen before stores nothing and gets the first answer.
    A request that accepted no record leaves no identity behind (its repeat is handled again, and
    accepts nothing again): what a key holder makes the relay remember is bounded by what it stores.
    """
    edge = state.current()
    conf, placed = edge.settings, edge.store_of(batch.route.workspace)  # the Redis of the route's workspace
    body = request.get_data(cache=True)
    claim = idempotency.claim_for(
        batch.route,
        authed,
        headers(),
        body,
        window_s=conf.dedup_window_s,
        answer=answer,
        status=status,
    )
    if not batch.accepted:
        claim = None
    try:
        placed.redis_check.ensure()
        first = store_batch(placed.redis, batch, conf, claim, group=placed.group)
    except Unfit:
        raise ApiError(503, UNFIT) from None
    except (redis.ConnectionError, redis.TimeoutError):
        placed.redis_check.lost()  # it may come back as another Redis: checked again first
        raise
    if claim is not None and first is not None:
        answer, status = idempotency.repeat_answer(claim, first, answer)
    # DEBUG: at a thousand postbacks a second this line would cost a tenth of the edge; gunicorn's
    # access log carries the request id (X-Request-Id) with the path and status instead.
    log.debug(
        "repeat answered" if first is not None else "accepted",
        extra={
            "request_id": batch.request_id,
            "route": batch.route.name,
            "accepted": batch.accepted,
            "rejected": len(batch.invalid),
        },
    )
    return jsonify(answer), status


@bp.post("/postback/v3/event/<database>/<table>")
def postback(database: str, table: str) -> tuple[Response, int]:
    """TD Postback API: one JSON object is one record; answers `{}` as TD does."""
    route = route_by_table(database, table)
    authed = authenticate(route, td_style=True, allow_query=True)
    raw = route_body(route, settings().limits.postback_bytes)
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise ApiError(400, "A postback body must be one JSON object (one record).")
    batch = load_records(route, [body], 1, body_bytes=len(raw))
    answer = {"rejected": batch.rejected()} if batch.invalid else {}
    return accept(batch, authed, {**answer, "filtered": batch.filtered} if batch.filtered else answer)


@bp.post("/<database>/<table>")
def ingest(database: str, table: str) -> tuple[Response, int]:
    """TD Data Ingestion API: {"records": [...]} or td-js-sdk's {"events": [...]}, 1 to 500 records.

    The SDK's query (?modified=<ms>&time=<s>) is ignored: a record's time is its own `time` field.
    """
    route = route_by_table(database, table)
    authed = authenticate(route, td_style=True)
    limits = settings().limits
    raw = route_body(route, limits.ingest_bytes)
    records = ingest_records(parse_json(raw))
    if len(records) > limits.ingest_records:
        raise ApiError(
            413, f"At most {limits.ingest_records} records per request.", {"limit": limits.ingest_records}
        )
    batch = load_records(route, records, len(records), body_bytes=len(raw))
    answer = {"accepted": batch.accepted, **batch.counts(), "rejected": batch.rejected()}
    return accept(batch, authed, {**answer, "id": batch.request_id})


@bp.route("/export/<name>", methods=["PUT", "POST"])
def export(name: str) -> tuple[Response, int]:
    """TD query-result export to a web server: column_names, column_types, data rows."""
    route = route_by_name(name)
    if not route.budgets.exports:
        message = f"Route {name!r} takes no exports: its key is public (allowed_origins)."
        raise OverBudget(name, Budget.EXPORTS, message)
    authed = authenticate(route, td_style=True, allow_basic=True)
    limits = settings().limits
    raw = route_body(route, limits.export_bytes, lenient_type=True)
    check_opening(raw, EXPORT_OPENINGS, EXPORT_SHAPE)  # a large body of another shape is not parsed
    table = export_table(parse_json(raw), limits.export_rows, lenient=route.skip_on_invalid_records)
    # Rows become records one at a time: only the serialized records are kept, not 100,000 dicts.
    batch = load_records(route, table.inputs(), len(table.rows), table.misfits, body_bytes=len(raw))
    if len(table.rows) == TD_EXPORT_ROWS:
        # TD's web export drops the rows past 100,000 without a word: the query had more, most likely.
        batch.probably_truncated = True
        log.warning(
            "export of exactly 100,000 rows: TD drops rows past 100,000, so it is probably truncated",
            extra={"request_id": batch.request_id, "route": route.name, "rows": len(table.rows)},
        )
    answer = {"accepted": batch.accepted, **batch.counts(), "rejected": batch.rejected()}
    return accept(batch, authed, {**answer, "id": batch.request_id})


@bp.post("/webhooks/<name>")
def webhook(name: str) -> tuple[Response, int]:
    """Any caller: one JSON object or an array of them, signed or with a Bearer write key."""
    route = route_by_name(name)
    limits = settings().limits
    authed = authenticate(route, td_style=False, signed_body=lambda: route_body(route, limits.webhook_bytes))
    raw = route_body(route, limits.webhook_bytes)  # read once: a signature check has read it already
    body = parse_json(raw)
    if not isinstance(body, (dict, list)):
        raise ApiError(400, "The body must be a JSON object or an array of objects.")
    records = body if isinstance(body, list) else [body]
    if not records:
        raise ApiError(400, "The body holds no record.")
    if len(records) > limits.webhook_records:
        raise ApiError(413, f"At most {limits.webhook_records} records per request.")
    batch = load_records(route, records, len(records), body_bytes=len(raw))
    answer = {"id": batch.request_id, "accepted": batch.accepted, **batch.counts()}
    return accept(batch, authed, {**answer, "rejected": batch.rejected()}, 202)


def register(app: Flask) -> None:
    """Serve the ingest endpoints, /metrics and the health checks."""
    app.register_blueprint(bp)


@bp.get("/metrics")
@guarded
def metrics_view() -> Response:
    """Prometheus text: counters and histograms from Redis (all processes), live lane depths."""
    registry = state.current().metrics
    # generate_latest writes the classic text format (0.0.4), so its type, given whole: as a mimetype
    # Flask would add a second charset.
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Readiness: configuration loaded and Redis taking writes; 200 names a warning (Redis filling up).

    Asked with a write: PING answers on a full or read-only Redis, which refuses every record. With
    RELAY_REDIS_MIN_REPLICAS, the write must also reach that many replicas within RELAY_REDIS_WAIT_MS,
    as every postback's must: a Redis short of replicas answers every postback 503. With
    workspaces on Redis servers of their own, 503 only when none takes writes: one down answers 200
    "degraded" naming it (its routes answer 503; every web process shares it, so failing readiness
    would take the healthy workspaces' routes out of the load balancer too).
    """
    edge = state.current()
    probed = {name: _probe(placed, edge.settings.durability) for name, placed in edge.stores.items()}
    down = {name: reason for name, (reason, _) in probed.items() if reason is not None}
    if len(down) == len(probed):
        if len(down) == 1:
            (reason,) = down.values()
            message = f"Not ready: {UNFIT}" if reason == MAY_EVICT else f"Not ready: Redis is {reason}."
            return error_response(503, message, {"redis": reason}), 503
        said = "; ".join(f"{name} is {reason}" for name, reason in down.items())
        return error_response(503, f"Not ready: no Redis takes writes ({said}).", {"redis": down}), 503
    conf = edge.settings
    body: dict[str, Any] = {"status": "ready", "routes": len(conf.routes), "sandbox": conf.sandbox}
    if down:
        body["status"], body["redis_down"] = "degraded", down
    warned = {
        name: warning
        for name, (_, memory) in probed.items()
        if memory is not None and (warning := memory.warning(conf.redis_memory_warn)) is not None
    }
    if warned:
        alone = len(probed) == 1
        body["warnings"] = {"redis_memory": "; ".join(w if alone else f"{n}: {w}" for n, w in warned.items())}
    return jsonify(body), 200


MAY_EVICT = "may evict records"


def _probe(placed: state.Store, durability: Durability) -> tuple[str | None, redis_health.Memory | None]:
    """Whether one Redis takes writes now (and its replicas hold them, when some are asked for):
    (None, its memory) if it does, else (what is wrong, None)."""
    try:
        placed.redis_check.ensure()
        redis_health.take_write(placed.redis)
        replicas.confirm(placed.redis, durability)
        return None, redis_health.memory(placed.redis)
    except Unfit:
        return MAY_EVICT, None
    except replicas.NotReplicated as exc:
        return exc.reason or f"short of replicas ({exc.confirmed} of {exc.wanted})", None
    except redis.RedisError as exc:
        if isinstance(exc, redis_health.AWAY):
            placed.redis_check.lost()
        return redis_health.describe(exc), None
