"""Periodic and background work that must survive any failure: counted, logged, reported, never fatal.

Saving the anomaly state, training on its thread, delivering to a sink, feeding the metrics, reloading: each
runs again later, so a failure of one run (a bug, a full disk, a hostile string an encoder refused) must cost
that run only. "Only OSError can happen here" is a contract nobody can keep (a non-UTF-8 path made the state
save raise TypeError and took the agent down), so every ``Exception`` is caught where the task runs and
recorded here: counted per task (``sentinel_task_failures_total{task}`` and ``task_failures`` in the agent's
stats), logged as ``sentinel.task_failed`` with the traceback, and reported as an ``Agent task failed``
internal alert. Log and alert are rate-limited per task: the first failure at once, then at most one per
``interval_s`` carrying the count of failures in between, so a task failing on every tick floods neither.

One registry per process (the agent is one process): threads record into it, the agent's loop turns its
reports into alerts (alerts are written from the loop thread only).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Task names, fixed so the metric's label set stays small; each is exported at 0 from the start.
TASKS = (
    "handle_event",  # one event through the process table, the rules and the model (sentinel run, events)
    "loss_report",  # reading and reporting kernel event losses
    "tick",  # the agent's per-poll work not covered by a task below
    "reload",  # SIGHUP or changed files: configuration and rules read again
    "aggregation",  # closing aggregation windows on an idle host
    "anomaly",  # the anomaly engine's per-poll tick (learning time, training switch-over)
    "state_save",  # the anomaly state written to the state directory
    "training",  # the host model fitted on its background thread
    "metrics",  # stats folded into the metrics, sink health and backlog alerts
    "flush",  # the per-poll flush of alerts to the sinks
    "reopen",  # the outputs reopened on SIGUSR1 (after logrotate)
    "stats",  # the periodic sentinel.stats record
    "sink_delivery",  # a network sink's delivery thread
    "alerts",  # writing these reports as internal alerts
    "shutdown",  # a step of the orderly stop (pending summaries, state, outputs)
)
REPORT_INTERVAL_S = 300.0
MAX_PENDING_REPORTS = 100
MAX_PROBLEM_CHARS = 1000


@dataclass(slots=True)
class TaskReport:
    """One rate-limited report: ``failures`` since the task's previous report (this one included)."""

    task: str
    problem: str
    failures: int
    total: int


def describe(exc: BaseException) -> str:
    """``Type: message``, bounded (an exception's text can quote a 100 KB command line)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_PROBLEM_CHARS else text[:MAX_PROBLEM_CHARS] + "…"


class TaskFailures:
    """Failure counts per task and the reports waiting to become internal alerts; thread-safe."""

    def __init__(
        self, interval_s: float = REPORT_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(TASKS, 0)
        self._unreported: dict[str, int] = {}
        self._next_report: dict[str, float] = {}
        self._reports: list[TaskReport] = []
        self.reports_dropped = 0

    def record(self, task: str, exc: BaseException, log: Any = None, **context: Any) -> bool:
        """Count a failure of ``task``; log and queue a report when one is due. True when reported."""
        problem = describe(exc)
        with self._lock:
            total = self._counts[task] = self._counts.get(task, 0) + 1
            failures = self._unreported[task] = self._unreported.get(task, 0) + 1
            now = self.clock()
            due = now >= self._next_report.get(task, now)
            if due:
                self._next_report[task] = now + self.interval_s
                self._unreported[task] = 0
                self._reports.append(TaskReport(task, problem, failures, total))
                if len(self._reports) > MAX_PENDING_REPORTS:  # nobody takes them (no agent loop): bounded
                    del self._reports[0]
                    self.reports_dropped += 1
        if due:
            if log is None:
                from sentinel.log import get_logger

                log = get_logger()
            log.error("sentinel.task_failed", task=task, problem=problem, failures=failures, total=total,
                      effect="this run of the task is lost; the agent goes on", exc_info=exc,
                      **context)  # fmt: skip
        return due

    def take_reports(self) -> list[TaskReport]:
        """The reports queued since the last call (the agent writes them as internal alerts)."""
        with self._lock:
            out, self._reports = self._reports, []
        return out

    def snapshot(self) -> dict[str, int]:
        """Failures per task so far (every known task, 0 included)."""
        with self._lock:
            return dict(self._counts)


_registry = TaskFailures()


def registry() -> TaskFailures:
    return _registry


def reset(interval_s: float = REPORT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> TaskFailures:
    """A fresh registry for this process (the agent at start; tests)."""
    global _registry
    _registry = TaskFailures(interval_s, clock)
    return _registry


def record(task: str, exc: BaseException, log: Any = None, **context: Any) -> bool:
    """Count, log and report a failure of ``task`` (see :class:`TaskFailures`)."""
    return _registry.record(task, exc, log, **context)


def snapshot() -> dict[str, int]:
    return _registry.snapshot()


def guard(task: str, fn: Callable[..., Any], *args: Any, log: Any = None) -> Any:
    """``fn(*args)``; a failure is recorded and None returned. A closed stdout (BrokenPipeError) still ends
    the command: the reader went away, which is the CLI's normal end, not a failed task."""
    try:
        return fn(*args)
    except BrokenPipeError:
        raise
    except Exception as exc:
        record(task, exc, log)
        return None
