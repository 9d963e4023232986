"""Delivery at Braze's speed: a backlog drained by the Procfile's workers into the simulator.

    python -m bench.delivery [--backlog 100000] [--latencies 50,200,500] [--workers 2] [--repeat 1]
                             [--baseline REF [--baseline-backlog 30000]] [--json]

For each Braze latency: the simulator (`python -m braze_sim --latency-ms L`), gunicorn (the
Procfile's web, 2 workers), `--backlog` custom events stored through TD's export endpoint (25,000
rows a request) with no worker running, then `--workers` processes of the Procfile's `worker`
draining it. The lanes are held (their lease taken by the bench) until the workers have started
and registered, so the workers' start-up is not counted; then released, and the workers' tickers
wake them. Prints records delivered per second (first to last arrival at the simulator), the CPU
the worker processes used per 1,000 records delivered (/proc), the simulator's and Redis's, the
Braze requests, duplicates, and the ratio of each latency's rate to the first one's.

`--baseline REF` first measures the same at the first latency on another commit (a temporary git
worktree of REF, run with this venv; `--baseline-backlog` records, as its one request in flight per
worker is slow): CPU per record before and after, in one run.

Targets: at least 8,000 records/s at 50 ms with 2 workers on 2 cores; at 200
and 500 ms at least 80% of that; worker CPU at most 75 ms per 1,000 records.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    Group,
    Processes,
    RedisSnapshot,
    Sampler,
    SimLog,
    Workdir,
    checkout,
    free_port,
    install_signal_handlers,
    machine,
    median,
    procfile_command,
    put_export,
    redis_client,
    relay_env,
    run,
    start_gunicorn,
    start_redis,
    start_simulator,
    wait_for,
    wait_quiet,
)
from relay import store
from relay.lanes import Lane

EXPORT_CHUNK = 25_000
HOLD = "bench-holds-the-lane"


def export_backlog(web_url: str, run_id: str, count: int) -> None:
    """`count` custom events through TD's export endpoint, each with its id and send time as properties."""
    session = requests.Session()
    for start in range(0, count, EXPORT_CHUNK):
        now = time.time()
        rows = [
            [f"{run_id}-u{n % 20_000}", "bench_event", f"{run_id}-{n}", now]
            for n in range(start, min(start + EXPORT_CHUNK, count))
        ]
        body = {
            "column_names": ["external_id", "name", "id", "sent_at"],
            "column_types": ["string", "string", "string", "double"],
            "data": rows,
        }
        put_export(web_url, "events", json.dumps(body).encode(), session).raise_for_status()


def track_lanes(client: Any) -> list[str]:
    """The lanes that hold the backlog (two track shards by default)."""
    return sorted(name.decode() for name in client.smembers(store.keys("default").lanes))


def hold_lanes(client: Any, lanes: list[str]) -> None:
    """Take every lane's lease, and drop the drain jobs the edge enqueued: nobody drains until release."""
    for lane in lanes:
        client.set(Lane(lane).lease_key, HOLD, px=600_000)
    for queue in ("relay-bulk", "relay-consent"):
        for job_id in client.lrange(f"rq:queue:{queue}", 0, -1):
            client.delete(f"rq:job:{job_id.decode()}")
        client.delete(f"rq:queue:{queue}")


def one_drain(
    opts: argparse.Namespace, latency_ms: float, backlog: int, root: Path = ROOT, label: str = ""
) -> dict[str, Any]:
    """Fill a backlog, drain it with the Procfile's workers at one Braze latency; the figures."""
    run_id = f"d{int(time.time() * 1000) % 10**9}"
    work = Workdir(opts.keep_logs)
    procs = Processes(work.path, root=root)
    if opts.own_redis:
        start_redis(procs)
    client = redis_client()
    client.flushdb()
    sampler: Sampler | None = None
    try:
        sim_url = start_simulator(procs, latency_ms)
        sim_pid = procs.running[-1][1].pid
        env = relay_env(sim_url, work.routes_file(), free_port(), **opts.knobs)
        web_url = start_gunicorn(procs, env)
        export_backlog(web_url, run_id, backlog)
        lanes = track_lanes(client)
        hold_lanes(client, lanes)
        waiting = sum(int(client.llen(Lane(lane).list_key)) for lane in lanes)
        assert waiting == backlog, f"{waiting} records waiting of {backlog}"
        waiting_bytes = sum(int(client.memory_usage(Lane(lane).list_key, samples=0) or 0) for lane in lanes)
        workers = [procs.start("worker", procfile_command("worker"), env).pid for _ in range(opts.workers)]
        wait_for(lambda: client.scard("rq:workers") >= opts.workers, 30, "the RQ workers to register")
        time.sleep(1.0)  # imports and registration done: what follows is delivery
        sim = SimLog(sim_url, run_id)
        sim.reset(latency_ms)
        sampler = Sampler([Group("worker", workers), Group("sim", [sim_pid])], client)
        busy_before = wait_quiet(limit=20) if opts.quiet_wait else float("nan")
        sampler.start()  # peak RSS, every 100 ms
        cpu0, redis0 = sampler.cpu(), RedisSnapshot.take(client)
        for lane in lanes:  # the workers' tickers wake the lanes within a second
            client.delete(Lane(lane).lease_key)
        deadline = time.monotonic() + opts.drain_timeout
        while sim.delivered < backlog and time.monotonic() < deadline:
            time.sleep(0.5)
            sim.poll()
            procs.check_alive()
        cpu1, redis1 = sampler.cpu(), RedisSnapshot.take(client)
        sampler.stop()
        sim.poll()
        left = sum(int(client.llen(Lane(lane).list_key)) for lane in lanes)
    finally:
        if sampler is not None:
            sampler.stop()
        with contextlib.suppress(Exception):  # the bench's own Redis goes with the processes
            client.flushdb()
        procs.stop_all()
        work.close()
    times = sorted(sim.first_time.values())
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    delivered = sim.delivered
    per_1000 = {
        name: 1e6 * (cpu1[name] - cpu0[name]) / max(delivered, 1) for name in ("worker", "sim", "redis")
    }
    return {
        "label": label or "this checkout",
        "latency_ms": latency_ms,
        "backlog": backlog,
        "delivered": delivered,
        "left": left,
        "duplicates": sim.copies - delivered,
        "records_per_s": round(delivered / span, 1) if span > 0 else float("nan"),
        "braze_requests": sim.track_requests,
        "braze_non_2xx": sim.track_non_2xx,
        "records_per_request": round(delivered / max(sim.track_requests, 1), 1),
        "worker_cpu_ms_per_1000": round(per_1000["worker"], 1),
        "sim_cpu_ms_per_1000": round(per_1000["sim"], 1),
        "redis_cpu_ms_per_1000": round(per_1000["redis"], 1),
        "redis_commands_per_record": round(redis1.since(redis0)["commands"] / max(delivered, 1), 3),
        "queued_bytes_per_record": round(waiting_bytes / backlog, 1),
        "worker_peak_rss_mb": round(max(sampler.groups[0].peak_root_mb.values(), default=0.0), 1),
        "busy_before": round(busy_before, 2),
    }


@contextlib.contextmanager
def worktree(ref: str) -> Any:
    """A temporary, detached git worktree of `ref` (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="braze-relay-baseline-"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), ref], cwd=ROOT, check=True, capture_output=True
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False, capture_output=True
        )


def describe(result: dict[str, Any]) -> str:
    """One line per drain."""
    return (
        f"  {result['label']:<22} Braze {result['latency_ms']:>4g} ms: "
        f"{result['records_per_s']:>9,.0f} records/s   "
        f"worker CPU {result['worker_cpu_ms_per_1000']:5.1f} ms per 1,000   "
        f"(sim {result['sim_cpu_ms_per_1000']:.1f}, redis {result['redis_cpu_ms_per_1000']:.1f}); "
        f"{result['delivered']:,}/{result['backlog']:,} delivered, {result['duplicates']} duplicates, "
        f"{result['braze_requests']:,} requests ({result['records_per_request']:g} records each, "
        f"{result['braze_non_2xx']} non-2xx); Redis {result['redis_commands_per_record']:g} commands "
        f"per record, {result['queued_bytes_per_record']:.0f} bytes per queued record; worker peak RSS "
        f"{result['worker_peak_rss_mb']:.0f} MB"
    )


def rate(result: dict[str, Any]) -> float:
    """Records delivered per second."""
    return float(result["records_per_s"])


def main(argv: list[str] | None = None) -> int:
    """Run the drains, print the figures and the targets."""
    parser = argparse.ArgumentParser(prog="python -m bench.delivery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=100_000, help="records (default: %(default)s)")
    parser.add_argument(
        "--latencies", default="50,200,500", help="Braze latencies in ms (default: %(default)s)"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: %(default)s)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds; medians printed (default: %(default)s)"
    )
    parser.add_argument("--baseline", metavar="REF", help="also measure this commit at the first latency")
    parser.add_argument(
        "--baseline-backlog", type=int, default=30_000, help="its backlog (default: %(default)s)"
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=300.0, help="seconds per drain (default: %(default)s)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a relay variable")
    parser.add_argument("--no-quiet-wait", dest="quiet_wait", action="store_false")
    parser.add_argument(
        "--shared-redis",
        dest="own_redis",
        action="store_false",
        help="use BENCH_REDIS_URL (default: a redis-server of its own, so INFO counts only the relay)",
    )
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    opts = parser.parse_args(argv)
    opts.knobs = dict(item.split("=", 1) for item in opts.set)
    latencies = [float(value) for value in opts.latencies.split(",")]
    install_signal_handlers()
    rounds: list[list[dict[str, Any]]] = []
    for index in range(opts.repeat):
        if opts.repeat > 1:
            print(f"round {index + 1} of {opts.repeat} ...", file=sys.stderr, flush=True)
        results = []
        if opts.baseline:
            with worktree(opts.baseline) as tree:
                results.append(
                    one_drain(opts, latencies[0], opts.baseline_backlog, tree, f"baseline {opts.baseline}")
                )
        results += [one_drain(opts, latency, opts.backlog) for latency in latencies]
        rounds.append(results)
        if not opts.json:
            for result in results:
                print(describe(result), flush=True)
    merged = [
        {
            key: (median(r[i][key] for r in rounds) if isinstance(value, float) else value)
            for key, value in item.items()
        }
        for i, item in enumerate(rounds[-1])
    ]
    if opts.json:
        print(
            json.dumps(
                {"checkout": checkout(), "machine": machine(), "rounds": rounds, "median": merged}, indent=2
            )
        )
        return 0
    print(f"braze-relay delivery benchmark: {checkout()}, {machine()}; {opts.workers} workers")
    print("medians" if opts.repeat > 1 else "one round")
    for result in merged:
        print(describe(result))
    ours = [r for r in merged if not r["label"].startswith("baseline")]
    first = ours[0]
    print("== targets ==")
    if first["latency_ms"] == 50:
        ok = rate(first) >= 8000
        print(f"  {'PASS' if ok else 'FAIL'}  backlog at 50 ms >= 8,000 records/s: {rate(first):,.0f}")
    skip = len(merged) - len(ours)  # the baseline's drain comes first in each round
    for index, other in enumerate(ours[1:], start=1):
        paired = [r[skip + index]["records_per_s"] / r[skip]["records_per_s"] for r in rounds]
        share = rate(other) / rate(first)
        print(
            f"  {'PASS' if share >= 0.8 else 'FAIL'}  at {other['latency_ms']:g} ms >= 80% of the "
            f"{first['latency_ms']:g} ms figure: {share:.0%} "
            f"(each round: {', '.join(f'{p:.0%}' for p in paired)})"
        )
    worst = max(r["worker_cpu_ms_per_1000"] for r in ours)
    print(
        f"  {'PASS' if worst <= 75 else 'FAIL'}  worker CPU per 1,000 records <= 75 ms: "
        f"at most {worst:.1f} ms"
    )
    for base in (r for r in merged if r["label"].startswith("baseline")):
        before, after = base["worker_cpu_ms_per_1000"], first["worker_cpu_ms_per_1000"]
        print(f"        {base['label']}: {before:.1f} ms per 1,000 -> {after:.1f} ms ({after / before:.2f}x)")
    return 0


if __name__ == "__main__":
    run(main)
