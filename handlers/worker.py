"""The worker process: an RQ worker (no fork per job) plus a ticker that wakes idle lanes.

Run it as `python -m handlers.worker` (the Procfile's `worker`). It takes consent drain jobs
before bulk ones, keeps its Redis and Braze connections across jobs, and every second looks for
lanes that hold records or due retries but have no owner (after a crash, or when a retry falls
due) and enqueues their drain job.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Iterable

import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from handlers import context
from relay import lanes, store
from relay.config import Delivery, Settings, load_settings, warn_at_start
from relay.lanes import Lane
from relay.logs import configure_process_logging
from relay.secrets import ConfigError

log = logging.getLogger(__name__)
TICK_S = 1.0


class RelayWorker(SimpleWorker):
    """RQ's SimpleWorker: jobs run in this process, so sessions and pools survive between jobs."""


def tick(client: redis.Redis, delivery: Delivery, configured: Iterable[Lane] = ()) -> int:
    """Wake every lane with work and no owner (known in Redis or from the routes); return how many."""
    woken = 0
    for state in lanes.states(client, Lane.known(client, configured)):
        if (state.waiting or state.due) and not state.owned and state.lane.wake(client, delivery):
            log.info(
                "lane woken by ticker",
                extra={"lane": state.lane.name, "waiting": state.waiting, "due_retries": state.due},
            )
            woken += 1
    return woken


class Ticker(threading.Thread):
    """Calls `tick` every second until stopped; a Redis outage is logged and waited out."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        super().__init__(name="relay-ticker", daemon=True)
        self.client, self.delivery = client, settings.delivery
        self.configured = Lane.configured(settings.routes.values(), settings.delivery.track_shards)
        self.stopping = threading.Event()

    def run(self) -> None:
        """Loop until `stopping` is set."""
        while not self.stopping.wait(TICK_S):
            try:
                tick(self.client, self.delivery, self.configured)
            except redis.RedisError as exc:
                log.warning("ticker: redis unavailable", extra={"error": type(exc).__name__})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The worker's options."""
    parser = argparse.ArgumentParser(prog="python -m handlers.worker", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--consent-only",
        action="store_true",
        help="take only consent drain jobs: a worker kept free for unsubscribes, whatever the bulk backlog",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start one worker process; exit 2 with one message when the configuration cannot run."""
    args = parse_args(argv)
    configure_process_logging()  # every line JSON: RQ's own loggers propagate to it (see relay/logs.py)
    try:
        settings = load_settings()
    except ConfigError as exc:
        log.critical("braze-relay worker: configuration error: %s", exc)
        return 2
    warn_at_start(settings, "worker")
    client = store.connect(settings)
    ctx = context.Context(settings, client)
    context.install(ctx)
    ticker = Ticker(client, settings)
    ticker.start()
    queues = [store.QUEUE_CONSENT] if args.consent_only else [store.QUEUE_CONSENT, store.QUEUE_BULK]
    worker = RelayWorker(queues, connection=client, serializer=JSONSerializer)
    log.info(
        "worker started",
        extra={"sandbox": settings.sandbox, "routes": len(settings.routes), "queues": queues},
    )
    try:
        worker.work(logging_level="INFO")
    finally:
        ticker.stopping.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
