"""Consent while a bulk backlog drains: how long an unsubscribe takes to reach Braze.

    python -m bench.consent [--backlog 100000] [--rate 20] [--seconds 15] [--latency-ms 50]
                            [--no-consent-worker]

Loads `--backlog` custom events into the relay (TD ingestion, 500 per request) with no worker
running, then starts the Procfile's `worker` and `consent` roles (the consent-only worker can be
left out to see what it buys) against the simulator (`--latency-ms` per answer). While the backlog
drains, one-record consent postbacks (a subscription group change for a user of their own) arrive
at `--rate` per second for `--seconds`. Prints postback-accepted to simulator-received for the
consent records (p50, p99, max) and how much of the backlog was still waiting when the last consent
record landed. Target: p99 under 300 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import requests

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    WRITE_KEY,
    Processes,
    Workdir,
    free_port,
    machine,
    percentile,
    procfile_command,
    redis_client,
    relay_env,
    run,
    start_gunicorn,
    start_simulator,
    track_waiting,
    wait_for,
)

ROUTES = """
[routes.events]
database = "bench"
table = "events"
mode = "user_track"
track_record_type = "custom_events"

[routes.consent]
database = "bench"
table = "consent"
mode = "user_subscription"
"""
CONSENT_PATH = "/v2/subscription/status/set"


def load_backlog(base: str, count: int) -> None:
    """`count` custom events through TD ingestion, 500 per request."""
    session = requests.Session()
    headers = {"Authorization": f"TD1 {WRITE_KEY}", "Content-Type": "application/json"}
    for start in range(0, count, 500):
        records = [
            {"external_id": f"bulk-{n % 5000}", "name": "view", "n": n} for n in range(start, start + 500)
        ]
        response = session.post(
            f"{base}/bench/events", data=json.dumps({"records": records}), headers=headers
        )
        response.raise_for_status()


def consent_arrivals(sim_url: str, since: int) -> tuple[dict[str, float], int]:
    """Arrival time at the simulator of each external_id in a v2 subscription call, and the next index."""
    answer = requests.get(f"{sim_url}/_sim/requests", params={"since": since}, timeout=60)
    answer.raise_for_status()
    data = answer.json()
    arrivals: dict[str, float] = {}
    for entry in data["requests"]:
        if entry["path"] != CONSENT_PATH or not 200 <= entry["status"] < 300:
            continue
        for group in (entry.get("body") or {}).get("subscription_groups", []):
            for external_id in group.get("external_ids", []):
                arrivals.setdefault(external_id, entry["time"])
    return arrivals, data["next"]


# `--smoke` (tests/test_bench.py): a tiny workload on the same code path, in a few seconds.
SMOKE = ["--backlog", "2000", "--rate", "10", "--seconds", "2"]


def main() -> int:
    """Run once and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=20.0, help="consent postbacks per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--no-consent-worker", action="store_true")
    args = parser.parse_args()
    print(machine())
    work = Workdir()
    procs = Processes(work.path)
    routes = work.path / "relay.toml"
    routes.write_text(ROUTES)
    client = redis_client()
    client.flushdb()
    try:
        sim_url = start_simulator(procs, args.latency_ms)
        env = relay_env(sim_url, routes, free_port())
        base = start_gunicorn(procs, env)
        started = time.perf_counter()
        load_backlog(base, args.backlog)
        print(
            f"backlog: {track_waiting(client):,} track records queued in "
            f"{time.perf_counter() - started:.1f} s"
        )
        procs.start("worker", procfile_command("worker"), env)
        if not args.no_consent_worker:
            procs.start("consent", procfile_command("consent"), env)
        wait_for(lambda: track_waiting(client) < args.backlog, 30, "the backlog to start draining")

        session = requests.Session()
        headers = {"X-TD-Write-Key": WRITE_KEY, "Content-Type": "application/json"}
        accepted_at: dict[str, float] = {}
        during: set[str] = set()  # accepted while track records still waited
        total = int(args.rate * args.seconds)
        first = time.time()
        for n in range(total):
            time.sleep(max(0.0, first + n / args.rate - time.time()))
            user = f"consent-{n}"
            record = {
                "external_id": user,
                "subscription_group_id": "g-news",
                "subscription_state": "unsubscribed",
            }
            sent = time.time()
            response = session.post(
                f"{base}/postback/v3/event/bench/consent", data=json.dumps(record), headers=headers
            )
            response.raise_for_status()
            accepted_at[user] = sent
            if track_waiting(client):
                during.add(user)
        arrivals: dict[str, float] = {}
        since = 0

        def all_arrived() -> bool:
            nonlocal since
            found, since = consent_arrivals(sim_url, since)
            arrivals.update(found)
            return all(user in arrivals for user in accepted_at)

        wait_for(all_arrived, 60, "every consent record at the simulator", interval=0.5)
        waiting = track_waiting(client)
        latencies = [arrivals[user] - accepted_at[user] for user in accepted_at]
        worker = (
            "worker + consent-only worker"
            if not args.no_consent_worker
            else "one worker, no consent-only worker"
        )
        print(f"{worker}; Braze at {args.latency_ms:g} ms; {total} consent postbacks at {args.rate:g}/s")
        drained = [arrivals[user] - accepted_at[user] for user in during]
        print(
            f"consent accepted -> Braze: p50 {percentile(latencies, 50) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        )
        if drained:
            p99 = percentile(drained, 99)
            print(
                f"  of them accepted while the backlog drained ({len(drained)}): p50 "
                f"{percentile(drained, 50) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
                f"max {max(drained) * 1000:.0f} ms "
                f"(target p99 < 300 ms: {'pass' if p99 < 0.3 else 'FAIL'})"
            )
        print(
            f"track records still waiting when the last consent record landed: "
            f"{waiting:,} of {args.backlog:,}"
        )
        return 0
    finally:
        procs.stop_all()
        client.flushdb()
        work.close()


if __name__ == "__main__":
    run(main)
