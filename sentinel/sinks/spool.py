"""A bounded on-disk queue of lines between the detection loop and a network sink's delivery thread.

Why on disk: a SIEM that is down for an hour must not cost an hour of alerts, nor an hour of alerts in memory.
Layout under ``<state_dir>/spool/<safe label>/``: segment files ``<seq>.seg`` holding complete lines (oldest
first), ``ack`` holding ``"<seq> <offset>"`` (everything before that position was delivered) and ``lock``
(one process per spool). The producer (detection thread) appends to memory and writes the batch with one
``os.write`` at :meth:`Spool.flush`; the consumer (delivery thread) reads from the acknowledged position and
acknowledges what the peer accepted. A crash or SIGKILL after ``flush()`` loses nothing (the page cache
keeps the bytes; there is no fsync, so a power cut can cost the last seconds); acknowledgements are written
after delivery, so a crash in between re-delivers (at-least-once: receivers de-duplicate on ``event.id``).

Past ``max_bytes`` the oldest segments are deleted and their undelivered lines counted in ``dropped``; a
line cut short by a crash (no newline) or holding NUL bytes (what a file system leaves after a power cut) is
skipped and counted in ``corrupt``. Neither stops the agent.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from sentinel.log import get_logger

SEGMENT_SUFFIX = ".seg"
ACK_FILE = "ack"
LOCK_FILE = "lock"
MIN_SEGMENT_BYTES = 1024
MAX_SEGMENT_BYTES = 16 << 20
FLUSH_AT_BYTES = 1 << 20  # appended bytes that trigger a write even before flush() (bounds memory)
MAX_PENDING_BYTES = 16 << 20  # kept in memory while the disk refuses writes; past it the oldest go
ROLL_DELIVERED_BYTES = 1 << 20  # a fully delivered segment this big is replaced
READ_BYTES = 4 << 20  # at most this much read per batch
_SCAN_CHUNK = 1 << 20


class SpoolError(OSError):
    """The spool directory cannot be used (permissions, or another process holds it)."""


def spool_dir(state_dir: str, label: str) -> str:
    """``<state_dir>/spool/<label made file-name safe>-<hash>``: readable, distinct for distinct labels."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._")[:80] or "sink"
    digest = hashlib.sha1(label.encode("utf-8", "surrogateescape"), usedforsecurity=False).hexdigest()[:8]
    return os.path.join(state_dir, "spool", f"{safe}-{digest}")


def segment_bytes_for(max_bytes: int) -> int:
    """Segments are about an eighth of the bound, so dropping the oldest gives up little at a time."""
    return max(MIN_SEGMENT_BYTES, min(MAX_SEGMENT_BYTES, max_bytes // 8))


@dataclass(slots=True)
class _Segment:
    seq: int
    end: int = 0  # bytes of complete lines: what may be read
    size: int = 0  # bytes on disk (end plus a torn tail, if any)
    lines: int = 0
    sealed: bool = True  # no longer appended to


@dataclass(slots=True)
class Batch:
    """Lines read from the acknowledged position; ``ack(batch)`` moves the position past them."""

    lines: list[bytes]
    seq: int
    start: int
    end: int
    consumed: int  # lines passed over, corrupt ones included
    nbytes: int = 0


@dataclass(slots=True)
class SpoolCounters:
    appended: int = 0
    acked: int = 0
    dropped: int = 0
    corrupt: int = 0
    write_errors: int = 0


@dataclass(slots=True)
class _ReadHandle:
    seq: int = -1
    fd: int = -1


class Spool:
    """One sink's queue. ``append``/``flush`` from the producer, ``peek``/``ack`` from one consumer."""

    def __init__(self, directory: str, max_bytes: int, label: str = "") -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.label = label or directory
        self.counters = SpoolCounters()
        self.segment_bytes = segment_bytes_for(self.max_bytes)
        self.ready = threading.Condition(threading.Lock())
        self._segments: deque[_Segment] = deque()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._head_fd = -1
        self._next_seq = 1
        self._ack_seq = 0
        self._ack_off = 0
        self._ack_lines = 0  # lines of the first segment before the ack offset
        self._lines = 0  # complete lines in all segments
        self._end_bytes = 0
        self._disk_bytes = 0
        self._read = _ReadHandle()
        self._dropping = False
        self._write_failing = False
        self._closed = False
        self._lock_fd = self._take_lock()
        try:
            self._load()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # ---- opening -------------------------------------------------------------------------------------

    def _take_lock(self) -> int:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.directory, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise SpoolError(exc.errno, "spool in use by another process", self.directory) from None
            raise
        return fd

    def _read_ack(self) -> tuple[int, int]:
        path = os.path.join(self.directory, ACK_FILE)
        try:
            with open(path, "rb") as fh:
                seq_text, off_text = fh.read(64).split()
            return int(seq_text), int(off_text)
        except FileNotFoundError:
            return 0, 0
        except (OSError, ValueError):
            get_logger().warning("sentinel.spool_ack_unreadable", spool=self.label, path=path)
            return 0, 0  # at-least-once: start from the oldest segment rather than lose anything

    def _load(self) -> None:
        """Adopt what a previous run left: segments after the acknowledged position, torn tails skipped."""
        ack_seq, ack_off = self._read_ack()
        seqs = []
        for name in os.listdir(self.directory):
            if name.endswith(SEGMENT_SUFFIX) and name[: -len(SEGMENT_SUFFIX)].isdigit():
                seqs.append(int(name[: -len(SEGMENT_SUFFIX)]))
        for seq in sorted(seqs):
            path = self._path(seq)
            if seq < ack_seq:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # delivered; the run that acknowledged it died before deleting it
                continue
            seg, acked_lines = self._scan(path, seq, ack_off if seq == ack_seq else 0)
            if not self._segments:
                self._ack_seq = seq
                self._ack_off = min(ack_off, seg.end) if seq == ack_seq else 0
                self._ack_lines = acked_lines if seq == ack_seq else 0
            self._segments.append(seg)
            self._lines += seg.lines
            self._end_bytes += seg.end
            self._disk_bytes += seg.size
            self._next_seq = seq + 1
        # Never reuse a number at or below the acknowledged one: a new segment with such a number would be
        # taken for delivered (and deleted) by the next start if this run died before acknowledging anything.
        self._next_seq = max(self._next_seq, ack_seq + 1)
        if not self._segments:
            self._ack_seq, self._ack_off = self._next_seq, 0
        if (self._ack_seq, self._ack_off) != (ack_seq, ack_off):
            self._save_ack()  # the file names a position that no longer exists: record the real one
        if self._lines:
            get_logger().info("sentinel.spool_resumed", spool=self.label, backlog=self.backlog_nolock())

    def _scan(self, path: str, seq: int, ack_off: int) -> tuple[_Segment, int]:
        """Count complete lines; a tail without newline (a write cut short) is left out and counted."""
        seg = _Segment(seq)
        acked = 0
        with open(path, "rb") as fh:
            pos = 0
            last_nl = -1
            while chunk := fh.read(_SCAN_CHUNK):
                seg.lines += chunk.count(b"\n")
                if ack_off > pos:
                    acked += chunk.count(b"\n", 0, max(0, ack_off - pos))
                idx = chunk.rfind(b"\n")
                if idx >= 0:
                    last_nl = pos + idx
                pos += len(chunk)
        seg.size = pos
        seg.end = last_nl + 1
        if seg.end < seg.size:
            self.counters.corrupt += 1
            get_logger().warning(
                "sentinel.spool_torn_line", spool=self.label, segment=path, bytes=seg.size - seg.end
            )
        return seg, acked

    def _path(self, seq: int) -> str:
        return os.path.join(self.directory, f"{seq:016d}{SEGMENT_SUFFIX}")

    # ---- producer --------------------------------------------------------------------------------------

    def append(self, line: bytes) -> None:
        """Queue one line (no newline) in memory; it reaches the disk at the next :meth:`flush`."""
        self._pending.append(line)
        self._pending_bytes += len(line) + 1
        self.counters.appended += 1
        if self._pending_bytes >= FLUSH_AT_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the queued lines with one write and wake the consumer; a disk error keeps them queued."""
        if not self._pending or self._closed:
            return
        data = b"\n".join(self._pending) + b"\n"
        count = len(self._pending)
        try:
            self._write(data, count)
        except OSError as exc:
            self.counters.write_errors += 1
            if not self._write_failing:
                self._write_failing = True
                get_logger().error("sentinel.spool_write_failed", spool=self.label, problem=str(exc))
            self._shed_pending()
            return
        if self._write_failing:
            self._write_failing = False
            get_logger().info("sentinel.spool_write_recovered", spool=self.label)
        self._pending.clear()
        self._pending_bytes = 0

    def _shed_pending(self) -> None:
        while self._pending_bytes > MAX_PENDING_BYTES and len(self._pending) > 1:
            self._pending_bytes -= len(self._pending.pop(0)) + 1
            self.counters.dropped += 1

    def _write(self, data: bytes, count: int) -> None:
        with self.ready:
            head = self._segments[-1] if self._segments and not self._segments[-1].sealed else None
            if head is not None and self._should_roll(head, len(data)):
                self._seal_head()
                head = None
            if head is None:
                head = self._open_head()
        # Outside the lock: the consumer never reads past head.end, which only moves after the write.
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._head_fd, view[written:])
        except OSError:
            if written:  # a torn write: never let a half line be read; start a new segment next time
                with self.ready:
                    head.size += written
                    self._disk_bytes += written
                    self._seal_head()
            raise
        with self.ready:
            head.size += len(data)
            head.end = head.size
            head.lines += count
            self._lines += count
            self._end_bytes += len(data)
            self._disk_bytes += len(data)
            self._enforce_bound()
            self.ready.notify_all()

    def _should_roll(self, head: _Segment, incoming: int) -> bool:
        """Start a new segment when this one is full, or when all of it was delivered and it is big enough
        to be worth deleting (the consumer removes sealed, delivered segments)."""
        if head.size == 0:
            return False
        if head.size + incoming > self.segment_bytes:
            return True
        delivered = head.seq == self._ack_seq and self._ack_off >= head.end
        return delivered and head.size >= ROLL_DELIVERED_BYTES

    def _open_head(self) -> _Segment:
        seq = self._next_seq
        fd = os.open(self._path(seq), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._next_seq = seq + 1
        self._head_fd = fd
        seg = _Segment(seq, sealed=False)
        if not self._segments:
            self._ack_seq, self._ack_off, self._ack_lines = seq, 0, 0
        self._segments.append(seg)
        return seg

    def _seal_head(self) -> None:
        if self._head_fd >= 0:
            os.close(self._head_fd)
            self._head_fd = -1
        if self._segments:
            self._segments[-1].sealed = True

    def _enforce_bound(self) -> None:
        """Drop the oldest segments while over the bound (never the one being written)."""
        if self._disk_bytes > self.max_bytes and len(self._segments) == 1 and self._segments[0].size > 0:
            self._seal_head()  # the next flush starts a new segment; this one goes when that one exists
        dropped = 0
        while self._disk_bytes > self.max_bytes and len(self._segments) > 1:
            seg = self._segments.popleft()
            lost = seg.lines - self._ack_lines
            dropped += lost
            self._forget(seg)
            nxt = self._segments[0]
            self._ack_seq, self._ack_off, self._ack_lines = nxt.seq, 0, 0
        if dropped:
            self.counters.dropped += dropped
            if not self._dropping:
                self._dropping = True
                get_logger().error(
                    "sentinel.spool_dropping", spool=self.label, dropped=dropped, max_bytes=self.max_bytes,
                    total_dropped=self.counters.dropped,
                )  # fmt: skip

    def _forget(self, seg: _Segment) -> None:
        self._lines -= seg.lines
        self._end_bytes -= seg.end
        self._disk_bytes -= seg.size
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(seg.seq))

    # ---- consumer --------------------------------------------------------------------------------------

    def peek(self, max_lines: int, max_bytes: int = READ_BYTES) -> Batch | None:
        """Up to ``max_lines`` lines from the acknowledged position (one segment at most); None if none."""
        while True:
            with self.ready:
                if not self._segments:
                    return None
                seg = self._segments[0]
                start, end = self._ack_off, seg.end
                position = None
                if start >= end:
                    if not seg.sealed:
                        return None  # caught up with the segment being written
                    self._pop_first()  # fully delivered (a torn tail at most): on to the next one
                    position = (self._ack_seq, self._ack_off)
                seq = seg.seq
            if position is not None:
                self._save_ack(position)
                continue
            fd = self._read_fd(seq)
            if fd < 0:
                if self._lost_segment(seq):
                    continue
                return None
            return self._read_batch(fd, seq, start, end, max_lines, max_bytes)

    def _pop_first(self) -> None:
        seg = self._segments.popleft()
        self._forget(seg)
        self._close_read()
        first = self._segments[0].seq if self._segments else self._next_seq
        self._ack_seq, self._ack_off, self._ack_lines = first, 0, 0

    def _lost_segment(self, seq: int) -> bool:
        """A segment file gone: dropped by the producer meanwhile (go on), or removed behind our back
        (count its lines as dropped and go on); the file being written is left to the producer."""
        with self.ready:
            if not self._segments or self._segments[0].seq != seq:
                return True
            seg = self._segments[0]
            if not seg.sealed:
                return False
            self.counters.dropped += seg.lines - self._ack_lines
            self._pop_first()
        get_logger().error("sentinel.spool_segment_missing", spool=self.label, segment=self._path(seq))
        return True

    def _read_batch(
        self, fd: int, seq: int, start: int, end: int, max_lines: int, max_bytes: int
    ) -> Batch | None:
        want = min(end - start, max_bytes)
        while True:
            data = os.pread(fd, want, start)
            cut = data.rfind(b"\n") + 1
            if cut > 0 or want >= end - start or len(data) < want:
                break
            want = min(end - start, want * 2)  # one line longer than max_bytes: read it whole anyway
        lines: list[bytes] = []
        pos = 0
        consumed = 0
        corrupt = 0
        while consumed < max_lines:
            nl = data.find(b"\n", pos, cut)
            if nl < 0:
                break
            line = data[pos:nl]
            pos = nl + 1
            consumed += 1
            if not line or b"\x00" in line:
                corrupt += 1
                continue
            lines.append(line)
        if corrupt:
            with self.ready:
                self.counters.corrupt += corrupt
            get_logger().warning("sentinel.spool_corrupt_lines", spool=self.label, lines=corrupt)
        if consumed == 0:
            return None
        return Batch(lines, seq, start, start + pos, consumed, pos)

    def _read_fd(self, seq: int) -> int:
        if self._read.seq == seq and self._read.fd >= 0:
            return self._read.fd
        self._close_read()
        try:
            self._read.fd = os.open(self._path(seq), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return -1
        self._read.seq = seq
        return self._read.fd

    def _close_read(self) -> None:
        if self._read.fd >= 0:
            os.close(self._read.fd)
        self._read.fd, self._read.seq = -1, -1

    def still_pending(self, batch: Batch) -> bool:
        """False once the batch was dropped (spool full) or acknowledged: it must not be sent again."""
        with self.ready:
            return batch.seq == self._ack_seq and batch.start == self._ack_off and bool(self._segments)

    def ack(self, batch: Batch) -> None:
        """Everything in ``batch`` was delivered (or given up on): move past it and persist the position."""
        with self.ready:
            if not (batch.seq == self._ack_seq and batch.start == self._ack_off and self._segments):
                return  # dropped meanwhile
            self._ack_off = batch.end
            self._ack_lines += batch.consumed
            self.counters.acked += len(batch.lines)
            seg = self._segments[0]
            if seg.sealed and self._ack_off >= seg.end:
                self._pop_first()
            if self._lines - self._ack_lines == 0:
                self._dropping = False  # the episode ends when the backlog is gone
            position = (self._ack_seq, self._ack_off)
        self._save_ack(position)  # outside the lock: a slow disk must not hold up the producer's flush

    def _save_ack(self, position: tuple[int, int] | None = None) -> None:
        """Persist the acknowledged position (write a temporary file, rename it over the old one)."""
        seq, off = position if position is not None else (self._ack_seq, self._ack_off)
        path = os.path.join(self.directory, ACK_FILE)
        tmp = path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"%d %d\n" % (seq, off))
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:  # worst case: re-delivery after a restart
            get_logger().warning("sentinel.spool_ack_failed", spool=self.label, problem=str(exc))

    # ---- both ------------------------------------------------------------------------------------------

    def backlog_nolock(self) -> int:
        """``backlog()`` for a caller already holding ``ready``."""
        return self._lines - self._ack_lines

    def backlog(self) -> int:
        """Lines on disk not yet acknowledged (what the consumer can read now)."""
        with self.ready:
            return self._lines - self._ack_lines

    def stats(self) -> dict[str, Any]:
        with self.ready:
            return {
                "backlog_alerts": self._lines - self._ack_lines + len(self._pending),
                "backlog_bytes": self._end_bytes - self._ack_off + self._pending_bytes,
                "spool_bytes": self._disk_bytes,
                "dropped": self.counters.dropped,
                "corrupt": self.counters.corrupt,
                "spool_write_errors": self.counters.write_errors,
            }

    def close(self) -> None:
        """Write what is queued and release the directory; the backlog stays for the next run."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        with self.ready:
            self._seal_head()
            self._close_read()
            delivered = False
            while self._segments and self._ack_off >= self._segments[0].end:
                self._pop_first()  # fully delivered: nothing to keep on disk
                delivered = True
            if delivered:
                self._save_ack()
            self.ready.notify_all()
        os.close(self._lock_fd)
