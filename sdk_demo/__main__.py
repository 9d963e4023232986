"""`python -m sdk_demo --port 8001`: serve the demo page, with the relay's URL and the routes' page keys.

The page loads the vendored td-js-sdk (static/td-js-sdk/) and posts an event and a consent change to
the routes named by --events-route and --consent-route, as configured in the relay's routes file
(their database, table and own write key: a key in a page is public, so those routes must have
keys of their own). It is served from another origin than the relay, so the browser makes the
CORS preflight that `allowed_origins` answers.
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
from relay.logs import configure_process_logging
from relay.secrets import ConfigError

log = logging.getLogger("sdk_demo")

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_RELAY = "http://127.0.0.1:8000/"


def route_config(settings: Settings, name: str) -> dict[str, Any]:
    """What the page needs to post to one route: database, table, the route's own key, its origins."""
    route = settings.routes.get(name)
    if route is None:
        raise ConfigError(f"route {name!r} is not in the routes file {settings.config_path!r}")
    if not route.allowed_origins or not route.write_keys:
        raise ConfigError(f"route {name!r} has no allowed_origins: a web page cannot post to it")
    return {
        "route": name,
        "database": route.database,
        "table": route.table,
        "writeKey": route.write_keys[0].reveal(),  # public by design: it is in the page
        "allowedOrigins": list(route.allowed_origins),
    }


def page_config(settings: Settings, relay: str, events: str, consent: str) -> dict[str, Any]:
    """The page's whole configuration, served as /config.js."""
    config = {
        "endpoint": relay.rstrip("/") + "/",  # td-js-sdk appends '<database>/<table>'
        "events": route_config(settings, events),
        "consent": route_config(settings, consent),
        "brazeUsers": None,
    }
    if settings.sandbox:  # the simulator shows what Braze holds for a user
        workspace = settings.workspaces[settings.routes[events].workspace]
        config["brazeUsers"] = f"{workspace.endpoint}/_sim/users/"
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
    parser.add_argument("--events-route", default="demo_events")
    parser.add_argument("--consent-route", default="demo_consent")
    args = parser.parse_args(argv)
    configure_process_logging()
    try:
        config = page_config(load_settings(), args.relay, args.events_route, args.consent_route)
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
