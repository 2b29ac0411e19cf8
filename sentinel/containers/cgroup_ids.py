"""From a BPF cgroup id to the cgroup's path on the v2 hierarchy, and from there to its container.

``bpf_get_current_cgroup_id()`` is the kernfs id of the task's cgroup on the default (v2) hierarchy. On a
64-bit kernel that id is also the inode number of the cgroup's directory under a cgroup2 mount, and the
payload of the directory's file handle (type ``FILEID_KERNFS``, 8 bytes). So an id resolves exactly, in one
``open_by_handle_at`` on the mount plus a ``readlink`` of the fd: no search, no guess, and a cgroup that is
gone answers ``ESTALE``. That needs CAP_DAC_READ_SEARCH (the agent's unit grants it); without it, or on a
kernel whose cgroup fs exports no handles, the resolver walks the hierarchy with ``os.scandir`` (the inode
comes with each directory entry, no ``stat``), at most once per ``walk_interval`` seconds however many ids
miss, and keeps the walk's index to answer the rest of a miss storm.

Answers are cached: a v2 cgroup cannot be renamed (the kernel refuses) and a kernfs id is never reused, so
an id's path never changes. The cache and the index of the last walk are bounded.

v1 only hosts have no v2 hierarchy to resolve against (the BPF id is the same for every task there): the
resolver is not ``available`` and the caller reads ``/proc/PID/cgroup`` (:mod:`sentinel.containers.procfs`).
On a hybrid host the v2 hierarchy is systemd's ``unified`` mount: containers that runtimes place through
systemd appear there; the cgroupfs driver may leave them in the daemon's v2 cgroup, which resolves fine but
names no container, and again ``/proc/PID/cgroup`` has the v1 lines that do.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sentinel.containers.cgroup_path import ContainerRef, container_from_cgroup

__all__ = [
    "Cgroup2Mount",
    "CgroupInfo",
    "CgroupResolver",
    "ResolverStats",
    "find_cgroup2_mount",
    "parse_cgroup2_mounts",
]

MOUNTINFO = "/proc/self/mountinfo"
FILEID_KERNFS = 0xFE  # include/linux/exportfs.h: the handle type of kernfs (cgroup2) file handles
ROOT_CGROUP_ID = 1
_U64_MAX = (1 << 64) - 1
# Errors that say handles will never work here (no capability, no export support): walk from then on.
_NO_HANDLES = frozenset((errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL))
_GONE = frozenset((errno.ESTALE, errno.ENOENT))
_OCTAL = re.compile(rb"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class Cgroup2Mount:
    """A cgroup2 mount: where it is, and which directory of the hierarchy it shows (``/`` normally)."""

    mount_point: str
    root: str


@dataclass(frozen=True, slots=True)
class CgroupInfo:
    """One resolved cgroup: its path in the v2 hierarchy (as ``/proc/PID/cgroup``'s ``0::`` line) and
    its container (None: the host)."""

    path: str
    container: ContainerRef | None


@dataclass(slots=True)
class ResolverStats:
    """Counters for metrics: how ids were answered and what the walks cost."""

    hits: int = 0  # answered from the cache
    handle_opens: int = 0  # resolved by open_by_handle_at
    gone: int = 0  # ids whose cgroup no longer exists
    walks: int = 0
    walk_dirs: int = 0  # directories the last walk indexed
    walk_truncated: int = 0  # walks that stopped at max_walk_dirs
    throttled: int = 0  # misses left unresolved because a walk ran less than walk_interval ago
    unresolved: int = 0  # resolve() answered None


def parse_cgroup2_mounts(text: str) -> list[Cgroup2Mount]:
    """The cgroup2 mounts of a ``/proc/PID/mountinfo`` text (``surrogateescape``), in order."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")  # spaces in paths are written \040: this is the separator
        fields = left.split(" ")
        if not sep or right.split(" ", 1)[0] != "cgroup2" or len(fields) < 5:
            continue
        mounts.append(Cgroup2Mount(_unmangle(fields[4]), _unmangle(fields[3])))
    return mounts


def find_cgroup2_mount(mountinfo: str = MOUNTINFO) -> Cgroup2Mount | None:
    """This process's cgroup2 mount of the whole hierarchy (root ``/``), else its first; None: v1 only."""
    try:
        with open(mountinfo, "rb") as f:
            text = f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return None
    mounts = parse_cgroup2_mounts(text)
    return next((m for m in mounts if m.root == "/"), mounts[0] if mounts else None)


class CgroupResolver:
    """Resolves BPF cgroup ids to :class:`CgroupInfo`; not thread-safe (one pipeline thread calls it).

    ``resolve`` answers None when the id is unknown: the cgroup is gone, or (walking) was made after the
    last walk and the next one is not due yet. None is not the host: the caller falls back to
    ``/proc/PID/cgroup`` or asks again later.
    """

    def __init__(
        self,
        mount: Cgroup2Mount | None,
        *,
        cache_size: int = 16384,
        walk_interval: float = 2.0,
        max_walk_dirs: int = 65536,
        use_handles: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mount = mount
        self.stats = ResolverStats()
        self._cache: dict[int, CgroupInfo] = {}
        self._gone: dict[int, None] = {}  # ids known dead (handles only): an ordered set, bounded
        self._cache_size = max(1, cache_size)
        self._walk_interval = walk_interval
        self._max_walk_dirs = max(1, max_walk_dirs)
        self._walk_index: dict[int, str] = {}
        self._last_walk: float | None = None
        self._clock = clock
        self._mount_fd = -1
        self._dev = -1
        self._handles = False
        self._mount_bytes = b"/"
        if mount is None:
            return
        # readlink of an fd gives the canonical path: compare with the canonical mount point
        self._mount_bytes = os.fsencode(os.path.realpath(mount.mount_point)).rstrip(b"/") or b"/"
        try:
            self._mount_fd = os.open(mount.mount_point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            st = os.fstat(self._mount_fd)
        except OSError:
            self.mount = None
            return
        self._dev = st.st_dev
        self._handles = use_handles and _libc_handles() is not None
        if self._handles:  # the mount's own directory must resolve to itself, or handles are not kernfs ids
            self._handles = self._by_handle(st.st_ino) == ("/", False)
            self.stats, self._gone = ResolverStats(), {}

    @classmethod
    def for_host(cls, mountinfo: str = MOUNTINFO, **kwargs: Any) -> CgroupResolver:
        """A resolver on this process's cgroup2 mount (not ``available`` on a v1-only host)."""
        return cls(find_cgroup2_mount(mountinfo), **kwargs)

    @property
    def available(self) -> bool:
        return self.mount is not None

    @property
    def uses_handles(self) -> bool:
        """True while ids resolve through file handles (False: walking)."""
        return self._handles

    def close(self) -> None:
        if self._mount_fd >= 0:
            os.close(self._mount_fd)
            self._mount_fd = -1
        self.mount = None

    def __enter__(self) -> CgroupResolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resolve(self, cgroup_id: int) -> CgroupInfo | None:
        """The cgroup with this BPF id and its container; None when the id is not (or no longer) known."""
        info = self._cache.get(cgroup_id)
        if info is not None:
            self.stats.hits += 1
            return info
        if self.mount is None or not 0 < cgroup_id <= _U64_MAX or cgroup_id in self._gone:
            self.stats.unresolved += 1
            return None
        rel: str | None = None
        walk = True
        if self._handles:
            rel, walk = self._by_handle(cgroup_id)
        if rel is None and walk:
            rel = self._by_walk(cgroup_id)
        if rel is None:
            self.stats.unresolved += 1
            return None
        path = self._in_hierarchy(rel)
        info = CgroupInfo(path, container_from_cgroup(path))
        _remember(self._cache, cgroup_id, info, self._cache_size)
        return info

    def _in_hierarchy(self, rel: str) -> str:
        """A path below the mount as a path in the hierarchy (the mount may show a subtree)."""
        assert self.mount is not None
        root = self.mount.root.rstrip("/")
        return (root + rel) if rel != "/" else (root or "/")

    def _by_handle(self, cgroup_id: int) -> tuple[str | None, bool]:
        """(path below the mount, whether walking could still help) through the id's file handle."""
        libc = _libc_handles()
        assert libc is not None
        handle = ctypes.create_string_buffer(struct.pack("=IiQ", 8, FILEID_KERNFS, cgroup_id), 16)
        fd = libc.open_by_handle_at(self._mount_fd, handle, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            if err in _GONE:
                self._dead(cgroup_id)
                return None, False
            if err in _NO_HANDLES:
                self._handles = False
            return None, True  # out of fds or memory: a walk may still answer
        try:
            target = os.readlink(f"/proc/self/fd/{fd}".encode())
        except OSError:
            return None, True
        finally:
            os.close(fd)
        self.stats.handle_opens += 1
        rel = self._below_mount(target)
        # Verify the path still names this cgroup: it may have been removed since the open.
        try:
            st = os.stat(target, follow_symlinks=False)
        except OSError:
            st = None
        if rel is None or st is None or st.st_ino != cgroup_id or st.st_dev != self._dev:
            self._dead(cgroup_id)
            return None, False
        return rel, False

    def _below_mount(self, target: bytes) -> str | None:
        mount = self._mount_bytes
        if target == mount:
            return "/"
        prefix = mount if mount == b"/" else mount + b"/"
        if not target.startswith(prefix):
            return None
        return "/" + target[len(prefix) :].decode("utf-8", "surrogateescape")

    def _dead(self, cgroup_id: int) -> None:
        self.stats.gone += 1
        _remember(self._gone, cgroup_id, None, self._cache_size)

    def _by_walk(self, cgroup_id: int) -> str | None:
        rel = self._walk_index.get(cgroup_id)
        if rel is not None:
            return rel
        now = self._clock()
        if self._last_walk is not None and now - self._last_walk < self._walk_interval:
            self.stats.throttled += 1
            return None
        self._last_walk = now
        self._walk_index = self._walk()
        return self._walk_index.get(cgroup_id)

    def _walk(self) -> dict[int, str]:
        """Every directory of the hierarchy by inode, up to ``max_walk_dirs``, breadth first."""
        self.stats.walks += 1
        index: dict[int, str] = {}
        try:
            index[os.fstat(self._mount_fd).st_ino] = "/"
        except OSError:
            return index
        queue: list[tuple[bytes, str]] = [(self._mount_bytes, "")]
        while queue:
            batch, queue = queue, []
            for path, rel in batch:
                try:
                    with os.scandir(path) as entries:
                        for entry in entries:
                            if not entry.is_dir(follow_symlinks=False):
                                continue
                            if len(index) >= self._max_walk_dirs:
                                self.stats.walk_truncated += 1
                                self.stats.walk_dirs = len(index)
                                return index
                            child = rel + "/" + entry.name.decode("utf-8", "surrogateescape")
                            index[entry.inode()] = child
                            queue.append((entry.path, child))
                except OSError:
                    continue  # removed while we walked
        self.stats.walk_dirs = len(index)
        return index


def _remember(store: dict[int, Any], key: int, value: Any, cap: int) -> None:
    """Insert, dropping the oldest entry when full (ids are mostly seen in bursts, then never again)."""
    if len(store) >= cap:
        del store[next(iter(store))]
    store[key] = value


def _unmangle(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as ``\\ooo`` octal escapes."""
    data = _OCTAL.sub(lambda m: bytes([int(m[1], 8) & 0xFF]), field.encode("utf-8", "surrogateescape"))
    return data.decode("utf-8", "surrogateescape")


_LIBC: list[ctypes.CDLL | None] = []


def _libc_handles() -> ctypes.CDLL | None:
    """libc with ``open_by_handle_at`` typed, or None where it has none (loaded once)."""
    if not _LIBC:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.open_by_handle_at
        except (OSError, AttributeError):
            _LIBC.append(None)
        else:
            fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
            fn.restype = ctypes.c_int
            _LIBC.append(libc)
    return _LIBC[0]
