"""The capture file format: what is on disk, the limits a reader enforces, and the items it yields.

A capture is a stream of msgpack objects (no framing, no index), so a writer only ever appends and a crash
costs at most the one record being written. The stream is made of *segments*; each starts with a header map
and continues with records until the next header map or the end of the file::

    header   {"format": "sentinel-capture", "version": 2, "hostname": str, "machine_id": str, "boot_id": str,
              "kernel": str, "boot_time_ns": int, "created_ns": int, "agent_version": str, "probe_mode": str}
    event    [1, type, ts_ns, pid, tid, uid, gid, comm, cgroup_id, flags, ret, filename, argv, argc_total,
              path, dirfd, open_flags, mode, repeat_count, fd, family, address, port, sock_type, child_pid,
              clone_flags, child_start_ns, exe_name, exe_ino, exe_dev, exe_nlink, tty_nr, start_ns, creds,
              sys_args, sys_extra, sys_strs, ns, child_ns]
    facts    [2, pid, start_ticks, ppid, comm, exe, cwd, args, uid, gid, tty_nr, exe_deleted, exe_memfd,
              vpid, pid_ns, mnt_ns]
    fd       [3, pid, fd, path]
    loss     [4, ts_ns, event_type_name, count]
    snapshot [5, ts_ns]            end of the /proc bootstrap snapshot (optional)
    miss     [6, pid]              a /proc read that found no process (replay must forget older facts)
    realpath [7, path, resolved]   a symlink resolution on the host (exe of a process already gone)
    identity [8, path, ino, dev]   a file's (st_ino, st_dev) on the host, nil nil if the lookup failed
    container [9, pid, runtime, full_id, id, rootless, pod_uid]   the container the process table was told
                                   a process is in (``sentinel.containers.identity``); host: nil nil nil false
                                   nil
    container_meta [10, full_id, state, meta]   a container's runtime metadata changed, as the pipeline saw it
                                   (``sentinel.containers.meta_view``); meta nil or
                                   [source, name, image, repository, tag, digest, image_id, labels,
                                    labels_truncated, privileged, host_network, host_pid, host_ipc, pod,
                                    mounts, mounts_truncated],
                                   labels a flat array k1 v1 k2 v2..., pod nil or
                                   [name, namespace, uid, sandbox_id, labels], mounts nil or an array of
                                   [source, destination, mode, rw, propagation]

Version 2 added the event's last eight elements (``creds`` is nil or ``[euid, suid, fsuid, egid, sgid, fsgid,
loginuid, sessionid, cap_effective, cap_permitted]`` with nil login fields on kernels without audit;
``exe_name`` is bin) and the facts' two booleans; a reader takes version-1 records (without them) too.
Version 3 added the last three: for a security syscall (``sentinel.syscalls``) or tamper record its raw
arguments (array of at most 6 integers), what the probe read behind pointers (at most 3 integers) and its
strings (at most 3 bin); a connect's ``sys_extra`` is its local end when the probe read it (a bind's
encoding, ``sentinel.sockets.connect_source``; added within version 7, absent means unknown); nil for every
other event. Version-1 and -2 records are read too.
Version 4 added the identity record (an exec's executable checked against the path it was called by).
Version 5 added the container record: ``runtime`` is str (one of sentinel's runtime names), ``full_id`` and
``id`` are bin (from a cgroup's name), ``rootless`` a boolean.
Version 6 added the event's ``ns`` (an exec: the process's) and ``child_ns`` (a fork: the child's), each nil
or ``[vpid, vtid, pid_ns, mnt_ns]`` (``sentinel.events.NsView``), and the facts' last three: ``vpid`` (nil:
unknown), ``pid_ns`` and ``mnt_ns`` (0: unknown); the header's optional ``agent_mnt_ns`` and ``host_pid_ns``
(ints, 0 unknown) say which mount namespace the recording agent resolved paths in and which pid namespace
was the host's.
Version 7 added the container record's ``pod_uid`` (bin; nil for the host; a version-5 or -6 record has
6 elements and no pod) and the container_meta record: ``state`` is str (``found``, ``pending``,
``not_found``, ``failed``, ``unsupported``), ``meta`` is given exactly when it is ``found``; its text is
bin (runtimes' answers hold what whoever made the container wrote), its flags booleans or nil (unknown).
Version 8 added the meta's last two: ``mounts`` (nil: the runtime did not say; each mount's paths, mode and
propagation bin, ``rw`` a boolean) and ``mounts_truncated`` (a boolean); a version-7 meta has 14 elements.

Appending (a restart of the agent) starts a new segment, possibly from another boot: ``ts_ns`` values are
CLOCK_BOOTTIME of *their* segment's boot, and ``boot_time_ns + ts_ns`` is wall-clock epoch ns.

Strings from monitored processes (comm, filename, argv items, path, address, exe, cwd, args) are msgpack
**bin**: the UTF-8/surrogateescape encoding of the ``str``, i.e. the bytes the kernel gave, so any byte string
round-trips exactly. ``exe``/``cwd``/``args`` and the fd ``path`` may be nil (unknown). Facts ``args`` is one
bin holding every argument followed by a NUL, like ``/proc/<pid>/cmdline`` (``[]`` is an empty bin): a command
line can have tens of thousands of arguments, more than a reader accepts in one array. Header values and
the loss type name are msgpack str. Integers must fit msgpack's int64/uint64 range.

Event types a reader does not know (a newer sensor) are skipped and counted, not errors. Anything else that
does not match the layout above (unknown record kind, wrong length or types, another format or version) is
corrupt: the reader stops there and reports the byte offset. Layout changes bump ``version``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from sentinel.containers.cgroup_path import ContainerRef
from sentinel.events import Event

if TYPE_CHECKING:
    from sentinel.containers.meta_view import MetaChange
    from sentinel.process.facts import ProcFacts

FORMAT = "sentinel-capture"
VERSION = 8
SUPPORTED_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8)

KIND_EVENT = 1
KIND_FACTS = 2
KIND_FD = 3
KIND_LOSS = 4
KIND_SNAPSHOT_END = 5
KIND_FACTS_MISS = 6
KIND_REALPATH = 7
KIND_IDENTITY = 8
KIND_CONTAINER = 9
KIND_CONTAINER_META = 10

KIND_NAMES: dict[int, str] = {
    KIND_EVENT: "event",
    KIND_FACTS: "facts",
    KIND_FD: "fd",
    KIND_LOSS: "loss",
    KIND_SNAPSHOT_END: "snapshot_end",
    KIND_FACTS_MISS: "facts_miss",
    KIND_REALPATH: "realpath",
    KIND_IDENTITY: "identity",
    KIND_CONTAINER: "container",
    KIND_CONTAINER_META: "container_meta",
}

# Element order of an event record after the kind; it is the on-disk layout, not derived from Event, so that
# a new Event field cannot change the format silently (a unit test checks both lists agree).
EVENT_FIELDS: tuple[str, ...] = (
    "type", "ts_ns", "pid", "tid", "uid", "gid", "comm", "cgroup_id", "flags", "ret", "filename", "argv",
    "argc_total", "path", "dirfd", "open_flags", "mode", "repeat_count", "fd", "family", "address", "port",
    "sock_type", "child_pid", "clone_flags",
)  # fmt: skip
EVENT_V2_FIELDS: tuple[str, ...] = (
    "child_start_ns", "exe_name", "exe_ino", "exe_dev", "exe_nlink", "tty_nr", "start_ns", "creds",
)  # fmt: skip
EVENT_V3_FIELDS: tuple[str, ...] = ("sys_args", "sys_extra", "sys_strs")
EVENT_V6_FIELDS: tuple[str, ...] = ("ns", "child_ns")
EVENT_BIN_FIELDS = frozenset({"comm", "filename", "path", "address"})
EVENT_RECORD_LEN_V1 = 1 + len(EVENT_FIELDS)
EVENT_RECORD_LEN_V2 = EVENT_RECORD_LEN_V1 + len(EVENT_V2_FIELDS)
EVENT_RECORD_LEN_V3 = EVENT_RECORD_LEN_V2 + len(EVENT_V3_FIELDS)  # versions 3 to 5
EVENT_RECORD_LEN = EVENT_RECORD_LEN_V3 + len(EVENT_V6_FIELDS)
NS_VIEW_LEN = 4  # an ns element: [vpid, vtid, pid_ns, mnt_ns]
SYS_LIMITS = {"sys_args": 6, "sys_extra": 3, "sys_strs": 3}  # elements each array may hold

FACTS_FIELDS: tuple[str, ...] = (
    "pid", "start_ticks", "ppid", "comm", "exe", "cwd", "args", "uid", "gid", "tty_nr", "exe_deleted",
    "exe_memfd", "vpid", "pid_ns", "mnt_ns",
)  # fmt: skip
FACTS_RECORD_LEN = 1 + len(FACTS_FIELDS)
FACTS_RECORD_LEN_V2 = FACTS_RECORD_LEN - 3  # versions 2 to 5: no vpid and namespaces
FACTS_RECORD_LEN_V1 = FACTS_RECORD_LEN_V2 - 2

HEADER_FIELDS: dict[str, type] = {
    "format": str,
    "version": int,
    "hostname": str,
    "machine_id": str,
    "boot_id": str,
    "kernel": str,
    "boot_time_ns": int,
    "created_ns": int,
    "agent_version": str,
    "probe_mode": str,
}

# Reader limits. Every record must fit them, and the writer refuses a record that does not, so whatever it
# writes can be read back. They bound what a hostile file can make the reader allocate: no declared length
# beyond these is trusted, and at most MAX_CONTAINERS arrays/maps of at most MAX_ARRAY_LEN / MAX_MAP_LEN
# elements are built per record, so a record of tiny nested containers cannot balloon to gigabytes.
MAX_RECORD_BYTES = 16 << 20  # whole record; a command line is at most a few MiB
MAX_STR_LEN = 64 << 10  # msgpack str only appears in headers and loss type names
MAX_ARRAY_LEN = 4096  # event argv items (the probe captures far fewer)
MAX_MAP_LEN = 256  # header keys
MAX_CONTAINERS = 64  # arrays + maps per record

# How strings from monitored processes become bytes; the decoder uses the same pair.
TEXT_ENCODING = "utf-8"
TEXT_ERRORS = "surrogateescape"


@dataclass(slots=True, frozen=True)
class CaptureProblem:
    """Why reading stopped early: where (byte offset of the bad record's first byte) and what."""

    path: str
    offset: int
    kind: str  # "truncated", "corrupt", "unsupported", "not-a-capture" or "io"
    message: str

    def __str__(self) -> str:
        return f"{self.path}: at byte {self.offset}: {self.message}"


class CaptureError(Exception):
    """The file cannot be used as a capture at all (not one, empty, unsupported, unreadable, locked)."""

    def __init__(self, problem: CaptureProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass(slots=True, frozen=True)
class SegmentStart:
    """A header map: the records after it, up to the next one, come from this host, boot and agent run."""

    index: int  # 0 for the first segment of the file
    offset: int  # byte offset of the header in the file
    header: dict[str, Any]


@dataclass(slots=True, frozen=True)
class FdFact:
    """Where ``/proc/<pid>/fd/<fd>`` pointed when the live agent looked; ``path`` None if that failed."""

    pid: int
    fd: int
    path: str | None


@dataclass(slots=True, frozen=True)
class LossReport:
    """The sensor lost ``count`` samples of one event type around ``ts_ns``: the replayed stream has a gap."""

    ts_ns: int
    event_type: str
    count: int


@dataclass(slots=True, frozen=True)
class SnapshotEnd:
    """The live agent finished its /proc bootstrap snapshot at ``ts_ns``."""

    ts_ns: int


@dataclass(slots=True, frozen=True)
class FactsMiss:
    """A live /proc read for ``pid`` found no process; replay must not answer from older facts."""

    pid: int


@dataclass(slots=True, frozen=True)
class RealpathFact:
    """The live agent resolved ``path`` to ``resolved`` on the host filesystem."""

    path: str
    resolved: str


@dataclass(slots=True, frozen=True)
class IdentityFact:
    """The live agent looked at the file at ``path``: its (st_ino, st_dev), or None if there was none."""

    path: str
    identity: tuple[int, int] | None


@dataclass(slots=True, frozen=True)
class ContainerFact:
    """The live agent's answer to which container process ``pid`` is in (None: the host)."""

    pid: int
    container: ContainerRef | None


# What iterating a reader yields; ProcFacts comes from sentinel.process.facts, imported only when needed.
CaptureItem: TypeAlias = (
    "SegmentStart | Event | ProcFacts | FdFact | LossReport | SnapshotEnd | FactsMiss | RealpathFact"
    " | IdentityFact | ContainerFact | MetaChange"
)
CONTAINER_RECORD_LEN_V5 = 6
CONTAINER_RECORD_LEN = 7
META_FIELDS_LEN_V7 = 14  # the meta array of a container_meta record, version 7 (no mounts)
META_FIELDS_LEN = 16
MOUNT_FIELDS_LEN = 5
POD_FIELDS_LEN = 5


def header_problem(header: object) -> tuple[str, str] | None:
    """``(kind, message)`` saying why ``header`` is not a valid version-1 header, or None.

    ``kind`` is "not-a-capture" (not our header at all), "unsupported" (another version) or "corrupt".
    Extra keys are allowed so that a newer writer can add some without a version bump.
    """
    if not isinstance(header, dict):
        return "not-a-capture", f"expected a capture header map, found {short_repr(header)}"
    fmt = header.get("format")
    if fmt != FORMAT:
        return "not-a-capture", f"format is {short_repr(fmt)}, not {FORMAT!r}"
    version = header.get("version")
    if type(version) is not int:
        return "corrupt", f"header version is {short_repr(version)}, not an integer"
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, SUPPORTED_VERSIONS))
        return "unsupported", f"unsupported capture version {version} (this reader supports {supported})"
    for key, want in HEADER_FIELDS.items():
        if key not in header:
            return "corrupt", f"header lacks {key!r}"
        if type(header[key]) is not want:
            return "corrupt", f"header {key!r} is {short_repr(header[key])}, expected {want.__name__}"
    return None


def short_repr(value: object) -> str:
    """A short, safe description of an unexpected value for error messages (never the whole value)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, str | bytes):
        shown = repr(value[:40]) + ("…" if len(value) > 40 else "")
        return f"{type(value).__name__} {shown}"
    if isinstance(value, list | dict):
        return f"{type(value).__name__} of {len(value)} items"
    return type(value).__name__
