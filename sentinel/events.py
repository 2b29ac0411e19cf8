"""Event types shared by every stage after the decoder.

An :class:`Event` is one kernel operation (exec, open, connect) or one lifecycle step (fork, exit), as
captured at syscall exit. Strings that come from monitored processes (paths, argv, comm) are kept as ``str``
decoded with ``surrogateescape`` so that arbitrary bytes survive losslessly (``os.fsencode`` gives them back).
The live sensor and the capture reader both produce these; nothing downstream knows which one did.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple


class EventType(enum.IntEnum):
    """Wire values of the event kinds; they match ``EVT_*`` in ``bpf_probes/sentinel_events.h``."""

    EXEC = 1
    OPEN = 2
    CONNECT = 3
    FORK = 4
    EXIT = 5
    CHDIR = 6  # internal: keeps the process table's cwd right for processes that exit at once
    # Made by the agent, never by the kernel: a container's runtime metadata arrived (Falco's `container`
    # event). Its process is the container's first one the table knows; never in captures (replay makes it
    # again from the recorded metadata).
    CONTAINER = 7
    # Security-relevant syscalls (sentinel/syscalls.py says what each carries), and tamper evidence.
    TAMPER = 15  # a signal, ptrace, memory write, BPF object or fd theft aimed at the agent itself
    SETUID = 16
    SETGID = 17
    SETREUID = 18
    SETREGID = 19
    SETRESUID = 20
    SETRESGID = 21
    SETFSUID = 22
    SETFSGID = 23
    CAPSET = 24
    PTRACE = 25
    PROCESS_VM_WRITEV = 26
    INIT_MODULE = 27
    FINIT_MODULE = 28
    DELETE_MODULE = 29
    BPF = 30
    MEMFD_CREATE = 31
    MOUNT = 32
    UMOUNT2 = 33
    SETNS = 34
    UNSHARE = 35
    PIVOT_ROOT = 36
    CHROOT = 37
    MOVE_MOUNT = 38
    KILL = 39
    TKILL = 40
    TGKILL = 41
    PIDFD_SEND_SIGNAL = 42
    PIDFD_GETFD = 43
    # File changes made without opening the file (bpf_probes/sentinel_files.c).
    UNLINK = 44
    UNLINKAT = 45
    RMDIR = 46
    RENAME = 47
    RENAMEAT = 48
    RENAMEAT2 = 49
    LINK = 50
    LINKAT = 51
    SYMLINK = 52
    SYMLINKAT = 53
    CHMOD = 54
    FCHMOD = 55
    FCHMODAT = 56
    FCHMODAT2 = 57
    CHOWN = 58
    FCHOWN = 59
    FCHOWNAT = 60
    LCHOWN = 61
    MKDIR = 62
    MKDIRAT = 63
    TRUNCATE = 64
    FTRUNCATE = 65
    UTIMENSAT = 66
    # The listening side of the network and fd plumbing (bpf_probes/sentinel_net.c).
    BIND = 67
    LISTEN = 68
    ACCEPT = 69
    ACCEPT4 = 70
    DUP = 71
    DUP2 = 72
    DUP3 = 73
    SENDTO = 74
    SENDMSG = 75
    SENDMMSG = 76  # the first message's destination


EVENT_TYPE_NAMES: dict[int, str] = {
    EventType.EXEC: "execve",
    EventType.OPEN: "open",
    EventType.CONNECT: "connect",
    EventType.FORK: "fork",
    EventType.EXIT: "exit",
    EventType.CHDIR: "chdir",
    EventType.CONTAINER: "container",
    EventType.TAMPER: "tamper",
    **{t: t.name.lower() for t in EventType if t >= 16},  # Falco's evt.type: the syscall's name
}
SYSCALL_TYPES = frozenset(t for t in EventType if t >= 16)
# What probes send and captures hold: every type but the agent's own.
KERNEL_TYPES = frozenset(t for t in EventType if t is not EventType.CONTAINER)
# What `sentinel events`, `run` and `replay` show unless --types says otherwise (parsed by the pipeline).
DEFAULT_TYPES_SPEC = "exec,open,connect,security,file,listening,datagram,fd"

# Header flag bits (``EVF_*`` in the C header).
FLAG_ARGV_TRUNCATED = 1 << 0  # more arguments, or more bytes, than the probe captures
FLAG_PATH_TRUNCATED = 1 << 1  # filename/path longer than the probe's buffer
FLAG_EXECVEAT = 1 << 2  # the exec came through execveat (dirfd/flags are meaningful)
FLAG_OPENAT2 = 1 << 3  # the open came through openat2
FLAG_CREAT = 1 << 4  # the open came through creat(2)
FLAG_ARGV_FAULT = 1 << 5  # reading argv from user memory failed part way
FLAG_CREDS = 1 << 6  # the probe read the task's credentials (kernel offsets known)
FLAG_LOGIN = 1 << 7  # ... and its login uid / session id (CONFIG_AUDIT)
FLAG_START = 1 << 8  # start_ns is the kernel's start time of the process
FLAG_EXE_INFO = 1 << 9  # exec: exe_* describe the file the process now runs
FLAG_TTY = 1 << 10  # exec: tty_nr is the controlling terminal (0 = none)
FLAG_CHILD_START = 1 << 11  # fork: child_start_ns is the child's kernel start time
FLAG_NS_VIEW = 1 << 12  # exec: ns is the process's namespace view; fork: child_ns is the child's
FLAG_CREATED = 1 << 13  # open: the open created the file (the kernel's FMODE_CREATED on the opened file)
FLAG_CREATED_KNOWN = 1 << 14  # open: an O_CREAT open that succeeded, its f_mode read (FLAG_CREATED says)

AT_FDCWD = -100

# open(2) flags as the kernel passes them (x86-64/arm64 values), named the way Falco and strace print them.
OPEN_ACCESS_MODES = ("O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE")  # indexed by flags & 3
OPEN_FLAG_BITS: tuple[tuple[int, str], ...] = (
    (0o100, "O_CREAT"),
    (0o200, "O_EXCL"),
    (0o400, "O_NOCTTY"),
    (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"),
    (0o4000, "O_NONBLOCK"),
    (0o10000, "O_DSYNC"),
    (0o40000, "O_DIRECT"),
    (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"),
    (0o1000000, "O_NOATIME"),
    (0o2000000, "O_CLOEXEC"),
    (0o10000000, "O_PATH"),
    (0o20200000, "O_TMPFILE"),  # includes O_DIRECTORY's bit
)
OPEN_FLAG_VALUES: dict[str, int] = {
    **{name: mode for mode, name in enumerate(OPEN_ACCESS_MODES[:3])},
    **{name: bit for bit, name in OPEN_FLAG_BITS},
}


def open_flag_names(flags: int) -> list[str]:
    """``["O_WRONLY", "O_CREAT", "O_TRUNC"]``: the access mode first, then each flag set."""
    names = [OPEN_ACCESS_MODES[flags & 3]]
    tmpfile = flags & 0o20000000
    for bit, name in OPEN_FLAG_BITS:
        if flags & bit == bit and not (name == "O_DIRECTORY" and tmpfile):
            names.append(name)
    return names


def errno_name(ret: int) -> str:
    """``-2`` → ``ENOENT`` (a syscall result that is not an errno keeps its number)."""
    import errno

    return errno.errorcode.get(-ret, f"E{-ret}")

LOGINUID_UNSET = 4294967295  # AUDIT_UID_UNSET: never logged in (``/proc/PID/loginuid`` shows this number)
SESSION_UNSET = 4294967295  # AUDIT_SID_UNSET: no audit session


class Credentials(NamedTuple):
    """What ``/proc/PID/status`` shows beyond the real ids, read by the probe at the event.

    ``loginuid``/``sessionid`` are ``None`` on kernels without CONFIG_AUDIT.
    """

    euid: int
    suid: int
    fsuid: int
    egid: int
    sgid: int
    fsgid: int
    loginuid: int | None
    sessionid: int | None
    cap_effective: int
    cap_permitted: int


class NsView(NamedTuple):
    """A process as its own pid namespace sees it, and the namespaces it is in, read by the probe at an exec
    (the process) or a fork (the child). Namespaces are inode numbers, as ``/proc/PID/ns/*`` shows them.

    ``vpid`` is the thread group's id and ``vtid`` the thread's in the deepest pid namespace the process is
    in (its own: a container's first process has vpid 1); on the host they equal pid and tid.
    """

    vpid: int
    vtid: int
    pid_ns: int
    mnt_ns: int


# Address families we decode.
AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10


@dataclass(slots=True)
class Event:
    """One normalised kernel event.

    ``ts_ns`` is CLOCK_BOOTTIME nanoseconds (the clock of ``/proc/<pid>/stat`` start times); turn it into
    wall time with the boot epoch of the host that produced it. ``pid`` is the thread-group id, ``tid`` the
    thread. ``ret`` is the syscall result: fd / 0 on success, ``-errno`` on failure.
    """

    type: EventType
    ts_ns: int
    pid: int
    tid: int
    uid: int
    gid: int
    comm: str
    cgroup_id: int = 0
    flags: int = 0
    ret: int = 0
    # exec
    filename: str = ""  # path as passed to execve / execveat
    argv: list[str] = field(default_factory=list)
    argc_total: int = 0  # arguments the process passed (>= len(argv) when truncated)
    # open / exec(at)
    path: str = ""  # open: path as passed
    dirfd: int = AT_FDCWD
    open_flags: int = 0  # open: O_* flags; execveat: AT_* flags
    mode: int = 0
    repeat_count: int = 0  # open: identical opens the probe suppressed since the previous event for them
    # connect
    fd: int = -1
    family: int = 0
    address: str = ""  # textual IP address, or unix socket path ("@name" for the abstract namespace)
    port: int = 0
    sock_type: int = 0  # SOCK_STREAM=1, SOCK_DGRAM=2, 0 = unknown
    # fork
    child_pid: int = 0
    clone_flags: int = 0
    child_start_ns: int = 0  # the child's kernel start time, 0 = not known
    # exec: what the process runs now, as the kernel sees it (FLAG_EXE_INFO), and its terminal (FLAG_TTY)
    exe_name: str = ""  # the executable's own file name: "memfd:NAME" for a memfd
    exe_ino: int = 0
    exe_dev: int = 0  # st_dev form (os.major/os.minor work on it)
    exe_nlink: int = -1  # 0: deleted, or never linked (memfd)
    tty_nr: int = -1  # /proc/PID/stat's tty_nr encoding, -1 = not known
    # every event (kernel offsets known)
    start_ns: int = 0  # the kernel's start time of the process (CLOCK_BOOTTIME), 0 = not known
    creds: Credentials | None = None  # None: the probe could not read them (no kernel offsets)
    # security syscalls (type >= 16) and tamper: raw arguments, values read behind pointers, strings
    sys_args: tuple[int, ...] = ()
    sys_extra: tuple[int, ...] = ()
    sys_strs: tuple[str, ...] = ()
    # exec: the process's namespace view; fork: the child's (FLAG_NS_VIEW; None: not read)
    ns: NsView | None = None
    child_ns: NsView | None = None

    @property
    def created(self) -> bool | None:
        """open: whether it created the file; None when not known (no kernel offsets, a capture from before
        the probes read it). A failed open or one without O_CREAT created nothing."""
        if self.flags & FLAG_CREATED_KNOWN:
            return bool(self.flags & FLAG_CREATED)
        if self.ret < 0 or not (self.open_flags & 0o100 or self.flags & FLAG_CREAT):
            return False
        return None

    @property
    def type_name(self) -> str:
        return EVENT_TYPE_NAMES.get(self.type, str(int(self.type)))
