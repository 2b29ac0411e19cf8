"""Where alerts go: stdout, an NDJSON file with rotation, HTTP(S) and syslog (TCP/TLS behind an on-disk spool,
or the local socket).

A sink takes one rendered JSON document at a time (without the newline) with the alert's Falco priority, and
is flushed once per batch of events, so a reader sees alerts within a poll interval without a syscall per
alert. The detection loop never waits on the network: network sinks append to their spool and a thread of
their own delivers. ``--output`` forms: ``stdout``, ``file:PATH``, ``http:URL`` / ``https:URL`` / a bare
``http://…`` or ``https://…`` URL, ``syslog:tcp://HOST:PORT``, ``syslog:tls://HOST:PORT``, ``syslog:local``
(or ``syslog:unix:/path``). The config file builds :class:`SinkConfig` objects with every other setting.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from typing import IO, Any, Protocol

from sentinel.sinks.base import STATS_KEYS, base_stats, priority_rank, with_metric_names
from sentinel.sinks.file import FileSink
from sentinel.sinks.spec import HTTP_PRESETS, KINDS, PRIORITIES, SinkConfig
from sentinel.sinks.stdout import StdoutSink

__all__ = [
    "DEFAULT_STATE_DIR", "FileSink", "MultiSink", "OutputSpecError", "PriorityFilter", "Sink", "SinkConfig",
    "StdoutSink", "check_sink_config", "leaf_sinks", "open_sink", "open_sinks", "parse_output",
    "sink_config_from_spec",
]  # fmt: skip

DEFAULT_STATE_DIR = "/var/lib/sentinel"  # the agent's state directory; spools live under <it>/spool/
FORMATS = ("ecs", "falco")
MIN_SPOOL_BYTES = 4096
_FORMS = (
    "stdout, file:PATH, http:URL, https:URL, syslog:tcp://HOST:PORT, syslog:tls://HOST:PORT or syslog:local"
)


class OutputSpecError(ValueError):
    """An ``--output`` value or sink configuration that names no sink we can open."""


class Sink(Protocol):
    name: str
    written: int
    format: str

    def write(self, line: bytes, priority: str = "warning") -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def reopen(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...


# ---- specs -----------------------------------------------------------------------------------------------


def _check_url(url: str, spec: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutputSpecError(f"{spec!r}: needs a full URL with a host (http:http://127.0.0.1:8080/alerts)")
    if any(ch.isspace() for ch in url):
        raise OutputSpecError(f"{spec!r}: the URL contains white space")
    try:
        port = parts.port
    except ValueError:
        raise OutputSpecError(f"{spec!r}: the URL's port is not a number 1..65535") from None
    if port == 0:
        raise OutputSpecError(f"{spec!r}: the URL's port is not a number 1..65535")
    if parts.fragment:
        raise OutputSpecError(f"{spec!r}: a URL to POST to has no #fragment")
    return url


def _syslog_target(target: str, spec: str) -> str:
    from sentinel.sinks.syslog import SyslogConfigError, parse_syslog_target

    if not target:
        raise OutputSpecError(
            f"{spec!r}: syslog needs a target: syslog:tcp://HOST:PORT, syslog:tls://HOST:PORT or syslog:local"
        )
    try:
        scheme, where, _ = parse_syslog_target(target)
    except SyslogConfigError as exc:
        raise OutputSpecError(str(exc)) from None
    return f"unix:{where}" if scheme == "unix" else target


def parse_output(spec: str) -> tuple[str, str | None]:
    """``--output`` value → (kind, target): ``stdout`` → ("stdout", None); ``file:PATH`` → ("file", PATH);
    ``http:URL``, ``https:URL``, ``http://…``, ``https://…`` → ("http", URL); ``syslog:tcp://H:P``,
    ``syslog:tls://H:P`` → ("syslog", "tcp://H:P" …); ``syslog:local`` → ("syslog", "unix:/dev/log")."""
    text = spec.strip()
    if text in ("stdout", "-"):
        return "stdout", None
    if text.startswith("file:"):
        path = text[5:]
        if not path:
            raise OutputSpecError(f"{spec!r}: file: needs a path (file:/var/log/sentinel/alerts.json)")
        return "file", path
    if text.startswith(("http://", "https://")):
        return "http", _check_url(text, spec)
    if text.startswith(("http:", "https:")):
        prefix, _, url = text.partition(":")
        if not url.startswith(("http://", "https://")):
            raise OutputSpecError(
                f"{spec!r}: {prefix}: is followed by the full URL ({prefix}:{prefix}://HOST:PORT/PATH), "
                f"or give the URL alone"
            )
        if prefix == "https" and url.startswith("http://"):
            raise OutputSpecError(f"{spec!r}: https: with an http:// URL; say which one you mean")
        return "http", _check_url(url, spec)
    if text == "syslog" or text.startswith("syslog:"):
        return "syslog", _syslog_target(text[7:], spec)
    raise OutputSpecError(f"unknown output {spec!r}; use {_FORMS}")


def sink_config_from_spec(spec: str) -> SinkConfig:
    """A :class:`SinkConfig` for an ``--output`` value, every other setting at its default."""
    kind, target = parse_output(spec)
    return SinkConfig(kind=kind, target=target or "")


def check_sink_config(cfg: SinkConfig) -> None:
    """Reject a configuration that cannot work, with a message naming the sink and the setting."""
    where = cfg.label()

    def bad(message: str) -> OutputSpecError:
        return OutputSpecError(f"output {where}: {message}")

    if cfg.kind not in KINDS:
        raise bad(f"kind must be one of {', '.join(KINDS)}, not {cfg.kind!r}")
    if cfg.format not in FORMATS:
        raise bad(f"format must be ecs or falco, not {cfg.format!r}")
    if cfg.min_priority not in PRIORITIES:
        raise bad(f"min_priority must be one of {', '.join(PRIORITIES)}, not {cfg.min_priority!r}")
    if cfg.kind == "file":
        if not cfg.target:
            raise bad("a file sink needs a path")
        if cfg.rotate_bytes < 0 or cfg.keep_files < 0:
            raise bad("rotate_bytes and keep_files cannot be negative")
    if cfg.kind in ("http", "syslog"):
        if cfg.kind == "http":
            _check_url(cfg.target, where)
            if cfg.preset not in HTTP_PRESETS:
                raise bad(f"preset must be one of {', '.join(HTTP_PRESETS)}, not {cfg.preset!r}")
            if cfg.preset == "splunk_hec" and not any(k.lower() == "authorization" for k in cfg.headers):
                raise bad("the splunk_hec preset needs headers: {Authorization: 'Splunk <token>'}")
        else:
            _syslog_target(cfg.target, where)
            if not 0 <= cfg.facility <= 23:
                raise bad(f"facility must be 0..23, not {cfg.facility}")
        if cfg.batch_max < 1 or cfg.batch_wait_s < 0 or cfg.timeout_s <= 0:
            raise bad("batch_max must be at least 1, batch_wait_s at least 0 and timeout_s above 0")
        if cfg.retry_initial_s <= 0 or cfg.retry_max_s < cfg.retry_initial_s:
            raise bad("retry_initial_s must be above 0 and retry_max_s at least retry_initial_s")
        if cfg.spool_max_bytes < MIN_SPOOL_BYTES:
            raise bad(f"spool_max_bytes must be at least {MIN_SPOOL_BYTES}")
        if cfg.tls_key_file and not cfg.tls_cert_file:
            raise bad("tls_key_file without tls_cert_file")


# ---- opening ---------------------------------------------------------------------------------------------


def open_sink(cfg: SinkConfig, state_dir: str = DEFAULT_STATE_DIR, stdout: IO[bytes] | None = None) -> Sink:
    """Open one sink (files created, sockets connected, spools taken, TLS files loaded now, so a bad setting
    fails before the agent starts). Network sinks spool under ``<state_dir>/spool/``."""
    check_sink_config(cfg)
    sink: Sink
    if cfg.kind == "stdout":
        sink = StdoutSink(stdout, cfg.format)
    elif cfg.kind == "file":
        sink = FileSink(cfg.target, cfg.rotate_bytes, cfg.keep_files, cfg.format)
    elif cfg.kind == "http":
        from sentinel.sinks.http import open_http_sink

        sink = open_http_sink(cfg, state_dir)
    elif cfg.target.startswith("unix:"):
        from sentinel.sinks.syslog import LocalSyslogSink

        sink = LocalSyslogSink(cfg)
    else:
        from sentinel.sinks.syslog import open_syslog_tcp_sink

        sink = open_syslog_tcp_sink(cfg, state_dir)
    if priority_rank(cfg.min_priority) < len(PRIORITIES) - 1:
        sink = PriorityFilter(sink, cfg.min_priority)
    return sink


def open_sinks(
    specs: Sequence[str | SinkConfig],
    stdout: IO[bytes] | None = None,
    state_dir: str = DEFAULT_STATE_DIR,
) -> Sink:
    """Open each output (``--output`` strings or SinkConfigs; none = stdout); one sink, or a MultiSink."""
    configs = [s if isinstance(s, SinkConfig) else sink_config_from_spec(s) for s in specs or ["stdout"]]
    labels = [c.label() for c in configs]
    for label in labels:
        if labels.count(label) > 1:
            raise OutputSpecError(f"output {label} is given twice; give distinct names")
    sinks: list[Sink] = []
    try:
        for cfg in configs:
            sinks.append(open_sink(cfg, state_dir, stdout))
    except BaseException:
        for s in sinks:
            s.close()
        raise
    return sinks[0] if len(sinks) == 1 else MultiSink(sinks)


# ---- wrappers --------------------------------------------------------------------------------------------


class PriorityFilter:
    """Passes alerts from ``min_priority`` up; the rest are counted in ``filtered`` (never silently gone).
    An unknown priority is never filtered."""

    def __init__(self, inner: Sink, min_priority: str) -> None:
        self.inner = inner
        self.name = inner.name
        self.format = inner.format
        self.min_priority = min_priority
        self.filtered = 0
        self._floor = priority_rank(min_priority)

    @property
    def written(self) -> int:
        return self.inner.written

    def write(self, line: bytes, priority: str = "warning") -> None:
        if priority_rank(priority) > self._floor:
            self.filtered += 1
            return
        self.inner.write(line, priority)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()

    def reopen(self) -> None:
        self.inner.reopen()

    def stats(self) -> dict[str, Any]:
        stats = self.inner.stats()
        stats["filtered"] = self.filtered
        return stats


class MultiSink:
    """Every alert to every sink, in the order given. With sinks of different formats, the caller renders
    each format once and uses :meth:`write_formats`."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks
        self.name = ",".join(s.name for s in sinks)
        formats = {s.format for s in sinks}
        self.format = formats.pop() if len(formats) == 1 else "mixed"
        self.written = 0

    @property
    def formats(self) -> set[str]:
        return {s.format for s in self.sinks}

    def write(self, line: bytes, priority: str = "warning") -> None:
        for s in self.sinks:
            s.write(line, priority)
        self.written += 1

    def write_formats(self, lines: Mapping[str, bytes], priority: str = "warning") -> None:
        """``lines`` maps each format in :attr:`formats` to that rendering of one alert."""
        for s in self.sinks:
            s.write(lines[s.format], priority)
        self.written += 1

    def flush(self) -> None:
        for s in self.sinks:
            s.flush()

    def reopen(self) -> None:
        for s in self.sinks:
            s.reopen()

    def close(self) -> None:
        """Close every sink even if one fails; the first failure is raised afterwards."""
        first: BaseException | None = None
        for s in self.sinks:
            try:
                s.close()
            except BaseException as exc:  # re-raised below, once the others are closed
                first = first or exc
        if first is not None:
            raise first

    def stats(self) -> dict[str, Any]:
        """Totals over the sinks (``status`` failing if any is; ``last_success`` the latest)."""
        per = [s.stats() for s in self.sinks]
        total = base_stats()
        for key in STATS_KEYS:
            if key in ("last_success", "status"):
                continue
            total[key] = sum(p.get(key, 0) or 0 for p in per)
        total["written"] = self.written
        successes = [p["last_success"] for p in per if p.get("last_success") is not None]
        total["last_success"] = max(successes) if successes else None
        total["status"] = "failing" if any(p.get("status") == "failing" for p in per) else "ok"
        total["spool_dropped"] = sum(p.get("spool_dropped", 0) or 0 for p in per)
        return with_metric_names(total)


def leaf_sinks(sink: Sink) -> list[Sink]:
    """The individual sinks behind ``sink`` (a MultiSink's members, or the sink itself): for per-sink metrics
    and the "spool dropping" check."""
    return list(sink.sinks) if isinstance(sink, MultiSink) else [sink]
