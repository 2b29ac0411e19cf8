#!/usr/bin/env python3
"""Benign workload of a small Linux server, for training and evaluating anomaly models (loopback only).

A web server (``php-fpm``) and a database (``postgres``) run under the lab root; clients request pages,
the web tier queries the database, cron-like jobs rotate and archive logs and check disk use, and an admin
session now and then runs the usual tools (git, grep, ps, dpkg, apt-cache). Everything is randomised from
``--seed`` and removed at the end (``--keep`` leaves the lab tree).

    python3 scripts/lab/benign_workload.py --duration 300 [--seed 0] [--rate 1.0]

Exit codes: 0 done, 1 a service failed to start, 2 bad usage.
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab

CRON_JOBS = [
    "du -sh {root}/log {root}/data > /dev/null",
    "find {root}/log -name '*.log' -size +1k > /dev/null",
    "cd {root} && tar czf backup/www-$(date +%H).tgz www && ls -la backup > /dev/null",
    "gzip -kf {root}/log/access.log && rm -f {root}/log/access.log.gz",
    "date >> {root}/log/cron.log; df -h / >> {root}/log/cron.log",
    "logger -t lab-cron heartbeat",
    "sha256sum {root}/conf/site.ini > /dev/null",
]
ADMIN = [
    ["ps", "aux"],
    ["uptime"],
    ["grep", "-c", "GET", "{root}/log/access.log"],
    ["tail", "-n", "5", "{root}/log/cron.log"],
    ["dpkg", "-l", "coreutils"],
    ["apt-cache", "policy", "bash"],
    ["git", "-C", "{root}/repo", "status", "--short"],
    ["git", "-C", "{root}/repo", "log", "--oneline", "-3"],
    ["python3", "-c", "import json, sys; print(json.dumps({{'ok': True}}))"],
    ["cat", "/etc/hostname"],
    ["ls", "-la", "{root}/www"],
    ["id"],
]


def web_request(rnd: random.Random) -> None:
    page = rnd.choice(["", "index.html"] + [f"page{i}.html" for i in range(8)])
    with urllib.request.urlopen(f"http://127.0.0.1:{lab.WEB_PORT}/{page}", timeout=5) as r:
        r.read()


def db_query(rnd: random.Random) -> None:
    with socket.create_connection(("127.0.0.1", lab.DB_PORT), timeout=5) as s:
        s.sendall(f"SELECT {rnd.randint(1, 100)}\n".encode())
        s.recv(100)


def run(cmd: list[str] | str, root: Path) -> None:
    if isinstance(cmd, str):
        subprocess.run(["/bin/sh", "-c", cmd.format(root=root)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)  # fmt: skip
    else:
        argv = [c.format(root=root) for c in cmd]
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def prepare_repo(root: Path) -> None:
    repo = root / "repo"
    if (repo / ".git").exists():
        return
    repo.mkdir(exist_ok=True)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "lab@example.org"],
                ["git", "config", "user.name", "lab"]):  # fmt: skip
        subprocess.run(cmd, cwd=repo, check=True)
    (repo / "README").write_text("lab\n")
    subprocess.run(["git", "add", "README"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=repo, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=300.0, metavar="S", help="seconds to run (default 300)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--rate", type=float, default=1.0, help="activity multiplier (default 1.0)")
    ap.add_argument("--keep", action="store_true", help="leave the lab tree and services' files in place")
    args = ap.parse_args()
    if args.duration <= 0 or args.rate <= 0:
        ap.error("--duration and --rate must be positive")
    rnd = random.Random(args.seed)
    root = lab.ROOT
    lab.prepare(root)
    prepare_repo(root)
    try:
        services = lab.start_services(root)
    except RuntimeError as exc:
        print(f"benign_workload: {exc}", file=sys.stderr)
        return 1
    start = time.monotonic()
    end = start + args.duration
    next_report = start + 30
    counts = {"web": 0, "db": 0, "cron": 0, "admin": 0}
    try:
        while time.monotonic() < end:
            r = rnd.random()
            if r < 0.55:
                web_request(rnd)
                counts["web"] += 1
            elif r < 0.8:
                db_query(rnd)
                counts["db"] += 1
            elif r < 0.93:
                run(rnd.choice(CRON_JOBS), root)
                counts["cron"] += 1
            else:
                run(rnd.choice(ADMIN), root)
                counts["admin"] += 1
            time.sleep(rnd.expovariate(8.0 * args.rate))
            if time.monotonic() >= next_report:
                next_report += 30
                done = time.monotonic() - start
                print(
                    f"benign_workload: {done:.0f}/{args.duration:.0f}s {counts}", file=sys.stderr, flush=True
                )
    finally:
        lab.stop(services)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"benign_workload: done {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
