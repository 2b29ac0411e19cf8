#!/usr/bin/env python3
"""Alert noise of a busy developer/CI host under `sentinel run` with its defaults, folding on and off.

A driver shell runs build-and-test cycles — each: a fresh build directory in /tmp, a C program built by make
and its test run, a "unit test" binary copied out and run from a fresh shell, a Python venv's interpreter,
git (init, commit, log), package-manager queries (dpkg -l, apt-cache), and little shells (id, uname, ls).
A cycle every 15 s is an hour of such a host in 240 cycles; they run back to back, so the default 60 cycles
(a quarter hour of activity) take a few minutes and ``--hour`` (240) about four times that.

Two agents watch the same run (the same kernel events): one with the defaults (aggregation by behaviour,
60 s windows, the per-rule rate limit), one with `--aggregation-window 0` (every match a line, as with
folding off). Each writes its alerts to a file; only alerts whose process is the driver or descends from it
are counted (the host is shared). Printed: alert lines per rule and per severity for both.

Then the same again with attack scenarios interleaved every --attack-every cycles (a copied cat reading
/etc/shadow, a shell connecting to a loopback listener, a binary written into /usr/bin, a program run from
/dev/shm, a file written in /etc/cron.d): every scenario's first occurrence must be among the folded lines
(printed per scenario with the delay between the folding-off agent's first line and the folded agent's).

Per hour: with folding off every occurrence is a line, so lines scale with the cycles (x 240 / cycles).
Folded lines do not: the run is compressed, and windows are event time. A behaviour that repeats every
15 s for a real hour writes its first alert and summaries at 1, 3, 7, 15 and 31 minutes (windows double):
6 lines, or 17 for a writable place's streak (`/tmp/`: its windows stop growing at 4 min); so the folded
per-hour figure printed is 6 or 17 per streak of the run (its first lines, or its summaries' distinct keys
when more) — an upper bound for a steady hour, as the run's streaks would be fewer,
not more, spread over real time.

    .venv/bin/python benchmarks/bench_noise.py [--hour | --cycles N] [--attack-every K] [--no-attacks]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from _live import Agent

CYCLE = r"""
b=$(mktemp -d /tmp/bench-noise-build.XXXXXX)
cd "$b"
printf '#include <stdio.h>\nint main(int c, char **v) { printf("%%d\\n", c); return 0; }\n' > main.c
printf 'app: main.c\n\tcc -O1 -o app main.c\ntest: app\n\t./app --selftest > /dev/null\n' > Makefile
make -s test
cp app "unit-test-$i" && bash -c "'$b/unit-test-$i' --case $i > /dev/null"
"$VENV/bin/python" -c 'import json, sys; json.dumps(sys.argv)' "$i"
git init -q repo && git -C repo -c user.email=ci@example.org -c user.name=ci commit -q --allow-empty -m "b$i"
git -C repo log --oneline > /dev/null
dpkg -l > /dev/null
apt-cache policy bash > /dev/null
sh -c 'id > /dev/null; uname -a > /dev/null; ls /etc > /dev/null'
cd / && rm -rf "$b"
"""

HOUR_CYCLES = 240  # a build-and-test cycle every 15 s
LINES_PER_STREAK_HOUR = 6  # the first alert + summaries at 1, 3, 7, 15, 31 min (growing windows)
LINES_PER_PLACE_STREAK_HOUR = 17  # a writable place's: 1, 3, 7, then every 4 min to 59 (windows capped)

# scenario → (shell commands, the rule whose first occurrence must arrive)
ATTACKS = {
    "shadow read": (
        'cp /bin/cat "$W/cat" && "$W/cat" /etc/shadow > /dev/null',
        "Shadow File Read By Unexpected Program",
    ),
    "reverse shell": (
        "bash -c 'exec 3<>/dev/tcp/127.0.0.1/'$PORT'; echo hi >&3' || true",
        "Shell Process Connects Out",
    ),
    "binary in /usr/bin": (
        'cp /bin/true "/usr/bin/sentinel-bench-$i" && rm -f "/usr/bin/sentinel-bench-$i"',
        "Write Below System Binary Directory",
    ),
    "exec from /dev/shm": (
        'cp /bin/true "/dev/shm/sentinel-bench-$i" && "/dev/shm/sentinel-bench-$i"; '
        'rm -f "/dev/shm/sentinel-bench-$i"',
        "Program Run From Shared Memory",
    ),
    "cron.d write": (
        'echo "# bench" > "/etc/cron.d/sentinel-bench-$i"; rm -f "/etc/cron.d/sentinel-bench-$i"',
        "Cron Configuration Written",
    ),
}


def driver_script(cycles: int, attack_every: int) -> str:
    """The whole workload as one shell: the root of the process tree whose alerts are counted."""
    lines = ["set -e", "for i in $(seq 1 $CYCLES); do", CYCLE]
    if attack_every > 0:
        lines.append(f"if [ $((i % {attack_every})) -eq 0 ]; then")
        lines += [f"  {cmd}" for cmd, _ in ATTACKS.values()]
        lines.append("fi")
    lines.append("done")
    return "\n".join(lines).replace("$CYCLES", str(cycles))


def listener() -> tuple[socket.socket, int]:
    """A loopback listener that accepts and closes (the reverse shell's other end)."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def read_alerts(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            print(f"bench: a non-JSON alert line in {path}", file=sys.stderr)
    return out


def in_tree(doc: dict[str, Any], root: int) -> bool:
    proc = doc.get("process") or {}
    if proc.get("pid") == root:
        return True
    return any(a.get("pid") == root for a in (doc.get("sentinel") or {}).get("ancestors") or [])


def run_phase(work: Path, venv: Path, cycles: int, attack_every: int) -> dict[str, Any]:
    """Both agents, one driver run; the driver's alerts as each agent wrote them."""
    out = {"on": work / "folded.json", "off": work / "unfolded.json"}
    common = ["--state-dir", str(work / "state-{}"), "--output"]
    agents = {}
    for name, extra in (("on", []), ("off", ["--aggregation-window", "0"])):
        args = [a.replace("{}", name) for a in common] + [f"file:{out[name]}", *extra]
        agents[name] = Agent("run", *args, env={**os.environ, "SENTINEL_CONFIG": str(work / "none.yaml")})
    srv, port = listener()
    scratch = Path(tempfile.mkdtemp(prefix="bench-noise-w.", dir="/tmp"))
    env = {**os.environ, "VENV": str(venv), "PORT": str(port), "W": str(scratch)}
    started = time.monotonic()
    try:
        driver = subprocess.Popen(["bash", "-c", driver_script(cycles, attack_every)], env=env)
        rc = driver.wait()
        elapsed = time.monotonic() - started
        time.sleep(3)  # the last cycles' events through the buffers
    finally:
        srv.close()
        stops = {name: agent.stop() for name, agent in agents.items()}
        shutil.rmtree(scratch, ignore_errors=True)
    if rc != 0:
        sys.exit(f"bench: the workload failed (exit {rc})")
    docs = {name: [d for d in read_alerts(path) if in_tree(d, driver.pid)] for name, path in out.items()}
    return {"elapsed": elapsed, "docs": docs, "stops": stops}


def priority(doc: dict[str, Any]) -> str:
    return str(((doc.get("sentinel") or {}).get("rule") or {}).get("priority", "?")).lower()


def is_place_key(key: bytes) -> bool:
    """A summary's key (as JSON) whose program is a writable place (``/tmp/``), not one program's path."""
    program = (orjson.loads(key) or {}).get("program") if key else None
    return isinstance(program, str) and program.endswith("/")


def report(title: str, phase: dict[str, Any], cycles: int) -> None:
    on, off = phase["docs"]["on"], phase["docs"]["off"]
    scale = HOUR_CYCLES / cycles
    print(f"\n== {title}: {cycles} cycles ({cycles / 4:g} min of activity) ran in {phase['elapsed']:.0f} s")

    def is_summary(d: dict[str, Any]) -> bool:
        return bool((d.get("sentinel") or {}).get("aggregation"))

    off_by = Counter(d["rule"]["name"] for d in off)
    on_by = Counter(d["rule"]["name"] for d in on)
    # Streaks per rule: its first lines, or the distinct keys of its summaries when more (a first line may
    # be another process's on this shared host: the same behaviour, it opened the streak)
    firsts = Counter(d["rule"]["name"] for d in on if not is_summary(d))
    keys: dict[str, set[bytes]] = {}
    for d in on:
        if is_summary(d):
            keys.setdefault(d["rule"]["name"], set()).add(
                orjson.dumps(d["sentinel"]["aggregation"].get("key"))
            )
    streaks = Counter({rule: max(firsts[rule], len(keys.get(rule, ()))) for rule in on_by})
    places = Counter({rule: sum(1 for k in keys.get(rule, ()) if is_place_key(k)) for rule in on_by})

    def per_hour(rule: str) -> int:
        programs = streaks[rule] - places[rule]
        return programs * LINES_PER_STREAK_HOUR + places[rule] * LINES_PER_PLACE_STREAK_HOUR
    print(f"{'rule':52} {'off: run':>8} {'off: /h':>8} {'on: run':>8} {'on: /h':>7}")
    for rule in sorted(set(off_by) | set(on_by), key=lambda r: -off_by[r]):
        print(
            f"{rule[:52]:52} {off_by[rule]:8d} {off_by[rule] * scale:8.0f} {on_by[rule]:8d} "
            f"{per_hour(rule):7d}"
        )
    prio_off = Counter(map(priority, off))
    prio_first: Counter[str] = Counter()
    for rule in streaks:
        prio_first[next(priority(d) for d in on if d["rule"]["name"] == rule)] += per_hour(rule)
    print(
        "per hour by severity, folding off -> default: "
        + ", ".join(
            f"{p} {prio_off[p] * scale:.0f} -> {prio_first[p]}"
            for p in sorted(set(prio_off) | set(prio_first))
        )
    )
    n_first, n_streaks = sum(firsts.values()), sum(streaks.values())
    print(
        f"total: folding off {len(off)} lines ({len(off) * scale:.0f}/h); default {len(on)} lines "
        f"({n_first} first, {len(on) - n_first} summaries; {n_streaks} streaks: at most "
        f"{sum(per_hour(r) for r in streaks)}/h)"
    )
    agg = (phase["stops"]["on"] or {}).get("aggregation") or {}
    if agg:
        print(f"folding agent's counters (whole host): {agg}")


def check_attacks(phase: dict[str, Any]) -> bool:
    on, off = phase["docs"]["on"], phase["docs"]["off"]
    ok = True
    print(f"{'scenario':22} {'rule':45} {'off':>4} {'on':>4} {'first line':>10}")
    for scenario, (_, rule) in ATTACKS.items():
        n_off = sum(1 for d in off if d["rule"]["name"] == rule)
        firsts = [
            d for d in on if d["rule"]["name"] == rule and not (d.get("sentinel") or {}).get("aggregation")
        ]
        n_on = sum(1 for d in on if d["rule"]["name"] == rule)
        ok &= bool(firsts)
        print(f"{scenario:22} {rule[:45]:45} {n_off:4d} {n_on:4d} {'yes' if firsts else 'MISSING':>10}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=60, help="build-and-test cycles per phase (60: 15 min)")
    ap.add_argument("--hour", action="store_true", help="240 cycles per phase: a full hour of activity")
    ap.add_argument("--attack-every", type=int, default=0, help="attacks every K cycles (default cycles/4)")
    ap.add_argument("--no-attacks", action="store_true", help="the noise phase only")
    ap.add_argument("--keep", action="store_true", help="keep the alert files (their directory is printed)")
    args = ap.parse_args()
    if args.hour:
        args.cycles = HOUR_CYCLES
    if os.geteuid() != 0:
        sys.exit("bench: run as root (the agent loads eBPF probes)")
    work = Path(tempfile.mkdtemp(prefix="bench-noise-"))
    try:
        return run_all(args, work)
    finally:
        if args.keep:
            print(f"alert files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_all(args: argparse.Namespace, work: Path) -> int:
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (work / "noise").mkdir()
    noise = run_phase(work / "noise", venv, args.cycles, 0)
    report("busy developer/CI host", noise, args.cycles)
    if args.no_attacks:
        return 0
    (work / "attacks").mkdir()
    attack_every = args.attack_every or max(1, args.cycles // 4)
    attacks = run_phase(work / "attacks", venv, args.cycles, attack_every)
    report("the same with attacks interleaved", attacks, args.cycles)
    ok = check_attacks(attacks)
    print("every attack's first occurrence arrived" if ok else "an attack's first occurrence is MISSING")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
