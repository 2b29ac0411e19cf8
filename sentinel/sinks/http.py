"""Alerts POSTed to an HTTP(S) endpoint in batches, behind the spool (standard library only: ``http.client``
keeps one connection alive, ``ssl`` does TLS; nothing here needs more, and the agent stays dependency-light).

Presets (``SinkConfig.preset``):

- ``webhook``: the batch as NDJSON (``application/x-ndjson``), one document per line, exactly the lines the
  file sink writes. Chosen over a JSON array because it needs no re-encoding, a receiver can split it with a
  line reader, and Logstash (``json_lines``), Vector, Fluent Bit and Elastic Agent's HTTP input read it.
- ``splunk_hec``: Splunk's HTTP Event Collector event endpoint, ``{"time": <epoch>, "host": …,
  "sourcetype": "sentinel:alert", "event": <document>}`` objects one after another (HEC's batch form);
  ``time`` is the alert's own ``@timestamp`` (or Falco ``time``); the token comes from
  ``headers: {Authorization: "Splunk <token>"}``.
- ``falcosidekick``: one Falco-format document per POST to the URL as given (falcosidekick listens on
  ``/``), ``application/json``, never gzipped (falcosidekick does not decode it); the sink's ``format`` is
  always falco (falcosidekick refuses anything else).

2xx = delivered; 413 = halve the batch; 408, 429 (honouring ``Retry-After``), 5xx, other statuses and
connection errors = retry with backoff; any other 4xx = the batch is rejected, counted and dropped.
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import gzip
import http.client
import re
import socket
import threading
import urllib.parse
from typing import Any

import orjson

from sentinel import __version__
from sentinel.sinks.base import client_tls_context
from sentinel.sinks.delivery import DELIVERED, REJECTED, RETRY, TOO_LARGE, Outcome, SpooledSink
from sentinel.sinks.spec import HTTP_PRESETS, SinkConfig
from sentinel.text import printable

GZIP_MIN_BYTES = 1024  # smaller bodies are sent as they are: compressing them gains nothing
GZIP_LEVEL = 3  # ~3x cheaper than 6 on alert batches for ~15% more bytes: agent CPU matters more
MAX_RESPONSE_BYTES = 1 << 16
RETRY_STATUSES = (408, 429)
SPLUNK_SOURCETYPE = b"sentinel:alert"
_TIME = re.compile(rb'"(?:@timestamp|time)":"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z"')


class HttpConfigError(ValueError):
    """An HTTP sink configuration that cannot work (bad URL, unknown preset, missing token)."""


def event_epoch(line: bytes) -> bytes | None:
    """The document's own time as epoch seconds with milliseconds (``@timestamp`` for ECS, ``time`` for
    Falco, both RFC 3339 UTC at the start of the line), without decoding the whole document."""
    match = _TIME.search(line)
    if match is None:
        return None
    year, month, day, hour, minute, second, frac = match.groups()
    try:
        secs = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second)))
    except (ValueError, OverflowError):
        return None
    millis = (frac or b"0").ljust(3, b"0")[:3]
    return b"%d.%s" % (secs, millis)


def splunk_body(lines: list[bytes], host: bytes) -> bytes:
    """HEC batch: event objects back to back (newline-separated), each wrapping the document untouched."""
    parts = []
    for line in lines:
        epoch = event_epoch(line)
        head = b'{"time":' + epoch + b"," if epoch is not None else b"{"
        parts.append(
            head + b'"host":' + host + b',"sourcetype":"' + SPLUNK_SOURCETYPE + b'","event":' + line + b"}"
        )
    return b"\n".join(parts)


class HttpTransport:
    """One keep-alive connection, re-made after any error. ``send`` runs on the delivery thread only."""

    def __init__(self, cfg: SinkConfig) -> None:
        url = urllib.parse.urlsplit(cfg.target)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise HttpConfigError(
                f"{cfg.target!r}: an http sink needs an http:// or https:// URL with a host"
            )
        try:
            port = url.port
        except ValueError as exc:
            raise HttpConfigError(f"{cfg.target!r}: {exc}") from None
        if cfg.preset not in HTTP_PRESETS:
            raise HttpConfigError(
                f"unknown http preset {cfg.preset!r}; use webhook, splunk_hec or falcosidekick"
            )
        self.preset = cfg.preset
        self.https = url.scheme == "https"
        self.host = url.hostname
        self.port = port or (443 if self.https else 80)
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.timeout = cfg.timeout_s
        self.context = client_tls_context(cfg) if self.https else None
        self.batch_max = 1 if cfg.preset == "falcosidekick" else max(1, cfg.batch_max)
        self.gzip = cfg.gzip and cfg.preset != "falcosidekick"
        headers = {"User-Agent": f"sentinel/{__version__}"}
        if url.username is not None:  # http://user:password@host/… → basic auth (headers can override it)
            userinfo = f"{urllib.parse.unquote(url.username)}:{urllib.parse.unquote(url.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
        headers.update(cfg.headers)
        if cfg.preset == "splunk_hec" and not any(k.lower() == "authorization" for k in headers):
            raise HttpConfigError("the splunk_hec preset needs headers: {Authorization: 'Splunk <token>'}")
        self.headers = headers
        if cfg.preset == "webhook":
            self.content_type = "application/x-ndjson"
        else:
            self.content_type = "application/json"
        self.host_json = orjson.dumps(printable(socket.gethostname()))  # a root-set name can be any bytes
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def body(self, lines: list[bytes]) -> bytes:
        if self.preset == "splunk_hec":
            return splunk_body(lines, self.host_json)
        if self.preset == "falcosidekick":
            return lines[0]
        return b"\n".join(lines) + b"\n"

    def _connect(self) -> http.client.HTTPConnection:
        if self.https:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.context
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        with self._lock:
            self._conn = conn
        return conn

    def send(self, lines: list[bytes]) -> Outcome:
        body = self.body(lines)
        headers = dict(self.headers)
        headers["Content-Type"] = self.content_type
        if self.gzip and len(body) >= GZIP_MIN_BYTES:
            body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
            headers["Content-Encoding"] = "gzip"
        for again in (False, True):
            reused = self._conn is not None
            try:
                conn = self._conn or self._connect()
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                text = resp.read(MAX_RESPONSE_BYTES)
                if resp.will_close or not resp.isclosed():
                    self.close()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if reused and not again:
                    continue  # the peer closed an idle keep-alive connection: once more on a new one
                return Outcome(RETRY, f"{type(exc).__name__}: {exc}")
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                return Outcome(RETRY, f"{type(exc).__name__}: {exc}")
            return judge(resp.status, resp.reason, text, resp.getheader("Retry-After"))
        return Outcome(RETRY, "unreachable")  # pragma: no cover - the loop always returns

    def abort(self) -> None:
        with self._lock:
            conn = self._conn
        sock = getattr(conn, "sock", None) if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def judge(status: int, reason: str, text: bytes, retry_after: str | None) -> Outcome:
    """What a response means for the batch (see the module docstring)."""
    if 200 <= status < 300:
        return Outcome(DELIVERED)
    problem = f"HTTP {status} {reason}: {text[:200].decode('utf-8', 'replace')}".rstrip(": ")
    if status == 413:
        return Outcome(TOO_LARGE, problem)
    if status in RETRY_STATUSES or not 400 <= status < 500:
        return Outcome(RETRY, problem, _seconds(retry_after))
    return Outcome(REJECTED, problem)


def _seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the backoff decides


def open_http_sink(cfg: SinkConfig, state_dir: str) -> SpooledSink:
    """An HTTP sink with its spool under ``state_dir`` and its delivery thread started. A falcosidekick
    sink's ``format`` is falco whatever the config says: falcosidekick answers 400 to anything else."""
    sink = SpooledSink(cfg, state_dir, HttpTransport(cfg))
    if cfg.preset == "falcosidekick":
        sink.format = "falco"
    return sink


def describe(cfg: SinkConfig) -> dict[str, Any]:
    """What the sink will do, for the agent's start record (no header values: they hold tokens)."""
    return {"url": cfg.target, "preset": cfg.preset, "gzip": cfg.gzip, "headers": sorted(cfg.headers)}
