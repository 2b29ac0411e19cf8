"""Event types shared by every stage after the decoder.

An :class:`Event` is one kernel operation (exec, open, connect) or one lifecycle step (fork, exit), as
captured at syscall exit. Strings that come from monitored processes (paths, argv, comm) are kept as ``str``
decoded with ``surrogateescape`` so that arbitrary bytes survive losslessly (``os.fsencode`` gives them back).
The live sensor and the capture reader both produce these; nothing downstream knows which one did.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class EventType(enum.IntEnum):
    """Wire values of the event kinds; they match ``EVT_*`` in ``bpf_probes/sentinel_events.h``."""

    EXEC = 1
    OPEN = 2
    CONNECT = 3
    FORK = 4
    EXIT = 5
    CHDIR = 6  # internal: keeps the process table's cwd right for processes that exit at once


EVENT_TYPE_NAMES: dict[int, str] = {
    EventType.EXEC: "execve",
    EventType.OPEN: "open",
    EventType.CONNECT: "connect",
    EventType.FORK: "fork",
    EventType.EXIT: "exit",
    EventType.CHDIR: "chdir",
}

# Header flag bits (``EVF_*`` in the C header).
FLAG_ARGV_TRUNCATED = 1 << 0  # more arguments, or more bytes, than the probe captures
FLAG_PATH_TRUNCATED = 1 << 1  # filename/path longer than the probe's buffer
FLAG_EXECVEAT = 1 << 2  # the exec came through execveat (dirfd/flags are meaningful)
FLAG_OPENAT2 = 1 << 3  # the open came through openat2
FLAG_CREAT = 1 << 4  # the open came through creat(2)
FLAG_ARGV_FAULT = 1 << 5  # reading argv from user memory failed part way

AT_FDCWD = -100

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

    @property
    def type_name(self) -> str:
        return EVENT_TYPE_NAMES.get(self.type, str(int(self.type)))
