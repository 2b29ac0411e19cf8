"""Which container a process is in, for the process table: the BPF cgroup id of its events first, its
``/proc/PID/cgroup`` when the id cannot say.

The process table asks only when it must (a process it has not seen, an event whose cgroup id differs from
the process's last one, on a host with v1 hierarchies an exec by a container runtime:
:func:`sentinel.process.table.runtime_init`), never per event; a fork's child inherits
its parent's answer without asking. One :class:`ContainerIdentity` per agent answers those questions:

1. The id, resolved to its cgroup v2 path by :class:`~sentinel.containers.cgroup_ids.CgroupResolver` (cached
   there: an id's path never changes). A path that names a container is the answer.
2. ``/proc/PID/cgroup`` (:mod:`sentinel.containers.procfs`) when the id does not resolve (gone, not walked
   yet, no id at all: bootstrap) or when the host has v1 hierarchies: a runtime with the cgroupfs driver may
   place a container in the v1 hierarchies only and leave its v2 cgroup at the daemon's, whose id names no
   container. On a pure v2 host the id is the whole truth and nothing else is read.

Every answer goes to ``on_answer`` (the recorder writes it to the capture) so that a replay gives the same
answers without this host's cgroups: :class:`ReplayContainers` answers from those records.

Metadata from the runtimes' APIs (name, image, labels, pod): each answer that names a container is noted by
the agent's :class:`~sentinel.containers.meta_view.MetadataView` (``metadata``), which asks the runtime in
the background the first time; so a container is looked up when the table first learns of it, never per
event. Both sides (identity and view) are reached through ``ContainerSource.metadata``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sentinel.containers.cgroup_ids import CgroupInfo, CgroupResolver
from sentinel.containers.cgroup_path import ContainerRef
from sentinel.containers.procfs import parse_proc_cgroup, proc_cgroup_answer, read_proc_cgroup

if TYPE_CHECKING:
    from sentinel.containers.meta_view import MetadataView

__all__ = [
    "ContainerIdentity",
    "ContainerSource",
    "IdentityStats",
    "ReplayContainers",
    "host_has_v1_hierarchies",
]

AnswerCallback = Callable[[int, "ContainerRef | None"], None]


class ContainerSource(Protocol):
    """What the process table asks (live: :class:`ContainerIdentity`; replay: :class:`ReplayContainers`).

    ``lookup`` answers for process ``pid`` whose events carry ``cgroup_id`` (0: none yet); ``current`` is
    what the table holds now, which a replay keeps when the live agent did not ask at that point.
    ``recheck_exec``: whether an exec must ask again (a move in a v1 hierarchy changes no v2 id).
    ``metadata``: the runtime metadata the rules and documents read (None: not asked for).
    """

    recheck_exec: bool
    metadata: MetadataView | None

    def lookup(self, cgroup_id: int, pid: int, current: ContainerRef | None) -> ContainerRef | None: ...


class Resolver(Protocol):
    """The part of :class:`CgroupResolver` the identity uses (tests give a fake)."""

    @property
    def available(self) -> bool: ...

    def resolve(self, cgroup_id: int) -> CgroupInfo | None: ...


@dataclass(slots=True)
class IdentityStats:
    """Counters for metrics: how questions were answered."""

    lookups: int = 0
    by_id: int = 0  # answered by the BPF cgroup id's path alone
    proc_reads: int = 0  # /proc/PID/cgroup read
    proc_gone: int = 0  # ... and the process was gone or exiting: what was known stands
    containers: int = 0  # answers that named a container


def host_has_v1_hierarchies(proc_root: str = "/proc") -> bool:
    """Whether this host mounts cgroup v1 hierarchies (v1 only, or hybrid): our own ``/proc/PID/cgroup`` has
    a line for every hierarchy there is, and a v2-only host has only ``0::``."""
    text = read_proc_cgroup(os.getpid(), proc_root)
    if text is None:
        return True  # cannot tell: the cautious answer reads /proc/PID/cgroup when the id says host
    return any(not line.unified for line in parse_proc_cgroup(text))


class ContainerIdentity:
    """The live answers; not thread-safe (the pipeline thread asks). See the module docstring."""

    def __init__(
        self,
        resolver: Resolver | None,
        *,
        v1: bool,
        proc_root: str = "/proc",
        read_proc: Callable[[int, str], str | None] = read_proc_cgroup,
        on_answer: AnswerCallback | None = None,
        metadata: MetadataView | None = None,
    ) -> None:
        self.resolver = resolver if resolver is not None and resolver.available else None
        self.v1 = v1
        self.proc_root = proc_root
        self.on_answer = on_answer
        self.metadata = metadata
        self.stats = IdentityStats()
        self._read_proc = read_proc
        # Without a v2 hierarchy (v1 only) every task has the same id: only /proc/PID/cgroup tells.
        self.recheck_exec = v1 or self.resolver is None

    @classmethod
    def for_host(
        cls,
        on_answer: AnswerCallback | None = None,
        proc_root: str = "/proc",
        metadata: MetadataView | None = None,
    ) -> ContainerIdentity:
        """This host's cgroup2 mount and hierarchies, as the agent sees them (it must run in the host's cgroup
        namespace, else paths are relative to its own)."""
        return cls(
            CgroupResolver.for_host(),
            v1=host_has_v1_hierarchies(proc_root),
            proc_root=proc_root,
            on_answer=on_answer,
            metadata=metadata,
        )

    def describe(self) -> dict[str, object]:
        """For the agent's ready record: where ids resolve and whether /proc/PID/cgroup backs them; whether
        runtimes are asked for metadata, and which of their sockets exist."""
        resolver = self.resolver if isinstance(self.resolver, CgroupResolver) else None
        mount = resolver.mount if resolver is not None else None
        return {
            "cgroup2": mount.mount_point if mount is not None else None,
            "id_lookup": None if resolver is None else "handle" if resolver.uses_handles else "walk",
            "v1_hierarchies": self.v1,
            **(self.metadata.describe() if self.metadata is not None else {"metadata": False}),
        }

    def counters(self) -> dict[str, int]:
        """The identity's and the resolver's counters, for the agent's stats records."""
        out = {f"identity_{k}": getattr(self.stats, k) for k in self.stats.__slots__}
        if isinstance(self.resolver, CgroupResolver):
            rs = self.resolver.stats
            out.update({f"resolver_{k}": getattr(rs, k) for k in rs.__slots__})
        return out

    def close(self) -> None:
        """The resolver's handles, and the metadata service's worker (bounded by one lookup's timeout)."""
        if isinstance(self.resolver, CgroupResolver):
            self.resolver.close()
        if self.metadata is not None:
            self.metadata.close()

    def container_of(
        self, cgroup_id: int, pid: int, current: ContainerRef | None = None
    ) -> ContainerRef | None:
        """The container of process ``pid`` whose events carry ``cgroup_id``; None: the host.

        ``current`` is what is known already (inherited at fork, or an earlier answer): the answer when
        nothing can tell any more, i.e. the id names no container on a host with v1 hierarchies (or does not
        resolve) and the process is gone, or exiting (``/`` in every v1 hierarchy, see
        :func:`~sentinel.containers.procfs.proc_cgroup_answer`), when ``/proc/PID/cgroup`` is read. A
        short-lived process's exec is often handled after it exited; it stays in the container it was forked
        in.
        """
        stats = self.stats
        stats.lookups += 1
        info = self.resolver.resolve(cgroup_id) if self.resolver is not None and cgroup_id > 0 else None
        if info is not None:
            if info.container is not None:
                stats.by_id += 1
                stats.containers += 1
                return info.container
            if not self.v1:
                stats.by_id += 1
                return None
        stats.proc_reads += 1
        text = self._read_proc(pid, self.proc_root)
        ref, conclusive = proc_cgroup_answer(text) if text is not None else (None, False)
        if not conclusive:
            stats.proc_gone += 1
            ref = current
        if ref is not None:
            stats.containers += 1
        return ref

    def lookup(self, cgroup_id: int, pid: int, current: ContainerRef | None) -> ContainerRef | None:
        ref = self.container_of(cgroup_id, pid, current)
        if self.on_answer is not None:
            self.on_answer(pid, ref)
        if ref is not None and self.metadata is not None:
            self.metadata.note(ref)  # after the answer's record: a replay reads them in the same order
        return ref


class ReplayContainers:
    """The live agent's answers, fed from a capture in capture order; never touches this host's cgroups.

    Each answer is used once: the live agent recorded one right before the event that made it ask, so an
    answer waiting for a pid is that event's. Where the live agent did not ask (it had no v1 hierarchies,
    so execs asked nothing) no answer waits and the table keeps what it has. A capture from before
    container records answers nothing: every process is the host.
    """

    __slots__ = ("_answers", "metadata")

    recheck_exec = True  # ask at every exec: an answer is waiting exactly when the live agent asked

    def __init__(self, metadata: MetadataView | None = None) -> None:
        self._answers: dict[int, ContainerRef | None] = {}
        self.metadata = metadata  # the recorded runtime metadata (applied from the capture, never asked)

    def feed(self, pid: int, ref: ContainerRef | None) -> None:
        self._answers[pid] = ref

    def lookup(self, cgroup_id: int, pid: int, current: ContainerRef | None) -> ContainerRef | None:
        answers = self._answers
        if pid in answers:
            return answers.pop(pid)
        return current
