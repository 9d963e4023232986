"""What each kind of accepted request leaves in Redis once its records are delivered.

    python -m bench.remembered [--requests 200] [--baseline REF] [--json]

For each kind of request (an event, a purchase, profile attributes with and without skip_unchanged,
a consent change, 500 consent changes of aliases in one request, a delete, an alias, an identify,
an event with an Idempotency-Key, and a request that accepts nothing), on an empty Redis of its own:
`--requests` requests through the relay's app (Flask's test client: what is measured is Redis, not
the edge's CPU), each naming users of its own, then the real RQ worker draining every lane into the
bundled Braze simulator. Then MEMORY USAGE of every key the relay keeps per user or per request
(audit trail, newest-value watermarks, skip_unchanged memory, order marks, idempotency answers,
dead letters), divided by the requests: the bytes one request makes the relay remember, and for how
long. The counters' hash and the per-minute charts (bounded by routes and time) are left out.

`--baseline REF` measures the same on another commit (a temporary git worktree of REF, run with
this venv) and prints both side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WRITE_KEY = "bench-write-key-3c9d"
BRAZE_KEY = "bench-braze-key-7a21"
ROUTES = """
[routes.events]
database = "db"
table = "events"
mode = "user_track"
track_record_type = "custom_events"

[routes.purchases]
database = "db"
table = "purchases"
mode = "user_track"
track_record_type = "purchases"

[routes.profiles]
database = "db"
table = "profiles"
mode = "user_track"
track_record_type = "user_profile_attributes"

[routes.remembered]
database = "db"
table = "remembered"
mode = "user_track"
track_record_type = "user_profile_attributes"
skip_unchanged = true

[routes.consent]
database = "db"
table = "consent"
mode = "user_subscription"

[routes.deletes]
database = "db"
table = "deletes"
mode = "user_delete"

[routes.aliases]
database = "db"
table = "aliases"
mode = "user_new_alias"

[routes.identify]
database = "db"
table = "identify"
mode = "user_identifying"

[routes.lenient]
database = "db"
table = "lenient"
mode = "user_track"
track_record_type = "custom_events"
skip_on_invalid_records = true
"""
# Keys that do not grow with requests: counters by route, per-minute charts, the set of lanes.
FIXED = ("metrics", "minute", "lanes", "held", "rpm", "ord-gates", "ord-erased", "fences")


def attributes(n: int) -> dict[str, Any]:
    """Five profile attributes of user n."""
    return {"external_id": f"rm-{n}", "plan": "gold", "city": "Lyon", "age": 40, "vip": True, "score": n}


# kind -> (table, records of request n, extra headers of request n, kept for)
KINDS: dict[str, tuple[str, Callable[[int], list[dict[str, Any]]], Callable[[int], dict[str, str]], str]] = {
    "event": ("events", lambda n: [{"external_id": f"rm-{n}", "name": "opened"}], lambda n: {}, ""),
    "event with Idempotency-Key": (
        "events",
        lambda n: [{"external_id": f"rm-{n}", "name": "opened"}],
        lambda n: {"Idempotency-Key": f"bench-{n}"},
        "RELAY_DEDUP_WINDOW_S, 72 h",
    ),
    "purchase": (
        "purchases",
        lambda n: [{"external_id": f"rm-{n}", "product_id": "p1", "currency": "EUR", "price": 9.5}],
        lambda n: {},
        "",
    ),
    "attributes (5)": (
        "profiles",
        lambda n: [attributes(n)],
        lambda n: {},
        "watermarks 72 h; uc: what Braze holds, 30 days, in a workspace with a skip_unchanged route",
    ),
    "attributes (5), skip_unchanged": (
        "remembered",
        lambda n: [attributes(n)],
        lambda n: {},
        "watermarks 72 h; RELAY_UNCHANGED_TTL_S, 30 days",
    ),
    "consent change": (
        "consent",
        lambda n: [
            {"external_id": f"rm-{n}", "subscription_group_id": "g1", "subscription_state": "subscribed"}
        ],
        lambda n: {},
        "RELAY_AUDIT_TTL_S, 30 days; watermarks 72 h",
    ),
    "consent, 500 aliases": (
        "consent",
        lambda n: [
            {
                "user_alias": {"alias_name": f"rm-{n}-{i}", "alias_label": "bench"},
                "subscription_group_id": "g1",
                "subscription_state": "unsubscribed",
            }
            for i in range(500)
        ],
        lambda n: {},
        "RELAY_AUDIT_TTL_S, 30 days; watermarks 72 h",
    ),
    "delete": ("deletes", lambda n: [{"external_id": f"rm-{n}"}], lambda n: {}, "RELAY_AUDIT_TTL_S, 30 days"),
    "alias": (
        "aliases",
        lambda n: [{"alias_name": f"rm-{n}", "alias_label": "bench", "external_id": f"rm-{n}"}],
        lambda n: {},
        "order marks 72 h",
    ),
    "identify": (
        "identify",
        lambda n: [{"external_id": f"rm-{n}", "alias_name": f"a-{n}", "alias_label": "bench"}],
        lambda n: {},
        "order marks 72 h",
    ),
    "accepted nothing, with Idempotency-Key": (
        "lenient",
        lambda n: [{"name": "no user"}],
        lambda n: {"Idempotency-Key": f"bench-none-{n}"},
        "its invalid record's dead letter until purged (a duplicate identity, where kept: 72 h)",
    ),
}


def family(key: bytes) -> str:
    """A workspace key's family: the part of its name after the workspace ('audit', 'wm', 'idem', ...)."""
    return key.decode().split("}:", 1)[1].split(":", 1)[0]


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server of its own on a free loopback port (nothing persisted), stopped after."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="braze-relay-remembered-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(port=port)
        for _ in range(200):
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def measure(requests: int) -> dict[str, Any]:
    """Every kind's bytes kept per request, by family, on the relay importable here."""
    import redis
    from rq.serializers import JSONSerializer

    from braze_sim.server import Simulator
    from handlers import context
    from handlers.worker import RelayWorker, tick
    from receiver import create_app
    from relay import lanes, store
    from relay.config import load_settings
    from relay.lanes import Lane

    routes = Path(tempfile.mkdtemp(prefix="braze-relay-remembered-")) / "relay.toml"
    routes.write_text(ROUTES)
    results: dict[str, Any] = {}
    with redis_server() as url, Simulator(api_key=BRAZE_KEY) as braze:
        os.environ.update(
            {
                "REDIS_URL": url,
                "BRAZE_REST_ENDPOINT": braze.url,
                "BRAZE_API_KEY": BRAZE_KEY,
                "RELAY_CONFIG": str(routes),
                "RELAY_WRITE_KEYS": WRITE_KEY,
                "RELAY_TRACK_SHARDS": "1",
                "RELAY_LINGER_MS": "5",
                "RELAY_CONSENT_LINGER_MS": "5",
            }
        )
        settings = load_settings()
        client = redis.Redis.from_url(url)
        app = create_app(settings).test_client()
        context.install(context.Context(settings, client))
        configured = Lane.configured(settings.routes.values(), settings.delivery.track_shards)
        headers = {"X-TD-Write-Key": WRITE_KEY, "Content-Type": "application/json"}
        for kind, (table, records, extra, kept_for) in KINDS.items():
            client.flushdb()
            braze.reset()
            accepted = 0
            for n in range(requests if len(records(0)) == 1 else max(requests // 50, 2)):
                body = json.dumps({"records": records(n)})
                answer = app.post(f"/db/{table}", data=body, headers={**headers, **extra(n)})
                if answer.status_code != 200:
                    raise RuntimeError(f"{kind}: {answer.status_code} {answer.get_data(as_text=True)}")
                accepted += 1
            deadline = time.monotonic() + 120
            while True:
                tick(client, settings.delivery, configured)
                worker = RelayWorker(
                    [store.QUEUE_CONSENT, store.QUEUE_BULK], connection=client, serializer=JSONSerializer
                )
                worker.work(burst=True, logging_level="WARNING")
                states = lanes.states(client, Lane.known(client, configured))
                if not any(state.waiting or state.retrying for state in states):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind}: lanes still hold records")
                time.sleep(0.05)
            by_family: Counter[str] = Counter()
            for key in client.scan_iter("relay:{*", count=1000):  # a workspace's keys (not the rate windows)
                name = family(key)
                if name in FIXED:
                    continue
                by_family[name] += int(client.memory_usage(key, samples=0) or 0)
            results[kind] = {
                "requests": accepted,
                "records_per_request": len(records(0)),
                "bytes_per_request": round(sum(by_family.values()) / accepted),
                "by_family": {name: round(total / accepted) for name, total in sorted(by_family.items())},
                "kept_for": kept_for,
            }
    return results


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """A temporary git worktree of `ref` (removed after)."""
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


def measure_in(tree: Path, requests: int) -> dict[str, Any]:
    """`measure` run in a process whose relay is the one in `tree`."""
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--tree",
            str(tree),
            "--requests",
            str(requests),
            "--json",
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"measuring {tree} failed:\n{done.stderr[-3000:]}")
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def describe(after: dict[str, Any], before: dict[str, Any] | None) -> str:
    """A table: kind, bytes kept per request (before, after), what they are and for how long."""
    lines = [f"{'request':<40} {'before':>9} {'after':>9}  kept (bytes per request by family; for how long)"]
    for kind, found in after.items():
        was = before.get(kind, {}).get("bytes_per_request") if before else None
        families = ", ".join(f"{name} {size}" for name, size in found["by_family"].items()) or "nothing"
        lines.append(
            f"{kind:<40} {'' if was is None else was:>9} {found['bytes_per_request']:>9}  "
            f"{families}{'; ' + found['kept_for'] if found['kept_for'] and found['by_family'] else ''}"
        )
    return "\n".join(lines)


# `--smoke` (tests/test_bench.py): a tiny workload on the same code path, in a few seconds.
SMOKE = ["--requests", "5"]


def main(argv: list[str] | None = None) -> int:
    """Measure here (and on a baseline commit) and print the table, or JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests", type=int, default=200, help="requests of each kind (default: %(default)s)"
    )
    parser.add_argument("--baseline", metavar="REF", help="also measure this commit")
    parser.add_argument("--tree", help=argparse.SUPPRESS)  # measure the relay of this checkout
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    opts = parser.parse_args(argv)
    if opts.tree:
        sys.path.insert(0, opts.tree)
        print(json.dumps(measure(opts.requests)))
        return 0
    before = None
    if opts.baseline:
        with worktree(opts.baseline) as tree:
            before = measure_in(tree, opts.requests)
    after = measure_in(ROOT, opts.requests)
    print(json.dumps({"before": before, "after": after}) if opts.json else describe(after, before))
    return 0


if __name__ == "__main__":
    if "--tree" in sys.argv:  # measure_in's process, run as a script in a checkout of its own
        sys.exit(main())
    from bench.common import run

    run(main)
