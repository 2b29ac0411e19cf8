"""The names Falco prints for syscall arguments: flag bits, ptrace requests, BPF commands and program types,
signals and ids. Tables only, read by :mod:`sentinel.syscalls` (which says which argument uses which)."""

from __future__ import annotations

import signal

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


def id_text(value: int) -> str:
    """A uid/gid argument as Falco prints it: -1 for "unchanged"."""
    return "-1" if value == UNCHANGED else str(value)


# File changes (Falco's chmod_mode, unlinkat, renameat2 and linkat flag tables; *at flags by their C names).
CHMOD_MODE_FLAGS: tuple[tuple[int, str], ...] = (
    (0o1, "S_IXOTH"),
    (0o2, "S_IWOTH"),
    (0o4, "S_IROTH"),
    (0o10, "S_IXGRP"),
    (0o20, "S_IWGRP"),
    (0o40, "S_IRGRP"),
    (0o100, "S_IXUSR"),
    (0o200, "S_IWUSR"),
    (0o400, "S_IRUSR"),
    (0o1000, "S_ISVTX"),
    (0o2000, "S_ISGID"),
    (0o4000, "S_ISUID"),
)
UNLINKAT_FLAGS: tuple[tuple[int, str], ...] = ((0x200, "AT_REMOVEDIR"),)
RENAMEAT2_FLAGS: tuple[tuple[int, str], ...] = (
    (1, "RENAME_NOREPLACE"),
    (2, "RENAME_EXCHANGE"),
    (4, "RENAME_WHITEOUT"),
)
LINKAT_FLAGS: tuple[tuple[int, str], ...] = ((0x400, "AT_SYMLINK_FOLLOW"), (0x1000, "AT_EMPTY_PATH"))
AT_FLAGS: tuple[tuple[int, str], ...] = ((0x100, "AT_SYMLINK_NOFOLLOW"), (0x1000, "AT_EMPTY_PATH"))
