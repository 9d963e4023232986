"""The HTTP edge: validates every payload and stores accepted records in Redis for the workers."""

from __future__ import annotations

from flask import Flask

from relay import store
from relay.config import Settings, load_settings


def create_app(config: Settings | None = None) -> Flask:
    """Build the Flask app: load settings, open the shared clients, register blueprints and errors."""
    from prometheus_client import CollectorRegistry
    from werkzeug.middleware.proxy_fix import ProxyFix

    from receiver import admin, cli, cors, request_ids, state, transform
    from receiver.errors import register_error_handlers
    from receiver.group_commit import GroupCommit
    from receiver.openapi import bp as openapi_bp
    from receiver.redis_check import RedisCheck
    from receiver.schemas import schema_for
    from receiver.views import bp
    from relay.logs import configure_logging
    from relay.metrics import RelayCollector

    settings = config or load_settings()
    configure_logging()
    app = Flask(__name__)
    # '//' in a path is a 404, not a redirect that would echo the query string (?td_write_key=...).
    app.url_map.merge_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # Short timeouts: when Redis is away the caller hears 503 quickly instead of hanging.
    client = store.connect(settings, socket_timeout=5, socket_connect_timeout=2)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(client, memory_warn=settings.redis_memory_warn))
    state.install(
        app,
        state.EdgeState(
            settings=settings,
            redis=client,
            tables={(r.database, r.table): r for r in settings.routes.values() if r.database and r.table},
            schemas={name: schema_for(route, settings.limits) for name, route in settings.routes.items()},
            metrics=registry,
            group=GroupCommit(client, wait_s=2 * (5 + 2)),  # twice the client's timeouts
            redis_check=RedisCheck(
                client, allow_eviction=settings.allow_eviction, enabled=bool(settings.redis_url)
            ),
            transform_schemas=transform.schemas_by_route(settings),
        ),
    )
    app.register_blueprint(bp)
    app.register_blueprint(openapi_bp)
    cors.register(app, settings.routes)  # routes with allowed_origins: web pages may post (CORS)
    admin.register(app)  # /admin/ pages and rq-dashboard; 404 unless RELAY_ADMIN_KEYS is set
    register_error_handlers(app)
    request_ids.register(app)
    cli.register(app)
    # A proxy that terminates TLS says so in X-Forwarded-Proto: the app then sees https (the admin
    # session cookie is marked Secure). Only the scheme is taken, from one hop; the client address
    # and host stay as the socket and the request say (docs/operations.md, "In front of the relay").
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=0, x_proto=1, x_host=0, x_port=0, x_prefix=0)  # type: ignore[method-assign]
    return app
