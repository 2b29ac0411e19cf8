"""The process table: which process each event belongs to, with its ancestry, users and a stable entity id.

It is bootstrapped from ``/proc`` and then kept current by fork/exec/exit (and chdir/open) events. All
``/proc`` knowledge comes through a :class:`~sentinel.process.facts.FactSource`, so live runs and replays
build the same table. A :class:`Process` holds a reference to its parent, so ancestry survives the parent's
eviction from the pid index. Memory is bounded: exited entries leave after a TTL measured in event time, and
the index is capped. ``apply`` sits on the hot path and reads no ``/proc`` for opens/connects of known
processes.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import os
import posixpath
import pwd
import shlex
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sentinel.containers.cgroup_path import ContainerRef
from sentinel.events import AT_FDCWD, FLAG_EXECVEAT, Credentials, Event, EventType
from sentinel.process.facts import FactSource, ProcFacts

if TYPE_CHECKING:
    from sentinel.containers.identity import ContainerSource

__all__ = [
    "CLONE_PARENT",
    "Process",
    "ProcessTable",
    "TableStats",
    "acting_process_path",
    "entity_id",
    "normalize_path",
]

NS_PER_SEC = 1_000_000_000
CLONE_PARENT = 0x8000  # the child's parent is the caller's parent
CLONE_THREAD = 0x10000  # a thread, not a process (the probe already drops these)
O_DIRECTORY = 0o200000  # x86-64 / generic values (arm64 differs: 0o40000)
O_PATH = 0o10000000
MAX_DIRFDS = 64  # directory fds remembered per process
FORK_MATCH_NS = 50_000_000  # a /proc start this close to a fork event is that fork's child
EXEC_MATCH_TICKS = 2  # facts whose start is this close to ours describe the same process
NAME_CACHE_MAX = 4096

# How an entry first got into the table.
SOURCE_PROC = "proc"  # bootstrap from /proc
SOURCE_FORK = "fork"  # a fork event
SOURCE_LATE = "late"  # first seen by another event; details from /proc facts
SOURCE_EVENT = "event"  # first seen by another event, no facts: only what the event carried
_FROM_PROC = (SOURCE_PROC, SOURCE_LATE)  # entries whose start_ticks came from /proc

_OPEN = EventType.OPEN
_CONNECT = EventType.CONNECT
_EXEC = EventType.EXEC
_FORK = EventType.FORK
_EXIT = EventType.EXIT
_DIR_OPEN = O_DIRECTORY | O_PATH


@dataclass(slots=True, eq=False)
class Process:
    """One process (thread group) as the renderers and rules see it. Compared by identity.

    ``start_ns`` is CLOCK_BOOTTIME; ``start_ticks`` is the same instant in ``/proc`` clock ticks, the input of
    ``entity_id``. Lists and dicts are owned by the table: treat them as read-only.
    """

    pid: int
    ppid: int
    start_ns: int
    entity_id: str
    comm: str
    exe: str = ""  # resolved absolute path of the executable, "" if unknown
    filename: str = ""  # the executable as called (execve's filename)
    args: list[str] = field(default_factory=list)
    cwd: str = ""
    uid: int = -1
    gid: int = -1
    user_name: str | None = None
    group_name: str | None = None
    tty_nr: int = 0
    creds: Credentials | None = None  # as of the latest event (None: the probes cannot read them)
    exe_memfd: bool = False  # runs from a memfd: ``exe`` is "memfd:NAME"
    exe_deleted: bool = False  # its executable file has no links left
    kernel_start_ns: int = 0  # the probes' start time once an event carried it (0: not yet)
    parent: Process | None = field(default=None, repr=False)
    depth: int = 0
    exited_ns: int | None = None
    exec_count: int = 0
    dirfds: dict[int, str] = field(default_factory=dict, repr=False)
    source: str = SOURCE_EVENT
    start_ticks: int = 0
    cgroup_id: int = 0  # the BPF cgroup id of its latest event (0: none yet), to notice a move
    container: ContainerRef | None = None  # None: the host (sentinel.containers.identity)
    # How it sees itself (from its exec or fork event, or /proc): its pid in its own pid namespace (None:
    # unknown), and its pid and mount namespaces' inode numbers (0: unknown); host_pid_ns: whether that pid
    # namespace is the host's (pid 1's), None when either is unknown.
    vpid: int | None = None
    pid_ns: int = 0
    mnt_ns: int = 0
    host_pid_ns: bool | None = None
    render_cache: Any = field(default=None, repr=False)  # renderers' per-process cache (see alerts/ecs.py)
    identity_cache: Any = field(default=None, repr=False)  # see alerts/identity.py

    @property
    def start_exact(self) -> bool:
        """Whether start_ticks is the kernel's (from the probes or /proc), not the time of an event."""
        return self.kernel_start_ns != 0 or self.source in _FROM_PROC

    def ancestors(self, max_depth: int = 64) -> list[Process]:
        """Parent first, up to the root; bounded so a corrupt chain cannot loop."""
        out: list[Process] = []
        cur = self.parent
        while cur is not None and len(out) < max_depth:
            out.append(cur)
            cur = cur.parent
        return out

    @property
    def command_line(self) -> str:
        """ECS ``process.command_line``: the arguments quoted as a POSIX shell would need them
        (``shlex.join``), so it splits back into ``process.args`` exactly, spaces and quotes included."""
        return shlex.join(self.args)


@dataclass(slots=True)
class TableStats:
    """Counters for metrics; ``size`` and ``exited_pending`` are refreshed when read through the table."""

    size: int = 0
    evicted: int = 0  # removed to respect max_entries
    expired: int = 0  # exited entries removed after the TTL
    late_processes: int = 0  # first seen by an event other than their fork
    depth_truncated: int = 0  # chains cut at max_depth
    exited_pending: int = 0  # exits waiting for their TTL
    exec_verified: int = 0  # execs of known processes named from the event (the file's identity checked)
    exec_proc_reads: int = 0  # execs of known processes that read /proc (identity unknown or not matching)


# What a container's processes run just before their own program: the runtime that placed them in the
# container's cgroups (runc/crun/youki/runsc init, LXC, nspawn) or its shims. On a host with cgroup v1
# hierarchies a runtime may move a process in those only, which no v2 id shows: only these execs ask
# /proc/PID/cgroup again (every exec did: ~12 us each, 2 % of a CPU at 1,600 execs/s).
RUNTIME_INIT_EXES = frozenset({
    "runc", "crun", "youki", "runsc", "kata-runtime", "lxc-start", "lxc-execute", "lxc-attach",
    "systemd-nspawn", "conmon", "containerd-shim", "containerd-shim-runc-v1", "containerd-shim-runc-v2",
    "docker-runc",
})  # fmt: skip


def runtime_init(proc: Process) -> bool:
    """Whether ``proc``, about to exec, runs a container runtime (runc's own re-exec runs from a memfd copy:
    ``memfd:runc_cloned...``; its init's comm is ``runc:[2:INIT]``)."""
    exe = proc.exe
    return (
        exe.rpartition("/")[2] in RUNTIME_INIT_EXES
        or exe.startswith("memfd:runc")
        or proc.comm.startswith(("runc", "crun", "youki", "runsc"))
    )


def entity_id(boot_id: str, pid: int, start_ticks: int) -> str:
    """Stable id of one process: the same for bootstrap, fork and late paths, different across pid reuse.

    blake2b (16-byte digest) over ``boot_id:pid:start_ticks``, url-safe base64 without padding: 22 chars.
    """
    digest = hashlib.blake2b(f"{boot_id}:{pid}:{start_ticks}".encode(), digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def normalize_path(path: str) -> str:
    """Collapse ``.``, ``..`` and repeated slashes as strings only (no symlinks, no filesystem access)."""
    if path[:1] == "/" and path[-1] != "/" and "//" not in path and "/." not in path:
        return path  # already normal: no empty, "." or ".." component, no trailing slash (most paths)
    norm = posixpath.normpath(path)
    if norm.startswith("//"):  # POSIX keeps a leading "//"; Linux treats it as "/"
        norm = "/" + norm.lstrip("/")
    return norm


def acting_process_path(path: str, pid: int, tid: int) -> str:
    """``/proc/self``, ``/proc/thread-self`` and ``/dev/fd`` as the process that named them meant them.

    Resolved by the agent as written, they would name the agent's own files: an exec of
    ``/proc/self/fd/3`` would be reported as whatever the agent holds open as fd 3.
    """
    if path.startswith("/proc/"):
        head, sep, rest = path[6:].partition("/")
        if head == "self":
            return f"/proc/{pid}{sep}{rest}"
        if head == "thread-self":
            return f"/proc/{pid}/task/{tid}{sep}{rest}"
        return path
    if path.startswith("/dev/"):
        if path.startswith("/dev/fd/"):
            return f"/proc/{pid}/fd/{path[8:]}"
        std = _STD_STREAMS.get(path)
        if std is not None:
            return f"/proc/{pid}/fd/{std}"
    return path


_STD_STREAMS = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def cached_name(cache: dict[int, str | None], lookup: Callable[[int], str | None], key: int) -> str | None:
    """A name from the host's databases through ``cache`` (misses too; it simply restarts when full)."""
    try:
        return cache[key]
    except KeyError:
        pass
    if len(cache) >= NAME_CACHE_MAX:
        cache.clear()
    name = cache[key] = lookup(key) if key >= 0 else None
    return name


def user_db_name(uid: int) -> str | None:
    """The host's name for ``uid`` (passwd, NSS), None when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None


def group_db_name(gid: int) -> str | None:
    """The host's name for ``gid``, None when it has none."""
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError):
        return None


class ProcessTable:
    """Pid-indexed processes kept current by events; see the module docstring."""

    def __init__(
        self,
        boot_id: str,
        facts: FactSource,
        max_entries: int = 65536,
        exit_ttl_ns: int = 10_000_000_000,
        max_depth: int = 64,
        clk_tck: int = os.sysconf("SC_CLK_TCK"),
        *,
        user_lookup: Callable[[int], str | None] = user_db_name,
        group_lookup: Callable[[int], str | None] = group_db_name,
        containers: ContainerSource | None = None,
        agent_mnt_ns: int = 0,
        host_pid_ns: int = 0,
    ) -> None:
        self.boot_id = boot_id
        self.facts = facts
        # Namespace inode numbers (HostInfo; 0 unknown): where the agent looks files up, and the host's pid
        # namespace. A process in another mount namespace names files by paths the agent cannot follow.
        self.agent_mnt_ns = agent_mnt_ns
        self.host_pid_ns = host_pid_ns
        self.containers = containers  # None: every process is the host (tests, tools without cgroups)
        self.max_entries = max(1, max_entries)
        self.exit_ttl_ns = exit_ttl_ns
        self.max_depth = max_depth
        self.clk_tck = clk_tck
        self._user_lookup = user_lookup
        self._group_lookup = group_lookup
        # Insertion order doubles as "least recently active" order: fork and exec move an entry to the end.
        self._procs: OrderedDict[int, Process] = OrderedDict()
        self._exits: deque[tuple[int, int, Process]] = deque()
        self._users: dict[int, str | None] = {}
        self._groups: dict[int, str | None] = {}
        self._stats = TableStats()

    # ------------------------------------------------------------------ queries

    def get(self, pid: int) -> Process | None:
        return self._procs.get(pid)

    def __len__(self) -> int:
        return len(self._procs)

    def container_init(self, full_id: str) -> Process | None:
        """The container's first process the table knows: the one that is pid 1 inside, else the oldest
        living one (None: none is known). One pass over the table, once per container start."""
        best: Process | None = None
        for proc in self._procs.values():
            ref = proc.container
            if ref is None or ref.full_id != full_id or proc.exited_ns is not None:
                continue
            if proc.vpid == 1:
                return proc
            if best is None or proc.start_ns < best.start_ns:
                best = proc
        return best

    def __contains__(self, pid: object) -> bool:
        return pid in self._procs

    @property
    def stats(self) -> TableStats:
        self._stats.size = len(self._procs)
        self._stats.exited_pending = len(self._exits)
        return self._stats

    def ticks(self, ns: int) -> int:
        """CLOCK_BOOTTIME ns to /proc clock ticks, truncating as the kernel does."""
        return ns * self.clk_tck // NS_PER_SEC

    def user_name(self, uid: int) -> str | None:
        return cached_name(self._users, self._user_lookup, uid)

    def group_name(self, gid: int) -> str | None:
        return cached_name(self._groups, self._group_lookup, gid)

    # ------------------------------------------------------------------ bootstrap

    def bootstrap(self) -> int:
        """Load every process the fact source lists, then link parents and compute depths; returns the count.

        Pids already in the table (from events applied earlier) are left alone: events are fresher.
        """
        loaded: list[Process] = []
        for pid in self.facts.list_pids():
            if pid in self._procs:
                continue
            facts = self.facts.read(pid)
            if facts is None:
                continue
            proc = self._from_facts(facts, SOURCE_PROC)
            if self.containers is not None:  # no event yet, so no cgroup id: /proc/PID/cgroup tells
                proc.container = self.containers.lookup(0, pid, None)
            self._procs[pid] = proc
            loaded.append(proc)
        for proc in loaded:
            parent = self._procs.get(proc.ppid) if proc.ppid > 0 else None
            proc.parent = parent if parent is not proc else None
        self._assign_depths(loaded)
        self._enforce_cap()
        return len(loaded)

    def _assign_depths(self, procs: list[Process]) -> None:
        """Depths for freshly linked processes; breaks cycles a non-atomic /proc snapshot can produce."""
        pending = {id(p) for p in procs}
        for proc in procs:
            if id(proc) not in pending:
                continue
            path: list[Process] = []
            on_path: set[int] = set()
            cur: Process | None = proc
            while cur is not None and id(cur) in pending:
                if id(cur) in on_path:
                    path[-1].parent = None
                    cur = None
                    break
                path.append(cur)
                on_path.add(id(cur))
                cur = cur.parent
            depth = cur.depth if cur is not None else -1
            for node in reversed(path):
                depth = self._set_depth(node, depth + 1)
                pending.discard(id(node))

    # ------------------------------------------------------------------ events

    def apply(self, ev: Event) -> Process | None:
        """Update the table from one event; return the process it belongs to (``ev.pid``) as of this event."""
        ts = ev.ts_ns
        exits = self._exits
        if exits and exits[0][0] <= ts - self.exit_ttl_ns:
            self._expire(ts)
        if ev.pid <= 0:
            return None
        proc = self._procs.get(ev.pid)
        start = ev.start_ns
        if start and proc is not None and start != proc.kernel_start_ns:  # checked once per process
            if proc.kernel_start_ns or (proc.source in _FROM_PROC and self._reused(proc, start)):
                proc = None  # the kernel says this is another process: its exit and fork never reached us
            else:
                proc.kernel_start_ns = start
        created = proc is None
        facts: ProcFacts | None = None  # what /proc said when this event created the entry
        if proc is None:
            proc, facts = self._create_late(ev)
        moved = created or ev.cgroup_id != proc.cgroup_id  # per event: one int compare, nothing else
        if moved:
            self._cgroup_changed(proc, ev.cgroup_id)
        if proc.uid != ev.uid or proc.gid != ev.gid:
            self._set_ids(proc, ev.uid, ev.gid)
        creds = ev.creds
        if creds is not None and creds != proc.creds:
            proc.creds = creds
        etype = ev.type
        if etype == _OPEN:
            if ev.ret >= 0:
                self._on_open(proc, ev)
        elif etype == _CONNECT:
            pass
        elif etype == _FORK:
            self._on_fork(proc, ev)
        elif etype == _EXEC:
            if ev.ret == 0:
                containers = self.containers
                recheck = (
                    not moved and containers is not None and containers.recheck_exec and runtime_init(proc)
                )
                self._on_exec(proc, ev, created, facts)
                if recheck:
                    proc.container = containers.lookup(ev.cgroup_id, proc.pid, proc.container)  # type: ignore[union-attr]
        elif etype == _EXIT:
            if proc.exited_ns is None:
                proc.exited_ns = ts
                exits.append((ts, proc.pid, proc))
        elif etype == EventType.CHDIR and ev.ret == 0:
            self._on_chdir(proc, ev, created, facts)
        return proc

    def _cgroup_changed(self, proc: Process, cgroup_id: int) -> None:
        """A new process, or one whose events carry another cgroup id (moved, or a thread in another
        cgroup): ask which container that is."""
        proc.cgroup_id = cgroup_id
        if self.containers is not None:
            proc.container = self.containers.lookup(cgroup_id, proc.pid, proc.container)

    def _reused(self, proc: Process, start_ns: int) -> bool:
        return abs(self.ticks(start_ns) - proc.start_ticks) > EXEC_MATCH_TICKS

    def _on_open(self, proc: Process, ev: Event) -> None:
        fd = ev.ret
        dirfds = proc.dirfds
        if ev.open_flags & _DIR_OPEN:
            path = self.resolve_path(proc, ev.dirfd, ev.path)
            self._remember_dirfd(proc, fd, path)
        elif dirfds:
            # The kernel handed this number out again, so whatever directory it named was closed.
            dirfds.pop(fd, None)

    def _on_fork(self, parent: Process, ev: Event) -> None:
        child_pid = ev.child_pid
        flags = ev.clone_flags
        if child_pid <= 0 or child_pid == parent.pid or flags & CLONE_THREAD:
            return
        if flags & CLONE_PARENT:
            real_parent, ppid = parent.parent, parent.ppid
        else:
            real_parent, ppid = parent, parent.pid
        if self._procs.get(parent.pid) is parent:
            self._procs.move_to_end(parent.pid)
        ts = ev.child_start_ns or ev.ts_ns  # the kernel's start of the child when the probe could read it
        existing = self._procs.get(child_pid)
        if existing is not None:
            match = self._fork_match(existing, ts)
            if match > 0:  # a newer process already holds the pid: this fork event is stale
                return
            if match == 0:  # the child was already seen (bootstrap race, or its events overtook the fork)
                if existing.parent is not real_parent and not self._would_cycle(existing, real_parent):
                    existing.ppid = ppid
                    self._link(existing, real_parent)
                if existing.source == SOURCE_EVENT:
                    self._inherit(existing, parent)
                view = ev.child_ns
                if view is not None and not existing.pid_ns:
                    self._set_ns(existing, view.vpid, view.pid_ns, view.mnt_ns)
                return
            # match < 0: pid reuse; the old object lives on for whoever references it.
        ticks = self.ticks(ts)
        child = Process(
            pid=child_pid,
            ppid=ppid,
            start_ns=ts,
            entity_id=entity_id(self.boot_id, child_pid, ticks),
            comm=parent.comm,
            exe=parent.exe,
            filename=parent.filename,
            args=list(parent.args),
            cwd=parent.cwd,
            uid=parent.uid,
            gid=parent.gid,
            user_name=parent.user_name,
            group_name=parent.group_name,
            tty_nr=parent.tty_nr,
            creds=parent.creds,
            exe_memfd=parent.exe_memfd,
            exe_deleted=parent.exe_deleted,
            dirfds=dict(parent.dirfds),
            source=SOURCE_FORK,
            start_ticks=ticks,
            kernel_start_ns=ev.child_start_ns,
            cgroup_id=ev.cgroup_id,  # the fork event is the parent's: the child starts in its cgroup
            container=parent.container,
        )
        view = ev.child_ns
        if view is not None:  # else unknown: a child may be in another pid namespace than its parent
            self._set_ns(child, view.vpid, view.pid_ns, view.mnt_ns)
        self._link(child, real_parent)
        self._insert(child)

    @staticmethod
    def _inherit(child: Process, parent: Process) -> None:
        """Fill what a child seen only through its own events lacks with what it inherited at fork."""
        if not child.cwd:
            child.cwd = parent.cwd
        if not child.tty_nr:
            child.tty_nr = parent.tty_nr
        if child.exec_count == 0 and not child.exe:
            child.exe, child.filename, child.args = parent.exe, parent.filename, list(parent.args)
            child.exe_memfd, child.exe_deleted = parent.exe_memfd, parent.exe_deleted
        for fd, path in parent.dirfds.items():
            if len(child.dirfds) >= MAX_DIRFDS:
                break
            child.dirfds.setdefault(fd, path)

    @staticmethod
    def _fork_match(existing: Process, ts: int) -> int:
        """0: ``existing`` is this fork's child; -1: an older process with a reused pid; 1: a newer one."""
        delta = existing.start_ns - ts
        if existing.source == SOURCE_FORK:  # its start is a fork time: only a duplicate event matches
            return -1 if delta < 0 else (1 if delta > 0 else 0)
        if delta < -FORK_MATCH_NS:
            return -1
        if existing.source == SOURCE_EVENT:  # its start is when we first saw it: any time after the fork
            return 0
        return 1 if delta > FORK_MATCH_NS else 0  # kernel start ticks

    def _on_exec(self, proc: Process, ev: Event, created: bool, facts: ProcFacts | None) -> None:
        """Successful execs only. A process the table already knew is named from the event when the path it
        called still leads to the very file the probe saw it run (:meth:`_exe_matches`); otherwise, or for a
        process just created from /proc, /proc's view of exe/cwd wins when it still shows this process."""
        proc.args = list(ev.argv)
        proc.filename = ev.filename
        proc.comm = ev.comm
        proc.exec_count += 1
        called: str | None = None  # the path as called (absolute when the base is known), once looked up
        resolved = ""  # ... and its resolution
        verified = False
        cwd = proc.cwd
        ns = ev.ns
        if ns is not None:
            self._set_ns(proc, ns.vpid, ns.pid_ns, ns.mnt_ns)
        here = self._resolves_here(ev)
        if not created:  # else the facts were read a moment ago, while creating the entry
            if here and self._exe_verifiable(proc, ev):
                called = resolved = self._exe_called(proc, ev)
                if called.startswith("/"):
                    resolved = self.facts.realpath(called)
                    verified = self._exe_matches(resolved, ev)
            if verified:
                self._stats.exec_verified += 1
            else:
                self._stats.exec_proc_reads += 1
                facts = self.facts.read(proc.pid)
                if facts is not None and not self._facts_match(proc, facts):
                    facts = None
        if facts is not None:
            if facts.cwd:
                proc.cwd = facts.cwd
            proc.tty_nr = facts.tty_nr
            self._adopt_parent(proc, facts)
            if ns is None and facts.pid_ns:
                self._set_ns(proc, facts.vpid, facts.pid_ns, facts.mnt_ns)
        if ev.tty_nr >= 0:  # the probe read the terminal at the exec: exact even when /proc is gone
            proc.tty_nr = ev.tty_nr
        if verified:
            proc.exe = resolved  # the file the kernel runs, by a path that leads to it without symlinks
            proc.exe_deleted = proc.exe_memfd = False
        elif facts is not None and facts.exe:
            proc.exe = facts.exe  # the kernel's own resolution: symlinks followed
            proc.exe_deleted, proc.exe_memfd = facts.exe_deleted, facts.exe_memfd
        else:  # each lookup once per event, as a replay answers it; again only if /proc moved the cwd
            if called is None or (proc.cwd != cwd and self._called_from_cwd(ev)):
                exe = self._exe_called(proc, ev)
                if exe != called:
                    called = exe
                    # Another mount namespace's symlinks are not the agent's: its path as called, unresolved.
                    resolved = self.facts.realpath(exe) if here and exe.startswith("/") else exe
            proc.exe = resolved
            proc.exe_deleted = proc.exe_memfd = False
        if ev.exe_nlink >= 0:  # what the probe saw the process run: decides memfd and deleted files
            self._exe_identity(proc, ev)
        if self._procs.get(proc.pid) is proc:
            self._procs.move_to_end(proc.pid)

    def _resolves_here(self, ev: Event) -> bool:
        """Whether the exec'ing process looks paths up in the agent's mount namespace, so that the agent's own
        lookups (symlinks, file identity) of the path it called mean what they meant to it. A process in a
        container's namespace does not: its ``/bin/x`` may resolve, on the agent's side, through the host's
        symlinks to the very file it runs (a bind mount of a host directory at another place) and name it
        by a path the container does not have. Unknown on either side (no kernel offsets, a capture from
        before the namespace view): assumed, as before the probes could tell."""
        ns = ev.ns
        return ns is None or not self.agent_mnt_ns or ns.mnt_ns == self.agent_mnt_ns

    def _set_ns(self, proc: Process, vpid: int | None, pid_ns: int, mnt_ns: int) -> None:
        """How the process sees itself (a thread's vtid is its event's, not kept)."""
        proc.vpid, proc.pid_ns, proc.mnt_ns = vpid, pid_ns, mnt_ns
        host = self.host_pid_ns
        proc.host_pid_ns = pid_ns == host if pid_ns and host else None

    @staticmethod
    def _exe_verifiable(proc: Process, ev: Event) -> bool:
        """Whether the event and the table can stand in for /proc: the probe read the executable's identity
        (a linked file: a memfd or a deleted file has no path to verify) and the terminal, the table knows
        the cwd and the lineage (a process with neither parent nor ppid needs /proc's ppid)."""
        return (
            ev.exe_nlink > 0
            and ev.tty_nr >= 0
            and proc.cwd[:1] == "/"
            and (proc.parent is not None or proc.ppid > 0)
        )

    def _exe_called(self, proc: Process, ev: Event) -> str:
        """The executable as the process named it, absolute when its cwd or execveat dirfd is known."""
        dirfd = ev.dirfd if ev.flags & FLAG_EXECVEAT else AT_FDCWD
        return acting_process_path(self.resolve_path(proc, dirfd, ev.filename), proc.pid, ev.tid)

    @staticmethod
    def _called_from_cwd(ev: Event) -> bool:
        """Whether the executable was named relative to the cwd (not absolute, not from an execveat dirfd)."""
        if ev.filename.startswith("/"):
            return False
        return not (ev.flags & FLAG_EXECVEAT) or ev.dirfd == AT_FDCWD

    def _exe_matches(self, resolved: str, ev: Event) -> bool:
        """Whether ``resolved`` names the file the probe saw the process run, by a fresh look at it (so a
        cached resolution or a symlink re-pointed since the exec cannot name another file). A path under
        /proc names some process's own file: only /proc's own answer is taken for it. Another path to the
        same inode (a hard link, a bind mount) is the same file."""
        if resolved[:1] != "/" or resolved.startswith("/proc/"):
            return False
        identity = self.facts.exe_identity(resolved)
        return identity is not None and identity[0] == ev.exe_ino and identity[1] == ev.exe_dev

    def _exe_identity(self, proc: Process, ev: Event) -> None:
        """A memfd has no path at all: name it as the kernel does ("memfd:NAME"), whatever was exec'd."""
        name = ev.exe_name
        if ev.exe_nlink == 0 and name.startswith("memfd:") and self.facts.is_memfd_dev(ev.exe_dev):
            proc.exe, proc.exe_memfd, proc.exe_deleted = name, True, False
        else:
            proc.exe_memfd = False
            proc.exe_deleted = ev.exe_nlink == 0

    def _on_chdir(self, proc: Process, ev: Event, created: bool, facts: ProcFacts | None) -> None:
        if facts is not None:  # the entry was created from /proc just now: its cwd is already the new one
            if facts.cwd:
                proc.cwd = facts.cwd
            return
        cwd: str | None
        if ev.path:
            cwd = self.resolve_path(proc, AT_FDCWD, ev.path)
        else:  # fchdir: the probe puts the fd in dirfd; accept it in fd too
            fd = ev.fd if ev.fd >= 0 else ev.dirfd
            cwd = proc.dirfds.get(fd) if fd >= 0 else None
        if (not cwd or not cwd.startswith("/")) and not created:
            read = self.facts.read(proc.pid)
            cwd = read.cwd if read is not None and self._facts_match(proc, read) else None
        if cwd:
            proc.cwd = cwd

    # ------------------------------------------------------------------ paths

    def resolve_path(self, proc: Process, dirfd: int, path: str) -> str:
        """Absolute, normalised path of ``path`` as ``proc`` named it relative to ``dirfd``; never raises.

        An empty path means the dirfd itself (AT_EMPTY_PATH). When the base is unknown the path is returned as
        given. A dirfd the table has not seen opened is asked of the fact source once and remembered.
        """
        if path.startswith("/"):
            return normalize_path(path)
        if dirfd == AT_FDCWD:
            base: str | None = proc.cwd
        else:
            base = proc.dirfds.get(dirfd)
            if base is None and dirfd >= 0:
                base = self.facts.read_fd(proc.pid, dirfd)
                if base is not None and base.startswith("/"):
                    self._remember_dirfd(proc, dirfd, base)
        if not base or not base.startswith("/"):
            return path
        if not path:
            return normalize_path(base)
        return normalize_path(base + "/" + path)

    @staticmethod
    def _remember_dirfd(proc: Process, fd: int, path: str) -> None:
        dirfds = proc.dirfds
        if dirfds.pop(fd, None) is None and len(dirfds) >= MAX_DIRFDS:
            del dirfds[next(iter(dirfds))]  # forget the oldest
        dirfds[fd] = path

    # ------------------------------------------------------------------ internals

    def _from_facts(self, facts: ProcFacts, source: str, uid: int = -1, gid: int = -1) -> Process:
        if facts.uid >= 0:
            uid = facts.uid
        if facts.gid >= 0:
            gid = facts.gid
        exe = facts.exe or ""
        proc = Process(
            pid=facts.pid,
            ppid=facts.ppid,
            start_ns=facts.start_ticks * NS_PER_SEC // self.clk_tck,
            entity_id=entity_id(self.boot_id, facts.pid, facts.start_ticks),
            comm=facts.comm,
            exe=exe,
            filename=exe,  # how it was called is lost; the resolved path is the best stand-in
            args=list(facts.args) if facts.args is not None else [],
            cwd=facts.cwd or "",
            uid=uid,
            gid=gid,
            user_name=self.user_name(uid),
            group_name=self.group_name(gid),
            tty_nr=facts.tty_nr,
            exe_deleted=facts.exe_deleted,
            exe_memfd=facts.exe_memfd,
            source=source,
            start_ticks=facts.start_ticks,
        )
        if facts.pid_ns:
            self._set_ns(proc, facts.vpid, facts.pid_ns, facts.mnt_ns)
        return proc

    def _create_late(self, ev: Event) -> tuple[Process, ProcFacts | None]:
        """An event for a pid we never saw fork: build it from /proc if still there, else from the event."""
        facts = self.facts.read(ev.pid)
        if (
            facts is not None
            and ev.start_ns
            and abs(facts.start_ticks - self.ticks(ev.start_ns)) > EXEC_MATCH_TICKS
        ):
            facts = None  # /proc (or the capture) describes an older process that had this pid
        if facts is not None:
            proc = self._from_facts(facts, SOURCE_LATE, ev.uid, ev.gid)
            parent = self._procs.get(facts.ppid) if facts.ppid > 0 else None
        else:
            start = ev.start_ns or ev.ts_ns  # the kernel's start when the probe could read it
            ticks = self.ticks(start)
            proc = Process(
                pid=ev.pid,
                ppid=0,
                start_ns=start,
                kernel_start_ns=ev.start_ns,
                entity_id=entity_id(self.boot_id, ev.pid, ticks),
                comm=ev.comm,
                uid=ev.uid,
                gid=ev.gid,
                user_name=self.user_name(ev.uid),
                group_name=self.group_name(ev.gid),
                source=SOURCE_EVENT,
                start_ticks=ticks,
            )
            parent = None
        self._link(proc, parent)
        self._insert(proc)
        self._stats.late_processes += 1
        return proc, facts

    def _facts_match(self, proc: Process, facts: ProcFacts) -> bool:
        """Whether /proc facts describe ``proc`` and not a later process that reused its pid."""
        if proc.source == SOURCE_EVENT:  # we only know when we first saw it: it started no later than that
            return facts.start_ticks <= proc.start_ticks + EXEC_MATCH_TICKS
        return abs(facts.start_ticks - proc.start_ticks) <= EXEC_MATCH_TICKS

    def _adopt_parent(self, proc: Process, facts: ProcFacts) -> None:
        """Give a process seen without lineage the parent /proc names, if the table knows it."""
        if proc.parent is not None or proc.ppid > 0 or facts.ppid <= 0:
            return
        proc.ppid = facts.ppid
        parent = self._procs.get(facts.ppid)
        if parent is not None and not self._would_cycle(proc, parent):
            self._link(proc, parent)

    def _set_ids(self, proc: Process, uid: int, gid: int) -> None:
        if proc.uid != uid:
            proc.uid = uid
            proc.user_name = self.user_name(uid)
        if proc.gid != gid:
            proc.gid = gid
            proc.group_name = self.group_name(gid)

    def _link(self, child: Process, parent: Process | None) -> None:
        child.parent = parent
        self._set_depth(child, parent.depth + 1 if parent is not None else 0)

    def _set_depth(self, proc: Process, depth: int) -> int:
        if depth > self.max_depth:
            proc.parent = None
            depth = 0
            self._stats.depth_truncated += 1
        proc.depth = depth
        return depth

    def _would_cycle(self, proc: Process, parent: Process | None) -> bool:
        cur = parent
        for _ in range(self.max_depth + 1):
            if cur is None:
                return False
            if cur is proc:
                return True
            cur = cur.parent
        return False

    def _insert(self, proc: Process) -> None:
        procs = self._procs
        procs.pop(proc.pid, None)
        procs[proc.pid] = proc
        if len(procs) > self.max_entries:
            self._enforce_cap()

    def _enforce_cap(self) -> None:
        """Evict exited entries first (oldest exit first), then the least recently active live ones."""
        procs = self._procs
        exits = self._exits
        while len(procs) > self.max_entries:
            victim: Process | None = None
            while exits:
                _, pid, proc = exits.popleft()
                if procs.get(pid) is proc:
                    victim = procs.pop(pid)
                    break
            if victim is None:
                _, victim = procs.popitem(last=False)
            victim.dirfds.clear()
            self._stats.evicted += 1

    def _expire(self, now_ns: int) -> None:
        procs = self._procs
        exits = self._exits
        limit = now_ns - self.exit_ttl_ns
        while exits and exits[0][0] <= limit:
            _, pid, proc = exits.popleft()
            if procs.get(pid) is proc:
                del procs[pid]
                proc.dirfds.clear()
                self._stats.expired += 1
