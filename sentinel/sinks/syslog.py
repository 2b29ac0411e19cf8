"""Alerts as syslog messages: RFC 5424 over TCP or TLS (RFC 6587 octet counting, RFC 5425), behind the spool;
or datagrams to the local syslog socket (``/dev/log``) without one.

Network message: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID alert - MSG``: PRI = facility × 8 + the
severity named by the alert's Falco priority (the same eight names), TIMESTAMP the time the agent wrote the
alert (RFC 3339 UTC, microseconds), no structured data, MSG the JSON document as it is. No BOM: RFC 5424
allows any MSG, and receivers that parse the JSON (rsyslog mmjsonparse, syslog-ng json-parser) would trip
on one. The message is built when the alert is written, so the spool holds ready messages and the delivery
thread only adds the ``LEN SP`` frame. TCP has no application-level acknowledgement: a message is counted
delivered once the kernel took it; a peer that closed the connection is noticed before each batch.

Local socket: the classic local format (``<PRI>Mmm dd hh:mm:ss APP[PID]: MSG``, what glibc's syslog(3)
sends), because journald reads /dev/log and does not parse RFC 5424 there. Non-blocking: a full or missing
socket loses that alert, counted in ``errors``/``dropped``; the detection loop never waits.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import ssl
import threading
import time
from typing import Any

from sentinel.sinks.base import Episode, base_stats, client_tls_context, priority_rank
from sentinel.sinks.delivery import DELIVERED, RETRY, Outcome, SpooledSink
from sentinel.sinks.spec import SinkConfig

DEFAULT_TCP_PORT = 514
DEFAULT_TLS_PORT = 6514
LOCAL_SOCKET = "/dev/log"
MSGID = b"alert"
RECONNECT_LOCAL_S = 1.0
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class SyslogConfigError(ValueError):
    """A syslog target that cannot work."""


def severity(priority: str) -> int:
    """RFC 5424 severity for a Falco priority (same names, same order); unknown ones as warning."""
    return priority_rank(priority, unknown=4)


def header_token(text: str, limit: int) -> bytes:
    """A header field as RFC 5424 wants it: printable US-ASCII without spaces, bounded, ``-`` if empty."""
    clean = "".join(ch for ch in text if "!" <= ch <= "~")[:limit]
    return clean.encode("ascii") if clean else b"-"


class Rfc5424:
    """Builds messages; the timestamp's second part is cached (one strftime per second, not per alert)."""

    def __init__(self, facility: int, app_name: str, hostname: str | None = None, procid: int | None = None):
        if not 0 <= facility <= 23:
            raise SyslogConfigError(f"syslog facility must be 0..23, not {facility}")
        self.facility = facility
        self.host = header_token(hostname if hostname is not None else socket.gethostname(), 255)
        self.app = header_token(app_name, 48)
        self.procid = header_token(str(procid if procid is not None else os.getpid()), 128)
        self._second = -1
        self._prefix = b""
        self._pri = [b"<%d>1 " % (facility * 8 + sev) for sev in range(8)]
        self._tail = b" %s %s %s %s - " % (self.host, self.app, self.procid, MSGID)

    def timestamp(self, now: float) -> bytes:
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        return b"%s.%06dZ" % (self._prefix, int((now - second) * 1_000_000))

    def message(self, msg: bytes, priority: str, now: float | None = None) -> bytes:
        """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`` (the constant parts built once)."""
        ts = self.timestamp(time.time() if now is None else now)
        return b"".join((self._pri[severity(priority)], ts, self._tail, msg))


def frame(messages: list[bytes]) -> bytes:
    """RFC 6587 octet counting: ``MSG-LEN SP SYSLOG-MSG`` for each message, back to back."""
    return b"".join(b"%d %s" % (len(m), m) for m in messages)


def parse_syslog_target(target: str) -> tuple[str, str, int]:
    """``tcp://H:P`` / ``tls://H:P`` / ``unix:PATH`` / ``local`` → (scheme, host or path, port)."""
    if target in ("local", "unix"):
        return "unix", LOCAL_SOCKET, 0
    if target.startswith("unix:"):
        path = target[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path.startswith("/"):
            raise SyslogConfigError(f"{target!r}: unix: needs an absolute socket path (unix:/dev/log)")
        return "unix", path, 0
    scheme, sep, rest = target.partition("://")
    if not sep or scheme not in ("tcp", "tls"):
        if scheme == "udp":
            raise SyslogConfigError(
                f"{target!r}: UDP syslog is not supported (it loses alerts); use tcp:// or tls://"
            )
        raise SyslogConfigError(f"{target!r}: use tcp://HOST:PORT, tls://HOST:PORT or local")
    rest = rest.rstrip("/")
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise SyslogConfigError(f"{target!r}: malformed IPv6 address (tcp://[::1]:514)")
        port_text = tail[1:]
    else:
        host, _, port_text = rest.partition(":")
        if ":" in port_text:
            raise SyslogConfigError(f"{target!r}: put an IPv6 address in brackets (tcp://[::1]:514)")
    if not host or "/" in host:
        raise SyslogConfigError(f"{target!r}: needs a host (tcp://HOST:PORT)")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SyslogConfigError(f"{target!r}: port must be a number 1..65535, not {port_text!r}")
        port = int(port_text)
    else:
        port = DEFAULT_TLS_PORT if scheme == "tls" else DEFAULT_TCP_PORT
    return scheme, host, port


class SyslogTcpTransport:
    """One connection (TLS when asked), re-made after errors; a batch goes out with one ``sendall``."""

    def __init__(self, cfg: SinkConfig) -> None:
        scheme, self.host, self.port = parse_syslog_target(cfg.target)
        if scheme == "unix":
            raise SyslogConfigError("a local syslog socket has no spool; use LocalSyslogSink")
        self.context = client_tls_context(cfg) if scheme == "tls" else None
        self.timeout = cfg.timeout_s
        self.batch_max = max(1, cfg.batch_max)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        with self._lock:
            self._sock = sock
        return sock

    def _peer_closed(self, sock: socket.socket) -> bool:
        """A syslog server never writes: a readable socket means it closed (or reset) the connection."""
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            if isinstance(sock, ssl.SSLSocket):
                sock.setblocking(False)
                try:
                    return sock.recv(1024) == b""
                except (ssl.SSLWantReadError, BlockingIOError):
                    return False
                finally:
                    sock.settimeout(self.timeout)
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def send(self, lines: list[bytes]) -> Outcome:
        try:
            sock = self._sock
            if sock is not None and self._peer_closed(sock):
                self.close()
                sock = None
            if sock is None:
                sock = self._connect()
            sock.sendall(frame(lines))
        except OSError as exc:
            self.close()
            return Outcome(RETRY, f"{type(exc).__name__}: {exc}")
        return Outcome(DELIVERED)

    def abort(self) -> None:
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def open_syslog_tcp_sink(cfg: SinkConfig, state_dir: str) -> SpooledSink:
    """RFC 5424 over TCP/TLS: messages built at write time, spooled, framed and sent by the thread."""
    transport = SyslogTcpTransport(cfg)
    builder = Rfc5424(cfg.facility, cfg.app_name)
    return SpooledSink(cfg, state_dir, transport, encode=builder.message)


class LocalSyslogSink:
    """Datagrams to the local syslog socket, sent as alerts are written (the socket is local and
    non-blocking: a full queue fails at once, counted, rather than stalling detection)."""

    def __init__(self, cfg: SinkConfig) -> None:
        _, self.path, _ = parse_syslog_target(cfg.target or "local")
        if not 0 <= cfg.facility <= 23:
            raise SyslogConfigError(f"syslog facility must be 0..23, not {cfg.facility}")
        self.name = cfg.label()
        self.format = cfg.format
        self.facility = cfg.facility
        self.tag = header_token(cfg.app_name, 32) + b"[%d]" % os.getpid()
        self.written = 0
        self.delivered = 0
        self.errors = 0
        self.dropped = 0
        self.last_success: float | None = None
        self._episode = Episode(self.name)
        self._sock: socket.socket | None = None
        self._next_connect = 0.0
        self._second = -1
        self._stamp = b""
        self._connect(at_start=True)

    def _connect(self, at_start: bool = False) -> None:
        """At start a missing socket is an error (like a file sink's bad path); later, a counted failure."""
        self._next_connect = time.monotonic() + RECONNECT_LOCAL_S
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            if at_start:
                raise
            self._episode.fail(f"{type(exc).__name__}: {exc}", socket=self.path)
            return
        self._sock = sock

    def _timestamp(self, now: float) -> bytes:
        second = int(now)
        if second != self._second:
            tm = time.localtime(second)
            self._second = second
            self._stamp = b"%s %2d %02d:%02d:%02d" % (
                _MONTHS[tm.tm_mon - 1].encode(), tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
            )  # fmt: skip
        return self._stamp

    def message(self, line: bytes, priority: str, now: float | None = None) -> bytes:
        pri = self.facility * 8 + severity(priority)
        return b"<%d>%s %s: %s" % (pri, self._timestamp(time.time() if now is None else now), self.tag, line)

    def write(self, line: bytes, priority: str = "warning") -> None:
        self.written += 1
        if self._sock is None and time.monotonic() >= self._next_connect:
            self._connect()
        sock = self._sock
        if sock is None:
            self._lost()
            return
        try:
            sock.send(self.message(line, priority))
        except OSError as exc:
            self._lost()
            self._episode.fail(f"{type(exc).__name__}: {exc}", socket=self.path)
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EMSGSIZE, errno.ENOBUFS):
                with contextlib.suppress(OSError):
                    sock.close()
                self._sock = None  # the receiver went away (restarted): connect again, at most once a second
            return
        self.delivered += 1
        self.last_success = time.time()
        self._episode.ok(errors=self.errors, dropped=self.dropped)

    def _lost(self) -> None:
        self.errors += 1
        self.dropped += 1

    def flush(self) -> None:
        """Datagrams are sent as written: nothing is held back."""

    def reopen(self) -> None:
        """Reconnect (syslog daemon restarted and made a new socket)."""
        self.close()
        self._connect()

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def stats(self) -> dict[str, Any]:
        return base_stats(
            written=self.written, delivered=self.delivered, errors=self.errors, dropped=self.dropped,
            last_success=self.last_success, status="failing" if self._episode.failing else "ok",
        )  # fmt: skip
