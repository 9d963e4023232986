"""A transformed route's request: each input through its jq program, every record it makes numbered
across the request and loaded by the schema of its kind (receiver/records/loader.py).

Each input (a postback body, an element of an ingestion batch or webhook array, an export row zipped
into an object) goes through the route's transform (relay.transforms), so Braze's field rules,
`skip_on_invalid_records`, the dead-letter store, ordering and idempotency work as for an
untransformed record. An input that emits no record is filtered: counted, not an error.

Errors name the input by its index in the request and a record by its index among that input's
records: `errors.records["3"]` is `{"transform": [message]}` when jq failed on input 3, or
`{"emitted": {"1": {"price": [...]}}}` when its second record is invalid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from receiver.enqueue import Batch
from receiver.records.loader import STAGE, RecordLoader
from relay.budgets import TRANSFORM_FLOOR, Budget, OverBudget
from relay.dedup import DedupError
from relay.envelope import Envelope
from relay.modes import Kind
from relay.routes import Route
from relay.transforms import OverOutputs

# Records one request may become: a 100,000-row export may emit two per row, no more.
MAX_RECORDS = 200_000


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
    loader: RecordLoader,
    inputs: Iterable[Any],
    batch: TransformedBatch,
    misfits: Mapping[int, dict[str, Any]],
    body_bytes: int,
) -> dict[str, Any]:
    """Transform and load every input into the batch; the errors, keyed by input index ({} if none).

    A misfit (an input its envelope refused, with its errors) is rejected as it came, not transformed.
    The records the transform makes are held to the route's budget for a body of `body_bytes`
    (relay/budgets.py): past it, OverBudget (413), the transform stopped at the first record over.
    """
    errors: dict[str, Any] = {}
    emitted = 0
    dedup = loader.route.dedup  # the key is the input's, as its sender posted it, before the transform
    allowed = min(MAX_RECORDS, loader.route.budgets.transform_records(body_bytes))
    for index, document in enumerate(inputs):
        if index in misfits:
            errors[str(index)] = misfits[index]
            batch.invalid.append((batch.number(), document, misfits[index]))
            batch.rejections.append({"index": index, "errors": misfits[index]})
            continue
        try:
            key = dedup.key_of(document) if dedup else None
        except DedupError as exc:
            errors[str(index)] = {"dedup_key": [str(exc)]}
            batch.invalid.append((batch.number(), document, errors[str(index)]))
            batch.rejections.append({"index": index, "errors": errors[str(index)]})
            continue
        try:
            made = loader.load(document, f"input {index}", most=allowed - emitted)
        except OverOutputs:
            raise over_budget(loader.route, allowed, body_bytes) from None
        if made.error is not None:
            errors[str(index)] = {"transform": [made.error]}
            number = batch.number()
            batch.failed.add(number)
            batch.invalid.append((number, document, errors[str(index)]))
            batch.rejections.append({"index": index, "errors": errors[str(index)]})
            continue
        if not made.records:
            batch.filtered += 1
            continue
        emitted += len(made.records)
        for position, record in enumerate(made.records):
            number = batch.number()
            if record.errors is None:
                digest = dedup.digest(key, position) if dedup and key is not None else None
                batch.add(number, record.record, record.kind, digest)
                continue
            errors.setdefault(str(index), {"emitted": {}})["emitted"][str(position)] = record.errors
            batch.kinds[number] = record.kind
            batch.invalid.append((number, record.raw, record.errors))
            batch.rejections.append({"index": index, "emitted": position, "errors": record.errors})
    return errors


def over_budget(route: Route, allowed: int, body_bytes: int) -> OverBudget:
    """413 naming the route: its transform made more records than its budget for a body of this size."""
    per_kb = route.budgets.transform_records_per_kb
    message = (
        f"Route {route.name!r}: its transform made more than {allowed} records of a {body_bytes}-byte "
        f"body (at most {TRANSFORM_FLOOR} plus {per_kb} per KB, {MAX_RECORDS} in all); nothing was stored."
    )
    return OverBudget(route.name, Budget.TRANSFORM_RECORDS, message, limit=allowed)


def refusal(route: Route, errors: dict[str, Any], total: int) -> str:
    """The 422 message of a transformed route's request."""
    return (
        f"{len(errors)} of {total} input(s) of route {route.name!r} failed (the transform, or a record it "
        "made); nothing was stored."
    )
