"""What ``/proc`` says about a process, and where those facts come from.

The process table never reads ``/proc`` itself: it asks a :class:`FactSource`. Live, that is
:class:`LiveFacts`, which reads ``/proc`` and reports every successful read to optional callbacks so the
recorder can store them in the capture; on replay it is :class:`ReplayFacts`, fed from those records, so the
table sees exactly what it saw live and never touches the replaying host's ``/proc``.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["FactSource", "LiveFacts", "ProcFacts", "ReplayFacts", "read_proc_facts"]


@dataclass(slots=True)
class ProcFacts:
    """A snapshot of one process as ``/proc`` showed it.

    Fields other than pid/start_ticks/ppid/comm may be missing (``None``, or -1 for ids) when the process
    exited half way through the read or the file was not readable. Strings use ``surrogateescape``.
    """

    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: clock ticks since boot (CLOCK_BOOTTIME)
    ppid: int
    comm: str
    exe: str | None = None  # readlink of /proc/<pid>/exe; "memfd:NAME" for a memfd, " (deleted)" removed
    cwd: str | None = None
    args: list[str] | None = None  # /proc/<pid>/cmdline split on NUL; [] for kernel threads and zombies
    uid: int = -1  # real ids from /proc/<pid>/status
    gid: int = -1
    tty_nr: int = 0  # /proc/<pid>/stat field 7
    exe_deleted: bool = False  # the executable file has no links left (deleted after the exec)
    exe_memfd: bool = False  # the executable is a memfd (fileless): ``exe`` is "memfd:NAME"
    vpid: int | None = None  # the pid in its own pid namespace (last of status's NStgid); None: unknown
    pid_ns: int = 0  # inode numbers of /proc/<pid>/ns/pid and ns/mnt; 0: unknown
    mnt_ns: int = 0


DELETED_SUFFIX = " (deleted)"
MFD_HUGETLB = 0x0004


@functools.cache
def memfd_devices() -> frozenset[int]:
    """Device numbers of the kernel's internal memfd filesystems (shmem, hugetlbfs), from memfds of our own.

    A file whose name merely starts with "memfd:" lives elsewhere; only these devices hold real memfds.
    """
    devs = set()
    for flags in (0, MFD_HUGETLB):
        try:
            fd = os.memfd_create("sentinel-memfd-probe", flags | os.MFD_CLOEXEC)
        except (OSError, AttributeError):
            continue
        try:
            devs.add(os.fstat(fd).st_dev)
        finally:
            os.close(fd)
    return frozenset(devs)


def classify_exe(link: str | None, st: os.stat_result | None) -> tuple[str | None, bool, bool]:
    """(exe, deleted, memfd) from the readlink of /proc/PID/exe and a stat through it.

    The kernel appends " (deleted)" to a path without links, but a file may also be *named* that way: only a
    link count of 0 says it was deleted. A memfd reads as "/memfd:NAME (deleted)" and is named "memfd:NAME",
    as Falco shows it, when it sits on the memfd filesystem.
    """
    if link is None or st is None or st.st_nlink != 0 or not link.endswith(DELETED_SUFFIX):
        return link, False, False
    path = link[: -len(DELETED_SUFFIX)]
    if path.startswith("/memfd:") and "/" not in path[1:] and st.st_dev in memfd_devices():
        return path[1:], False, True
    return path, True, False


def _parse_stat(data: bytes) -> tuple[str, int, int, int] | None:
    """Return (comm, ppid, tty_nr, start_ticks) from a stat line; comm may hold spaces and ')'."""
    lpar = data.find(b"(")
    rpar = data.rfind(b")")
    if lpar < 0 or rpar < lpar:
        return None
    rest = data[rpar + 1 :].split()
    # rest[0] is field 3 (state), so field N is rest[N - 3].
    try:
        return os.fsdecode(data[lpar + 1 : rpar]), int(rest[1]), int(rest[4]), int(rest[19])
    except (IndexError, ValueError):
        return None


def _read_file(name: str, dir_fd: int) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:  # gone (ENOENT/ESRCH) or not ours to read (EACCES)
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _readlink(name: str, dir_fd: int) -> str | None:
    try:
        return os.fsdecode(os.readlink(os.fsencode(name), dir_fd=dir_fd))
    except OSError:
        return None


def _stat_exe(dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat("exe", dir_fd=dir_fd)
    except OSError:
        return None


def _status_ids(data: bytes | None) -> tuple[int, int, int | None]:
    """Real uid and gid, and the pid in the process's own pid namespace: the last of ``NStgid`` (which
    lists it from the namespace of this /proc down to the process's own; absent before Linux 4.1)."""
    uid = gid = -1
    vpid: int | None = None
    if data is None:
        return uid, gid, vpid
    for line in data.splitlines():
        if line.startswith(b"Uid:"):
            parts = line.split()
            if len(parts) > 1 and parts[1].isdigit():
                uid = int(parts[1])
        elif line.startswith(b"Gid:"):
            parts = line.split()
            if len(parts) > 1 and parts[1].isdigit():
                gid = int(parts[1])
        elif line.startswith(b"NStgid:"):
            parts = line.split()
            if len(parts) > 1 and parts[-1].isdigit() and parts[-1].isascii():
                vpid = int(parts[-1])
            break  # NStgid follows Uid and Gid
    return uid, gid, vpid


def parse_ns_link(link: str | None, kind: str) -> int:
    """The inode number in a ``/proc/PID/ns/*`` link (``pid:[4026531836]``), 0 if it is not that form."""
    if link is None or not link.startswith(kind + ":[") or not link.endswith("]"):
        return 0
    digits = link[len(kind) + 2 : -1]
    return int(digits) if digits.isdigit() and digits.isascii() and len(digits) <= 20 else 0


def _split_cmdline(data: bytes | None) -> list[str] | None:
    if data is None:
        return None
    if not data:
        return []
    if data.endswith(b"\0"):
        data = data[:-1]
    return [os.fsdecode(a) for a in data.split(b"\0")]


def read_proc_facts(pid: int, proc_root: str = "/proc") -> ProcFacts | None:
    """Read one process; ``None`` if it is gone. Never raises for vanished processes or denied reads.

    Everything is read relative to an open ``/proc/<pid>`` directory: if the pid is reused mid-read, the old
    directory keeps answering for the old (dead) process instead of mixing in the new one.
    """
    try:
        dfd = os.open(f"{proc_root}/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        stat = _read_file("stat", dfd)
        parsed = _parse_stat(stat) if stat else None
        if parsed is None:
            return None
        comm, ppid, tty_nr, start_ticks = parsed
        uid, gid, vpid = _status_ids(_read_file("status", dfd))
        link = _readlink("exe", dfd)
        exe, deleted, memfd = classify_exe(link, _stat_exe(dfd) if link else None)
        return ProcFacts(
            pid=pid,
            start_ticks=start_ticks,
            ppid=ppid,
            comm=comm,
            exe=exe,
            exe_deleted=deleted,
            exe_memfd=memfd,
            cwd=_readlink("cwd", dfd),
            args=_split_cmdline(_read_file("cmdline", dfd)),
            uid=uid,
            gid=gid,
            tty_nr=tty_nr,
            vpid=vpid,
            pid_ns=parse_ns_link(_readlink("ns/pid", dfd), "pid"),
            mnt_ns=parse_ns_link(_readlink("ns/mnt", dfd), "mnt"),
        )
    finally:
        os.close(dfd)


class FactSource(Protocol):
    """Where the process table gets ``/proc`` facts: live from the kernel or replayed from a capture."""

    def read(self, pid: int) -> ProcFacts | None: ...

    def list_pids(self) -> list[int]: ...

    def read_fd(self, pid: int, fd: int) -> str | None: ...

    def realpath(self, path: str) -> str: ...

    def is_memfd_dev(self, dev: int) -> bool: ...

    def exe_identity(self, path: str) -> tuple[int, int] | None: ...


# Exec storms resolve the same few executables over and over; symlinks under /usr rarely change.
REALPATH_CACHE_S = 5.0
REALPATH_CACHE_SIZE = 4096


class LiveFacts:
    """Reads ``/proc`` and reports what it read, so a recording can replay exactly what the table saw.

    ``on_facts`` gets every successful read, ``on_miss`` the pid of every read that found nothing, ``on_fd``
    every fd lookup (``None`` when it failed), ``on_identity`` every file identity lookup (``None`` when it
    failed): replay must not answer from older facts where live had none.
    """

    __slots__ = ("_realpaths", "on_facts", "on_fd", "on_identity", "on_miss", "on_realpath", "proc_root")

    def __init__(
        self,
        proc_root: str = "/proc",
        on_facts: Callable[[ProcFacts], None] | None = None,
        on_fd: Callable[[int, int, str | None], None] | None = None,
        on_miss: Callable[[int], None] | None = None,
        on_realpath: Callable[[str, str], None] | None = None,
        on_identity: Callable[[str, tuple[int, int] | None], None] | None = None,
    ) -> None:
        self.proc_root = proc_root
        self.on_facts = on_facts
        self.on_fd = on_fd
        self.on_identity = on_identity
        self.on_miss = on_miss
        self.on_realpath = on_realpath
        self._realpaths: dict[str, tuple[str, float]] = {}  # path -> (resolved, valid until)

    def is_memfd_dev(self, dev: int) -> bool:
        return dev in memfd_devices()

    def read(self, pid: int) -> ProcFacts | None:
        facts = read_proc_facts(pid, self.proc_root)
        if facts is not None:
            if self.on_facts is not None:
                self.on_facts(facts)
        elif self.on_miss is not None:
            self.on_miss(pid)
        return facts

    def list_pids(self) -> list[int]:
        try:
            names = os.listdir(self.proc_root)
        except OSError:
            return []
        return sorted(int(n) for n in names if n.isdigit())

    def read_fd(self, pid: int, fd: int) -> str | None:
        try:
            path: str | None = os.fsdecode(os.readlink(f"{self.proc_root}/{pid}/fd/{fd}".encode()))
        except OSError:
            path = None
        if self.on_fd is not None:
            self.on_fd(pid, fd, path)
        return path

    def realpath(self, path: str) -> str:
        """Symlinks resolved on this host's filesystem: the exe of a process that exited before /proc could
        be read is still reported as the kernel would (``/bin/sh`` → ``/usr/bin/dash``)."""
        now = time.monotonic()
        hit = None if path.startswith("/proc/") else self._realpaths.get(path)  # per process: never cached
        if hit is not None and hit[1] > now:
            resolved = hit[0]
        else:
            try:
                resolved = os.path.realpath(path, strict=True)
            except (OSError, ValueError):
                resolved = path
            if len(self._realpaths) >= REALPATH_CACHE_SIZE:
                self._realpaths.clear()
            if not path.startswith("/proc/"):
                self._realpaths[path] = (resolved, now + REALPATH_CACHE_S)
        if self.on_realpath is not None:
            self.on_realpath(path, resolved)
        return resolved

    def exe_identity(self, path: str) -> tuple[int, int] | None:
        """``(st_ino, st_dev)`` of the file at ``path`` itself, never cached: whether a path names the file a
        process executes is decided by a fresh look. A symlink there is not followed (a resolved path has
        none; one that appeared since names a different inode and so fails the comparison)."""
        try:
            st = os.stat(path, follow_symlinks=False)
            identity: tuple[int, int] | None = (st.st_ino, st.st_dev)
        except (OSError, ValueError):
            identity = None
        if self.on_identity is not None:
            self.on_identity(path, identity)
        return identity


class ReplayFacts:
    """Facts fed from a capture, in capture order; never touches ``/proc``. The latest facts for a pid win."""

    __slots__ = ("_facts", "_fds", "_identities", "_realpaths")

    def __init__(self) -> None:
        self._facts: dict[int, ProcFacts] = {}
        self._fds: dict[tuple[int, int], str] = {}
        self._realpaths: dict[str, str] = {}
        self._identities: dict[str, tuple[int, int]] = {}

    def is_memfd_dev(self, dev: int) -> bool:
        """A capture does not record the live host's memfd devices: the name and link count decide."""
        return True

    def feed_realpath(self, path: str, resolved: str) -> None:
        self._realpaths[path] = resolved

    def realpath(self, path: str) -> str:
        return self._realpaths.get(path, path)

    def feed_identity(self, path: str, identity: tuple[int, int] | None) -> None:
        """Replay a file identity lookup; ``None`` replays a failed one."""
        if identity is None:
            self._identities.pop(path, None)
        else:
            self._identities[path] = identity

    def exe_identity(self, path: str) -> tuple[int, int] | None:
        """Unknown (a capture from before identity records, or a failed lookup): the table reads /proc."""
        return self._identities.get(path)

    def feed(self, facts: ProcFacts) -> None:
        self._facts[facts.pid] = facts

    def forget(self, pid: int) -> None:
        """Replay a live read that found nothing (``LiveFacts.on_miss``)."""
        self._facts.pop(pid, None)

    def feed_fd(self, pid: int, fd: int, path: str | None) -> None:
        """Replay an fd lookup; ``None`` replays a failed one."""
        if path is None:
            self._fds.pop((pid, fd), None)
        else:
            self._fds[(pid, fd)] = path

    def read(self, pid: int) -> ProcFacts | None:
        return self._facts.get(pid)

    def list_pids(self) -> list[int]:
        return list(self._facts)

    def read_fd(self, pid: int, fd: int) -> str | None:
        return self._fds.get((pid, fd))
