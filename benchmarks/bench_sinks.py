#!/usr/bin/env python3
"""Alert sink throughput and memory, loopback only. Prints its figures; any user can run it.

1. Alerts/s through each sink with realistic ECS documents (~1.3 KB): the file sink (with and without
   rotation), HTTP to a loopback receiver (webhook NDJSON, gzip on and off) and syslog over TCP. For the
   network sinks two figures: what the detection thread pays per alert (write + flush into the spool) and
   end-to-end delivery. Receivers run in a subprocess so they do not share the sender's GIL.
2. Spool append (+ flush) and drain (peek + ack) throughput on its own.
3. A 1-hour SIEM outage in compressed time (in a fresh process, so RSS is the sink's): alerts at ``--rate``
   per simulated second for 3,600 simulated seconds (600 with --quick) with the receiver down (connection
   refused), flushed once per simulated second; RSS and tracemalloc peak during the outage, spool size at
   its end, then recovery and drain time.

    .venv/bin/python benchmarks/bench_sinks.py [--quick] [--rate N] [--alerts N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from sentinel.sinks import SinkConfig, open_sink  # noqa: E402
from sentinel.sinks.spool import Spool  # noqa: E402

FLUSH_EVERY = 64  # alerts per detection batch

_HTTP_RECEIVER = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        def log_message(self, *a):
            pass
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()
    """
)

_TCP_RECEIVER = textwrap.dedent(
    """
    import socket, sys, threading
    srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    print(srv.getsockname()[1], flush=True)
    def drain(conn):
        with conn:
            while conn.recv(1 << 20):
                pass
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=drain, args=(conn,), daemon=True).start()
    """
)


def alert(i: int) -> bytes:
    """A realistic ECS alert document (~1.3 KB), unique event.id."""
    return orjson.dumps(
        {
            "@timestamp": "2026-11-25T03:22:07.545167972Z",
            "ecs": {"version": "9.0.0"},
            "event": {"kind": "alert", "dataset": "sentinel.alerts", "module": "sentinel",
                      "category": ["process"], "type": ["start"], "action": "exec", "severity": 47,
                      "risk_score": 47, "id": f"0b9c2f1e-5d4a-4e8b-9f6a-{i:012d}", "sequence": i},
            "rule": {"id": "3f1c9a2b", "name": "Shell Spawned By Web Server", "ruleset": "sentinel",
                     "description": "A shell was spawned by a web server process", "version": "a1b2c3d4e5f6"},
            "threat": {"framework": "MITRE ATT&CK", "tactic": {"id": ["TA0002"], "name": ["Execution"]},
                       "technique": {"id": ["T1059"], "name": ["Command and Scripting Interpreter"]}},
            "message": f"Shell spawned by a web server (user=www-data shell=sh parent=nginx cmd=sh -c {i})",
            "process": {"pid": 4242 + i % 1000, "name": "sh", "executable": "/usr/bin/dash",
                        "args": ["sh", "-c", f"id; uname -a; cat /etc/passwd # {i}"], "args_count": 3,
                        "command_line": f"sh -c id; uname -a; cat /etc/passwd # {i}",
                        "working_directory": "/var/www/html", "entity_id": f"ZmFrZS1lbnRpdHktaWQ{i:08d}",
                        "user": {"id": "33", "name": "www-data"},
                        "parent": {"pid": 812, "name": "nginx", "executable": "/usr/sbin/nginx",
                                   "command_line": "nginx: worker process"}},
            "host": {"name": "web-01", "hostname": "web-01", "id": "9f8e7d6c5b4a39281706f5e4d3c2b1a0",
                     "os": {"type": "linux", "kernel": "6.1.0-18-amd64"}},
            "agent": {"type": "sentinel", "name": "web-01", "version": "0.1.0"},
            "sentinel": {"rule": {"priority": "warning", "tags": ["mitre_execution", "T1059.004"]},
                         "output_fields": {"proc": {"name": "sh", "pname": "nginx"},
                                           "user": {"name": "www-data"}}},
        }
    )  # fmt: skip


def rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB."""
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_receiver(script: str, port: int = 0) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen([sys.executable, "-c", script, str(port)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(5)


def wait_delivered(sink: Any, n: int, timeout: float = 300.0) -> float:
    start = time.perf_counter()
    while sink.stats()["delivered"] + sink.stats()["rejected"] < n:
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"timed out: {sink.stats()}")
        time.sleep(0.002)
    return time.perf_counter()


def feed(sink: Any, docs: list[bytes]) -> float:
    """Write + flush per batch, as the detection loop does; returns the seconds spent."""
    start = time.perf_counter()
    for i, doc in enumerate(docs):
        sink.write(doc)
        if i % FLUSH_EVERY == FLUSH_EVERY - 1:
            sink.flush()
    sink.flush()
    return time.perf_counter() - start


def row(name: str, n: int, seconds: float, extra: str = "") -> None:
    print(f"  {name:<40} {n / seconds:>12,.0f} alerts/s  {seconds * 1e6 / n:>7.2f} µs/alert  {extra}")


def bench_file(docs: list[bytes], work: Path) -> None:
    print("file sink (write + flush every 64)")
    size = sum(len(d) + 1 for d in docs)
    for label, rotate in (("no rotation", 0), ("rotate every 1 MiB, keep 10", 1 << 20)):
        path = work / f"file-{rotate}" / "alerts.json"
        path.parent.mkdir()
        sink = open_sink(SinkConfig(kind="file", target=str(path), rotate_bytes=rotate, keep_files=10), "")
        seconds = feed(sink, docs)
        sink.close()
        row(
            label,
            len(docs),
            seconds,
            f"{size / seconds / 1e6:,.0f} MB/s, {sink.stats()['rotations']} rotations",
        )


def bench_network(docs: list[bytes], work: Path) -> None:
    print("network sinks (detection thread: write + flush into the spool; end to end: until delivered)")
    cases = [
        ("http webhook, gzip", _HTTP_RECEIVER, dict(kind="http", gzip=True)),
        ("http webhook, no gzip", _HTTP_RECEIVER, dict(kind="http", gzip=False)),
        ("syslog tcp, RFC 5424", _TCP_RECEIVER, dict(kind="syslog")),
    ]
    for label, script, over in cases:
        proc, port = start_receiver(script)
        try:
            target = (
                f"http://127.0.0.1:{port}/alerts" if over["kind"] == "http" else f"tcp://127.0.0.1:{port}"
            )
            cfg = SinkConfig(target=target, batch_wait_s=0.05, **over)  # type: ignore[arg-type]
            sink = open_sink(cfg, str(work / f"state-{port}"))
            start = time.perf_counter()
            seconds = feed(sink, docs)
            end = wait_delivered(sink, len(docs))
            sink.close()
            row(f"{label}: detection thread", len(docs), seconds)
            row(f"{label}: end to end", len(docs), end - start)
        finally:
            stop(proc)


def bench_spool(docs: list[bytes], work: Path) -> None:
    print("spool")
    size = sum(len(d) + 1 for d in docs)
    spool = Spool(str(work / "spool-bench"), 1 << 30)
    start = time.perf_counter()
    for i, doc in enumerate(docs):
        spool.append(doc)
        if i % FLUSH_EVERY == FLUSH_EVERY - 1:
            spool.flush()
    spool.flush()
    seconds = time.perf_counter() - start
    row("append + flush every 64", len(docs), seconds, f"{size / seconds / 1e6:,.0f} MB/s")
    start = time.perf_counter()
    n = 0
    while (batch := spool.peek(500)) is not None:
        n += len(batch.lines)
        spool.ack(batch)
    seconds = time.perf_counter() - start
    row("drain (peek 500 + ack)", n, seconds, f"{size / seconds / 1e6:,.0f} MB/s")
    spool.close()


def bench_outage(rate: int, sim_seconds: int, work: Path) -> None:
    total = rate * sim_seconds
    print(f"outage: {rate} alerts/s for {sim_seconds:,} simulated seconds ({total:,} alerts), receiver down")
    port = free_port()  # nobody listens: connection refused until the receiver starts
    cfg = SinkConfig(
        kind="http", target=f"http://127.0.0.1:{port}/alerts", retry_max_s=1.0, batch_wait_s=0.05
    )
    rss0, _ = rss_mib()
    tracemalloc.start()
    sink = open_sink(cfg, str(work / "state-outage"))
    base = 7_000_000
    spent = 0.0
    rss_samples = []
    for second in range(sim_seconds):
        docs = [alert(base + second * rate + k) for k in range(rate)]  # rendering is not the sink's cost
        start = time.perf_counter()
        for doc in docs:
            sink.write(doc)
        sink.flush()
        spent += time.perf_counter() - start
        if second % 300 == 0:
            rss_samples.append(rss_mib()[0])
    _, peak_traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1, hwm = rss_mib()
    stats = sink.stats()
    print(
        f"  detection thread: {spent:.2f} s for {total:,} alerts ({spent * 1e6 / total:.2f} µs/alert); "
        f"errors (retries) {stats['errors']}, status {stats['status']}"
    )
    print(
        f"  spool at the end: {stats['spool_bytes'] / 2**20:,.1f} MiB on disk, "
        f"backlog {stats['backlog_alerts']:,} alerts / {stats['backlog_bytes'] / 2**20:,.1f} MiB, "
        f"dropped {stats['dropped']:,}"
    )
    print(
        f"  memory: RSS {rss0:.0f} → {rss1:.0f} MiB (samples every 300 s: "
        f"{', '.join(f'{r:.0f}' for r in rss_samples)}), peak RSS {hwm:.0f} MiB, "
        f"tracemalloc peak {peak_traced / 2**20:.2f} MiB"
    )
    proc, _ = start_receiver(_HTTP_RECEIVER, port)
    try:
        start = time.perf_counter()
        end = wait_delivered(sink, total - stats["dropped"])
        print(
            f"  recovery: {total - stats['dropped']:,} alerts drained in {end - start:.2f} s "
            f"({(total - stats['dropped']) / (end - start):,.0f} alerts/s, "
            f"including up to retry_max_s = 1 s of backoff)"
        )
        sink.close()
        after = sink.stats()
        print(f"  after drain: spool {after['spool_bytes'] / 2**20:.1f} MiB, RSS {rss_mib()[0]:.0f} MiB")
    finally:
        stop(proc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller runs (a rough check)")
    ap.add_argument("--alerts", type=int, default=None, help="alerts per throughput run (default 100,000)")
    ap.add_argument("--rate", type=int, default=20, help="alerts per simulated second in the outage (20)")
    ap.add_argument("--outage-only", action="store_true", help="only the outage (what the parent runs)")
    args = ap.parse_args()
    sim_seconds = 600 if args.quick else 3600
    if args.outage_only:
        work = Path(tempfile.mkdtemp(prefix="bench-sinks-"))
        try:
            bench_outage(args.rate, sim_seconds, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    n = args.alerts or (20_000 if args.quick else 100_000)
    docs = [alert(i) for i in range(n)]
    print(f"{n:,} alerts of {sum(map(len, docs)) / n:,.0f} bytes on average; {os.cpu_count()} CPUs")
    work = Path(tempfile.mkdtemp(prefix="bench-sinks-"))
    try:
        bench_file(docs, work)
        bench_spool(docs, work)
        bench_network(docs, work)
        sys.stdout.flush()
        # A fresh process, so RSS shows the sink and not the documents the runs above kept.
        outage = [sys.executable, __file__, "--outage-only", "--rate", str(args.rate)]
        subprocess.run([*outage, "--quick"] if args.quick else outage, check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
