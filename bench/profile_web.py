"""Where a gunicorn worker's wall time goes under load: the relay's web vs the bare view, sampled.

    python -m bench.profile_web [--seconds 6] [--connections 32] [--workers 2]
    python -m bench.profile_web --drain [--latency-ms 50]     # one RQ worker draining a backlog

Starts the simulator (50 ms), gunicorn (the Procfile's command and config, 2 workers, access log off)
serving the relay's app wrapped by bench/stack_sampler.py, and `--workers` RQ workers; loads it with
wrk like bench/pipeline.py; then the same for the bare view (no RQ workers). Prints, per postback,
the wall milliseconds a gunicorn worker spends in each step (samples on the stack / all samples x
worker time / requests), and the functions most often innermost. The sampler costs a few percent.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import stack_sampler
from bench.common import (
    POSTBACK_PATH,
    Processes,
    SimLog,
    Workdir,
    free_port,
    install_signal_handlers,
    procfile_command,
    redis_client,
    relay_env,
    run,
    run_wrk,
    start_gunicorn,
    start_simulator,
    track_waiting,
    wait_for,
)

# (label, function as stack_sampler labels it); inclusive: the function or anything it calls.
STEPS = [
    ("waiting for a connection (idle)", "gunicorn/workers/sync.py:wait"),
    ("accept + handle a connection", "gunicorn/workers/sync.py:handle"),
    ("  parse the HTTP request", "gunicorn/http/parser.py:__next__"),
    ("  WSGI app (Flask wsgi_app)", "flask/app.py:wsgi_app"),
    ("    view: relay postback", "receiver/views.py:postback"),
    ("      authenticate", "receiver/views.py:authenticate"),
    ("      route_body (read)", "receiver/body.py:route_body"),
    ("      load_records (marshmallow)", "receiver/views.py:load_records"),
    ("      store_batch (Redis MULTI/EXEC)", "receiver/enqueue.py:store_batch"),
    ("        of which waiting on Redis' socket", "redis/_parsers/socket.py:_read_from_socket"),
    ("      jsonify", "flask/json/__init__.py:jsonify"),
    ("    view: bare postback", "bench/anchor_apps.py:postback"),
    ("  write the answer, close", "gunicorn/http/wsgi.py:close"),
]


def profile(app: str, opts: argparse.Namespace, *, workers: int) -> tuple[dict, float, int]:
    """Serve `app` sampled, load it; return the merged samples, worker seconds and requests."""
    out = Path(tempfile.mkdtemp(prefix="braze-relay-profile-"))
    work = Workdir()
    procs = Processes(work.path)
    client = redis_client()
    client.flushdb()
    try:
        sim_url = start_simulator(procs, 50)
        env = relay_env(sim_url, work.routes_file(), free_port())
        env["BENCH_PROFILE_DIR"] = str(out)
        url = start_gunicorn(procs, env, app=app)
        for _ in range(workers):
            procs.start(
                "worker", procfile_command("worker"), {k: v for k, v in env.items() if "PROFILE" not in k}
            )
        if workers:
            wait_for(lambda: client.scard("rq:workers") >= workers, 30, "the RQ workers to register")
        result = run_wrk(url + POSTBACK_PATH, opts.seconds, opts.connections, f"p{int(time.time())}")
        procs.check_alive()
    finally:
        procs.stop_all()  # gunicorn's workers exit and write their samples
        work.close()
    merged = stack_sampler.merge(out)
    shutil.rmtree(out, ignore_errors=True)
    client.flushdb()
    return merged, 2 * (result.ended - result.started), result.requests


# The drain job's steps (handlers/drain.py), for --drain.
DRAIN_STEPS = [
    ("drain job (Drainer.run)", "handlers/drain.py:run"),
    ("  renew the lease", "handlers/drain.py:renew"),
    ("  take a batch (ZRANGEBYSCORE, LRANGE, loads)", "handlers/drain.py:take"),
    ("  deliver", "handlers/drain.py:deliver"),
    ("    send", "handlers/drain.py:send"),
    ("      rate limiter (shared window in Redis)", "handlers/ratelimit.py:acquire"),
    ("      Braze POST (requests)", "handlers/braze.py:post"),
    ("        of which waiting for the answer", "socket.py:readinto"),
    ("      observe (log line, limiter headers)", "handlers/context.py:observe"),
    ("    commit (WATCH/MULTI/EXEC)", "handlers/drain.py:commit"),
    ("RQ between jobs (dequeue, registries)", "rq/worker/base.py:dequeue_job_and_maintain_ttl"),
]


def profile_drain(opts: argparse.Namespace) -> None:
    """Fill a backlog with no worker running, drain it with one sampled worker, print its time split."""
    out = Path(tempfile.mkdtemp(prefix="braze-relay-profile-"))
    work = Workdir()
    procs = Processes(work.path)
    client = redis_client()
    client.flushdb()
    try:
        sim_url = start_simulator(procs, opts.latency_ms)
        env = relay_env(sim_url, work.routes_file(), free_port())
        url = start_gunicorn(procs, env)
        run_id = f"d{int(time.time())}"
        run_wrk(url + POSTBACK_PATH, 4, opts.connections, run_id)
        backlog = track_waiting(client)
        sim = SimLog(sim_url, run_id)
        sim.reset(opts.latency_ms)
        command = (
            f"{sys.executable} -c 'from bench import stack_sampler; stack_sampler.start(); "
            "from handlers.worker import main; raise SystemExit(main())'"
        )
        started = time.monotonic()
        procs.start("worker", command, {**env, "BENCH_PROFILE_DIR": str(out)})
        wait_for(lambda: track_waiting(client) == 0, 60, "the backlog to drain", interval=0.1)
        took = time.monotonic() - started
        time.sleep(2.5)  # let the sampler write once more
        sim.poll()
        procs.check_alive()
    finally:
        procs.stop_all()
        work.close()
        client.flushdb()
    merged = stack_sampler.merge(out)
    shutil.rmtree(out, ignore_errors=True)
    arrivals = [t for t, _ in sim.track_log]
    cycle_s, per_request = sim.cycle(min(arrivals), max(arrivals)) if arrivals else (float("nan"),) * 2
    busy = merged["inclusive"].get("handlers/drain.py:run", 0) or 1
    print(
        f"== one RQ worker draining {backlog:,} records in {took:.1f} s (worker start included), "
        f"Braze {opts.latency_ms:g} ms; {sim.track_requests} requests, {per_request:.1f} records each =="
    )
    print(
        f"  one batch every {1000 * cycle_s:.1f} ms (median gap between Braze requests); the drain job's "
        f"{busy} samples split as:"
    )
    for label, func in DRAIN_STEPS[1:-1]:
        count = merged["inclusive"].get(func, 0)
        if count:
            print(f"  {label:<48} {1000 * cycle_s * count / busy:7.2f} ms  ({100 * count / busy:5.1f} %)")
    print("  innermost functions (own samples, whole process):")
    total = merged["samples"] or 1
    for func, count in merged["own"].most_common(8):
        print(f"    {func:<70} {100 * count / total:5.1f} %")


def report(name: str, merged: dict, worker_s: float, requests: int) -> None:
    """Milliseconds per request of each step, and the top innermost functions."""
    total = merged["samples"] or 1
    per_request = worker_s / max(requests, 1) * 1000
    print(
        f"== {name}: {requests} requests, {merged['samples']} samples, "
        f"{per_request:.3f} worker-ms per request =="
    )
    for label, func in STEPS:
        count = merged["inclusive"].get(func, 0)
        if count:
            print(f"  {label:<44} {count / total * per_request:7.3f} ms  ({100 * count / total:5.1f} %)")
    print("  innermost functions (own samples):")
    for func, count in merged["own"].most_common(12):
        print(f"    {func:<70} {100 * count / total:5.1f} %")


# `--smoke` (tests/test_bench.py): a tiny workload on the same code path, in a few seconds.
SMOKE = ["--seconds", "1", "--connections", "4"]


def main(argv: list[str] | None = None) -> int:
    """Profile the relay's web, then the bare view."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile_web", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="wrk duration (default: %(default)s)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default: %(default)s)")
    parser.add_argument(
        "--workers", type=int, default=2, help="RQ workers beside the relay (default: %(default)s)"
    )
    parser.add_argument("--drain", action="store_true", help="profile one RQ worker draining a backlog")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="simulator latency for --drain")
    opts = parser.parse_args(argv)
    install_signal_handlers()
    if opts.drain:
        profile_drain(opts)
        return 0
    relay = profile("bench.anchor_apps:profiled_relay_app()", opts, workers=opts.workers)
    bare = profile("bench.anchor_apps:profiled_bare_app()", opts, workers=0)
    report("relay web (receiver:create_app)", *relay)
    report("bare view", *bare)
    return 0


if __name__ == "__main__":
    run(main)
