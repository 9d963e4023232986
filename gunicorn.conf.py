"""Gunicorn settings for the `web` process; each can be overridden from the environment."""

import logging
import os

from relay import logs, weblog
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
    """Check the configuration once in the master: a bad one exits 2 with one line, no respawn loop."""
    try:
        load_settings()
    except ConfigError as exc:
        logging.getLogger("relay.web").critical("braze-relay web: configuration error: %s", exc)
        os._exit(2)
