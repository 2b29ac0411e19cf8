"""The agent's JSON stream owns stdout: native libraries write their text to stderr instead.

libbcc prints some warnings with C++ ``std::cout`` (``Unable to find kernel headers…``, kbuild's header
ownership check, the preprocessor debug line), and C stdio flushes that buffer whenever it fills or at exit.
The agent writes its lines through an 8 KiB buffer whose chunks need not end on a newline, so native text
landing between two chunks splits a JSON line and the SIEM drops the document. Commands that load the probes
therefore write through a private duplicate of file descriptor 1 (not inherited by children) and point
descriptor 1 at stderr, where stray text is one more diagnostic line and the stream stays pure JSON.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import IO

_claimed: IO[bytes] | None = None


def claim_stdout() -> IO[bytes]:
    """The stream for JSON lines (the original stdout); descriptor 1 now writes to stderr.

    Idempotent. When descriptor 1 or 2 is not open the process keeps its stdout as it is (nothing better to
    point descriptor 1 at than what it is).
    """
    global _claimed
    if _claimed is not None:
        return _claimed
    sys.stdout.flush()
    try:
        private = os.dup(1)
    except OSError:
        return sys.stdout.buffer
    try:
        os.dup2(2, 1)
    except OSError:
        os.close(private)
        return sys.stdout.buffer
    _claimed = os.fdopen(private, "wb")
    return _claimed


def silence_closed_reader() -> None:
    """The reader went away (``sentinel events | head``): point stdout and the claimed stream at /dev/null, so
    the buffered bytes left at exit are dropped instead of raising a second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, _claimed):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)
