"""HTTP sink against a real loopback receiver: outage (503, then connection refused) and recovery without loss
or duplicates, SIGKILL of the writing process with a second process delivering what the first had flushed,
the presets' bodies (NDJSON, Splunk HEC with gzip, falcosidekick), 4xx rejection, 413 splitting, Retry-After,
TLS with a self-signed certificate, and a detection loop that never waits for a hung receiver.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from sentinel import log as logmod
from sentinel.sinks import OutputSpecError, SinkConfig, open_sink
from sentinel.sinks.http import event_epoch, judge

REPO = Path(__file__).resolve().parents[2]


# ---- a loopback receiver -----------------------------------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    raw: bytes  # as sent (maybe gzipped)
    body: bytes  # decoded


@dataclass
class ReceiverState:
    status: int = 200
    delay_s: float = 0.0
    max_lines: int = 0  # answer 413 to bodies with more lines than this (0 = no limit)
    retry_after: str | None = None
    requests: list[Request] = field(default_factory=list)
    accepted: list[bytes] = field(default_factory=list)  # lines of 2xx requests (NDJSON bodies)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(state: ReceiverState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
            if state.delay_s:
                time.sleep(state.delay_s)
            status = state.status
            lines = body.splitlines()
            if status == 200 and state.max_lines and len(lines) > state.max_lines:
                status = 413
            with state.lock:
                state.requests.append(Request(self.path, dict(self.headers.items()), raw, body))
                if 200 <= status < 300:
                    state.accepted.extend(lines)
            reply = b'{"text":"Success","code":0}' if status == 200 else b"no"
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            if state.retry_after is not None and status in (429, 503):
                self.send_header("Retry-After", state.retry_after)
            if status != 200:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class Receiver:
    """``http.server`` on 127.0.0.1 in a thread; ``stop()`` then ``start()`` again on the same port."""

    def __init__(self, state: ReceiverState | None = None, port: int = 0, tls: Any = None) -> None:
        self.state = state or ReceiverState()
        self.tls = tls
        self.port = port
        self.server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self.state))
        server.daemon_threads = True
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.server = server

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def url(self, path: str = "/alerts") -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.stop()


def make_cert(directory: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1/localhost: ``cryptography`` when installed, else openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
            check=True, capture_output=True,
        )  # fmt: skip
        return str(cert), str(key)
    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(pkey, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        pkey.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert), str(key)


def doc(i: int, priority: str = "warning") -> bytes:
    """An ECS-like alert document with a unique event.id."""
    return orjson.dumps(
        {
            "@timestamp": "2026-11-25T03:22:07.545167972Z",
            "event": {"kind": "alert", "id": f"id-{i:06d}", "severity": 47},
            "rule": {"name": "Shell Spawned By Web Server"},
            "message": f"alert number {i}",
            "process": {"pid": 1000 + i, "command_line": "sh -c 'id' " + "x" * (i % 200)},
            "sentinel": {"rule": {"priority": priority}},
        }
    )


def ids(lines: list[bytes]) -> Counter[str]:
    return Counter(orjson.loads(line)["event"]["id"] for line in lines)


def wait_for(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def fast(target: str, **over: Any) -> SinkConfig:
    """Quick retries and batches, so tests run in seconds."""
    values: dict[str, Any] = dict(
        kind="http", target=target, batch_max=500, batch_wait_s=0.02, retry_initial_s=0.01, retry_max_s=0.1,
        timeout_s=5.0, close_timeout_s=2.0, gzip=False,
    )  # fmt: skip
    values.update(over)
    return SinkConfig(**values)


# ---- delivery ----------------------------------------------------------------------------------------------


def test_outage_then_recovery_delivers_every_alert_once(receiver: Receiver, tmp_path: Path) -> None:
    logmod.configure("info")
    receiver.state.status = 503
    sink = open_sink(fast(receiver.url()), str(tmp_path))
    with capture_logs() as logs:
        for i in range(10_000):
            sink.write(doc(i))
            if i % 100 == 99:
                sink.flush()  # one flush per batch of events, as the detection loop does
        sink.flush()
        wait_for(lambda: len(receiver.state.requests) >= 3, what="503 answers")
        receiver.stop()  # now connection refused
        errors = sink.stats()["errors"]
        wait_for(lambda: sink.stats()["errors"] >= errors + 3, what="refused connections")
        stats = sink.stats()
        assert stats["status"] == "failing"
        assert stats["delivered"] == 0
        assert stats["backlog_alerts"] == 10_000
        assert stats["backlog_bytes"] > 10_000 * 100
        receiver.state.status = 200
        receiver.start()
        wait_for(lambda: sink.stats()["delivered"] == 10_000, what="delivery after recovery")
        sink.close()
    got = ids(receiver.state.accepted)
    assert len(got) == 10_000
    assert set(got) == {f"id-{i:06d}" for i in range(10_000)}
    assert max(got.values()) == 1  # no crash, so no duplicate either
    stats = sink.stats()
    assert stats["status"] == "ok" and stats["backlog_alerts"] == 0 and stats["dropped"] == 0
    assert stats["last_success"] is not None and stats["written"] == 10_000
    events = [e["event"] for e in logs]
    assert events.count("sentinel.sink_failed") == 1  # once per episode, not per attempt
    assert events.count("sentinel.sink_recovered") == 1


def test_webhook_body_is_ndjson_with_headers(receiver: Receiver, tmp_path: Path) -> None:
    cfg = fast(receiver.url("/hook?x=1"), headers={"Authorization": "Bearer s3cret", "X-Tenant": "a"})
    sink = open_sink(cfg, str(tmp_path))
    for i in range(3):
        sink.write(doc(i))
    sink.flush()
    wait_for(lambda: sink.stats()["delivered"] == 3)
    sink.close()
    req = receiver.state.requests[0]
    assert req.path == "/hook?x=1"
    assert req.headers["Content-Type"] == "application/x-ndjson"
    assert req.headers["Authorization"] == "Bearer s3cret" and req.headers["X-Tenant"] == "a"
    assert req.body.endswith(b"\n") and req.body.count(b"\n") == 3
    assert "s3cret" not in sink.name and sink.format == "ecs"


def test_splunk_hec_preset_gzip_body_shape(receiver: Receiver, tmp_path: Path) -> None:
    cfg = fast(
        receiver.url("/services/collector/event"), preset="splunk_hec", gzip=True,
        headers={"Authorization": "Splunk 0000-1111"},
    )  # fmt: skip
    sink = open_sink(cfg, str(tmp_path))
    for i in range(20):
        sink.write(doc(i))
    sink.flush()
    wait_for(lambda: sink.stats()["delivered"] == 20)
    sink.close()
    req = receiver.state.requests[0]
    assert req.headers["Content-Encoding"] == "gzip" and req.raw[:2] == b"\x1f\x8b"
    assert req.headers["Authorization"] == "Splunk 0000-1111"
    assert req.headers["Content-Type"] == "application/json"
    events = [orjson.loads(part) for part in req.body.split(b"\n")]
    assert len(events) == 20
    first = events[0]
    assert first["sourcetype"] == "sentinel:alert"
    assert first["time"] == pytest.approx(1795576927.545)  # the alert's @timestamp, not the send time
    assert first["event"]["event"]["id"] == "id-000000"
    assert isinstance(first["host"], str)


def test_splunk_hec_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(OutputSpecError, match="Splunk <token>"):
        open_sink(fast("http://127.0.0.1:9/services/collector", preset="splunk_hec"), str(tmp_path))


def test_event_epoch_reads_ecs_and_falco_times() -> None:
    assert event_epoch(b'{"@timestamp":"1970-01-01T00:00:01.5Z","x":1}') == b"1.500"
    assert event_epoch(b'{"time":"2026-11-25T03:22:07.545167972Z","rule":"r"}') == b"1795576927.545"
    assert event_epoch(b'{"time":"2026-11-25T03:22:07Z"}') == b"1795576927.000"
    assert event_epoch(b'{"message":"no time"}') is None


def test_falcosidekick_preset_posts_one_document_to_root(receiver: Receiver, tmp_path: Path) -> None:
    cfg = fast(receiver.url("/"), preset="falcosidekick", gzip=True)  # format left at its default
    sink = open_sink(cfg, str(tmp_path))
    falco = [
        orjson.dumps({"time": "2026-11-25T03:22:07.5Z", "rule": "r", "priority": "Warning", "output": f"o{i}",
                      "source": "syscall", "tags": [], "output_fields": {"proc.name": "sh"}})
        for i in range(3)
    ]  # fmt: skip
    for line in falco:
        sink.write(line)
    sink.flush()
    wait_for(lambda: sink.stats()["delivered"] == 3)
    sink.close()
    assert [r.raw for r in receiver.state.requests] == falco  # one per POST, never gzipped
    assert {(r.path, r.headers["Content-Type"]) for r in receiver.state.requests} == {
        ("/", "application/json")
    }
    assert sink.format == "falco"


def test_4xx_rejects_the_batch_and_goes_on(receiver: Receiver, tmp_path: Path) -> None:
    logmod.configure("info")
    receiver.state.status = 400
    sink = open_sink(fast(receiver.url(), batch_max=10), str(tmp_path))
    with capture_logs() as logs:
        for i in range(30):
            sink.write(doc(i))
        sink.flush()
        wait_for(lambda: sink.stats()["rejected"] == 30, what="rejections")
        assert len(receiver.state.requests) == 3  # each batch tried once, never retried
        receiver.state.status = 200
        sink.write(doc(99))
        sink.flush()
        wait_for(lambda: sink.stats()["delivered"] == 1)
        sink.close()
    stats = sink.stats()
    assert stats["rejected"] == 30 and stats["backlog_alerts"] == 0 and stats["errors"] == 3
    assert [e["event"] for e in logs].count("sentinel.sink_rejected") == 1
    assert ids(receiver.state.accepted) == Counter({"id-000099": 1})


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_retryable_statuses_are_retried(receiver: Receiver, tmp_path: Path, status: int) -> None:
    receiver.state.status = status
    sink = open_sink(fast(receiver.url()), str(tmp_path))
    sink.write(doc(1))
    sink.flush()
    wait_for(lambda: len(receiver.state.requests) >= 2, what="a retry")
    receiver.state.status = 200
    wait_for(lambda: sink.stats()["delivered"] == 1)
    sink.close()
    assert sink.stats()["rejected"] == 0


def test_judge() -> None:
    assert judge(204, "No Content", b"", None).status == "delivered"
    assert judge(401, "Unauthorized", b"bad token", None).status == "rejected"
    assert judge(413, "Too Large", b"", None).status == "too_large"
    assert judge(429, "Too Many", b"", "7").retry_after == 7.0
    assert judge(302, "Found", b"", None).status == "retry"
    assert judge(503, "Busy", b"", "Wed, 21 Oct 2015 07:28:00 GMT").retry_after is None


def test_retry_after_is_honoured(receiver: Receiver, tmp_path: Path) -> None:
    receiver.state.status = 429
    receiver.state.retry_after = "0.3"
    sink = open_sink(fast(receiver.url(), retry_max_s=1.0), str(tmp_path))
    sink.write(doc(1))
    sink.flush()
    wait_for(lambda: len(receiver.state.requests) >= 1)
    time.sleep(0.2)
    assert len(receiver.state.requests) == 1  # full jitter alone would have retried within 10 ms
    receiver.state.status = 200
    wait_for(lambda: sink.stats()["delivered"] == 1)
    sink.close()


def test_413_halves_the_batch(receiver: Receiver, tmp_path: Path) -> None:
    receiver.state.max_lines = 60
    sink = open_sink(fast(receiver.url(), batch_max=500), str(tmp_path))
    for i in range(400):
        sink.write(doc(i))
    sink.flush()
    wait_for(lambda: sink.stats()["delivered"] == 400)
    sink.close()
    got = ids(receiver.state.accepted)
    assert len(got) == 400 and max(got.values()) == 1
    assert sink.stats()["rejected"] == 0


def test_spool_full_drops_oldest_and_counts(receiver: Receiver, tmp_path: Path) -> None:
    logmod.configure("info")
    receiver.stop()
    sink = open_sink(fast(receiver.url(), spool_max_bytes=16384), str(tmp_path))
    with capture_logs() as logs:
        for i in range(2000):
            sink.write(doc(i))
            if i % 20 == 19:
                sink.flush()
        stats = sink.stats()
        assert stats["dropped"] > 1000
        assert stats["spool_bytes"] <= 16384 + 8192  # the bound, give or take one segment
        assert stats["dropped"] + stats["backlog_alerts"] == 2000
        receiver.start()
        wait_for(lambda: sink.stats()["backlog_alerts"] == 0)
        sink.close()
    stats = sink.stats()
    assert stats["delivered"] + stats["dropped"] == 2000
    got = sorted(ids(receiver.state.accepted))
    assert got[-1] == "id-001999" and len(got) == stats["delivered"]  # the newest were kept
    assert [e["event"] for e in logs].count("sentinel.spool_dropping") == 1


def test_write_never_waits_for_a_hung_receiver(receiver: Receiver, tmp_path: Path) -> None:
    receiver.state.delay_s = 1.5  # every request hangs
    sink = open_sink(fast(receiver.url(), batch_max=50, close_timeout_s=0.2, timeout_s=10.0), str(tmp_path))
    start = time.perf_counter()
    for i in range(5000):
        sink.write(doc(i))
        if i % 50 == 49:
            sink.flush()
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, elapsed
    start = time.perf_counter()
    sink.close()  # gives up after close_timeout_s (aborting the hung request), backlog kept
    assert time.perf_counter() - start < 3.0
    assert sink.stats()["backlog_alerts"] > 0


def test_backlog_survives_a_clean_restart(receiver: Receiver, tmp_path: Path) -> None:
    receiver.stop()
    cfg = fast(receiver.url(), close_timeout_s=0.1)
    sink = open_sink(cfg, str(tmp_path))
    for i in range(100):
        sink.write(doc(i))
    sink.close()
    assert sink.stats()["backlog_alerts"] == 100
    receiver.start()
    again = open_sink(fast(receiver.url(), close_timeout_s=0.1), str(tmp_path))
    wait_for(lambda: again.stats()["delivered"] == 100)
    again.close()
    assert sorted(ids(receiver.state.accepted)) == [f"id-{i:06d}" for i in range(100)]


def test_one_process_per_spool(receiver: Receiver, tmp_path: Path) -> None:
    sink = open_sink(fast(receiver.url()), str(tmp_path))
    try:
        with pytest.raises(OSError, match="in use"):
            open_sink(fast(receiver.url()), str(tmp_path))
    finally:
        sink.close()


# ---- crash -------------------------------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys, time, orjson
    from sentinel.sinks import SinkConfig, open_sink
    url, state = sys.argv[1], sys.argv[2]
    sink = open_sink(SinkConfig(kind="http", target=url, batch_max=50, batch_wait_s=0.01,
                                retry_initial_s=0.01, retry_max_s=0.05), state)
    i = 0
    while True:
        for _ in range(25):
            sink.write(orjson.dumps({"event": {"id": f"id-{i:06d}"}, "pad": "p" * 300}))
            i += 1
        sink.flush()
        print(i, flush=True)  # everything below i is flushed to the spool
        time.sleep(0.002)  # a detection loop's pace: delivery keeps up partly
    """
)

_DRAINER = textwrap.dedent(
    """
    import sys, time, orjson
    from sentinel.sinks import SinkConfig, open_sink
    url, state = sys.argv[1], sys.argv[2]
    sink = open_sink(SinkConfig(kind="http", target=url, batch_max=500, batch_wait_s=0.01,
                                retry_initial_s=0.01, retry_max_s=0.05), state)
    deadline = time.monotonic() + 20
    while sink.stats()["backlog_alerts"] and time.monotonic() < deadline:
        time.sleep(0.01)
    sink.close()
    print(orjson.dumps(sink.stats()).decode(), flush=True)
    """
)


def test_sigkill_mid_stream_then_a_second_process_delivers_everything_flushed(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.state.delay_s = 0.002  # delivery lags behind writing: a backlog exists at the kill
    url = receiver.url()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, url, str(tmp_path)], stdout=subprocess.PIPE, env=env, cwd=REPO
    )
    assert writer.stdout is not None
    flushed = 0
    deadline = time.monotonic() + 60
    # Kill it mid-stream: past 4,000 alerts and once the receiver has acknowledged some (on a loaded machine
    # the delivery thread may not have sent its first batch within the first 4,000).
    while flushed < 4000 or not receiver.state.accepted:
        assert time.monotonic() < deadline, "nothing delivered by the first process within 60 s"
        line = writer.stdout.readline()
        assert line, "writer died"
        flushed = int(line)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    for line in writer.stdout.read().split():  # flushes reported between our last read and the kill
        flushed = max(flushed, int(line))
    delivered_by_first = len(receiver.state.accepted)
    assert 0 < delivered_by_first < flushed  # some delivered and acknowledged, a backlog left
    receiver.state.delay_s = 0.0
    drainer = subprocess.run(
        [sys.executable, "-c", _DRAINER, url, str(tmp_path)],
        capture_output=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert drainer.returncode == 0, drainer.stderr.decode()[-2000:]
    stats = orjson.loads(drainer.stdout)
    assert stats["backlog_alerts"] == 0 and stats["dropped"] == 0
    got = ids(receiver.state.accepted)
    missing = {f"id-{i:06d}" for i in range(flushed)} - set(got)
    assert not missing, sorted(missing)[:5]
    duplicates = sum(n - 1 for n in got.values())
    assert duplicates <= 100  # at most the batch in flight at the kill (at-least-once)


# ---- TLS ---------------------------------------------------------------------------------------------------


def _server_tls(tmp_path: Path) -> tuple[Any, str]:
    import ssl

    cert, key = make_cert(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx, cert


def test_https_with_a_self_signed_ca(tmp_path: Path) -> None:
    ctx, cert = _server_tls(tmp_path)
    rec = Receiver(tls=ctx)
    try:
        sink = open_sink(fast(rec.url(), tls_ca_file=cert, gzip=True), str(tmp_path / "state"))
        for i in range(50):
            sink.write(doc(i))
        sink.flush()
        wait_for(lambda: sink.stats()["delivered"] == 50)
        sink.close()
        assert len(ids(rec.state.accepted)) == 50
    finally:
        rec.stop()


def test_https_refuses_an_unknown_ca_until_verify_is_off(tmp_path: Path) -> None:
    logmod.configure("info")
    ctx, _ = _server_tls(tmp_path)
    rec = Receiver(tls=ctx)
    try:
        with capture_logs() as logs:
            sink = open_sink(fast(rec.url(), close_timeout_s=0.1), str(tmp_path / "a"))
            sink.write(doc(1))
            sink.flush()
            wait_for(lambda: sink.stats()["errors"] >= 2, what="verification failures")
            sink.close()
        assert sink.stats()["delivered"] == 0
        failed = [e for e in logs if e["event"] == "sentinel.sink_failed"]
        assert failed and "CERTIFICATE_VERIFY_FAILED" in failed[0]["problem"]
        insecure = open_sink(fast(rec.url(), tls_verify=False), str(tmp_path / "b"))
        insecure.write(doc(2))
        insecure.flush()
        wait_for(lambda: insecure.stats()["delivered"] == 1)
        insecure.close()
    finally:
        rec.stop()


def test_tls_files_are_checked_at_open(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        open_sink(fast("https://127.0.0.1:9/", tls_ca_file=str(tmp_path / "missing.pem")), str(tmp_path))
