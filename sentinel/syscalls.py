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

import signal
from dataclasses import dataclass
from typing import NamedTuple

from sentinel.events import Event, EventType

# Falco's clone-flag names for setns/unshare (the namespace bits and the rest unshare takes).
CLONE_FLAGS: tuple[tuple[int, str], ...] = (
    (0x00000100, "CLONE_VM"),
    (0x00000200, "CLONE_FS"),
    (0x00000400, "CLONE_FILES"),
    (0x00000800, "CLONE_SIGHAND"),
    (0x00001000, "CLONE_PIDFD"),
    (0x00002000, "CLONE_PTRACE"),
    (0x00004000, "CLONE_VFORK"),
    (0x00008000, "CLONE_PARENT"),
    (0x00010000, "CLONE_THREAD"),
    (0x00020000, "CLONE_NEWNS"),
    (0x00040000, "CLONE_SYSVSEM"),
    (0x00080000, "CLONE_SETTLS"),
    (0x00100000, "CLONE_PARENT_SETTID"),
    (0x00200000, "CLONE_CHILD_CLEARTID"),
    (0x00400000, "CLONE_DETACHED"),
    (0x00800000, "CLONE_UNTRACED"),
    (0x01000000, "CLONE_CHILD_SETTID"),
    (0x02000000, "CLONE_NEWCGROUP"),
    (0x04000000, "CLONE_NEWUTS"),
    (0x08000000, "CLONE_NEWIPC"),
    (0x10000000, "CLONE_NEWUSER"),
    (0x20000000, "CLONE_NEWPID"),
    (0x40000000, "CLONE_NEWNET"),
    (0x80000000, "CLONE_IO"),
)
CLONE_NEWTIME = 0x00000080  # shares CSIGNAL's bits: only meaningful to unshare/setns
NAMESPACE_FLAGS = {
    "CLONE_NEWNS": "mnt",
    "CLONE_NEWCGROUP": "cgroup",
    "CLONE_NEWUTS": "uts",
    "CLONE_NEWIPC": "ipc",
    "CLONE_NEWUSER": "user",
    "CLONE_NEWPID": "pid",
    "CLONE_NEWNET": "net",
    "CLONE_NEWTIME": "time",
}
# Falco prints mount flags without the MS_ prefix.
MOUNT_FLAGS: tuple[tuple[int, str], ...] = (
    (1, "RDONLY"),
    (2, "NOSUID"),
    (4, "NODEV"),
    (8, "NOEXEC"),
    (16, "SYNCHRONOUS"),
    (32, "REMOUNT"),
    (64, "MANDLOCK"),
    (128, "DIRSYNC"),
    (1024, "NOATIME"),
    (2048, "NODIRATIME"),
    (4096, "BIND"),
    (8192, "MOVE"),
    (16384, "REC"),
    (32768, "SILENT"),
    (1 << 16, "POSIXACL"),
    (1 << 17, "UNBINDABLE"),
    (1 << 18, "PRIVATE"),
    (1 << 19, "SLAVE"),
    (1 << 20, "SHARED"),
    (1 << 21, "RELATIME"),
    (1 << 22, "KERNMOUNT"),
    (1 << 23, "I_VERSION"),
    (1 << 24, "STRICTATIME"),
    (1 << 25, "LAZYTIME"),
)
UMOUNT_FLAGS: tuple[tuple[int, str], ...] = ((1, "FORCE"), (2, "DETACH"), (4, "EXPIRE"), (8, "NOFOLLOW"))
MEMFD_FLAGS: tuple[tuple[int, str], ...] = (
    (1, "MFD_CLOEXEC"),
    (2, "MFD_ALLOW_SEALING"),
    (4, "MFD_HUGETLB"),
    (8, "MFD_NOEXEC_SEAL"),
    (16, "MFD_EXEC"),
)
FINIT_FLAGS: tuple[tuple[int, str], ...] = (
    (1, "MODULE_INIT_IGNORE_MODVERSIONS"),
    (2, "MODULE_INIT_IGNORE_VERMAGIC"),
    (4, "MODULE_INIT_COMPRESSED_FILE"),
)
DELETE_MODULE_FLAGS: tuple[tuple[int, str], ...] = ((0o4000, "O_NONBLOCK"), (0o1000, "O_TRUNC"))
MOVE_MOUNT_FLAGS: tuple[tuple[int, str], ...] = (
    (1, "MOVE_MOUNT_F_SYMLINKS"),
    (2, "MOVE_MOUNT_F_AUTOMOUNTS"),
    (4, "MOVE_MOUNT_F_EMPTY_PATH"),
    (0x10, "MOVE_MOUNT_T_SYMLINKS"),
    (0x20, "MOVE_MOUNT_T_AUTOMOUNTS"),
    (0x40, "MOVE_MOUNT_T_EMPTY_PATH"),
    (0x100, "MOVE_MOUNT_SET_GROUP"),
    (0x200, "MOVE_MOUNT_BENEATH"),
)
PTRACE_REQUESTS: dict[int, str] = {
    0: "PTRACE_TRACEME",
    1: "PTRACE_PEEKTEXT",
    2: "PTRACE_PEEKDATA",
    3: "PTRACE_PEEKUSR",
    4: "PTRACE_POKETEXT",
    5: "PTRACE_POKEDATA",
    6: "PTRACE_POKEUSR",
    7: "PTRACE_CONT",
    8: "PTRACE_KILL",
    9: "PTRACE_SINGLESTEP",
    12: "PTRACE_GETREGS",
    13: "PTRACE_SETREGS",
    14: "PTRACE_GETFPREGS",
    15: "PTRACE_SETFPREGS",
    16: "PTRACE_ATTACH",
    17: "PTRACE_DETACH",
    18: "PTRACE_GETFPXREGS",
    19: "PTRACE_SETFPXREGS",
    21: "PTRACE_OLDSETOPTIONS",
    24: "PTRACE_SYSCALL",
    25: "PTRACE_GET_THREAD_AREA",
    26: "PTRACE_SET_THREAD_AREA",
    30: "PTRACE_ARCH_PRCTL",
    31: "PTRACE_SYSEMU",
    32: "PTRACE_SYSEMU_SINGLESTEP",
    33: "PTRACE_SINGLEBLOCK",
    0x4200: "PTRACE_SETOPTIONS",
    0x4201: "PTRACE_GETEVENTMSG",
    0x4202: "PTRACE_GETSIGINFO",
    0x4203: "PTRACE_SETSIGINFO",
    0x4204: "PTRACE_GETREGSET",
    0x4205: "PTRACE_SETREGSET",
    0x4206: "PTRACE_SEIZE",
    0x4207: "PTRACE_INTERRUPT",
    0x4208: "PTRACE_LISTEN",
    0x4209: "PTRACE_PEEKSIGINFO",
    0x420A: "PTRACE_GETSIGMASK",
    0x420B: "PTRACE_SETSIGMASK",
}
# Requests that change the target (attach to it, or write its memory or registers): injection.
PTRACE_INJECTING = frozenset({4, 5, 6, 13, 15, 16, 19, 0x4203, 0x4205, 0x4206})
BPF_COMMANDS: tuple[str, ...] = (
    "BPF_MAP_CREATE",
    "BPF_MAP_LOOKUP_ELEM",
    "BPF_MAP_UPDATE_ELEM",
    "BPF_MAP_DELETE_ELEM",
    "BPF_MAP_GET_NEXT_KEY",
    "BPF_PROG_LOAD",
    "BPF_OBJ_PIN",
    "BPF_OBJ_GET",
    "BPF_PROG_ATTACH",
    "BPF_PROG_DETACH",
    "BPF_PROG_TEST_RUN",
    "BPF_PROG_GET_NEXT_ID",
    "BPF_MAP_GET_NEXT_ID",
    "BPF_PROG_GET_FD_BY_ID",
    "BPF_MAP_GET_FD_BY_ID",
    "BPF_OBJ_GET_INFO_BY_FD",
    "BPF_PROG_QUERY",
    "BPF_RAW_TRACEPOINT_OPEN",
    "BPF_BTF_LOAD",
    "BPF_BTF_GET_FD_BY_ID",
    "BPF_TASK_FD_QUERY",
    "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
    "BPF_MAP_FREEZE",
    "BPF_BTF_GET_NEXT_ID",
    "BPF_MAP_LOOKUP_BATCH",
    "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
    "BPF_MAP_UPDATE_BATCH",
    "BPF_MAP_DELETE_BATCH",
    "BPF_LINK_CREATE",
    "BPF_LINK_UPDATE",
    "BPF_LINK_GET_FD_BY_ID",
    "BPF_LINK_GET_NEXT_ID",
    "BPF_ENABLE_STATS",
    "BPF_ITER_CREATE",
    "BPF_LINK_DETACH",
    "BPF_PROG_BIND_MAP",
)
BPF_PROG_LOAD = 5
BPF_PROG_TYPES: tuple[str, ...] = (
    "unspec",
    "socket_filter",
    "kprobe",
    "sched_cls",
    "sched_act",
    "tracepoint",
    "xdp",
    "perf_event",
    "cgroup_skb",
    "cgroup_sock",
    "lwt_in",
    "lwt_out",
    "lwt_xmit",
    "sock_ops",
    "sk_skb",
    "cgroup_device",
    "sk_msg",
    "raw_tracepoint",
    "cgroup_sock_addr",
    "lwt_seg6local",
    "lirc_mode2",
    "sk_reuseport",
    "flow_dissector",
    "cgroup_sysctl",
    "raw_tracepoint_writable",
    "cgroup_sockopt",
    "tracing",
    "struct_ops",
    "ext",
    "lsm",
    "sk_lookup",
    "syscall",
    "netfilter",
)
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


UNCHANGED = 0xFFFFFFFF  # -1 as a uid/gid argument: "leave this id as it is"


def flag_names(value: int, table: tuple[tuple[int, str], ...]) -> str:
    """Falco's form: every flag set, joined with ``|`` (bits no name covers as a hex remainder)."""
    names = [name for bit, name in table if value & bit == bit and bit]
    rest = value & ~sum(bit for bit, _ in table)
    if rest:
        names.append(hex(rest))
    return "|".join(names) if names else "0"


def clone_flag_names(value: int) -> str:
    text = flag_names(value & ~CLONE_NEWTIME, CLONE_FLAGS)
    if value & CLONE_NEWTIME:
        text = "CLONE_NEWTIME" if text == "0" else f"{text}|CLONE_NEWTIME"
    return text


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def _id(value: int) -> str:
    return "-1" if value == UNCHANGED else str(value)


@dataclass(frozen=True, slots=True)
class Arg:
    """One Falco parameter: its name, where the probe put it, and how Falco prints it."""

    name: str
    source: str  # a0..a5 raw argument, x0..x2 read behind a pointer, s0..s2 string
    # how it prints: int, id, hex, str, signal, clone, ptrace, bpfcmd or a flag table (mount, umount, memfd…)
    kind: str = "int"


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
    )
}
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
    if arg.kind in ("id", "hex", "mount", "umount", "memfd", "finit", "delmod", "movemount"):
        return v & 0xFFFFFFFFFFFFFFFF if arg.kind in ("hex", "mount") else v & 0xFFFFFFFF
    return _signed(v, 32) if arg.kind in ("signal", "clone") else _signed(v)


_FLAG_TABLES = {
    "mount": MOUNT_FLAGS,
    "umount": UMOUNT_FLAGS,
    "memfd": MEMFD_FLAGS,
    "finit": FINIT_FLAGS,
    "delmod": DELETE_MODULE_FLAGS,
    "movemount": MOVE_MOUNT_FLAGS,
}


def shown_value(arg: Arg, raw: int | str) -> str | int:
    """``evt.arg.NAME``: Falco's printed form (names for flags, requests and signals)."""
    if isinstance(raw, str):
        return raw
    kind = arg.kind
    if kind == "id":
        return _id(raw)
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
            out[arg.name] = (raw, shown_value(arg, raw))
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
