"""What a worker process builds once and every job reuses: settings, Redis, Braze sessions, limiter."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property

import redis

from handlers.braze import Answer, BrazeClient, Verdict
from handlers.outage import RedisWatch
from handlers.packing import BrazeRequest
from handlers.ratelimit import Limiter
from handlers.unchanged import Memory
from handlers.watermarks import Watermarks
from relay import store
from relay.config import Settings, load_settings

log = logging.getLogger(__name__)


class Context:
    """Process-wide clients for jobs; jobs receive only JSON-safe arguments and build from here."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or store.connect(settings)
        # Each sender thread may hold a Redis connection at once (rate limit, lease check), beside
        # the job, the ticker and RQ: redis-py's pool stops at 100 unless told otherwise.
        pool = self.redis.connection_pool
        needed = settings.delivery.inflight + 16
        if isinstance(getattr(pool, "max_connections", None), int) and pool.max_connections < needed:
            pool.max_connections = needed
        self._local = threading.local()  # each sender thread's own Braze clients

    @cached_property
    def watch(self) -> RedisWatch:
        """The process's one view of whether Redis is there (jobs, the ticker and RQ's loop report to it)."""
        return RedisWatch(self.redis)

    @cached_property
    def senders(self) -> ThreadPoolExecutor:
        """The threads that send a round's requests at once (RELAY_INFLIGHT of them), kept for the process."""
        return ThreadPoolExecutor(
            max_workers=self.settings.delivery.inflight, thread_name_prefix="relay-send"
        )

    @cached_property
    def watermarks(self) -> Watermarks:
        """The no-stale-overwrite checker."""
        return Watermarks(self.redis, self.settings.delivery.watermark_ttl_s)

    @cached_property
    def unchanged(self) -> Memory:
        """The skip_unchanged memory (kept for the workspaces where a route has skip_unchanged)."""
        routes = [route for route in self.settings.routes.values() if route.skip_unchanged]
        return Memory(
            self.redis,
            self.settings.delivery.unchanged_ttl_s,
            skip_routes=[route.name for route in routes],
            remembering={route.workspace for route in routes},
        )

    @cached_property
    def limiter(self) -> Limiter:
        """The shared rate limiter."""
        return Limiter(self.redis, self.settings.delivery)

    def braze(self, workspace: str) -> BrazeClient:
        """This thread's kept-alive client of a workspace (KeyError if the routes file no longer names it)."""
        clients: dict[str, BrazeClient] | None = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        client = clients.get(workspace)
        if client is None:
            client = clients[workspace] = BrazeClient(
                self.settings.workspaces[workspace], self.settings.delivery
            )
        return client

    def observe(self, workspace: str, request: BrazeRequest, answer: Answer | None, verdict: Verdict) -> None:
        """Log the call and feed Braze's rate-limit headers to the limiter."""
        family = request.items[0].family
        if answer is not None:
            self.limiter.observe(workspace, family, answer.headers)
        request_ids = sorted({item.envelope["id"].rsplit(".", 1)[0] for item in request.items})
        log.info(
            "braze call",
            extra={
                "request_ids": request_ids[:20],
                "endpoint": request.endpoint,
                "objects": request.count(),
                "status": answer.status if answer is not None else None,
                "verdict": type(verdict).__name__,
            },
        )


_context: Context | None = None


def install(context: Context) -> None:
    """Make `context` the one this process's jobs use (the worker does this at start)."""
    global _context  # noqa: PLW0603 - one per process, by design
    _context = context


def current() -> Context:
    """This process's context, built from the environment on first use."""
    if _context is None:
        install(Context(load_settings()))
    assert _context is not None
    return _context
