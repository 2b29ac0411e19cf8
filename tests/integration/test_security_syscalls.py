"""Security syscalls on the real kernel: each made by a real process through a direct syscall (ctypes, no
helper binary whose name a rule could key on), successful and failing, with its fields exact."""

from __future__ import annotations

import grp
import os
import pwd
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import Agent, get

pytestmark = pytest.mark.kernel

# A child that makes the calls named on its command line through syscall(2) and prints its pid first.
CALLER = textwrap.dedent(
    r"""
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    NR = dict(setuid=105, setgid=106, setreuid=113, setregid=114, setresuid=117, setresgid=119,
              setfsuid=122, setfsgid=123, capset=126, ptrace=101, process_vm_writev=311, bpf=321,
              memfd_create=319, mount=165, umount2=166, setns=308, unshare=272, pivot_root=155,
              chroot=161, move_mount=429, kill=62, tkill=200, tgkill=234, pidfd_send_signal=424,
              pidfd_open=434, pidfd_getfd=438,
              unlink=87, unlinkat=263, rmdir=84, rename=82, renameat=264, renameat2=316, link=86, linkat=265,
              symlink=88, symlinkat=266, chmod=90, fchmod=91, fchmodat=268, fchmodat2=452, chown=92,
              fchown=93, fchownat=260, lchown=94, mkdir=83, mkdirat=258, truncate=76, ftruncate=77,
              utimensat=280, accept=43, accept4=288, bind=49, listen=50, dup=32, dup2=33, dup3=292,
              sendto=44, sendmsg=46, sendmmsg=307, connect=42)
    def sc(name, *args):
        # Integers as C longs: a variadic call passes a Python int as a 32-bit int, and the upper half of
        # a stack-passed argument (the sixth) would be garbage.
        args = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
        r = libc.syscall(ctypes.c_long(NR[name]), *args)
        return r if r >= 0 else -ctypes.get_errno()
    print(os.getpid(), flush=True)
    sys.stdin.readline()  # the test knows the pid before any call
    exec(sys.argv[1])
    """
)


def run_calls(code: str, user: int | None = None) -> int:
    """Run ``code`` (may use ``sc(name, *args)``) in a fresh child; returns the child's pid."""
    return run_program(code, user=user)[0]


def run_program(
    code: str, exe: str = sys.executable, user: int | None = None, before: Callable[[int], None] | None = None
) -> tuple[int, str]:
    """Run ``code`` (with ``sc(name, *args)`` for direct syscalls) in a fresh ``exe`` (a Python) as
    ``user``; returns its pid (known before any call) and what it printed on stderr. ``before`` gets the
    pid before the child makes any call (to move it into a container's cgroup, say)."""
    proc = subprocess.Popen(
        [exe, "-c", CALLER, textwrap.dedent(code)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, user=user, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    pid = int(proc.stdout.readline())
    if before is not None:
        try:
            before(pid)
        except BaseException:
            proc.kill()  # not left to run its calls where it should not
            proc.communicate()
            raise
    proc.stdin.write("go\n")
    proc.stdin.flush()
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return pid, err


def calls_of(agent: Agent, pid: int, action: str, count: int = 1) -> list[dict[str, Any]]:
    return agent.wait_for(
        lambda d: get(d, "process.pid") == pid and get(d, "event.action") == action,
        what=f"{action} by pid {pid}",
        count=count,
    )


def shown_id(value: int, group: bool = False) -> str:
    """A uid/gid argument as the agent shows it on this host (Falco's evt.arg): its name, else the number."""
    try:
        return grp.getgrgid(value).gr_name if group else pwd.getpwuid(value).pw_name
    except KeyError:
        return str(value)


def test_privilege_calls_carry_requested_and_resulting_ids(agent: Agent) -> None:
    pid = run_calls(
        """
        sc("setfsuid", 4321); sc("setfsgid", 4322)
        sc("setresgid", 1001, 1002, 1003); sc("setregid", 0xFFFFFFFF, 1004)
        sc("setresuid", 2001, 2002, 2003)
        sc("setuid", 0)  # now unprivileged: fails
        """
    )
    res = calls_of(agent, pid, "setresuid")[0]
    ruid, euid, suid = (shown_id(u) for u in (2001, 2002, 2003))  # names where this host has them
    assert get(res, "sentinel.event.arg") == {"ruid": ruid, "euid": euid, "suid": suid}
    assert get(res, "sentinel.event.rawarg") == {"ruid": 2001, "euid": 2002, "suid": 2003}
    assert get(res, "event.outcome") == "success" and get(res, "event.category") == ["process"]
    assert get(res, "sentinel.event.family") == "privilege"
    # The credentials the call left: the resulting ids.
    assert get(res, "process.user.id") == "2002" and get(res, "process.real_user.id") == "2001"
    assert get(res, "process.saved_user.id") == "2003"
    assert get(res, "sentinel.event.type") == "setresuid"
    regid = calls_of(agent, pid, "setregid")[0]
    assert get(regid, "sentinel.event.arg") == {"rgid": "-1", "egid": shown_id(1004, group=True)}
    fsuid = calls_of(agent, pid, "setfsuid")[0]
    assert (
        get(fsuid, "sentinel.event.rawarg.uid") == 4321 and get(fsuid, "sentinel.event.ret") == 0
    )  # old fsuid
    denied = calls_of(agent, pid, "setuid")[0]
    assert get(denied, "event.outcome") == "failure" and get(denied, "error.code") == "EPERM"
    assert get(denied, "sentinel.event.arg.uid") == "root" and get(denied, "sentinel.event.rawarg.uid") == 0


def test_capset_requested_sets(agent: Agent) -> None:
    pid = run_calls(
        """
        hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
        data = (ctypes.c_uint32 * 6)(1 << 21, 1 << 21, 0, 0, 0, 0)  # keep CAP_SYS_ADMIN only
        sc("capset", hdr, data)
        """
    )
    doc = calls_of(agent, pid, "capset")[0]
    assert get(doc, "event.outcome") == "success"
    assert get(doc, "sentinel.event.rawarg.cap_effective") == 1 << 21
    assert get(doc, "sentinel.event.arg.cap_permitted") == hex(1 << 21)


def test_ptrace_and_memory_writes_name_their_target(agent: Agent) -> None:
    victim = subprocess.Popen(["/bin/sleep", "30"])
    try:
        pid = run_calls(
            f"""
            sc("ptrace", 16, {victim.pid}, 0, 0)   # PTRACE_ATTACH
            sc("ptrace", 17, {victim.pid}, 0, 0)   # PTRACE_DETACH (fails: not stopped yet, or succeeds)
            sc("ptrace", 16, 999999999, 0, 0)      # no such process
            buf = ctypes.create_string_buffer(8)
            iov = (ctypes.c_uint64 * 2)(ctypes.addressof(buf), 8)
            sc("process_vm_writev", {victim.pid}, iov, 1, iov, 1, 0)
            """
        )
        attach = calls_of(agent, pid, "ptrace", count=3)
        first = attach[0]
        assert get(first, "sentinel.event.arg.request") == "PTRACE_ATTACH"
        assert get(first, "event.outcome") == "success" and get(first, "sentinel.event.family") == "injection"
        assert get(first, "sentinel.event.target.pid") == victim.pid
        assert get(first, "sentinel.event.target.executable") == os.path.realpath("/bin/sleep")
        missing = next(d for d in attach if get(d, "sentinel.event.rawarg.pid") == 999999999)
        assert get(missing, "error.code") == "ESRCH"
        write = calls_of(agent, pid, "process_vm_writev")[0]
        assert get(write, "sentinel.event.target.pid") == victim.pid
        assert get(write, "sentinel.event.rawarg.pid") == victim.pid
    finally:
        victim.kill()
        victim.wait()


def test_memfd_create_names_the_memfd(agent: Agent) -> None:
    name = "m" + uuid.uuid4().hex[:10]
    pid = run_calls(f'sc("memfd_create", b"{name}", 1); sc("memfd_create", None, 0)')
    docs = calls_of(agent, pid, "memfd_create", count=2)
    ok = next(d for d in docs if get(d, "sentinel.event.arg.name") == name)
    assert get(ok, "sentinel.event.arg.flags") == "MFD_CLOEXEC" and get(ok, "file.name") == f"memfd:{name}"
    assert get(ok, "event.outcome") == "success" and get(ok, "sentinel.event.ret") >= 0
    bad = next(d for d in docs if d is not ok)
    assert get(bad, "error.code") == "EFAULT"


def test_namespaces_and_mounts(agent: Agent, tmp_path: Path) -> None:
    target = tmp_path / ("mnt-" + uuid.uuid4().hex[:8])
    target.mkdir()
    pid = run_calls(
        f"""
        CLONE_NEWNS, CLONE_NEWUTS = 0x00020000, 0x04000000
        fd = os.open("/proc/self/ns/uts", os.O_RDONLY)  # the namespace it starts in, to go back to
        sc("unshare", CLONE_NEWNS | CLONE_NEWUTS)
        sc("mount", b"none", b"/", None, 0x40000 | 0x4000, None)   # make / private (MS_PRIVATE|MS_REC)
        sc("mount", b"sentinel-test", b"{target}", b"tmpfs", 2 | 4, None)    # MS_NOSUID|MS_NODEV
        sc("mount", b"none", b"{target}/does-not-exist", b"tmpfs", 0, None)  # fails: ENOENT
        sc("umount2", b"{target}", 2)   # MNT_DETACH
        sc("chroot", b"/nonexistent-root")
        sc("setns", fd, CLONE_NEWUTS)
        sc("pivot_root", b"/nonexistent-a", b"/nonexistent-b")
        import time; time.sleep(1.5)  # setns's fd is resolved through /proc while the process lives
        """
    )
    unshare = calls_of(agent, pid, "unshare")[0]
    assert get(unshare, "sentinel.event.arg.flags") == "CLONE_NEWNS|CLONE_NEWUTS"
    assert get(unshare, "sentinel.event.namespaces") == ["mnt", "uts"]
    mounts = calls_of(agent, pid, "mount", count=3)
    tmpfs = next(d for d in mounts if get(d, "sentinel.event.arg.dev") == "sentinel-test")
    assert get(tmpfs, "sentinel.event.arg.dir") == str(target)
    assert get(tmpfs, "sentinel.event.arg.type") == "tmpfs"
    assert get(tmpfs, "sentinel.event.arg.flags") == "NOSUID|NODEV"
    assert get(tmpfs, "event.outcome") == "success" and get(tmpfs, "event.category") == ["configuration"]
    failed = next(d for d in mounts if str(get(d, "sentinel.event.arg.dir")).endswith("does-not-exist"))
    assert get(failed, "error.code") == "ENOENT"
    umount = calls_of(agent, pid, "umount2")[0]
    assert get(umount, "sentinel.event.arg") == {"name": str(target), "flags": "DETACH"}
    chroot = calls_of(agent, pid, "chroot")[0]
    assert (
        get(chroot, "sentinel.event.arg.path") == "/nonexistent-root"
        and get(chroot, "error.code") == "ENOENT"
    )
    setns = calls_of(agent, pid, "setns")[0]
    assert (
        get(setns, "sentinel.event.arg.nstype") == "CLONE_NEWUTS" and get(setns, "event.outcome") == "success"
    )
    assert str(get(setns, "sentinel.event.fd_path")).startswith("uts:[")
    pivot = calls_of(agent, pid, "pivot_root")[0]
    assert get(pivot, "sentinel.event.arg") == {"new_root": "/nonexistent-a", "put_old": "/nonexistent-b"}


def test_signals_to_other_processes_name_the_target(agent: Agent) -> None:
    victim = subprocess.Popen(["/bin/sleep", "30"])
    try:
        pid = run_calls(
            f"""
            sc("kill", {victim.pid}, 0)         # existence check
            sc("kill", os.getpid(), 0)          # itself: not reported
            sc("tgkill", {victim.pid}, {victim.pid}, 10)   # SIGUSR1
            sc("kill", 999999999, 9)            # no such process
            """
        )
        kills = calls_of(agent, pid, "kill", count=2)
        assert all(get(d, "sentinel.event.rawarg.pid") != pid for d in kills)  # never to itself
        probe = next(d for d in kills if get(d, "sentinel.event.rawarg.pid") == victim.pid)
        assert get(probe, "sentinel.event.arg.sig") == "0" or get(probe, "sentinel.event.rawarg.sig") == 0
        assert get(probe, "sentinel.event.target.executable") == os.path.realpath("/bin/sleep")
        missing = next(d for d in kills if get(d, "sentinel.event.rawarg.pid") == 999999999)
        assert get(missing, "sentinel.event.arg.sig") == "SIGKILL" and get(missing, "error.code") == "ESRCH"
        tg = calls_of(agent, pid, "tgkill")[0]
        assert get(tg, "sentinel.event.arg") == {"pid": victim.pid, "tid": victim.pid, "sig": "SIGUSR1"}
        assert get(tg, "sentinel.event.family") == "signal"
    finally:
        victim.kill()
        victim.wait()


def test_bpf_program_load_says_type_and_name(agent: Agent) -> None:
    pid = run_calls(
        """
        insns = (ctypes.c_uint64 * 2)(0x00000000000000b7, 0x0000000000000095)  # r0 = 0; exit
        lic = ctypes.create_string_buffer(b"GPL")
        attr = (ctypes.c_uint8 * 128)()
        ctypes.c_uint32.from_buffer(attr, 0).value = 1            # BPF_PROG_TYPE_SOCKET_FILTER
        ctypes.c_uint32.from_buffer(attr, 4).value = 2
        ctypes.c_uint64.from_buffer(attr, 8).value = ctypes.addressof(insns)
        ctypes.c_uint64.from_buffer(attr, 16).value = ctypes.addressof(lic)
        ctypes.memmove(ctypes.addressof(attr) + 48, b"sntl_probe_t", 12)
        sc("bpf", 5, attr, 128)
        sc("bpf", 5, None, 128)   # EFAULT
        """
    )
    docs = calls_of(agent, pid, "bpf", count=2)
    ok = next(d for d in docs if get(d, "event.outcome") == "success")
    assert get(ok, "sentinel.event.arg.cmd") == "BPF_PROG_LOAD"
    assert get(ok, "sentinel.event.bpf") == {"prog_type": "socket_filter", "prog_name": "sntl_probe_t"}
    bad = next(d for d in docs if d is not ok)
    assert get(bad, "error.code") == "EFAULT"


def test_a_signal_to_the_agent_is_tamper_evidence(agent: Agent) -> None:
    code = f"import os; os.kill({agent.proc.pid}, {int(signal.SIGCONT)})"
    sender = subprocess.Popen([sys.executable, "-c", code])
    sender.wait()
    doc = agent.wait_for(
        lambda d: get(d, "event.action") == "tamper" and get(d, "process.pid") == sender.pid, what="tamper"
    )[0]
    want = {"kind": "signal", "target_tid": agent.proc.pid, "signal": "SIGCONT"}
    assert get(doc, "sentinel.event.tamper") == want


def test_module_syscalls_absent_on_this_kernel_are_said(agent: Agent) -> None:
    """Where the kernel has no module tracepoints (no CONFIG_MODULES), the agent says so at start."""
    ready = next(d for d in agent.diagnostics if d.get("event") == "sentinel.ready")
    absent = ready.get("optional_tracepoints_absent") or []
    present = os.path.exists("/sys/kernel/tracing/events/syscalls/sys_enter_init_module")
    assert ("syscalls/sys_enter_init_module" in absent) is not present
    assert "syscalls/sys_enter_setuid" not in absent and "signal/signal_generate" not in absent


def test_run_raises_an_internal_alert_when_the_agent_is_signalled_or_ptraced() -> None:
    from .test_detection import Detector

    d = Detector(("--model", "off"))
    try:
        sender = subprocess.Popen(
            [sys.executable, "-c", f"import os; os.kill({d.proc.pid}, {int(signal.SIGCONT)})"]
        )
        sender.wait()
        alert = d.wait_alert(
            "Agent tampered with", lambda a: get(a, "sentinel.tamper.sender_pid") == sender.pid
        )
        assert get(alert, "rule.ruleset") == "sentinel-internal"
        assert get(alert, "sentinel.tamper.signal") == "SIGCONT" and get(alert, "event.severity") is not None
        # Recorded at entry, whether it works or not: tried as nobody it fails (EPERM) and leaves the agent
        # running (a root PTRACE_ATTACH stops it until the tracer detaches: the kernel's record then tells).
        tracer = run_calls(f'sc("ptrace", 16, {d.proc.pid}, 0, 0)', user=65534)
        ptrace = d.wait_alert("Agent tampered with", lambda a: get(a, "sentinel.tamper.sender_pid") == tracer)
        assert get(ptrace, "sentinel.tamper.kind") == "ptrace"
    finally:
        assert d.stop() == 0
    stop = [a for a in d.alerts if get(a, "rule.name") == "Agent stopped or reloaded by a signal"]
    assert stop and get(stop[0], "sentinel.tamper.signal") == "SIGTERM"  # the test's own terminate()


def test_a_sigkilled_agent_is_reported_by_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pin of its own: another agent starting meanwhile (another test run on this host) would take the
    # record, as an agent takes every record not aimed at itself.
    monkeypatch.setenv("SENTINEL_TAMPER_PIN", f"/sys/fs/bpf/sentinel_tamper_test_{uuid.uuid4().hex[:8]}")
    first = Agent()
    killer = subprocess.Popen(["/bin/kill", "-KILL", str(first.proc.pid)])
    killer.wait()
    first.proc.wait(10)
    second = Agent()
    try:
        records = [d for d in second.diagnostics if d.get("event") == "sentinel.tampered_before"]
        mine = [r for r in records if r.get("sender_pid") == killer.pid]
        assert mine, f"no record of the SIGKILL from pid {killer.pid}: {records}"
        assert mine[0]["signal"] == int(signal.SIGKILL) and mine[0]["sender_comm"] == "kill"
        assert mine[0]["target_tid"] == first.proc.pid
    finally:
        second.stop()
    third = Agent()  # read once: the record is gone
    try:
        again = [d for d in third.diagnostics if d.get("event") == "sentinel.tampered_before"]
        assert not [r for r in again if r.get("sender_pid") == killer.pid]
    finally:
        third.stop()
        Path(os.environ["SENTINEL_TAMPER_PIN"]).unlink(missing_ok=True)


def test_the_default_rules_fire_on_the_real_calls(tmp_path: Path) -> None:
    """The shipped rules for these calls, on the real kernel, from a process no rule names."""
    from .test_detection import Detector

    d = Detector(("--model", "off"))
    try:
        mnt = tmp_path / "p"
        mnt.mkdir()
        victim = subprocess.Popen(["/bin/sleep", "30"])
        pid = run_calls(
            f"""
            sc("ptrace", 0x4206, {victim.pid}, 0, 0)            # PTRACE_SEIZE: attach without stopping it
            buf = ctypes.create_string_buffer(8)
            iov = (ctypes.c_uint64 * 2)(ctypes.addressof(buf), 8)
            sc("process_vm_writev", os.getpid(), iov, 1, iov, 1, 0)
            hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
            data = (ctypes.c_uint32 * 6)(1 << 21, 1 << 21, 0, 0, 0, 0)
            sc("capset", hdr, data)
            try:
                open("/proc/self/loginuid", "w").write("1000")
            except OSError:
                pass
            sc("setresuid", 1000, 1000, 0); sc("setuid", 0)
            sc("unshare", 0x00020000)                           # a mount namespace of its own
            sc("mount", b"none", b"/", None, 0x40000 | 0x4000, None)   # private: nothing leaks to the host
            sc("mount", b"proc", b"{mnt}", b"proc", 0, None)
            sc("unshare", 0x10000000)                           # then a user namespace
            """
        )
        victim.kill()
        victim.wait()
        for rule in (
            "Ptrace Attach To Another Process",
            "Process Memory Written By Another Process",
            "Capabilities Raised To Kernel Level",
            "User Namespace Created Outside Container Runtimes",
            "Sensitive Filesystem Mounted",
        ):
            lost = [get(a, "message") for a in d.alerts if get(a, "rule.name") == "Kernel events lost"]
            alert = d.wait_alert(rule, lambda a: get(a, "process.pid") == pid, timeout=20.0)
            assert get(alert, "rule.ruleset") != "sentinel-internal", lost
        login = Path(f"/proc/{os.getpid()}/loginuid").read_text().strip()
        setuid = [
            a for a in d.alerts if get(a, "rule.name") == "Non-root User Became Root Through A Setuid Call"
        ]
        if setuid:  # the child could set its login uid (an unset one can be set once)
            assert get(setuid[0], "process.pid") == pid
        else:
            assert login not in ("4294967295",), "the login uid was settable: the setuid rule must fire"
    finally:
        assert d.stop() == 0


def _init_ns_inode(kind: str) -> int:
    """pid 1's namespace of this kind: from /proc/1/ns, or (refused, as on our CI's VMs, whose pid 1 holds a
    capability root lacks) this process's, which is pid 1's there (the kernel's fixed initial numbers)."""
    try:
        return os.stat(f"/proc/1/ns/{kind}").st_ino
    except PermissionError:
        ino = os.stat(f"/proc/self/ns/{kind}").st_ino
        assert ino >= 0xEFFFFFF8, f"this test process is not in the initial {kind} namespace"
        return ino


def test_setns_says_which_namespace_it_joined_and_whose(agent: Agent) -> None:
    """The kernel resolves setns's fd: a namespace file (its inode; which of pid 1's namespaces it is) or a
    pidfd (its process, and whether the namespaces joined are pid 1's); with the caller's user namespace."""
    ready = next(d for d in agent.diagnostics if d.get("event") == "sentinel.ready")
    assert ready.get("kernel_offsets") == "btf", "these facts need the BTF offsets (this host has BTF)"
    assert ready.get("namespace_facts") is True
    pid = run_calls(
        """
        CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWUTS = 0x00020000, 0x40000000, 0x04000000
        sc("setns", os.open("/proc/self/ns/mnt", os.O_RDONLY), CLONE_NEWNS)   # pid 1's (the test checks)
        pidfd = sc("pidfd_open", os.getppid(), 0)           # the test: a host process in pid 1's namespaces
        sc("setns", pidfd, CLONE_NEWNS | CLONE_NEWNET)
        sc("unshare", CLONE_NEWUTS)
        mine = os.open("/proc/self/ns/uts", os.O_RDONLY)     # a namespace pid 1 is not in
        sc("setns", mine, CLONE_NEWUTS)
        sc("setns", 999, 0)                                  # EBADF: nothing to resolve
        """
    )
    docs = calls_of(agent, pid, "setns", count=4)
    by_fd = {get(d, "sentinel.event.rawarg.fd"): d for d in docs}
    mnt = next(d for d in docs if get(d, "sentinel.event.rawarg.nstype") == 0x00020000)
    assert get(mnt, "sentinel.event.setns") == {"init_ns": ["mnt"], "ns_inode": _init_ns_inode("mnt")}
    assert get(mnt, "sentinel.event.userns") == {"level": 0, "inode": _init_ns_inode("user")}
    via_pidfd = next(d for d in docs if get(d, "sentinel.event.rawarg.nstype") == 0x40020000)
    assert get(via_pidfd, "event.outcome") == "success"
    # Through a pidfd, the kernel says which process; the mount namespace joined is pid 1's.
    assert get(via_pidfd, "sentinel.event.setns") == {"init_ns": ["mnt"], "pid": os.getpid()}
    own = next(d for d in docs if get(d, "sentinel.event.rawarg.nstype") == 0x04000000)
    assert get(own, "sentinel.event.setns.init_ns") == [] and get(own, "sentinel.event.setns.ns_inode") > 0
    assert get(by_fd[999], "error.code") == "EBADF" and get(by_fd[999], "sentinel.event.setns") is None
    unshare = calls_of(agent, pid, "unshare")[0]
    assert get(unshare, "sentinel.event.userns.level") == 0


def test_a_mount_in_a_user_namespace_says_its_level(agent: Agent, tmp_path: Path) -> None:
    target = tmp_path / "u"
    target.mkdir()
    pid = run_calls(
        f"""
        sc("unshare", 0x10000000 | 0x00020000)              # CLONE_NEWUSER | CLONE_NEWNS
        open("/proc/self/uid_map", "w").write("0 0 1")
        open("/proc/self/setgroups", "w").write("deny")
        open("/proc/self/gid_map", "w").write("0 0 1")
        sc("mount", b"none", b"/", None, 0x40000 | 0x4000, None)
        sc("mount", b"sentinel-userns", b"{target}", b"tmpfs", 0, None)
        """
    )
    unshare = calls_of(agent, pid, "unshare")[0]
    assert get(unshare, "sentinel.event.userns.level") == 1  # after the call: the new namespace
    mounts = calls_of(agent, pid, "mount", count=2)
    tmpfs = next(d for d in mounts if get(d, "sentinel.event.arg.dev") == "sentinel-userns")
    assert get(tmpfs, "event.outcome") == "success", get(tmpfs, "error.code")
    assert get(tmpfs, "sentinel.event.userns.level") == 1
    assert get(tmpfs, "sentinel.event.userns.inode") not in (0, _init_ns_inode("user"))


def test_a_pidfd_signal_names_the_process_the_kernel_resolved(agent: Agent) -> None:
    victim = subprocess.Popen(["/bin/sleep", "30"])
    try:
        pid = run_calls(
            f"""
            pidfd = sc("pidfd_open", {victim.pid}, 0)
            sc("pidfd_send_signal", pidfd, 0, None, 0)
            sc("pidfd_getfd", pidfd, 1, 0)
            """
        )
        sig = calls_of(agent, pid, "pidfd_send_signal")[0]
        assert get(sig, "event.outcome") == "success"
        assert get(sig, "sentinel.event.target.pid") == victim.pid
        assert get(sig, "sentinel.event.target.executable") == os.path.realpath("/bin/sleep")
        taken = calls_of(agent, pid, "pidfd_getfd")[0]
        assert get(taken, "sentinel.event.arg") == {"pid_fd": get(sig, "sentinel.event.rawarg.pidfd"),
                                                    "target_fd": 1, "flags": "0x0"}  # fmt: skip
        assert get(taken, "sentinel.event.target.pid") == victim.pid
        assert get(taken, "sentinel.event.family") == "injection"
    finally:
        victim.kill()
        victim.wait()


def test_bpf_access_and_fd_theft_aimed_at_the_agent_are_internal_alerts() -> None:
    """Opening the agent's BPF map by id (with it, a process can rewrite what the sensor reports) and
    taking one of its fds with pidfd_getfd: recorded in the kernel, raised as internal alerts."""
    from sentinel.sensor.loader import own_bpf_object_ids

    from .test_detection import Detector

    d = Detector(("--model", "off"))
    try:
        ids = own_bpf_object_ids(f"/proc/{d.proc.pid}")
        assert ids, "the agent holds no BPF objects?"
        maps = []
        for fd in os.listdir(f"/proc/{d.proc.pid}/fdinfo"):
            text = Path(f"/proc/{d.proc.pid}/fdinfo/{fd}").read_text(errors="replace")
            maps += [int(line.split()[1]) for line in text.splitlines() if line.startswith("map_id:")]
        map_id = maps[0]
        opener = run_calls(
            f"""
            attr = (ctypes.c_uint32 * 4)({map_id}, 0, 0, 0)
            fd = sc("bpf", 14, attr, 16)                         # BPF_MAP_GET_FD_BY_ID
            assert fd >= 0, fd
            """
        )
        opened = d.wait_alert("Agent's BPF objects opened by another process",
                              lambda a: get(a, "sentinel.tamper.sender_pid") == opener)  # fmt: skip
        assert get(opened, "sentinel.tamper.object_id") == map_id
        assert get(opened, "sentinel.tamper.command") == "BPF_MAP_GET_FD_BY_ID"
        assert get(opened, "rule.ruleset") == "sentinel-internal"
        thief = run_calls(
            f"""
            pidfd = sc("pidfd_open", {d.proc.pid}, 0)
            assert sc("pidfd_getfd", pidfd, 2, 0) >= 0           # the agent's stderr
            """
        )
        stolen = d.wait_alert("Agent tampered with", lambda a: get(a, "sentinel.tamper.sender_pid") == thief)
        assert get(stolen, "sentinel.tamper.kind") == "fd theft"
        assert get(stolen, "sentinel.tamper.detail") == "fd 2"
    finally:
        assert d.stop() == 0


def test_the_escape_and_blinding_rules_fire_on_the_real_calls(tmp_path: Path) -> None:
    """Setns into pid 1's mount namespace through a host process's pidfd, a mount in a user namespace of
    one's own, and stop signals to a program named like auditd: each raises its shipped rule, from python3
    (named by no rule)."""
    from .test_detection import Detector

    tool = tmp_path / "auditd"
    tool.write_bytes(Path("/bin/sleep").read_bytes())
    tool.chmod(0o755)
    mnt = tmp_path / "m"
    mnt.mkdir()
    d = Detector(("--model", "off"))
    victim = subprocess.Popen([str(tool), "60"])
    try:
        pid = run_calls(
            f"""
            pidfd = sc("pidfd_open", os.getppid(), 0)            # a host process: pid 1's mount namespace
            sc("setns", pidfd, 0x00020000)
            tool = sc("pidfd_open", {victim.pid}, 0)
            sc("pidfd_send_signal", tool, 19, None, 0)           # SIGSTOP through a pidfd
            """
        )
        setns = d.wait_alert("Setns Into The Host's Namespaces", lambda a: get(a, "process.pid") == pid)
        assert "(mnt)" in get(setns, "message")
        stop = d.wait_alert("Signal Sent To A Security Tool", lambda a: get(a, "process.pid") == pid)
        assert "SIGSTOP sent to auditd" in get(stop, "message")
        killer = subprocess.Popen(["/bin/kill", "-KILL", str(victim.pid)])  # another program: its own alert
        killer.wait()
        kill = d.wait_alert("Signal Sent To A Security Tool", lambda a: get(a, "process.pid") == killer.pid)
        assert "SIGKILL sent to auditd" in get(kill, "message")
        inner = run_calls(
            f"""
            sc("unshare", 0x10000000 | 0x00020000)
            open("/proc/self/uid_map", "w").write("0 0 1")
            sc("mount", b"none", b"/", None, 0x40000 | 0x4000, None)
            sc("mount", b"none", b"{mnt}", b"tmpfs", 0, None)
            """
        )
        userns = d.wait_alert("Mount Inside A User Namespace", lambda a: get(a, "process.pid") == inner)
        assert "level 1" in get(userns, "message")
    finally:
        victim.kill()
        victim.wait()
        assert d.stop() == 0
