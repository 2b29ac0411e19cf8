"""The alert stream: alerts rendered through their own structlog logger (orjson at the end) into a sink.

Sinks of different formats (ECS to a file, Falco to falcosidekick) get each format rendered once per alert.
It is separate from the diagnostics logger (``sentinel.log``, JSON lines on stderr): a dedicated logger
built with ``structlog.wrap_logger`` whose processors turn the :class:`Alert` into its document (ECS or
Falco), encode it with :func:`sentinel.text.dumps` (hostile strings escaped, one line always) and
hand the bytes to the sink. The alert travels under ``alert``, because ``event`` is structlog's message
argument, and ``@timestamp`` comes from the kernel event, never from a TimeStamper.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import structlog

from sentinel.alerts.model import Alert
from sentinel.alerts.render import AlertRenderer
from sentinel.text import dumps


class _SinkLogger:
    """The structlog "logger" at the end of the chain: passes the rendered line(s) to the sink."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.mixed = getattr(sink, "format", None) == "mixed"

    def msg(self, lines: dict[str, bytes], priority: str = "warning") -> None:
        if self.mixed:
            self.sink.write_formats(lines, priority)
        else:
            self.sink.write(next(iter(lines.values())), priority)

    info = warning = error = critical = msg


class AlertWriter:
    """``write(alert)`` renders and writes one alert; counts what it wrote per rule for the stop record.

    ``renderers`` holds one renderer per alert format. Each sink has its format: when they differ (ECS to a
    file, Falco to falcosidekick), each format is rendered once per alert and each sink gets its own.
    """

    def __init__(
        self, renderer: AlertRenderer, sink: Any, renderers: dict[str, AlertRenderer] | None = None
    ) -> None:
        self.renderer = renderer
        self.renderers = renderers or {}
        self.sink = sink
        self.written = 0
        self.by_rule: Counter[str] = Counter()
        formats = getattr(sink, "formats", None)
        if getattr(sink, "format", None) == "mixed" and formats:
            self._formats = sorted(formats)
        else:
            self._formats = [""]  # one format: the stream's renderer
        self._log = structlog.wrap_logger(
            _SinkLogger(sink),
            processors=[self._encode],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            cache_logger_on_first_use=True,
        )

    def _encode(self, _logger: Any, _name: str, event_dict: dict[str, Any]) -> Any:
        alert: Alert = event_dict["alert"]
        lines = {f: dumps((self.renderers.get(f) or self.renderer).render(alert)) for f in self._formats}
        return (lines,), {"priority": alert.rule.priority}

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
