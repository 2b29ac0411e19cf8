"""The security-relevant syscalls the sensor reports (bpf_probes/sentinel_security.c): what each carries.

One table, read by the decoder's consumers (ECS documents, rule fields, ``sentinel events --types``): for each
call its Falco ``evt.type`` name, its family, and its arguments under Falco's parameter names (the newest
exit event's), each taken from the raw arguments the probe stashed at entry (``a0``…``a5``), from what it
read behind a pointer (``x0``…``x2``) or from a string (``s0``…``s2``). ``evt.arg.NAME`` is the argument as
Falco prints it (flag names joined with ``|``, a signal's name, a request's name), ``evt.rawarg.NAME`` the
number. Where Falco has no dedicated event (setfsuid, setfsgid, pivot_root, move_mount,
pidfd_send_signal), the names are the kernel's parameter names.

Some facts come from the kernel beside the arguments (kernels with BTF): which namespace a setns joined and
whether pid 1 is in it (:func:`setns_target`), which process a pidfd names (:func:`target_pid`), and the
caller's user namespace after a mount, setns or unshare (:func:`caller_userns`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from sentinel.alerts.identity import group_name, user_name
from sentinel.events import Event, EventType
from sentinel.sockets import sock_name
from sentinel.syscall_names import AT_FLAGS as AT_FLAGS
from sentinel.syscall_names import BPF_COMMANDS as BPF_COMMANDS
from sentinel.syscall_names import BPF_PROG_LOAD as BPF_PROG_LOAD
from sentinel.syscall_names import BPF_PROG_TYPES as BPF_PROG_TYPES
from sentinel.syscall_names import CHMOD_MODE_FLAGS as CHMOD_MODE_FLAGS
from sentinel.syscall_names import CLONE_FLAGS as CLONE_FLAGS
from sentinel.syscall_names import DELETE_MODULE_FLAGS as DELETE_MODULE_FLAGS
from sentinel.syscall_names import FINIT_FLAGS as FINIT_FLAGS
from sentinel.syscall_names import LINKAT_FLAGS as LINKAT_FLAGS
from sentinel.syscall_names import MEMFD_FLAGS as MEMFD_FLAGS
from sentinel.syscall_names import MOUNT_FLAGS as MOUNT_FLAGS
from sentinel.syscall_names import MOVE_MOUNT_FLAGS as MOVE_MOUNT_FLAGS
from sentinel.syscall_names import NAMESPACE_FLAGS as NAMESPACE_FLAGS
from sentinel.syscall_names import PTRACE_REQUESTS as PTRACE_REQUESTS
from sentinel.syscall_names import RENAMEAT2_FLAGS as RENAMEAT2_FLAGS
from sentinel.syscall_names import UMOUNT_FLAGS as UMOUNT_FLAGS
from sentinel.syscall_names import UNCHANGED as UNCHANGED
from sentinel.syscall_names import UNLINKAT_FLAGS as UNLINKAT_FLAGS
from sentinel.syscall_names import clone_flag_names as clone_flag_names
from sentinel.syscall_names import flag_names as flag_names
from sentinel.syscall_names import id_text as id_text
from sentinel.syscall_names import signal_name as signal_name

TAMPER_KINDS = {1: "signal", 2: "ptrace", 3: "memory access", 4: "bpf access", 5: "fd theft"}
TAMPER_SIGNAL, TAMPER_PTRACE, TAMPER_BPF, TAMPER_FD = 1, 2, 4, 5


class TamperFields(NamedTuple):
    """What a tamper record says: its kind (TAMPER_KINDS), the signal number, ptrace request, bpf command or
    fd taken, and the agent thread it was aimed at (for bpf access: the id of the agent's BPF object)."""

    kind: int
    detail: int
    target_tid: int


def tamper_fields(ev: Event) -> TamperFields:
    """The fields of a tamper record (zeros where a short record lacks them)."""
    return TamperFields(*(*ev.sys_args, 0, 0, 0)[:3])


@dataclass(frozen=True, slots=True)
class Arg:
    """One Falco parameter: its name, where the probe put it, and how Falco prints it."""

    name: str
    source: str  # a0..a5 raw argument, x0..x2 read behind a pointer, s0..s2 string
    # how it prints: int, id, hex, str, path, time, signal, clone, ptrace, bpfcmd or a flag table (mount, …)
    kind: str = "int"
    # kind "path": the argument naming the directory a relative path starts from ("" for the cwd): Falco
    # prints such paths resolved (evt.arg), the call's own spelling stays in evt.rawarg
    base: str = ""


@dataclass(frozen=True, slots=True)
class Syscall:
    etype: EventType
    family: str
    args: tuple[Arg, ...]
    tracepoint: str  # the kernel's name under syscalls/sys_enter_*

    @property
    def name(self) -> str:
        return self.etype.name.lower()


def _spec(etype: EventType, family: str, *args: Arg, tracepoint: str = "") -> Syscall:
    return Syscall(etype, family, args, tracepoint or etype.name.lower())


A = Arg
T = EventType
_RENAMEAT = (
    A("olddirfd", "a0"),
    A("oldpath", "s0", "path", "olddirfd"),
    A("newdirfd", "a2"),
    A("newpath", "s1", "path", "newdirfd"),
)
SYSCALLS: dict[EventType, Syscall] = {
    s.etype: s
    for s in (
        _spec(T.SETUID, "privilege", A("uid", "a0", "id")),
        _spec(T.SETGID, "privilege", A("gid", "a0", "id")),
        _spec(T.SETREUID, "privilege", A("ruid", "a0", "id"), A("euid", "a1", "id")),
        _spec(T.SETREGID, "privilege", A("rgid", "a0", "id"), A("egid", "a1", "id")),
        _spec(T.SETRESUID, "privilege", A("ruid", "a0", "id"), A("euid", "a1", "id"), A("suid", "a2", "id")),
        _spec(T.SETRESGID, "privilege", A("rgid", "a0", "id"), A("egid", "a1", "id"), A("sgid", "a2", "id")),
        _spec(T.SETFSUID, "privilege", A("uid", "a0", "id")),
        _spec(T.SETFSGID, "privilege", A("gid", "a0", "id")),
        _spec(
            T.CAPSET,
            "privilege",
            A("cap_inheritable", "x2", "hex"),
            A("cap_permitted", "x1", "hex"),
            A("cap_effective", "x0", "hex"),
        ),
        _spec(
            T.PTRACE,
            "injection",
            A("request", "a0", "ptrace"),
            A("pid", "a1"),
            A("addr", "a2", "hex"),
            A("data", "a3", "hex"),
        ),
        _spec(
            T.PROCESS_VM_WRITEV,
            "injection",
            A("pid", "a0"),
            A("liovcnt", "a2"),
            A("riovcnt", "a4"),
            A("flags", "a5", "hex"),
        ),
        _spec(T.INIT_MODULE, "kernel", A("length", "a1"), A("uargs", "s0", "str")),
        _spec(T.FINIT_MODULE, "kernel", A("fd", "a0"), A("uargs", "s0", "str"), A("flags", "a2", "finit")),
        _spec(T.DELETE_MODULE, "kernel", A("name", "s0", "str"), A("flags", "a1", "delmod")),
        _spec(T.BPF, "kernel", A("cmd", "a0", "bpfcmd"), A("size", "a2")),
        _spec(T.MEMFD_CREATE, "fileless", A("name", "s0", "str"), A("flags", "a1", "memfd")),
        _spec(
            T.MOUNT,
            "mount",
            A("dev", "s0", "str"),
            A("dir", "s1", "str"),
            A("type", "s2", "str"),
            A("flags", "a3", "mount"),
        ),
        _spec(T.UMOUNT2, "mount", A("name", "s0", "str"), A("flags", "a1", "umount"), tracepoint="umount"),
        _spec(
            T.MOVE_MOUNT,
            "mount",
            A("from_dfd", "a0"),
            A("from_pathname", "s0", "str"),
            A("to_dfd", "a2"),
            A("to_pathname", "s1", "str"),
            A("flags", "a4", "movemount"),
        ),
        _spec(T.PIVOT_ROOT, "mount", A("new_root", "s0", "str"), A("put_old", "s1", "str")),
        _spec(T.CHROOT, "mount", A("path", "s0", "str")),
        _spec(T.SETNS, "namespace", A("fd", "a0"), A("nstype", "a1", "clone")),
        _spec(T.UNSHARE, "namespace", A("flags", "a0", "clone")),
        _spec(T.KILL, "signal", A("pid", "a0"), A("sig", "a1", "signal")),
        _spec(T.TKILL, "signal", A("tid", "a0"), A("sig", "a1", "signal")),
        _spec(T.TGKILL, "signal", A("pid", "a0"), A("tid", "a1"), A("sig", "a2", "signal")),
        _spec(
            T.PIDFD_SEND_SIGNAL, "signal", A("pidfd", "a0"), A("sig", "a1", "signal"), A("flags", "a3", "hex")
        ),
        _spec(T.PIDFD_GETFD, "injection", A("pid_fd", "a0"), A("target_fd", "a1"), A("flags", "a2", "hex")),
        # File changes: Falco's parameter names (truncate, ftruncate, utimensat, fchmodat2: the kernel's).
        _spec(T.UNLINK, "file", A("path", "s0", "path")),
        _spec(
            T.UNLINKAT,
            "file",
            A("dirfd", "a0"),
            A("name", "s0", "path", "dirfd"),
            A("flags", "a2", "unlinkat"),
        ),
        _spec(T.RMDIR, "file", A("path", "s0", "path")),
        _spec(T.RENAME, "file", A("oldpath", "s0", "path"), A("newpath", "s1", "path")),
        _spec(T.RENAMEAT, "file", *_RENAMEAT),
        _spec(T.RENAMEAT2, "file", *_RENAMEAT, A("flags", "a4", "renameat2")),
        _spec(T.LINK, "file", A("oldpath", "s0", "path"), A("newpath", "s1", "path")),
        _spec(
            T.LINKAT,
            "file",
            A("olddir", "a0"),
            A("oldpath", "s0", "path", "olddir"),
            A("newdir", "a2"),
            A("newpath", "s1", "path", "newdir"),
            A("flags", "a4", "linkat"),
        ),
        _spec(T.SYMLINK, "file", A("target", "s0", "str"), A("linkpath", "s1", "path")),
        _spec(
            T.SYMLINKAT,
            "file",
            A("target", "s0", "str"),
            A("linkdirfd", "a1"),
            A("linkpath", "s1", "path", "linkdirfd"),
        ),
        _spec(T.CHMOD, "file", A("filename", "s0", "path"), A("mode", "a1", "chmod")),
        _spec(T.FCHMOD, "file", A("fd", "a0"), A("mode", "a1", "chmod")),
        _spec(
            T.FCHMODAT,
            "file",
            A("dirfd", "a0"),
            A("filename", "s0", "path", "dirfd"),
            A("mode", "a2", "chmod"),
        ),
        _spec(
            T.FCHMODAT2,
            "file",
            A("dirfd", "a0"),
            A("filename", "s0", "path", "dirfd"),
            A("mode", "a2", "chmod"),
            A("flags", "a3", "at"),
        ),
        _spec(T.CHOWN, "file", A("path", "s0", "path"), A("uid", "a1", "id"), A("gid", "a2", "id")),
        _spec(T.FCHOWN, "file", A("fd", "a0"), A("uid", "a1", "id"), A("gid", "a2", "id")),
        _spec(
            T.FCHOWNAT,
            "file",
            A("dirfd", "a0"),
            A("pathname", "s0", "path", "dirfd"),
            A("uid", "a2", "id"),
            A("gid", "a3", "id"),
            A("flags", "a4", "at"),
        ),
        _spec(T.LCHOWN, "file", A("path", "s0", "path"), A("uid", "a1", "id"), A("gid", "a2", "id")),
        _spec(T.MKDIR, "file", A("path", "s0", "path"), A("mode", "a1", "hex")),
        _spec(T.MKDIRAT, "file", A("dirfd", "a0"), A("path", "s0", "path", "dirfd"), A("mode", "a2", "hex")),
        _spec(T.TRUNCATE, "file", A("path", "s0", "path"), A("length", "a1")),
        _spec(T.FTRUNCATE, "file", A("fd", "a0"), A("length", "a1")),
        _spec(
            T.UTIMENSAT,
            "file",
            A("dirfd", "a0"),
            A("filename", "s0", "path", "dirfd"),
            A("flags", "a3", "at"),
            A("atime", "x0", "time"),
            A("mtime", "x1", "time"),
        ),
        # The listening side and fd plumbing: Falco's names (accept's "tuple" is client->server; the
        # listening fd, which Falco does not carry, is listen_fd; the accepted fd is evt.arg.res).
        _spec(T.BIND, "listening", A("fd", "a0"), A("addr", "x0", "sock")),
        _spec(T.LISTEN, "listening", A("fd", "a0"), A("backlog", "a1")),
        _spec(T.ACCEPT, "listening", A("listen_fd", "a0"), A("tuple", "x0", "sock")),
        _spec(
            T.ACCEPT4, "listening", A("listen_fd", "a0"), A("tuple", "x0", "sock"), A("flags", "a1", "hex")
        ),
        _spec(T.SENDTO, "datagram", A("fd", "a0"), A("size", "a1"), A("tuple", "x0", "sock")),
        _spec(T.SENDMSG, "datagram", A("fd", "a0"), A("tuple", "x0", "sock")),
        _spec(T.SENDMMSG, "datagram", A("fd", "a0"), A("tuple", "x0", "sock")),  # the first message's
        _spec(T.DUP, "fd", A("oldfd", "a0")),
        _spec(T.DUP2, "fd", A("oldfd", "a0"), A("newfd", "a1")),
        _spec(T.DUP3, "fd", A("oldfd", "a0"), A("newfd", "a1"), A("flags", "a2", "hex")),
    )
}
# The families of issue 12's security syscalls (`--types security`); file, listen and fd are their own.
SECURITY_FAMILIES = ("privilege", "injection", "kernel", "fileless", "mount", "namespace", "signal")
FAMILIES: dict[str, tuple[EventType, ...]] = {}
for _s in SYSCALLS.values():
    FAMILIES.setdefault(_s.family, ())
    FAMILIES[_s.family] += (_s.etype,)


def _signed(value: int, bits: int = 64) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def raw_value(ev: Event, arg: Arg) -> int | str | None:
    """``evt.rawarg.NAME``: the number (or the string) as the call passed it; None if the probe has none."""
    src, i = arg.source[0], int(arg.source[1])
    if src == "s":
        return ev.sys_strs[i] if i < len(ev.sys_strs) else None
    values = ev.sys_args if src == "a" else ev.sys_extra
    if i >= len(values):
        return None
    v = values[i]
    kind = arg.kind
    if kind == "sock":
        return sock_name(ev)
    if kind == "time":
        return _signed(v) if len(ev.sys_args) > 2 and ev.sys_args[2] else None  # no times pointer: no time
    if kind in _UNSIGNED32:
        return v & 0xFFFFFFFF
    if kind in ("hex", "mount"):
        return v & 0xFFFFFFFFFFFFFFFF
    return _signed(v, 32) if kind in ("signal", "clone") else _signed(v)


_UNSIGNED32 = frozenset(
    ("id", "umount", "memfd", "finit", "delmod", "movemount", "chmod", "unlinkat", "renameat2", "linkat")
) | {"at"}
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2


def time_shown(ev: Event, i: int) -> str | None:
    """utimensat's new atime (i=0) or mtime (i=1) as the kernel takes it: ``UTIME_NOW`` / ``UTIME_OMIT``
    when tv_nsec says so (whatever tv_sec holds), otherwise ISO 8601 UTC with nanoseconds. None without a
    times pointer (both set to now: no time was given). ``evt.rawarg`` holds tv_sec as passed."""
    if len(ev.sys_extra) < 3 or len(ev.sys_args) < 3 or not ev.sys_args[2]:
        return None
    nsec = (ev.sys_extra[2] >> (32 * i)) & 0xFFFFFFFF
    if nsec == UTIME_NOW:
        return "UTIME_NOW"
    if nsec == UTIME_OMIT:
        return "UTIME_OMIT"
    secs = _signed(ev.sys_extra[i])
    if nsec >= 1_000_000_000:
        return f"{secs}s+{nsec}ns (invalid)"  # the kernel refuses it (EINVAL)
    try:
        stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):  # a time no calendar holds: say the numbers
        return f"{secs}s+{nsec}ns"
    return f"{stamp}.{nsec:09d}Z"


def shown_arg(ev: Event, arg: Arg, raw: int | str) -> str | int | None:
    """``evt.arg.NAME`` of one argument of ``ev`` (a utimensat time needs more of the event than its raw
    value)."""
    if arg.kind == "time":
        return time_shown(ev, int(arg.source[1]))
    return shown_value(arg, raw)


_FLAG_TABLES = {
    "mount": MOUNT_FLAGS,
    "umount": UMOUNT_FLAGS,
    "memfd": MEMFD_FLAGS,
    "finit": FINIT_FLAGS,
    "delmod": DELETE_MODULE_FLAGS,
    "movemount": MOVE_MOUNT_FLAGS,
    "chmod": CHMOD_MODE_FLAGS,
    "unlinkat": UNLINKAT_FLAGS,
    "renameat2": RENAMEAT2_FLAGS,
    "linkat": LINKAT_FLAGS,
    "at": AT_FLAGS,
}


def id_shown(arg: Arg, raw: int) -> str:
    """A uid/gid argument as Falco prints it: the name the host's databases give the user (a ``*uid``
    argument) or group (``*gid``), else the number; ``-1`` for "unchanged". ``evt.rawarg`` keeps the
    number. Names are the resolving host's (a replay's: the replaying host's), as ``user.name``'s are."""
    if raw == UNCHANGED:
        return id_text(raw)
    name = (user_name if arg.name.endswith("uid") else group_name)(raw)
    return name if name is not None else id_text(raw)


def shown_value(arg: Arg, raw: int | str) -> str | int:
    """``evt.arg.NAME``: Falco's printed form (names for flags, requests and signals)."""
    if isinstance(raw, str):
        return raw
    kind = arg.kind
    if kind == "id":
        return id_shown(arg, raw)
    if kind == "hex":
        return hex(raw)
    if kind == "signal":
        return signal_name(raw)
    if kind == "clone":
        return clone_flag_names(raw & 0xFFFFFFFF)
    if kind == "ptrace":
        return PTRACE_REQUESTS.get(raw, "PTRACE_UNKNOWN")
    if kind == "bpfcmd":
        return BPF_COMMANDS[raw] if 0 <= raw < len(BPF_COMMANDS) else str(raw)
    table = _FLAG_TABLES.get(kind)
    if table is not None:
        return flag_names(raw, table)
    return raw


def arguments(ev: Event) -> dict[str, tuple[int | str, str | int]]:
    """Every argument of a security syscall event: name → (raw, shown)."""
    spec = SYSCALLS.get(ev.type)
    if spec is None:
        return {}
    out: dict[str, tuple[int | str, str | int]] = {}
    for arg in spec.args:
        raw = raw_value(ev, arg)
        if raw is not None:
            shown = shown_arg(ev, arg, raw)
            out[arg.name] = (raw, shown if shown is not None else raw)
    return out


TARGETED_TYPES = frozenset(
    (T.PTRACE, T.PROCESS_VM_WRITEV, T.KILL, T.TKILL, T.TGKILL, T.PIDFD_SEND_SIGNAL, T.PIDFD_GETFD)
)


def target_pid(ev: Event) -> int | None:
    """The process a ptrace, memory write, signal or fd theft is aimed at (its thread-group id where the call
    names one; a pidfd's process as the kernel resolved it); None for other calls, a group or every process
    (kill with pid <= 0), or a pidfd the probe could not resolve."""
    t = ev.type
    if t in (T.PTRACE, T.PROCESS_VM_WRITEV, T.KILL, T.TKILL, T.TGKILL) and ev.sys_args:
        pid = _signed(ev.sys_args[1] if t is T.PTRACE else ev.sys_args[0], 32)
        return pid if pid > 0 else None
    if t in (T.PIDFD_SEND_SIGNAL, T.PIDFD_GETFD) and len(ev.sys_extra) >= 2:
        return (ev.sys_extra[1] & 0xFFFFFFFF) or None
    if t is T.TAMPER and len(ev.sys_args) >= 3:
        return ev.sys_args[2]
    return None


USERNS_KNOWN = 1 << 63
# Namespace kinds as /proc/PID/ns names them; bit i of a setns's init mask is NS_KINDS[i].
NS_KINDS = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
USERNS_TYPES = frozenset(
    (T.MOUNT, T.UMOUNT2, T.MOVE_MOUNT, T.PIVOT_ROOT, T.CHROOT, T.SETNS, T.UNSHARE)
)  # fmt: skip


class UserNamespace(NamedTuple):
    """A user namespace as the kernel has it: its depth below the host's (0 = the host's) and inode."""

    level: int
    inode: int


def caller_userns(ev: Event) -> UserNamespace | None:
    """The caller's user namespace after a mount, setns or unshare; None where the probe could not read it
    (no BTF) or the call is another."""
    if ev.type not in USERNS_TYPES or len(ev.sys_extra) < 3:
        return None
    value = ev.sys_extra[2]
    if not value & USERNS_KNOWN:
        return None
    return UserNamespace((value >> 32) & 0x7FFFFFFF, value & 0xFFFFFFFF)


class SetnsTarget(NamedTuple):
    """What a setns's fd named: a namespace (its inode) or a process (a pidfd's pid); ``init``: the kinds
    of pid 1's namespaces it joins (a namespace file of pid 1's; through any process's pidfd, the mount and
    pid namespaces the caller is in afterwards, when they are pid 1's; pid 1's pidfd: every kind asked)."""

    ns_inode: int
    pid: int
    init: tuple[str, ...]


def setns_target(ev: Event) -> SetnsTarget | None:
    """The setns target as the kernel resolved the fd; None for other calls or when it could not (no BTF,
    an fd that was neither a namespace nor a pidfd)."""
    if ev.type is not T.SETNS or len(ev.sys_extra) < 2 or not ev.sys_args:
        return None
    ino, pid = ev.sys_extra[0], ev.sys_extra[1] & 0xFFFFFFFF
    if not ino and not pid:
        return None
    mask = ev.sys_extra[1] >> 32
    kinds = {kind for i, kind in enumerate(NS_KINDS) if mask >> i & 1}
    if pid == 1:  # every namespace asked for is pid 1's
        kinds.update(namespaces(ev.sys_args[1] if len(ev.sys_args) > 1 else 0))
    return SetnsTarget(ino, pid, tuple(kind for kind in NS_KINDS if kind in kinds))


def init_ns_mask(kinds: list[str] | tuple[str, ...]) -> int:
    """The probe's bit mask for namespace kinds (NS_KINDS), for documents read back (rule fixtures)."""
    return sum(1 << NS_KINDS.index(k) for k in kinds if k in NS_KINDS)


def namespaces(flags: int) -> list[str]:
    """The namespace kinds in clone flags (``CLONE_NEWUSER|CLONE_NEWNS`` → ``["user", "mnt"]``)."""
    names = clone_flag_names(flags & 0xFFFFFFFF).split("|")
    return [NAMESPACE_FLAGS[n] for n in names if n in NAMESPACE_FLAGS]


def bpf_program(ev: Event) -> tuple[str, str] | None:
    """A BPF_PROG_LOAD's program type and name (what the probe read of the attr); None for other commands."""
    if ev.type is not T.BPF or not ev.sys_args or ev.sys_args[0] != BPF_PROG_LOAD or not ev.sys_extra:
        return None
    ptype = ev.sys_extra[0] & 0xFFFFFFFF
    kind = BPF_PROG_TYPES[ptype] if ptype < len(BPF_PROG_TYPES) else str(ptype)
    return kind, ev.sys_strs[0] if ev.sys_strs else ""
