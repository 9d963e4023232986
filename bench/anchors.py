"""The edge benchmark's anchors, measured like the relay: gunicorn -w 2, access log off, wrk, same Lua script.

    python -m bench.anchors [--seconds 8] [--connections 32] [--latency-ms 50] [--repeat 1] [--json]

(a) bare: a Flask view that reads the JSON body and answers `{}` (the edge's ceiling);
(b) inline: a Flask view that calls the simulator's /users/track for each postback (what a user would
    write instead), the simulator answering after `--latency-ms`.
Prints requests/s (2xx) and wrk's answer-time p50/p99 for each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    POSTBACK_PATH,
    Processes,
    Workdir,
    WrkResult,
    free_port,
    install_signal_handlers,
    machine_busy_s,
    median,
    relay_env,
    run,
    run_wrk,
    start_gunicorn,
    start_simulator,
    tree_cpu_s,
    wait_quiet,
)

BARE_APP = "bench.anchor_apps:bare_app()"
INLINE_APP = "bench.anchor_apps:inline_app()"


def wrk_figures(result: WrkResult) -> dict[str, Any]:
    """The figures of one wrk run."""
    return {
        "requests": result.requests,
        "req_per_s": round(result.ok_per_s, 1),
        "non_2xx": result.non_2xx,
        "socket_errors": result.socket_errors,
        "p50_ms": round(result.latency_ms["p50"], 2),
        "p99_ms": round(result.latency_ms["p99"], 2),
        "max_ms": round(result.latency_ms["max"], 2),
    }


def measure(
    app: str,
    *,
    seconds: float,
    connections: int,
    latency_ms: float,
    web_workers: int = 2,
    keep_logs: bool = False,
    quiet_wait: bool = True,
) -> dict:
    """Serve `app` with the Procfile's gunicorn command (2 workers) and load it with wrk."""
    work = Workdir(keep_logs)
    procs = Processes(work.path)
    try:
        sim_url = start_simulator(procs, latency_ms) if app == INLINE_APP else "http://127.0.0.1:9"
        # gunicorn.conf.py checks the relay's settings at start, so the anchors get the same environment.
        env = relay_env(sim_url, work.routes_file(), free_port(), WEB_CONCURRENCY=str(web_workers))
        url = start_gunicorn(procs, env, app=app)
        web_pid = procs.running[-1][1].pid
        if quiet_wait:
            wait_quiet()
        cpu_before, machine_before = tree_cpu_s(web_pid), machine_busy_s()
        result = run_wrk(url + POSTBACK_PATH, seconds, connections, run_id=f"a{int(time.time())}")
        web_cpu, machine = tree_cpu_s(web_pid) - cpu_before, machine_busy_s() - machine_before
        procs.check_alive()
        wall = result.ended - result.started
        return {
            **wrk_figures(result),
            "web_cpu_ms_per_req": round(1000 * web_cpu / max(result.requests, 1), 3),
            "cpu_web": round(web_cpu / wall, 2),
            "cpu_wrk": round(result.cpu_s / wall, 2),
            "cpu_other": round(max(0.0, (machine - web_cpu - result.cpu_s) / wall), 2),
        }
    finally:
        procs.stop_all()
        work.close()


def measure_bare(opts: argparse.Namespace) -> dict:
    """Anchor (a): the bare view."""
    return measure(
        BARE_APP,
        seconds=opts.seconds,
        connections=opts.connections,
        latency_ms=opts.latency_ms,
        web_workers=opts.web_workers,
        quiet_wait=getattr(opts, "quiet_wait", True),
    )


def measure_inline(opts: argparse.Namespace) -> dict:
    """Anchor (b): the inline-forwarding view, the simulator at `--latency-ms`."""
    return measure(
        INLINE_APP,
        seconds=opts.seconds,
        connections=opts.connections,
        latency_ms=opts.latency_ms,
        web_workers=opts.web_workers,
        quiet_wait=getattr(opts, "quiet_wait", True),
    )


def medians(runs: list[dict]) -> dict:
    """The median of each figure over several runs."""
    return {key: median(run[key] for run in runs) for key in runs[0]}


def describe(name: str, figures: dict) -> str:
    """One line per anchor."""
    return (
        f"{name:<34} {figures['req_per_s']:>9.1f} req/s   p50 {figures['p50_ms']:.1f} ms   "
        f"p99 {figures['p99_ms']:.1f} ms   ({figures['requests']:.0f} requests, "
        f"{figures['non_2xx']:.0f} non-2xx, {figures['socket_errors']:.0f} socket errors; web CPU "
        f"{figures['web_cpu_ms_per_req']:.2f} ms/request, cores: web {figures['cpu_web']:.2f} "
        f"wrk {figures['cpu_wrk']:.2f} other {figures['cpu_other']:.2f})"
    )


# `--smoke` (tests/test_bench.py): a tiny workload on the same code path, in a few seconds.
SMOKE = ["--seconds", "1", "--connections", "4", "--no-quiet-wait"]


def main(argv: list[str] | None = None) -> int:
    """Measure both anchors `--repeat` times and print the medians."""
    parser = argparse.ArgumentParser(prog="python -m bench.anchors", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="wrk duration (default: %(default)s)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default: %(default)s)")
    parser.add_argument(
        "--latency-ms", type=float, default=50.0, help="simulator latency (default: %(default)s)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs; medians are printed (default: %(default)s)"
    )
    parser.add_argument(
        "--web-workers", type=int, default=2, help="gunicorn workers, WEB_CONCURRENCY (default: %(default)s)"
    )
    parser.add_argument(
        "--no-quiet-wait",
        dest="quiet_wait",
        action="store_false",
        help="start each load at once (default: wait up to 45 s for the machine to be idle first)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    opts = parser.parse_args(argv)
    install_signal_handlers()
    bare = medians([measure_bare(opts) for _ in range(opts.repeat)])
    inline = medians([measure_inline(opts) for _ in range(opts.repeat)])
    if opts.json:
        print(json.dumps({"bare": bare, "inline": inline}, indent=2))
        return 0
    print(
        f"anchors: gunicorn -w {opts.web_workers}, access log off; "
        f"wrk -c {opts.connections} -d {opts.seconds:g}s; "
        f"median of {opts.repeat}"
    )
    print(describe("bare Flask view (reads JSON, {})", bare))
    print(describe(f"inline-forwarding view (Braze {opts.latency_ms:g} ms)", inline))
    return 0


if __name__ == "__main__":
    run(main)
