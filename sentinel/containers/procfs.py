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

import re
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
_DECIMAL = re.compile(r"[0-9]{1,10}")
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
    lines: list[CgroupLine] = []
    for raw in text.split("\n"):
        fields = raw.split(":", 2)
        if len(fields) != 3 or not _DECIMAL.fullmatch(fields[0]) or not fields[2].startswith("/"):
            continue
        hierarchy = int(fields[0])
        controllers = tuple(fields[1].split(",")) if fields[1] else ()
        if (hierarchy == 0) != (not controllers) or "" in controllers:  # 0 is v2's, and v2's alone
            continue
        lines.append(CgroupLine(hierarchy, controllers, fields[2]))
    seen = Counter(line.hierarchy for line in lines)
    return [line for line in lines if seen[line.hierarchy] == 1]


def container_from_proc_cgroup(text: str) -> ContainerRef | None:
    """The container named by a ``/proc/PID/cgroup`` text (v2 line first, then v1); None for the host."""
    return _container(parse_proc_cgroup(text))


def proc_cgroup_answer(text: str) -> tuple[ContainerRef | None, bool]:
    """``(container, conclusive)``: as :func:`container_from_proc_cgroup`, and whether a None means the host.
    Not conclusive for what an exiting task shows: every v1 line ``/``, or a v2 path marked deleted."""
    lines = parse_proc_cgroup(text)
    ref = _container(lines)
    if ref is not None:
        return ref, True
    v1 = [line for line in lines if not line.unified]
    if v1 and all(line.path == "/" for line in v1):
        return None, False
    return None, not any(line.unified and line.path.endswith(DELETED) for line in lines)


def _container(lines: list[CgroupLine]) -> ContainerRef | None:
    for line in lines:
        if line.unified and (ref := container_from_cgroup(line.path)):
            return ref
    v1 = [line for line in lines if not line.unified]
    v1.sort(key=lambda line: SYSTEMD_NAMED not in line.controllers)  # stable: then the file's order
    for line in v1:
        if ref := container_from_cgroup(line.path):
            return ref
    return None


def read_proc_cgroup(pid: int, proc: str = "/proc") -> str | None:
    """The text of ``/proc/PID/cgroup`` (``surrogateescape``), or None when the process is gone or hidden."""
    try:
        with open(f"{proc}/{int(pid)}/cgroup", "rb") as f:
            data = f.read(MAX_READ)
    except OSError:
        return None
    return data.decode("utf-8", "surrogateescape")
