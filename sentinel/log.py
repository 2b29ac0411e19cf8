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
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(**bind: Any) -> Any:
    if not _configured:
        configure()
    return structlog.get_logger().bind(**bind)
