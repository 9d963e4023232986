"""The worker process: an RQ worker (no fork per job) plus a ticker that wakes idle lanes.

Run it as `python -m handlers.worker` (the Procfile's `worker`). It takes consent drain jobs
before bulk ones, keeps its Redis and Braze connections across jobs, and every second looks for
lanes that hold records or due retries but have no owner (after a crash, or when a retry falls
due) and enqueues their drain job. It checks its Redis at start (an evicting policy stops it), and
rides out a Redis outage, Redis gone or refusing for now (full, read-only, loading, busy: see
handlers/outage.py): RQ's work loop ends when one meets a job or RQ's own bookkeeping, so `serve`
waits with backoff until Redis takes writes and starts a fresh RQ worker; the records of the
interrupted job come back when its lane's lease expires. No Redis error ends the process.

With workspaces on Redis servers of their own (relay/redises.py) the command starts one such worker
process per Redis and watches them (`supervise`); RELAY_WORKER_REDIS makes it the worker of one.
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker.base import StopRequested

from handlers import context
from handlers.outage import QuietRQ, RedisWatch
from relay import budgets, lanes, redis_health, redises, store
from relay.config import Delivery, Settings, load_settings, warn_at_start
from relay.errors import ConfigError
from relay.lanes import Lane
from relay.logs import configure_process_logging
from relay.migrate import migrate

log = logging.getLogger("handlers.worker")  # by name: under `python -m` the module is __main__
TICK_S = 1.0
WORKER_PARENT = "RELAY_WORKER_PARENT"  # set by the worker command for the workers it starts: its pid
RESTART_PAUSE_S = 1.0  # before a fresh RQ worker when the last one quit for another reason than Redis


class RelayWorker(SimpleWorker):
    """RQ's SimpleWorker: jobs run in this process, so sessions and pools survive between jobs."""

    max_connection_wait_time = 2.0  # RQ's own reconnection backoff: resume soon after Redis returns
    stopping = False  # a stop was asked for (SIGTERM, SIGINT): do not start another

    def request_stop(self, signum: int, frame: object) -> None:
        """Warm shutdown, remembered so that `serve` does not start a fresh worker."""
        self.stopping = True
        super().request_stop(signum, frame)

    def work(self, *args: Any, **kwargs: Any) -> bool:
        """RQ's loop. A stop asked for while RQ starts (it registers the worker before it installs its
        signal handlers) is remembered and ends the loop cleanly, the worker's registration removed,
        instead of killing the process with RQ's bookkeeping half done."""
        self.early_stops: list[int] = []
        if threading.current_thread() is threading.main_thread():
            for stop in (signal.SIGTERM, signal.SIGINT):
                signal.signal(stop, lambda signum, _frame: self.early_stops.append(signum))
        return bool(super().work(*args, **kwargs))

    def _install_signal_handlers(self) -> None:
        """RQ's handlers; a stop that came before them ends the loop at its first turn."""
        super()._install_signal_handlers()
        if getattr(self, "early_stops", None):
            self.stopping = True
            self._stop_requested = True

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """RQ's report of a failed job, but a Redis outage met by its bookkeeping goes to the watch."""
        error = exc_info[1] if len(exc_info) > 1 else None
        if isinstance(error, redis.RedisError) and redis_health.passing(error):
            context.current().watch.lost(error, "rq")
            return
        super().handle_exception(job, *exc_info)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run one job; if Redis went away or began refusing meanwhile, end RQ's loop so `serve` waits.

        RQ's loop would go on taking jobs whose bookkeeping Redis refuses (a full Redis still pops
        them from the queue), losing each: the wait has backoff, and the ticker re-arms the lanes.
        """
        super().execute_job(job, queue)
        if context.current().watch.down:
            raise StopRequested  # RQ's loop ends quietly on it; `serve` tells it from a real stop


def tick(client: redis.Redis, delivery: Delivery, configured: Iterable[Lane] = ()) -> int:
    """Wake every lane with work and no owner (known in Redis or from the routes); return how many."""
    woken = 0
    found = lanes.states(client, Lane.known(client, configured))
    for state in found:
        if (state.waiting or state.due) and not state.owned and state.lane.wake(client, delivery):
            log.info(
                "lane woken by ticker",
                extra={"lane": state.lane.name, "waiting": state.waiting, "due_retries": state.due},
            )
            woken += 1
    reset_idle_counts(client, found)
    return woken


def reset_idle_counts(client: redis.Redis, found: list[lanes.LaneState]) -> None:
    """Reset the routes' queued counts of each workspace whose lanes all looked empty (the script looks
    again, atomically): counts that drifted heal whenever a workspace is idle."""
    by_workspace: dict[str, list[lanes.LaneState]] = {}
    for state in found:
        by_workspace.setdefault(state.lane.workspace, []).append(state)
    for workspace, states in by_workspace.items():
        if not any(state.waiting or state.retrying for state in states):
            budgets.reset_when_empty(client, workspace, [(s.lane.list_key, s.lane.retry_key) for s in states])


class Ticker(threading.Thread):
    """Calls `tick` every second until stopped; tells the watch when Redis is away and when back."""

    def __init__(self, client: redis.Redis, settings: Settings, watch: RedisWatch) -> None:
        super().__init__(name="relay-ticker", daemon=True)
        self.client, self.delivery, self.watch = client, settings.delivery, watch
        self.configured = Lane.configured(settings.routes.values(), settings.delivery.track_shards)
        self.stopping = threading.Event()

    def run(self) -> None:
        """Loop until `stopping` is set."""
        said = ""  # an error that waiting does not cure is said once, until a good tick
        while not self.stopping.wait(TICK_S):
            try:
                if self.watch.down:
                    self.watch.check()  # a tick of reads passes on a full Redis: ask with a write
                tick(self.client, self.delivery, self.configured)
            except redis.RedisError as exc:
                lasting = "" if redis_health.passing(exc) else redis_health.code(exc)
                if not lasting or lasting != said:
                    self.watch.refused(exc, "ticker")
                said = lasting
                continue
            said = ""


# A drain job keeps its windows of records (tens of thousands of envelopes and Braze objects) alive
# while it makes and drops as many a second. With CPython's default thresholds (700, 10, 10) the
# collector then runs thousands of times per 100,000 records, a dozen of them full collections
# that visit every live object: about a fifth of a worker's CPU (`python -m bench.profile_drain
# --default-gc`). Collecting the young generation every 10,000 allocations cuts that to a few
# percent. Reference counting frees the records either way; the collector only finds cycles.
GC_YOUNG = 10_000


def tune_gc() -> None:
    """Freeze the objects of start-up out of every collection and collect less often (above)."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG, 10, 10)


def serve(queues: list[str], client: redis.Redis, watch: RedisWatch) -> None:
    """Run RQ workers on `queues` until a stop is asked for, riding out Redis outages."""
    while True:
        worker = RelayWorker(queues, connection=client, serializer=JSONSerializer)
        reports = watch.reports
        try:
            worker.work(logging_level="INFO")
        except redis.RedisError as exc:  # RQ's bookkeeping at start or end (register_birth, register_death)
            watch.refused(exc, "worker")
        except StopRequested:  # a stop asked for before RQ's loop began
            return
        if worker.stopping:
            return
        try:
            if watch.reports == reports:  # no Redis trouble, not even one the ticker saw end meanwhile
                log.error("rq worker stopped unexpectedly; starting a fresh one", extra={"queues": queues})
                time.sleep(RESTART_PAUSE_S)
            if not watch.wait(functools.partial(_asked_to_stop, worker)):
                return
        except StopRequested:  # SIGTERM while waiting for Redis: RQ's handler of the last worker
            return


def _asked_to_stop(worker: RelayWorker) -> bool:
    return worker.stopping


def checked_redis(client: redis.Redis, settings: Settings, watch: RedisWatch) -> None:
    """Wait for Redis, then check it (ConfigError if it may drop records); notes are logged once.

    Then an older relay's keys are moved to today's layout (relay/migrate.py), and the configured
    workspaces remembered.
    """
    while True:
        watch.wait()
        try:
            notes = store.check_server(client, allow_eviction=settings.allow_eviction)
            migrate(client, settings.routes)
            store.register_workspaces(client, settings.workspaces)
        except redis.RedisError as exc:
            if not redis_health.passing(exc):  # no outage: this Redis cannot be checked at all
                raise ConfigError(f"Redis refused the start-up check ({redis_health.code(exc)})") from None
            watch.lost(exc, "start")
            continue
        for note in notes:
            log.warning(note)
        return


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
    """Start the worker of each Redis; exit 2 with one message when the configuration cannot run.

    With every workspace on REDIS_URL's Redis (the usual case) this process is that Redis's worker.
    With workspaces on Redis servers of their own it starts one worker process per Redis (`supervise`),
    unless RELAY_WORKER_REDIS names the one Redis it serves.
    """
    args = parse_args(argv)
    configure_process_logging()  # every line JSON: RQ's own loggers propagate to it (see relay/logs.py)
    chosen = os.environ.get("RELAY_WORKER_REDIS", "")  # redises.WORKER_REDIS
    try:
        settings = load_settings()
        servers = [redises.named(settings, chosen)] if chosen else redises.servers(settings)
    except ConfigError as exc:
        log.critical("braze-relay worker: configuration error: %s", exc)
        return 2
    if len(servers) > 1:
        return supervise(servers, sys.argv[1:] if argv is None else argv)
    return work(settings, servers[0], args)


def work(settings: Settings, server: redises.Server, args: argparse.Namespace) -> int:
    """Serve one Redis: the drain jobs, the ticker and the rate limits of the workspaces it holds."""
    settings = redises.only(settings, server)
    warn_at_start(settings, "worker")
    client = store.connect(settings, url=server.url)
    ctx = context.Context(settings, client)
    watch = ctx.watch
    logging.getLogger("rq.worker").addFilter(QuietRQ(watch))
    try:
        checked_redis(client, settings, watch)
    except ConfigError as exc:
        log.critical("braze-relay worker: %s%s", f"{server.name}: " if server.url else "", exc)
        return 2
    context.install(ctx)
    ticker = Ticker(client, settings, watch)
    ticker.start()
    parent = os.environ.get(WORKER_PARENT, "")
    if parent.isdigit():
        threading.Thread(target=_stop_when_orphaned, args=(int(parent),), daemon=True).start()
    queues = [store.QUEUE_CONSENT] if args.consent_only else list(store.RQ_QUEUES)
    said = {
        "sandbox": settings.sandbox,
        "routes": len(settings.routes),
        "queues": queues,
        "redis": server.name,
    }
    log.info("worker started", extra=said)
    tune_gc()
    try:
        serve(queues, client, watch)
    finally:
        ticker.stopping.set()
    log.info("worker stopped", extra={"queues": queues, "redis": server.name})
    return 0


def _stop_when_orphaned(parent: int) -> None:
    """Stop this worker (as SIGTERM does: the job in hand finishes) once the worker command that started
    it is gone, even killed by SIGKILL, which it cannot pass on: the worker's parent is then another."""
    while os.getppid() == parent:
        time.sleep(TICK_S)
    log.warning("the worker command that started this worker is gone: stopping")
    os.kill(os.getpid(), signal.SIGTERM)


def supervise(servers: list[redises.Server], argv: list[str]) -> int:
    """One worker process per Redis, each told its Redis by RELAY_WORKER_REDIS, until a stop is asked.

    Each rides out its own Redis's outages, so one Redis down stops only the delivery of the
    workspaces it holds. A worker that exits is started again (after a pause), unless it refused its
    configuration (status 2): then every worker is stopped and so is this process, with status 2.
    SIGTERM and SIGINT are passed on once to every worker (each in a session of its own, so that a
    terminal's Ctrl-C reaches them once, from here), which stop as one worker does.
    """
    stop = threading.Event()
    asked: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        asked.append(signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    children = {server.name: _spawn(server.name, argv) for server in servers}
    log.info("worker started: one worker process per Redis", extra={"redis": list(children)})
    status = 0
    while not stop.wait(TICK_S):
        for name, child in children.items():
            code = child.poll()
            if code == 2:
                # Its own critical line said why; this one says that every worker stops for it.
                log.error(
                    "the worker of a Redis refused to start: stopping every worker", extra={"redis": name}
                )
                status = 2
                stop.set()
            elif code is not None:
                log.error(
                    "worker of a Redis exited; starting it again", extra={"redis": name, "status": code}
                )
                time.sleep(RESTART_PAUSE_S)
                children[name] = _spawn(name, argv)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(asked[0] if asked else signal.SIGTERM)
    for child in children.values():
        child.wait()
    log.info("worker stopped", extra={"redis": list(children)})
    return status


def _spawn(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    """This worker command, told to serve the Redis of this name (and who started it)."""
    env = {**os.environ, redises.WORKER_REDIS: name, WORKER_PARENT: str(os.getpid())}
    command = [sys.executable, "-m", "handlers.worker", *argv]  # this very command, no shell
    return subprocess.Popen(command, env=env, start_new_session=True)  # noqa: S603 - our own argv


if __name__ == "__main__":
    sys.exit(main())
