"""WSGI middleware around the app: what it takes from the proxy in front, what it gives the access log.

- The scheme: a proxy that terminates TLS says so in `X-Forwarded-Proto` (werkzeug's ProxyFix, one
  hop); the app then sees https, and the admin session cookie is marked `Secure`. Only the scheme
  is taken: the client address and host stay as the socket and the request say.
- The path, JSON-escaped, for gunicorn's JSON access log (`%({relay.log_path}e)s` in
  gunicorn.conf.py): gunicorn's own path atom is percent-decoded, so `%0d%0a` or `%22` in a URL
  would split or break the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

LOG_PATH = "relay.log_path"  # environ key; gunicorn lower-cases {name}e atoms, so keep it lower case


class LogSafePath:
    """Put the request path, escaped for a JSON string, in the environ for the access log."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """Escape the path, then run the app."""
        raw = environ.get("PATH_INFO", "")
        path = raw.encode("latin-1", "replace").decode("utf-8", "replace")  # WSGI's bytes-as-latin-1
        # ASCII only, every control character escaped; a quote as \u0022, since gunicorn puts a
        # backslash before every '"' of an atom (and none before a backslash).
        environ[LOG_PATH] = json.dumps(path[:2000])[1:-1].replace('\\"', "\\u0022")
        result: Iterable[bytes] = self.app(environ, start_response)
        return result


def wrap(wsgi_app: Any) -> Any:
    """The app's WSGI callable with both middlewares."""
    return LogSafePath(ProxyFix(wsgi_app, x_for=0, x_proto=1, x_host=0, x_port=0, x_prefix=0))
