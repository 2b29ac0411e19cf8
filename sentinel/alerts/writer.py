"""The alert stream: alerts rendered through their own structlog logger (orjson at the end) into a sink.

It is separate from the diagnostics logger (``sentinel.log``, JSON lines on stderr): a dedicated logger
built with ``structlog.wrap_logger`` whose processors turn the :class:`Alert` into its document (ECS or
Falco), encode it with :func:`sentinel.alerts.encoding.dumps` (hostile strings escaped, one line always) and
hand the bytes to the sink. The alert travels under ``alert``, because ``event`` is structlog's message
argument, and ``@timestamp`` comes from the kernel event, never from a TimeStamper.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import structlog

from sentinel.alerts.encoding import dumps
from sentinel.alerts.model import Alert
from sentinel.alerts.render import AlertRenderer


class _SinkLogger:
    """The structlog "logger" at the end of the chain: passes the rendered line to the sink."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def msg(self, line: bytes) -> None:
        self.sink.write(line)

    info = warning = error = critical = msg


def _encode(_logger: Any, _name: str, doc: dict[str, Any]) -> bytes:
    return dumps(doc)


class AlertWriter:
    """``write(alert)`` renders and writes one alert; counts what it wrote per rule for the stop record."""

    def __init__(self, renderer: AlertRenderer, sink: Any) -> None:
        self.renderer = renderer
        self.sink = sink
        self.written = 0
        self.by_rule: Counter[str] = Counter()
        self._log = structlog.wrap_logger(
            _SinkLogger(sink),
            processors=[self._document, _encode],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            cache_logger_on_first_use=True,
        )

    def _document(self, _logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        return self.renderer.render(event_dict["alert"])

    def write(self, alert: Alert) -> None:
        if alert.finalize is not None:
            finalize, alert.finalize = alert.finalize, None
            finalize(alert)
        self._log.info("sentinel.alert", alert=alert)
        self.written += 1
        self.by_rule[alert.rule.name] += 1

    def flush(self) -> None:
        self.sink.flush()

    def close(self) -> None:
        self.sink.close()
