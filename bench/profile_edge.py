"""Where the edge's time goes, per postback: the relay's view vs the bare view, in-process, no HTTP server.

    python -m bench.profile_edge [--requests 3000] [--relay-only]

Runs the same one-record postbacks through Flask's test client (the relay's app against the bench's
Redis database, no workers; then bench/anchor_apps.py's bare view), first timed, then under cProfile,
and prints microseconds per request for the whole request and for the relay's own steps. Gunicorn's
part (accept, HTTP parsing, one connection per request: sync workers do not keep connections alive)
is the same for both apps and is not in these figures. CPU-bound figures: run it on a quiet machine.
`--relay-only` runs the relay's postbacks alone, once (a fixed amount of work: on a shared machine,
count the whole process's instructions, e.g. under valgrind's callgrind, with two `--requests`).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import logging
import os
import pstats
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flask

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.anchor_apps import bare_app
from bench.common import POSTBACK_PATH, WRITE_KEY, Workdir, redis_client, relay_env

# The relay's steps, as (label, file suffix, function name) in cProfile's statistics.
STEPS = [
    ("view: postback (whole)", "receiver/views.py", "postback"),
    ("route_by_table", "receiver/views.py", "route_by_table"),
    ("authenticate", "receiver/views.py", "authenticate"),
    ("route_body (read)", "receiver/body.py", "route_body"),
    ("load_records (marshmallow)", "receiver/views.py", "load_records"),
    ("  Schema.load", "marshmallow/schema.py", "load"),
    ("  request_id", "receiver/views.py", "request_id"),
    ("accept (whole)", "receiver/views.py", "accept"),
    ("  idempotency.claim_for", "receiver/idempotency.py", "claim_for"),
    ("  log line (logging info)", "logging/__init__.py", "info"),
    ("  store_batch", "receiver/enqueue.py", "store_batch"),
    ("    envelope dumps", "relay/envelope.py", "dumps"),
    ("    Pipeline.execute (Redis round trip)", "redis/client.py", "execute"),
    ("jsonify", "flask/json/__init__.py", "jsonify"),
    ("Flask full_dispatch_request", "flask/app.py", "full_dispatch_request"),
    ("Flask wsgi_app (whole request)", "flask/app.py", "wsgi_app"),
]


def bodies(count: int) -> list[bytes]:
    """One-record postbacks shaped like bench/postback.lua's."""
    now = time.time()
    return [
        json.dumps(
            {"external_id": f"p-u{i % 1000}", "name": "bench_event", "id": f"p-{i}", "sent_at": now}
        ).encode()
        for i in range(count)
    ]


def run(app: object, payloads: list[bytes]) -> tuple[float, float]:
    """Post every payload through the test client; return (wall, CPU) seconds."""
    client = app.test_client()  # type: ignore[attr-defined]
    headers = {"Content-Type": "application/json", "X-TD-Write-Key": WRITE_KEY}
    start, cpu = time.perf_counter(), time.process_time()
    for payload in payloads:
        answer = client.post(POSTBACK_PATH, data=payload, headers=headers)
        if answer.status_code != 200:
            raise RuntimeError(f"{answer.status_code}: {answer.get_data(as_text=True)}")
    return time.perf_counter() - start, time.process_time() - cpu


def step_times(stats: pstats.Stats, count: int) -> list[tuple[str, float]]:
    """Cumulative microseconds per request of each step found in the profile."""
    found = []
    table = stats.stats  # type: ignore[attr-defined]
    for label, suffix, name in STEPS:
        total = sum(
            entry[3] for (path, _, func), entry in table.items() if func == name and path.endswith(suffix)
        )
        if total:
            found.append((label, 1e6 * total / count))
    return found


def captured_call(relay: object, module: Any, name: str) -> tuple[Any, tuple, dict]:
    """Post one postback with `module.name` wrapped; return the function and the arguments it got.

    Replaying the real call keeps this script independent of how the checkout builds them.
    """
    original = getattr(module, name)
    calls: list[tuple[tuple, dict]] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    setattr(module, name, spy)
    try:
        run(relay, bodies(1))
    finally:
        setattr(module, name, original)
    if not calls:
        raise RuntimeError(f"{module.__name__}.{name} was not called by a postback")
    return original, *calls[0]


def step_costs(relay: Any, client: Any, count: int) -> list[tuple[str, float, float]]:
    """(label, wall us, CPU us) per call of the relay's steps alone, and of the least Redis can cost."""
    from receiver import views

    payload = bodies(1)[0]
    queue = "relay:q:profile"
    steps: list[tuple[str, Callable[[], object]]] = []

    def replay(label: str, module: Any, name: str) -> None:
        try:
            func, args, kwargs = captured_call(relay, module, name)
        except (AttributeError, RuntimeError) as exc:
            print(f"  ({label}: not measured, {exc})")
            return
        steps.append((label, lambda: func(*args, **kwargs)))

    replay("receiver.views.authenticate", views, "authenticate")
    replay("receiver.body.route_body (read)", views, "route_body")
    replay("receiver.body.parse_json of one body", views, "parse_json")
    steps.append(("json.loads of the same body", lambda: json.loads(payload)))
    replay("receiver.views.load_records (marshmallow)", views, "load_records")
    replay("receiver.views.store_batch (one MULTI/EXEC)", views, "store_batch")
    with contextlib.suppress(ImportError):
        from receiver import idempotency

        replay("receiver.idempotency.claim_for", idempotency, "claim_for")
    steps.append(("flask.jsonify({})", lambda: flask.jsonify({})))
    log = logging.getLogger("receiver.views")
    extra = {"request_id": "r", "route": "events", "accepted": 1, "rejected": 0}
    steps.append(("one relay log line (JSON, INFO)", lambda: log.info("accepted", extra=extra)))
    steps.append(("one RPUSH", lambda: client.rpush(queue, payload)))

    def rpush_and_arm() -> None:
        pipe = client.pipeline(transaction=False)
        pipe.rpush(queue, payload)
        pipe.set("relay:lease:profile", "t", nx=True, px=30000)
        pipe.execute()

    steps.append(("RPUSH + SET NX, plain pipeline", rpush_and_arm))
    out = []
    with app_context(relay):
        for label, call in steps:
            for _ in range(200):
                call()
            commands = client.info("stats")["total_commands_processed"]
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(count):
                call()
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            sent = client.info("stats")["total_commands_processed"] - commands - 1
            # The server is shared: others' commands count too, so this is an upper bound.
            name = f"{label} ({sent / count:.1f} Redis commands)" if sent > count / 2 else label
            out.append((name, 1e6 * wall / count, 1e6 * cpu / count))
    return out


@contextlib.contextmanager
def app_context(relay: Any) -> Iterator[None]:
    """A request context, for steps that read the request or the app (with a postback's headers)."""
    headers = {"Content-Type": "application/json", "X-TD-Write-Key": WRITE_KEY}
    with relay.test_request_context(POSTBACK_PATH, method="POST", data=bodies(1)[0], headers=headers):
        yield


# `--smoke` (tests/test_bench.py): a tiny workload on the same code path, in a few seconds.
SMOKE = ["--requests", "100"]


def main(argv: list[str] | None = None) -> int:
    """Time and profile both views."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_edge", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=3000, help="postbacks per app (default: %(default)s)")
    parser.add_argument("--top", type=int, default=0, help="also print cProfile's top N by own time")
    parser.add_argument(
        "--relay-only",
        action="store_true",
        help="only the timed relay run (after 200 postbacks of warm-up): a fixed amount of the edge's "
        "work, for a whole-process count of instructions or CPU",
    )
    opts = parser.parse_args(argv)
    work = Workdir()
    client = redis_client()
    try:
        client.flushdb()
        env = relay_env("http://127.0.0.1:9", work.routes_file(), 0)
        os.environ.update({k: v for k, v in env.items() if k not in ("PORT", "HOST", "PATH")})
        from receiver import create_app
        from relay.logs import PACKAGES

        relay = create_app()
        # The relay logs a line per accepted request to stdout: keep the formatting, drop the terminal.
        quiet = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        for handler in [h for package in PACKAGES for h in logging.getLogger(package).handlers]:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(quiet)
        bare = bare_app()
        payloads = bodies(opts.requests)
        run(relay, payloads[:200])  # warm-up
        if opts.relay_only:
            relay_s, relay_cpu = run(relay, payloads)
            print(f"relay view: {1e6 * relay_cpu / max(opts.requests, 1):.1f} us of CPU per request")
            return 0
        run(bare, payloads[:200])
        relay_s, relay_cpu = run(relay, payloads)
        bare_s, bare_cpu = run(bare, payloads)
        print(
            f"in-process, Flask test client, {opts.requests} one-record postbacks each "
            "(no gunicorn, no workers)"
        )
        for name, wall, cpu in (("relay view", relay_s, relay_cpu), ("bare view", bare_s, bare_cpu)):
            print(
                f"  {name:<12} {1e6 * wall / opts.requests:8.1f} us per request "
                f"({1e6 * cpu / opts.requests:.1f} us of it CPU in this process)"
            )
        profile = cProfile.Profile()
        profile.enable()
        run(relay, payloads)
        profile.disable()
        stats = pstats.Stats(profile)
        print("relay view under cProfile (cumulative us per request; cProfile inflates every figure):")
        for label, micros in step_times(stats, opts.requests):
            print(f"  {label:<40} {micros:8.1f}")
        print("steps alone (us per call: wall, CPU of this process; one client, no contention):")
        for label, wall, cpu in step_costs(relay, client, opts.requests):
            print(f"  {label:<66} {wall:8.1f} {cpu:8.1f}")
        if opts.top:
            stats.sort_stats("tottime").print_stats(opts.top)
    finally:
        client.flushdb()
        work.close()
    return 0


if __name__ == "__main__":
    common.run(main)
