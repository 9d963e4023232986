"""Gunicorn settings for the `web` process; each can be overridden from the environment."""

import logging
import os

import redis

from relay import logs, redises, store, weblog
from relay.config import Settings, load_settings, warn_at_start
from relay.errors import ConfigError

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104 - a server
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 2))
# Not `sync`: a sync worker serves one socket at a time, so a client sending its headers slowly
# (or a kept-alive connection) holds the whole process. gthread reads each request in one of
# `threads` threads and parks idle and slow-to-start connections in a poller. Not gevent: one CPU-
# bound request (a 100,000-row export) would hold every connection of its process. bench/README.md
# ("gunicorn's worker class") has the measurements behind the choice.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "8"))  # gthread: requests in progress per process
# Open connections per process (gthread and gevent), kept-alive and slow ones included.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
# A request takes milliseconds (parse, validate, one Redis round trip; a 100,000-row export a few
# seconds): a worker silent for 30 s is stuck, and gunicorn replaces it.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
# A proxy or load balancer in front keeps idle connections to gunicorn for reuse; it must close an
# idle one before gunicorn does, or it may send a request on a connection gunicorn is closing (a
# 502). 75 s is above the usual 60 s (AWS ALB's idle timeout, nginx's upstream keepalive_timeout).
# Idle kept-alive connections wait in the poller (gthread), not in a thread.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "75"))
# gunicorn's control socket defaults to one path per user: several relays (or tests) on one machine
# would fight over it, and nothing here uses it.
control_socket_disable = True
# Every line is JSON on stdout: gunicorn's own lines through `logconfig_dict` (relay/logs.py), the
# access log built by `logger_class` (relay/weblog.py) with the request's values as fields (never the
# query string: a postback may carry ?td_write_key=...), so no value can break a line or forge one.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
errorlog = "-"
logger_class = weblog.GunicornLogger
logconfig_dict = logs.logging_config(access_log=accesslog)


def on_starting(server: object) -> None:
    """Check the configuration and Redis once in the master: exit 2 with one line, no respawn loop."""
    log = logging.getLogger("relay.web")
    try:
        settings = load_settings()
    except ConfigError as exc:
        log.critical("braze-relay web: configuration error: %s", exc)
        os._exit(2)
    warn_at_start(settings, "web")
    for placed in redises.servers(settings):
        # Not the embedded Redis (sandbox): the workers, which keep it running, check it.
        if placed.url or settings.redis_url:
            _check(settings, placed, log)


def _check(settings: Settings, server: redises.Server, log: logging.Logger) -> None:
    """Check one Redis (a workspace's own, or REDIS_URL's): exit 2 with one line if it may drop records."""
    client = store.connect(settings, url=server.url, socket_timeout=5, socket_connect_timeout=2)
    named = f"{server.name}: " if server.url else ""
    try:
        notes = store.check_server(client, allow_eviction=settings.allow_eviction)
    except ConfigError as exc:
        log.critical("braze-relay web: %s%s", named, exc)
        os._exit(2)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        notes = [f"could not check Redis at start ({type(exc).__name__}): answering 503 until it answers"]
    finally:
        client.close()
    for note in notes:
        log.warning("%s%s", named, note)
