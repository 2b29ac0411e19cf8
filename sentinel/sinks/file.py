"""Alerts appended to an NDJSON file, mode 0600 (command lines and paths in alerts can be sensitive), with
size-based rotation.

Whole lines only, so a shipper tailing the file (Filebeat, Vector, Fluent Bit) never reads half an alert:
``write()`` keeps lines in memory and ``flush()`` (once per batch) writes them with one ``os.write`` of
complete lines; a rotation happens between two lines, never inside one. A write torn by SIGKILL can still
leave a partial last line (the kernel stops a large write between pages), so opening a file whose last byte
is not a newline cuts that partial line off first (``sentinel.sink_repaired``).

Missing parent directories are created 0750 when the file is opened.

Rotation: past ``rotate_bytes`` the file is renamed ``PATH.1`` (``.1`` → ``.2`` …, the oldest past
``keep_files`` deleted) and a new ``PATH`` is created 0600. ``reopen()`` is for an external logrotate
(``create`` mode, then SIGUSR1); a file renamed or deleted behind the agent's back is noticed at the next
flush anyway. A failing write (disk full, file system gone) is counted and logged once per episode, never
fatal to detection: the unwritten lines are kept (up to 16 MiB, the oldest beyond that dropped and counted)
and written when the disk takes them again.
"""

from __future__ import annotations

import os
import stat
import time
from typing import Any

from sentinel.log import get_logger
from sentinel.sinks.base import Episode, base_stats

AUTO_FLUSH_BYTES = 1 << 20  # written before flush() when this much is waiting (bounds memory)
MAX_CARRY_BYTES = 16 << 20  # unwritten bytes kept while writes fail
REPAIR_SCAN_BYTES = 1 << 20


class FileSink:
    def __init__(self, path: str, rotate_bytes: int = 0, keep_files: int = 5, fmt: str = "ecs") -> None:
        self.path = path
        self.name = f"file:{path}"
        self.format = fmt
        self.rotate_bytes = max(0, rotate_bytes)
        self.keep_files = max(0, keep_files)
        self.written = 0
        self.delivered = 0
        self.errors = 0
        self.dropped = 0
        self.rotations = 0
        self.repaired = 0
        self.last_success: float | None = None
        self._lines: list[bytes] = []
        self._buffered = 0
        self._carry = b""  # bytes a failed write left unwritten
        self._carry_midline = False  # ... starting inside a line already partly in the file
        self._reopen_wanted = False
        self._busy = False
        self._closed = False
        self._episode = Episode(self.name)
        self._fd = -1
        self._regular = False
        self._ident = (0, 0)
        self._size = 0
        self._open()  # a bad path raises now, before the agent starts

    # ---- opening -------------------------------------------------------------------------------------

    def _make_parent(self) -> None:
        """Create the missing directories above the file, each 0750 (owner writes, a log shipper's group
        reads): ``file:/var/log/sentinel/alerts.json`` works on a fresh host. Existing ones are left alone."""
        missing: list[str] = []
        parent = os.path.dirname(os.path.abspath(self.path))
        while parent and not os.path.isdir(parent) and parent != os.path.dirname(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        for directory in reversed(missing):
            try:
                os.mkdir(directory, 0o750)
            except FileExistsError:
                continue  # made meanwhile (or a file: the open below says so)
            os.chmod(directory, 0o750)  # exactly 0750 whatever the umask

    def _open(self) -> None:
        self._make_parent()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            st = os.fstat(fd)
            regular = stat.S_ISREG(st.st_mode)
            size = st.st_size
            if regular and size == 0:
                os.fchmod(fd, 0o600)  # ours: exactly 0600 whatever the umask; an operator's mode is kept
            elif regular:
                size = self._repair(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._regular, self._ident, self._size = fd, regular, (st.st_dev, st.st_ino), size

    def _repair(self, fd: int, size: int) -> int:
        """Cut a partial last line (left by a killed writer) so the next alert starts on a line of its own."""
        try:
            rfd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return size
        try:
            n = min(size, REPAIR_SCAN_BYTES)
            tail = os.pread(rfd, n, size - n)
        finally:
            os.close(rfd)
        if not tail or tail.endswith(b"\n"):
            return size
        idx = tail.rfind(b"\n")
        if idx < 0 and n < size:  # no line end in the last MiB: not a torn alert; just end the line
            os.write(fd, b"\n")
            get_logger().warning("sentinel.sink_repaired", sink=self.name, added_newline=True)
            self.repaired += 1
            return size + 1
        keep = size - n + idx + 1
        os.ftruncate(fd, keep)
        self.repaired += 1
        get_logger().warning("sentinel.sink_repaired", sink=self.name, removed_bytes=size - keep)
        return keep

    # ---- the detection thread's calls ------------------------------------------------------------------

    def write(self, line: bytes, priority: str = "warning") -> None:
        self._lines.append(line)
        self._buffered += len(line) + 1
        self.written += 1
        if self._buffered >= AUTO_FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._busy or self._closed:
            return  # re-entered from a signal handler: the running flush does the work
        self._busy = True
        try:
            self._flush()
        finally:
            self._busy = False

    def reopen(self) -> None:
        """Close and open PATH again (after logrotate moved it). Safe from a signal handler: when it
        interrupts a flush, the reopen happens at the next one."""
        self._reopen_wanted = True
        self.flush()

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError as exc:
                self._failed(exc)
            self._fd = -1

    def stats(self) -> dict[str, Any]:
        return base_stats(
            written=self.written,
            delivered=self.delivered,
            errors=self.errors,
            dropped=self.dropped,
            backlog_alerts=len(self._lines) + self._carry.count(b"\n"),
            backlog_bytes=self._buffered + len(self._carry),
            last_success=self.last_success,
            status="failing" if self._episode.failing else "ok",
            rotations=self.rotations,
        )

    # ---- writing -----------------------------------------------------------------------------------------

    def _flush(self) -> None:
        if self._reopen_wanted or self._fd < 0 or self._moved():
            self._reopen()
        data = self._carry
        if self._lines:
            data += b"\n".join(self._lines) + b"\n"
            self._lines.clear()
            self._buffered = 0
        if not data:
            return
        midline, self._carry, self._carry_midline = self._carry_midline, b"", False
        if self._fd < 0:
            self._keep(data, midline)
            return
        if self._write_lines(data, midline):
            self._episode.ok(errors=self.errors)

    def _write_lines(self, data: bytes, midline: bool) -> bool:
        """Write ``data`` (complete lines, the first maybe the rest of a torn one), rotating between lines."""
        pos = 0
        if midline:  # the rest of a line already begun in this file goes here, whatever its size
            pos = data.find(b"\n") + 1
            if not self._write_all(data, 0, pos, True):
                return False
        limit = self.rotate_bytes if self._regular else 0
        while pos < len(data):
            end = len(data)
            if limit and self._size + (end - pos) > limit:
                room = limit - self._size
                cut = data.rfind(b"\n", pos, pos + room) + 1 if room > 0 else 0
                if cut == 0:
                    if self._size > 0:
                        if not self._rotate():
                            limit = 0  # renaming fails: keep appending to this file rather than lose alerts
                        if self._fd < 0:
                            self._keep(data[pos:], False)
                            return False
                        continue
                    cut = data.find(b"\n", pos) + 1  # one line longer than rotate_bytes: alone in a file
                end = cut
            if not self._write_all(data, pos, end, False):
                return False
            pos = end
        return True

    def _write_all(self, data: bytes, start: int, end: int, midline: bool) -> bool:
        view = memoryview(data)
        pos = start
        try:
            while pos < end:
                pos += os.write(self._fd, view[pos:end])
        except OSError as exc:
            self._failed(exc)
            torn = pos > start and data[pos - 1 : pos] != b"\n"
            self._size += pos - start
            self.delivered += data.count(b"\n", start, pos)
            self._keep(data[pos:], torn or (midline and pos == start))
            return False
        self._size += end - start
        self.delivered += data.count(b"\n", start, end)
        self.last_success = time.time()
        return True

    def _keep(self, rest: bytes, midline: bool) -> None:
        """Hold unwritten bytes for the next flush; past the bound drop whole lines, oldest first."""
        self._carry, self._carry_midline = rest, midline
        excess = len(rest) - MAX_CARRY_BYTES
        if excess <= 0:
            return
        head = rest.find(b"\n") + 1 if midline else 0
        cut = rest.find(b"\n", head + excess) + 1 or len(rest)
        self.dropped += rest.count(b"\n", head, cut)
        self._carry = rest[:head] + rest[cut:]

    def _failed(self, exc: OSError) -> None:
        self.errors += 1
        self._episode.fail(str(exc), errors=self.errors)

    # ---- rotation and reopening ----------------------------------------------------------------------

    def _moved(self) -> bool:
        """PATH no longer names our file (renamed or deleted by someone else)."""
        if not self._regular:
            return False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return (st.st_dev, st.st_ino) != self._ident

    def _reopen(self) -> None:
        self._reopen_wanted = False
        if self._fd >= 0 and self._carry_midline:
            return  # finish the torn line in the file it began in first; reopen at the next flush
        self._close_fd()
        try:
            self._open()
        except OSError as exc:
            self._failed(exc)
            return
        get_logger().info("sentinel.sink_reopened", sink=self.name, size=self._size)

    def _rotate(self) -> bool:
        self._close_fd()
        rotated = False
        try:
            if self.keep_files == 0:
                os.unlink(self.path)
            else:
                kept = 0  # PATH.1 … PATH.kept exist (shift only those: a few renames, not keep_files probes)
                while kept < self.keep_files and os.path.lexists(f"{self.path}.{kept + 1}"):
                    kept += 1
                for i in range(min(kept, self.keep_files - 1), 0, -1):
                    os.replace(
                        f"{self.path}.{i}", f"{self.path}.{i + 1}"
                    )  # onto PATH.keep_files: oldest gone
                os.replace(self.path, f"{self.path}.1")
            self.rotations += 1
            rotated = True
        except OSError as exc:
            self._failed(exc)
        try:
            self._open()
        except OSError as exc:
            self._failed(exc)
        return rotated

    def _close_fd(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                os.close(fd)
            except OSError as exc:
                self._failed(exc)
