"""Gunicorn settings for the `web` process; each can be overridden from the environment."""

import logging
import os

import redis

from relay import logs, store, weblog
from relay.config import load_settings
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
    if not settings.redis_url:
        return  # the embedded Redis (sandbox): the workers, which keep it running, check it
    client = store.connect(settings, socket_timeout=5, socket_connect_timeout=2)
    try:
        notes = store.check_server(client, allow_eviction=settings.allow_eviction)
    except ConfigError as exc:
        log.critical("braze-relay web: %s", exc)
        os._exit(2)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        notes = [f"could not check Redis at start ({type(exc).__name__}): answering 503 until it answers"]
    finally:
        client.close()
    for note in notes:
        log.warning(note)
