"""The HTTP edge: validates every payload and stores accepted records in Redis for the workers."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from receiver import admin, cli, cors, errors, openapi, refusals, request_ids, state, views
from relay.config import Settings
from relay.logs import configure_logging


def create_app(config: Settings | None = None) -> Flask:
    """Build the app: the settings (read here, never at import), the shared state, then each part."""
    settings = config or cli.load_settings()  # under a command, a bad configuration is one line
    configure_logging()
    app = Flask(__name__)
    # '//' in a path is a 404, not a redirect that would echo the query string (?td_write_key=...).
    app.url_map.merge_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    state.install(app, state.build(settings))
    views.register(app)  # the ingest endpoints, /metrics, /healthz, /readyz
    openapi.register(app)  # /openapi.json
    cors.register(app)  # routes with allowed_origins: web pages may post
    admin.register(app)  # /admin/ pages and rq-dashboard; 404 unless RELAY_ADMIN_KEYS is set
    errors.register(app)  # every failure in the one JSON shape
    refusals.register(app)  # a route's budgets: 429 with Retry-After, 413, counted
    request_ids.register(app)  # X-Request-Id on every answer
    cli.register(app)  # the operator commands under `flask --app receiver`
    register_proxy(app)
    return app


def register_proxy(app: Flask) -> None:
    """Take the scheme a TLS-terminating proxy names in X-Forwarded-Proto (one hop, nothing else).

    The app then sees https, so the admin session cookie is marked Secure; the client address and
    host stay as the socket and the request say (docs/operations.md, "In front of the relay").
    """
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=0, x_proto=1, x_host=0, x_port=0, x_prefix=0)  # type: ignore[method-assign]
