"""Where a drain job's CPU goes: one lane's backlog delivered in this process, timed and profiled.

    python -m bench.profile_drain [--records 30000] [--kind events|attributes] [--latency-ms 0]
                                  [--inflight N] [--no-profile] [--repeat 3] [--top 14] [--default-gc]

Starts the Braze simulator (`python -m braze_sim`, its own process, `--latency-ms`), stores
`--records` records on one lane as the edge does (the route's real schema, the edge's envelopes,
RPUSH in chunks of 1,000) with no worker running, then runs the real drain job
(`handlers.drain.Drainer`, the worker's code, its sender threads included) in this process until the
lane is empty. Prints the CPU this process used per record delivered (every thread: process_time),
`--repeat` times, then a second pass under cProfile with a CPU-time clock in every thread (the job's
and each sender's), split into the drain path's steps. cProfile adds its own cost to every call:
read the split as shares, and the first figure as the cost.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BRAZE_KEY,
    REDIS_URL,
    ROOT,
    Processes,
    SimLog,
    Workdir,
    install_signal_handlers,
    machine,
    redis_client,
    run,
    start_simulator,
)

ROUTES = """
[routes.events]
mode = "user_track"
track_record_type = "custom_events"

[routes.attributes]
mode = "user_track"
track_record_type = "user_profile_attributes"
skip_unchanged = {skip}
"""

# (label, function as pstats names it: (file suffix, function)); inclusive CPU of each.
STEPS = [
    ("take a chunk (LLEN, LRANGE, envelopes parsed)", "handlers/drain.py", "take"),
    ("translate (records to Braze objects)", "handlers/translate.py", "to_items"),
    ("newest-value watermarks (one script call)", "handlers/watermarks.py", "keep_newest"),
    ("skip_unchanged memory (one script call)", "handlers/unchanged.py", "drop_unchanged"),
    ("plan rounds (packing, JSON of each object)", "handlers/packing.py", "plan"),
    ("  of which JSON of each object", "handlers/packing.py", "encode"),
    ("send (in the sender threads)", "handlers/drain.py", "send"),
    ("  rate limiter (shared window in Redis)", "handlers/ratelimit.py", "acquire"),
    ("  lease check before the send", "relay/lanes.py", "confirm"),
    ("  body bytes (objects' JSON joined)", "handlers/packing.py", "data"),
    ("  Braze POST (requests, http.client)", "handlers/braze.py", "post"),
    ("  observe (log line, rate-limit headers)", "handlers/context.py", "observe"),
    ("  judge the answer", "handlers/outcomes.py", "judge"),
    ("commit (WATCH lease, MULTI/EXEC)", "handlers/commit.py", "commit"),
    ("  settle (each record's ending, metrics)", "handlers/commit.py", "settle"),
    ("the job's own lease renewals, release", "handlers/drain.py", "confirm"),
]


def fill(settings: Any, kind: str, records: int, generation: int = 0) -> Any:
    """`records` records of the route's kind on its lane, stored as the edge stores them; the lane."""
    from receiver.enqueue import Batch
    from receiver.records.schemas import schema_for

    route = settings.routes[kind]
    schema = schema_for(route, settings.limits)
    batch = Batch(route=route, request_id=f"bench{generation}", shards=1)
    for index in range(records):
        if kind == "events":
            raw = {
                "external_id": f"u{index % 5000}",
                "name": "view",
                "id": f"r{generation}-{index}",
                "n": index,
            }
        else:
            raw = {
                "external_id": f"u{index}",
                "tier": f"t{(index + generation) % 3}" if index % 20 == 0 else "t0",
                "city": "Oslo",
                "score": index % 100,
                "vip": index % 7 == 0,
            }
        batch.add(index, schema.load(raw))
    ((lane, payloads),) = batch.payloads.items()
    client = redis_client()
    for start in range(0, len(payloads), 1000):
        client.rpush(lane.list_key, *payloads[start : start + 1000])
    return lane


def drain(ctx: Any, lane: Any) -> None:
    """Run the drain job (as the worker runs it, minus RQ) until the lane is empty."""
    from handlers.drain import Drainer
    from relay.lanes import new_token

    client = ctx.redis
    while client.llen(lane.list_key) or client.zcard(lane.retry_key):
        token = new_token()
        if lane.take_lease(client, token, ctx.settings.delivery):
            Drainer(ctx, lane, token).run()
            client.delete(lane.lease_key)


def in_every_sender(ctx: Any, task: Any) -> None:
    """Run `task` once in each sender thread (one call per thread: they meet at a barrier)."""
    width = ctx.settings.delivery.inflight
    barrier = threading.Barrier(width)

    def once() -> None:
        barrier.wait()
        task()

    for future in [ctx.senders.submit(once) for _ in range(width)]:
        future.result()


def profile_senders(ctx: Any) -> dict[int, cProfile.Profile]:
    """A CPU-time profiler enabled in each sender thread, by thread id."""
    profiles: dict[int, cProfile.Profile] = {}

    def enable() -> None:
        profile = profiles[threading.get_ident()] = cProfile.Profile(time.thread_time)
        profile.enable()

    in_every_sender(ctx, enable)
    return profiles


def stop_senders(ctx: Any, profiles: dict[int, cProfile.Profile]) -> None:
    """Disable each sender thread's profiler in its own thread."""

    def disable() -> None:
        profiles[threading.get_ident()].disable()

    in_every_sender(ctx, disable)


def inclusive(stats: pstats.Stats, path: str, func: str) -> float:
    """Cumulative seconds of every function named `func` in a file ending with `path`."""
    total = 0.0
    for (filename, _, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if name == func and filename.endswith(path):
            total += cumulative
    return total


# `--smoke` (tests/test_bench.py): a tiny workload on the same code path, in a few seconds.
SMOKE = ["--records", "1500", "--repeat", "1"]


def main(argv: list[str] | None = None) -> int:
    """Fill, drain, print; then fill, drain under cProfile, print the split."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_drain", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--records", type=int, default=30_000, help="records per pass (default: %(default)s)")
    parser.add_argument("--kind", choices=("events", "attributes"), default="events")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="simulator latency (default: %(default)s)"
    )
    parser.add_argument("--inflight", type=int, help="RELAY_INFLIGHT (default: the product's default)")
    parser.add_argument("--skip-unchanged", action="store_true", help="attributes: route with skip_unchanged")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes (default: %(default)s)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the cProfile pass")
    parser.add_argument(
        "--default-gc", action="store_true", help="CPython's collector thresholds (the worker's are tuned)"
    )
    parser.add_argument("--top", type=int, default=14, help="functions listed (default: %(default)s)")
    opts = parser.parse_args(argv)
    install_signal_handlers()
    print(f"{machine()}; {opts.records:,} {opts.kind} per pass, Braze simulated at {opts.latency_ms:g} ms")
    work = Workdir()
    procs = Processes(work.path)
    client = redis_client()
    client.flushdb()
    try:
        sim_url = start_simulator(procs, opts.latency_ms)
        routes = work.path / "relay.toml"
        routes.write_text(ROUTES.format(skip="true" if opts.skip_unchanged else "false"))
        os.environ.update(
            {
                "REDIS_URL": REDIS_URL,
                "BRAZE_REST_ENDPOINT": sim_url,
                "BRAZE_API_KEY": BRAZE_KEY,
                "RELAY_CONFIG": str(routes),
                "RELAY_WRITE_KEYS": "bench-profile-key",
                "RELAY_TRACK_SHARDS": "1",
                "RELAY_SLICE_S": "3600",
            }
        )
        if opts.inflight:
            os.environ["RELAY_INFLIGHT"] = str(opts.inflight)
        from handlers import context
        from relay.config import load_settings

        settings = load_settings()
        if not opts.default_gc:
            from handlers.worker import tune_gc

            tune_gc()  # as the worker process does before it serves
        ctx = context.Context(settings, client)
        context.install(ctx)
        sim = SimLog(sim_url, "bench")
        print(f"RELAY_INFLIGHT={settings.delivery.inflight}")
        per_record = []
        for generation in range(opts.repeat):
            lane = fill(settings, opts.kind, opts.records, generation)
            sim.reset(opts.latency_ms)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            drain(ctx, lane)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            per_record.append(1e6 * cpu / opts.records)
            print(
                f"  pass {generation + 1}: {opts.records / wall:,.0f} records/s, "
                f"CPU {1e6 * cpu / opts.records:.1f} us per record "
                f"({1e6 * cpu / opts.records:.1f} ms "
                f"per 1,000), {1e6 * wall / opts.records:.1f} us wall"
            )
        print(f"  median: {statistics.median(per_record):.1f} us of CPU per record delivered")
        if opts.profile:
            lane = fill(settings, opts.kind, opts.records, opts.repeat)
            senders = profile_senders(ctx)
            main_profile = cProfile.Profile(time.thread_time)
            main_profile.enable()
            drain(ctx, lane)
            main_profile.disable()
            stop_senders(ctx, senders)
            stats = pstats.Stats(main_profile)
            for profile in senders.values():
                stats.add(profile)
            total = sum(value[2] for value in stats.stats.values())  # type: ignore[attr-defined]
            print(
                "== under cProfile (CPU time of every thread; "
                f"total {1e6 * total / opts.records:.1f} us/record) =="
            )
            for label, path, func in STEPS:
                seconds = inclusive(stats, path, func)
                if seconds:
                    print(
                        f"  {label:<58} {1e6 * seconds / opts.records:6.2f} us/record "
                        f"({100 * seconds / total:5.1f} %)"
                    )
            print("  innermost functions (own CPU):")
            ranked = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[: opts.top]  # type: ignore[attr-defined]
            for (filename, line, name), value in ranked:
                short = filename.split("site-packages/")[-1].removeprefix(f"{ROOT}/")
                print(
                    f"    {short}:{line}({name})".ljust(78)
                    + f"{1e6 * value[2] / opts.records:6.2f} us/record"
                )
    finally:
        procs.stop_all()
        client.flushdb()
        work.close()
    return 0


if __name__ == "__main__":
    run(main)
