"""The lab host the default model is trained and evaluated on: services under one root, loopback only.

Shared by ``benign_workload.py`` and ``attacks.py``: the same paths, executable names and ports, so the attack
scenarios run against the services the baseline knows (a web shell is the known ``php-fpm`` starting a shell,
not some unknown program). Services are copies of the Python interpreter named like the real ones, so the
agent sees ``/srv/sentinel-lab/bin/php-fpm`` and ``…/bin/postgres`` as their executables.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("SENTINEL_LAB_ROOT", "/srv/sentinel-lab"))
WEB_PORT = 18080
DB_PORT = 15432

WEB_SERVICE = r"""
import http.server, subprocess, sys
from pathlib import Path
root = Path(sys.argv[2])

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/exec?"):  # the planted web shell (used only by attacks.py)
            cmd = bytes.fromhex(self.path.split("=", 1)[1]).decode()
            subprocess.run(["/bin/sh", "-c", cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            body = b"ok\n"
        else:
            (root / "conf" / "site.ini").read_bytes()
            page = root / "www" / (self.path.strip("/") or "index.html")
            body = page.read_bytes() if page.is_file() else b"not found\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        with (root / "log" / "access.log").open("a") as f:
            f.write(self.path + "\n")

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

DB_SERVICE = r"""
import socketserver, sys
from pathlib import Path
root = Path(sys.argv[2])

class H(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            (root / "data" / "table.dat").read_bytes()
            self.wfile.write(b"OK " + line)

socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def prepare(root: Path = ROOT) -> None:
    """Create the lab tree (idempotent): docroot, config, data, logs and the service executables."""
    for d in ("www", "conf", "data", "log", "bin", "jobs", "backup"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(8):
        (root / "www" / f"page{i}.html").write_text(f"<h1>page {i}</h1>\n")
    (root / "www" / "index.html").write_text("<h1>lab</h1>\n")
    (root / "conf" / "site.ini").write_text("[site]\nname=lab\n")
    (root / "data" / "table.dat").write_bytes(os.urandom(4096))
    (root / "jobs" / "web.py").write_text(WEB_SERVICE)
    (root / "jobs" / "db.py").write_text(DB_SERVICE)
    python = os.path.realpath(sys.executable)
    for name in ("php-fpm", "postgres"):
        target = root / "bin" / name
        if not target.exists():
            shutil.copy(python, target)


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"lab service on port {port} did not start")


def start_services(root: Path = ROOT) -> list[subprocess.Popen[bytes]]:
    """The web server (php-fpm) and the database (postgres), each serving on loopback."""
    env = {**os.environ, "PYTHONHOME": sys.base_prefix}  # an interpreter copy cannot find its stdlib alone
    procs = [
        subprocess.Popen(
            [str(root / "bin" / "php-fpm"), str(root / "jobs" / "web.py"), str(WEB_PORT), str(root)], env=env
        ),
        subprocess.Popen(
            [str(root / "bin" / "postgres"), str(root / "jobs" / "db.py"), str(DB_PORT), str(root)], env=env
        ),
    ]
    try:
        _wait_port(WEB_PORT)
        _wait_port(DB_PORT)
    except RuntimeError:
        stop(procs)
        raise
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def services_running() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", WEB_PORT), timeout=0.5):
            return True
    except OSError:
        return False
