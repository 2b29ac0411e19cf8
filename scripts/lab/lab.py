"""The lab host the default model is trained and evaluated on: two services under one root, loopback only.

Shared by ``benign_workload.py`` and ``attacks.py`` so both meet the same host: the same paths, executable
names, service accounts and ports. A web shell is then the baseline's own ``php-fpm`` starting a shell, not
some program the baseline never saw. The services are copies of the Python interpreter named like the real
daemons (the agent sees ``/srv/sentinel-lab/bin/php-fpm`` as the executable) and, when run as root, they run
under the usual service accounts (``www-data``, ``nobody``) as real daemons do.

The web service emulates PHP: ``.php`` pages are templates that may query the database; a page that calls
``system()`` runs its argument with ``/bin/sh -c``, as PHP does. No page of the lab does; ``attacks.py``
plants one (the web shell). Nothing here listens beyond 127.0.0.1.

Run as a script it keeps the services up between workloads, as a real server's daemons outlive any one
recording: ``lab.py up`` (prepare the tree, start the services detached, pids in ROOT/run), ``lab.py status``,
``lab.py down`` (stop them and remove the tree). Exit codes: 0 done, 1 failed, 2 bad usage.

Novelty hooks, for ``novelty.py`` and ``benchmarks/bench_model_quality.py`` only (nothing in the benign
workload or the attacks uses them): the web service answers ``NOVELTY_PATH`` itself (start one of a fixed set
of programs, read a file, write and remove a file in a fixed set of directories, connect to a loopback port),
the database answers lines starting with ``NOVELTY_DB_PREFIX`` (start a program, connect to a loopback port),
and the database-report job does one extra thing when ``NOVELTY_ENV`` is set (``benign_workload.py
--novelty-trigger`` sets it for one run). Each answer names the process that acted, so the novelty can be
attributed.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("SENTINEL_LAB_ROOT", "/srv/sentinel-lab"))
WEB_PORT = 18080
DB_PORT = 15432
SERVICE_USERS = {"php-fpm": "www-data", "postgres": "nobody"}  # accounts Debian base always has
SERVICE_START_TIMEOUT_S = 15.0
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
ADMIN_HOME = ROOT / "home" / "admin"
BASHRC = "HISTSIZE=1000\nalias ll='ls -l'\nalias la='ls -A'\nexport EDITOR=vi\n"
# Novelty hooks (see the module docstring); the service scripts below spell the same values.
NOVELTY_PATH = "/lab/novel"
NOVELTY_DB_PREFIX = "LAB NOVEL"
NOVELTY_ENV = "LAB_NOVEL"
NOVELTY_TRIGGER = ROOT / "run" / "novelty-job"

WEB_SERVICE = r'''
"""Lab web server (runs as php-fpm): static files, PHP-like templates, a database behind /app."""
import http.server, os, socket, subprocess, sys, time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

PORT, ROOT, DB_PORT = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
WWW = ROOT / "www"
LOG = open(ROOT / "log" / "access.log", "a", buffering=1)
TICK = os.sysconf("SC_CLK_TCK")
# /lab/novel (benchmarks only, never requested by the workload): fixed programs, writes in fixed places
NOVEL_EXEC = {"uname": ["uname", "-a"], "getent": ["getent", "passwd"]}
NOVEL_WRITE_DIRS = (WWW / "uploads", Path("/var/tmp"), Path("/tmp"))


def which(name):
    """The program's path on PATH, found without exec attempts (a failed exec is an event of its own)."""
    for d in os.environ.get("PATH", "").split(":"):
        if d and os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def db(query):
    with socket.create_connection(("127.0.0.1", DB_PORT), timeout=5) as s:
        s.sendall(query.encode() + b"\n")
        return s.recv(4096)


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "lab-php-fpm"

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        headers = {}
        (ROOT / "conf" / "site.ini").read_bytes()  # per-request config lookup, like .user.ini
        status, body = 200, b""
        if url.path == "/health":
            body = b"ok\n"
        elif url.path == "/app":
            body = db("SELECT * FROM items WHERE id=%d" % int(query.get("id", ["1"])[0]))
        elif url.path == "/lab/novel":
            status, body, headers = self.novel(query)
        else:
            rel = url.path.lstrip("/") or "index.php"
            page = WWW / rel
            if ".." in rel or not page.is_file():
                status, body = 404, b"not found\n"
            elif page.suffix == ".php":
                body, headers = self.php(page, query)
            else:
                body = page.read_bytes()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        LOG.write('127.0.0.1 - - [%s] "GET %s HTTP/1.1" %d %d\n'
                  % (time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()), url.path, status, len(body)))

    def php(self, page, query):
        src = page.read_text()
        if "system($_GET" in src:  # a page calling system(): PHP runs the argument with /bin/sh -c
            start = time.clock_gettime_ns(time.CLOCK_BOOTTIME) * TICK // 1_000_000_000
            proc = subprocess.Popen(["/bin/sh", "-c", query.get("c", ["true"])[0]],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            out, _ = proc.communicate(timeout=60)
            return out, {"X-Lab-Pid": str(proc.pid), "X-Lab-Start-Ticks": str(start)}
        rows = db("SELECT title FROM pages").decode() if "$rows" in src else ""
        return src.replace("<?php echo $rows; ?>", rows).encode(), {}

    def novel(self, query):
        """One novelty done by this process (or a child it starts): op=exec|read|write|connect, arg=..."""
        op, arg = query.get("op", [""])[0], query.get("arg", [""])[0]
        headers = {"X-Lab-Pid": str(os.getpid())}
        try:
            if op == "exec" and arg in NOVEL_EXEC and which(NOVEL_EXEC[arg][0]):
                start = time.clock_gettime_ns(time.CLOCK_BOOTTIME) * TICK // 1_000_000_000
                proc = subprocess.Popen([which(NOVEL_EXEC[arg][0]), *NOVEL_EXEC[arg][1:]],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                out, _ = proc.communicate(timeout=30)
                headers = {"X-Lab-Pid": str(proc.pid), "X-Lab-Start-Ticks": str(start)}
                return 200, b"ran %s: %d bytes\n" % (arg.encode(), len(out)), headers
            if op == "read" and arg.startswith("/"):
                with open(arg, "rb") as f:
                    n = len(f.read())
                return 200, b"read %d bytes\n" % n, headers
            target = Path(arg)
            if op == "write" and target.parent in NOVEL_WRITE_DIRS and target.name.startswith("lab-novel"):
                target.write_bytes(b"lab novelty\n")
                target.unlink()
                return 200, b"wrote and removed\n", headers
            if op == "connect" and arg.isdigit() and 1024 <= int(arg) <= 65535:
                with socket.create_connection(("127.0.0.1", int(arg)), timeout=5):
                    pass
                return 200, b"connected\n", headers
        except (OSError, subprocess.SubprocessError) as exc:
            return 500, ("%s\n" % exc).encode(), headers
        return 400, b"unknown novelty\n", headers

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


Server(("127.0.0.1", PORT), Handler).serve_forever()
'''

DB_SERVICE = r'''
"""Lab database (runs as postgres): a line protocol on loopback reading relation files."""
import os, socket, socketserver, subprocess, sys, time, zlib
from pathlib import Path

PORT, ROOT = int(sys.argv[1]), Path(sys.argv[2])
BASE = ROOT / "data" / "base" / "16384"
LOG = open(ROOT / "log" / "postgres.log", "a", buffering=1)
RELATIONS = sorted(p.name for p in BASE.iterdir())
TICK = os.sysconf("SC_CLK_TCK")
NOVEL_EXEC = {"id": ["id"], "locale": ["locale"]}  # "LAB NOVEL ..." lines: benchmarks only


def which(name):
    for d in os.environ.get("PATH", "").split(":"):
        if d and os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def novel(words):
    """LAB NOVEL exec NAME | LAB NOVEL connect PORT: one novelty, answered with the pid that acted."""
    op, arg = (words + [b"", b""])[:2]
    arg = arg.decode(errors="replace")
    try:
        if op == b"exec" and arg in NOVEL_EXEC and which(NOVEL_EXEC[arg][0]):
            start = time.clock_gettime_ns(time.CLOCK_BOOTTIME) * TICK // 1_000_000_000
            proc = subprocess.Popen([which(NOVEL_EXEC[arg][0]), *NOVEL_EXEC[arg][1:]],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            proc.communicate(timeout=30)
            return b"OK novel pid=%d ticks=%d\n" % (proc.pid, start)
        if op == b"connect" and arg.isdigit() and 1024 <= int(arg) <= 65535:
            with socket.create_connection(("127.0.0.1", int(arg)), timeout=5):
                pass
            return b"OK novel pid=%d\n" % os.getpid()
    except (OSError, subprocess.SubprocessError) as exc:
        return b"ERR novel %s\n" % str(exc).encode()
    return b"ERR novel unknown\n"


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        LOG.write("%s LOG:  connection received: host=127.0.0.1\n" % time.strftime("%F %T"))
        for line in self.rfile:
            if line.startswith(b"LAB NOVEL "):
                self.wfile.write(novel(line.split()[2:]))
                continue
            rel = RELATIONS[zlib.crc32(line.split(b" WHERE")[0]) % len(RELATIONS)]
            data = (BASE / rel).read_bytes()
            self.wfile.write(b"OK %d %08x\n" % (len(data), zlib.crc32(line + data)))


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


Server(("127.0.0.1", PORT), Handler).serve_forever()
'''

DB_REPORT = r'''
"""Nightly-report style database client: queries the lab database and writes a report file."""
import os, socket, sys, time
from pathlib import Path

root, port = Path(sys.argv[1]), int(sys.argv[2])
lines = []
with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
    f = s.makefile("rwb")
    for q in (b"SELECT count(*) FROM items", b"SELECT title FROM pages", b"SELECT max(id) FROM orders"):
        f.write(q + b"\n")
        f.flush()
        lines.append(f.readline().decode().strip())
if "--summary" in sys.argv:
    print("\n".join(lines))
else:
    (root / "reports" / "db-report.txt").write_text(time.strftime("%F %T\n") + "\n".join(lines) + "\n")
# one extra step a benchmark asked for, for one run (benign_workload.py --novelty-trigger); else unset
novel = os.environ.get("LAB_NOVEL", "")
if novel.startswith("connect:") and novel[8:].isdigit():
    with socket.create_connection(("127.0.0.1", int(novel[8:])), timeout=5):
        pass
elif novel == "exec:nproc" and os.access("/usr/bin/nproc", os.X_OK):
    os.waitpid(os.posix_spawn("/usr/bin/nproc", ["nproc"], dict(os.environ)), 0)
'''

INDEX_PHP = "<html><body><h1>lab shop</h1><ul><?php echo $rows; ?></ul></body></html>\n"
PRODUCTS_PHP = "<html><body><h2>products</h2><?php echo $rows; ?></body></html>\n"
SITE_INI = "[site]\nname=lab shop\nversion=1\ndb_host=127.0.0.1\ndb_port={db}\n"
APP_JSON = '{{"name": "lab-shop", "workers": 4, "db": {{"host": "127.0.0.1", "port": {db}}}}}\n'


def python_binary() -> str:
    """The real interpreter file (not a venv wrapper or a symlink): what the services are copies of."""
    return os.path.realpath(sys.executable)


def service_env() -> dict[str, str]:
    """An interpreter copy outside /usr cannot find its standard library alone."""
    return {"PATH": PATH, "PYTHONHOME": sys.base_prefix, "LANG": "C.UTF-8"}


def cron_env() -> dict[str, str]:
    """What cron gives a root job: the workload's periodic jobs run with it."""
    return {"PATH": PATH, "HOME": "/root", "LOGNAME": "root", "SHELL": "/bin/sh", "LANG": "C.UTF-8"}


def admin_env() -> dict[str, str]:
    """The administrator's login environment, the same for the benign sessions and the attacks run as root.

    A home of the lab's own (a server's plain ``.bashrc``) rather than this machine's: whatever a developer's
    shell startup does (pyenv, cargo…) would otherwise show up in one side only.
    """
    return {"PATH": PATH, "HOME": str(ADMIN_HOME), "USER": "root", "LOGNAME": "root", "SHELL": "/bin/bash",
            "LANG": "C.UTF-8", "TERM": "xterm"}  # fmt: skip


def _account(user: str) -> tuple[int, int] | None:
    """(uid, gid) of a service account, when we are root and it exists; else the services run as us."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def prepare(root: Path = ROOT) -> None:
    """Create the lab tree (idempotent): docroot, config, data, logs, jobs and the service executables."""
    for d in ("www/static", "www/uploads", "conf", "data/base/16384", "log", "bin", "jobs", "backup",
              "reports", "home/admin"):  # fmt: skip
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    (root / "home" / "admin" / ".bashrc").write_text(BASHRC)
    www = root / "www"
    (www / "index.php").write_text(INDEX_PHP)
    (www / "products.php").write_text(PRODUCTS_PHP)
    for i in range(8):
        text = "lorem ipsum " * 20
        (www / f"page{i}.html").write_text(f"<html><body><h1>page {i}</h1><p>{text}</p></body></html>\n")
    (www / "static" / "app.css").write_text("body { font-family: sans-serif; }\n" * 10)
    (www / "static" / "app.js").write_text("console.log('lab');\n" * 10)
    (www / "static" / "logo.png").write_bytes(bytes(range(256)) * 8)
    (root / "conf" / "site.ini").write_text(SITE_INI.format(db=DB_PORT))
    (root / "conf" / "app.json").write_text(APP_JSON.format(db=DB_PORT))
    for rel in ("1259", "1249", "2608", "16385", "16390", "16402"):
        target = root / "data" / "base" / "16384" / rel
        if not target.exists():
            target.write_bytes(bytes(i * 7 % 251 for i in range(8192)))
    (root / "jobs" / "web.py").write_text(WEB_SERVICE)
    (root / "jobs" / "db.py").write_text(DB_SERVICE)
    (root / "jobs" / "dbreport.py").write_text(DB_REPORT)
    for log in ("access.log", "postgres.log", "heartbeat.log", "load.log"):
        (root / "log" / log).touch()
    for name in SERVICE_USERS:
        target = root / "bin" / name
        if not target.exists():
            shutil.copy(python_binary(), target)
            os.chmod(target, 0o755)
    # the services write their own logs, as their accounts
    for path, user in ((root / "log" / "access.log", "www-data"), (root / "log" / "postgres.log", "nobody")):
        acct = _account(user)
        if acct is not None:
            os.chown(path, *acct)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def boottime_ticks() -> int:
    """Now, in /proc's clock ticks since boot: the scale of a process's start time."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) * CLK_TCK // 1_000_000_000


def start_ticks_of(pid: int, fallback: int) -> int:
    """/proc/PID/stat starttime (field 22), or ``fallback`` when the process is already gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return fallback


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = SERVICE_START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"lab service {proc.args[0]} exited with {proc.returncode} before listening")
        if port_open(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"lab service on port {port} did not start within {timeout:.0f}s")


def _start(name: str, script: str, args: list[str], root: Path) -> subprocess.Popen[bytes]:
    acct = _account(SERVICE_USERS[name])
    kw: dict[str, object] = {}
    if acct is not None:
        kw = {"user": acct[0], "group": acct[1], "extra_groups": []}
    return subprocess.Popen(
        [str(root / "bin" / name), str(root / "jobs" / script), *args],
        env=service_env(),
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # a daemon: not in the caller's process group, unaffected by its Ctrl-C
        **kw,  # type: ignore[arg-type]
    )


def start_services(root: Path = ROOT) -> list[subprocess.Popen[bytes]]:
    """Start the database, then the web server (php-fpm) that queries it; both on loopback only.

    Raises RuntimeError when a port is already taken or a service does not come up.
    """
    for port in (DB_PORT, WEB_PORT):
        if port_open(port):
            raise RuntimeError(f"127.0.0.1:{port} is already in use (another lab running?)")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(_start("postgres", "db.py", [str(DB_PORT), str(root)], root))
        _wait_port(DB_PORT, procs[-1])
        procs.append(_start("php-fpm", "web.py", [str(WEB_PORT), str(root), str(DB_PORT)], root))
        _wait_port(WEB_PORT, procs[-1])
    except (RuntimeError, OSError):
        stop(procs)
        raise
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate, then kill what is still running after 10 s."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def remove(root: Path = ROOT) -> None:
    """Delete the lab tree; refuses paths that are obviously not a lab root."""
    if root.resolve() in (Path("/"), Path("/srv"), Path.home()) or len(root.resolve().parts) < 3:
        raise RuntimeError(f"refusing to remove {root}")
    shutil.rmtree(root, ignore_errors=True)


def pid_file(name: str, root: Path = ROOT) -> Path:
    return root / "run" / f"{name}.pid"


def _running_pid(name: str, root: Path) -> int | None:
    """The pid in the service's pid file, if it still runs the lab's executable (pids get reused)."""
    try:
        pid = int(pid_file(name, root).read_text())
        return pid if os.readlink(f"/proc/{pid}/exe") == str(root / "bin" / name) else None
    except (OSError, ValueError):
        return None


def daemons_running(root: Path = ROOT) -> bool:
    """Whether ``lab.py up`` services run: workloads and attacks then use them and leave them running."""
    return all(_running_pid(name, root) is not None for name in SERVICE_USERS)


def up(root: Path = ROOT) -> list[int]:
    """Prepare the tree and start the services detached from this process; returns their pids."""
    prepare(root)
    procs = start_services(root)
    (root / "run").mkdir(exist_ok=True)
    for name, proc in zip(("postgres", "php-fpm"), procs, strict=True):
        pid_file(name, root).write_text(f"{proc.pid}\n")
    return [p.pid for p in procs]


def down(root: Path = ROOT, timeout: float = 10.0) -> int:
    """Stop the ``up`` services (only processes running the lab's executables) and remove the tree."""
    pids = [pid for name in SERVICE_USERS if (pid := _running_pid(name, root)) is not None]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while Path(f"/proc/{pid}/exe").exists() and time.monotonic() < deadline:  # a zombie has no exe
            time.sleep(0.1)
        if Path(f"/proc/{pid}/exe").exists():
            os.kill(pid, signal.SIGKILL)
    if root.exists():
        remove(root)
    return len(pids)


def main() -> int:
    ap = argparse.ArgumentParser(description="Keep the lab's services up between workloads (loopback only).")
    ap.add_argument("action", choices=["up", "down", "status"])
    args = ap.parse_args()
    if args.action == "status":
        running = {name: _running_pid(name, ROOT) for name in SERVICE_USERS}
        print(" ".join(f"{name}={pid or 'stopped'}" for name, pid in running.items()))
        return 0
    try:
        if args.action == "up":
            pids = up()
            print(f"lab.py: services up under {ROOT} (pids {pids})", file=sys.stderr)
        else:
            print(f"lab.py: stopped {down()} services, removed {ROOT}", file=sys.stderr)
    except (RuntimeError, OSError) as exc:
        print(f"lab.py {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
