"""Alerts appended to an NDJSON file, mode 0600 (command lines and paths in alerts can be sensitive).

Appends only, so a log shipper tailing the file never sees rewritten bytes; flushed once per batch. A
failing write (disk full, file system gone) is counted and reported, never fatal to detection. Rotation and
a spool for network sinks come with a later issue.
"""

from __future__ import annotations

import os
from typing import Any

from sentinel.log import get_logger

BUFFER_BYTES = 1 << 16


class FileSink:
    def __init__(self, path: str) -> None:
        self.path = path
        self.name = f"file:{path}"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size == 0:
                os.fchmod(fd, 0o600)  # our file: exactly 0600 whatever the umask; an operator's mode is kept
            self._fh: Any = os.fdopen(fd, "ab", buffering=BUFFER_BYTES)
        except BaseException:
            os.close(fd)
            raise
        self.written = 0
        self.errors = 0
        self._failing = False
        self._batch_failed = False

    def write(self, line: bytes) -> None:
        try:
            self._fh.write(line + b"\n")
        except OSError as exc:
            self._failed(exc)
            return
        self.written += 1

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as exc:
            self._failed(exc)
        batch_failed, self._batch_failed = self._batch_failed, False
        if self._failing and not batch_failed:
            self._failing = False
            get_logger().info("sentinel.sink_recovered", sink=self.name, errors=self.errors)

    def close(self) -> None:
        if self._fh.closed:
            return
        self.flush()
        try:
            self._fh.close()
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        self.errors += 1
        self._batch_failed = True
        if not self._failing:  # once per failure episode, not once per alert
            self._failing = True
            get_logger().error("sentinel.sink_failed", sink=self.name, problem=str(exc), errors=self.errors)
