"""Replay a capture through the same pipeline as live events.

A capture holds, in order, what the live agent saw: the /proc facts it read while bootstrapping and while
enriching, fd, symlink and file identity lookups, the containers it was told processes are in and what their
runtimes said of them (as the pipeline took it), events and losses. Feeding the facts to a
:class:`ReplayFacts` (the containers to a :class:`ReplayContainers`, their metadata to its
:class:`MetadataView`) before the events that needed them makes the process table, the rules and the
documents give the same answers they gave live, without touching /proc, the cgroups or a runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sentinel.capture import (
    CaptureProblem,
    CaptureReader,
    ContainerFact,
    FactsMiss,
    FdFact,
    IdentityFact,
    LossReport,
    RealpathFact,
    SegmentStart,
    SnapshotEnd,
)
from sentinel.containers.identity import ReplayContainers
from sentinel.containers.meta_view import MetaChange, MetadataView
from sentinel.events import Event
from sentinel.host import HostInfo
from sentinel.log import get_logger
from sentinel.process.facts import ProcFacts, ReplayFacts
from sentinel.process.table import ProcessTable


def replay_events(path: str, make_stream: Callable[[HostInfo, ProcessTable], Any]) -> CaptureProblem | None:
    """Drive ``make_stream(host, table).handle`` with every event of every segment of the capture.

    Returns the problem that stopped reading early (truncated or corrupt tail), after everything readable
    was handled; raises ``CaptureError`` when the file is not a capture at all.
    """
    log = get_logger()
    facts = ReplayFacts()
    containers = ReplayContainers(MetadataView())
    table: ProcessTable | None = None
    stream: Any = None
    bootstrapped = False
    with CaptureReader(path) as reader:
        for item in reader:
            if isinstance(item, Event):
                if table is None:  # pragma: no cover - the reader always starts with a segment
                    continue
                if not bootstrapped:
                    table.bootstrap()
                    bootstrapped = True
                stream.handle(item)
            elif isinstance(item, ProcFacts):
                facts.feed(item)
            elif isinstance(item, FactsMiss):
                facts.forget(item.pid)
            elif isinstance(item, FdFact):
                facts.feed_fd(item.pid, item.fd, item.path)
            elif isinstance(item, RealpathFact):
                facts.feed_realpath(item.path, item.resolved)
            elif isinstance(item, IdentityFact):
                facts.feed_identity(item.path, item.identity)
            elif isinstance(item, ContainerFact):
                containers.feed(item.pid, item.container)
            elif isinstance(item, MetaChange):
                containers.metadata.apply(item)
            elif isinstance(item, SnapshotEnd):
                if table is not None and not bootstrapped:
                    table.bootstrap()
                    bootstrapped = True
            elif isinstance(item, SegmentStart):
                # A new recording session (possibly after a reboot): fresh host identity and process state.
                host = HostInfo.from_dict(item.header)
                facts = ReplayFacts()
                containers = ReplayContainers(MetadataView())  # answers from the records only, never asked
                table = ProcessTable(
                    boot_id=host.boot_id,
                    facts=facts,
                    containers=containers,
                    agent_mnt_ns=host.agent_mnt_ns,
                    host_pid_ns=host.host_pid_ns,
                )
                stream = make_stream(host, table)
                bootstrapped = False
            elif isinstance(item, LossReport):
                log.warning("sentinel.events_lost", buffer=item.event_type, lost=item.count, ts_ns=item.ts_ns,
                            source="capture")
                report = getattr(stream, "report_loss", None)  # detection raises an internal alert for it
                if report is not None:
                    report(item.ts_ns, item.event_type, item.count)
        return reader.problem
