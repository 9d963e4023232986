"""What a transform costs at the edge: one-record postbacks through a `segment` route vs the same route bare.

    python -m bench.transform [--seconds 6] [--connections 32] [--workers 2] [--repeat 1]

Serves, one after the other in each round, the relay with the route
`[routes.events] database="bench" table="events" mode="user_track" track_record_type="custom_events"`
as it is (wrk posts bench/postback.lua's Braze-shaped record) and the same route with
`preset = "segment"` (bench/postback.lua with BENCH_SHAPE=segment: the same event as a Segment track call),
each with the Procfile's gunicorn command and config (2 workers, access log off), `--workers` RQ
workers and the simulator (50 ms) running, as bench/whatif.py does. Prints accepted postbacks/s of
each, their ratio within each round (the target is the ratio, never an absolute figure), web CPU per
request, and what the rest of the machine used meanwhile.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROUTES,
    machine,
    measure_variant,
    run,
    variant_medians,
    variant_options,
)

VARIANTS = [
    ("no transform", ROUTES, "td"),
    ("preset segment", ROUTES + 'preset = "segment"\n', "segment"),
]


# `--smoke` (tests/test_bench.py): a tiny workload on the same code path, in a few seconds.
SMOKE = ["--seconds", "1", "--connections", "4", "--workers", "0"]


def main(argv: list[str] | None = None) -> int:
    """Both variants `--repeat` times; medians, and the ratio taken within each round."""
    opts = variant_options("python -m bench.transform", __doc__, argv)
    rounds = []
    for _ in range(opts.repeat):
        rounds.append(
            {name: measure_variant(opts, routes=routes, shape=shape) for name, routes, shape in VARIANTS}
        )
    print(
        f"transform cost, {machine()}; wrk -c {opts.connections} -d {opts.seconds:g}s, "
        f"{opts.workers} RQ workers, gunicorn -w 2; median of {opts.repeat}"
    )
    for name, _, _ in VARIANTS:
        got = variant_medians(rounds, name, VARIANTS[0][0])
        print(
            f"  {name:<16} {got['req_per_s']:8.1f} accepted/s  {got['share']:5.2f}x the route without a "
            f"transform   web CPU {got['web_cpu_ms']:.2f} ms/request   ({got['non_2xx']:.0f} non-2xx; "
            f"rest of the machine {got['other_cores']:.2f} cores)"
        )
    return 0


if __name__ == "__main__":
    run(main)
