#!/usr/bin/env python3
"""Novel behaviour on the lab host: what no rule names and the benign workload never does (loopback only).

Attacks (``attacks.py``) are what rules are written for; these are the other half of an anomaly model's job:
an ordinary thing done by a process that never does it. The web service (``php-fpm``) starting a program it
never started, reading or writing where it never did, connecting to a new port; the database (``postgres``)
starting a child or connecting out; a scheduled job doing one new thing; a service program running as
another account. Each is harmless and cleans up after itself; listeners are opened here on 127.0.0.1 and
closed afterwards.

The services do the work themselves through the lab's novelty hooks (``lab.NOVELTY_PATH``,
``lab.NOVELTY_DB_PREFIX``), so the acting process is the long-running daemon, not a helper. Each scenario
reports its root: the new process (pid and start time, as ``attacks.py`` does), or for a novelty done by a
long-running service itself, the service's pid and the time window. The scheduled-job scenarios need a
benign workload started with ``--novelty-trigger`` (``lab.NOVELTY_TRIGGER``).

    python3 scripts/lab/novelty.py --list
    python3 scripts/lab/novelty.py run web_runs_uname --sidecar /var/tmp/web_runs_uname.novelty.json

Needs the lab services running (``lab.py up``, or a running workload's). Exit codes: 0 the novelty ran,
1 it could not run (no service, no workload, timeout), 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab

TIMEOUT_S = 30.0
PICKUP_TIMEOUT_S = 10.0  # the workload looks at its trigger twice a second
CLK_TCK = lab.CLK_TCK
# Ports nothing in the lab uses (an ephemeral one when taken); none is a port rules single out.
WEB_NEW_PORT = 18443
DB_NEW_PORT = 15433
JOB_NEW_PORT = 18444
COPYRIGHT_CANDIDATES = (
    "/usr/share/doc/bash/copyright",
    "/usr/share/doc/coreutils/copyright",
    "/usr/share/common-licenses/GPL-3",
)
DPKG_STATUS = "/var/lib/dpkg/status"

KINDS: tuple[str, ...] = (
    "service_new_program",
    "service_new_read",
    "service_new_write",
    "service_new_destination",
    "job_new_behaviour",
    "db_child_process",
    "service_new_user",
)


@dataclass(slots=True)
class Performed:
    """One novelty as done: its root process and window, and what its novel event names."""

    scenario: str
    kind: str
    pid: int  # the root: the new process, or the long-running service that acted itself
    start_ticks: int  # the root's start (/proc/PID/stat starttime, clock ticks since boot)
    by_service: str | None  # "php-fpm"/"postgres" when that service's own process acted (pid is the daemon)
    started: float  # wall clock (time.time()) just before the novelty
    ended: float  # wall clock once it is over
    objects: dict[str, Any] = field(default_factory=dict)  # path, port, executable the novel event names
    note: str = ""


class ScenarioError(Exception):
    """The novelty could not be done (no service, no workload to pick up the job trigger, a timeout)."""


class Lab:
    """The running lab as the scenarios need it, looked up once by :meth:`load`.

    A harness calls ``load`` before an agent watches: finding the services' pids and start times reads
    files, and the first request warms the HTTP client's lazy imports. Those are the harness's doings, not
    the novelty's, and should not show up in the window a novelty is judged in.
    """

    def __init__(self, root: Path = lab.ROOT, trigger: Path = lab.NOVELTY_TRIGGER) -> None:
        self.root = root
        self.trigger = trigger
        self.services: dict[str, tuple[int, int]] = {}  # name → (pid, start ticks)

    def load(self) -> None:
        """Find the services (pid files of ``lab.py up``, else by executable) and warm up the clients."""
        for name in lab.SERVICE_USERS:
            pid = _service_pid(name, self.root)
            if pid is None:
                raise ScenarioError(f"the lab service {name} is not running (lab.py up)")
            self.services[name] = (pid, lab.start_ticks_of(pid, 0))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{lab.WEB_PORT}/health", timeout=TIMEOUT_S) as r:
                r.read()
            with socket.create_connection(("127.0.0.1", lab.DB_PORT), timeout=TIMEOUT_S) as s:
                s.sendall(b"SELECT * FROM orders WHERE id=1\n")
                s.recv(100)
        except OSError as exc:
            raise ScenarioError(f"the lab services do not answer: {exc}") from exc

    def service(self, name: str) -> tuple[int, int]:
        if not self.services:
            self.load()
        return self.services[name]


def _service_pid(name: str, root: Path) -> int | None:
    """The service's pid: its ``lab.py up`` pid file, else a process running the lab's executable."""
    exe = str(root / "bin" / name)
    candidates: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        candidates.append(int(lab.pid_file(name, root).read_text()))
    candidates += sorted(int(d) for d in os.listdir("/proc") if d.isdigit())
    for pid in candidates:
        try:
            if os.readlink(f"/proc/{pid}/exe") == exe:
                return pid
        except OSError:
            continue
    return None


# ------------------------------------------------------------------------------------------------ helpers


def web_novel(op: str, arg: str) -> dict[str, str]:
    """Ask the web service to do one novelty itself; returns its answer's headers (X-Lab-Pid…)."""
    query = urllib.parse.urlencode({"op": op, "arg": arg})
    url = f"http://127.0.0.1:{lab.WEB_PORT}{lab.NOVELTY_PATH}?{query}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            resp.read()
            return dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        raise ScenarioError(f"the web service answered {exc.code}: {exc.read().decode().strip()}") from exc
    except OSError as exc:
        raise ScenarioError(f"the web service did not answer: {exc}") from exc


def db_novel(op: str, arg: str) -> dict[str, int]:
    """Ask the database to do one novelty itself; returns the pid (and ticks) its answer names."""
    try:
        with socket.create_connection(("127.0.0.1", lab.DB_PORT), timeout=TIMEOUT_S) as s:
            s.sendall(f"{lab.NOVELTY_DB_PREFIX} {op} {arg}\n".encode())
            answer = s.makefile("rb").readline().decode().strip()
    except OSError as exc:
        raise ScenarioError(f"the database did not answer: {exc}") from exc
    if not answer.startswith("OK novel "):
        raise ScenarioError(f"the database answered {answer!r}")
    return {k: int(v) for k, _, v in (w.partition("=") for w in answer.split()[2:])}


class Listener:
    """A loopback TCP listener that accepts and closes (the other end of a novel connection)."""

    def __init__(self, port: int) -> None:
        try:
            self.sock = socket.create_server(("127.0.0.1", port))
        except OSError:
            self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@contextlib.contextmanager
def listening(port: int) -> Iterator[Listener]:
    srv = Listener(port)
    try:
        yield srv
    finally:
        srv.close()


@contextlib.contextmanager
def writable_by(directory: Path, user: str) -> Iterator[None]:
    """``directory`` owned by ``user`` for the duration (an upload directory the web service may write to),
    its owner restored after. Without root the services run as us and nothing needs changing."""
    st = directory.stat()
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        account = None
    change = os.geteuid() == 0 and account is not None and st.st_uid != account.pw_uid
    if change:
        assert account is not None
        os.chown(directory, account.pw_uid, st.st_gid)
    try:
        yield
    finally:
        if change:
            os.chown(directory, st.st_uid, st.st_gid)


def _program(name: str) -> str:
    return shutil.which(name, path=lab.PATH) or name


def _service_own(ctx: Lab, scenario: str, kind: str, service: str, act: Callable[[], Any]) -> Performed:
    """A novelty done by the long-running service's own process: the daemon is the root."""
    pid, ticks = ctx.service(service)
    started = time.time()
    act()
    return Performed(scenario, kind, pid, ticks, service, started, time.time())


# ---------------------------------------------------------------------------------------------- scenarios


def web_runs_uname(ctx: Lab) -> Performed:
    """php-fpm starts `uname -a` (a program it never started) itself."""
    return _web_exec(ctx, "web_runs_uname", "uname")


def web_runs_getent(ctx: Lab) -> Performed:
    """php-fpm starts `getent passwd` (a program the host never ran) itself."""
    return _web_exec(ctx, "web_runs_getent", "getent")


def _web_exec(ctx: Lab, scenario: str, program: str) -> Performed:
    ctx.service("php-fpm")
    started = time.time()
    headers = web_novel("exec", program)
    if "X-Lab-Start-Ticks" not in headers:
        raise ScenarioError("the web service did not start the program")
    pid, ticks = int(headers["X-Lab-Pid"]), int(headers["X-Lab-Start-Ticks"])
    objects = {"executable": _program(program)}
    return Performed(scenario, "service_new_program", pid, ticks, None, started, time.time(), objects)


def web_reads_dpkg_status(ctx: Lab) -> Performed:
    """php-fpm reads /var/lib/dpkg/status (a directory it never read from) itself."""
    return _web_read(ctx, "web_reads_dpkg_status", [DPKG_STATUS])


def web_reads_copyright(ctx: Lab) -> Performed:
    """php-fpm reads a package's copyright file under /usr/share (never read by it) itself."""
    return _web_read(ctx, "web_reads_copyright", list(COPYRIGHT_CANDIDATES))


def _web_read(ctx: Lab, scenario: str, candidates: list[str]) -> Performed:
    path = next((p for p in candidates if os.access(p, os.R_OK)), None)
    if path is None:
        raise ScenarioError(f"none of {candidates} exists here")
    done = _service_own(ctx, scenario, "service_new_read", "php-fpm", lambda: web_novel("read", path))
    done.objects = {"path": path}
    return done


def web_writes_upload(ctx: Lab) -> Performed:
    """php-fpm writes a .php file into the docroot's uploads directory (it never writes there), then
    removes it."""
    uploads = ctx.root / "www" / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    with writable_by(uploads, lab.SERVICE_USERS["php-fpm"]):
        return _web_write(ctx, "web_writes_upload", uploads / "lab-novel.php")


def web_writes_var_tmp(ctx: Lab) -> Performed:
    """php-fpm writes a file in /var/tmp (it never writes there), then removes it."""
    return _web_write(ctx, "web_writes_var_tmp", Path(f"/var/tmp/lab-novel-{os.getpid()}.tmp"))


def _web_write(ctx: Lab, scenario: str, target: Path) -> Performed:
    try:
        act = lambda: web_novel("write", str(target))  # noqa: E731
        done = _service_own(ctx, scenario, "service_new_write", "php-fpm", act)
    finally:
        target.unlink(missing_ok=True)  # the service removes it; this is in case it could not
    done.objects = {"path": str(target)}
    return done


def _service_connects(
    ctx: Lab, scenario: str, service: str, port: int, ask: Callable[[str], Any]
) -> Performed:
    """The service connects, itself, to a listener opened here on ``port`` (an ephemeral one if taken)."""
    with listening(port) as srv:
        done = _service_own(ctx, scenario, "service_new_destination", service, lambda: ask(str(srv.port)))
    done.objects = {"port": srv.port}
    return done


def web_connects_new_port(ctx: Lab) -> Performed:
    """php-fpm connects to 127.0.0.1 on a port it never used (a listener opened here)."""
    return _service_connects(ctx, "web_connects_new_port", "php-fpm", WEB_NEW_PORT,
                             lambda port: web_novel("connect", port))  # fmt: skip


def db_connects_new_port(ctx: Lab) -> Performed:
    """postgres connects to 127.0.0.1 on a port (it never connects anywhere; a listener opened here)."""
    return _service_connects(ctx, "db_connects_new_port", "postgres", DB_NEW_PORT,
                             lambda port: db_novel("connect", port))  # fmt: skip


def job_connects_new_port(ctx: Lab) -> Performed:
    """The cron-like database-report job (same command line, same parent) also connects to a new port."""
    with listening(JOB_NEW_PORT) as srv:
        done = _job(ctx, "job_connects_new_port", f"connect:{srv.port}")
        deadline = time.monotonic() + 5
        while srv.accepted == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    done.objects = {"port": srv.port}
    if srv.accepted == 0:
        done.note = "the listener saw no connection"
    return done


def job_runs_new_program(ctx: Lab) -> Performed:
    """The cron-like database-report job (same command line, same parent) also runs `nproc`, new to it."""
    done = _job(ctx, "job_runs_new_program", "exec:nproc")
    done.objects = {"executable": "/usr/bin/nproc"}
    return done


def _job(ctx: Lab, scenario: str, spec: str) -> Performed:
    """Ask the running workload (``--novelty-trigger``) for one database-report job with ``spec``; the job's
    shell is the root."""
    trigger, done = ctx.trigger, Path(f"{ctx.trigger}.done")
    if os.path.lexists(trigger):
        raise ScenarioError(f"{trigger} is already set (another novelty pending?)")
    with contextlib.suppress(FileNotFoundError):
        done.unlink()
    trigger.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    os.symlink(spec, trigger)
    try:
        deadline = time.monotonic() + PICKUP_TIMEOUT_S
        while not os.path.lexists(done):
            if time.monotonic() > deadline:
                raise ScenarioError(
                    f"no workload picked up {trigger} within {PICKUP_TIMEOUT_S:.0f}s "
                    f"(start benign_workload.py with --novelty-trigger {trigger})"
                )
            time.sleep(0.05)
        pid_text, _, ticks_text = os.readlink(done).partition(" ")
        pid = int(pid_text)
        ticks = lab.start_ticks_of(pid, int(ticks_text))  # still there until the workload reaps it
        deadline = time.monotonic() + TIMEOUT_S
        while os.path.exists(f"/proc/{pid}/exe") and time.monotonic() < deadline:  # a zombie has no exe
            time.sleep(0.05)
    finally:
        with contextlib.suppress(FileNotFoundError):
            trigger.unlink()
        with contextlib.suppress(FileNotFoundError):
            done.unlink()
    return Performed(scenario, "job_new_behaviour", pid, ticks, None, started, time.time())


def db_runs_id(ctx: Lab) -> Performed:
    """postgres starts `id` (it never starts a child; id itself is known on the host) itself."""
    return _db_exec(ctx, "db_runs_id", "id")


def db_runs_locale(ctx: Lab) -> Performed:
    """postgres starts `locale` (it never starts a child; the host never ran locale) itself."""
    return _db_exec(ctx, "db_runs_locale", "locale")


def _db_exec(ctx: Lab, scenario: str, program: str) -> Performed:
    ctx.service("postgres")
    started = time.time()
    answer = db_novel("exec", program)
    if "ticks" not in answer:
        raise ScenarioError("the database did not start the program")
    objects = {"executable": _program(program)}
    return Performed(
        scenario, "db_child_process", answer["pid"], answer["ticks"], None, started, time.time(), objects
    )


def web_binary_as_nobody(ctx: Lab) -> Performed:
    """The php-fpm executable runs (`php-fpm -V`) as nobody, an account it never ran as."""
    return _as_user(ctx, "web_binary_as_nobody", "php-fpm", "nobody")


def db_binary_as_www_data(ctx: Lab) -> Performed:
    """The postgres executable runs (`postgres -V`) as www-data, an account it never ran as."""
    return _as_user(ctx, "db_binary_as_www_data", "postgres", "www-data")


def _as_user(ctx: Lab, scenario: str, service: str, user: str) -> Performed:
    exe = ctx.root / "bin" / service
    if os.geteuid() != 0:
        raise ScenarioError("running a program as another account needs root")
    try:
        account = pwd.getpwnam(user)
    except KeyError as exc:
        raise ScenarioError(f"no account {user} here") from exc
    if not os.access(exe, os.X_OK):
        raise ScenarioError(f"{exe} is missing (lab.py up)")
    before = lab.boottime_ticks()
    started = time.time()
    # Pipes, not /dev/null: opening /dev/null here would be one more event of ours in the window.
    proc = subprocess.Popen(
        [str(exe), "-V"],
        env=lab.service_env(),
        cwd="/",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
    )
    ticks = lab.start_ticks_of(proc.pid, before)
    try:
        proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise ScenarioError(f"{exe} -V did not finish within {TIMEOUT_S:.0f}s") from exc
    objects = {"executable": str(exe), "user": user}
    return Performed(scenario, "service_new_user", proc.pid, ticks, None, started, time.time(), objects)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    kind: str
    actor: str | None  # the long-running process that acts itself (its alerts share an aggregation key)
    run: Callable[[Lab], Performed]

    @property
    def description(self) -> str:
        return " ".join((self.run.__doc__ or "").split("\n\n")[0].split())


# In the order a harness should run them: a service's own novelties apart from each other, since the agent
# folds repeated alerts of one process into a summary within its aggregation window.
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("web_reads_dpkg_status", "service_new_read", "php-fpm", web_reads_dpkg_status),
        Scenario("db_runs_id", "db_child_process", None, db_runs_id),
        Scenario("web_runs_uname", "service_new_program", None, web_runs_uname),
        Scenario("job_connects_new_port", "job_new_behaviour", None, job_connects_new_port),
        Scenario("web_writes_upload", "service_new_write", "php-fpm", web_writes_upload),
        Scenario("db_connects_new_port", "service_new_destination", "postgres", db_connects_new_port),
        Scenario("web_runs_getent", "service_new_program", None, web_runs_getent),
        Scenario("web_binary_as_nobody", "service_new_user", None, web_binary_as_nobody),
        Scenario("web_connects_new_port", "service_new_destination", "php-fpm", web_connects_new_port),
        Scenario("job_runs_new_program", "job_new_behaviour", None, job_runs_new_program),
        Scenario("db_runs_locale", "db_child_process", None, db_runs_locale),
        Scenario("db_binary_as_www_data", "service_new_user", None, db_binary_as_www_data),
        Scenario("web_reads_copyright", "service_new_read", "php-fpm", web_reads_copyright),
        Scenario("web_writes_var_tmp", "service_new_write", "php-fpm", web_writes_var_tmp),
    )
}


def record(done: Performed) -> dict[str, Any]:
    """The sidecar of one novelty: its root, window and what its novel event names."""
    iso = lambda t: dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")  # noqa: E731
    return {
        "version": 1,
        **asdict(done),
        "description": SCENARIOS[done.scenario].description,
        "clk_tck": CLK_TCK,
        "started_iso": iso(done.started),
        "ended_iso": iso(done.ended),
        "host": socket.gethostname(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Exit codes: 0 the novelty ran, 1 it could not run, 2 bad usage.",
    )
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")
    one = sub.add_parser("run", help="run one scenario")
    one.add_argument("name", metavar="NAME", help="scenario (see --list)")
    one.add_argument("--sidecar", metavar="FILE", help="write the novelty's root and window here (JSON)")
    one.add_argument(
        "--trigger",
        type=Path,
        default=lab.NOVELTY_TRIGGER,
        metavar="PATH",
        help=f"the workload's --novelty-trigger, for the job scenarios (default {lab.NOVELTY_TRIGGER})",
    )
    args = ap.parse_args()
    if args.list:
        for s in SCENARIOS.values():
            print(f"{s.name:<24} {s.kind:<24} {s.description}")
        return 0
    if args.cmd != "run":
        ap.print_usage(sys.stderr)
        print("novelty.py: give --list or run NAME", file=sys.stderr)
        return 2
    if args.name not in SCENARIOS:
        print(f"novelty.py: unknown scenario {args.name!r}; see --list", file=sys.stderr)
        return 2
    try:
        done = SCENARIOS[args.name].run(Lab(trigger=args.trigger))
    except (ScenarioError, OSError) as exc:
        print(f"novelty.py: {args.name} could not run: {exc}", file=sys.stderr)
        return 1
    note = f" ({done.note})" if done.note else ""
    print(f"novelty.py: {args.name} root_pid={done.pid} objects={done.objects}{note}", file=sys.stderr)
    if args.sidecar:
        Path(args.sidecar).write_text(json.dumps(record(done), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
