"""What a transform costs at the edge: one-record postbacks through a `segment` route vs the same route bare.

    python -m bench.transform [--seconds 6] [--connections 32] [--workers 2] [--repeat 1]

Serves, one after the other in each round, the relay with the route
`[routes.events] database="bench" table="events" mode="user_track" track_record_type="custom_events"`
as it is (wrk posts bench/postback.lua's Braze-shaped record) and the same route with
`preset = "segment"` (wrk posts bench/postback_segment.lua: the same event as a Segment track call),
each with the Procfile's gunicorn command and config (2 workers, access log off), `--workers` RQ
workers and the simulator (50 ms) running, as bench/whatif.py does. Prints accepted postbacks/s of
each, their ratio within each round (the target is the ratio, never an absolute figure), web CPU per
request, and what the rest of the machine used meanwhile.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BENCH,
    LUA,
    POSTBACK_PATH,
    ROUTES,
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

SEGMENT_LUA = BENCH / "postback_segment.lua"
VARIANTS = [
    ("no transform", ROUTES, LUA),
    ("preset segment", ROUTES + 'preset = "segment"\n', SEGMENT_LUA),
]


def measure(routes: str, script: Path, opts: argparse.Namespace) -> dict[str, float]:
    """One variant: start everything, wait for a quiet machine, load it, stop everything."""
    client = redis_client()
    client.flushdb()
    work = Workdir()
    procs = Processes(work.path)
    try:
        path = work.path / "relay.toml"
        path.write_text(routes)
        sim_url = start_simulator(procs, 50)
        env = relay_env(sim_url, path, free_port())
        url = start_gunicorn(procs, env)
        web_pid = procs.running[-1][1].pid
        for _ in range(opts.workers):
            procs.start("worker", procfile_command("worker"), env)
        wait_for(lambda: client.scard("rq:workers") >= opts.workers, 30, "the RQ workers to register")
        wait_quiet()
        cpu, busy = tree_cpu_s(web_pid), machine_busy_s()
        result = run_wrk(
            url + POSTBACK_PATH, opts.seconds, opts.connections, f"t{int(time.time())}", script=script
        )
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
    """Both variants `--repeat` times; medians, and the ratio taken within each round."""
    parser = argparse.ArgumentParser(prog="python -m bench.transform", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="wrk duration (default: %(default)s)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="RQ workers (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (default: %(default)s)")
    opts = parser.parse_args(argv)
    install_signal_handlers()
    rounds = []
    for _ in range(opts.repeat):
        rounds.append({name: measure(routes, script, opts) for name, routes, script in VARIANTS})
    print(
        f"transform cost, {machine()}; wrk -c {opts.connections} -d {opts.seconds:g}s, "
        f"{opts.workers} RQ workers, gunicorn -w 2; median of {opts.repeat}"
    )
    bare = VARIANTS[0][0]
    for name, _, _ in VARIANTS:
        rps = median(r[name]["req_per_s"] for r in rounds)
        share = median(r[name]["req_per_s"] / r[bare]["req_per_s"] for r in rounds)
        cpu = median(r[name]["web_cpu_ms"] for r in rounds)
        other = median(r[name]["other_cores"] for r in rounds)
        non2xx = sum(r[name]["non_2xx"] for r in rounds)
        print(
            f"  {name:<16} {rps:8.1f} accepted/s  {share:5.2f}x the route without a transform   "
            f"web CPU {cpu:.2f} ms/request   ({non2xx:.0f} non-2xx; rest of the machine {other:.2f} cores)"
        )
    return 0


if __name__ == "__main__":
    run(main)
