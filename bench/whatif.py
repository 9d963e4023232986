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

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    POSTBACK_PATH,
    Processes,
    Workdir,
    free_port,
    install_signal_handlers,
    machine,
    machine_busy_s,
    median,
    procfile_command,
    redis_client,
    relay_env,
    run,
    run_wrk,
    start_gunicorn,
    start_simulator,
    tree_cpu_s,
    wait_for,
    wait_quiet,
)

VARIANTS = [
    ("bare Flask view", "bench.anchor_apps:bare_app()", ""),
    ("bare view + one RPUSH", "bench.anchor_apps:bare_rpush_app()", ""),
    ("relay as it is", "receiver:create_app()", ""),
    ("relay, nothing stored", "bench.anchor_apps:relay_variant_app()", "no_redis"),
    ("relay, least Redis write", "bench.anchor_apps:relay_variant_app()", "min_redis"),
]


def measure(app: str, variant: str, opts: argparse.Namespace) -> dict[str, float]:
    """One variant: start everything, wait for a quiet machine, load it, stop everything."""
    client = redis_client()
    client.flushdb()
    work = Workdir()
    procs = Processes(work.path)
    try:
        sim_url = start_simulator(procs, 50)
        env = relay_env(sim_url, work.routes_file(), free_port(), BENCH_VARIANT=variant)
        url = start_gunicorn(procs, env, app=None if app == "receiver:create_app()" else app)
        web_pid = procs.running[-1][1].pid
        for _ in range(opts.workers):
            procs.start("worker", procfile_command("worker"), env)
        wait_for(lambda: client.scard("rq:workers") >= opts.workers, 30, "the RQ workers to register")
        wait_quiet()
        cpu, busy = tree_cpu_s(web_pid), machine_busy_s()
        result = run_wrk(url + POSTBACK_PATH, opts.seconds, opts.connections, f"v{int(time.time())}")
        cpu, busy = tree_cpu_s(web_pid) - cpu, machine_busy_s() - busy
        procs.check_alive()
    finally:
        procs.stop_all()
        work.close()
        client.flushdb()
    wall = result.ended - result.started
    return {
        "req_per_s": result.ok_per_s,
        "non_2xx": result.non_2xx,
        "web_cpu_ms": 1000 * cpu / max(result.requests, 1),
        "p99_ms": result.latency_ms["p99"],
        "other_cores": max(0.0, busy - cpu - result.cpu_s) / wall,  # RQ workers, Redis, sim, others
    }


def main(argv: list[str] | None = None) -> int:
    """Every variant `--repeat` times; medians, ratios within each round."""
    parser = argparse.ArgumentParser(prog="python -m bench.whatif", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="wrk duration (default: %(default)s)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="RQ workers (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (default: %(default)s)")
    opts = parser.parse_args(argv)
    install_signal_handlers()
    rounds = []
    for _ in range(opts.repeat):
        rounds.append({name: measure(app, variant, opts) for name, app, variant in VARIANTS})
    print(f"what-if, {machine()}; wrk -c {opts.connections} -d {opts.seconds:g}s, {opts.workers} RQ workers, "
          f"gunicorn -w 2; median of {opts.repeat}")  # fmt: skip
    bare = VARIANTS[0][0]
    for name, _, _ in VARIANTS:
        rps = median(r[name]["req_per_s"] for r in rounds)
        share = median(r[name]["req_per_s"] / r[bare]["req_per_s"] for r in rounds)
        cpu = median(r[name]["web_cpu_ms"] for r in rounds)
        other = median(r[name]["other_cores"] for r in rounds)
        non2xx = sum(r[name]["non_2xx"] for r in rounds)
        print(
            f"  {name:<28} {rps:8.1f} req/s  {share:5.2f}x bare   web CPU {cpu:.2f} ms/request   "
            f"({non2xx:.0f} non-2xx; rest of the machine {other:.2f} cores)"
        )
    return 0


if __name__ == "__main__":
    run(main)
