"""Wires an event source (the live sensor or a capture) to the process table and to what consumes events.

Everything after the decoder is the same for live and replayed events: ``EventStream.handle`` enriches an
event through the process table and hands the rendered document to the output. The live loop adds what
only the kernel side has: readiness, losses, signals and a duration.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from sentinel import heap, tasks
from sentinel.alerts.ecs import EcsRenderer
from sentinel.containers.meta_view import metadata_view
from sentinel.events import SYSCALL_TYPES, Event, EventType
from sentinel.file_changes import FILE_TYPES, FilePaths, file_paths
from sentinel.process.table import ProcessTable
from sentinel.syscalls import FAMILIES, SECURITY_FAMILIES, SYSCALLS, tamper_fields, target_pid
from sentinel.text import dumps

SECURITY_TYPES = frozenset(
    {EventType.TAMPER, *(t for t in SYSCALL_TYPES if SYSCALLS[t].family in SECURITY_FAMILIES)}
)
# The security syscalls are rare and each can matter: shown by default with exec, open, connect, the file
# changes made without an open, the listening side and sockets moved between fds.
DEFAULT_TYPES = frozenset(
    {EventType.EXEC, EventType.OPEN, EventType.CONNECT, EventType.TAMPER, *SYSCALL_TYPES}
)
# Events handled between two calls of the sensor's ``service`` in a long batch (~5-10 ms of the agent's work):
# it empties the rings nothing may be lost from (execs, forks, exits) while a storm of opens is handled.
SERVICE_EVERY = 256
TYPE_BY_NAME: dict[str, EventType | frozenset[EventType]] = {
    "exec": EventType.EXEC,
    "execve": EventType.EXEC,
    "open": EventType.OPEN,
    "connect": EventType.CONNECT,
    "fork": EventType.FORK,
    "exit": EventType.EXIT,
    "chdir": EventType.CHDIR,
    "container": EventType.CONTAINER,  # (made by `sentinel run`'s detection, never by the sensor)
    "tamper": EventType.TAMPER,
    "security": SECURITY_TYPES,
    **{family: frozenset(types) for family, types in FAMILIES.items()},
    **{spec.name: t for t, spec in SYSCALLS.items()},
}


def security_target(table: ProcessTable, ev: Event) -> tuple[int | None, Any, str | None]:
    """What a security syscall is aimed at: the target pid and its process (ptrace, memory writes,
    signals), and the path behind its fd (setns: the namespace; finit_module: the module file)."""
    pid = target_pid(ev)
    target = table.get(pid) if pid is not None else None
    fd_path = None
    if ev.type in (EventType.SETNS, EventType.FINIT_MODULE) and ev.sys_args:
        fd = ev.sys_args[0] & 0xFFFFFFFF
        if fd < 0x80000000:
            fd_path = table.facts.read_fd(ev.pid, fd)
    return pid, target, fd_path


def resolved_files(table: ProcessTable, proc: Any, ev: Event) -> FilePaths:
    """A file change's paths resolved against the process's cwd and dirfds (as spelled without a process)."""
    if proc is None:
        return file_paths(ev, None)
    return file_paths(ev, lambda dirfd, path: table.resolve_path(proc, dirfd, path))


def parse_types(spec: str) -> frozenset[EventType]:
    """``exec,open`` → event types; ``all`` selects every type."""
    if spec.strip().lower() == "all":
        return frozenset(EventType)
    out: set[EventType] = set()
    for part in spec.split(","):
        name = part.strip().lower()
        if not name:
            continue
        if name not in TYPE_BY_NAME:
            raise ValueError(
                f"unknown event type {part!r}; choose from {', '.join(sorted(TYPE_BY_NAME))}, all"
            )
        chosen = TYPE_BY_NAME[name]
        out.update(chosen if isinstance(chosen, frozenset) else (chosen,))
    if not out:
        raise ValueError("no event types given")
    return frozenset(out)


@dataclass(slots=True)
class EventStream:
    """Enrich → render → filter → write, for ``sentinel events`` and ``sentinel replay --events``."""

    table: ProcessTable
    renderer: EcsRenderer
    out: IO[bytes]
    types: frozenset[EventType] = DEFAULT_TYPES
    keep: Callable[[dict[str, Any]], bool] | None = None
    written: int = 0
    filtered: int = 0

    def __post_init__(self) -> None:
        self.renderer.containers = metadata_view(self.table)  # runtimes' answers, as the pipeline took them

    def handle(self, ev: Event) -> None:
        if ev.type is EventType.CHDIR:
            before = self.table.get(ev.pid)
            cwd_before = before.cwd if before is not None else None
        proc = self.table.apply(ev)
        if ev.type is EventType.EXEC and ev.ret == 0:
            self.renderer.exec_generation += 1
        if ev.type not in self.types:
            return
        resolved = None
        if ev.type is EventType.OPEN:
            resolved = self.table.resolve_path(proc, ev.dirfd, ev.path) if proc is not None else ev.path
        elif ev.type is EventType.CHDIR and proc is not None:
            if ev.ret != 0:
                resolved = self.table.resolve_path(proc, ev.dirfd, ev.path)
            elif ev.path or proc.cwd != cwd_before:
                resolved = proc.cwd  # apply() already moved the cwd: resolving again would apply it twice
            # else: an fchdir to a directory the table could not learn: say nothing rather than the old cwd
        target = files = None
        if ev.type in FILE_TYPES:
            files = resolved_files(self.table, proc, ev)
        elif ev.type >= EventType.TAMPER:
            target = security_target(self.table, ev)
        doc = self.renderer.event_doc(ev, proc, resolved, target, files)
        if self.keep is not None and not self.keep(doc):
            self.filtered += 1
            return
        self.out.write(dumps(doc) + b"\n")
        self.written += 1


@dataclass(slots=True)
class StopFlag:
    """Set by SIGTERM/SIGINT so the loop can drain and flush before exiting."""

    stop: bool = False
    signals: list[int] = field(default_factory=list)

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, _frame: Any) -> None:
        self.stop = True
        self.signals.append(signum)


def run_live(
    sensor: Any,
    table: ProcessTable,
    handle: Callable[[Event], None],
    log: Any,
    duration: float | None,
    flush: Callable[[], None],
    on_loss: Callable[[int, str, int], None] | None = None,
    on_ready: Callable[[], None] | None = None,
    stats_interval: float = 60.0,
    on_tick: Callable[[], None] | None = None,
) -> int:
    """Attach, bootstrap, loop until a signal or the duration, drain. Returns the number of events handled.

    ``on_tick`` runs once per poll, after the batch is handled and before the flush (``sentinel run`` reloads
    rules there on SIGHUP and closes aggregation windows on an idle host). Nothing after the poll can stop
    the loop: an event that fails to be handled, or a failed loss report, tick, flush or stats record, is
    counted and reported (:mod:`sentinel.tasks`) and the loop goes on; only a signal, the duration, a sensor
    failure or a closed stdout (the reader went away) end it.
    """
    stop = StopFlag()
    stop.install()
    sensor.start()
    take = getattr(sensor, "take_tamper_records", None)  # (test doubles of the sensor have none)
    previous = take() if take is not None else []
    if previous:
        sensor.previous_tamper = previous  # sentinel run raises them as internal alerts when ready
    for ev in previous:
        what, sig, tid = tamper_fields(ev)
        log.warning("sentinel.tampered_before", sender_pid=ev.pid, sender_comm=ev.comm, sender_uid=ev.uid,
                    kind=what, signal=sig, target_tid=tid, ts_ns=ev.ts_ns)  # fmt: skip
    count = table.bootstrap()
    if on_ready is not None:
        on_ready()
    log.info(
        "sentinel.ready",
        tracepoints=len(sensor.attached),
        stash=sensor.stash_mode,
        scheduling=sensor.scheduling,
        processes=count,
        wakeup_events=sensor.config.wakeup_events,
        pages=sensor.config.pages,
        perf_reader=getattr(sensor, "perf_reader_mode", ""),
        unsent_before_ready=dict(getattr(sensor, "before_ready", {})),
        kernel_offsets=sensor.kernel_offsets_mode,
        namespace_facts=getattr(sensor, "namespace_facts", False),
        pid_view=getattr(sensor, "pid_view", False),
        init_namespaces=getattr(sensor, "init_ns_source", ""),
        open_dedup_s=sensor.config.open_dedup_s if sensor.open_dedup_active else 0,
        loader_opens=getattr(sensor, "loader_opens_mode", "report"),
        optional_tracepoints_absent=sensor.optional_absent,
        containers=_containers_info(table),
    )
    deadline = None if duration is None else time.monotonic() + duration
    next_stats = time.monotonic() + stats_interval
    next_kernel_read = 0.0
    next_trim = time.monotonic() + heap.TRIM_INTERVAL_S
    handled = 0
    heap.release_free_heap()  # what compiling the probes left (~30 MiB; see sentinel.heap)

    service = getattr(sensor, "service", None)  # (test doubles of the sensor have none)

    def handle_all(events: list[Event]) -> None:
        for i, ev in enumerate(events, 1):
            try:
                handle(ev)
            except BrokenPipeError:
                raise
            except Exception as exc:  # one event, not the agent
                tasks.record("handle_event", exc, log, event_type=ev.type_name, pid=ev.pid)
            if not i % SERVICE_EVERY and service is not None:  # a long batch: execs must not wait it out
                tasks.guard("sensor_service", service, log=log)

    def log_stats(events_handled: int) -> None:
        log.info("sentinel.stats", **live_stats(sensor, table, events_handled))

    def report_losses(read_kernel: bool, ts_ns: int) -> None:
        for name, lost in sensor.take_losses(read_kernel):
            log.warning("sentinel.events_lost", buffer=name, lost=lost, total_lost=sensor.lost[name])
            if on_loss is not None:
                on_loss(ts_ns, name, lost)

    try:
        while not stop.stop:
            batch = sensor.poll()
            handle_all(batch)
            handled += len(batch)
            now = time.monotonic()
            read_kernel = now >= next_kernel_read
            if read_kernel:
                next_kernel_read = now + 1.0  # the probes' counters: a few map reads, once a second
            tasks.guard("loss_report", report_losses, read_kernel, event_time(batch), log=log)
            if on_tick is not None:
                tasks.guard("tick", on_tick, log=log)
            tasks.guard("flush", flush, log=log)
            if deadline is not None and now >= deadline:
                break
            if now >= next_stats:
                next_stats = now + stats_interval
                tasks.guard("stats", log_stats, handled, log=log)
            if now >= next_trim:  # freed heap (a storm's batches) back to the kernel
                next_trim = now + heap.TRIM_INTERVAL_S
                tasks.guard("heap_trim", heap.release_free_heap, log=log)
        drained = sensor.drain()
        handle_all(drained)
        handled += len(drained)
        tasks.guard("loss_report", report_losses, True, event_time([]), log=log)
        tasks.guard("flush", flush, log=log)
    finally:
        stats = live_stats(sensor, table, handled)
        sensor.close()
        log.info("sentinel.stopped", signal=stop.signals[0] if stop.signals else None, **stats)
    return handled


def event_time(batch: list[Event]) -> int:
    """Kernel time to attach to a loss: the newest event handled, or now."""
    return batch[-1].ts_ns if batch else time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def _containers_info(table: ProcessTable) -> dict[str, Any] | None:
    describe = getattr(table.containers, "describe", None)  # the live identity (not a replay's)
    return describe() if describe is not None else None


def live_stats(sensor: Any, table: ProcessTable, handled: int) -> dict[str, Any]:
    kernel = sensor.kernel_stats()  # {} once the probes are gone
    tstats = table.stats
    counters = getattr(table.containers, "counters", None)
    metadata = getattr(table.containers, "metadata", None)
    return {
        "events_handled": handled,
        "received": dict(sensor.received),
        "lost": dict(sensor.lost),
        "perf_lost": dict(sensor.perf_lost),
        "decode_errors": sensor.decode_errors,
        "kernel": kernel,
        "process_table": {k: getattr(tstats, k) for k in tstats.__slots__},
        "containers": counters() if counters is not None else {},
        "container_metadata": metadata.counters() if metadata is not None else None,
        "task_failures": tasks.snapshot(),
    }
