"""The agent's own diagnostics: JSON lines on stderr through structlog, separate from events and alerts.

Records carry ``event`` (what happened, e.g. ``sentinel.ready``), ``level`` and ``@timestamp``; they are what
operators and tests read to know the agent's state. Fields often quote process strings (paths, command
lines), so records are encoded like alerts (:func:`sentinel.text.dumps`: non-UTF-8 escaped and listed in
``sentinel.escaped_fields``): a diagnostic must never be what raises.

``--log-format ecs`` writes the same records as ECS documents, so they can share an index with the alerts
(where ``event`` is an object: a string ``event`` would be rejected by the mapping, or reject the alerts):
the record's name is ``message`` and ``event.action`` (``{"message": "sentinel.ready", ...}``: still findable
by the tools that wait for it), ``event.kind: event``, ``event.dataset: sentinel.diagnostics``,
``log.level``, ``@timestamp``, an exception's text in ``error.stack_trace``, and every other key of the
record under ``sentinel.diagnostic`` (ECS has no field for them; kept out of ECS's namespace so a key such
as ``host`` or ``pid`` cannot collide with an ECS field of another type). The default form is unchanged.
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
        keep = [k for k in ("event", "level", "@timestamp", "message", "log") if k in event_dict]
        # ECS form: event and log are our own objects of plain strings, kept as objects
        fallback = {k: v if isinstance(v := event_dict[k], dict) else printable(str(v)) for k in keep}
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


LOG_FORMATS = ("json", "ecs")
_ECS_VERSION = "9.1.0"  # as the alerts (sentinel.alerts.ecs.ECS_VERSION; not imported: logging stays light)


def ecs_record(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """A structlog record as an ECS document (``--log-format ecs``)."""
    rest = dict(event_dict)
    name = str(rest.pop("event", ""))
    level = rest.pop("level", None)
    doc: dict[str, Any] = {"@timestamp": rest.pop("@timestamp", None), "message": name}
    doc["event"] = {"kind": "event", "module": "sentinel", "dataset": "sentinel.diagnostics", "action": name}
    doc["log"] = {"level": level, "logger": "sentinel"}
    doc["ecs"] = {"version": _ECS_VERSION}
    trace = rest.pop("exception", None)
    if trace is not None:
        doc["error"] = {"stack_trace": str(trace)}
    if rest:
        doc["sentinel"] = {"diagnostic": rest}
    return doc


def configure(level: str = "info", fmt: str = "json") -> None:
    """JSON diagnostics to stderr at ``level``; ``fmt`` ``ecs``: as ECS documents (see the module's doc)."""
    global _configured
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; choose json or ecs")
    shape = [ecs_record] if fmt == "ecs" else []
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="@timestamp"),
            structlog.processors.format_exc_info,
            *shape,
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
