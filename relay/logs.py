"""Logging: every line a relay process prints is one JSON object; handlers add fields through `extra`.

Each process's entry point sets this up through its library's own hook: gunicorn reads
`logconfig_dict` and `logger_class` (gunicorn.conf.py, relay/weblog.py), the worker and the
simulator call `configure_process_logging`, and RQ's `setup_loghandlers` leaves a logger alone
once the root logger has a handler. Python warnings and uncaught exceptions become log lines too.
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
import threading
import time
from types import TracebackType
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, process id and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON; newlines and control characters in values are escaped."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a call whose arguments do not fit its format string
            message = f"{record.msg} {record.args!r}"
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message,
            "pid": record.process,
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def logging_config(level: str = "INFO", *, access_log: str | None = "-") -> dict[str, Any]:
    """A `logging.config.dictConfig` dict: every logger, gunicorn's included, as JSON lines on stdout.

    `access_log` is gunicorn's `accesslog`: "-" for stdout, a file name, or None for no access log.
    """
    handlers: dict[str, Any] = {
        "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "json"}
    }
    access: dict[str, Any] = {"level": "INFO", "propagate": False, "handlers": []}
    if access_log == "-":
        access["handlers"] = ["stdout"]
    elif access_log:
        handlers["access_file"] = {
            "class": "logging.FileHandler",
            "filename": access_log,
            "formatter": "json",
        }
        access["handlers"] = ["access_file"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": handlers,
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            # gunicorn's own loggers: no handler of their own, so they share the root's JSON lines.
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": access,
        },
    }


def configure_process_logging(level: str = "INFO") -> None:
    """For a process's entry point: JSON lines on stdout for every logger, warnings and crashes included."""
    logging.config.dictConfig(logging_config(level))
    install_hooks()


def install_hooks() -> None:
    """Python warnings and uncaught exceptions (main thread, other threads, `__del__`) become log lines."""
    logging.captureWarnings(True)
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread
    sys.unraisablehook = _unraisable


_crash_log = logging.getLogger(__name__)


def _uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    exc_info = (kind, exc, tb)
    extra = {"in_thread": "MainThread"}
    _crash_log.critical("uncaught exception: %s: %s", kind.__name__, exc, exc_info=exc_info, extra=extra)


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:  # as threading's own hook: a thread's sys.exit() is no error
        return
    thread = args.thread.name if args.thread else "?"
    exc_info = (args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)
    _crash_log.critical(
        "uncaught exception: %s: %s",
        args.exc_type.__name__,
        args.exc_value,
        exc_info=exc_info,
        extra={"in_thread": thread},
    )


def _unraisable(unraisable: Any) -> None:
    kind = unraisable.exc_type
    exc_info = (kind, unraisable.exc_value or kind(), unraisable.exc_traceback)
    _crash_log.error(
        "exception ignored: %s: %s",
        kind.__name__,
        unraisable.exc_value,
        exc_info=exc_info,
        extra={"where": unraisable.err_msg or "", "object": repr(unraisable.object)[:200]},
    )


PACKAGES = ("relay", "receiver", "handlers")  # loggers are named by module: `logging.getLogger(__name__)`


def configure_logging(level: str = "INFO") -> None:
    """Send the relay's loggers to stdout as JSON lines (idempotent; a no-op where the process did it)."""
    # A process entry point (configure_process_logging, gunicorn's logconfig_dict) gave the root
    # logger JSON lines: the packages' loggers propagate to it.
    root_is_json = any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
    for package in PACKAGES:
        logger = logging.getLogger(package)
        logger.setLevel(level)
        if root_is_json or any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
            continue
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
