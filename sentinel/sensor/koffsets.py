"""Kernel struct offsets for the probes, from the running kernel's BTF, as compiler definitions.

The probes read a few kernel objects (credentials, the process start time, the open file and its directory,
the executable, the terminal) that tracepoints do not carry. The headers bcc compiles against may belong to
another kernel (on our CI, 6.1 headers for a 6.18 kernel, where ``task->real_parent->tgid`` reads as 0), so
every offset comes from ``/sys/kernel/btf/vmlinux`` at load time and is checked for the size the probe reads.
When BTF is missing or a field is not where it should be, the probes compile without them: the events then
carry no credentials (flags say so, fields are absent, never zero) and opens are not de-duplicated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sentinel.sensor.btf import Btf, BtfError, load_btf

BTF_PATH = "/sys/kernel/btf/vmlinux"

# macro -> (struct, field path, size the probe reads; 0 = any, the macro is only an offset into a struct)
REQUIRED: dict[str, tuple[str, str, int]] = {
    "K_TASK_REAL_CRED": ("task_struct", "real_cred", 8),
    "K_TASK_GROUP_LEADER": ("task_struct", "group_leader", 8),
    "K_TASK_REAL_PARENT": ("task_struct", "real_parent", 8),
    "K_TASK_CHILDREN": ("task_struct", "children", 16),
    "K_TASK_SIBLING": ("task_struct", "sibling", 16),
    "K_TASK_TGID": ("task_struct", "tgid", 4),
    "K_TASK_FILES": ("task_struct", "files", 8),
    "K_TASK_FS": ("task_struct", "fs", 8),
    "K_TASK_MM": ("task_struct", "mm", 8),
    "K_TASK_SIGNAL": ("task_struct", "signal", 8),
    "K_LIST_HEAD_PREV": ("list_head", "prev", 8),
    "K_CRED_EUID": ("cred", "euid", 4),
    "K_CRED_SUID": ("cred", "suid", 4),
    "K_CRED_FSUID": ("cred", "fsuid", 4),
    "K_CRED_EGID": ("cred", "egid", 4),
    "K_CRED_SGID": ("cred", "sgid", 4),
    "K_CRED_FSGID": ("cred", "fsgid", 4),
    "K_CRED_CAP_EFFECTIVE": ("cred", "cap_effective", 8),
    "K_CRED_CAP_PERMITTED": ("cred", "cap_permitted", 8),
    "K_FILES_FDT": ("files_struct", "fdt", 8),
    "K_FILES_FD_ARRAY": ("files_struct", "fd_array", 0),
    "K_FDTABLE_MAX_FDS": ("fdtable", "max_fds", 4),
    "K_FDTABLE_FD": ("fdtable", "fd", 8),
    "K_FS_PWD": ("fs_struct", "pwd", 16),
    "K_PATH_MNT": ("path", "mnt", 8),
    "K_PATH_DENTRY": ("path", "dentry", 8),
    "K_FILE_F_PATH": ("file", "f_path", 16),
    "K_FILE_F_INODE": ("file", "f_inode", 8),
    "K_FILE_F_MODE": ("file", "f_mode", 4),  # FMODE_CREATED: did an O_CREAT open create the file
    "K_INODE_I_INO": ("inode", "i_ino", 8),
    "K_INODE_I_NLINK": ("inode", "i_nlink", 4),
    "K_INODE_I_SB": ("inode", "i_sb", 8),
    "K_SUPER_BLOCK_S_DEV": ("super_block", "s_dev", 4),
    "K_DENTRY_D_NAME": ("dentry", "d_name", 0),
    "K_QSTR_NAME": ("qstr", "name", 8),
    "K_MM_EXE_FILE": ("mm_struct", "exe_file", 8),
    "K_SIGNAL_TTY": ("signal_struct", "tty", 8),
    "K_TTY_INDEX": ("tty_struct", "index", 4),
    "K_TTY_DRIVER": ("tty_struct", "driver", 8),
    "K_TTY_DRIVER_MAJOR": ("tty_driver", "major", 4),
    "K_TTY_DRIVER_MINOR_START": ("tty_driver", "minor_start", 4),
}
# Kernels before 5.5 call the boot-time start ``real_start_time``; either is CLOCK_BOOTTIME ns.
START_TIME_FIELDS = ("start_boottime", "real_start_time")
FILE_SPAN_MAX_WORDS = 8  # struct file bytes (f_inode .. f_path) read at once onto the probe's stack
# Only with CONFIG_AUDIT: without it login uid and session id are absent from events.
OPTIONAL: dict[str, tuple[str, str, int]] = {
    "K_TASK_LOGINUID": ("task_struct", "loginuid", 4),
    "K_TASK_SESSIONID": ("task_struct", "sessionid", 4),
}
# Namespaces and pidfds, all or none (HAVE_NS_OFFSETS): which namespace a setns joined, which process a pidfd
# names, the caller's user namespace. Without them those events still come, without these facts.
NAMESPACES: dict[str, tuple[str, str, int]] = {
    "K_CRED_USER_NS": ("cred", "user_ns", 8),
    "K_USERNS_LEVEL": ("user_namespace", "level", 4),
    "K_USERNS_INUM": ("user_namespace", "ns.inum", 4),
    "K_FILE_PRIVATE_DATA": ("file", "private_data", 8),
    "K_INODE_I_PRIVATE": ("inode", "i_private", 8),
    "K_SUPER_BLOCK_S_MAGIC": ("super_block", "s_magic", 8),
    "K_PID_NUMBERS": ("pid", "numbers", 0),
    "K_UPID_NR": ("upid", "nr", 4),
    "K_TASK_NSPROXY": ("task_struct", "nsproxy", 8),
    "K_NSPROXY_MNT_NS": ("nsproxy", "mnt_ns", 8),
    "K_NSPROXY_PID_NS": ("nsproxy", "pid_ns_for_children", 8),
    "K_MNT_NS_INUM": ("mnt_namespace", "ns.inum", 4),
    "K_PID_NS_INUM": ("pid_namespace", "ns.inum", 4),
}
# The process as its own pid namespace numbers it, all or none (HAVE_PIDVIEW_OFFSETS, used with the namespace
# group's nsproxy and inum fields): exec and fork events then carry the vpid, vtid, pid and mount namespace.
# A task's own pid namespace is the one of its struct pid's deepest level (pid->numbers[pid->level].ns), not
# nsproxy->pid_ns_for_children, which unshare(CLONE_NEWPID) changes for the children only.
PID_VIEW: dict[str, tuple[str, str, int]] = {
    "K_TASK_THREAD_PID": ("task_struct", "thread_pid", 8),
    "K_PID_LEVEL": ("pid", "level", 4),
    "K_PID_NUMBERS_OFF": ("pid", "numbers", 0),
    "K_UPID_NR_OFF": ("upid", "nr", 4),
    "K_UPID_NS": ("upid", "ns", 8),
}
UPID_SIZE_MAX = 64  # struct upid is 16 bytes (an int and a pointer); anything far larger is not that struct
# Sockets behind fds, all or none (HAVE_NET_OFFSETS, used with the namespace group's file fields): the local
# and peer ends of a listening, accepted or duplicated socket, read from the kernel rather than from a table.
NET: dict[str, tuple[str, str, int]] = {
    "K_SOCKET_TYPE": ("socket", "type", 2),
    "K_SOCKET_SK": ("socket", "sk", 8),
    "K_SKC_DADDR": ("sock_common", "skc_daddr", 4),
    "K_SKC_RCV_SADDR": ("sock_common", "skc_rcv_saddr", 4),
    "K_SKC_DPORT": ("sock_common", "skc_dport", 2),
    "K_SKC_NUM": ("sock_common", "skc_num", 2),
    "K_SKC_FAMILY": ("sock_common", "skc_family", 2),
    "K_SKC_STATE": ("sock_common", "skc_state", 1),  # read as 4 bytes and masked: the fields after it exist
    "K_SKC_V6_DADDR": ("sock_common", "skc_v6_daddr", 16),
    "K_SKC_V6_RCV_SADDR": ("sock_common", "skc_v6_rcv_saddr", 16),
}


@dataclass(slots=True)
class KernelOffsets:
    """What the probes may read: ``macros`` to compile with, or ``problem`` saying why there are none."""

    macros: dict[str, int] = field(default_factory=dict)
    problem: str = ""
    source: str = ""
    login: bool = False  # loginuid/sessionid available (CONFIG_AUDIT)
    namespaces: bool = False  # setns targets, pidfd pids and user namespaces available (NAMESPACES)
    sockets: bool = False  # socket ends behind fds available (NET, with NAMESPACES)
    pid_view: bool = False  # vpid, vtid, pid and mount namespace of exec and fork (PID_VIEW, with NAMESPACES)

    @property
    def available(self) -> bool:
        return bool(self.macros)

    @property
    def mode(self) -> str:
        """For the ready record and doctor: ``btf`` or ``none (why)``."""
        return "btf" if self.available else f"none ({self.problem})"

    def cflags(self) -> list[str]:
        if not self.available:
            return []
        flags = ["-DHAVE_KOFFSETS", *(f"-D{name}={value}" for name, value in sorted(self.macros.items()))]
        if self.namespaces:
            flags.append("-DHAVE_NS_OFFSETS")
        if self.sockets:
            flags.append("-DHAVE_NET_OFFSETS")
        if self.pid_view:
            flags.append("-DHAVE_PIDVIEW_OFFSETS")
        return flags


def _resolve(btf: Btf, table: dict[str, tuple[str, str, int]], problems: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for macro, (struct, path, size) in table.items():
        try:
            offset = btf.offset_of(struct, path)
            if size:
                actual = btf.field_size(struct, path)
                if actual != size:
                    problems.append(f"{struct}.{path} is {actual} bytes, the probes read {size}")
                    continue
        except BtfError as exc:
            problems.append(str(exc))
            continue
        out[macro] = offset
    return out


def compute(btf: Btf) -> KernelOffsets:
    """Every offset the probes need from ``btf``, checked; all-or-nothing for the required ones."""
    problems: list[str] = []
    macros = _resolve(btf, REQUIRED, problems)
    start = next((name for name in START_TIME_FIELDS if btf.has_field("task_struct", name)), None)
    if start is None:
        problems.append("task_struct has neither start_boottime nor real_start_time")
    else:
        macros.update(_resolve(btf, {"K_TASK_START_BOOTTIME": ("task_struct", start, 8)}, problems))
    if problems:
        return KernelOffsets(problem="; ".join(problems))
    login_problems: list[str] = []
    login = _resolve(btf, OPTIONAL, login_problems)
    if not login_problems:
        macros.update(login)
    ns_problems: list[str] = []
    ns = _resolve(btf, NAMESPACES, ns_problems)
    if not ns_problems:
        ns["K_PID_NUMBERS_NR"] = ns.pop("K_PID_NUMBERS") + ns.pop("K_UPID_NR")
        macros.update(ns)
    # struct file's path and inode are read in one go from an open file: they must sit close and aligned.
    fields = [macros["K_FILE_F_INODE"], macros["K_FILE_F_PATH"] + macros["K_PATH_MNT"],
              macros["K_FILE_F_PATH"] + macros["K_PATH_DENTRY"]]  # fmt: skip
    first = min(fields)
    words = (max(fields) + 8 - first + 7) // 8
    if words > FILE_SPAN_MAX_WORDS or any((f - first) % 8 for f in fields):
        return KernelOffsets(
            problem=f"struct file's f_path and f_inode span {words * 8} bytes or are misaligned"
        )
    macros["K_FILE_SPAN_OFF"], macros["K_FILE_SPAN_WORDS"] = first, words
    macros["K_FD_ARRAY_LEN"] = btf.field_size("files_struct", "fd_array") // 8
    net_problems: list[str] = []
    net = _resolve(btf, NET, net_problems)
    sockets = not ns_problems and not net_problems
    if sockets:
        macros.update(net)
    view = _pid_view(btf) if not ns_problems else None
    if view is not None:
        macros.update(view)
    return KernelOffsets(
        macros=macros,
        login=not login_problems,
        namespaces=not ns_problems,
        sockets=sockets,
        pid_view=view is not None,
    )


def _pid_view(btf: Btf) -> dict[str, int] | None:
    """The PID_VIEW offsets and the size of struct upid (the stride of pid->numbers[]), or None."""
    problems: list[str] = []
    view = _resolve(btf, PID_VIEW, problems)
    try:
        size = btf.size_of("upid")
    except BtfError:
        return None
    if problems or size > UPID_SIZE_MAX or max(view["K_UPID_NS"] + 8, view["K_UPID_NR_OFF"] + 4) > size:
        return None
    view["K_UPID_SIZE"] = size
    return view


def kernel_offsets(path: str | Path = BTF_PATH) -> KernelOffsets:
    """Offsets of the running kernel, or why there are none (never raises)."""
    try:
        btf = load_btf(path)
    except (BtfError, OSError) as exc:
        return KernelOffsets(problem=f"no usable BTF at {path}: {exc}")
    result = compute(btf)
    result.source = str(path)
    return result
