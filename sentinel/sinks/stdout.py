"""Alerts as JSON lines on stdout (the default): what `sentinel run | jq` and container log drivers read."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from sentinel.sinks.base import base_stats


class StdoutSink:
    """Buffered writes, flushed per batch. A closed pipe raises (the CLI treats it as a normal end)."""

    name = "stdout"

    def __init__(self, out: IO[bytes] | None = None, fmt: str = "ecs") -> None:
        self.out = out if out is not None else sys.stdout.buffer
        self.format = fmt
        self.written = 0
        self.last_success: float | None = None

    def write(self, line: bytes, priority: str = "warning") -> None:
        self.out.write(line + b"\n")
        self.written += 1

    def flush(self) -> None:
        self.out.flush()
        self.last_success = time.time()

    def reopen(self) -> None:
        """Nothing to reopen: stdout belongs to whoever started the agent."""

    def close(self) -> None:
        self.out.flush()

    def stats(self) -> dict[str, Any]:
        return base_stats(written=self.written, delivered=self.written, last_success=self.last_success)
