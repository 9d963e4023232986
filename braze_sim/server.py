"""`Simulator`: the state, config, faults and request log of one simulated Braze, served on loopback.

    with Simulator(api_key="k", combined_limit=None) as sim:    # start(port=0) picks a free port
        requests.post(sim.url + "/users/track", json=..., headers={"Authorization": "Bearer k"})
        sim.state.profile("u1"); sim.faults.fail_next = 2; sim.max_accepted_in_window("track", 3)

`Simulator(config=None, **overrides)` takes a SimConfig and/or its fields as keywords. It serves with
cheroot, a production WSGI server, in a daemon thread: HTTP/1.1 connections are kept alive between
requests, as Braze keeps them (werkzeug's development server closes each one), and a pool of
`threads` answers requests (an answer's latency holds its thread, so threads bound the requests
answered at once).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from cheroot.wsgi import Server

from braze_sim.app import create_sim_app
from braze_sim.catalogs import Catalogs
from braze_sim.config import Faults, SimConfig
from braze_sim.limits import RateLimiter, RequestLog
from braze_sim.state import BrazeState

DEFAULT_THREADS = 64  # requests answered at once; the benchmarks' simulator takes more (--threads)
KEPT_ALIVE = 4096  # idle connections kept open: every sender thread's pool of every worker
LISTEN_BACKLOG = 512  # connections a burst of senders opens at once wait here, not refused


class Simulator:
    """One simulated Braze REST API: state, faults, rate limits and request log, plus its HTTP server."""

    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        self.config = dataclasses.replace(config or SimConfig(), **overrides)
        self.state = BrazeState()
        self.catalogs = Catalogs()
        self.faults = Faults(seed=self.config.seed)
        self.limiter = RateLimiter(self.config.limits)
        self.log = RequestLog()
        # Called with each log entry once answered; the CLI prints a line from it.
        self.on_request: Callable[[dict[str, Any]], None] | None = None
        self.app = create_sim_app(self)
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>` of the running server."""
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() first")
        host, port = self._server.bind_addr[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A copy of the request log: time, method, path, family, status, counts, body, response, fault."""
        return self.log.entries()

    def requests_since(self, index: int = 0) -> list[dict[str, Any]]:
        """Log entries from `index` on."""
        return self.log.entries(index)

    def max_accepted_in_window(self, family: str, seconds: float) -> int:
        """Most requests of `family` accepted (not 429) within any sliding window of `seconds`."""
        return self.log.max_accepted_in_window(family, seconds)

    def stats(self) -> dict[str, Any]:
        """Requests per path and status, 429s per family, track items received and processed."""
        return self.log.stats()

    def record(self, entry: dict[str, Any]) -> None:
        """Log one answered request and tell `on_request`."""
        self.log.append(entry)
        if self.on_request is not None:
            self.on_request(entry)

    def reset(self) -> None:
        """Clear state, catalogs, request log, rate-limit windows and faults (config stays)."""
        self.state.reset()
        self.catalogs.reset()
        self.log.clear()
        self.limiter.reset()
        self.faults.clear()

    def start(self, port: int = 0, host: str = "127.0.0.1", threads: int = DEFAULT_THREADS) -> Simulator:
        """Serve in a daemon thread; port 0 picks a free port; `threads` answer at once. Returns self."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        server = Server((host, port), self.app, numthreads=threads, request_queue_size=LISTEN_BACKLOG)
        server.keep_alive_conn_limit = KEPT_ALIVE  # idle connections kept (cheroot's default: 10)
        server.shutdown_timeout = 1  # requests still answering when stopped finish on their own
        server.prepare()  # binds, so `url` names the port picked
        self._server = server
        self._thread = threading.Thread(target=server.serve, name="braze-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; requests in flight finish on their own threads."""
        if self._server is None:
            return
        self._server.stop()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Simulator:
        return self if self._server is not None else self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
