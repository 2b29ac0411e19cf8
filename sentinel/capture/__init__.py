"""Record what the live sensor saw (events, /proc facts, losses) and replay it later, byte for byte.

The on-disk format is described in :mod:`sentinel.capture.format` and ``docs/capture-format.md``.
"""

from sentinel.capture.format import (
    FORMAT,
    VERSION,
    CaptureError,
    CaptureItem,
    CaptureProblem,
    ContainerFact,
    FactsMiss,
    FdFact,
    IdentityFact,
    LossReport,
    RealpathFact,
    SegmentStart,
    SnapshotEnd,
)
from sentinel.capture.reader import CaptureReader, CaptureSummary, describe
from sentinel.capture.writer import CaptureWriter, capture_header

__all__ = [
    "FORMAT",
    "VERSION",
    "CaptureError",
    "CaptureItem",
    "CaptureProblem",
    "CaptureReader",
    "CaptureSummary",
    "CaptureWriter",
    "ContainerFact",
    "FactsMiss",
    "FdFact",
    "IdentityFact",
    "LossReport",
    "RealpathFact",
    "SegmentStart",
    "SnapshotEnd",
    "capture_header",
    "describe",
]
