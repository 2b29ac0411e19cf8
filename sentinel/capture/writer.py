"""Recording a capture: what the live agent saw, appended cheaply and so that a crash costs little.

Each record is packed whole before it enters the in-memory buffer, and the buffer goes to the file with plain
``os.write`` calls at least every ``flush_interval`` seconds or ``flush_bytes`` bytes. A crash therefore loses
at most that much and leaves at most one partial record at the tail, which the next append cuts off.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Mapping
from typing import Any, Protocol

import msgpack

from sentinel.capture.format import (
    FORMAT,
    KIND_CONTAINER,
    KIND_CONTAINER_META,
    KIND_EVENT,
    KIND_FACTS,
    KIND_FACTS_MISS,
    KIND_FD,
    KIND_IDENTITY,
    KIND_LOSS,
    KIND_NAMES,
    KIND_REALPATH,
    KIND_SNAPSHOT_END,
    MAX_ARRAY_LEN,
    MAX_RECORD_BYTES,
    TEXT_ENCODING,
    TEXT_ERRORS,
    VERSION,
    CaptureError,
    CaptureProblem,
    header_problem,
)
from sentinel.capture.reader import check_header_bytes, find_readable_end
from sentinel.containers.cgroup_path import ContainerRef
from sentinel.containers.meta_view import MetaChange
from sentinel.containers.metadata import ContainerMeta, Labels
from sentinel.events import Event

FLUSH_INTERVAL = 0.5  # seconds of wall time a record may wait in memory
FLUSH_BYTES = 256 << 10

_ENC = TEXT_ENCODING
_ERR = TEXT_ERRORS


class FactsLike(Protocol):
    """The attributes of ``sentinel.process.facts.ProcFacts`` a facts record stores."""

    pid: int
    start_ticks: int
    ppid: int
    comm: str
    exe: str | None
    cwd: str | None
    args: list[str] | None
    uid: int
    gid: int
    tty_nr: int
    exe_deleted: bool
    exe_memfd: bool
    vpid: int | None
    pid_ns: int
    mnt_ns: int


def capture_header(probe_mode: str, host: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A segment header for this host (or for ``host``, a ``HostInfo.to_dict()``-shaped mapping)."""
    if host is None:
        from sentinel.host import local_host  # only the live agent needs the running host's facts

        host = local_host().to_dict()
    return {**host, "probe_mode": probe_mode}


class CaptureWriter:
    """Appends records to a capture file. Not thread-safe: one writer thread, one writer per file (locked).

    ``header`` needs the host fields of the format (see :func:`capture_header`); ``format``, ``version`` and
    (unless given) ``created_ns`` are filled in. ``append=True`` adds a new segment to an existing capture,
    first cutting off a partial record left by a crash; without it an existing file is emptied. The agent's
    poll loop should call :meth:`flush_if_due` so that records do not wait longer than ``flush_interval``
    when events stop arriving.
    """

    __slots__ = ("_buf", "_closed", "_deadline", "_fd", "_flush_bytes", "_flush_interval", "_pack", "path")

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: Mapping[str, Any],
        append: bool = False,
        *,
        flush_interval: float = FLUSH_INTERVAL,
        flush_bytes: int = FLUSH_BYTES,
    ) -> None:
        self.path = os.fspath(path)
        self._pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
        head = self._pack(_full_header(header))
        check_header_bytes(head)  # whatever we write, our reader must accept
        self._flush_interval = flush_interval
        self._flush_bytes = flush_bytes
        self._closed = True
        self._fd = _open_for_writing(self.path, append)
        self._buf = bytearray(head)
        self._closed = False
        self.flush()  # the file is a valid (empty) capture from the start

    # -- records -----------------------------------------------------------------------------------------

    def write_event(self, ev: Event) -> None:
        """Record one event; this runs for every event the sensor delivers, so it just builds a list."""
        argv = ev.argv
        if len(argv) > MAX_ARRAY_LEN:
            raise ValueError(f"cannot record an event with {len(argv)} argv items (limit {MAX_ARRAY_LEN})")
        try:
            data = self._pack(
                [
                    KIND_EVENT,
                    ev.type,
                    ev.ts_ns,
                    ev.pid,
                    ev.tid,
                    ev.uid,
                    ev.gid,
                    ev.comm.encode(_ENC, _ERR),
                    ev.cgroup_id,
                    ev.flags,
                    ev.ret,
                    ev.filename.encode(_ENC, _ERR),
                    [a.encode(_ENC, _ERR) for a in argv],
                    ev.argc_total,
                    ev.path.encode(_ENC, _ERR),
                    ev.dirfd,
                    ev.open_flags,
                    ev.mode,
                    ev.repeat_count,
                    ev.fd,
                    ev.family,
                    ev.address.encode(_ENC, _ERR),
                    ev.port,
                    ev.sock_type,
                    ev.child_pid,
                    ev.clone_flags,
                    ev.child_start_ns,
                    ev.exe_name.encode(_ENC, _ERR),
                    ev.exe_ino,
                    ev.exe_dev,
                    ev.exe_nlink,
                    ev.tty_nr,
                    ev.start_ns,
                    None if ev.creds is None else list(ev.creds),
                    list(ev.sys_args) if ev.sys_args else None,
                    list(ev.sys_extra) if ev.sys_extra else None,
                    [t.encode(_ENC, _ERR) for t in ev.sys_strs] if ev.sys_strs else None,
                    None if ev.ns is None else list(ev.ns),
                    None if ev.child_ns is None else list(ev.child_ns),
                ]
            )
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise ValueError(f"cannot record event: {exc}") from exc
        self._append(data)

    def write_facts(self, f: FactsLike) -> None:
        """Record what /proc said about a process, so replay sees the same facts."""
        args = f.args
        raw_args: bytes | None = None
        if args is not None:
            raw_args = b"".join([a.encode(_ENC, _ERR) + b"\0" for a in args])
            if raw_args.count(0) != len(args):
                raise ValueError(f"cannot record facts of pid {f.pid}: an argument contains NUL")
        exe, cwd = f.exe, f.cwd
        self._append_record(
            [
                KIND_FACTS,
                f.pid,
                f.start_ticks,
                f.ppid,
                f.comm.encode(_ENC, _ERR),
                None if exe is None else exe.encode(_ENC, _ERR),
                None if cwd is None else cwd.encode(_ENC, _ERR),
                raw_args,
                f.uid,
                f.gid,
                f.tty_nr,
                f.exe_deleted,
                f.exe_memfd,
                f.vpid,
                f.pid_ns,
                f.mnt_ns,
            ]
        )

    def write_fd(self, pid: int, fd: int, path: str | None) -> None:
        """Record an fd lookup in /proc; ``None`` records a failed one."""
        self._append_record([KIND_FD, pid, fd, None if path is None else path.encode(_ENC, _ERR)])

    def write_loss(self, ts_ns: int, type_name: str, count: int) -> None:
        """Record that the sensor lost ``count`` samples, so replay shows the same gap."""
        self._append_record([KIND_LOSS, ts_ns, type_name, count])

    def write_snapshot_end(self, ts_ns: int) -> None:
        """Record that the /proc bootstrap snapshot is complete."""
        self._append_record([KIND_SNAPSHOT_END, ts_ns])

    def write_facts_miss(self, pid: int) -> None:
        """Record a /proc read that found no process."""
        self._append_record([KIND_FACTS_MISS, pid])

    def write_realpath(self, path: str, resolved: str) -> None:
        """Record a host-side symlink resolution (``LiveFacts.on_realpath``)."""
        self._append_record([KIND_REALPATH, path.encode(_ENC, _ERR), resolved.encode(_ENC, _ERR)])

    def write_identity(self, path: str, identity: tuple[int, int] | None) -> None:
        """Record a file identity lookup (``LiveFacts.on_identity``); ``None`` records a failed one."""
        ino, dev = identity if identity is not None else (None, None)
        self._append_record([KIND_IDENTITY, path.encode(_ENC, _ERR), ino, dev])

    def write_container(self, pid: int, ref: ContainerRef | None) -> None:
        """Record which container the process table was told ``pid`` is in (``None``: the host)."""
        if ref is None:
            self._append_record([KIND_CONTAINER, pid, None, None, None, False, None])
            return
        full_id, short = ref.full_id.encode(_ENC, _ERR), ref.id.encode(_ENC, _ERR)
        pod = ref.pod_uid.encode(_ENC, _ERR)
        self._append_record([KIND_CONTAINER, pid, ref.runtime, full_id, short, ref.rootless, pod])

    def write_container_meta(self, change: MetaChange) -> None:
        """Record a change of a container's runtime metadata as the pipeline saw it (``MetadataView``)."""
        meta = _meta_record(change.meta) if change.meta is not None else None
        self._append_record([KIND_CONTAINER_META, change.full_id.encode(_ENC, _ERR), change.state, meta])

    # -- buffering ---------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write out everything buffered (no fsync)."""
        if self._closed:
            raise ValueError(f"capture writer for {self.path} is closed")
        buf = self._buf
        while buf:
            written = os.write(self._fd, buf)
            del buf[:written]  # a short write keeps the rest for the next attempt
        self._deadline = time.monotonic() + self._flush_interval

    def flush_if_due(self) -> None:
        """Flush if records have waited ``flush_interval``; cheap enough to call on every poll."""
        if self._buf and time.monotonic() >= self._deadline:
            self.flush()

    def close(self) -> None:
        """Flush, fsync and close; safe to call twice."""
        if self._closed:
            return
        try:
            self.flush()
            os.fsync(self._fd)
        finally:
            self._closed = True
            os.close(self._fd)  # also drops the lock

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _append_record(self, record: list[Any]) -> None:
        try:
            data = self._pack(record)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"cannot record {KIND_NAMES[record[0]]} record: {exc}") from exc
        self._append(data)

    def _append(self, data: bytes) -> None:
        if len(data) > MAX_RECORD_BYTES:
            raise ValueError(f"record of {len(data)} bytes exceeds the capture limit of {MAX_RECORD_BYTES}")
        if self._closed:
            raise ValueError(f"capture writer for {self.path} is closed")
        buf = self._buf
        buf += data
        if len(buf) >= self._flush_bytes or time.monotonic() >= self._deadline:
            self.flush()


def _bin(text: str) -> bytes:
    return text.encode(_ENC, _ERR)


def _flat_labels(labels: Labels) -> list[bytes]:
    return [_bin(x) for pair in labels for x in pair]


def _meta_record(meta: ContainerMeta) -> list[Any]:
    """The meta array of a container_meta record (layout in ``sentinel.capture.format``)."""
    pod = meta.pod
    pod_record = None
    if pod is not None:
        pod_record = [_bin(pod.name), _bin(pod.namespace), _bin(pod.uid), _bin(pod.sandbox_id),
                      _flat_labels(pod.labels)]  # fmt: skip
    texts = (meta.source, meta.name, meta.image, meta.image_repository, meta.image_tag, meta.image_digest,
             meta.image_id)  # fmt: skip
    mounts = None
    if meta.mounts is not None:
        mounts = [[_bin(m.source), _bin(m.destination), _bin(m.mode), m.rw, _bin(m.propagation)]
                  for m in meta.mounts]  # fmt: skip
    return [
        *map(_bin, texts), _flat_labels(meta.labels), meta.labels_truncated,
        meta.privileged, meta.host_network, meta.host_pid, meta.host_ipc, pod_record,
        mounts, meta.mounts_truncated,
    ]  # fmt: skip


def _full_header(header: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's header with format, version and creation time; ``format`` first so files are sniffable."""
    full: dict[str, Any] = {"format": FORMAT, "version": VERSION, "created_ns": time.time_ns()}
    full.update((k, v) for k, v in header.items() if k not in ("format", "version"))
    problem = header_problem(full)
    if problem is not None:
        raise ValueError(f"invalid capture header: {problem[1]}")
    return full


def _open_for_writing(path: str, append: bool) -> int:
    """Open, lock and prepare the file; a symlink or non-regular file is refused (the agent runs as root)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        reason = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise CaptureError(CaptureProblem(path, 0, "io", f"cannot open for writing: {reason}")) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CaptureError(CaptureProblem(path, 0, "io", "not a regular file"))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CaptureError(
                CaptureProblem(path, 0, "io", "another process is writing this capture")
            ) from None
        if not append:
            os.ftruncate(fd, 0)
        elif os.fstat(fd).st_size > 0:
            _cut_partial_tail(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _cut_partial_tail(fd: int, path: str) -> None:
    """Before appending, drop a record a crash left half written; refuse to append to anything else broken."""
    try:
        problem = find_readable_end(path)
    except CaptureError as exc:
        problem = exc.problem
    if problem is None:
        return
    if problem.kind != "truncated":
        raise CaptureError(
            CaptureProblem(path, problem.offset, problem.kind, f"{problem.message}; not appending to it")
        )
    os.ftruncate(fd, problem.offset)
