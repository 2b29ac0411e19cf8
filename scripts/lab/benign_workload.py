#!/usr/bin/env python3
"""Benign workload of a small Linux server, for training and evaluating anomaly models (loopback only).

A web server (``php-fpm``, as www-data) and a database (``postgres``, as nobody) run under the lab root
(/srv/sentinel-lab, or $SENTINEL_LAB_ROOT): the ones ``lab.py up`` keeps running, else started here for the
run. Clients request pages over loopback HTTP (Python and curl), the web tier queries the database, a report
job connects to the database, cron-like jobs run on their periods (health check, log rotation, backups, disk
and package checks), and now and then an admin session (interactive bash) runs the usual tools: ps, grep,
tail, git, ss, dpkg, apt-cache, python3. Nothing here spawns a shell from a service, reaches beyond
127.0.0.1 or installs anything. Choices are drawn from ``--seed``. A lab tree this run created is removed at
the end (``--keep`` leaves it); one kept up by ``lab.py up`` is left to ``lab.py down``.

    python3 scripts/lab/benign_workload.py --duration 300 [--seed 0] [--rate 1.0]

Progress goes to stderr every 30 s. Exit codes: 0 done, 1 a service failed, 2 bad usage, 130 interrupted
(cleaned up either way).

For benchmarks only, ``--novelty-trigger PATH`` (off by default) lets ``novelty.py`` ask for one
database-report job with one new behaviour: when a symlink appears at PATH, its target (``connect:PORT`` or
``exec:nproc``) is given to that job once, in ``lab.NOVELTY_ENV``, and ``PATH.done`` is made a symlink to
"PID TICKS" of the job's shell. Symlinks are read and made without opening a file, so the workload itself
shows nothing new.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab

# (period in seconds, command run with /bin/sh -c): like /etc/cron.d entries, independent of --rate.
CRON: tuple[tuple[float, str], ...] = (
    (15, "curl -fsS -o /dev/null http://127.0.0.1:{web}/health || logger -t lab-monitor 'web check failed'"),
    (30, "date -Is >> {root}/log/heartbeat.log"),
    (60, "python3 {root}/jobs/dbreport.py {root} {db}"),
    (60, "du -sh {root}/www {root}/data {root}/log > {root}/reports/du.txt"),
    (60, "df -h / > /dev/null; free -m > /dev/null; uptime >> {root}/log/load.log"),
    (90, "awk '{{print $7}}' {root}/log/access.log | sort | uniq -c | sort -rn | head -5"
         " > {root}/reports/top-pages.txt"),
    (120, "cd {root}/log && cp access.log access.log.1 && : > access.log && gzip -f access.log.1"
          " && find {root}/log -name '*.gz' -mmin +10 -delete"),
    (120, "sha256sum {root}/conf/* > {root}/reports/conf.sha256"),
    (180, "tar czf {root}/backup/www-$(date +%H%M%S).tgz -C {root} www conf"
          " && ls -1t {root}/backup | tail -n +4 | while read f; do rm -f {root}/backup/$f; done"),
    (240, "dpkg -l | grep -c '^ii' > /dev/null; apt-cache policy bash openssl > /dev/null"),
    (300, "find /tmp /var/tmp -maxdepth 1 -type f -mtime +7 > /dev/null;"
          " logger -t lab-cron 'tmp check done'"),
)  # fmt: skip

# What an administrator types in a session; commands whose program is missing on this host are left out.
ADMIN: tuple[str, ...] = (
    "uptime",
    "free -m",
    "df -h",
    "w",
    "who",
    "id",
    "hostname",
    "uname -r",
    "date",
    "ps aux --sort=-%cpu | head -5",
    "ps -ef | grep -v grep | grep php-fpm",
    "top -bn1 | head -12",
    "cat /etc/os-release | head -3",
    "cat {root}/conf/site.ini",
    "sed -n '1,5p' {root}/conf/site.ini",
    "tail -n 20 {root}/log/access.log",
    "tail -n 5 {root}/log/postgres.log",
    "grep -c ' 200 ' {root}/log/access.log",
    "grep -i error {root}/log/*.log | tail -3",
    "wc -l {root}/log/access.log",
    "ls -la {root}/www",
    "ls -lt {root}/backup",
    "du -sh {root}/*",
    "stat {root}/conf/site.ini",
    "find {root}/www -newer {root}/conf/site.ini -type f | head",
    "git -C {root}/repo status --short",
    "git -C {root}/repo log --oneline -5",
    "git -C {root}/repo diff --stat",
    "ss -tln",
    "ip -br addr",
    "dpkg -l | grep -i python3 | head -3",
    "apt-cache policy curl",
    "python3 -m json.tool {root}/conf/app.json",
    "python3 -c 'import platform; print(platform.python_version())'",
    "python3 {root}/jobs/dbreport.py {root} {db} --summary",
    "curl -sI http://127.0.0.1:{web}/",
    "cat {root}/reports/top-pages.txt",
    "tar tzf $(ls -1t {root}/backup/*.tgz | head -1) | head -5",
    "cp {root}/conf/site.ini {root}/conf/site.ini.bak",
)
DEPLOY = (  # rarer: publish a page from the site repository
    "cd {root}/repo && cp ../www/page{n}.html . && git add -A"
    " && git -c user.name=admin -c user.email=admin@lab.invalid commit -qm 'update page {n}' || true"
)
NOVELTY_POLL_S = 0.5  # how often --novelty-trigger is looked at (a readlink, no file is opened)
PAGES = (
    ["/", "/index.php", "/products.php", "/static/app.css", "/static/app.js", "/static/logo.png",
     "/favicon.ico"] + [f"/page{i}.html" for i in range(8)]
)  # fmt: skip


def available(cmd: str) -> bool:
    """Every program the command line starts exists here (first word of each pipeline stage)."""
    shell_words = {"cd", ":", "true", "while", "read", "do", "done"}
    for stage in cmd.replace("&&", "|").replace("||", "|").replace(";", "|").split("|"):
        words = stage.split()
        if words and words[0] not in shell_words and shutil.which(words[0]) is None:
            return False
    return True


class Workload:
    """The scheduler: one heap of due activities, run from this process (the lab's 'cron' and clients)."""

    def __init__(self, root: Path, rnd: random.Random, rate: float) -> None:
        self.root = root
        self.rnd = rnd
        self.rate = rate
        self.fmt = {"root": str(root), "web": lab.WEB_PORT, "db": lab.DB_PORT}
        self.counts = {"web": 0, "web_errors": 0, "db": 0, "cron": 0, "admin_sessions": 0, "admin_cmds": 0}
        self.children: list[subprocess.Popen[bytes]] = []
        self.session: threading.Thread | None = None
        self.admin = [c for c in ADMIN if available(c.format(**self.fmt))]
        self.cron = [(p, c) for p, c in CRON if available(c.format(**self.fmt))]

    def schedule(self, start: float) -> list[tuple[float, int, str, int]]:
        heap: list[tuple[float, int, str, int]] = []
        seq = 0
        for i, (period, _) in enumerate(self.cron):
            heap.append((start + self.rnd.uniform(1.0, period), seq, "cron", i))
            seq += 1
        heap += [(start + 0.5, seq, "web", 0), (start + 1.0, seq + 1, "db", 0),
                 (start + self.rnd.uniform(5, 20), seq + 2, "admin", 0)]  # fmt: skip
        heapq.heapify(heap)
        return heap

    def next_time(self, kind: str, index: int, now: float) -> float:
        if kind == "cron":
            period = self.cron[index][0]
            return now + period * self.rnd.uniform(0.95, 1.05)
        mean_gap = {"web": 0.25, "db": 1.0, "admin": 60.0}[kind] / self.rate
        return now + self.rnd.expovariate(1.0 / mean_gap)

    def web(self) -> None:
        r = self.rnd.random()
        if r < 0.2:
            path = f"/app?id={self.rnd.randint(1, 500)}"
        elif r < 0.3:
            path = f"/products.php?id={self.rnd.randint(1, 50)}"
        elif r < 0.33:
            path = "/health"
        else:
            path = self.rnd.choice(PAGES)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{lab.WEB_PORT}{path}", timeout=5) as resp:
                resp.read()
        except urllib.error.HTTPError:
            pass  # a 404 is an ordinary answer
        except OSError:
            self.counts["web_errors"] += 1
        self.counts["web"] += 1

    def db(self) -> None:
        """The application's own database connection (a worker's query)."""
        try:
            with socket.create_connection(("127.0.0.1", lab.DB_PORT), timeout=5) as s:
                s.sendall(f"SELECT * FROM orders WHERE id={self.rnd.randint(1, 1000)}\n".encode())
                s.recv(100)
        except OSError:
            self.counts["web_errors"] += 1
        self.counts["db"] += 1

    def spawn(
        self, argv: list[str], env: dict[str, str], stdin: int | None = subprocess.DEVNULL
    ) -> subprocess.Popen[bytes]:
        quiet = subprocess.DEVNULL
        proc = subprocess.Popen(argv, stdin=stdin, stdout=quiet, stderr=quiet, cwd=env["HOME"], env=env)
        self.children.append(proc)
        return proc

    def run_cron(self, index: int) -> None:
        self.spawn(["/bin/sh", "-c", self.cron[index][1].format(**self.fmt)], lab.cron_env())
        self.counts["cron"] += 1

    def admin_session(self) -> None:
        """An interactive bash (as over ssh: it reads the admin's .bashrc) fed one command at a time with
        typing pauses, in a thread; one session at a time."""
        if self.session is not None and self.session.is_alive():
            return
        n = self.rnd.randint(2, 7)
        cmds = [self.rnd.choice(self.admin).format(**self.fmt) for _ in range(n)]
        if self.rnd.random() < 0.1:
            cmds.append(DEPLOY.format(n=self.rnd.randrange(8), **self.fmt))
        pauses = [self.rnd.uniform(0.3, 4.0) for _ in cmds]
        self.counts["admin_sessions"] += 1
        self.counts["admin_cmds"] += len(cmds)
        proc = self.spawn(["/bin/bash", "-i"], lab.admin_env(), stdin=subprocess.PIPE)

        def feed() -> None:
            assert proc.stdin is not None
            try:
                for cmd, pause in zip(cmds, pauses, strict=True):
                    time.sleep(pause)
                    proc.stdin.write(cmd.encode() + b"\n")
                    proc.stdin.flush()
                proc.stdin.write(b"exit\n")
                proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass

        self.session = threading.Thread(target=feed, daemon=True)
        self.session.start()

    def novelty_job(self, spec: str) -> tuple[int, int] | None:
        """Run the database-report job now, exactly as its cron entry does, with ``spec`` in its environment
        (one new behaviour; see ``lab.NOVELTY_ENV``). Returns (pid, boot-time ticks before the start)."""
        jobs = [cmd for _, cmd in self.cron if "dbreport.py" in cmd]
        if not jobs:
            return None
        ticks = time.clock_gettime_ns(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK") // 1_000_000_000
        env = {**lab.cron_env(), lab.NOVELTY_ENV: spec}
        proc = self.spawn(["/bin/sh", "-c", jobs[0].format(**self.fmt)], env)
        return proc.pid, ticks

    def reap(self) -> None:
        self.children = [c for c in self.children if c.poll() is None]

    def finish(self, timeout: float = 20.0) -> None:
        """Let running jobs end (they are short), then kill what is left."""
        deadline = time.monotonic() + timeout
        if self.session is not None:
            self.session.join(max(0.0, deadline - time.monotonic()))
        for c in self.children:
            try:
                c.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()


def prepare_repo(root: Path) -> None:
    """The site's git repository, with fixed commit dates so it is the same repository on every run."""
    repo = root / "repo"
    if (repo / ".git").exists():
        return
    repo.mkdir(parents=True, exist_ok=True)
    date = "2026-01-01T00:00:00Z"
    env = {**os.environ, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    ident = ["-c", "user.name=admin", "-c", "user.email=admin@lab.invalid"]
    for name in ("index.php", "products.php"):
        shutil.copy(root / "www" / name, repo / name)
    steps = (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", *ident, "commit", "-qm", "site"],
    )
    for cmd in steps:
        subprocess.run(cmd, cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL)


def check_novelty_trigger(trigger: Path, work: Workload, log: Callable[[str], None]) -> None:
    """One novelty job per symlink at ``trigger`` (its target names it); answered in ``trigger``.done."""
    try:
        spec = os.readlink(trigger)
    except OSError:
        return  # none asked for (the usual case)
    with contextlib.suppress(OSError):
        os.unlink(trigger)
    port = spec.removeprefix("connect:")
    valid_port = spec.startswith("connect:") and port.isdigit() and 0 < int(port) < 65536
    if spec != "exec:nproc" and not valid_port:
        log(f"novelty trigger {spec!r} ignored (expected connect:PORT or exec:nproc)")
        return
    started = work.novelty_job(spec)
    if started is None:
        log("novelty trigger ignored: the database-report job does not run on this host")
        return
    pid, ticks = started
    with contextlib.suppress(OSError):
        os.symlink(f"{pid} {ticks}", f"{trigger}.done")
    log(f"novelty job pid={pid} {lab.NOVELTY_ENV}={spec}")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Exit codes: 0 done, 1 a service failed, 2 bad usage, 130 interrupted.",
    )
    ap.add_argument("--duration", type=float, default=300.0, metavar="S", help="seconds to run (default 300)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument(
        "--rate",
        type=float,
        default=1.0,
        help="client and admin activity multiplier; cron periods stay fixed",
    )
    ap.add_argument("--keep", action="store_true", help="leave the lab tree in place at the end")
    ap.add_argument(
        "--novelty-trigger",
        type=Path,
        metavar="PATH",
        help="benchmarks only: run the database-report job once with a novelty when a symlink appears at "
        f"PATH (novelty.py uses {lab.NOVELTY_TRIGGER}); default off",
    )
    args = ap.parse_args()
    if args.duration <= 0 or args.rate <= 0:
        ap.error("--duration and --rate must be positive")
    signal.signal(signal.SIGTERM, _terminate)
    rnd = random.Random(args.seed)
    root = lab.ROOT
    owned = not root.exists()  # removed at the end only if this run created it or ran the services in it
    log = lambda msg: print(f"benign_workload: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    services: list[subprocess.Popen[bytes]] = []
    work: Workload | None = None
    rc = 0
    try:
        lab.prepare(root)
        prepare_repo(root)
        if lab.daemons_running(root):  # `lab.py up`: long-running services, left running at the end
            log(f"using the running lab services (php-fpm :{lab.WEB_PORT}, postgres :{lab.DB_PORT})")
        else:
            services = lab.start_services(root)
            owned = True
            log(f"services up (php-fpm :{lab.WEB_PORT}, postgres :{lab.DB_PORT}) under {root}")
        work = Workload(root, rnd, args.rate)
        log(f"{len(work.cron)} cron jobs, {len(work.admin)} admin commands; running {args.duration:.0f}s")
        start = time.monotonic()
        end = start + args.duration
        next_report = start + 30
        next_trigger = start if args.novelty_trigger is not None else float("inf")
        heap = work.schedule(start)
        seq = len(heap)
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_report:
                next_report += 30
                work.reap()
                log(f"{now - start:.0f}/{args.duration:.0f}s {work.counts}")
                dead = [port for port in (lab.WEB_PORT, lab.DB_PORT) if not lab.port_open(port)]
                if dead:
                    log(f"a lab service stopped answering (ports {dead})")
                    rc = 1
                    break
            if now >= next_trigger:
                next_trigger = now + NOVELTY_POLL_S
                check_novelty_trigger(args.novelty_trigger, work, log)
            due, _, kind, index = heap[0]
            if due > now:
                time.sleep(min(due, end, next_report, next_trigger) - now)
                continue
            heapq.heappop(heap)
            if kind == "web":
                work.web()
            elif kind == "db":
                work.db()
            elif kind == "cron":
                work.run_cron(index)
            else:
                work.admin_session()
            heapq.heappush(heap, (work.next_time(kind, index, time.monotonic()), seq, kind, index))
            seq += 1
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        rc = 130
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        log(f"failed: {exc}")
        rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if work is not None:
            work.finish()
        lab.stop(services)
        if owned and not args.keep:
            lab.remove(root)
    if work is not None:
        log(f"done {work.counts}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
