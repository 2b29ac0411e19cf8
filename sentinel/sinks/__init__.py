"""Where alerts go: stdout or an NDJSON file (network sinks with a spool come later).

A sink takes one rendered JSON document at a time (without the newline) and is flushed once per batch of
events, so a reader sees alerts within a poll interval without a syscall per alert.
"""

from __future__ import annotations

from typing import IO, Protocol

from sentinel.sinks.file import FileSink
from sentinel.sinks.stdout import StdoutSink

__all__ = ["FileSink", "MultiSink", "OutputSpecError", "Sink", "StdoutSink", "open_sinks", "parse_output"]


class OutputSpecError(ValueError):
    """An ``--output`` value that names no sink we have."""


class Sink(Protocol):
    name: str
    written: int

    def write(self, line: bytes) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def parse_output(spec: str) -> tuple[str, str | None]:
    """``stdout`` → ("stdout", None); ``file:PATH`` → ("file", PATH)."""
    text = spec.strip()
    if text == "stdout" or text == "-":
        return "stdout", None
    if text.startswith("file:"):
        path = text[5:]
        if not path:
            raise OutputSpecError(f"{spec!r}: file: needs a path (file:/var/log/sentinel/alerts.json)")
        return "file", path
    raise OutputSpecError(f"unknown output {spec!r}; use stdout or file:PATH")


class MultiSink:
    """Every alert to every sink, in the order given."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks
        self.name = ",".join(s.name for s in sinks)
        self.written = 0

    def write(self, line: bytes) -> None:
        for s in self.sinks:
            s.write(line)
        self.written += 1

    def flush(self) -> None:
        for s in self.sinks:
            s.flush()

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def open_sinks(specs: list[str], stdout: IO[bytes] | None = None) -> Sink:
    """Open each output (files are created 0600 now, so a bad path fails before the agent starts)."""
    sinks: list[Sink] = []
    try:
        for spec in specs or ["stdout"]:
            kind, path = parse_output(spec)
            if kind == "stdout":
                sinks.append(StdoutSink(stdout))
            else:
                assert path is not None
                sinks.append(FileSink(path))
    except BaseException:
        for s in sinks:
            s.close()
        raise
    return sinks[0] if len(sinks) == 1 else MultiSink(sinks)
