"""Does anything stall the edge? /healthz while one web process takes a 100,000-row export, and while
clients trickle their headers, for each gunicorn worker class.

    python -m bench.edge_stall [--classes sync:1,gthread:8,gevent:8] [--rows 100000] [--slow 6]

For each `class:threads`, starts the Procfile's web (gunicorn.conf.py, GUNICORN_WORKER_CLASS and
GUNICORN_THREADS set) and prints: (1) with one web process, a TD export PUT of `--rows` rows and
/healthz polled every 50 ms meanwhile: how many answers and the slowest; (2) with two web processes,
`--slow` sockets sending one header line every 2 s, then /healthz: answered or not within 5 s.
gevent needs `pip install gevent` (not a dependency of the relay).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import sys
import threading
import time
from pathlib import Path

import requests

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    HOST,
    ROUTES,
    Processes,
    Workdir,
    free_port,
    install_signal_handlers,
    machine,
    put_export,
    redis_client,
    relay_env,
    run,
    start_gunicorn,
)


def export_stall(url: str, rows: int) -> str:
    """Poll /healthz while one export is being taken; the figures as one line."""
    data = [[f"user-{row}", "bench_event", str(row)] for row in range(rows)]
    body = json.dumps({"column_names": ["external_id", "name", "seq"], "data": data}).encode()
    result: dict[str, float] = {}

    def export() -> None:
        started = time.perf_counter()
        response = put_export(url, "events", body)
        result["status"] = response.status_code
        result["seconds"] = time.perf_counter() - started

    thread = threading.Thread(target=export)
    thread.start()
    time.sleep(0.3)  # the export is being read and validated
    answers, slowest = 0, 0.0
    while thread.is_alive():
        started = time.perf_counter()
        requests.get(f"{url}/healthz", timeout=60)
        slowest = max(slowest, time.perf_counter() - started)
        answers += 1
        time.sleep(0.05)
    thread.join()
    return (
        f"export {int(result['status'])} in {result['seconds']:.1f} s; /healthz meanwhile: "
        f"{answers} answers, slowest {slowest * 1000:,.0f} ms"
    )


def slow_clients(url: str, count: int) -> str:
    """`count` sockets trickling header lines, then one /healthz; the outcome as one line."""
    port = int(url.rsplit(":", 1)[1])
    stop = threading.Event()
    socks = [socket.create_connection((HOST, port), timeout=5) for _ in range(count)]

    def trickle(sock: socket.socket) -> None:
        try:
            sock.sendall(b"POST /postback/v3/event/bench/events HTTP/1.1\r\nHost: bench\r\n")
            for line in range(10):  # 20 s at most
                if stop.wait(2.0):
                    return
                sock.sendall(f"X-Slow-{line}: 1\r\n".encode())
        except OSError:
            return

    threads = [threading.Thread(target=trickle, args=(sock,), daemon=True) for sock in socks]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        started = time.perf_counter()
        try:
            requests.get(f"{url}/healthz", timeout=5)
            outcome = f"answered in {(time.perf_counter() - started) * 1000:,.0f} ms"
        except requests.Timeout:
            outcome = "NOT answered within 5 s"
    finally:
        stop.set()
        for sock in socks:
            sock.close()
    return f"{count} slow clients: /healthz {outcome}"


def measure(worker_class: str, threads: str, rows: int, slow: int) -> None:
    """Both measurements for one worker class."""
    work = Workdir()
    routes = work.path / "relay.toml"
    routes.write_text(ROUTES)
    client = redis_client()
    knobs = {"GUNICORN_WORKER_CLASS": worker_class, "GUNICORN_THREADS": threads}
    try:
        for processes, probe in (("1", "export"), ("2", "slow")):
            client.flushdb()
            procs = Processes(work.path)
            env = relay_env("http://127.0.0.1:9", routes, free_port(), WEB_CONCURRENCY=processes, **knobs)
            try:
                url = start_gunicorn(procs, env)
                line = export_stall(url, rows) if probe == "export" else slow_clients(url, slow)
                print(f"  {worker_class} threads={threads}, {processes} web process(es): {line}", flush=True)
            finally:
                procs.stop_all()
    finally:
        client.flushdb()
        work.close()


# `--smoke` (tests/test_bench.py): a tiny workload on the same code path, in a few seconds.
SMOKE = ["--classes", "gthread:8", "--rows", "2000", "--slow", "2"]


def main() -> int:
    """Each worker class in turn."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", default="sync:1,gthread:8,gevent:8")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--slow", type=int, default=6)
    args = parser.parse_args()
    install_signal_handlers()
    print(machine())
    for spec in args.classes.split(","):
        worker_class, _, threads = spec.partition(":")
        if worker_class == "gevent" and importlib.util.find_spec("gevent") is None:
            print("  gevent: not installed (pip install gevent), skipped")
            continue
        measure(worker_class, threads or "1", args.rows, args.slow)
    return 0


if __name__ == "__main__":
    run(main)
