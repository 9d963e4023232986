"""gunicorn's logger for the web process: its access log as JSON lines with the request's values as fields."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger

from relay.logs import install_hooks

# The access log's fields and the gunicorn atom each comes from (never the query string: a postback
# may carry ?td_write_key=...).
ACCESS_FIELDS = {
    "remote": "h",
    "method": "m",
    "path": "U",
    "status": "s",
    "bytes": "B",
    "ms": "M",
    "request_id": "{x-request-id}o",
    "user_agent": "{user-agent}i",
}


class GunicornLogger(Logger):
    """gunicorn's logger, with the access log as a JSON line whose fields are `extra` fields.

    gunicorn's own access log fills a format string with request values, so a header or path with a
    quote or a newline could break the line or forge another; here every value is a JSON string,
    escaped by `json.dumps`. Handlers and formatters come from `logconfig_dict`.
    """

    def setup(self, cfg: Any) -> None:
        """gunicorn's setup (which applies `logconfig_dict`), then warnings and crashes as log lines."""
        super().setup(cfg)
        install_hooks()

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        """One line per answered request: method, path (no query), status, bytes, time, request id."""
        if not self.cfg.accesslog:
            return
        atoms = self.atoms(resp, req, environ, request_time)
        fields = {name: atoms.get(atom) for name, atom in ACCESS_FIELDS.items()}  # header atoms are lowercase
        with contextlib.suppress(TypeError, ValueError):
            fields["status"] = int(fields["status"])
        self.access_log.info("%s %s %s", fields["method"], fields["path"], fields["status"], extra=fields)
