"""Gunicorn settings for the `web` process; each can be overridden from the environment."""

import os
import sys

from relay.config import load_settings, warn_at_start
from relay.secrets import ConfigError

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104 - a server
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 2))
worker_class = "sync"  # each request is short: parse, validate, one Redis round trip
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
# gunicorn's control socket defaults to one path per user: several relays (or tests) on one machine
# would fight over it, and nothing here uses it.
control_socket_disable = True
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
errorlog = "-"
# A query string may hold ?td_write_key=...: log the path only, never the query.
access_log_format = (
    '{"remote": "%(h)s", "method": "%(m)s", "path": "%(U)s", "status": %(s)s, "bytes": %(B)s, "ms": %(M)s, '
    '"request_id": "%({x-request-id}o)s"}'
)


def on_starting(server: object) -> None:
    """Check the configuration once in the master: a bad one exits 2 with one line, no respawn loop."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"braze-relay web: configuration error: {exc}", file=sys.stderr, flush=True)
        os._exit(2)
    warn_at_start(settings, "web")
