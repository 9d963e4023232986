"""A full-size TD export: 100,000 rows x 10 columns PUT to /export/{route} in one request.

    python -m bench.export [--rows 100000] [--columns 10] [--repeat 3]

Starts gunicorn (the Procfile's web, one worker so its memory is the request's) against a Redis
database of the bench's own, PUTs the export as TD's web export does (HTTP Basic, the write key as
password), and prints: the body size, the time to the 200, the peak RSS of the web worker while it
handled the request (sampled every 20 ms from /proc) against its RSS before, and the records that
reached the lane. Targets: under 10 s and under 300 MB peak in the web process.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Processes,
    Workdir,
    _ppid_map,
    free_port,
    machine,
    median,
    put_export,
    redis_client,
    relay_env,
    rss_mb,
    run,
    start_gunicorn,
    track_waiting,
)

ROUTES = """
[routes.profiles]
mode = "user_track"
track_record_type = "user_profile_attributes"
"""


def export_body(rows: int, columns: int) -> bytes:
    """TD's export shape: an external_id column and `columns - 1` attribute columns."""
    names = ["external_id", *(f"attr_{n}" for n in range(1, columns))]
    data = [[f"user-{row}", *(f"value-{row}-{n}" for n in range(1, columns))] for row in range(rows)]
    body = {"column_names": names, "column_types": ["string"] * columns, "data": data}
    return json.dumps(body).encode()


def web_worker_pid(master: int) -> int:
    """gunicorn's (one) worker process under the master."""
    children = _ppid_map().get(master, [])
    assert len(children) == 1, f"expected one gunicorn worker, found {children}"
    return children[0]


def run_once(body: bytes, rows: int) -> dict[str, float]:
    """One export against a fresh gunicorn; returns the figures."""
    work = Workdir()
    procs = Processes(work.path)
    routes = work.path / "relay.toml"
    routes.write_text(ROUTES)
    client = redis_client()
    client.flushdb()
    try:
        env = relay_env("http://127.0.0.1:9", routes, free_port(), WEB_CONCURRENCY="1")
        url = start_gunicorn(procs, env)
        worker = web_worker_pid(procs.running[0][1].pid)
        before = rss_mb(worker)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                peak[0] = max(peak[0], rss_mb(worker))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        response = put_export(url, "profiles", body)
        took = time.perf_counter() - started
        done.set()
        sampler.join()
        assert response.status_code == 200, response.text[:500]
        accepted = response.json()["accepted"]
        return {
            "seconds": took,
            "peak_mb": peak[0],
            "before_mb": before,
            "accepted": accepted,
            "in_lane": track_waiting(client),
            "rows_per_s": rows / took,
        }
    finally:
        procs.stop_all()
        client.flushdb()
        work.close()


# `--smoke` (tests/test_bench.py): a tiny workload on the same code path, in a few seconds.
SMOKE = ["--rows", "2000", "--columns", "3", "--repeat", "1"]


def main() -> int:
    """Build the body once, run the export `--repeat` times, print each run and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--columns", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    body = export_body(args.rows, args.columns)
    print(f"export: {args.rows:,} rows x {args.columns} columns, body {len(body) / 1e6:.1f} MB")
    runs = []
    for index in range(args.repeat):
        figures = run_once(body, args.rows)
        runs.append(figures)
        print(
            f"run {index + 1}: 200 in {figures['seconds']:.2f} s ({figures['rows_per_s']:,.0f} rows/s), "
            f"web worker RSS {figures['before_mb']:.0f} MB before, {figures['peak_mb']:.0f} MB peak; "
            f"accepted {figures['accepted']:,}, in the lane {figures['in_lane']:,}"
        )
    seconds = median(run["seconds"] for run in runs)
    peak = median(run["peak_mb"] for run in runs)
    print(
        f"median: {seconds:.2f} s (target < 10 s: {'pass' if seconds < 10 else 'FAIL'}), "
        f"peak {peak:.0f} MB (target < 300 MB: {'pass' if peak < 300 else 'FAIL'})"
    )
    return 0


if __name__ == "__main__":
    run(main)
