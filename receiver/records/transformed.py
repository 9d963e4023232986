"""Records from a transformed route's inputs: its jq program first, then its schemas, as for any record.

Each input (a postback body, an element of an ingestion batch or webhook array, an export row zipped
into an object) goes through the route's transform (relay.transforms); every record it emits is loaded
by the schema of its kind, so Braze's field rules, `skip_on_invalid_records`, the dead-letter store,
ordering and idempotency work as for an untransformed record. In a `user_track` route a record may
carry `track_record_type` to be an event, a purchase or an attribute update whatever the route's
default. An input that emits no record is filtered: counted, not an error.

Errors name the input by its index in the request and a record by its index among that input's
records: `errors.records["3"]` is `{"transform": [message]}` when jq failed on input 3, or
`{"emitted": {"1": {"price": [...]}}}` when its second record is invalid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from marshmallow import ValidationError

from receiver import state
from receiver.enqueue import Batch
from receiver.errors import ApiError, as_dict
from receiver.records.schemas import RecordSchema, schema_for
from relay.config import Limits, Settings
from relay.envelope import Envelope
from relay.modes import TRACK_TYPES, Kind, mode_of
from relay.routes import Route
from relay.transforms import TransformError

# Records one request may become: a 100,000-row export may emit two per row, no more.
MAX_RECORDS = 200_000
STAGE = "transform"  # a dead letter's `rec.stage` when it holds an input the transform failed on


def schemas_for(route: Route, limits: Limits) -> dict[Kind, RecordSchema]:
    """The schemas a transformed route's records may need, by kind (all three track kinds in user_track)."""
    if route.mode != "user_track":
        return {route.kind: schema_for(route, limits)}
    variants = [replace(route, track_record_type=track_type) for track_type in TRACK_TYPES]
    return {variant.kind: schema_for(variant, limits) for variant in variants}


def schemas_by_route(settings: Settings) -> dict[str, dict[Kind, RecordSchema]]:
    """Those schemas for every route with a transform (built once, by the app factory)."""
    return {
        name: schemas_for(route, settings.limits)
        for name, route in settings.routes.items()
        if route.transform
    }


@dataclass
class Emitted:
    """One record a transform emitted: as emitted, its kind, and what its schema made of it."""

    raw: Any
    kind: Kind
    record: dict[str, Any] | None = None
    errors: dict[str, Any] | None = None


@dataclass
class Outcome:
    """What the transform made of one input: its records, or the reason it failed."""

    records: list[Emitted]
    error: str | None = None


def load_emitted(route: Route, schemas: Mapping[Kind, RecordSchema], raw: Any) -> Emitted:
    """Load one emitted record with the schema of its kind (`track_record_type`, or the route's)."""
    kind, data = route.kind, raw
    if isinstance(raw, dict) and "track_record_type" in raw:
        data = dict(raw)
        chosen = data.pop("track_record_type")
        if route.mode != "user_track":
            message = f"Only a user_track route's records may carry it (route mode is {route.mode})."
            return Emitted(raw, kind, errors={"track_record_type": [message]})
        if chosen not in TRACK_TYPES:
            return Emitted(
                raw, kind, errors={"track_record_type": [f"Must be one of: {', '.join(TRACK_TYPES)}."]}
            )
        kind = mode_of(route.mode, chosen).kind
    try:
        return Emitted(raw, kind, record=schemas[kind].load(data))
    except ValidationError as exc:
        return Emitted(raw, kind, errors=as_dict(exc.messages))


def apply(route: Route, schemas: Mapping[Kind, RecordSchema], document: Any, where: str) -> Outcome:
    """Run the route's transform on one input (`where` names it in a failure) and load what it emits."""
    assert route.transform is not None
    try:
        outputs = route.transform.run(document)
    except TransformError as exc:
        return Outcome([], f"route {route.name!r}, {where}: transform failed: {exc}")
    return Outcome([load_emitted(route, schemas, raw) for raw in outputs])


@dataclass
class TransformedBatch(Batch):
    """A transformed route's request: records numbered across all inputs, answers named by input."""

    rejections: list[dict[str, Any]] = field(default_factory=list)  # the answer's `rejected`
    kinds: dict[int, Kind] = field(default_factory=dict)  # record number -> kind, for its dead letter
    failed: set[int] = field(default_factory=set)  # record numbers holding an input jq failed on
    numbered: int = 0  # records and failed inputs so far: each gets its own id and place in order

    def envelope(self, index: int, record: dict[str, Any], kind: Kind | None = None) -> Envelope:
        """As Batch's; a dead letter keeps its record's kind and says when it holds a failed input."""
        if index in self.failed:
            record = {**record, "stage": STAGE}
        return super().envelope(index, record, kind or self.kinds.get(index))

    def rejected(self) -> list[dict[str, Any]]:
        """As Batch's, named by input index and the index among that input's records."""
        return self.rejections

    def counts(self) -> dict[str, int]:
        """Its answer also counts the inputs that made no record."""
        return {"filtered": self.filtered}

    def number(self) -> int:
        """The next record number."""
        self.numbered += 1
        return self.numbered - 1


def load_inputs(
    route: Route, inputs: Iterable[Any], batch: TransformedBatch, schemas: Mapping[Kind, RecordSchema]
) -> dict[str, Any]:
    """Transform and load every input into the batch; the errors, keyed by input index ({} if none)."""
    errors: dict[str, Any] = {}
    emitted = 0
    for index, document in enumerate(inputs):
        outcome = apply(route, schemas, document, f"input {index}")
        if outcome.error is not None:
            errors[str(index)] = {"transform": [outcome.error]}
            number = batch.number()
            batch.failed.add(number)
            batch.invalid.append((number, document, errors[str(index)]))
            batch.rejections.append({"index": index, "errors": errors[str(index)]})
            continue
        if not outcome.records:
            batch.filtered += 1
            continue
        emitted += len(outcome.records)
        if emitted > MAX_RECORDS:
            raise ApiError(413, f"Route {route.name!r}: the transform made more than {MAX_RECORDS} records.")
        for position, record in enumerate(outcome.records):
            number = batch.number()
            if record.errors is None:
                assert record.record is not None
                batch.add(number, record.record, record.kind)
                continue
            errors.setdefault(str(index), {"emitted": {}})["emitted"][str(position)] = record.errors
            batch.kinds[number] = record.kind
            batch.invalid.append((number, record.raw, record.errors))
            batch.rejections.append({"index": index, "emitted": position, "errors": record.errors})
    return errors


def refusal(route: Route, errors: dict[str, Any], total: int) -> str:
    """The 422 message of a transformed route's request."""
    return (
        f"{len(errors)} of {total} input(s) of route {route.name!r} failed (the transform, or a record it "
        "made); nothing was stored."
    )


def revalidate(route: Route, item: dict[str, Any]) -> dict[str, Any]:
    """A transformed route's dead letter loaded again with the route's current transform and schemas.

    A record the transform made is loaded as it was made. An input the transform failed on is run
    through the current transform: replayed if it now makes exactly one valid record of the dead
    letter's kind; otherwise it stays (post the input again: `dead show` prints it).
    """
    schemas = state.current().transform_schemas[route.name]
    envelope = item["envelope"]
    rec = envelope["rec"]
    if rec.get("stage") == STAGE:
        outcome = apply(route, schemas, rec["raw"], "the dead-lettered input")
        if outcome.error is not None:
            raise ValidationError({"transform": [outcome.error]})
        if len(outcome.records) != 1:
            made = f"the transform now makes {len(outcome.records)} records of this input"
            raise ValidationError({"transform": [f"{made}; replay takes one: post the input again"]})
        emitted = outcome.records[0]
    else:
        emitted = load_emitted(route, schemas, rec["raw"])
    if emitted.errors is not None:
        raise ValidationError(emitted.errors)
    if emitted.kind != Kind(envelope["kind"]):
        raise ValidationError(
            {"track_record_type": [f"now {emitted.kind}, was {envelope['kind']}: post it again"]}
        )
    assert emitted.record is not None
    return emitted.record
