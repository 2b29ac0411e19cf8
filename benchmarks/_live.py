"""Pieces the live (root, real-kernel) benchmarks share: the C load generators, a running agent whose
diagnostics are parsed, and the empty-probe floor that no tracepoint sensor can go below.

Imported by bench_sensor.py and bench_cost.py (both run as scripts, so this directory is on sys.path).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GENERATORS = ("openloop", "forkexec", "rategen", "seccalls")


def build(tmp: Path, names: tuple[str, ...] = GENERATORS) -> dict[str, str]:
    """Compile the generators in benchmarks/c into ``tmp``; name → path of the binary."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("bench: a C compiler is needed (scripts/setup.sh installs gcc)")
    out = {}
    for name in names:
        target = tmp / name
        subprocess.run([cc, "-O2", "-o", str(target), str(HERE / "c" / f"{name}.c")], check=True)
        out[name] = str(target)
    return out


def run_value(cmd: list[str]) -> float:
    """A generator's one printed number (ns or µs per iteration, or operations done)."""
    return float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())


class Agent:
    """A `sentinel` agent (``events`` or ``run``) started from the source tree ``code``, stdout to /dev/null
    unless told; its JSON stderr diagnostics are kept so the ready and stop records can be read."""

    def __init__(
        self,
        command: str,
        *args: str,
        code: Path = REPO,
        env: Mapping[str, str] | None = None,
        settle: float = 1.0,
        ready_timeout: float = 120.0,
    ) -> None:
        self.diag: list[dict[str, Any]] = []
        if command.startswith("floor:"):  # _floor.py: the agent's first steps only (read, decode, table)
            argv = [sys.executable, str(HERE / "_floor.py"), command.partition(":")[2], *args]
        else:
            argv = [sys.executable, "-m", "sentinel.cli", command, *args]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=code,
            env=dict(env) if env is not None else None,
        )
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            ready = self.ready.wait(ready_timeout)
        except BaseException:  # an interrupted benchmark leaves no agent behind
            self.proc.kill()
            raise
        if not ready or self.proc.poll() is not None:
            self.proc.kill()
            sys.exit(f"bench: agent did not become ready: {self.diag[-5:]}")
        time.sleep(settle)  # let the start-up work (bootstrap, first drain) settle before measuring

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            self.diag.append(rec)
            if rec.get("event") == "sentinel.ready":
                self.ready.set()

    def record(self, event: str) -> dict[str, Any]:
        """The last diagnostic record named ``event`` (e.g. sentinel.ready), or {}."""
        found = [d for d in self.diag if d.get("event") == event]
        return found[-1] if found else {}

    def cpu_seconds(self) -> float:
        """User + system time of the agent process (all its threads)."""
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_kib(self) -> dict[str, int]:
        """RssAnon, RssFile and VmHWM from /proc/PID/status, in KiB."""
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile", "VmHWM"):
                    out[key] = int(value.split()[0])
        return out

    def stop(self) -> dict[str, Any]:
        """SIGTERM, wait, and the agent's sentinel.stopped record (its counters), or {}."""
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)
        return self.record("sentinel.stopped")


OPENAT = ("syscalls:sys_enter_openat", "syscalls:sys_exit_openat")


@contextlib.contextmanager
def empty_probes(tracepoints: Sequence[str] = OPENAT) -> Iterator[None]:
    """Empty programs attached to ``tracepoints`` ("category:name"; default the enter+exit of openat): what
    merely attaching costs a loop, the floor of any tracepoint sensor watching the same calls."""
    from bcc import BPF

    # One empty function attached everywhere (TRACEPOINT_PROBE would declare each tracepoint's argument
    # struct, whose kernel types are not all known to bcc's headers).
    bpf = BPF(text="int empty(void *ctx) { return 0; }")
    try:
        for tp in tracepoints:
            bpf.attach_tracepoint(tp=tp, fn_name="empty")
        yield
    finally:
        bpf.cleanup()


def sensor_tracepoints() -> list[str]:
    """Every tracepoint `sentinel run`'s sensor attaches with its defaults (read from the floor consumer)."""
    agent = Agent("floor:read", settle=0.0)
    found = list(agent.record("sentinel.ready").get("tracepoints") or [])
    agent.stop()
    return found


def floor_slowdown(tool: list[str], rounds: int) -> float:
    """The floor of any enter+exit tracepoint sensor on ``tool``: medians with and without empty probes,
    alternating."""
    base, loaded = [], []
    for _ in range(rounds):
        base.append(run_value(tool))
        with empty_probes():
            loaded.append(run_value(tool))
    return statistics.median(loaded) / statistics.median(base)
