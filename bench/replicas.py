"""What waiting for a replica costs, and what Redis does per record (the capacity model's inputs).

    python -m bench.replicas [--seconds 6] [--connections 32] [--workers 2] [--repeat 1]

A Redis primary and one replica of it, both of the bench's own on loopback (nothing persisted).

1. The edge: one-record postbacks (bench/postback.lua) through the Procfile's web with its workers
   delivering into the simulator (50 ms), with RELAY_REDIS_MIN_REPLICAS=0 and then =1 (each 2xx
   after `WAIT 1 500`), in the same round; prints accepted postbacks/s of each, their ratio, web CPU
   per request and p99.
2. Redis per record, with the replica attached, for both settings: one-record postbacks stored with
   no worker running (INFO commandstats and CPU of the primary over the load: per accepted record),
   then the Procfile's workers draining them (per delivered record). Commands count what scripts
   run inside them (commandstats' calls), as Redis does the work of each.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from bench import common
from bench.common import (
    HOST,
    POSTBACK_PATH,
    Processes,
    RedisSnapshot,
    Workdir,
    base_env,
    free_port,
    machine,
    measure_variant,
    procfile_command,
    redis_client,
    relay_env,
    run,
    run_wrk,
    start_gunicorn,
    start_redis,
    start_simulator,
    track_idle,
    variant_medians,
    variant_options,
    wait_for,
    wait_quiet,
)

VARIANTS = [("MIN_REPLICAS=0", "0"), ("MIN_REPLICAS=1", "1")]

# `--smoke` (tests/test_bench.py): a tiny workload on the same code path, in a few seconds.
SMOKE = ["--seconds", "1", "--connections", "4", "--workers", "1"]


def start_replica(procs: Processes, primary: redis.Redis) -> None:
    """A redis-server replicating the bench's primary, once it has synced."""
    port = free_port()
    primary_port = primary.connection_pool.connection_kwargs["port"]
    primary.config_set("repl-diskless-sync", "yes")  # the full sync writes no file in the checkout
    options = f"--save '' --appendonly no --dir {procs.log_dir} --replicaof {HOST} {primary_port}"
    command = f"redis-server --port {port} --bind {HOST} {options}"
    procs.start("replica", command, base_env({}))
    replica = redis.Redis(host=HOST, port=port, socket_timeout=1)

    def synced() -> bool:
        try:
            return replica.info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False

    wait_for(synced, 30, "the replica to sync")


def per_record(opts: Any, min_replicas: str) -> dict[str, Any]:
    """Postbacks stored with no worker (Redis per accepted record), then drained by the workers (per
    delivered record): commands, the busiest commands, Redis CPU."""
    client = redis_client()
    client.flushdb()
    work = Workdir()
    procs = Processes(work.path)
    try:
        sim_url = start_simulator(procs, 50)
        env = relay_env(sim_url, work.routes_file(), free_port(), RELAY_REDIS_MIN_REPLICAS=min_replicas)
        url = start_gunicorn(procs, env)
        wait_quiet()
        before = RedisSnapshot.take(client)
        load = run_wrk(url + POSTBACK_PATH, opts.seconds, opts.connections, f"r{int(time.time())}")
        stored = RedisSnapshot.take(client)
        for _ in range(opts.workers):
            procs.start("worker", procfile_command("worker"), env)
        wait_for(lambda: track_idle(client), 300, "the workers to drain the lanes")
        drained = RedisSnapshot.take(client)
        procs.check_alive()
    finally:
        procs.stop_all()
        work.close()
        client.flushdb()
    edge, delivery = stored.since(before), drained.since(stored)
    return {"accepted": load.ok, "non_2xx": load.non_2xx, "edge": edge, "delivery": delivery}


def report_per_record(name: str, got: dict[str, Any]) -> None:
    """Commands and Redis CPU per accepted and per delivered record."""
    accepted = max(got["accepted"], 1)
    for part, what in (("edge", "accepted"), ("delivery", "delivered")):
        figures = got[part]
        calls = sum(figures["calls"].values())
        top = ", ".join(f"{cmd} {count / accepted:.2f}" for cmd, count in list(figures["calls"].items())[:6])
        print(
            f"  {name:<16} per {what} record: {calls / accepted:6.2f} commands, Redis CPU "
            f"{1e6 * figures['cpu_s'] / accepted:6.1f} us   [{top}]"
        )
    print(f"  {name:<16} {got['accepted']:,} postbacks accepted ({got['non_2xx']} non-2xx)")


def main(argv: list[str] | None = None) -> int:
    """The edge with and without a replica's acknowledgement (`--repeat` rounds), then Redis per record."""
    opts = variant_options("python -m bench.replicas", __doc__, argv)
    work = Workdir()
    procs = Processes(work.path)
    try:
        start_redis(procs)
        start_replica(procs, redis_client())
        rounds = []
        for number in range(opts.repeat):
            order = VARIANTS if number % 2 == 0 else VARIANTS[::-1]  # neither always runs first
            rounds.append(
                {name: measure_variant(opts, RELAY_REDIS_MIN_REPLICAS=value) for name, value in order}
            )
        load = f"wrk -c {opts.connections} -d {opts.seconds:g}s"
        print(f"answering after a replica holds the write, {machine()}; {load}, {opts.workers} workers")
        print(f"  Redis: a primary and one replica on loopback ({common.REDIS_URL}); median of {opts.repeat}")
        for name, _ in VARIANTS:
            got = variant_medians(rounds, name, VARIANTS[0][0])
            p99 = sorted(r[name]["p99_ms"] for r in rounds)[len(rounds) // 2]
            print(
                f"  {name:<16} {got['req_per_s']:8.1f} accepted/s  {got['share']:5.2f}x MIN_REPLICAS=0   "
                f"web CPU {got['web_cpu_ms']:.2f} ms/request   p99 {p99:.1f} ms   "
                f"({got['non_2xx']:.0f} non-2xx)"
            )
        print("Redis per record (the primary's INFO commandstats and CPU; one-record postbacks):")
        for name, value in VARIANTS:
            report_per_record(name, per_record(opts, value))
    finally:
        procs.stop_all()
        work.close()
    return 0


if __name__ == "__main__":
    run(main)
