"""Alerts as JSON lines on stdout (the default): what `sentinel run | jq` and container log drivers read."""

from __future__ import annotations

import sys
from typing import IO


class StdoutSink:
    """Buffered writes, flushed per batch. A closed pipe raises (the CLI treats it as a normal end)."""

    name = "stdout"

    def __init__(self, out: IO[bytes] | None = None) -> None:
        self.out = out if out is not None else sys.stdout.buffer
        self.written = 0

    def write(self, line: bytes) -> None:
        self.out.write(line + b"\n")
        self.written += 1

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        self.out.flush()
