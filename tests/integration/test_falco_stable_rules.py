"""Falco's stable rules (shared/falco/falco_rules.yaml, loaded unchanged) on the real kernel: every rule of
the file that sentinel can evaluate fires on a real process doing what the rule describes.

One `sentinel run --rules <the Falco file>` for the module; each rule has a trigger below that does the rule's
behaviour with real programs (copies of binaries named as the rule wants, ctypes for direct syscalls, a
loopback listener) and a check that the alert came from that trigger. Rules on Falco's ``container`` macro
run their trigger in a container: a cgroup made by hand with the name docker gives one (no runtime is
installed here; to sentinel, as to Falco, a container is its cgroup). Rules on what only the runtime knows
(``container.privileged``) run theirs in a real podman container, with the agent asking a podman API service
started for the module. The guard test keeps the triggers in step with the file: evaluable rules = enabled -
never_fire - refused, and each needs a trigger or a reasoned entry in EXCLUDED.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import get
from .podman import host_pid_of_exec, podman_service, remove_container, start_container
from .rule_triggers import Fired, rules_detector, run, wait_for_rule
from .test_container_cgroups import move, remove_tree, require_cgroup2
from .test_detection import Detector
from .test_security_syscalls import run_calls

pytestmark = pytest.mark.kernel

FALCO_DIR = Path(__file__).resolve().parents[3] / "shared" / "falco"
FALCO_RULES = FALCO_DIR / "falco_rules.yaml"

# Evaluable rules this test does not trigger, each with the reason (the guard test accounts for them).
# Empty where the kernel has module syscalls: every rule sentinel can evaluate has a trigger below.
EXCLUDED: dict[str, str] = {}
MODULE_SYSCALLS = os.path.exists("/sys/kernel/tracing/events/syscalls/sys_enter_finit_module")
if not MODULE_SYSCALLS:
    EXCLUDED["Linux Kernel Module Injection Detected"] = (
        "this kernel has no module syscalls (no CONFIG_MODULES): init_module/finit_module cannot be made or "
        "traced here (the agent lists their tracepoints as absent)"
    )


def falco_rules_file() -> Path:
    if not FALCO_RULES.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"Falco's rules are missing: {FALCO_RULES} (shared/ is laid beside the repo in CI)")
        pytest.skip(f"Falco's rules are not here: {FALCO_RULES}")
    return FALCO_RULES


def named_python(tmp: Path, name: str) -> Path:
    """A copy of the interpreter under the program name a rule keys on (nginx, sshd...)."""
    target = tmp / name
    shutil.copy(os.path.realpath(sys.executable), target)
    return target


def run_named(prog: Path, code: str, **kw: Any) -> int:
    """Run ``code`` in ``prog`` (an interpreter copy) to completion; its pid."""
    env = {**os.environ, "PYTHONHOME": sys.base_prefix}  # a copied interpreter cannot find its stdlib alone
    proc = subprocess.Popen([str(prog), "-c", textwrap.dedent(code)], env=env, **kw)
    assert proc.wait(60) == 0, f"{prog.name} trigger failed"
    return proc.pid


CONTAINER_CGROUPS: list[bytes] = []  # removed when the module ends (see the detector fixture)


def container_cgroup() -> bytes:
    """A fresh cgroup named as docker names its containers (systemd driver): a container to sentinel.

    It stays until the module ends (its top is in CONTAINER_CGROUPS, for the module's fixture to remove): the
    agent resolves an event's cgroup id when it handles the event, and a cgroup removed by then (a process
    that exits at once, removed at once) no longer resolves.
    """
    top = os.fsencode(require_cgroup2().mount_point) + f"/sentinel-falco-{uuid.uuid4().hex[:8]}".encode()
    cgroup = top + f"/system.slice/docker-{uuid.uuid4().hex}{uuid.uuid4().hex}.scope".encode()
    os.makedirs(cgroup)
    CONTAINER_CGROUPS.append(top)
    return cgroup


def in_container(argv: list[str], ok: tuple[int, ...] = (0,), **kw: Any) -> int:
    """Run ``argv`` to completion in a fresh container (container_cgroup): a shell waits while it is moved
    into the cgroup, then execs ``argv``. Its pid."""
    cgroup = container_cgroup()
    gate = subprocess.Popen(
        ["/bin/sh", "-c", 'read go; exec "$0" "$@"', *argv],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw,
    )  # fmt: skip
    assert gate.stdin is not None
    move(gate.pid, cgroup)
    gate.stdin.write(b"go\n")
    gate.stdin.close()
    rc = gate.wait(60)
    assert rc in ok, f"{argv} exited {rc} in a container"
    return gate.pid


def in_container_alert(a: dict[str, Any]) -> bool:
    return get(a, "container.runtime") == "docker" and len(get(a, "container.id") or "") == 64


# ---- one trigger per rule -----------------------------------------------------------------------------


def directory_traversal(tmp: Path) -> Fired:
    # python (parent: pytest, not a shell) reads /etc/hostname through ../ twice in the spelling
    rel = os.path.relpath("/etc/hostname", tmp)  # ../../../../etc/hostname
    assert rel.count("../") >= 2, rel  # the macro wants two ../ in the spelling
    pid = run_calls(f"os.chdir({str(tmp)!r}); open({rel!r}).read()")
    return Fired({pid}, lambda a: get(a, "file.path") == "/etc/hostname", f"python reading {rel} from {tmp}")


def sensitive_trusted_after_startup(tmp: Path) -> Fired:
    # a program named nginx (server_procs) reading /etc/shadow more than 5 s after it started
    nginx = named_python(tmp, "nginx")
    pid = run_named(nginx, "import time; time.sleep(5.5); open('/etc/shadow').read()")
    return Fired({pid}, lambda a: get(a, "file.path") == "/etc/shadow", "nginx reading /etc/shadow at 5.5 s")


def sensitive_untrusted(tmp: Path) -> Fired:
    reader = named_python(tmp, "report-tool")  # no trusted name
    pid = run_named(reader, "open('/etc/shadow').read()")
    return Fired(
        {pid},
        lambda a: get(a, "file.path") == "/etc/shadow" and get(a, "process.name") == "report-tool",
        "report-tool reading /etc/shadow",
    )


def run_shell_untrusted(tmp: Path) -> Fired:
    nginx = named_python(tmp, "nginx")
    pid = run_named(nginx, "import subprocess; subprocess.run(['/bin/sh', '-c', 'id'], check=True)")
    return Fired(
        {pid},
        lambda a: get(a, "process.thread.name") == "sh" and get(a, "process.parent.name") == "nginx",
        "nginx running sh -c id",
    )


def system_user_interactive(tmp: Path) -> Fired:
    # below a program named sshd, a process of the system user nobody runs a command
    sshd = named_python(tmp, "sshd")
    pid = run_named(sshd, "import subprocess; subprocess.run(['/bin/true'], user=65534, cwd='/', check=True)")
    return Fired(
        {pid},
        lambda a: get(a, "process.name") == "true" and get(a, "user.name") == "nobody",
        "sshd > true as nobody",
    )


def search_private_keys(tmp: Path) -> Fired:
    (tmp / "notes.txt").write_text("nothing here\n")
    pid = run(["grep", "-r", "BEGIN RSA PRIVATE", str(tmp)], ok=(0, 1))
    return Fired({pid}, lambda a: get(a, "process.name") == "grep", "grep -r 'BEGIN RSA PRIVATE'")


def clear_log(tmp: Path) -> Fired:
    log = Path(f"/var/log/sentinel-falco-test-{uuid.uuid4().hex[:8]}.log")
    log.write_text("a line\n")
    try:
        pid = run_calls(f"os.close(os.open({str(log)!r}, os.O_WRONLY | os.O_TRUNC))")
    finally:
        log.unlink(missing_ok=True)
    return Fired({pid}, lambda a: get(a, "file.path") == str(log), f"python truncating {log} at open")


def remove_bulk_data(tmp: Path) -> Fired:
    victim = tmp / "victim.bin"
    victim.write_bytes(b"x" * 4096)
    pid = run(["shred", "-u", str(victim)])
    return Fired({pid}, lambda a: get(a, "process.name") == "shred", f"shred -u {victim}")


def symlink_over_sensitive(tmp: Path) -> Fired:
    link = tmp / "shadow-symlink"
    try:
        pid = run(["ln", "-s", "/etc/shadow", str(link)])
    finally:
        link.unlink(missing_ok=True)
    return Fired({pid}, lambda a: "/etc/shadow" in get(a, "message"), f"ln -s /etc/shadow {link}")


def hardlink_over_sensitive(tmp: Path) -> Fired:
    link = tmp / "shadow-hardlink"
    try:  # a real second name for /etc/shadow where tmp is on its filesystem; EXDEV elsewhere fires as well
        pid = run(["ln", "/etc/shadow", str(link)], ok=(0, 1))
    finally:
        link.unlink(missing_ok=True)
    return Fired({pid}, lambda a: "/etc/shadow" in get(a, "message"), f"ln /etc/shadow {link}")


def ptrace_attach(tmp: Path) -> Fired:
    pid = run_calls(
        """
        import signal, subprocess
        child = subprocess.Popen(["sleep", "30"])
        assert sc("ptrace", 16, child.pid, 0, 0) == 0      # PTRACE_ATTACH
        os.waitpid(child.pid, 0)
        sc("ptrace", 17, child.pid, 0, 0)                  # PTRACE_DETACH
        child.kill(); child.wait()
        """
    )
    return Fired({pid}, lambda a: get(a, "sentinel.event.arg.request") == "PTRACE_ATTACH", "ptrace ATTACH")


def ptrace_traceme(tmp: Path) -> Fired:
    pid = run_calls(
        """
        child = os.fork()
        if child == 0:
            sc("ptrace", 0, 0, 0, 0)                       # PTRACE_TRACEME: traced by its parent
            os._exit(0)
        os.waitpid(child, 0)
        """
    )
    return Fired({pid}, lambda a: get(a, "sentinel.event.arg.request") == "PTRACE_TRACEME", "PTRACE_TRACEME")


def find_aws_credentials(tmp: Path) -> Fired:
    pid = run(["find", str(tmp), "-path", "*/.aws/credentials"])
    return Fired({pid}, lambda a: get(a, "process.name") == "find", "find -path */.aws/credentials")


def exec_from_dev_shm(tmp: Path) -> Fired:
    target = Path(f"/dev/shm/sentinel-falco-{uuid.uuid4().hex[:8]}")
    shutil.copy("/bin/true", target)
    try:
        pid = run([str(target)])
    finally:
        target.unlink()
    return Fired({pid}, lambda a: get(a, "process.executable") == str(target), f"exec of {target}")


def ssh_non_standard_port(tmp: Path) -> Fired:
    # The outbound macro leaves out 127.0.0.0/8 and RFC 1918: ssh connects to [::1] (loopback) on one of
    # ssh_non_standard_ports, where a listener takes the connection and closes it.
    listener = None
    for port in (4444, 8443, 8080, 443, 80, 88, 53):
        try:
            listener = socket.create_server(("::1", port), family=socket.AF_INET6)
            break
        except OSError:
            continue
    assert listener is not None, "no port of ssh_non_standard_ports is free on [::1]"

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.close()
        except OSError:
            pass

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    opts = ["BatchMode=yes", "StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "ConnectTimeout=5"]
    argv = ["ssh", "-F", "/dev/null", *(x for o in opts for x in ("-o", o)), "-p", str(port), "::1", "true"]
    try:
        pid = run(argv, ok=(255,))
    finally:
        listener.close()
        server.join(5)
    return Fired(
        {pid},
        lambda a: get(a, "destination.port") == port and get(a, "process.name") == "ssh",
        f"ssh to [::1]:{port}",
    )


def fileless_memfd(tmp: Path) -> Fired:
    name = f"implant-{uuid.uuid4().hex[:8]}"
    pid = run_calls(
        f"""
        import subprocess
        fd = os.memfd_create({name!r}, 0)
        os.write(fd, open('/bin/true', 'rb').read())
        subprocess.run([f'/proc/self/fd/{{fd}}'], pass_fds=[fd], check=True)
        """
    )
    return Fired({pid}, lambda a: get(a, "process.executable") == f"memfd:{name}", f"exec of memfd:{name}")


def terminal_shell_in_container(tmp: Path) -> Fired:
    # a program named runc (container_entrypoint) starts sh on a terminal (pty) in a container
    runc = named_python(tmp, "runc")
    code = "import os, pty; pid, fd = pty.fork()\nif pid == 0: os.execv('/bin/sh', ['sh', '-c', 'true'])\n"
    code += "try:\n    while os.read(fd, 1024): pass\nexcept OSError: pass\nos.waitpid(pid, 0)"
    pid = in_container([str(runc), "-c", code], env={**os.environ, "PYTHONHOME": sys.base_prefix})
    return Fired(
        {pid},
        lambda a: get(a, "process.thread.name") == "sh" and in_container_alert(a),  # the comm
        "runc > sh on a pty in a container",
    )


def netcat_in_container(tmp: Path) -> Fired:
    nc = tmp / "nc"
    shutil.copy("/bin/true", nc)
    pid = in_container([str(nc), "-e", "/bin/sh", "127.0.0.1", "9"])
    return Fired(
        {pid}, lambda a: get(a, "process.name") == "nc" and in_container_alert(a), "nc -e in a container"
    )


def stdin_to_network_in_container(tmp: Path) -> Fired:
    code = "import os, socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    code += "s.connect(('127.0.0.1', 9)); os.dup2(s.fileno(), 0)"
    pid = in_container([sys.executable, "-c", code])
    return Fired({pid}, in_container_alert, "python moving a UDP socket onto stdin in a container")


def module_injection_in_container(tmp: Path) -> Fired:
    # finit_module(/dev/null) as root (CAP_SYS_MODULE) in a container: refused, and still the attempt
    code = "import ctypes, os; fd = os.open('/dev/null', os.O_RDONLY)\n"
    code += "ctypes.CDLL(None, use_errno=True).syscall(ctypes.c_long(313), ctypes.c_long(fd), b'', 0)"
    pid = in_container([sys.executable, "-c", code])
    return Fired({pid}, in_container_alert, "finit_module in a container")


def release_agent_in_container(tmp: Path) -> Fired:
    # root with CAP_SYS_ADMIN writing a file named release_agent (the cgroup v1 escape), in a container
    target = tmp / "release_agent"
    pid = in_container([sys.executable, "-c", f"open({str(target)!r}, 'w').write('/x')"])
    return Fired(
        {pid},
        lambda a: get(a, "file.path") == str(target) and in_container_alert(a),
        f"writing {target} in a container",
    )


PODMAN_CONTAINERS: list[str] = []  # removed when the module ends (see the detector fixture)
PODMAN_IMAGE: list[str] = []  # the base image, once the module's fixture has it


def debugfs_in_privileged_container(tmp: Path) -> Fired:
    # debugfs (a copy of sleep under that name) in a privileged podman container: `container.privileged` is
    # podman's answer, which the agent asked for when the container started
    c = start_container(PODMAN_IMAGE[0], privileged=True)
    PODMAN_CONTAINERS.append(c.id)
    c.exec("cp", "/bin/sleep", "/tmp/debugfs")
    time.sleep(1.0)  # the answer takes a few ms; the agent takes it at its next poll
    pid = host_pid_of_exec(c, ["/tmp/debugfs", "3"])
    return Fired(
        {pid},
        lambda a: get(a, "container.id") == c.id and get(a, "container.security_context.privileged") is True,
        f"debugfs in privileged container {c.name}",
    )


TRIGGERS: dict[str, Callable[[Path], Fired]] = {
    "Directory traversal monitored file read": directory_traversal,
    "Read sensitive file trusted after startup": sensitive_trusted_after_startup,
    "Read sensitive file untrusted": sensitive_untrusted,
    "Run shell untrusted": run_shell_untrusted,
    "System user interactive": system_user_interactive,
    "Search Private Keys or Passwords": search_private_keys,
    "Clear Log Activities": clear_log,
    "Remove Bulk Data from Disk": remove_bulk_data,
    "Create Symlink Over Sensitive Files": symlink_over_sensitive,
    "Create Hardlink Over Sensitive Files": hardlink_over_sensitive,
    "PTRACE attached to process": ptrace_attach,
    "PTRACE anti-debug attempt": ptrace_traceme,
    "Find AWS Credentials": find_aws_credentials,
    "Execution from /dev/shm": exec_from_dev_shm,
    "Disallowed SSH Connection Non Standard Port": ssh_non_standard_port,
    "Fileless execution via memfd_create": fileless_memfd,
    "Terminal shell in container": terminal_shell_in_container,
    "Netcat Remote Code Execution in Container": netcat_in_container,
    "Redirect STDOUT/STDIN to Network Connection in Container": stdin_to_network_in_container,
    "Detect release_agent File Container Escapes": release_agent_in_container,
    "Debugfs Launched in Privileged Container": debugfs_in_privileged_container,
    **({"Linux Kernel Module Injection Detected": module_injection_in_container} if MODULE_SYSCALLS else {}),
}


@pytest.fixture(scope="module")
def falco_detector(podman_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Detector]:
    PODMAN_IMAGE[:] = [podman_image]
    sock = str(tmp_path_factory.mktemp("podman") / "podman.sock")
    try:
        with podman_service(sock):
            yield from rules_detector(falco_rules_file(), "--container-endpoint", f"podman:{sock}")
    finally:
        while CONTAINER_CGROUPS:
            remove_tree(CONTAINER_CGROUPS.pop())
        while PODMAN_CONTAINERS:
            remove_container(PODMAN_CONTAINERS.pop())


@pytest.mark.parametrize("rule", sorted(TRIGGERS))
def test_rule_fires(rule: str, falco_detector: Detector, tmp_path: Path) -> None:
    alert = wait_for_rule(falco_detector, rule, TRIGGERS[rule](tmp_path))
    assert get(alert, "event.kind") == "alert"


def test_every_evaluable_rule_has_a_trigger() -> None:
    from sentinel.rules import load_rules

    loaded = load_rules([falco_rules_file()])
    assert loaded.ruleset is not None, [str(d) for d in loaded.errors]
    rs = loaded.ruleset
    unreachable = {r.name for r in rs.never_fire} | {r.name for r in rs.refused}
    evaluable = {r.name for r in rs.enabled_rules} - unreachable
    assert not set(EXCLUDED) & set(TRIGGERS), "a rule is both triggered and excluded"
    assert set(EXCLUDED) <= evaluable, f"excluded rules that are not evaluable: {set(EXCLUDED) - evaluable}"
    missing = evaluable - set(TRIGGERS) - set(EXCLUDED)
    extra = set(TRIGGERS) - evaluable
    assert not missing, f"evaluable Falco rules without a trigger here: {sorted(missing)}"
    assert not extra, f"triggers for rules that are not evaluable (never_fire/refused/gone): {sorted(extra)}"
