"""The agent's own diagnostics: JSON lines on stderr through structlog, separate from events and alerts.

Records carry ``event`` (what happened, e.g. ``sentinel.ready``), ``level`` and ``@timestamp``; they are what
operators and tests read to know the agent's state. Fields often quote process strings (paths, command
lines), so records are encoded like alerts (:func:`sentinel.text.dumps`: non-UTF-8 escaped and listed in
``sentinel.escaped_fields``): a diagnostic must never be what raises.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

from sentinel.text import dumps, printable

_configured = False


def _render(_logger: Any, _name: str, event_dict: dict[str, Any]) -> str:
    try:
        return dumps(event_dict, default=str).decode()
    except Exception as exc:  # last resort: the record's name and why it could not be written
        keep = [k for k in ("event", "level", "@timestamp") if k in event_dict]
        fallback = {k: printable(str(event_dict[k])) for k in keep}
        fallback["log_error"] = printable(repr(exc))
        return orjson.dumps(fallback).decode()


class StderrLogger:
    """Writes each record to ``sys.stderr`` as it is *now*: whoever replaces the stream later (a daemon
    wrapper, a test's capture) gets the records, instead of a stream closed since configure() ran."""

    def msg(self, message: str) -> None:
        stream = sys.stderr
        if stream is None:  # no stderr at all (pythonw-like embedding): diagnostics have nowhere to go
            return
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def configure(level: str = "info") -> None:
    """JSON diagnostics to stderr at ``level``."""
    global _configured
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="@timestamp"),
            structlog.processors.format_exc_info,
            _render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *_args: StderrLogger(),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(**bind: Any) -> Any:
    if not _configured:
        configure()
    return structlog.get_logger().bind(**bind)
