#!/usr/bin/env python3
"""Rule-engine cost, without the kernel. Prints its figures; any user can run it.

1. Per-event matching cost (``RuleSet.match`` only) on a realistic event mix, with the default ruleset
   (``rules/``; a generated 40-rule set if it is missing or does not load) and with 1,000 generated
   Falco-style rules over exec/open/connect; the ratio shows how cost grows with rule count.
2. Replay throughput: a synthetic capture (default 200k events: mostly opens, some execs and connects, a
   process tree) written with CaptureWriter, then read back through decode → process table → match → ECS
   rendering of the alerts only. Also the same loop without matching, to show what the rules add.

    .venv/bin/python benchmarks/bench_rules.py [--events N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from sentinel.alerts.ecs import EcsRenderer  # noqa: E402
from sentinel.capture import CaptureReader, CaptureWriter, capture_header  # noqa: E402
from sentinel.events import AF_INET, AF_UNIX, Event, EventType  # noqa: E402
from sentinel.host import HostInfo  # noqa: E402
from sentinel.process.facts import ProcFacts, ReplayFacts  # noqa: E402
from sentinel.process.table import Process, ProcessTable  # noqa: E402
from sentinel.rules import EvalContext, RuleSet, load_rules, load_text  # noqa: E402
from sentinel.text import dumps  # noqa: E402

S = 1_000_000_000
HOST = HostInfo("bench", "0" * 32, "bench-boot", "6.1.0", 1_700_000_000 * S)

PREAMBLE = """
- macro: spawned_process
  condition: evt.type in (execve, execveat) and evt.dir = <
- macro: open_read
  condition: >
    evt.type in (open, openat, openat2) and evt.is_open_read = true and fd.typechar = 'f' and fd.num >= 0
- macro: open_write
  condition: >
    evt.type in (open, openat, openat2) and evt.is_open_write = true and fd.typechar = 'f' and fd.num >= 0
- macro: outbound
  condition: evt.type = connect and fd.typechar in (4, 6) and (evt.rawres >= 0 or evt.res = EINPROGRESS)
- list: shell_binaries
  items: [ash, bash, csh, ksh, sh, tcsh, zsh, dash]
- list: package_mgmt_binaries
  items: [dpkg, apt, apt-get, rpm, yum, dnf, pip, pip3]
- list: sensitive_file_names
  items: [/etc/shadow, /etc/sudoers, /etc/pam.conf, /etc/security/pwquality.conf]
- macro: sensitive_files
  condition: >
    fd.name startswith /etc
    and (fd.name in (sensitive_file_names) or fd.directory in (/etc/sudoers.d, /etc/pam.d))
"""


def generated_rules(n: int, seed: int = 7) -> str:
    """``n`` Falco-style rules over exec/open/connect; about a tenth have no indexable term."""
    rnd = random.Random(seed)
    out = [PREAMBLE]
    for i in range(n):
        kind = i % 10
        if kind == 0:
            cond = f'spawned_process and proc.name = tool{i} and proc.args contains "--opt{i}"'
        elif kind == 1:
            cond = f"spawned_process and proc.pname in (svc{i}, daemon{i}) and proc.name in (shell_binaries)"
        elif kind == 2:
            cond = (
                f"open_write and fd.name startswith /etc/app{i}/ and not proc.name in (package_mgmt_binaries)"
            )
        elif kind == 3:
            cond = f"open_read and fd.name = /var/lib/secret/file{i} and not proc.exepath in (/usr/bin/rd{i})"
        elif kind == 4:
            cond = f"outbound and fd.sport = {20000 + i} and not proc.name in (client{i}, agent{i})"
        elif kind == 5:
            cond = (
                f'spawned_process and proc.exepath pmatch (/opt/vendor{i}) and proc.cmdline contains "x{i}"'
            )
        elif kind == 6:
            cond = f"open_read and sensitive_files and proc.name = reader{i} and proc.aname[2] = init{i}"
        elif kind == 7:
            cond = f"spawned_process and proc.aname in (parent{i}) and proc.exepath = /usr/bin/child{i}"
        elif kind == 8:
            cond = f"open_write and fd.directory = /srv/data{i} and user.name != svc{i}"
        else:
            word = rnd.choice(["curl", "wget", "base64", "nc", "python"])
            cond = f'spawned_process and proc.cmdline contains "{word} -{i}" and proc.tty != 0'
        out.append(
            f"- rule: generated rule {i}\n"
            f"  desc: generated\n"
            f"  condition: {cond}\n"
            f'  output: "generated {i} %proc.name %proc.cmdline %fd.name"\n'
            f"  priority: warning\n"
        )
    return "\n".join(out)


def default_ruleset() -> tuple[RuleSet, str]:
    rules_dir = REPO / "rules"
    if rules_dir.is_dir():
        res = load_rules([rules_dir])
        if res.ruleset is not None and res.ruleset.rules:
            return res.ruleset, f"rules/ ({len(res.ruleset.enabled_rules)} enabled rules)"
        errors = [d for d in res.diagnostics if d.severity == "error"]
        print(f"  (rules/ did not load: {len(errors)} errors; using a generated 40-rule set)")
    res = load_text(generated_rules(40), "<generated-40>")
    assert res.ruleset is not None, res.diagnostics
    return res.ruleset, "generated 40 rules"


# --------------------------------------------------------------------------------------------- event mix

PATHS_READ = [
    "/usr/lib/x86_64-linux-gnu/libc.so.6", "/etc/ld.so.cache", "/usr/lib/locale/locale-archive",
    "/proc/self/status", "/etc/nsswitch.conf", "/etc/passwd", "/usr/share/zoneinfo/UTC", "/dev/null",
    "/home/alice/project/src/main.c", "/var/lib/dpkg/status", "/sys/fs/cgroup/cpu.max", "/etc/hosts",
    "/usr/lib/python3.11/os.py", "/var/log/syslog", "/tmp/build/obj/a.o",
]  # fmt: skip
PATHS_WRITE = [
    "/tmp/build/obj/b.o",
    "/var/log/app.log",
    "/home/alice/.cache/x",
    "/dev/pts/0",
    "/run/user/1000/s",
]
PROGRAMS = [
    ("bash", "/usr/bin/bash"), ("ls", "/usr/bin/ls"), ("cat", "/usr/bin/cat"), ("gcc", "/usr/bin/gcc"),
    ("python3", "/usr/bin/python3.11"), ("git", "/usr/bin/git"), ("sshd", "/usr/sbin/sshd"),
    ("cron", "/usr/sbin/cron"), ("systemd", "/usr/lib/systemd/systemd"), ("nginx", "/usr/sbin/nginx"),
]  # fmt: skip


def write_flags(path: str) -> int:
    """Build outputs are truncated (O_WRONLY|O_CREAT|O_TRUNC), logs appended (O_WRONLY|O_CREAT|O_APPEND)."""
    return 0o1101 if path.startswith("/tmp/build/") else 0o2101


def process_tree() -> list[Process]:
    root = Process(
        1,
        0,
        0,
        "e1",
        "systemd",
        "/usr/lib/systemd/systemd",
        args=["/sbin/init"],
        cwd="/",
        uid=0,
        gid=0,
        user_name="root",
        group_name="root",
    )
    sshd = Process(
        700,
        1,
        0,
        "e700",
        "sshd",
        "/usr/sbin/sshd",
        args=["sshd", "-D"],
        cwd="/",
        uid=0,
        gid=0,
        user_name="root",
        parent=root,
    )
    shell = Process(
        2000,
        700,
        0,
        "e2000",
        "bash",
        "/usr/bin/bash",
        args=["-bash"],
        cwd="/home/alice",
        uid=1000,
        gid=1000,
        user_name="alice",
        parent=sshd,
        tty_nr=34816,
    )
    procs = [root, sshd, shell]
    for i, (name, exe) in enumerate(PROGRAMS):
        procs.append(
            Process(
                3000 + i,
                2000,
                0,
                f"e{3000 + i}",
                name,
                exe,
                args=[name, f"arg{i}", "-v"],
                cwd="/home/alice",
                uid=1000,
                gid=1000,
                user_name="alice",
                parent=shell,
            )
        )
    return procs


def event_mix(n: int, seed: int = 1) -> list[EvalContext]:
    """80% opens, 12% execs, 8% connects, over a small process tree."""
    rnd = random.Random(seed)
    procs = process_tree()
    out: list[EvalContext] = []
    for i in range(n):
        proc = rnd.choice(procs[2:])
        r = rnd.random()
        ts = i * 1000
        if r < 0.80:
            write = rnd.random() < 0.15
            path = rnd.choice(PATHS_WRITE if write else PATHS_READ)
            ev = Event(
                EventType.OPEN,
                ts,
                proc.pid,
                proc.pid,
                proc.uid,
                proc.gid,
                proc.comm,
                path=path,
                open_flags=write_flags(path) if write else 0o2000000,
                ret=3,
            )
            out.append(EvalContext(ev, proc, path, HOST.boot_time_ns + ts))
        elif r < 0.92:
            name, exe = rnd.choice(PROGRAMS)
            ev = Event(
                EventType.EXEC,
                ts,
                proc.pid,
                proc.pid,
                proc.uid,
                proc.gid,
                name,
                filename=exe,
                argv=[name, "-x", "file"],
            )
            out.append(EvalContext(ev, proc, None, HOST.boot_time_ns + ts))
        else:
            proc = rnd.choice(procs[7:])  # programs that talk to the network, not the login shell
            ev = Event(
                EventType.CONNECT,
                ts,
                proc.pid,
                proc.pid,
                proc.uid,
                proc.gid,
                proc.comm,
                fd=4,
                family=AF_INET if rnd.random() < 0.8 else AF_UNIX,
                address="93.184.216.34" if rnd.random() < 0.8 else "/run/dbus/system_bus_socket",
                port=rnd.choice([443, 80, 53, 22]),
                sock_type=1,
                ret=0,
            )
            out.append(EvalContext(ev, proc, None, HOST.boot_time_ns + ts))
    return out


def per_event_ns(ruleset: RuleSet, ctxs: list[EvalContext], repeat: int) -> tuple[float, int]:
    match = ruleset.match
    times = []
    hits = 0
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        for ctx in ctxs:
            if match(ctx):
                hits += 1
        times.append((time.perf_counter_ns() - t0) / len(ctxs))
    return statistics.median(times), hits // repeat


def bench_matching(n_events: int, repeat: int) -> None:
    print("== per-event matching cost (RuleSet.match only, 80% open / 12% exec / 8% connect)")
    ctxs = event_mix(n_events)
    default, label = default_ruleset()
    t0 = time.perf_counter()
    big = load_text(generated_rules(1000), "<generated-1000>").ruleset
    load_s = time.perf_counter() - t0
    assert big is not None
    small = load_text(generated_rules(40), "<generated-40>").ruleset
    assert small is not None
    seq_big = load_text(generated_rules(1000), "<generated-1000>", index_min=10**9).ruleset
    assert seq_big is not None
    rows: list[tuple[str, RuleSet]] = [
        (f"default: {label}", default),
        ("generated 40 rules", small),
        ("generated 1000 rules", big),
        ("generated 1000 rules, index off", seq_big),
    ]
    base = None
    for name, rs in rows:
        ns, hits = per_event_ns(rs, ctxs, repeat)
        if name == "generated 40 rules":
            base = ns
        print(f"  {name:<48} {ns:8.0f} ns/event  ({1e9 / ns:>10,.0f} events/s, {hits} events matched)")
        for t in (EventType.OPEN, EventType.EXEC, EventType.CONNECT):
            m = rs.matchers[int(t)]
            print(
                f"      {t.name.lower():<8} {len(m.sequential):>4} rules checked in sequence, "
                f"{len(m.indexed):>4} behind indexes"
            )
    big_ns, _ = per_event_ns(big, ctxs, repeat)
    if base:
        print(f"  1000 vs 40 generated rules: {big_ns / base:.2f}x the cost for 25x the rules")
    print(f"  compiling 1000 rules took {load_s:.2f} s")


# --------------------------------------------------------------------------------------------- replay


def write_capture(path: str, n_events: int, seed: int = 3) -> int:
    """A capture with a bootstrap snapshot and a process tree that forks and execs as it goes."""
    rnd = random.Random(seed)
    header = capture_header("matching", host=HOST.to_dict())
    written = 0
    with CaptureWriter(path, header) as w:
        w.write_facts(ProcFacts(1, 1, 0, "systemd", "/usr/lib/systemd/systemd", "/", ["/sbin/init"], 0, 0))
        w.write_facts(ProcFacts(700, 100, 1, "sshd", "/usr/sbin/sshd", "/", ["sshd", "-D"], 0, 0))
        w.write_facts(
            ProcFacts(2000, 200, 700, "bash", "/usr/bin/bash", "/home/alice", ["-bash"], 1000, 1000)
        )
        w.write_snapshot_end(1 * S)
        live = [2000]
        names: dict[int, str] = {2000: "bash"}
        next_pid = 3000
        ts = 2 * S
        while written < n_events:
            ts += rnd.randint(1000, 20000)
            r = rnd.random()
            pid = rnd.choice(live)
            if r < 0.05 and len(live) < 200:
                child = next_pid
                next_pid += 1
                w.write_event(Event(EventType.FORK, ts, pid, pid, 1000, 1000, "bash", child_pid=child))
                name, exe = rnd.choice(PROGRAMS)
                ts += 1000
                w.write_event(
                    Event(
                        EventType.EXEC,
                        ts,
                        child,
                        child,
                        1000,
                        1000,
                        name,
                        filename=exe,
                        argv=[name, "-c", "true"],
                        argc_total=3,
                    )
                )
                live.append(child)
                names[child] = name
                written += 2
            elif r < 0.07 and len(live) > 20:
                victim = live.pop(rnd.randrange(1, len(live)))
                w.write_event(Event(EventType.EXIT, ts, victim, victim, 1000, 1000, "x"))
                written += 1
            elif r < 0.93:
                write = rnd.random() < 0.15
                path = rnd.choice(PATHS_WRITE if write else PATHS_READ)
                if rnd.random() < 0.3:
                    path = path.rsplit("/", 1)[-1]  # relative to cwd
                w.write_event(
                    Event(
                        EventType.OPEN,
                        ts,
                        pid,
                        pid,
                        1000,
                        1000,
                        "x",
                        path=path,
                        open_flags=write_flags(path) if write else 0,
                        ret=3,
                    )
                )
                written += 1
            else:
                # Network clients connect out; now and then a shell does (an alert, as an attack would).
                if names.get(pid, "bash") == "bash" and rnd.random() > 0.01:
                    pid = rnd.choice([p for p in live if names.get(p, "bash") != "bash"] or [pid])
                w.write_event(
                    Event(
                        EventType.CONNECT,
                        ts,
                        pid,
                        pid,
                        1000,
                        1000,
                        "x",
                        fd=4,
                        family=AF_INET,
                        address="93.184.216.34",
                        port=rnd.choice([443, 443, 80, 53]),
                        sock_type=1,
                    )
                )
                written += 1
    return written


def replay(path: str, ruleset: RuleSet | None) -> tuple[int, int, float]:
    """Decode → table → (match → render alerts). Returns (events, alerts, seconds)."""
    renderer = EcsRenderer(HOST)
    facts = ReplayFacts()
    table = ProcessTable(
        HOST.boot_id,
        facts,
        user_lookup=lambda uid: "alice" if uid == 1000 else "root",
        group_lookup=lambda gid: "alice" if gid == 1000 else "root",
    )
    match: Callable[[EvalContext], list[Any]] | None = ruleset.match if ruleset is not None else None
    boot = HOST.boot_time_ns
    events = alerts = 0
    out = bytearray()
    t0 = time.perf_counter()
    with CaptureReader(path) as reader:
        bootstrapped = False
        for item in reader:
            if isinstance(item, Event):
                if not bootstrapped:
                    table.bootstrap()
                    bootstrapped = True
                events += 1
                proc = table.apply(item)
                if match is None:
                    continue
                etype = item.type
                resolved = None
                if etype is EventType.OPEN and proc is not None:
                    resolved = table.resolve_path(proc, item.dirfd, item.path)
                ctx = EvalContext(item, proc, resolved, boot + item.ts_ns)
                hits = match(ctx)
                for rule in hits:
                    doc = renderer.event_doc(item, proc, resolved)
                    doc["event"]["kind"] = "alert"
                    text, fields = ruleset.output(rule, ctx)  # type: ignore[union-attr]
                    doc["message"] = text
                    doc["rule"] = {"name": rule.name}
                    doc["sentinel"]["output_fields"] = fields
                    out += dumps(doc)
                    alerts += 1
                if len(out) > 1 << 20:
                    out.clear()
            elif isinstance(item, ProcFacts):
                facts.feed(item)
            elif type(item).__name__ == "SnapshotEnd" and not bootstrapped:
                table.bootstrap()
                bootstrapped = True
    return events, alerts, time.perf_counter() - t0


def bench_replay(n_events: int) -> None:
    print(f"== replay throughput ({n_events:,} synthetic events: decode -> table -> match -> render alerts)")
    default, label = default_ruleset()
    big = load_text(generated_rules(1000), "<generated-1000>").ruleset
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.capture")
        n = write_capture(path, n_events)
        size = os.path.getsize(path)
        print(f"  capture: {n:,} events, {size / 1e6:.1f} MB")
        for name, rs in (("no rules (decode + table only)", None), (f"default: {label}", default),
                         ("generated 1000 rules", big)):  # fmt: skip
            best = None
            for _ in range(2):
                events, alerts, secs = replay(path, rs)
                best = secs if best is None or secs < best else best
            assert best is not None
            print(f"  {name:<48} {events / best:>10,.0f} events/s  ({alerts} alerts, {best:.2f} s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000, help="events in the synthetic capture")
    ap.add_argument("--quick", action="store_true", help="smaller runs (a rough check)")
    args = ap.parse_args()
    n_match, repeat, n_replay = (20_000, 3, 30_000) if args.quick else (50_000, 5, args.events)
    bench_matching(n_match, repeat)
    bench_replay(n_replay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
