"""A route's records, loaded the one way the relay loads them: its transform first, if it has one,
then the schema of each record's kind.

Built once per route at start (the app's state holds one per configured route). The edge loads every
input through it, `transform try` shows what it makes of a file, `send-test` loads a route's sample
record, and replay loads a dead letter refused at the edge again with the route's current
transform and schemas. In a transformed `user_track` route a record may carry `track_record_type`
to be an event, a purchase or an attribute update whatever the route's default; in any other route
that field is the record's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from marshmallow import ValidationError

from receiver.errors import as_dict
from receiver.records.schemas import RecordSchema, schema_for
from relay.config import Limits
from relay.modes import TRACK_TYPES, Kind, mode_of
from relay.routes import Route
from relay.transforms import TransformError

STAGE = "transform"  # a dead letter's `rec.stage` when it holds an input the transform failed on


@dataclass
class Loaded:
    """One record: as it came (or as the transform made it), its kind, and what its schema made of it."""

    raw: Any
    kind: Kind
    record: dict[str, Any] = field(default_factory=dict)  # the loaded record ({} when invalid)
    errors: dict[str, Any] | None = None  # field -> messages when the schema refused it


@dataclass
class Made:
    """What one input made: its records, or why the route's transform failed on it."""

    records: list[Loaded]
    error: str | None = None


def schemas_for(route: Route, limits: Limits) -> dict[Kind, RecordSchema]:
    """The schemas a route's records may need, by kind (a transformed user_track route: all three)."""
    if route.transform is None or route.spec.track_record_type is None:
        return {route.kind: schema_for(route, limits)}
    variants = [replace(route, track_record_type=track_type) for track_type in TRACK_TYPES]
    return {variant.kind: schema_for(variant, limits) for variant in variants}


class RecordLoader:
    """One route's way from what a sender posts to loaded records."""

    def __init__(self, route: Route, limits: Limits) -> None:
        self.route = route
        self.schemas = schemas_for(route, limits)

    def load(self, raw: Any, where: str = "input", most: int | None = None) -> Made:
        """One input: through the route's transform, if any (`where` names it in a failure), then
        each record it makes by the schema of its kind; an untransformed input is one record.

        `most`: the records the transform may still make for its request; past them it is stopped
        and OverOutputs raised (relay/transforms.py).
        """
        if self.route.transform is None:
            return Made([self.record(raw)])
        try:
            outputs = self.route.transform.run(raw, most)
        except TransformError as exc:
            return Made([], f"route {self.route.name!r}, {where}: transform failed: {exc}")
        return Made([self.record(output) for output in outputs])

    def record(self, raw: Any) -> Loaded:
        """One record, by the schema of the route's kind or of the `track_record_type` it names."""
        kind, data = self.route.kind, raw
        if self.route.transform is not None and isinstance(raw, dict) and "track_record_type" in raw:
            data = dict(raw)
            chosen = data.pop("track_record_type")
            if self.route.spec.track_record_type is None:
                message = f"Only a user_track route's records may carry it (route mode is {self.route.mode})."
                return Loaded(raw, kind, errors={"track_record_type": [message]})
            if chosen not in TRACK_TYPES:
                message = f"Must be one of: {', '.join(TRACK_TYPES)}."
                return Loaded(raw, kind, errors={"track_record_type": [message]})
            kind = mode_of(self.route.mode, chosen).kind
        try:
            return Loaded(raw, kind, record=self.schemas[kind].load(data))
        except ValidationError as exc:
            return Loaded(raw, kind, errors=as_dict(exc.messages))

    def load_again(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """A dead letter's record refused at the edge, loaded with the route's current transform and
        schemas; ValidationError while it is still invalid.

        A record is loaded as it was made. An input the transform failed on is run through the
        current transform: loaded if it now makes exactly one valid record of the dead letter's
        kind; otherwise it stays (post the input again: `dead show` prints it).
        """
        rec = envelope["rec"]
        if rec.get("stage") == STAGE:
            made = self.load(rec["raw"], "the dead-lettered input")
            if made.error is not None:
                raise ValidationError({"transform": [made.error]})
            if len(made.records) != 1:
                count = f"the transform now makes {len(made.records)} records of this input"
                raise ValidationError({"transform": [f"{count}; replay takes one: post the input again"]})
            loaded = made.records[0]
        else:
            loaded = self.record(rec["raw"])
        if loaded.errors is not None:
            raise ValidationError(loaded.errors)
        if self.route.transform is not None and loaded.kind != Kind(envelope["kind"]):
            raise ValidationError(
                {"track_record_type": [f"now {loaded.kind}, was {envelope['kind']}: post it again"]}
            )
        if loaded.record.get("time") is None:
            loaded.record["time"] = envelope["at"]
        return loaded.record
