"""Delivery at Braze's speed: a backlog drained by the Procfile's workers into the simulator.

    python -m bench.delivery [--backlog 100000] [--workloads repeat,distinct] [--latencies 50,200,500]
                             [--workers 2] [--repeat 1] [--baseline REF [--baseline-backlog 30000]] [--json]

Two workloads: `repeat`, a backfill of 20 events per user (5,000 users for 100,000 events,
interleaved: every user's first event, then every user's second...), and `distinct`, one event per
user. For each workload and Braze latency: the simulator (`python -m braze_sim --latency-ms L`,
connections kept alive), gunicorn (the Procfile's web, 2 workers), `--backlog` custom events stored
through TD's export endpoint (25,000 rows a request) with no worker running, then `--workers`
processes of the Procfile's `worker` draining it. The lanes are held (their lease taken by the
bench) until the workers have started and registered, so the workers' start-up is not counted;
then released, and the workers' tickers wake them.

Prints records delivered per second (first to last arrival at the simulator); the CPU of the worker
processes per 1,000 records over the drain only: /proc/<pid>/stat of every worker, sampled every
20 ms, from the first sample where a drain job holds a lane (its first records are taken at once)
to the first where every lane is empty (the last records committed); the simulator's and Redis's
CPU over the same span; Braze requests per record, duplicates, non-2xx answers; and each latency's
rate as a share of the 50 ms one of its workload.

`--baseline REF` first measures the same at the first latency on another commit (a temporary git
worktree of REF, run with this venv; `--baseline-backlog` records): CPU per record before and after.

Targets: at 50 ms with 2 workers on 2 cores at least 20,000 records/s, either workload; at 200 and
500 ms at least 80% of that; worker CPU at most 40 ms per 1,000 records; Braze requests per record
at most 0.015. Exits 1 if a record is not delivered or Braze answered a non-2xx.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
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
    cpu_s,
    expect,
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
EVENTS_PER_USER = 20  # the `repeat` workload: a backfill of this many events per user
CLOCK_S = 0.02  # the drain's clock: worker CPU and the lanes sampled this often


def users_of(workload: str, count: int) -> int:
    """How many users `count` events of the workload come from."""
    return max(1, count // EVENTS_PER_USER) if workload == "repeat" else count


def export_backlog(web_url: str, run_id: str, count: int, users: int) -> None:
    """`count` custom events of `users` users, interleaved, through TD's export endpoint, each with its
    id and send time as properties."""
    session = requests.Session()
    for start in range(0, count, EXPORT_CHUNK):
        now = time.time()
        rows = [
            [f"{run_id}-u{n % users}", "bench_event", f"{run_id}-{n}", now]
            for n in range(start, min(start + EXPORT_CHUNK, count))
        ]
        body = {
            "column_names": ["external_id", "name", "id", "sent_at"],
            "column_types": ["string", "string", "string", "double"],
            "data": rows,
        }
        put_export(web_url, "events", json.dumps(body).encode(), session).raise_for_status()


class DrainClock(threading.Thread):
    """Samples, every CLOCK_S, the workers' CPU and whether a drain job holds a lane and any records
    wait: the drain is from the first sample with a lane held by a job to the first with none waiting."""

    def __init__(self, client: Any, lanes: list[str], pids: dict[str, list[int]]) -> None:
        super().__init__(name="drain-clock", daemon=True)
        self.client, self.pids = client, pids
        self.lanes = [Lane(name) for name in lanes]
        self.stopping = threading.Event()
        self.start_at: dict[str, float] | None = None  # time and CPU s of each group when the drain began
        self.end_at: dict[str, float] | None = None  # ... and when every lane was empty

    def look(self) -> tuple[bool, int]:
        """Whether a drain job holds a lane, and the records waiting (lists and retry sets)."""
        pipe = self.client.pipeline(transaction=False)
        for lane in self.lanes:
            pipe.get(lane.lease_key)
            pipe.llen(lane.list_key)
            pipe.zcard(lane.retry_key)
        found = pipe.execute()
        held = any(value not in (None, HOLD.encode()) for value in found[0::3])
        return held, sum(found[1::3]) + sum(found[2::3])

    def run(self) -> None:
        """Sample until the drain ends or the clock is stopped."""
        while not self.stopping.wait(CLOCK_S):
            sample = {name: sum(cpu_s(pid) for pid in pids) for name, pids in self.pids.items()}
            info = self.client.info("cpu")
            sample["redis"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
            held, waiting = self.look()
            sample["time"] = time.time()
            if self.start_at is None and held:
                self.start_at = sample
            if self.start_at is not None and waiting == 0:
                self.end_at = sample
                return

    def spent(self, name: str) -> float:
        """CPU seconds of a group (or "time": seconds) over the drain; nan if it did not end."""
        if self.start_at is None or self.end_at is None:
            return float("nan")
        return self.end_at[name] - self.start_at[name]


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
    opts: argparse.Namespace,
    latency_ms: float,
    backlog: int,
    workload: str,
    *,
    root: Path = ROOT,
    label: str = "",
) -> dict[str, Any]:
    """Fill a backlog of the workload, drain it with the Procfile's workers at one Braze latency."""
    run_id = f"d{int(time.time() * 1000) % 10**9}"
    work = Workdir(opts.keep_logs)
    procs = Processes(work.path, root=root)
    if opts.own_redis:
        start_redis(procs)
    client = redis_client()
    client.flushdb()
    sampler: Sampler | None = None
    clock: DrainClock | None = None
    try:
        sim_url = start_simulator(procs, latency_ms)
        sim_pid = procs.running[-1][1].pid
        env = relay_env(sim_url, work.routes_file(), free_port(), **opts.knobs)
        web_url = start_gunicorn(procs, env)
        export_backlog(web_url, run_id, backlog, users_of(workload, backlog))
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
        redis0 = RedisSnapshot.take(client)
        clock = DrainClock(client, lanes, {"worker": workers, "sim": [sim_pid]})
        clock.start()
        for lane in lanes:  # the workers' tickers wake the lanes within a second
            client.delete(Lane(lane).lease_key)
        deadline = time.monotonic() + opts.drain_timeout
        while sim.delivered < backlog and time.monotonic() < deadline:
            time.sleep(0.5)
            sim.poll()
            procs.check_alive()
        clock.join(timeout=max(1.0, deadline - time.monotonic()))
        redis1 = RedisSnapshot.take(client)
        sampler.stop()
        sim.poll()
        left = sum(int(client.llen(Lane(lane).list_key)) for lane in lanes)
    finally:
        if clock is not None:
            clock.stopping.set()
        if sampler is not None:
            sampler.stop()
        with contextlib.suppress(Exception):  # the bench's own Redis goes with the processes
            client.flushdb()
        procs.stop_all()
        work.close()
    times = sorted(sim.first_time.values())
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    delivered = sim.delivered
    expect(
        delivered == backlog,
        f"{delivered:,} of {backlog:,} records delivered ({workload}, {latency_ms:g} ms)",
    )
    expect(left == 0, f"{left:,} records left in the lanes ({workload}, {latency_ms:g} ms)")
    per_1000 = {name: 1e6 * clock.spent(name) / max(delivered, 1) for name in ("worker", "sim", "redis")}
    return {
        "label": label or "this checkout",
        "workload": workload,
        "users": users_of(workload, backlog),
        "latency_ms": latency_ms,
        "backlog": backlog,
        "delivered": delivered,
        "left": left,
        "duplicates": sim.copies - delivered,
        "records_per_s": round(delivered / span, 1) if span > 0 else float("nan"),
        "drain_s": round(clock.spent("time"), 2),
        "braze_requests": sim.track_requests,
        "braze_non_2xx": sim.track_non_2xx,
        "requests_per_record": round(sim.track_requests / max(delivered, 1), 4),
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
        f"  {result['label']:<16} {result['workload']:<8} ({result['users']:,} users) "
        f"Braze {result['latency_ms']:>4g} ms: {result['records_per_s']:>9,.0f} records/s   "
        f"worker CPU {result['worker_cpu_ms_per_1000']:5.1f} ms per 1,000 over the drain "
        f"({result['drain_s']:g} s; sim {result['sim_cpu_ms_per_1000']:.1f}, "
        f"redis {result['redis_cpu_ms_per_1000']:.1f}); "
        f"{result['delivered']:,}/{result['backlog']:,} delivered, {result['duplicates']} duplicates, "
        f"{result['braze_requests']:,} requests ({result['requests_per_record']:g} per record, "
        f"{result['braze_non_2xx']} non-2xx); Redis {result['redis_commands_per_record']:g} commands "
        f"per record, {result['queued_bytes_per_record']:.0f} bytes per queued record; worker peak RSS "
        f"{result['worker_peak_rss_mb']:.0f} MB"
    )


def rate(result: dict[str, Any]) -> float:
    """Records delivered per second."""
    return float(result["records_per_s"])


# `--smoke` (tests/test_bench.py): a tiny workload on the same code path, in a few seconds.
SMOKE = ["--backlog", "2000", "--latencies", "50", "--no-quiet-wait", "--drain-timeout", "60"]


def main(argv: list[str] | None = None) -> int:
    """Run the drains, print the figures and the targets."""
    parser = argparse.ArgumentParser(prog="python -m bench.delivery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=100_000, help="records (default: %(default)s)")
    parser.add_argument(
        "--latencies", default="50,200,500", help="Braze latencies in ms (default: %(default)s)"
    )
    parser.add_argument(
        "--workloads", default="repeat,distinct", help="repeat, distinct or both (default: %(default)s)"
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
    workloads = opts.workloads.split(",")
    rounds: list[list[dict[str, Any]]] = []
    for index in range(opts.repeat):
        if opts.repeat > 1:
            print(f"round {index + 1} of {opts.repeat} ...", file=sys.stderr, flush=True)
        results = []
        for workload in workloads:
            if opts.baseline:
                with worktree(opts.baseline) as tree:
                    label = f"baseline {opts.baseline}"
                    results.append(
                        one_drain(opts, latencies[0], opts.baseline_backlog, workload, root=tree, label=label)
                    )
            results += [one_drain(opts, latency, opts.backlog, workload) for latency in latencies]
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
    print("== targets ==")
    for workload in workloads:
        print_targets(workload, merged, rounds)
    return 0


def print_targets(workload: str, merged: list[dict[str, Any]], rounds: list[list[dict[str, Any]]]) -> None:
    """PASS or FAIL for each target, for one workload (its first latency is the anchor of the others)."""
    mine = [i for i, r in enumerate(merged) if r["workload"] == workload]
    ours = [i for i in mine if not merged[i]["label"].startswith("baseline")]
    first = merged[ours[0]]
    if first["latency_ms"] == 50:
        ok = rate(first) >= 20_000
        print(f"  {'PASS' if ok else 'FAIL'}  {workload}: at 50 ms >= 20,000 records/s: {rate(first):,.0f}")
    for i in ours[1:]:
        other = merged[i]
        paired = [r[i]["records_per_s"] / r[ours[0]]["records_per_s"] for r in rounds]
        share = rate(other) / rate(first)
        print(
            f"  {'PASS' if share >= 0.8 else 'FAIL'}  {workload}: at {other['latency_ms']:g} ms >= 80% of "
            f"the {first['latency_ms']:g} ms figure: {share:.0%} "
            f"(each round: {', '.join(f'{p:.0%}' for p in paired)})"
        )
    worst = max(merged[i]["worker_cpu_ms_per_1000"] for i in ours)
    verdict = "PASS" if worst <= 40 else "FAIL"
    print(f"  {verdict}  {workload}: worker CPU per 1,000 records <= 40 ms: at most {worst:.1f}")
    most = max(merged[i]["requests_per_record"] for i in ours)
    verdict = "PASS" if most <= 0.015 else "FAIL"
    print(f"  {verdict}  {workload}: Braze requests per record <= 0.015: at most {most:g}")
    for i in mine:
        if merged[i]["label"].startswith("baseline"):
            before, after = merged[i]["worker_cpu_ms_per_1000"], first["worker_cpu_ms_per_1000"]
            change = f"{before:.1f} ms per 1,000 -> {after:.1f} ms ({after / before:.2f}x)"
            print(f"        {merged[i]['label']}: {change}")


if __name__ == "__main__":
    run(main)
