"""The container of a process from ``/proc/PID/cgroup``: the fallback when a BPF cgroup id does not resolve.

The file has one line per hierarchy, ``ID:CONTROLLERS:PATH``: ``N:cpu,cpuacct:/path`` for a cgroup v1
hierarchy, ``N:name=systemd:/path`` for systemd's named v1 hierarchy, ``0::/path`` for cgroup v2. A v2 host
has only the last, a v1 host only the others, a hybrid host both. PATH may itself hold ``:``
(``...slice:cri-containerd:<id>``), so a line is split at its first two colons only.

Which line decides: the v2 line when it names a container (it is the hierarchy the BPF cgroup id comes
from). Otherwise the v1 lines: on a hybrid host a runtime with the cgroupfs driver may place a container in
the v1 hierarchies only, leaving its v2 cgroup at the daemon's. v1 lines that disagree (an administrator
moved the process in one hierarchy) resolve to ``name=systemd``'s container, then the first line's.

Anything the kernel would not write (no two colons, an id that is not a decimal number, a path that does not
start with ``/``, a hierarchy listed twice) is skipped, never an error. The kernel refuses ``\\n`` in cgroup
names, so a process cannot forge a line through a cgroup it names.

An exiting task (a zombie) shows ``/`` in every v1 hierarchy, whatever cgroup it was in, and its v2 path gets
`` (deleted)`` appended once that cgroup is removed (kernel/cgroup/cgroup.c, proc_cgroup_show). Such a text
cannot say the process is on the host: :func:`proc_cgroup_answer` says so, and the caller keeps what it
knew (short-lived processes are often gone, or exiting, by the time their exec is handled).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from sentinel.containers.cgroup_path import ContainerRef, container_from_cgroup

__all__ = [
    "CgroupLine",
    "container_from_proc_cgroup",
    "parse_proc_cgroup",
    "proc_cgroup_answer",
    "read_proc_cgroup",
]

MAX_READ = 1 << 20  # more than any real /proc/PID/cgroup (a dozen lines of at most PATH_MAX)
READ_CHUNK = 8192  # a whole real file in one read
SYSTEMD_NAMED = "name=systemd"
DELETED = " (deleted)"  # appended to the v2 path of a zombie whose cgroup was removed


@dataclass(frozen=True, slots=True)
class CgroupLine:
    """One line of ``/proc/PID/cgroup``: hierarchy id 0 with no controllers is the v2 (unified) line."""

    hierarchy: int
    controllers: tuple[str, ...]
    path: str

    @property
    def unified(self) -> bool:
        return self.hierarchy == 0 and not self.controllers


def parse_proc_cgroup(text: str) -> list[CgroupLine]:
    """The well-formed lines of a ``/proc/PID/cgroup`` text, in order; a hierarchy listed twice is dropped."""
    return [CgroupLine(h, tuple(c.split(",")) if c else (), path) for h, c, path in _lines(text)]


def _lines(text: str) -> list[tuple[int, str, str]]:
    """``(hierarchy, controllers as written, path)`` of the well-formed lines; plain tuples: an exec on a
    hybrid host reads this file, so it is on a per-exec path."""
    lines: list[tuple[int, str, str]] = []
    for raw in text.split("\n"):
        fields = raw.split(":", 2)
        number = fields[0]
        if len(fields) != 3 or not (number.isascii() and number.isdigit() and len(number) <= 10):
            continue
        if fields[2][:1] != "/":
            continue
        hierarchy, controllers = int(fields[0]), fields[1]
        if (hierarchy == 0) != (not controllers) or (controllers and "" in controllers.split(",")):
            continue  # 0 is v2's, and v2's alone
        lines.append((hierarchy, controllers, fields[2]))
    if len({h for h, _, _ in lines}) != len(lines):
        seen = Counter(h for h, _, _ in lines)
        lines = [line for line in lines if seen[line[0]] == 1]
    return lines


def container_from_proc_cgroup(text: str) -> ContainerRef | None:
    """The container named by a ``/proc/PID/cgroup`` text (v2 line first, then v1); None for the host."""
    return _container(_lines(text))


def proc_cgroup_answer(text: str) -> tuple[ContainerRef | None, bool]:
    """``(container, conclusive)``: as :func:`container_from_proc_cgroup`, and whether a None means the host.
    Not conclusive for what an exiting task shows: every v1 line ``/``, or a v2 path marked deleted.

    Remembered by text: most processes' files are the same few texts (the host's, each container's), and
    an exec on a hybrid host asks."""
    hit = _TEXTS.get(text)
    if hit is None:
        hit = _answer(text)
        if len(text) <= _TEXT_CACHED_LEN:
            if len(_TEXTS) >= _TEXTS_MAX:
                _TEXTS.clear()
            _TEXTS[text] = hit
    return hit


_TEXTS: dict[str, tuple[ContainerRef | None, bool]] = {}
_TEXTS_MAX = 1024
_TEXT_CACHED_LEN = 16384


def _answer(text: str) -> tuple[ContainerRef | None, bool]:
    lines = _lines(text)
    ref = _container(lines)
    if ref is not None:
        return ref, True
    v1 = [path for h, _, path in lines if h != 0]
    if v1 and all(path == "/" for path in v1):
        return None, False
    return None, not any(h == 0 and path.endswith(DELETED) for h, _, path in lines)


def _container(lines: list[tuple[int, str, str]]) -> ContainerRef | None:
    for h, _, path in lines:
        if h == 0 and (ref := _of_path(path)):
            return ref
    v1 = [line for line in lines if line[0] != 0]
    v1.sort(key=lambda line: SYSTEMD_NAMED not in line[1].split(","))  # stable: then the file's order
    for _, _, path in v1:
        if ref := _of_path(path):
            return ref
    return None


_PATHS: dict[str, ContainerRef | None] = {}
_PATHS_MAX = 4096
_PATH_CACHED_LEN = 4096  # PATH_MAX: longer (hostile) paths are parsed each time, never kept


def _of_path(path: str) -> ContainerRef | None:
    """``container_from_cgroup``, remembered: the same few paths (``/``, a slice, a container's) repeat in
    every process's file and in every hierarchy."""
    try:
        return _PATHS[path]
    except KeyError:
        pass
    ref = container_from_cgroup(path)
    if len(path) <= _PATH_CACHED_LEN:
        if len(_PATHS) >= _PATHS_MAX:
            _PATHS.clear()
        _PATHS[path] = ref
    return ref


def read_proc_cgroup(pid: int, proc: str = "/proc") -> str | None:
    """The text of ``/proc/PID/cgroup`` (``surrogateescape``), or None when the process is gone or hidden."""
    try:
        fd = os.open(f"{proc}/{int(pid)}/cgroup", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        size = 0
        while size < MAX_READ:  # small reads: a file object's read(MAX_READ) allocates MAX_READ first
            chunk = os.read(fd, READ_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks)[:MAX_READ].decode("utf-8", "surrogateescape")
