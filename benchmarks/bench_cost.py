#!/usr/bin/env python3
"""What the agent users run costs: `sentinel run` with its shipped defaults (model auto, learning on a fresh
state dir; the shipped rules; default sensor flags; no configuration file), each figure printed beside its
target (issue 17) with met / NOT met. Needs root: it loads eBPF probes and starts agents.

Parts (--only cpu,open,forkexec,storm,memory,latency; default all):

  cpu       agent CPU (user + system, all threads) while `rategen exec` runs 1,600 fork+execs/s for 30 s,
            counted until 1 s after the generator stops (the backlog it left is the generator's cost);
            target <= 10 % of one CPU. `--model off` is printed for reference, and the floors of this design
            (benchmarks/_floor.py: the same probes and sensor, a consumer that only reads the rings, also
            decodes every record, or also keeps the process table; no rules, model or output).
  open      slowdown of a C open+close loop under the agent, against the floor any enter+exit tracepoint
            sensor pays (empty programs on openat), measured in the same rounds; target <= floor + 0.10.
  forkexec  slowdown of a C fork+exec+wait loop; target <= 1.05x. Its floor: empty programs on every
            tracepoint the sensor attaches (the same rounds). Both loops also run beside our probes with a
            consumer that only decodes: what the probes themselves cost, apart from the agent's work.
  storm     `rategen open` of distinct missing paths at each --storm-rates rate for 10 s, one fresh agent per
            rate: opens received and lost (the agent's sentinel.stopped counters) and the highest rate with
            0 lost (target >= 150k/s), beside the decoding floor's; then 3,000 execs/s beside the heaviest
            open rate: execs must never be lost while opens are shed.
  memory    RssAnon / RssFile (/proc/PID/status) idle after start, after an exec run, after an open storm;
            the process table's size at start and at stop.
  latency   event-to-alert latency at the sink: a copy of /bin/true run from a temporary directory (rule
            "Program Run From Temporary Directory") 20 times a second for 20 s, each from a fresh shell, with
            aggregation off (--aggregation-window 0) so that every run is its own alert: by default these
            runs are one behaviour and fold into one alert and summaries. One agent writes to both
            outputs: http: to a receiver here that timestamps each request's arrival, and file: watched
            here by polling every millisecond. Latency = arrival -
            the alert's @timestamp (the exec's kernel time). Target p99 <= 100 ms.

--baseline REF checks REF out into a temporary git worktree and measures it in the same run, alternating
(baseline, current, baseline, current...) so both columns see the same machine; the empty-probe floor is
one figure for both. Progress goes to stderr; the figures to stdout.

    .venv/bin/python benchmarks/bench_cost.py [--baseline main] [--quick] [--only cpu,latency]
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from _live import REPO, Agent, build, empty_probes, run_value, sensor_tracepoints

PARTS = ("cpu", "open", "forkexec", "storm", "memory", "latency")
FLOORS = ("read", "decode", "table")  # benchmarks/_floor.py's levels
STORM_TARGET = 150_000
TRIGGER_RULE = "Program Run From Temporary Directory"
LATENCY_TARGET_MS = 100.0
T0 = time.monotonic()


def progress(text: str) -> None:
    print(f"[bench_cost {time.monotonic() - T0:6.0f}s] {text}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class Variant:
    """One column: the source tree an agent is started from."""

    label: str
    code: Path


@dataclass(slots=True)
class Settings:
    """Sizes of each part: the full run's follow the issue's figures, --quick only proves they run."""

    quick: bool
    exec_rate: int
    cpu_seconds: float
    rounds: int
    open_iterations: int
    fork_iterations: int
    storm_rates: list[int]
    storm_seconds: float
    storm_exec_rate: int
    memory_seconds: float
    latency_rate: float
    latency_seconds: float


@dataclass
class Bench:
    variants: list[Variant]
    bins: dict[str, str]
    work: Path
    s: Settings
    env: dict[str, str] = field(default_factory=dict)

    @contextlib.contextmanager
    def agent(self, v: Variant, *extra: str) -> Iterator[Agent]:
        """`sentinel run` from ``v``'s tree on a fresh state dir, no config file, stdout to /dev/null;
        stopped (again: ``Agent.stop`` may be called inside) and its state dir removed on the way out."""
        state = tempfile.mkdtemp(prefix="state-", dir=self.work)
        env = dict(self.env, PYTHONPATH=str(v.code))
        agent = Agent("run", "--state-dir", state, *extra, code=v.code, env=env)
        try:
            yield agent
        finally:
            agent.stop()
            shutil.rmtree(state, ignore_errors=True)


# -- output ---------------------------------------------------------------------------------------------

LABEL_W, TARGET_W, VALUE_W = 42, 23, 50


def row(label: str, target: str, values: list[str]) -> None:
    """One figure: label, target, then a column per variant (a long value pushes the next one right)."""
    cols = " ".join(f"{v:<{VALUE_W}}" for v in values)
    print(f"{label:<{LABEL_W}} {target:<{TARGET_W}} {cols}".rstrip(), flush=True)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


# -- cpu ------------------------------------------------------------------------------------------------


def exec_cpu(b: Bench, agent: Agent) -> tuple[float, float, dict[str, Any]]:
    """``agent``'s CPU (% of one CPU) while `rategen exec` runs, counted until 1 s after it stops (the
    backlog it left), the exec rate done, and the agent's counters once stopped."""
    cpu0, t0 = agent.cpu_seconds(), time.monotonic()
    done = run_value([b.bins["rategen"], "exec", str(b.s.exec_rate), str(b.s.cpu_seconds)])
    t1 = time.monotonic()
    time.sleep(1.0)  # the backlog the generator left
    cpu1 = agent.cpu_seconds()
    stats = agent.stop()
    return 100 * (cpu1 - cpu0) / (t1 - t0), done / (t1 - t0), stats


def part_cpu(b: Bench) -> None:
    """One run per mode and variant, alternating: 30 s at a steady rate is already an average."""
    modes: list[tuple[str, tuple[str, ...]]] = [("defaults", ())]
    if not b.s.quick:
        modes.append(("--model off", ("--model", "off")))
    for mode, args in modes:
        values = []
        for v in b.variants:
            progress(f"cpu: {mode}, {v.label}: {b.s.exec_rate} execs/s for {b.s.cpu_seconds}s")
            with b.agent(v, *args) as agent:
                pct, rate, stats = exec_cpu(b, agent)
            lost = stats["lost"]["exec"]
            ok = f" {verdict(pct <= 10.0)}" if mode == "defaults" else ""
            values.append(f"{pct:5.1f}% at {rate:,.0f}/s, {lost} lost{ok}")
        label = f"agent CPU, {b.s.exec_rate} execs/s, {mode}"
        row(label, "<= 10% of one CPU" if mode == "defaults" else "(reference)", values)
    if b.s.quick:
        return
    what = {"read": "rings read only", "decode": "+ every record decoded", "table": "+ the process table"}
    for level in FLOORS:
        progress(f"cpu: floor {level}: {b.s.exec_rate} execs/s for {b.s.cpu_seconds}s")
        pct, _, _ = exec_cpu(b, Agent(f"floor:{level}"))
        one = f"{pct:5.1f}% (one figure for all)"
        row(f"floor: {what[level]}", "(no rules, model, output)", [one] * len(b.variants))


# -- open / forkexec -------------------------------------------------------------------------------------


def part_slowdown(b: Bench, do_open: bool, do_fork: bool) -> None:
    tools: dict[str, list[str]] = {}
    if do_open:
        tools["open"] = [b.bins["openloop"], str(b.s.open_iterations)]
    if do_fork:
        tools["forkexec"] = [b.bins["forkexec"], str(b.s.fork_iterations)]
    alone: dict[tuple[str, str], list[float]] = {}
    loaded: dict[tuple[str, str], list[float]] = {}
    floor_alone: list[float] = []
    floor_loaded: list[float] = []
    decode_loaded: dict[str, list[float]] = {}
    every_alone: list[float] = []
    every_loaded: list[float] = []
    every = sensor_tracepoints() if do_fork else []
    for r in range(b.s.rounds):
        if do_open:
            progress(f"{'/'.join(tools)}: round {r + 1}/{b.s.rounds}, empty probes")
            floor_alone.append(run_value(tools["open"]))
            with empty_probes():
                floor_loaded.append(run_value(tools["open"]))
        if do_fork:
            progress(f"forkexec: round {r + 1}/{b.s.rounds}, empty programs on {len(every)} tracepoints")
            every_alone.append(run_value(tools["forkexec"]))
            with empty_probes(every):
                every_loaded.append(run_value(tools["forkexec"]))
        progress(f"{'/'.join(tools)}: round {r + 1}/{b.s.rounds}, our probes, a decoding-only consumer")
        floor_agent = Agent("floor:decode")
        for name, tool in tools.items():
            decode_loaded.setdefault(name, []).append(run_value(tool))
        floor_agent.stop()
        for v in b.variants:
            progress(f"{'/'.join(tools)}: round {r + 1}/{b.s.rounds}, {v.label}")
            for name, tool in tools.items():
                alone.setdefault((name, v.label), []).append(run_value(tool))
            with b.agent(v):
                for name, tool in tools.items():
                    loaded.setdefault((name, v.label), []).append(run_value(tool))

    def ratio(name: str, v: Variant) -> tuple[float, float, float]:
        a, l_ = statistics.median(alone[(name, v.label)]), statistics.median(loaded[(name, v.label)])
        return a, l_, l_ / a

    if do_open:
        floor = statistics.median(floor_loaded) / statistics.median(floor_alone)
        row(
            "open+close loop, empty probes (the floor)",
            "",
            [f"{floor:.2f}x (one figure for all)"] * len(b.variants),
        )
        base = statistics.median(alone[("open", b.variants[-1].label)])
        x = statistics.median(decode_loaded["open"]) / base
        row("open+close loop, our probes, decoding only", "", [f"{x:.2f}x (one for all)"] * len(b.variants))
        values = []
        for v in b.variants:
            a, l_, x = ratio("open", v)
            values.append(f"{x:.2f}x ({a:.0f} -> {l_:.0f} ns/iteration) {verdict(x <= floor + 0.10)}")
        row("open+close loop slowdown", f"<= floor+0.10 = {floor + 0.10:.2f}x", values)
    if do_fork:
        x = statistics.median(every_loaded) / statistics.median(every_alone)
        label = f"fork+exec loop, empty programs on {len(every)} tps"
        row(label, "(the floor)", [f"{x:.2f}x (one for all)"] * len(b.variants))
        base = statistics.median(alone[("forkexec", b.variants[-1].label)])
        x = statistics.median(decode_loaded["forkexec"]) / base
        row("fork+exec loop, our probes, decoding only", "", [f"{x:.2f}x (one for all)"] * len(b.variants))
        values = []
        for v in b.variants:
            a, l_, x = ratio("forkexec", v)
            values.append(f"{x:.2f}x ({a:.0f} -> {l_:.0f} us/iteration) {verdict(x <= 1.05)}")
        row("fork+exec loop slowdown", "<= 1.05x", values)


# -- storm ----------------------------------------------------------------------------------------------


def open_storm(b: Bench, agent: Agent, rate: int) -> tuple[float, int, int]:
    """`rategen open` at ``rate`` beside ``agent``, which is stopped after: (rate done, opens received, opens
    lost) from its counters."""
    t0 = time.monotonic()
    done = run_value([b.bins["rategen"], "open", str(rate), str(b.s.storm_seconds)])
    elapsed = time.monotonic() - t0
    time.sleep(1.0)
    stats = agent.stop()
    return done / elapsed, stats["received"]["open"], stats["lost"]["open"]


def part_storm(b: Bench) -> None:
    got: dict[tuple[int, str], tuple[float, int, int]] = {}
    for rate in b.s.storm_rates:
        for v in b.variants:
            progress(f"storm: {rate:,} opens/s for {b.s.storm_seconds}s, {v.label}")
            with b.agent(v) as agent:
                got[(rate, v.label)] = open_storm(b, agent, rate)
        progress(f"storm: {rate:,} opens/s for {b.s.storm_seconds}s, decoding-only consumer")
        got[(rate, "floor")] = open_storm(b, Agent("floor:decode"), rate)
        values = []
        for label in [v.label for v in b.variants] + ["floor"]:
            achieved, received, lost = got[(rate, label)]
            values.append(f"{received:,} received, {lost:,} lost ({achieved / 1000:.0f}k/s done)")
        row(f"opens of distinct paths, {rate // 1000}k/s", "0 lost", values[:-1])
        row("  … decoding-only floor", "", [values[-1]] * len(b.variants))
    values = []
    for v in b.variants:
        clean = [rate for rate in b.s.storm_rates if got[(rate, v.label)][2] == 0]
        best = max(clean, default=0)
        values.append(f"{best // 1000}k/s {verdict(best >= STORM_TARGET)}" if clean else "none NOT met")
    row("highest open rate with 0 lost", f">= {STORM_TARGET // 1000}k/s", values)
    clean = [rate for rate in b.s.storm_rates if got[(rate, "floor")][2] == 0]
    best = max(clean, default=0)
    row("  … decoding-only floor", "", [f"{best // 1000}k/s" if clean else "none"] * len(b.variants))

    heavy = max(b.s.storm_rates)
    ex: dict[str, tuple[int, int, int, int]] = {}
    for v in b.variants:
        progress(f"storm: {b.s.storm_exec_rate} execs/s beside {heavy:,} opens/s, {v.label}")
        secs = str(b.s.storm_seconds)
        with b.agent(v) as agent:
            opens = subprocess.Popen([b.bins["rategen"], "open", str(heavy), secs], stdout=subprocess.PIPE)
            execs = subprocess.Popen(
                [b.bins["rategen"], "exec", str(b.s.storm_exec_rate), secs], stdout=subprocess.PIPE
            )
            done_exec = int(execs.communicate()[0].strip())
            opens.communicate()
            time.sleep(1.0)
            stats = agent.stop()
        ex[v.label] = (done_exec, stats["received"]["exec"], stats["lost"]["exec"], stats["lost"]["open"])
    values = []
    for v in b.variants:
        done_exec, received, lost, lost_open = ex[v.label]
        shed = f"{lost_open:,} opens shed" if lost_open else "no opens shed"
        values.append(f"{lost} of {done_exec:,} execs lost, {shed} {verdict(lost == 0)}")
    row(f"execs at {b.s.storm_exec_rate}/s beside {heavy // 1000}k opens/s", "0 execs lost", values)


# -- memory ---------------------------------------------------------------------------------------------


def part_memory(b: Bench) -> None:
    heavy = max(b.s.storm_rates)
    secs = str(b.s.memory_seconds)
    got: dict[str, dict[str, Any]] = {}
    for v in b.variants:
        progress(f"memory: idle, {b.s.exec_rate} execs/s, {heavy:,} opens/s for {secs}s each, {v.label}")
        with b.agent(v) as agent:
            time.sleep(2.0)
            out: dict[str, Any] = {
                "idle": agent.memory_kib(),
                "table0": agent.record("sentinel.ready")["processes"],
            }
            run_value([b.bins["rategen"], "exec", str(b.s.exec_rate), secs])
            time.sleep(1.0)
            out["exec"] = agent.memory_kib()
            run_value([b.bins["rategen"], "open", str(heavy), secs])
            time.sleep(1.0)
            out["storm"] = agent.memory_kib()
            out["table1"] = agent.stop()["process_table"]["size"]
        got[v.label] = out

    def mib(kib: dict[str, int]) -> str:
        return f"anon {kib['RssAnon'] / 1024:.1f} MiB, file {kib['RssFile'] / 1024:.1f} MiB"

    row("RSS idle after start", "", [mib(got[v.label]["idle"]) for v in b.variants])
    row(f"RSS after {b.s.exec_rate} execs/s for {secs}s", "", [mib(got[v.label]["exec"]) for v in b.variants])
    row(
        f"RSS after {heavy // 1000}k opens/s for {secs}s",
        "",
        [mib(got[v.label]["storm"]) for v in b.variants],
    )
    row(
        "peak RSS (VmHWM: start-up compile included)",
        "",
        [f"{got[v.label]['storm']['VmHWM'] / 1024:.1f} MiB" for v in b.variants],
    )
    row(
        "process table entries, start / stop",
        "",
        [f"{got[v.label]['table0']} / {got[v.label]['table1']}" for v in b.variants],
    )


# -- latency --------------------------------------------------------------------------------------------


class Arrivals:
    """(arrival wall time, line) pairs, appended from receiver threads."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, bytes]] = []
        self.lock = threading.Lock()

    def add(self, t: float, body: bytes) -> None:
        with self.lock:
            self.lines.extend((t, line) for line in body.splitlines() if line)


class Receiver(BaseHTTPRequestHandler):
    """The http sink's other end: timestamps each POST when its headers have arrived, answers 200."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the sink expects

    def do_POST(self) -> None:
        t = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.arrivals.add(t, body)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def watch_file(path: Path, arrivals: Arrivals, stop: threading.Event) -> None:
    """Poll ``path`` every millisecond; each complete line is stamped when it is first seen."""
    while not path.exists() and not stop.is_set():
        time.sleep(0.001)
    if stop.is_set():
        return
    fd = os.open(path, os.O_RDONLY)
    pending = b""
    try:
        while True:
            data = os.read(fd, 1 << 20)
            if data:
                t = time.time()
                pending += data
                cut = pending.rfind(b"\n") + 1
                arrivals.add(t, pending[:cut])
                pending = pending[cut:]
            elif stop.is_set():
                return
            else:
                time.sleep(0.001)
    finally:
        os.close(fd)


_SECONDS: dict[str, int] = {}


def wall(ts: str) -> float:
    """RFC 3339 UTC with up to nanoseconds → epoch seconds (fromisoformat keeps only microseconds)."""
    head, _, frac = ts.rstrip("Z").partition(".")
    secs = _SECONDS.get(head)
    if secs is None:
        secs = _SECONDS[head] = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
    return secs + (int(frac.ljust(9, "0")[:9]) / 1e9 if frac else 0.0)


def latencies(arrivals: Arrivals, marker: str) -> list[float]:
    """Milliseconds from each trigger alert's @timestamp to its arrival: the rule's alerts that name the
    trigger's unique directory anywhere (process.executable, or only the exec's filename when the process
    was gone before the agent looked)."""
    out = []
    needle = marker.encode()
    for t, line in arrivals.lines:
        if needle in line:
            doc = orjson.loads(line)
            if doc.get("rule", {}).get("name") == TRIGGER_RULE:
                out.append((t - wall(doc["@timestamp"])) * 1e3)
    return sorted(out)


def what_arrived(arrivals: Arrivals) -> str:
    """The rules seen at a sink, most frequent first: why the trigger's alerts are missing."""
    names: dict[str, int] = {}
    for _, line in arrivals.lines:
        name = str(orjson.loads(line).get("rule", {}).get("name"))
        names[name] = names.get(name, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(names.items(), key=lambda kv: -kv[1])[:6]) or "nothing"


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p))]


def wait_until(pred: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.05)


def latency_run(b: Bench, v: Variant, n: int) -> dict[str, list[float]]:
    """One agent writing to both sinks while ``n`` triggers run at the steady rate; ms per sink."""
    http_in, file_in = Arrivals(), Arrivals()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    server.arrivals = http_in  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    path = Path(tempfile.mkdtemp(prefix="alerts-", dir=b.work)) / "alerts.json"
    stop = threading.Event()
    watcher = threading.Thread(target=watch_file, args=(path, file_in, stop), daemon=True)
    watcher.start()
    exe = Path(tempfile.mkdtemp(prefix="trigger-", dir=b.work)) / "bench-trigger"
    shutil.copy("/bin/true", exe)
    marker = str(exe.parent)  # unique to this run: its alerts name it
    port = server.server_address[1]
    try:
        outputs = ("--output", f"http:http://127.0.0.1:{port}/", "--output", f"file:{path}")
        with b.agent(v, *outputs, "--aggregation-window", "0") as agent:
            shells: list[subprocess.Popen[bytes]] = []
            t0 = time.monotonic()
            for k in range(n):
                time.sleep(max(0.0, t0 + k / b.s.latency_rate - time.monotonic()))
                # A fresh shell each time, as build jobs do; aggregation is off, so each run is an alert.
                shells.append(subprocess.Popen(["/bin/sh", "-c", f"'{exe}'; exit 0"]))
                shells = [p for p in shells if p.poll() is None]
            for p in shells:
                p.wait()
            wait_until(
                lambda: min(len(latencies(http_in, marker)), len(latencies(file_in, marker))) >= n, 15.0
            )
            stats = agent.stop()
            matches = (
                agent.record("sentinel.detection_stopped").get("alerts_by_rule", {}).get(TRIGGER_RULE, 0)
            )
    finally:
        stop.set()
        watcher.join(5)
        server.shutdown()
        server.server_close()
    out = {}
    for sink, arrivals in (("http", http_in), ("file", file_in)):
        out[sink] = latencies(arrivals, marker)
        if len(out[sink]) < n:
            counters = {k: stats.get(k) for k in ("received", "lost", "kernel")}
            progress(
                f"latency: {len(out[sink])} of {n} trigger alerts at the {sink} sink; it saw "
                f"{what_arrived(arrivals)}; the agent wrote {matches} of the rule's alerts; {counters}"
            )
    return out


def part_latency(b: Bench) -> None:
    n = int(b.s.latency_rate * b.s.latency_seconds)
    results: dict[str, dict[str, list[float]]] = {}
    for v in b.variants:
        progress(f"latency: {n} triggers at {b.s.latency_rate:g}/s, {v.label}")
        results[v.label] = latency_run(b, v, n)
    for sink in ("http", "file"):
        values = []
        for v in b.variants:
            got = results[v.label][sink]
            if not got:
                values.append(f"no alerts of {n} NOT met")
                continue
            p99 = pct(got, 0.99)
            ok = p99 <= LATENCY_TARGET_MS and len(got) == n
            p50 = statistics.median(got)
            values.append(f"p50 {p50:.1f} p99 {p99:.1f} max {got[-1]:.0f} ms, {len(got)}/{n} {verdict(ok)}")
        row(f"event-to-alert at the {sink} sink", f"p99 <= {LATENCY_TARGET_MS:.0f} ms, all", values)


# -- main -----------------------------------------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def describe_current() -> str:
    try:
        dirty = "+dirty" if git("status", "--porcelain", "--untracked-files=no") else ""
        return f"current {git('rev-parse', '--short', 'HEAD')}{dirty}"
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "current"


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(PARTS)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {', '.join(unknown)}; choose from {','.join(PARTS)}"
        )
    return parts


def settings(args: argparse.Namespace) -> Settings:
    q = args.quick
    return Settings(
        quick=q,
        exec_rate=args.exec_rate,
        cpu_seconds=3.0 if q else 30.0,
        rounds=1 if q else args.rounds,
        open_iterations=200_000 if q else 1_000_000,
        fork_iterations=300 if q else 3000,
        storm_rates=[50_000] if q else [int(r) for r in args.storm_rates.split(",")],
        storm_seconds=2.0 if q else 10.0,
        storm_exec_rate=3000,
        memory_seconds=2.0 if q else 10.0,
        latency_rate=20.0,
        latency_seconds=2.0 if q else 20.0,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", metavar="REF", help="also measure this git ref (e.g. main), alternating")
    ap.add_argument("--quick", action="store_true", help="a smoke run: a few seconds per figure, one round")
    ap.add_argument("--only", type=parse_only, default=None, metavar="PARTS",
                    help=f"comma-separated parts to run (default all: {','.join(PARTS)})")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds for open/forkexec (default 5)")
    ap.add_argument("--exec-rate", type=int, default=1600, help="execs/s for the cpu test (default 1600)")
    ap.add_argument("--storm-rates", default="50000,100000,150000,200000", metavar="R,R,...",
                    help="open rates for the storm (default 50000,100000,150000,200000)")  # fmt: skip
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_cost.py: needs root (it loads eBPF probes and starts `sentinel run`); run it as root",
              file=sys.stderr)  # fmt: skip
        return 2
    parts = args.only or list(PARTS)
    s = settings(args)
    work = Path(tempfile.mkdtemp(prefix="bench-cost-"))
    baseline: Path | None = None
    try:
        variants = []
        if args.baseline:
            baseline = work / "baseline"
            progress(f"checking {args.baseline} out into {baseline}")
            git("worktree", "add", "--detach", str(baseline), args.baseline)
            sha = subprocess.run(["git", "-C", str(baseline), "rev-parse", "--short", "HEAD"], check=True,
                                 capture_output=True, text=True).stdout.strip()  # fmt: skip
            variants.append(Variant(f"baseline {args.baseline} {sha}", baseline))
        variants.append(Variant(describe_current(), REPO))
        env = {k: v for k, v in os.environ.items() if k not in ("SENTINEL_RULES", "PYTHONPATH")}
        env["SENTINEL_CONFIG"] = str(work / "no-config.yaml")  # never created: the host's file stays out
        bench = Bench(variants, build(work, ("openloop", "forkexec", "rategen")), work, s, env)
        print(f"sentinel cost benchmark: `sentinel run` defaults  (cpus={os.cpu_count()}, "
              f"kernel={os.uname().release}{', quick' if s.quick else ''})", flush=True)  # fmt: skip
        row("figure", "target", [v.label for v in variants])
        if "cpu" in parts:
            part_cpu(bench)
        if "open" in parts or "forkexec" in parts:
            part_slowdown(bench, "open" in parts, "forkexec" in parts)
        if "storm" in parts:
            part_storm(bench)
        if "memory" in parts:
            part_memory(bench)
        if "latency" in parts:
            part_latency(bench)
        progress("done")
    finally:
        if baseline is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)],
                           check=False, capture_output=True)  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
