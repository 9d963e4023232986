"""A daily re-export with skip_unchanged: what is sent the second day, and what the memory costs.

    python -m bench.reexport [--rows 100000] [--attributes 5] [--changed 0.05] [--latency-ms 50]

The simulator, gunicorn and the Procfile's two workers; a route of profile attributes with
`skip_unchanged = true`. Day one: `--rows` profiles (`--attributes` attributes each) through TD's
export endpoint, drained. Day two: the same rows with `--changed` of them changed in one attribute,
drained. Prints the attribute objects (and values) Braze received each day, the ratio (target: at
most 6% of day one's objects on day two), what /metrics counted as unchanged, and the memory: the
MEMORY USAGE of the remembered users' keys, sampled, and the cost of one key and of each field,
measured apart on 1,000 users with 1 and with 20 fields, extrapolated to 10 million users.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import requests

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Processes,
    Workdir,
    checkout,
    free_port,
    install_signal_handlers,
    machine,
    procfile_command,
    put_export,
    redis_client,
    relay_env,
    run,
    start_gunicorn,
    start_simulator,
    wait_for,
)
from bench.pipeline import relay_counters

ROUTES = """
[routes.profiles]
mode = "user_track"
track_record_type = "user_profile_attributes"
skip_unchanged = true
"""
CHUNK = 25_000


def rows_of(count: int, attributes: int, changed: set[int]) -> list[list[Any]]:
    """Profile rows: an external_id and `attributes` values; rows in `changed` have a new `attr_1`."""
    return [
        [
            f"user-{n}",
            *(f"v{n}-{a}" + ("-new" if a == 1 and n in changed else "") for a in range(1, attributes + 1)),
        ]
        for n in range(count)
    ]


def export(web_url: str, names: list[str], rows: list[list[Any]]) -> None:
    """Rows through TD's export endpoint, 25,000 a request."""
    session = requests.Session()
    for start in range(0, len(rows), CHUNK):
        body = {
            "column_names": names,
            "column_types": ["string"] * len(names),
            "data": rows[start : start + CHUNK],
        }
        put_export(web_url, "profiles", json.dumps(body).encode(), session).raise_for_status()


def sent(sim_url: str, since: int) -> tuple[int, int, int]:
    """(attribute objects, attribute values, next log index) Braze took from log index `since` on."""
    answer = requests.get(f"{sim_url}/_sim/requests", params={"since": since}, timeout=120)
    answer.raise_for_status()
    data = answer.json()
    objects = values = 0
    for entry in data["requests"]:
        if entry["path"] != "/users/track" or not 200 <= entry["status"] < 300:
            continue
        for obj in (entry.get("body") or {}).get("attributes", []):
            objects += 1
            values += sum(1 for key in obj if key != "external_id")
    return objects, values, data["next"]


def ended(client: Any) -> int:
    """Records delivered or left unchanged so far (the relay's own counters)."""
    counters = relay_counters(client)
    return counters.get("delivered", 0) + counters.get("unchanged", 0) + counters.get("superseded", 0)


def sampled_usage(client: Any, pattern: str, sample: int = 2000) -> tuple[int, float, float]:
    """(keys matching, mean MEMORY USAGE of a sample, mean fields per key of that sample)."""
    keys = list(client.scan_iter(match=pattern, count=10_000))
    picked = random.Random(7).sample(keys, min(sample, len(keys)))
    usage = [client.memory_usage(key, samples=0) for key in picked]
    fields = [client.hlen(key) for key in picked]
    return len(keys), statistics.mean(usage) if usage else 0.0, statistics.mean(fields) if fields else 0.0


def cost_per_key_and_field(client: Any) -> tuple[float, float]:
    """Bytes of one remembered user's key with no field, and of each field: 1,000 users, 1 and 20 fields."""
    from handlers.unchanged import Memo, Memory, digest
    from relay import store

    memory = Memory(client, 30 * 86400, skip_routes=(), remembering=())
    usage = {}
    for fields in (1, 20):
        memos = [
            Memo(
                store.keys("default").unchanged(f"sizing-{fields}-{n}"),
                {f"attr_{a}": digest(f"v{n}-{a}") for a in range(fields)},
            )
            for n in range(1000)
        ]
        with client.pipeline(transaction=True) as pipe:
            memory.remember(pipe, memos, time.time())
            pipe.execute()
        usage[fields] = statistics.mean(client.memory_usage(memo.key, samples=0) for memo in memos)
        client.delete(*[memo.key for memo in memos])
    per_field = (usage[20] - usage[1]) / 19
    return usage[1] - per_field, per_field


# `--smoke` (tests/test_bench.py): a tiny workload on the same code path, in a few seconds.
SMOKE = ["--rows", "1000"]


def main(argv: list[str] | None = None) -> int:
    """Day one, day two, the memory; print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.reexport", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--attributes", type=int, default=5)
    parser.add_argument("--changed", type=float, default=0.05, help="share of rows changed on day two")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=2)
    opts = parser.parse_args(argv)
    install_signal_handlers()
    print(f"braze-relay re-export benchmark: {checkout()}, {machine()}")
    work = Workdir()
    procs = Processes(work.path)
    client = redis_client()
    client.flushdb()
    routes = work.path / "relay.toml"
    routes.write_text(ROUTES)
    names = ["external_id", *(f"attr_{a}" for a in range(1, opts.attributes + 1))]
    changed = set(random.Random(11).sample(range(opts.rows), int(opts.rows * opts.changed)))
    try:
        sim_url = start_simulator(procs, opts.latency_ms)
        env = relay_env(sim_url, routes, free_port())
        web_url = start_gunicorn(procs, env)
        for _ in range(opts.workers):
            procs.start("worker", procfile_command("worker"), env)
        days = []
        since = 0
        for day, rows in (
            (1, rows_of(opts.rows, opts.attributes, set())),
            (2, rows_of(opts.rows, opts.attributes, changed)),
        ):
            started = time.time()
            target = ended(client) + opts.rows
            export(web_url, names, rows)
            wait_for(lambda target=target: ended(client) >= target, 600, f"day {day}'s rows", interval=0.5)
            objects, values, since = sent(sim_url, since)
            days.append({"objects": objects, "values": values, "seconds": time.time() - started})
            print(
                f"  day {day}: {opts.rows:,} rows exported; Braze took {objects:,} attribute objects, "
                f"{values:,} values ({days[-1]['seconds']:.1f} s)"
            )
        counters = relay_counters(client)
        keys, usage, fields = sampled_usage(client, "relay:{default}:uc:*")
        wm_keys, wm_usage, _ = sampled_usage(client, "relay:{default}:wm:*")
        per_key, per_field = cost_per_key_and_field(client)
    finally:
        procs.stop_all()
        work.close()
        client.flushdb()
    share = days[1]["objects"] / days[0]["objects"]
    print(
        f"  day two sent {share:.2%} of day one's attribute objects ({days[1]['values']:,} of "
        f"{days[0]['values']:,} values); changed rows {len(changed):,} ({opts.changed:.0%})"
    )
    print(f"  /metrics: {counters.get('unchanged', 0):,} records unchanged (objects not sent)")
    print(f"  {'PASS' if share <= 0.06 else 'FAIL'}  day two <= 6% of day one's objects: {share:.2%}")
    print("== the memory ==")
    print(
        f"  {keys:,} users remembered; MEMORY USAGE {usage:.0f} bytes per user key with {fields:.1f} fields "
        f"({usage / max(fields, 1):.1f} bytes per remembered field, key included)"
    )
    print(f"  measured apart: {per_key:.0f} bytes per user key + {per_field:.1f} bytes per field")
    for count in (5, 10, 20):
        total = 10_000_000 * (per_key + count * per_field)
        print(f"  10 million users x {count} attributes: {total / 2**30:.1f} GiB")
    print(f"  (newest-value watermarks, 72 h: {wm_keys:,} keys, {wm_usage:.0f} bytes each)")
    return 0


if __name__ == "__main__":
    run(main)
