#!/usr/bin/env python3
"""Alert rendering cost with and without secret redaction, without the kernel. Prints its figures.

Every event is a fork + exec of a new process whose exec matches a rule quoting ``%proc.cmdline`` and
``%proc.args``, so every alert builds a new process block (the worst case for redaction: in a real stream
most alerts reuse a cached block). Three runs over the same events:

- redaction off (``redact_builtin: false``, no patterns);
- the built-in set on ordinary command lines (what a host pays by default);
- the built-in set when the parent's command line (quoted in every alert's output) carries a token;
- the built-in set plus one operator pattern on command lines that all carry a password.

    .venv/bin/python benchmarks/bench_render.py [--alerts N]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from sentinel.detect import DetectionStream  # noqa: E402
from sentinel.events import Event, EventType  # noqa: E402
from sentinel.host import HostInfo  # noqa: E402
from sentinel.process.facts import ProcFacts, ReplayFacts  # noqa: E402
from sentinel.process.table import ProcessTable  # noqa: E402
from sentinel.redact import Redactor  # noqa: E402
from sentinel.rules import load_rules  # noqa: E402

S = 1_000_000_000
RULE = """
- rule: Any Exec
  desc: every exec, quoting the command line twice
  condition: evt.type = execve
  output: "exec %proc.name (cmdline=%proc.cmdline args=%proc.args parent=%proc.pcmdline)"
  priority: warning
"""
HOST = HostInfo(hostname="bench", machine_id="m", boot_id="b", kernel="6.18", boot_time_ns=1_700_000_000 * S)


class NullSink:
    name = "null"
    format = "ecs"

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, line: bytes, priority: str = "warning") -> None:
        self.bytes += len(line)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def events(n: int, secret: bool) -> list[Event]:
    out: list[Event] = []
    for i in range(n):
        pid = 1000 + i
        argv = (
            ["mysql", "-uapp", f"-pPw{i:08d}", "--host", "db.internal", "shop"]
            if secret
            else ["python3", "/srv/app/worker.py", "--queue", f"jobs-{i % 17}", "--concurrency", "4"]
        )
        ts = i * 1000
        out.append(Event(type=EventType.FORK, ts_ns=ts + 1, pid=100, tid=100, uid=0, gid=0, comm="bash",
                         child_pid=pid))  # fmt: skip
        out.append(Event(type=EventType.EXEC, ts_ns=ts + 2, pid=pid, tid=pid, uid=0, gid=0, comm=argv[0],
                         filename=f"/usr/bin/{argv[0]}", argv=argv))  # fmt: skip
    return out


def run(evs: list[Event], redactor: Redactor | None, ruleset: Any, parent_secret: bool) -> tuple[float, int]:
    facts = ReplayFacts()
    facts.feed(ProcFacts(pid=1, start_ticks=1, ppid=0, comm="init", exe="/sbin/init", cwd="/", args=["init"]))
    script = "deploy --token=abc123 now" if parent_secret else "deploy --env prod now"
    facts.feed(ProcFacts(pid=100, start_ticks=5, ppid=1, comm="bash", exe="/usr/bin/bash", cwd="/",
                         args=["bash", "-c", script]))  # fmt: skip
    table = ProcessTable("b", facts, clk_tck=100, user_lookup=lambda _: "root", group_lookup=lambda _: "root")
    table.bootstrap()
    sink = NullSink()
    stream = DetectionStream(table, ruleset, HOST, sink, "ecs", 0.0, redactor=redactor)
    t0 = time.perf_counter()
    for e in evs:
        stream.handle(e)
    stream.close()
    return time.perf_counter() - t0, stream.writer.written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alerts", type=int, default=20_000, help="alerts per run (default 20,000)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.yaml"
        path.write_text(RULE)
        ruleset = load_rules([path]).ruleset
    plain, secret = events(args.alerts, False), events(args.alerts, True)
    custom = Redactor([re.compile(r"--vault-key[= ](?P<secret>\S+)")], builtin=True)
    print(f"alert rendering, one new process per alert ({args.alerts:,} alerts per run, one core)")
    base = None
    for name, evs, red, parent_secret in (
        ("redaction off", plain, Redactor([], builtin=False), False),
        ("built-in set, no secrets", plain, Redactor(), False),
        ("built-in set, parent's secret quoted in every alert", plain, Redactor(), True),
        ("built-in + 1 pattern, every alert has a secret", secret, custom, False),
    ):
        run(evs[:2000], red, ruleset, parent_secret)  # warm up
        seconds, written = run(evs, red, ruleset, parent_secret)
        rate = written / seconds
        base = base or rate
        print(f"  {name:<52} {rate:>9,.0f} alerts/s  {seconds / written * 1e6:6.1f} µs/alert  "
              f"x{base / rate:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
