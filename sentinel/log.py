"""The agent's own diagnostics: JSON lines on stderr through structlog, separate from events and alerts.

Records carry ``event`` (what happened, e.g. ``sentinel.ready``), ``level`` and ``@timestamp``; they are what
operators and tests read to know the agent's state.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

_configured = False


def _render(_logger: Any, _name: str, event_dict: dict[str, Any]) -> str:
    return orjson.dumps(event_dict, default=str).decode()


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
