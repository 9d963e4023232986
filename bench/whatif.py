"""What-if: how much of the edge's cost each suspect carries, measured through gunicorn like the relay.

    python -m bench.whatif [--seconds 6] [--connections 32] [--workers 2] [--repeat 1]

Serves, one after another, the bare view and the relay's app as is and with the changes of
bench/anchor_apps.py's relay_variant_app (nothing stored; the least Redis write), each with
the Procfile's gunicorn command and config (2 workers, access log off), `--workers` RQ workers and the
simulator (50 ms) running, and loads each with the same wrk script. Prints postbacks/s, the ratio to
the bare view of the same round, web CPU per request, and what the rest of the machine used (RQ
workers, Redis, simulator, anyone else). The variants change behaviour (no counters, no script,
nothing stored): they size the suspects, they are not patches to apply as they are.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    machine,
    measure_variant,
    run,
    variant_medians,
    variant_options,
)

RELAY = "receiver:create_app()"  # the Procfile's own app
VARIANTS = [
    ("bare Flask view", "bench.anchor_apps:bare_app()", ""),
    ("bare view + one RPUSH", "bench.anchor_apps:bare_rpush_app()", ""),
    ("relay as it is", RELAY, ""),
    ("relay, nothing stored", "bench.anchor_apps:relay_variant_app()", "no_redis"),
    ("relay, least Redis write", "bench.anchor_apps:relay_variant_app()", "min_redis"),
]


# `--smoke` (tests/test_bench.py): a tiny workload on the same code path, in a few seconds.
SMOKE = ["--seconds", "1", "--connections", "4", "--workers", "0"]


def main(argv: list[str] | None = None) -> int:
    """Every variant `--repeat` times; medians, ratios within each round."""
    opts = variant_options("python -m bench.whatif", __doc__, argv)
    rounds = []
    for _ in range(opts.repeat):
        rounds.append(
            {
                name: measure_variant(opts, app=None if app == RELAY else app, BENCH_VARIANT=variant)
                for name, app, variant in VARIANTS
            }
        )
    print(f"what-if, {machine()}; wrk -c {opts.connections} -d {opts.seconds:g}s, {opts.workers} RQ workers, "
          f"gunicorn -w 2; median of {opts.repeat}")  # fmt: skip
    for name, _, _ in VARIANTS:
        got = variant_medians(rounds, name, VARIANTS[0][0])
        print(
            f"  {name:<28} {got['req_per_s']:8.1f} req/s  {got['share']:5.2f}x bare   web CPU "
            f"{got['web_cpu_ms']:.2f} ms/request   ({got['non_2xx']:.0f} non-2xx; rest of the machine "
            f"{got['other_cores']:.2f} cores)"
        )
    return 0


if __name__ == "__main__":
    run(main)
