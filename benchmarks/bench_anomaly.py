#!/usr/bin/env python3
"""Anomaly-model cost. Prints its figures.

1. Model load time (verification included): the shipped ``models/default`` if present, else a model trained
   here on a synthetic baseline.
2. Pipeline throughput on one core: a synthetic capture (mostly opens, some execs and connects, a process
   tree) replayed through the agent's detection stream — process table → features → micro-batch scoring →
   default rules → alerts rendered — with the model and the default rules, with rules only, and with the
   model only. Target: ≥ 50k events/s scored with model + rules.
3. ``--live`` (root): event-to-alert latency in the running agent. Records a short baseline of a busy loop,
   trains on it, runs ``sentinel run`` with that model while the loop goes on and an anomaly is planted
   every 0.5 s, and reports p50/p99 of ``event.created - @timestamp`` over every alert written (taken when
   the alert is rendered; ``bench_cost.py --only latency`` measures at the sinks). Target: p99 ≤ 100 ms.

    .venv/bin/python benchmarks/bench_anomaly.py [--events N] [--quick] [--live]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import bench_rules  # noqa: E402
import orjson  # noqa: E402

from sentinel.anomaly.live import AnomalySettings, open_engine  # noqa: E402
from sentinel.anomaly.model import load_model  # noqa: E402
from sentinel.anomaly.train import train  # noqa: E402
from sentinel.detect import DetectionStream  # noqa: E402
from sentinel.recording import replay_events  # noqa: E402


class NullSink:
    """Counts alert lines and throws them away (the sink is not what this measures)."""

    name = "null"

    def __init__(self) -> None:
        self.written = 0

    def write(self, line: bytes, priority: str = "warning") -> None:
        self.written += 1

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class QuietLog:
    def __getattr__(self, _name: str) -> Any:
        return lambda *a, **k: None


def bench_load(model_dir: Path, repeat: int) -> None:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        load_model(model_dir)
        times.append(time.perf_counter() - t0)
    print(f"model load ({model_dir}): median {statistics.median(times) * 1e3:.2f} ms over {repeat} loads")


def replay_rate(capture: str, ruleset: Any, model_dir: Path | None) -> tuple[float, int, dict[str, Any]]:
    """Events/s through the detection stream; returns (rate, events, engine snapshot)."""
    sink = NullSink()
    engine = None
    if model_dir is not None:
        engine, _ = open_engine(AnomalySettings(model=str(model_dir), state_dir=""), QuietLog())
    streams: list[DetectionStream] = []

    def make_stream(host: Any, table: Any) -> DetectionStream:
        s = DetectionStream(table, ruleset, host, sink, anomaly=engine)
        streams.append(s)
        return s

    t0 = time.perf_counter()
    replay_events(capture, make_stream)
    for s in streams:
        s.finish()
    elapsed = time.perf_counter() - t0
    events = sum(s.events for s in streams)
    return events / elapsed, events, engine.snapshot() if engine is not None else {}


def bench_pipeline(n_events: int, model_dir: Path | None, work: Path) -> None:
    base = work / "baseline.cap"
    test = work / "test.cap"
    bench_rules.write_capture(str(base), n_events, seed=11)
    bench_rules.write_capture(str(test), n_events, seed=3)
    if model_dir is None:
        model_dir = work / "model"
        train([base], model_dir)
    ruleset, label = bench_rules.default_ruleset()
    empty = bench_rules.load_rules([]).ruleset
    print(f"pipeline: {n_events} synthetic events, rules: {label}, model: {model_dir}")
    modes = [
        ("rules only", ruleset, None),
        ("model only", empty, model_dir),
        ("model + rules", ruleset, model_dir),
    ]
    # The first replay in a process pays one-time costs (imports, compiled rules, caches): warm up, then
    # rotate the modes round by round so that a slow spell of the machine hits all of them alike.
    replay_rate(str(test), ruleset, model_dir)
    rates: dict[str, list[float]] = {name: [] for name, _, _ in modes}
    snaps: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    rounds = 5
    for r in range(rounds):
        for name, rs, model in modes[r % 3 :] + modes[: r % 3]:
            rate, counts[name], snaps[name] = replay_rate(str(test), rs, model)
            rates[name].append(rate)
    for name, _, _ in modes:
        snap = snaps[name]
        extra = ""
        if snap:
            extra = (f", scored {snap['scored']}, from the memo {snap['memo_hits']}, anomalous "
                     f"{snap['anomalous']}, batches {snap['batches']}")  # fmt: skip
        got = sorted(rates[name])
        print(f"  {name:<14} {statistics.median(got):>9,.0f} events/s (median of {rounds}, range "
              f"{got[0]:,.0f}-{got[-1]:,.0f}; {counts[name]} events{extra})")  # fmt: skip


def _wall(ts: str) -> float:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


BUSY = r"""
import os, time, sys
end = time.monotonic() + float(sys.argv[1])
n = 0
while time.monotonic() < end:
    for i in range(200):
        with open(f"/etc/hostname") as f:
            f.read()
        n += 1
    time.sleep(0.002)
"""


def bench_live(seconds: float) -> None:
    if os.geteuid() != 0:
        print("live latency: skipped (needs root)")
        return
    py = sys.executable
    cmd = [py, "-m", "sentinel.cli"]
    work = Path(tempfile.mkdtemp(prefix="bench-anomaly-"))
    try:
        cap = work / "base.cap"
        rec = subprocess.Popen([*cmd, "record", "--output", str(cap)], stderr=subprocess.PIPE, cwd=REPO)
        _wait_ready(rec)
        busy = subprocess.Popen([py, "-c", BUSY, "15"])
        busy.wait()
        rec.send_signal(signal.SIGINT)
        rec.wait(60)
        subprocess.run([*cmd, "train", str(cap), "--output", str(work / "m"), "--alerts-per-day", "50"],
                       check=True, cwd=REPO, capture_output=True)  # fmt: skip
        out = work / "alerts.json"
        agent = subprocess.Popen(
            [*cmd, "run", "--model", str(work / "m"), "--state-dir", str(work / "state"), "--output",
             f"file:{out}", "--aggregation-window", "0"],
            stderr=subprocess.PIPE, cwd=REPO,
        )  # fmt: skip
        _wait_ready(agent)
        busy = subprocess.Popen([py, "-c", BUSY, str(seconds)])
        dropper = work / "dropper"
        shutil.copy("/bin/cat", dropper)
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        end = time.monotonic() + seconds
        planted = 0
        while time.monotonic() < end:
            subprocess.run([str(dropper), "/etc/shadow"], stdout=subprocess.DEVNULL)
            subprocess.run(["/bin/bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"], check=False)
            planted += 1
            time.sleep(0.5)
        busy.wait()
        listener.close()
        time.sleep(1.0)
        agent.send_signal(signal.SIGINT)
        agent.wait(60)
        lat: dict[str, list[float]] = {}
        for line in out.read_bytes().splitlines():
            doc = orjson.loads(line)
            ruleset = doc["rule"]["ruleset"]
            delay = _wall(doc["event"]["created"]) - _wall(doc["@timestamp"])
            lat.setdefault(ruleset, []).append(delay * 1e3)
        print(f"live: {planted} planted anomalies over {seconds:.0f}s of a busy open loop")
        for ruleset, values in sorted(lat.items()):
            values.sort()
            p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
            print(f"  {ruleset:<18} {len(values):>5} alerts  p50 {statistics.median(values):6.1f} ms  "
                  f"p99 {p99:6.1f} ms  max {values[-1]:6.1f} ms")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _wait_ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if b'"sentinel.ready"' in line:
            break
    threading.Thread(target=lambda: [None for _ in proc.stderr or []], daemon=True).start()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000, help="synthetic events per capture (default 300k)")
    ap.add_argument("--quick", action="store_true", help="fewer events and loads")
    ap.add_argument("--live", action="store_true", help="also measure event-to-alert latency live (root)")
    ap.add_argument("--live-seconds", type=float, default=20.0, metavar="S")
    ap.add_argument("--live-only", action="store_true", help="only the live latency run (root)")
    args = ap.parse_args()
    if args.live_only:
        bench_live(args.live_seconds)
        return 0
    n = 50_000 if args.quick else args.events
    default = REPO / "models" / "default"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = default if (default / "manifest.json").exists() else None
        if model is None:
            bench_rules.write_capture(str(work / "m.cap"), 50_000, seed=5)
            train([work / "m.cap"], work / "m0")
            model = work / "m0"
        bench_load(model, 10 if args.quick else 50)
        bench_pipeline(n, None, work)
    if args.live:
        bench_live(args.live_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
