"""The slowest input per record field: hostile and random strings through each mode's real schema.

    python -m bench.hostile_fields [--sizes 1000,60000,1000000] [--random 200] [--random-size 60000]

Every field a caller can fill (each mode's declared fields, TD's `td_record_time`, a free property
or attribute) is measured once, on the first mode that has it: the same field class checks it in
every mode. Each gets the shaped strings below at each of `--sizes` characters (runs of spaces before
a letter, digits, long fractions and exponents, repeated time separators, JSON openings, surrogate
escapes), then `--random` strings of up to `--random-size` characters built from runs of those
fragments (seeded: the same inputs every run). Prints, per field, the slowest input's load time and
which input it was. Nothing else runs: no Redis, no HTTP; the figure is the field's own cost.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from marshmallow import ValidationError

from bench.common import machine, run
from receiver.records.schemas import RecordSchema, schema_for
from relay.routes import Route

# Each shape as a function of its length in characters.
SHAPES: dict[str, Callable[[int], str]] = {
    "spaces": lambda n: " " * n,
    "digit, spaces, letter": lambda n: "1" + " " * (n - 2) + "x",
    "digit, wide spaces, letter": lambda n: "1" + "\u2003" * (n - 2) + "x",
    "spaces before a zone, twice": lambda n: "1" + " " * (n - 8) + " UTC UTC",
    "digits": lambda n: "9" * n,
    "a long fraction": lambda n: "1." + "1" * (n - 2),
    "a long exponent": lambda n: "1e" + "1" * (n - 2),
    "repeated time separators": lambda n: "T00:00:00:" * (n // 10),
    "dashes and colons": lambda n: "-:" * (n // 2),
    "JSON openings": lambda n: "[" * n,
    "JSON keys": lambda n: '{"a":' * (n // 5),
    "surrogate escapes": lambda n: "\\ud800" * (n // 6),
}
FRAGMENTS = (
    " ",
    "\t",
    "\u2003",
    "1",
    "x",
    ":",
    "T",
    "Z",
    "UTC",
    "GMT",
    "-",
    "+",
    ".",
    "e",
    "[",
    "{",
    '"',
    "\\u",
)
# One route per mode, and a valid record of each (a field under test replaces one of its values).
ROUTES = [
    (
        Route(
            "events", "user_track", track_record_type="custom_events", pre_formatted_fields=("properties",)
        ),
        {"external_id": "u1", "name": "signup"},
    ),
    (
        Route("purchases", "user_track", track_record_type="purchases"),
        {"external_id": "u1", "product_id": "sku-1", "currency": "USD", "price": 9.99},
    ),
    (Route("profiles", "user_track", track_record_type="user_profile_attributes"), {"external_id": "u1"}),
    (Route("aliases", "user_new_alias"), {"alias_name": "anon-9", "alias_label": "device"}),
    (
        Route("identify", "user_identifying"),
        {"external_id": "u1", "alias_name": "anon-9", "alias_label": "device"},
    ),
    (Route("deletes", "user_delete"), {"external_id": "u1"}),
    (Route("consent", "user_subscription"), {"external_id": "u1", "email_subscribe": "opted_in"}),
]
FREE_FIELD = "plan"  # an undeclared field: a property or an attribute where the mode keeps them


def fields_to_measure() -> Iterator[tuple[str, RecordSchema, dict[str, Any]]]:
    """(field, schema, valid record): each caller field once, on the first mode that has it."""
    seen: set[str] = set()
    for route, valid in ROUTES:
        schema = schema_for(route)
        names = [*schema.declared_fields, "td_record_time"]
        if schema.opts.unknown == "include":
            names.append(FREE_FIELD)
        for name in names:
            label = f"{name} ({route.name})" if name == FREE_FIELD else name
            if label not in seen:
                seen.add(label)
                yield label, schema, valid


def random_inputs(rng: random.Random, count: int, longest: int) -> Iterator[str]:
    """Strings of one to four runs of a fragment each, up to `longest` characters in all."""
    for _ in range(count):
        parts, left = [], longest
        for _ in range(rng.randint(1, 4)):
            fragment = rng.choice(FRAGMENTS)
            repeat = rng.randint(1, max(1, left // len(fragment)))
            parts.append(fragment * repeat)
            left -= len(fragment) * repeat
            if left <= 0:
                break
        yield "".join(parts)


def load_time(schema: RecordSchema, record: dict[str, Any], repeat: int) -> float:
    """Seconds a load of the record takes (refused or not): the fastest of `repeat`, as timeit does."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        with contextlib.suppress(ValidationError):
            schema.load(record)
        best = min(best, time.perf_counter() - started)
        if best > 1.0:
            break  # one second is figure enough: a quadratic input would take minutes more
    return best


# `--smoke` (tests/test_bench.py): a tiny workload on the same code path, in a few seconds.
SMOKE = ["--sizes", "1000", "--random", "3", "--random-size", "1000", "--repeat", "1"]


def main(argv: list[str] | None = None) -> int:
    """Measure every field; print its slowest input."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.hostile_fields", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sizes", default="1000,60000,1000000", help="lengths of the shaped strings")
    parser.add_argument("--random", type=int, default=200, help="random strings per field")
    parser.add_argument("--random-size", type=int, default=60_000, help="longest random string")
    parser.add_argument("--repeat", type=int, default=3, help="loads per input (the fastest counts)")
    parser.add_argument("--seed", type=int, default=19)
    opts = parser.parse_args(argv)
    sizes = [int(size) for size in opts.sizes.split(",")]
    print(
        f"slowest input per field, schema load in-process; shapes at {'/'.join(map(str, sizes))} characters "
        f"and {opts.random} random strings up to {opts.random_size}; {machine()}"
    )
    for label, schema, valid in fields_to_measure():
        name = label.split(" ")[0]
        base = {key: value for key, value in valid.items() if key != name}
        rng = random.Random(f"{opts.seed}-{label}")
        inputs = [(f"{shape} x {size:,}", make(size)) for shape, make in SHAPES.items() for size in sizes]
        inputs += [
            (f"random #{index} ({len(text):,} chars)", text)
            for index, text in enumerate(random_inputs(rng, opts.random, opts.random_size))
        ]
        slowest, which = max(
            (load_time(schema, {**base, name: text}, opts.repeat), what) for what, text in inputs
        )
        print(f"  {label:<22} {slowest * 1000:10.2f} ms   {which}", flush=True)
    return 0


if __name__ == "__main__":
    run(main)
