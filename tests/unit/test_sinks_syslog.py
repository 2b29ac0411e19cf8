"""Syslog sinks against real loopback listeners: RFC 6587 octet-counted frames carrying RFC 5424 messages
whose header fields are checked one by one, reconnection after the server closes or is down, TLS, the local
datagram socket (classic local format), min-priority filtering, and target parsing.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from sentinel.sinks import OutputSpecError, SinkConfig, open_sink, parse_output
from sentinel.sinks import syslog as syslogmod
from sentinel.sinks.syslog import Rfc5424, SyslogConfigError, frame, parse_syslog_target
from tests.unit.test_sinks_http import doc, make_cert, wait_for

RFC5424 = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (?P<host>[!-~]{1,255}) "
    rb"(?P<app>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) (?P<msgid>[!-~]{1,32}) (?P<sd>-|\[[^\]]*\]) (?P<msg>.*)",
    re.DOTALL,
)


class Listener:
    """A TCP syslog collector: parses octet-counted frames; may close each connection after one read."""

    def __init__(self, port: int = 0, tls: ssl.SSLContext | None = None, close_after_read: bool = False):
        self.tls = tls
        self.close_after_read = close_after_read
        self.messages: list[bytes] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.port = port
        self.sock: socket.socket | None = None
        self.start()

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(8)
        self.port = sock.getsockname()[1]
        self.sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def stop(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            self.sock = None

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()
                    continue
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while True:
                    length, sp, rest = buf.partition(b" ")
                    if not sp:
                        break
                    assert length.isdigit(), buf[:40]  # octet counting, never newline framing
                    n = int(length)
                    if len(rest) < n:
                        break
                    with self.lock:
                        self.messages.append(rest[:n])
                    buf = rest[n:]
                if self.close_after_read and not buf:
                    return


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.stop()


def fast(target: str, **over: Any) -> SinkConfig:
    values: dict[str, Any] = dict(
        kind="syslog", target=target, batch_max=200, batch_wait_s=0.02, retry_initial_s=0.01, retry_max_s=0.1,
        close_timeout_s=2.0,
    )  # fmt: skip
    values.update(over)
    return SinkConfig(**values)


def test_tcp_frames_carry_rfc5424_messages(listener: Listener, tmp_path: Path) -> None:
    sink = open_sink(fast(f"tcp://127.0.0.1:{listener.port}"), str(tmp_path))
    priorities = ["emergency", "alert", "critical", "error", "warning", "notice", "informational", "debug",
                  "info", "Warning", "bogus"]  # fmt: skip
    before = datetime.now(UTC)
    docs = [doc(i, p) for i, p in enumerate(priorities)]
    for line, prio in zip(docs, priorities, strict=True):
        sink.write(line, prio)
    sink.flush()
    wait_for(lambda: len(listener.messages) == len(docs))
    sink.close()
    after = datetime.now(UTC)
    severities = [0, 1, 2, 3, 4, 5, 6, 7, 6, 4, 4]  # unknown priorities as warning
    for raw, line, sev in zip(listener.messages, docs, severities, strict=True):
        m = RFC5424.fullmatch(raw)
        assert m is not None, raw[:120]
        assert int(m["pri"]) == 13 * 8 + sev  # facility log audit (13) by default
        ts = datetime.strptime(m["ts"].decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert before.replace(microsecond=0) <= ts <= after
        assert m["host"].decode() == socket.gethostname()
        assert m["app"] == b"sentinel"
        assert m["procid"] == str(os.getpid()).encode()
        assert m["msgid"] == b"alert"
        assert m["sd"] == b"-"
        assert m["msg"] == line  # the JSON document as it is: no BOM, no escaping
        orjson.loads(m["msg"])
    assert sink.stats()["delivered"] == len(docs)


def test_header_fields_are_bounded_printable_ascii() -> None:
    builder = Rfc5424(facility=4, app_name="my app with spaces é" + "x" * 60, hostname="", procid=7)
    message = builder.message(b"{}", "critical", now=0.25)
    m = RFC5424.fullmatch(message)
    assert m is not None
    assert m["pri"] == b"34" and m["ts"] == b"1970-01-01T00:00:00.250000Z"
    assert m["host"] == b"-" and len(m["app"]) == 48 and b" " not in m["app"]
    assert frame([b"abc", b"de"]) == b"3 abc2 de"
    with pytest.raises(SyslogConfigError):
        Rfc5424(facility=24, app_name="x")


def test_reconnects_when_the_server_closes_the_connection(tmp_path: Path) -> None:
    lst = Listener(close_after_read=True)  # a collector that drops idle connections
    try:
        sink = open_sink(fast(f"tcp://127.0.0.1:{lst.port}"), str(tmp_path))
        for batch in range(4):
            for i in range(10):
                sink.write(doc(batch * 10 + i))
            sink.flush()
            wait_for(lambda n=batch: len(lst.messages) == (n + 1) * 10, what=f"batch {batch}")
            time.sleep(0.05)  # the server's close reaches us before the next batch
        sink.close()
        got = [orjson.loads(RFC5424.fullmatch(m)["msg"])["event"]["id"] for m in lst.messages]  # type: ignore[index]
        assert got == [f"id-{i:06d}" for i in range(40)]  # in order, none lost to a dead connection
        assert lst.connections >= 4
    finally:
        lst.stop()


def test_collector_down_then_up(tmp_path: Path) -> None:
    lst = Listener()
    port = lst.port
    lst.stop()
    sink = open_sink(fast(f"tcp://127.0.0.1:{port}"), str(tmp_path))
    for i in range(500):
        sink.write(doc(i))
    sink.flush()
    wait_for(lambda: sink.stats()["errors"] >= 3, what="refused connections")
    assert sink.stats()["status"] == "failing" and sink.stats()["backlog_alerts"] == 500
    lst = Listener(port=port)
    try:
        wait_for(lambda: sink.stats()["delivered"] == 500)
        sink.close()
        assert len(lst.messages) == 500 and sink.stats()["status"] == "ok"
    finally:
        lst.stop()


def test_tls_with_a_self_signed_ca(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    lst = Listener(tls=ctx)
    try:
        sink = open_sink(fast(f"tls://127.0.0.1:{lst.port}", tls_ca_file=cert), str(tmp_path / "state"))
        for i in range(100):
            sink.write(doc(i), "error")
        sink.flush()
        wait_for(lambda: len(lst.messages) == 100)
        sink.close()
        assert all(RFC5424.fullmatch(m) for m in lst.messages)
    finally:
        lst.stop()


def test_min_priority_filters_and_counts(listener: Listener, tmp_path: Path) -> None:
    sink = open_sink(fast(f"tcp://127.0.0.1:{listener.port}", min_priority="error"), str(tmp_path))
    sink.write(doc(1), "warning")
    sink.write(doc(2), "critical")
    sink.write(doc(3), "debug")
    sink.write(doc(4), "error")
    sink.flush()
    wait_for(lambda: len(listener.messages) == 2)
    sink.close()
    stats = sink.stats()
    assert stats["filtered"] == 2 and stats["written"] == 2 and stats["delivered"] == 2


# ---- local socket ------------------------------------------------------------------------------------------


def _dgram_server(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(2)
    return server


def test_local_socket_classic_format(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    server = _dgram_server(path)
    try:
        sink = open_sink(SinkConfig(kind="syslog", target=f"unix:{path}", facility=10), str(tmp_path))
        line = doc(1)
        sink.write(line, "critical")
        sink.flush()
        got = server.recv(65536)
        m = re.fullmatch(
            rb"<(\d+)>(\w{3}) ([ \d]\d) (\d\d:\d\d:\d\d) ([!-~]+)\[(\d+)\]: (.*)", got, re.DOTALL
        )
        assert m is not None, got[:80]
        assert int(m[1]) == 10 * 8 + 2
        assert m[5] == b"sentinel" and int(m[6]) == os.getpid() and m[7] == line
        assert sink.stats()["delivered"] == 1
        sink.close()
    finally:
        server.close()


def test_local_socket_failures_are_counted_and_recovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(syslogmod, "RECONNECT_LOCAL_S", 0.0)
    path = tmp_path / "log.sock"
    server = _dgram_server(path)
    sink = open_sink(SinkConfig(kind="syslog", target=f"unix:{path}"), str(tmp_path))
    server.close()
    path.unlink()  # the syslog daemon went away
    sink.write(doc(1))
    sink.write(doc(2))
    stats = sink.stats()
    assert stats["errors"] == 2 and stats["dropped"] == 2 and stats["status"] == "failing"
    server = _dgram_server(path)  # and came back
    try:
        sink.write(doc(3))
        assert server.recv(65536).endswith(doc(3))
        assert sink.stats()["status"] == "ok" and sink.stats()["delivered"] == 1
    finally:
        sink.close()
        server.close()


def test_missing_local_socket_fails_at_open(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        open_sink(SinkConfig(kind="syslog", target=f"unix:{tmp_path}/none.sock"), str(tmp_path))


# ---- targets -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [("tcp://127.0.0.1:1514", ("tcp", "127.0.0.1", 1514)),
     ("tls://logs.example:6514", ("tls", "logs.example", 6514)),
     ("tcp://[::1]:514", ("tcp", "::1", 514)), ("tcp://collector", ("tcp", "collector", 514)),
     ("tls://collector", ("tls", "collector", 6514)), ("local", ("unix", "/dev/log", 0)),
     ("unix:/run/log.sock", ("unix", "/run/log.sock", 0))],
)  # fmt: skip
def test_parse_syslog_target(target: str, expected: tuple[str, str, int]) -> None:
    assert parse_syslog_target(target) == expected


@pytest.mark.parametrize(
    "target", ["udp://h:514", "tcp://:514", "tcp://h:0", "tcp://h:x", "tcp://::1:514", "h:514", "unix:rel"]
)
def test_parse_syslog_target_rejects(target: str) -> None:
    with pytest.raises(SyslogConfigError):
        parse_syslog_target(target)
    with pytest.raises(OutputSpecError):
        parse_output(f"syslog:{target}")
