"""What a rule condition is evaluated against: one event with its process state, before any rendering.

Matching runs on every event, so it never touches the ECS document: the compiled conditions read these
objects directly, and a document is rendered only for events that raise an alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sentinel.containers.meta_view import NO_METADATA, FieldsLookup
from sentinel.events import Event

if TYPE_CHECKING:
    from sentinel.file_changes import FilePaths
    from sentinel.process.table import Process


@dataclass(slots=True)
class EvalContext:
    """``path`` is the resolved absolute path of an open/chdir, or the path a file change lands on (the raw
    path when it cannot be resolved)."""

    ev: Event
    proc: Process | None
    path: str | None = None
    wall_ns: int = 0  # event time as wall-clock epoch ns (for evt.time)
    ml: Any = None  # the anomaly model's lazy view of this event (sentinel.anomaly.live.MlView), or None
    target: Process | None = None  # the process a security syscall is aimed at, as the table knows it
    fd_path: str | None = None  # the path behind a security syscall's fd (setns, finit_module)
    files: FilePaths | None = None  # a file change's paths, resolved (sentinel.file_changes)
    # Runtime metadata of containers by full id (MetadataView.fields): container.name, image, labels, k8s.*
    containers: FieldsLookup = NO_METADATA
