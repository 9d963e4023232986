"""Sandbox mode: `python -m braze_sim --port 9100` serves the simulator and logs one line per request."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
from typing import Any

from braze_sim.config import DEFAULT_API_KEY, DEFAULT_LIMITS, FAMILIES, parse_limit
from braze_sim.server import Simulator
from relay.logs import configure_process_logging

log = logging.getLogger("braze_sim")


def _limit_text(family: str) -> str:
    count, window = DEFAULT_LIMITS[family]
    return f"{count}/{window:g}"


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(prog="python -m braze_sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=9100, help="port to bind, 0 for any (default: %(default)s)"
    )
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="REST API key clients must send")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every Braze answer")
    for family in FAMILIES:
        parser.add_argument(
            f"--{family}-limit",
            type=parse_limit,
            default=DEFAULT_LIMITS[family],
            metavar="REQUESTS/SECONDS",
            help=f"rate limit of the {family} family (default: {_limit_text(family)})",
        )
    parser.add_argument("--per-array-limit", type=int, default=75, help="objects per /users/track array")
    parser.add_argument(
        "--combined-limit",
        type=int,
        default=75,
        help="/users/track objects across its three arrays (default: %(default)s, Braze's default; "
        "0: none, a legacy contract's 75 per array)",
    )
    parser.add_argument(
        "--create-catalogs", action="store_true", help="make a catalog on its first item write (Braze: 404)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random fault draws")
    parser.add_argument(
        "--threads",
        type=int,
        default=256,
        help="requests answered at once: each holds a thread for its latency (default: %(default)s)",
    )
    return parser


def describe(entry: dict[str, Any]) -> str:
    """One log line for an answered request: method, path, status, item counts, fault. Never the key."""
    counts = " ".join(f"{name}={count}" for name, count in entry["counts"].items())
    fault = f" fault={entry['fault']}" if entry["fault"] else ""
    return f"{entry['method']} {entry['path']} {entry['status']} {counts}{fault}".rstrip()


def fields(entry: dict[str, Any]) -> dict[str, Any]:
    """The same as log fields: method, path, status, item counts and fault (never the body or the key)."""
    return {name: entry[name] for name in ("method", "path", "status", "counts", "fault")}


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until interrupted."""
    args = build_parser().parse_args(argv)
    configure_process_logging()  # one JSON object per line, as every relay process logs
    sim = Simulator(
        api_key=args.api_key,
        per_array_limit=args.per_array_limit,
        combined_limit=args.combined_limit or None,
        limits={family: getattr(args, f"{family}_limit") for family in FAMILIES},
        seed=args.seed,
    )
    sim.faults.latency_ms = args.latency_ms
    sim.catalogs.create_missing = args.create_catalogs
    sim.on_request = lambda entry: log.info(describe(entry), extra=fields(entry))
    sim.start(port=args.port, host=args.host, threads=args.threads)
    log.info("Braze simulator on %s (control API under /_sim/)", sim.url, extra={"url": sim.url})
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how sandbox mode ends
        threading.Event().wait()
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
