"""Every field on built exec/open/connect/chdir/fork/exit events, the field reference and docs/fields.md."""

from __future__ import annotations

import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sentinel.events import AF_INET, AF_INET6, AF_UNIX, FLAG_EXECVEAT, Event, EventType
from sentinel.process.facts import ProcFacts, ReplayFacts
from sentinel.process.table import Process, ProcessTable
from sentinel.rules import EvalContext
from sentinel.rules.fields import ALL, FIELDS, FIELDS_LIST, reference
from sentinel.syscalls import SYSCALLS
from tests.unit.rules_support import WALL, connect_ctx, event, exec_ctx, open_ctx, ruleset, web_shell

REPO = Path(__file__).resolve().parents[2]
RS = ruleset(
    "- rule: any\n  desc: d\n  condition: evt.type = execve\n  output: o\n  priority: debug\n"
)  # field_value needs a RuleSet, not any particular rule

NEVER = {f.name for f in FIELDS_LIST if not f.on}

EXEC_VALUES: dict[str, Any] = {
    "evt.type": "execve",
    "evt.time": WALL,
    "evt.rawtime": WALL,
    "evt.rawtime.s": 1_700_000_000,
    "evt.rawtime.ns": 123_456_789,
    "evt.source": "syscall",
    "thread.ismain": True,
    "evt.time.iso8601": "2023-11-14T22:13:20.123456789Z",
    "evt.dir": "<",
    "evt.res": "SUCCESS",
    "evt.rawres": 0,
    "evt.failed": False,
    "evt.arg.filename": "/usr/bin/bash",
    "evt.arg.dirfd": -100,
    "evt.arg.res": 0,
    "evt.rawarg.res": 0,
    "proc.pid": 4242,
    "thread.tid": 4242,
    "proc.ppid": 900,
    "proc.name": "bash",
    "proc.exe": "bash",
    "proc.exepath": "/usr/bin/bash",
    "proc.args": "-c id; uname -a",
    "proc.cmdline": "bash -c id; uname -a",
    "proc.cmdnargs": 2,
    "proc.cmdlenargs": 15,
    "proc.cwd": "/srv",
    "proc.tty": 0,
    "proc.duration": 10_000_000_000,
    "proc.is_exe_from_memfd": False,
    "proc.is_exe_deleted": False,
    "proc.pname": "nginx",
    "proc.pexe": "nginx",
    "proc.pexepath": "/usr/sbin/nginx",
    "proc.pcmdline": "nginx -g daemon off;",
    "proc.aname": ["nginx", "systemd"],
    "proc.aname[0]": "bash",
    "proc.aname[2]": "systemd",
    "proc.aname[3]": None,
    "proc.aexe": ["nginx", "/sbin/init"],
    "proc.aexe[1]": "nginx",
    "proc.aexepath": ["/usr/sbin/nginx", "/usr/lib/systemd/systemd"],
    "proc.aexepath[1]": "/usr/sbin/nginx",
    "proc.apid": [900, 800],
    "proc.apid[0]": 4242,
    "proc.acmdline": ["nginx -g daemon off;", "systemd"],
    "proc.acmdline[2]": "systemd",
    "user.uid": 33,
    "user.name": "www-data",
    "user.loginuid": 33,
    "user.loginname": "www-data",
    "thread.cap_effective": "CAP_CHOWN CAP_NET_RAW",
    "thread.cap_permitted": "CAP_CHOWN CAP_NET_RAW CAP_SYS_ADMIN",
    "group.gid": 33,
    "group.name": "www-data",
    "container.id": "host",
    "container.full_id": "host",
    "container.type": "host",
    "container.name": "host",
    "container.info": "host",
    "sentinel.exec.filename": "/usr/bin/bash",
    "sentinel.proc.entity_id": "ent0",
    "sentinel.proc.cmdline": "bash -c 'id; uname -a'",
    "sentinel.proc.cmdline_joined": "bash -c id; uname -a",
    "sentinel.proc.argv[0]": "bash",
    "sentinel.proc.argv[2]": "id; uname -a",
    "sentinel.proc.argv[3]": None,
    "sentinel.proc.pcmdline": "nginx -g 'daemon off;'",
    "sentinel.proc.pcmdline_joined": "nginx -g daemon off;",
}
OPEN_VALUES: dict[str, Any] = {
    "evt.type": "openat",
    "evt.is_open_read": False,
    "evt.is_open_write": True,
    "evt.is_open_create": True,
    "evt.arg.flags": "O_WRONLY|O_CREAT|O_TRUNC",
    "evt.rawarg.flags": 0o1101,
    "evt.arg.mode": "0644",
    "evt.rawarg.mode": 0o644,
    "evt.arg.name": "x.conf",
    "evt.arg.path": "x.conf",
    "evt.arg.fd": 7,
    "evt.arg.dirfd": -100,
    "evt.res": "SUCCESS",
    "fd.name": "/etc/cron.d/x.conf",
    "fd.nameraw": "x.conf",
    "fd.directory": "/etc/cron.d",
    "fd.filename": "x.conf",
    "fd.typechar": "f",
    "fd.type": "file",
    "fd.num": 7,
    "sentinel.event.repeat_count": 3,
    "proc.name": "bash",
    "sentinel.exec.filename": "/usr/bin/bash",
}
CONNECT_VALUES: dict[str, Any] = {
    "evt.type": "connect",
    "evt.arg.fd": 5,
    "evt.arg.res": -115,
    "evt.arg.tuple": "0.0.0.0:0->203.0.113.7:4444",
    "evt.res": "EINPROGRESS",
    "evt.failed": True,
    "fd.name": "0.0.0.0:0->203.0.113.7:4444",
    "fd.nameraw": "0.0.0.0:0->203.0.113.7:4444",
    "fd.typechar": "4",
    "fd.type": "ipv4",
    "fd.num": 5,
    "fd.ip": "203.0.113.7",
    "fd.sip": "203.0.113.7",
    "fd.rip": "203.0.113.7",
    "fd.sport": 4444,
    "fd.rport": 4444,
    "fd.port": 4444,
    "fd.snet": "203.0.113.7",
    "fd.rnet": "203.0.113.7",
    "fd.net": "203.0.113.7",
    "fd.sockfamily": "ip",
    "fd.l4proto": "tcp",
    "fd.connected": False,  # EINPROGRESS: not yet
}


def open_event() -> EvalContext:
    ctx = open_ctx("/etc/cron.d/x.conf", flags=0o1101, raw="x.conf", ret=7, mode=0o644, repeat_count=3)
    return ctx


def test_every_field_is_covered_here() -> None:
    covered = set(EXEC_VALUES) | set(OPEN_VALUES) | set(CONNECT_VALUES) | NEVER | {"evt.is_open_exec"}
    covered |= {
        f"evt.{kind}.{a.name}" for spec in SYSCALLS.values() for a in spec.args for kind in ("arg", "rawarg")
    }
    covered |= {f.name for f in FIELDS_LIST if f.name.startswith("ml.")}  # test_rules_ml_fields.py
    covered |= set(TARGET_VALUES) | set(NAMESPACE_VALUES) | set(VIEW_VALUES)
    covered |= {f"fs.path.{r}{s}" for r in ("name", "source", "target") for s in ("", "raw")}  # file_changes
    covered |= {"fd.cip", "fd.cport", "fd.cnet", "fd.lip", "fd.lport", "fd.lnet"}  # test_sockets
    covered |= {"sentinel.dest.resolver", "fd.name_changed"}  # test_sockets
    # test_rules_containers.py: the container's and the pod's, in a container, on the host, with an answer
    covered |= {f.name for f in FIELDS_LIST if f.name.startswith(("container.", "k8s."))}
    names = {k.split("[")[0] for k in covered}
    missing = [f.name for f in FIELDS_LIST if f.name not in names]
    assert missing == [], "fields without a test value"


def _user_text(uid: int) -> str:
    """What evt.arg shows for a uid on this host: its name, else the number."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _sys_ctx(
    etype: EventType, args: tuple[int, ...], strs: tuple[str, ...] = (), extra=(0, 0, 0)
) -> EvalContext:
    ev = Event(etype, 5, 321, 321, 0, 0, "x", ret=-1, sys_args=args, sys_extra=extra, sys_strs=strs)
    return EvalContext(ev, None, None, WALL)


@pytest.mark.parametrize(
    ("etype", "args", "strs", "extra", "want"),
    [
        (EventType.SETRESUID, (0, 0xFFFFFFFF, 1000, 0, 0, 0), (), (0, 0, 0),
         {"evt.arg.ruid": "root", "evt.arg.euid": "-1", "evt.rawarg.euid": 0xFFFFFFFF,
          "evt.rawarg.ruid": 0, "evt.arg.suid": _user_text(1000)}),
        (EventType.PTRACE, (16, 4242, 0, 0, 0, 0), (), (0, 0, 0),
         {"evt.arg.request": "PTRACE_ATTACH", "evt.rawarg.request": 16, "evt.arg.pid": 4242}),
        (EventType.MOUNT, (1, 2, 3, 0x1000 | 0x4000, 0, 0), ("/", "/mnt", "none"), (0, 0, 0),
         {"evt.arg.dev": "/", "evt.arg.dir": "/mnt", "evt.arg.type": "none", "evt.arg.flags": "BIND|REC",
          "evt.rawarg.flags": 0x5000}),
        (EventType.UNSHARE, (0x10000000, 0, 0, 0, 0, 0), (), (0, 0, 0), {"evt.arg.flags": "CLONE_NEWUSER"}),
        (EventType.KILL, (1, 9, 0, 0, 0, 0), (), (0, 0, 0), {"evt.arg.sig": "SIGKILL", "evt.arg.pid": 1}),
        (EventType.CAPSET, (1, 2, 0, 0, 0, 0), (), (1 << 21, 1 << 21, 0),
         {"evt.rawarg.cap_effective": 1 << 21, "evt.arg.cap_permitted": "0x200000"}),
        (EventType.MEMFD_CREATE, (1, 1, 0, 0, 0, 0), ("x",), (0, 0, 0),
         {"evt.arg.name": "x", "evt.arg.flags": "MFD_CLOEXEC", "evt.arg.res": -1}),
    ],
)  # fmt: skip
def test_security_syscall_arguments(etype: EventType, args: tuple[int, ...], strs: tuple[str, ...],
                                    extra: tuple[int, ...], want: dict[str, Any]) -> None:  # fmt: skip
    ctx = _sys_ctx(etype, args, strs, extra)
    for name, value in want.items():
        assert RS.field_value(name, ctx) == value, name
    assert RS.field_value("evt.type", ctx) == SYSCALLS[etype].name
    assert RS.field_value("evt.arg.filename", ctx) is None  # exec's: missing here


TARGET_VALUES: dict[str, Any] = {
    "sentinel.target.pid": 512,
    "sentinel.target.name": "auditd",
    "sentinel.target.exepath": "/usr/sbin/auditd",
}
NAMESPACE_VALUES: dict[str, Any] = {"sentinel.setns.init_ns": "mnt|pid", "sentinel.userns.level": 2}


# A container's first process (vpid 1) as the table has it after its exec; its parent (runc) on the host.
VIEW_VALUES: dict[str, Any] = {
    "proc.vpid": 1,
    "proc.pvpid": 900,
    "thread.vtid": 1,
    "sentinel.proc.pid_ns": 4026532245,
    "sentinel.proc.mnt_ns": 4026532243,
    "sentinel.proc.host_pid_ns": False,
}


def in_container() -> Process:
    proc = web_shell()
    proc.vpid, proc.pid_ns, proc.mnt_ns, proc.host_pid_ns = 1, 4026532245, 4026532243, False
    assert proc.parent is not None
    proc.parent.vpid, proc.parent.pid_ns, proc.parent.host_pid_ns = 900, 4026531836, True
    return proc


def test_the_in_container_view() -> None:
    ctx = exec_ctx(in_container())
    for name, value in VIEW_VALUES.items():
        assert RS.field_value(name, ctx) == value, name
    # Another thread of the process: its vtid is not known (only the main thread's is proc.vpid).
    thread = exec_ctx(in_container())
    thread.ev.tid = thread.ev.pid + 1
    assert RS.field_value("thread.vtid", thread) is None and RS.field_value("proc.vpid", thread) == 1
    # Unknown (no kernel offsets, a process seen only forked without them): missing, never 0 or the host pid.
    unknown = exec_ctx()
    for name in VIEW_VALUES:
        assert RS.field_value(name, unknown) is None, name


def test_falcos_container_started_macro() -> None:
    """``spawned_process and proc.vpid=1 and container``: a container's first process, not a later one,
    not a host process that happens to be pid 1's namespace's init."""
    from sentinel.containers import ContainerRef

    rules = ruleset(
        "- macro: spawned_process\n  condition: (evt.type in (execve, execveat))\n"
        "- macro: container\n  condition: (container.id != host)\n"
        "- macro: container_started\n  condition: (spawned_process and proc.vpid=1 and container)\n"
        "- rule: started\n  desc: d\n  condition: container_started\n  output: o %proc.vpid\n"
        "  priority: info\n"
    )
    cid = "ab" * 32
    first = in_container()
    first.container = ContainerRef("podman", cid, cid[:12])
    assert [r.name for r in rules.match(exec_ctx(first))] == ["started"]
    later = in_container()
    later.container, later.vpid = first.container, 7  # `podman exec`: its own, small vpid
    assert rules.match(exec_ctx(later)) == []
    host_init = in_container()  # vpid 1 on the host: init itself
    assert rules.match(exec_ctx(host_init)) == []
    unknown = web_shell()
    unknown.container = first.container
    assert rules.match(exec_ctx(unknown)) == []  # vpid missing: never taken for 1
    assert rules.match(open_ctx("/etc/hosts", proc=first)) == []


def test_target_fields_read_the_process_the_call_is_aimed_at() -> None:
    ctx = _sys_ctx(EventType.KILL, (512, 9, 0, 0, 0, 0))
    assert RS.field_value("sentinel.target.pid", ctx) == 512
    assert RS.field_value("sentinel.target.name", ctx) is None  # the table did not know it
    ctx.target = Process(512, 1, 0, "e-512", "auditd", exe="/usr/sbin/auditd")
    for name, value in TARGET_VALUES.items():
        assert RS.field_value(name, ctx) == value, name
    # A pidfd's process is the one the kernel resolved (extra[1]); unresolved, it is missing.
    pidfd = _sys_ctx(EventType.PIDFD_SEND_SIGNAL, (3, 19, 0, 0, 0, 0), extra=(0, 512, 0))
    assert RS.field_value("sentinel.target.pid", pidfd) == 512
    unresolved = _sys_ctx(EventType.PIDFD_SEND_SIGNAL, (3, 19, 0, 0, 0, 0))
    assert RS.field_value("sentinel.target.pid", unresolved) is None
    group = _sys_ctx(EventType.KILL, (0, 9, 0, 0, 0, 0))
    assert RS.field_value("sentinel.target.pid", group) is None
    assert RS.field_value("sentinel.target.pid", _sys_ctx(EventType.MOUNT, (1, 2, 3, 0, 0, 0))) is None


def test_namespace_fields_decode_what_the_probe_resolved() -> None:
    from sentinel.syscalls import NS_KINDS, USERNS_KNOWN

    mnt_pid = (1 << NS_KINDS.index("mnt") | 1 << NS_KINDS.index("pid")) << 32
    userns = 7 | 2 << 32 | USERNS_KNOWN
    setns = _sys_ctx(EventType.SETNS, (3, 0, 0, 0, 0, 0), extra=(4026531841, mnt_pid, userns))
    for name, value in NAMESPACE_VALUES.items():
        assert RS.field_value(name, setns) == value, name
    other = _sys_ctx(EventType.SETNS, (3, 0, 0, 0, 0, 0), extra=(4026532999, 0, 0))
    assert RS.field_value("sentinel.setns.init_ns", other) == ""  # a namespace pid 1 is not in
    assert RS.field_value("sentinel.userns.level", other) is None  # not read (no BTF)
    # pid 1's pidfd: the kinds asked for in nstype are pid 1's.
    pidfd = _sys_ctx(EventType.SETNS, (5, 0x00020000 | 0x40000000, 0, 0, 0, 0), extra=(77, 1, 0))
    assert RS.field_value("sentinel.setns.init_ns", pidfd) == "mnt|net"
    unknown = _sys_ctx(EventType.SETNS, (3, 0, 0, 0, 0, 0))
    assert RS.field_value("sentinel.setns.init_ns", unknown) is None
    host = _sys_ctx(EventType.MOUNT, (1, 2, 3, 0, 0, 0), extra=(0, 0, 4026531837 | USERNS_KNOWN))
    assert RS.field_value("sentinel.userns.level", host) == 0
    assert RS.field_value("sentinel.userns.level", _sys_ctx(EventType.KILL, (1, 9, 0, 0, 0, 0))) is None


@pytest.mark.parametrize("etype", sorted(SYSCALLS))
def test_every_security_argument_reads_from_the_event(etype: EventType) -> None:
    ctx = _sys_ctx(etype, (1, 2, 3, 4, 5, 6), ("s0", "s1", "s2"), (7, 8, 9))
    for arg in SYSCALLS[etype].args:
        raw = RS.field_value(f"evt.rawarg.{arg.name}", ctx)
        src, i = arg.source[0], int(arg.source[1])
        if arg.kind == "time":  # utimensat's times: seconds and nanoseconds together (test_file_changes)
            assert isinstance(raw, int)
            continue
        if arg.kind == "sock":  # a socket end packed into the extras (test_sockets): none packed here
            continue
        assert raw == {"a": (1, 2, 3, 4, 5, 6), "x": (7, 8, 9), "s": ("s0", "s1", "s2")}[src][i], arg
        assert RS.field_value(f"evt.arg.{arg.name}", ctx) is not None, arg


@pytest.mark.parametrize("name", sorted(EXEC_VALUES))
def test_exec_fields(name: str) -> None:
    assert RS.field_value(name, exec_ctx()) == EXEC_VALUES[name]


@pytest.mark.parametrize("name", sorted(OPEN_VALUES))
def test_open_fields(name: str) -> None:
    assert RS.field_value(name, open_event()) == OPEN_VALUES[name]


def test_a_failed_open_is_fd_num_minus_one_as_falco_has_it() -> None:
    failed = open_ctx("/etc/shadow", ret=-13)
    assert RS.field_value("fd.num", failed) == -1
    assert RS.field_value("evt.res", failed) == "EACCES" and RS.field_value("evt.rawres", failed) == -13
    falco = ruleset(
        "- macro: open_file_failed\n  condition: (evt.type in (open,openat,openat2) and fd.typechar='f' and "
        "fd.num=-1 and evt.res startswith E)\n"
        "- rule: failed\n  desc: d\n  condition: open_file_failed\n  output: o\n  priority: debug\n"
    )
    assert [r.name for r in falco.match(failed)] == ["failed"]
    assert falco.match(open_ctx("/etc/shadow", ret=0)) == []
    assert RS.field_value("fd.num", open_ctx("/etc/hosts", ret=0)) == 0  # fd 0 is a success


@pytest.mark.parametrize("name", sorted(CONNECT_VALUES))
def test_connect_fields(name: str) -> None:
    assert RS.field_value(name, connect_ctx(ret=-115)) == CONNECT_VALUES[name]


def test_fields_missing_on_other_event_types() -> None:
    exec_only = ["evt.arg.filename"]
    open_only = [
        "fd.directory",
        "fd.filename",
        "evt.is_open_read",
        "evt.arg.flags",
        "evt.arg.mode",
        "sentinel.event.repeat_count",
    ]
    connect_only = ["fd.sip", "fd.sport", "fd.snet", "fd.l4proto", "fd.sockfamily", "evt.arg.tuple"]
    for name in open_only + connect_only:
        assert RS.field_value(name, exec_ctx()) is None, name
    for name in exec_only + connect_only:
        assert RS.field_value(name, open_event()) is None, name
    for name in exec_only + open_only:
        assert RS.field_value(name, connect_ctx()) is None, name
    for name in sorted(NEVER):
        probe = f"{name}[0]" if FIELDS[name].arg in ("index", "key") else name  # an argument it needs
        for ctx in (exec_ctx(), open_event(), connect_ctx()):
            assert RS.field_value(probe, ctx) is None, name


def test_other_event_shapes() -> None:
    ctx = exec_ctx(flags=FLAG_EXECVEAT, ret=-2)
    assert RS.field_value("evt.type", ctx) == "execveat"
    assert RS.field_value("evt.res", ctx) == "ENOENT"
    assert RS.field_value("evt.failed", ctx) is True
    v6 = connect_ctx("2001:db8::5", 443, family=AF_INET6, sock_type=2)
    assert RS.field_value("fd.name", v6) == ":::0->2001:db8::5:443"
    assert RS.field_value("fd.typechar", v6) == "6"
    assert RS.field_value("fd.l4proto", v6) == "udp"
    unix = connect_ctx("@/tmp/.X11-unix/X0", 0, family=AF_UNIX)
    assert RS.field_value("fd.name", unix) == "@/tmp/.X11-unix/X0"
    assert RS.field_value("fd.typechar", unix) == "u"
    assert RS.field_value("fd.sport", unix) is None
    other = connect_ctx("", 0, family=17)
    assert RS.field_value("fd.typechar", other) == "o"
    assert RS.field_value("fd.name", other) is None
    proc = web_shell()
    chdir = EvalContext(event(EventType.CHDIR, proc, path="/tmp/work"), proc, "/tmp/work", WALL)
    assert RS.field_value("evt.type", chdir) == "chdir"
    assert RS.field_value("fd.name", chdir) == "/tmp/work"
    assert RS.field_value("fd.directory", chdir) == "/tmp"
    fchdir = EvalContext(event(EventType.CHDIR, proc, path=""), proc, None, WALL)
    assert RS.field_value("evt.type", fchdir) == "fchdir"
    assert RS.field_value("fd.name", fchdir) is None
    fork = EvalContext(event(EventType.FORK, proc, child_pid=5), proc, None, WALL)
    assert RS.field_value("evt.type", fork) == "clone"
    exit_ = EvalContext(event(EventType.EXIT, proc), proc, None, WALL)
    assert RS.field_value("evt.type", exit_) == "procexit"
    opened2 = open_ctx("/x", evflags=8)
    assert RS.field_value("evt.type", opened2) == "openat2"
    assert RS.field_value("fd.typechar", open_ctx("/etc", flags=0o200000)) == "d"
    relative = open_ctx("notes.txt")  # cwd unknown: the path stays relative
    assert RS.field_value("fd.directory", relative) is None
    assert RS.field_value("fd.filename", relative) == "notes.txt"


def test_memfd_and_deleted_executables() -> None:
    """The kernel's view decides, not the name: a file named like a memfd is not one."""
    proc = web_shell()
    proc.exe, proc.exe_memfd = "memfd:payload", True
    ctx = exec_ctx(proc)
    assert RS.field_value("proc.is_exe_from_memfd", ctx) is True
    assert RS.field_value("proc.exepath", ctx) == "memfd:payload"
    assert RS.field_value("proc.is_exe_deleted", ctx) is False
    proc.exe, proc.exe_memfd, proc.exe_deleted = "/memfd:payload (deleted)", False, False
    assert RS.field_value("proc.is_exe_from_memfd", ctx) is False
    proc.exe, proc.exe_deleted = "/tmp/dropper", True
    assert RS.field_value("proc.is_exe_deleted", ctx) is True
    proc.exe = ""
    assert RS.field_value("proc.exepath", ctx) is None


def test_credentials_fields_without_btf_are_missing_and_user_uid_is_real() -> None:
    proc = web_shell()
    proc.creds = None
    ctx = exec_ctx(proc)
    for name in ("user.loginuid", "user.loginname", "thread.cap_effective", "thread.cap_permitted"):
        assert RS.field_value(name, ctx) is None, name
    assert RS.field_value("user.uid", ctx) == 33  # the real uid, the only one known


def test_user_uid_is_the_effective_user_and_loginuid_unset_is_minus_one() -> None:
    proc = web_shell()
    assert proc.creds is not None
    proc.creds = proc.creds._replace(euid=0, loginuid=4294967295, sessionid=4294967295)
    ctx = exec_ctx(proc)
    assert RS.field_value("user.uid", ctx) == 0 and RS.field_value("user.name", ctx) == "root"
    assert RS.field_value("user.loginuid", ctx) == -1 and RS.field_value("user.loginname", ctx) is None


def test_without_a_process_only_event_fields_exist() -> None:
    ctx = exec_ctx()
    ctx.proc = None
    assert RS.field_value("proc.pid", ctx) == 4242
    assert RS.field_value("proc.name", ctx) == "bash"  # the event's comm
    assert RS.field_value("user.uid", ctx) == 33
    assert RS.field_value("proc.pname", ctx) is None
    assert RS.field_value("proc.cmdline", ctx) is None
    assert RS.field_value("user.name", ctx) is None
    assert RS.field_value("evt.type", ctx) == "execve"


def test_transformed_field_values() -> None:
    ctx = open_event()
    assert RS.field_value("toupper(fd.filename)", ctx) == "X.CONF"
    assert RS.field_value("len(fd.name)", ctx) == len("/etc/cron.d/x.conf")
    assert RS.field_value("tolower(proc.aname)", exec_ctx()) == ["nginx", "systemd"]
    with pytest.raises(ValueError, match="unknown field"):
        RS.field_value("proc.nope", ctx)
    with pytest.raises(ValueError):
        RS.field_value("not a field", ctx)


def test_fields_from_a_process_table() -> None:
    """The fields read what the process table built from fork/exec events and /proc facts."""
    facts = ReplayFacts()
    facts.feed(ProcFacts(1, 1, 0, "systemd", "/usr/lib/systemd/systemd", "/", ["/sbin/init"], 0, 0))
    facts.feed(ProcFacts(700, 50, 1, "sshd", "/usr/sbin/sshd", "/", ["sshd", "-D"], 0, 0))
    users = {0: "root", 1000: "alice"}
    table = ProcessTable("boot", facts, clk_tck=100, user_lookup=users.get, group_lookup=users.get)
    table.bootstrap()
    s = 1_000_000_000

    def ev(etype: EventType, ts: int, pid: int, comm: str, **kw: Any) -> Event:
        return Event(type=etype, ts_ns=ts, pid=pid, tid=pid, uid=1000, gid=1000, comm=comm, **kw)

    table.apply(ev(EventType.FORK, 10 * s, 700, "sshd", child_pid=800))
    facts.feed_realpath("/bin/bash", "/usr/bin/bash")
    exe = ev(EventType.EXEC, 11 * s, 800, "bash", filename="/bin/bash", argv=["-bash"], argc_total=1)
    proc = table.apply(exe)
    assert proc is not None
    ctx = EvalContext(exe, proc, None, WALL)
    assert RS.field_value("proc.name", ctx) == "bash"
    assert RS.field_value("proc.pname", ctx) == "sshd"
    assert RS.field_value("proc.aname[2]", ctx) == "systemd"
    assert RS.field_value("proc.exe", ctx) == "-bash"
    assert RS.field_value("sentinel.exec.filename", ctx) == "/bin/bash"
    assert RS.field_value("user.name", ctx) == "alice"
    opened = ev(EventType.OPEN, 12 * s, 800, "bash", path=".bash_history", open_flags=0o2101, ret=3)
    proc = table.apply(opened)
    assert proc is not None
    path = table.resolve_path(proc, opened.dirfd, opened.path)
    octx = EvalContext(opened, proc, path, WALL)
    assert RS.field_value("proc.duration", octx) == 2 * s  # forked at 10 s, opened at 12 s
    assert RS.field_value("fd.name", octx) == "/.bash_history"  # cwd inherited from sshd
    assert RS.field_value("fd.filename", octx) == ".bash_history"
    assert RS.field_value("evt.arg.flags", octx) == "O_WRONLY|O_CREAT|O_APPEND"
    conn = ev(
        EventType.CONNECT, 13 * s, 800, "bash", fd=3, family=AF_INET, address="10.0.0.1", port=22, sock_type=1
    )
    proc = table.apply(conn)
    assert RS.field_value("fd.name", EvalContext(conn, proc, None, WALL)) == "0.0.0.0:0->10.0.0.1:22"


def test_reference_lists_every_field() -> None:
    text = reference()
    md = reference(markdown=True)
    for f in FIELDS_LIST:
        assert f.name in text and f"`{f.name}" in md
    assert "| `proc.aname[N]` | string | all |" in md
    assert set(FIELDS) == {f.name for f in FIELDS_LIST}  # no duplicate names
    assert all(set(f.on) <= set(ALL) for f in FIELDS_LIST)


def test_docs_fields_md_is_up_to_date() -> None:
    """docs/fields.md is generated: `sentinel fields --markdown > docs/fields.md`."""
    doc = (REPO / "docs" / "fields.md").read_text(encoding="utf-8")
    assert doc == reference(markdown=True) + "\n", "regenerate: sentinel fields --markdown > docs/fields.md"


def test_fields_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sentinel.cli", "fields", "--markdown"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == reference(markdown=True) + "\n"
    plain = subprocess.run(
        [sys.executable, "-m", "sentinel.cli", "fields"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "proc.cmdline" in plain.stdout and plain.returncode == 0
