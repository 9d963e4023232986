"""What record-level deduplication costs and what it keeps: the edge with and without a `dedup_key`,
Redis bytes per remembered record, and workers killed mid-delivery with and without it.

    python -m bench.dedup [--seconds 6] [--connections 32] [--workers 2] [--repeat 1] [--kills 8]

1. The edge: one-record postbacks (bench/postback.lua, each with a unique `id`) through the route
   `[routes.events]` as it is, then the same route with `dedup_key = "id"` (every postback remembered
   for the default day), served as bench/transform.py serves its variants, in the same round; prints
   accepted postbacks/s of each, their ratio, and web CPU per request.
2. Memory: 100,000 records stored through the relay's own edge script (Lane.push_new), each with its
   dedup digest, on the bench's Redis; the lane's list is then deleted, so INFO used_memory counts
   what the remembered records take: bytes per record, and what 100 million records a day cost with
   a one-day window.
3. Kills: 20,000 events of distinct messageIds stored through the edge (a TD export, in this process);
   one worker process delivers them into the simulator (Braze answering in 200 ms, RELAY_INFLIGHT=8,
   RELAY_LEASE_S=2) and is SIGKILLed every second or so, `--kills` times, a new worker started each
   time; then how many events Braze holds twice and how many wait as `ambiguous` dead letters, on a
   route with `dedup_key = "messageId"` and on the same route without.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

from bench.common import (
    ROUTES,
    WRITE_KEY,
    Processes,
    Workdir,
    expect,
    free_port,
    machine,
    measure_variant,
    procfile_command,
    redis_client,
    relay_env,
    run,
    start_simulator,
    variant_medians,
    variant_options,
    wait_for,
)

EDGE = [("no dedup_key", ROUTES), ('dedup_key = "id"', ROUTES + 'dedup_key = "id"\n')]
KILL_EVENTS = 20_000
MEMORY_RECORDS = 100_000


def memory_per_key(count: int = MEMORY_RECORDS) -> float:
    """INFO used_memory per record remembered by Lane.push_new (the records' own list deleted)."""
    from relay import budgets
    from relay.config import Delivery
    from relay.dedup import compile_dedup
    from relay.lanes import Lane, new_token

    client = redis_client()
    client.flushdb()
    lane, delivery = Lane("bench:track"), Delivery()
    dedup = compile_dedup("id", 86400, route={}, credentials=())
    before = int(client.info("memory")["used_memory"])
    for start in range(0, count, 1000):
        ids = range(start, min(start + 1000, count))
        digests = [dedup.digest(f"bench-{n}") for n in ids]
        records = ["x"] * len(digests)
        hold = budgets.Hold("bench", "bench", budgets.DEFAULTS, len(records), len(records), time.time())
        lane.push_new(
            client,
            records,
            digests,
            counter="a",
            duplicates="d",
            window_s=86400,
            hold=hold,
            token=new_token(),
            delivery=delivery,
        )
    client.delete(lane.list_key, lane.lease_key)
    used = int(client.info("memory")["used_memory"]) - before
    client.flushdb()
    return used / count


def kill_run(
    dedup_key: str | None, kills: int, procs: Processes, work: Workdir, sim_url: str, *, events: int
) -> dict[str, int]:
    """`events` events delivered by workers SIGKILLed `kills` times: copies in Braze, dead letters."""
    client = redis_client()
    client.flushdb()
    requests.post(sim_url + "/_sim/reset", timeout=10).raise_for_status()
    requests.post(sim_url + "/_sim/faults", json={"latency_ms": 200}, timeout=10).raise_for_status()
    routes = work.path / "kills.toml"
    routes.write_text(ROUTES + (f'dedup_key = "{dedup_key}"\n' if dedup_key else ""))
    env = relay_env(
        sim_url, routes, free_port(), RELAY_INFLIGHT="8", RELAY_LEASE_S="2", RELAY_TRACK_SHARDS="1"
    )
    store_events(env, routes, events)
    rng = random.Random(7)
    killed = 0
    while killed < kills and not lanes_empty(client):
        worker = procs.start("worker", procfile_command("worker"), env)
        started = sim_events(sim_url)
        wait_for(
            lambda s=started: sim_events(sim_url) > s or lanes_empty(client), 60, "this worker's deliveries"
        )
        time.sleep(rng.uniform(0.3, 0.9))  # a kill lands at some moment of the delivery: the bench's point
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        killed += 1
    last = procs.start("worker", procfile_command("worker"), env)
    wait_for(lambda: lanes_empty(client), 120, "the lanes to empty")
    os.killpg(last.pid, signal.SIGTERM)  # the next run's records are for its own workers only
    last.wait(timeout=30)
    copies = Counter(received_ids(sim_url))
    letters = [json.loads(raw) for raw in client.hvals("relay:{default}:dead")]
    ambiguous = sum(1 for letter in letters if letter["reason"] == "ambiguous")
    expect(len(copies) + ambiguous >= events, f"{events - len(copies)} of {events} events not in Braze")
    return {
        "kills": killed,
        "events": events,
        "in Braze": len(copies),
        "held twice or more": sum(1 for n in copies.values() if n > 1),
        "ambiguous dead letters": ambiguous,
        "other dead letters": sum(1 for letter in letters if letter["reason"] != "ambiguous"),
    }


def store_events(env: dict[str, str], routes: Path, events: int) -> None:
    """`events` events of distinct messageIds, stored by the relay's app in this process (a TD export)."""
    os.environ.update(
        {key: value for key, value in env.items() if key.startswith(("RELAY_", "BRAZE_", "REDIS"))}
    )
    from receiver import create_app
    from relay.config import load_settings

    app = create_app(load_settings())
    rows = [[f"k{n % 2000}", "tap", f"m-{n}"] for n in range(events)]
    body = json.dumps({"column_names": ["external_id", "name", "messageId"], "data": rows}).encode()
    answer = app.test_client().put(
        "/export/events", data=body, headers={"Authorization": _basic(), "Content-Type": "application/json"}
    )
    if answer.status_code != 200:
        raise RuntimeError(answer.get_data(as_text=True))


def _basic() -> str:
    return "Basic " + base64.b64encode(f"td:{WRITE_KEY}".encode()).decode()


def sim_events(sim_url: str) -> int:
    """Events the simulator's /users/track took so far."""
    return int(requests.get(sim_url + "/_sim/stats", timeout=10).json()["items_processed"]["events"])


def received_ids(sim_url: str) -> list[str]:
    """The messageId of every event Braze took, each copy."""
    found, since = [], 0
    while True:
        data = requests.get(sim_url + "/_sim/requests", params={"since": since}, timeout=60).json()
        for entry in data["requests"]:
            if entry["path"] == "/users/track" and 200 <= entry["status"] < 300:
                found += [event["properties"]["messageId"] for event in entry["body"].get("events", [])]
        if data["next"] == since:
            return found
        since = data["next"]


def lanes_empty(client: Any) -> bool:
    """True once no lane of the default workspace holds a record or a retry."""
    return not any(
        client.llen(key) or client.zcard(key.replace(b":q:", b":retry:"))
        for key in client.keys("relay:{default}:q:*")
    )


# `--smoke` (tests/test_bench.py): a tiny workload on the same code path, in a few seconds.
SMOKE = [
    "--seconds", "1", "--connections", "4", "--workers", "0", "--kills", "1", "--events", "600",
    "--memory-records", "1000",
]  # fmt: skip


def more_options(parser: argparse.ArgumentParser) -> None:
    """This bench's own options."""
    parser.add_argument("--kills", type=int, default=8, help="worker kills per run (default: %(default)s)")
    parser.add_argument(
        "--events", type=int, default=KILL_EVENTS, help="events of the kill runs (default: %(default)s)"
    )
    parser.add_argument(
        "--memory-records", type=int, default=MEMORY_RECORDS, help="records remembered (default: %(default)s)"
    )


def main(argv: list[str] | None = None) -> int:
    """The edge variants (`--repeat` rounds), the memory figure, then the kills with and without dedup."""
    opts = variant_options(
        "python -m bench.dedup",
        __doc__,
        argv,
        more_options,
    )
    kills = opts.kills
    rounds = []
    for number in range(opts.repeat):
        order = EDGE if number % 2 == 0 else EDGE[::-1]  # neither variant always runs first
        rounds.append({name: measure_variant(opts, routes=routes) for name, routes in order})
    load = f"wrk -c {opts.connections} -d {opts.seconds:g}s"
    print(f"dedup cost at the edge, {machine()}; {load}, median of {opts.repeat}")
    for name, _ in EDGE:
        got = variant_medians(rounds, name, EDGE[0][0])
        print(
            f"  {name:<18} {got['req_per_s']:8.1f} accepted/s  {got['share']:5.2f}x the route without   "
            f"web CPU {got['web_cpu_ms']:.2f} ms/request   ({got['non_2xx']:.0f} non-2xx)"
        )
    per_key = memory_per_key(opts.memory_records)
    print(
        f"Redis memory per remembered record: {per_key:.0f} bytes (INFO used_memory, {opts.memory_records:,} "
        f"records); 100 million a day with a one-day window: {per_key * 1e8 / 2**30:.1f} GiB"
    )
    work = Workdir()
    procs = Processes(work.path)
    try:
        sim_url = start_simulator(procs, 200)
        for label, key in (('dedup_key = "messageId"', "messageId"), ("no dedup_key", None)):
            got = kill_run(key, kills, procs, work, sim_url, events=opts.events)
            print(f"  {label:<24} " + ", ".join(f"{name} {value:,}" for name, value in got.items()))
    finally:
        procs.stop_all()
        work.close()
    return 0


if __name__ == "__main__":
    run(main)
