"""`python -m sdk_demo --port 8001`: serve the demo page, with the relay's URL and the SDK routes' key.

The page loads the vendored td-js-sdk (static/td-js-sdk/) and uses it as its docs say: one client for
the routes' database, `trackEvent` into the events route's table, and the SDK's consent manager,
whose `saveContexts` and `saveConsents` write the contexts and consent routes' tables. The routes
(default sdk_events, sdk_consent, sdk_consent_contexts of relay.example.toml, presets td_js_sdk and
td_js_consent) must share one database and one key, as the one client does. It is served from another
origin than the relay, so the browser makes the CORS preflight that `allowed_origins` answers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from relay.config import Settings, load_settings
from relay.errors import ConfigError
from relay.logs import configure_process_logging
from relay.routes import Route

log = logging.getLogger("sdk_demo")

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_RELAY = "http://127.0.0.1:8000/"
ROUTES = {"events": "sdk_events", "consent": "sdk_consent", "contexts": "sdk_consent_contexts"}
PRESETS = {"events": "td_js_sdk", "consent": "td_js_consent"}  # what each table's records need


def page_route(settings: Settings, role: str, name: str) -> Route:
    """The route a table of the page posts to; ConfigError unless a page can post to it as the SDK sends."""
    route = settings.routes.get(name)
    if route is None:
        raise ConfigError(f"route {name!r} is not in the routes file {settings.config_path!r}")
    if not route.allowed_origins:  # such a route has a table and keys of its own (checked at start)
        raise ConfigError(f"route {name!r} has no allowed_origins: a web page cannot post to it")
    preset = PRESETS.get(role)
    if preset and (route.transform is None or route.transform.preset != preset):
        raise ConfigError(f"route {name!r} needs preset = {preset!r}: the page posts the SDK's own records")
    return route


def page_config(settings: Settings, relay: str, names: dict[str, str]) -> dict[str, Any]:
    """The page's whole configuration, served as /config.js."""
    routes = {role: page_route(settings, role, names[role]) for role in ROUTES}
    events, consent = routes["events"], routes["consent"]
    key = events.write_keys[0]
    for route in routes.values():  # one Treasure client: one database, one key for every table
        if route.database != events.database or key not in route.write_keys:
            raise ConfigError(
                f"routes {events.name!r} and {route.name!r} must share a database and a key: "
                "the page's one SDK client posts every table to one database with one key"
            )
    consent_args = consent.transform.args if consent.transform else {}
    alias_label = consent_args.get("alias_label", "td_client_id")
    config: dict[str, Any] = {
        "endpoint": relay.rstrip("/") + "/",  # td-js-sdk appends '<database>/<table>'
        "database": events.database,
        "writeKey": key.reveal(),  # public by design: it is in the page
        # The origins every one of the routes allows: where the page works.
        "allowedOrigins": [
            o for o in events.allowed_origins if all(o in r.allowed_origins for r in routes.values())
        ],
        "routes": {role: {"route": route.name, "table": route.table} for role, route in routes.items()},
        "purposes": dict(consent_args.get("purposes", {})),
        "aliasLabel": alias_label,
        "braze": None,
    }
    if settings.sandbox:  # the simulator shows what Braze holds for a user
        workspace = settings.workspaces[events.workspace]
        config["braze"] = {
            "users": f"{workspace.endpoint}/_sim/users/",
            "aliases": f"{workspace.endpoint}/_sim/aliases/{alias_label}/",
        }
    return config


class DemoHandler(SimpleHTTPRequestHandler):
    """Static files from static/, and /config.js made from the relay's settings."""

    def __init__(self, *args: Any, config_js: bytes, **kwargs: Any) -> None:
        self.config_js = config_js  # before the base class, which handles the request in __init__
        super().__init__(*args, directory=str(STATIC), **kwargs)

    def do_GET(self) -> None:
        """Serve /config.js, or a static file."""
        if self.path.split("?", 1)[0] == "/config.js":
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript; charset=utf-8")
            self.send_header("Content-Length", str(len(self.config_js)))
            self.end_headers()
            self.wfile.write(self.config_js)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        """One JSON line per request (the base class writes plain text to stderr)."""
        log.info("request", extra={"remote": self.client_address[0], "line": format % args})

    def end_headers(self) -> None:
        """Never cached: a changed key or route shows at the next reload."""
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


def main(argv: list[str] | None = None) -> int:
    """Parse the options, read the relay's settings and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m sdk_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--relay",
        default=os.environ.get("RELAY_DEMO_RELAY_URL", DEFAULT_RELAY),
        help="the relay's base URL as the browser reaches it (default: $RELAY_DEMO_RELAY_URL or %(default)s)",
    )
    for role, default in ROUTES.items():
        parser.add_argument(f"--{role}-route", default=default, help="default: %(default)s")
    args = parser.parse_args(argv)
    configure_process_logging()
    names = {role: getattr(args, f"{role}_route") for role in ROUTES}
    try:
        config = page_config(load_settings(), args.relay, names)
    except ConfigError as exc:
        log.critical("sdk_demo: configuration error: %s", exc)
        return 2
    config_js = f"window.RELAY_DEMO = {json.dumps(config)};\n".encode()
    server = ThreadingHTTPServer((args.host, args.port), partial(DemoHandler, config_js=config_js))
    url = f"http://{args.host}:{server.server_port}/"
    log.info("sdk_demo: the td-js-sdk page is up", extra={"url": url, "relay": config["endpoint"]})
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
