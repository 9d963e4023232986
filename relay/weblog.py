"""gunicorn's logger for the web process: its access log as JSON lines with the request's values as
fields, and its own lines without the query strings and header lines a refused request brings."""

from __future__ import annotations

import contextlib
import logging
import re
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


# A query string in gunicorn's own lines, up to the next space or quote (a refused request line is
# quoted whole in them, `?td_write_key=...` included). One run of one class: linear in the line.
QUERY = re.compile(r"\?[^\s'\"]*")
BAD_HEADER = "Invalid HTTP Header: '"  # gunicorn quotes a header line without a colon whole


def scrub(text: str) -> str:
    """gunicorn's text without query strings, and a malformed header line cut to the name it starts with."""
    text = QUERY.sub("?(query removed)", text)
    start = text.find(BAD_HEADER)
    if start < 0:
        return text
    start += len(BAD_HEADER)
    end = start
    while end < len(text) and (text[end].isalnum() or text[end] == "-"):
        end += 1
    return f"{text[:end]} (value removed)'"


class Scrubbed(logging.Filter):
    """Every line of gunicorn's error log without the secrets a request could bring into it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message scrubbed (its arguments merged in first)."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit: the formatter says so
            return True
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class GunicornLogger(Logger):
    """gunicorn's logger, with the access log as a JSON line whose fields are `extra` fields.

    gunicorn's own access log fills a format string with request values, so a header or path with a
    quote or a newline could break the line or forge another; here every value is a JSON string,
    escaped by `json.dumps`. Handlers and formatters come from `logconfig_dict`.
    """

    def setup(self, cfg: Any) -> None:
        """gunicorn's setup (which applies `logconfig_dict`), then warnings and crashes as log lines."""
        super().setup(cfg)
        self.error_log.addFilter(Scrubbed())
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
