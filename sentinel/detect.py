"""The detection stream: every event through the process table and the rules, alerts out.

``DetectionStream.handle`` is the agent's hot path: ``table.apply`` → :class:`EvalContext` (the open's path
resolved against cwd/dirfd, a chdir's new cwd, as ``EventStream`` does for ``sentinel events``) →
``ruleset.match`` → one :class:`Alert` per matching rule → aggregation → rendering → sink. Nothing is
rendered for events no rule matches. The ruleset lives in one attribute, read once per event, so a reload
(SIGHUP) swaps it atomically between two events. Live runs and replays share all of it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentinel import resources, tasks
from sentinel.alerts import internal
from sentinel.alerts.aggregate import DEFAULT_MAX_KEYS, DEFAULT_WINDOW_S, Aggregator
from sentinel.alerts.behaviour import behaviour_key, fields_key
from sentinel.alerts.ecs import EcsRenderer
from sentinel.alerts.model import Alert
from sentinel.alerts.render import FORMATS, make_renderer
from sentinel.alerts.writer import AlertWriter
from sentinel.containers.meta_view import NO_METADATA, FieldsLookup, metadata_view
from sentinel.events import Event, EventType
from sentinel.file_changes import FILE_TYPES
from sentinel.host import HostInfo
from sentinel.log import get_logger
from sentinel.pipeline import resolved_files, security_target
from sentinel.process.table import ProcessTable
from sentinel.rules.context import EvalContext
from sentinel.rules.correlate import Correlator, Firing, describe

_OPEN = EventType.OPEN
_CHDIR = EventType.CHDIR
_CONTAINER = EventType.CONTAINER
_TAMPER = EventType.TAMPER
_EXEC = EventType.EXEC
# What the host model scores (sentinel.anomaly.features.SCORED_TYPES; not imported: it brings numpy).
_SCORED = frozenset((EventType.EXEC, EventType.OPEN, EventType.CONNECT))
MAX_MATCH_ERRORS_LOGGED = 10


def find_rules_dir() -> Path | None:
    """The shipped rules: ``$SENTINEL_RULES``, the checkout's ``rules/``, the deb's, the wheel's copy."""
    return resources.find("SENTINEL_RULES", "rules", Path.is_dir)


def format_diagnostic(d: Any) -> str:
    """``FILE:LINE:COL: severity: message [code]`` and the snippet (the engine's format when it has one)."""
    try:
        from sentinel.rules.validate import format_diagnostic as engine_format
    except ImportError:  # pragma: no cover - the engine always ships it; keep reloads safe regardless
        engine_format = None
    if engine_format is not None:
        return str(engine_format(d))
    where = f"{d.file}:{d.line}:{d.column}" if d.line else str(d.file)
    text = f"{where}: {d.severity}: {d.message} [{d.code}]"
    if d.snippet:
        text += "\n    " + str(d.snippet).rstrip("\n").replace("\n", "\n    ")
    return text


@dataclass(slots=True)
class RulesOutcome:
    """What loading rules gave: the ruleset (None when invalid) and located diagnostics as text."""

    ruleset: Any
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    diagnostics: list[Any] = field(default_factory=list)


Loader = Callable[[list[str | Path]], Any]


def load_ruleset(paths: Sequence[str | Path], load: Loader | None = None) -> RulesOutcome:
    """Load and validate rules; never raises for bad rules (an engine crash is reported as an error too)."""
    if load is None:
        from sentinel.rules import load_rules  # type: ignore[attr-defined]

        load = load_rules
    try:
        result = load(list(paths))
    except Exception as exc:  # a reload must never take the agent down
        return RulesOutcome(None, errors=[f"{', '.join(map(str, paths))}: loading rules failed: {exc!r}"])
    diags = list(getattr(result, "diagnostics", []))
    errors = [format_diagnostic(d) for d in diags if d.severity == "error"]
    warnings = [format_diagnostic(d) for d in diags if d.severity != "error"]
    ruleset = result.ruleset
    if ruleset is None and not errors:
        errors = ["the rules did not load (no diagnostic given)"]
    return RulesOutcome(ruleset, errors, warnings, [str(f) for f in getattr(result, "files", [])], diags)


def refusals(outcome: RulesOutcome, running: Any = None) -> list[str]:
    """The located problems of rules this load refused that ``running`` (the set in use) did not refuse
    already; every refused rule's when nothing runs yet. A reload that would add one is refused whole."""
    rs = outcome.ruleset
    if rs is None:
        return []
    before = {r.name for r in getattr(running, "refused", ())} if running is not None else set()
    names = {r.name for r in getattr(rs, "refused", ())} - before
    if not names:
        return []
    from sentinel.rules.validate import format_diagnostic

    return [
        format_diagnostic(d)
        for d in outcome.diagnostics
        if d.refuses in names or (d.code == "rule-refused" and d.item in names)
    ]


class DetectionStream:
    """Events in, alerts out; ``flush`` per batch, ``close`` at the end (pending summaries written first)."""

    def __init__(
        self,
        table: ProcessTable,
        ruleset: Any,
        host: HostInfo,
        sink: Any,
        fmt: str = "ecs",
        window_s: float = DEFAULT_WINDOW_S,
        max_keys: int | None = None,
        anomaly: Any = None,
        *,
        redactor: Any = None,
        falco_iso8601: bool = False,
        rate_per_min: int = 0,
    ) -> None:
        self.table = table
        self.anomaly = anomaly  # AnomalyEngine or None (rules only)
        self.on_alert: Callable[[Alert], None] | None = None  # called per alert written (metrics latency)
        self.ruleset = ruleset  # swapped whole by reload(); read once per event
        self.correlator = Correlator(getattr(ruleset, "rules", []), log=get_logger())  # Sigma correlations
        self.host = host
        self.ecs = EcsRenderer(host, dataset="sentinel.alerts", redactor=redactor)  # Redactor or None
        view = metadata_view(table)  # the containers' runtime metadata, as the pipeline has taken it
        self.ecs.containers = view
        self.meta_fields: FieldsLookup = view.fields if view is not None else NO_METADATA
        # Containers whose answer arrived since the last event: their `container` events come before the next
        # one (the view says so between two events, live and in replay alike; never in the middle of one).
        self._started: list[str] = []
        if view is not None:
            view.on_found = self._started.append
        renderers = {f: make_renderer(f, self.ecs, falco_iso8601=falco_iso8601) for f in FORMATS}
        self.writer = AlertWriter(renderers[fmt] if fmt in renderers else make_renderer(fmt, self.ecs), sink,
                                  renderers)  # fmt: skip
        self.aggregator = Aggregator(window_s, max_keys or DEFAULT_MAX_KEYS, rate_per_min)
        self.events = 0
        self.matches = 0
        self.match_errors = 0
        self.anomaly_errors = 0
        self.matches_by_rule: Counter[str] = Counter()
        self.reloads = 0
        self.reload_failures = 0
        self.last_ts_ns = 0
        # The agent's task-failure registry (sentinel run sets it): its reports become internal alerts.
        self.task_failures: tasks.TaskFailures | None = None

    # ------------------------------------------------------------------------------------------- events

    def handle(self, ev: Event) -> None:
        if self._started:
            self._containers_started(ev.ts_ns)
        etype = ev.type
        if etype is _TAMPER:  # aimed at the agent itself: an internal alert, not a rule's business
            self.events += 1
            self.raise_internal(internal.tamper(ev))
            return
        anomaly = self.anomaly
        if anomaly is not None and etype is _EXEC and anomaly.must_score_before(ev.pid):
            self._write_all(anomaly.score_pending())  # before the exec changes what those alerts show
        if etype is _CHDIR:
            before = self.table.get(ev.pid)
            cwd_before = before.cwd if before is not None else None
        proc = self.table.apply(ev) if etype is not _CONTAINER else self.table.get(ev.pid)
        if etype is _EXEC and ev.ret == 0:
            self.ecs.exec_generation += 1  # ancestors' images changed: the render cache must notice
        path = None
        if etype is _OPEN:
            path = self.table.resolve_path(proc, ev.dirfd, ev.path) if proc is not None else ev.path
        elif etype is _CHDIR and proc is not None:
            if ev.ret != 0:
                path = self.table.resolve_path(proc, ev.dirfd, ev.path)
            elif ev.path or proc.cwd != cwd_before:
                path = proc.cwd  # apply() already moved the cwd
        self.events += 1
        ts = ev.ts_ns
        self.last_ts_ns = ts
        aggregator = self.aggregator
        if ts >= aggregator.next_due_ns:
            self._write(aggregator.advance(ts))
        correlator = self.correlator
        if correlator.windowed:
            self._correlated(correlator.advance(ts))
        ruleset = self.ruleset
        if etype in getattr(ruleset, "silent_types", ()) and etype not in _SCORED:
            return  # no rule and no model reads it: the table has it, that was the work
        ctx = EvalContext(ev, proc, path, self.host.boot_time_ns + ts)
        ctx.containers = self.meta_fields  # (set after: a keyword argument costs ~100 ns per event)
        if etype > _TAMPER:
            if etype in FILE_TYPES:  # a file change: its paths, resolved, for the rules and the document
                ctx.files = files = resolved_files(self.table, proc, ev)
                ctx.path = files.primary
            else:  # a security syscall: the process it is aimed at
                _pid, ctx.target, ctx.fd_path = security_target(self.table, ev)
        if anomaly is not None:
            try:
                anomaly.observe(ctx)
                if len(anomaly.pending) >= anomaly.settings.batch_max:
                    self._write_all(anomaly.score_pending())
            except Exception as exc:  # the model must never cost the rules their event
                self._anomaly_failed(exc, ev)
        try:
            rules = ruleset.match(ctx)
            if not rules:
                return
            version = ruleset.sha256[:12]
            key = behaviour_key(proc, ev.comm, ctx.containers)
            for rule in rules:
                self.matches += 1
                self.matches_by_rule[rule.name] += 1
                fired = None
                if correlator and rule.index in correlator.by_base:
                    fired = correlator.observe(rule, ctx, ts, ruleset.field_value)
                    if rule.index in correlator.silent:  # a correlation's base rule alerts only if asked
                        self._correlated(fired)
                        continue
                text, fields = ruleset.output(rule, ctx)
                own = rule.aggregate_by
                alert = Alert(rule, ctx, text, fields, ts, ruleset_version=version,
                              lineage=fields_key(own, ruleset.field_value, ctx) if own else key)  # fmt: skip
                self._write(aggregator.offer(alert))
                if fired:
                    self._correlated(fired)
        except Exception as exc:  # a rule or engine bug must cost one event, not the agent
            self.match_errors += 1
            if self.match_errors <= MAX_MATCH_ERRORS_LOGGED:
                get_logger().error(
                    "sentinel.match_failed", problem=repr(exc), event_type=ev.type_name, pid=ev.pid,
                    errors=self.match_errors,
                )  # fmt: skip

    def _containers_started(self, ts_ns: int) -> None:
        """A `container` event (Falco's) for each container whose runtime metadata arrived: its process is
        the container's first one the table knows (its init, pid 1 inside, where known)."""
        started = self._started[:]  # (the view's hook appends to this very list: emptied in place)
        self._started.clear()
        for full_id in started:
            proc = self.table.container_init(full_id)
            if proc is None:
                continue  # every process of it is gone: no process to name, nothing runs there
            ev = Event(_CONTAINER, max(ts_ns - 1, self.last_ts_ns), proc.pid, proc.pid, max(proc.uid, 0),
                       max(proc.gid, 0), proc.comm, cgroup_id=proc.cgroup_id)  # fmt: skip
            self.handle(ev)

    def _correlated(self, fired: list[Firing]) -> None:
        """Correlation alerts: the last counted event's document, aggregated per group (not per lineage)."""
        version = self.ruleset.sha256[:12]
        for f in fired:
            text, fields, extra = describe(f)
            self.matches += 1
            self.matches_by_rule[f.rule.name] += 1
            key = ("correlation", *f.group.values())
            alert = Alert(f.rule, f.ctx, text, fields, f.ts_ns, ruleset_version=version, lineage=key,
                          extra=extra)  # fmt: skip
            self._write(self.aggregator.offer(alert))

    def _anomaly_failed(self, exc: Exception, ev: Event | None) -> None:
        self.anomaly_errors += 1
        if self.anomaly_errors <= MAX_MATCH_ERRORS_LOGGED:
            get_logger().error(
                "sentinel.anomaly_failed", problem=repr(exc), errors=self.anomaly_errors,
                event_type=ev.type_name if ev is not None else "batch",
                pid=ev.pid if ev is not None else None,
            )  # fmt: skip

    def _write_all(self, alerts: list[Alert]) -> None:
        """Model alerts go through aggregation like rule alerts (an incident's repeats become a summary)."""
        offer = self.aggregator.offer
        for a in alerts:
            self.matches += 1
            self.matches_by_rule[a.rule.name] += 1
            self._write(offer(a))

    def score_pending(self) -> None:
        """Score the anomaly model's micro-batch (once per poll, before the flush)."""
        if self.anomaly is not None:
            try:
                self._write_all(self.anomaly.score_pending())
            except Exception as exc:
                self.anomaly.pending = []
                self.anomaly.pending_pids = set()
                self._anomaly_failed(exc, None)

    def _write(self, alerts: list[Alert]) -> None:
        write = self.writer.write
        on_alert = self.on_alert
        for a in alerts:
            write(a)
            if on_alert is not None:
                on_alert(a)

    def advance(self, now_ns: int) -> None:
        """Close aggregation windows up to ``now_ns`` (live: on an idle host no event would close them), and
        judge the correlation windows that ended."""
        self._write(self.aggregator.advance(now_ns))
        if self.correlator.windowed:
            self._correlated(self.correlator.advance(now_ns))

    def raise_internal(self, alert: Alert) -> None:
        self._write(self.aggregator.offer(alert))

    def report_loss(self, ts_ns: int, buffer: str, lost: int) -> None:
        """``run_live``'s ``on_loss``: kernel events lost is an internal alert."""
        self.raise_internal(internal.events_lost(ts_ns, buffer, lost))

    def report_task_failures(self, ts_ns: int) -> None:
        """``Agent task failed`` internal alerts for the failures :attr:`task_failures` reported since the
        last call (already rate-limited per task there)."""
        if self.task_failures is None:
            return
        for r in self.task_failures.take_reports():
            self.raise_internal(internal.task_failed(ts_ns, r.task, r.problem, r.failures, r.total))

    # ------------------------------------------------------------------------------------------- rules

    def swap(self, ruleset: Any) -> None:
        """A new ruleset; correlation state starts afresh (its rules may have changed)."""
        self.ruleset = ruleset
        self.correlator = Correlator(getattr(ruleset, "rules", []), log=get_logger())

    def set_redactor(self, redactor: Any) -> None:
        """A reload's new redaction settings (Redactor or None): every format renders with them from the
        next alert on; cached process blocks are rebuilt."""
        self.ecs.set_redactor(redactor)

    def flush(self) -> None:
        self.score_pending()
        self.writer.flush()

    def finish(self) -> None:
        """Write every pending summary and flush; outputs stay open (a replay's next segment uses them)."""
        self.score_pending()
        self._write(self.aggregator.flush())
        self.writer.flush()

    def close(self) -> None:
        """Write every pending summary, then flush and close the outputs. A step that fails is recorded
        (:mod:`sentinel.tasks`) and the next one still runs: the agent is stopping and must exit cleanly."""
        anomaly = self.anomaly
        if anomaly is not None:
            tasks.guard("shutdown", lambda: self._write_all(anomaly.close()))
        tasks.guard("shutdown", self.report_task_failures, time.clock_gettime_ns(time.CLOCK_BOOTTIME))
        tasks.guard("shutdown", lambda: self._write(self.aggregator.flush()))
        tasks.guard("shutdown", self.writer.close)

    def stats(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "matches": self.matches,
            "alerts_written": self.writer.written,
            "alerts_by_rule": dict(self.writer.by_rule),
            "matches_by_rule": dict(self.matches_by_rule),
            "match_errors": self.match_errors,
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
            "aggregation": self.aggregator.snapshot(),
            "correlation": self.correlator.snapshot(),
            "anomaly_errors": self.anomaly_errors,
            "anomaly": self.anomaly.snapshot() if self.anomaly is not None else {"phase": "off"},
            # the agent's (sentinel.detection_stopped comes after the shutdown steps, which may fail too)
            "task_failures": self.task_failures.snapshot() if self.task_failures is not None else {},
        }


def reload_rules(
    stream: DetectionStream,
    paths: Sequence[str | Path],
    ts_ns: int | None = None,
    load: Loader | None = None,
) -> bool:
    """Load and validate ``paths``; valid → swap, invalid → keep the old set and raise an alert."""
    return apply_reload(stream, load_ruleset(paths, load), ts_ns)


def apply_reload(
    stream: DetectionStream, outcome: RulesOutcome, ts_ns: int | None = None, log: Any = None, **context: Any
) -> bool:
    """The one place a reload takes effect or is refused: ``outcome.ruleset`` None, or a rule refused that
    was not refused before → the running set stays, the refusal is counted, logged and raised as an internal
    alert; else the new set is swapped in.
    ``context`` (reason, config file) goes into both log records."""
    log = log or get_logger()
    old = stream.ruleset
    # A rule refused now that was not refused in the running set (an edit broke it): keep the running set,
    # as for any error, rather than silently stop evaluating it.
    errors = outcome.errors if outcome.ruleset is None else refusals(outcome, old)
    if outcome.ruleset is None or errors:
        stream.reload_failures += 1
        log.error(
            "sentinel.reload_failed", **context, errors=errors[:50], error_count=len(errors),
            files=outcome.files, kept_sha256=old.sha256, kept_rules=len(old.rules),
        )  # fmt: skip
        when = ts_ns if ts_ns is not None else stream.last_ts_ns
        stream.raise_internal(internal.reload_failed(when, errors, old.sha256, outcome.files))
        stream.flush()
        return False
    rs = outcome.ruleset
    stream.swap(rs)
    stream.reloads += 1
    enabled = sum(1 for r in rs.rules if r.enabled)
    log.info(
        "sentinel.rules_reloaded", **context, rules=len(rs.rules), enabled=enabled, sha256=rs.sha256,
        previous_sha256=old.sha256, warnings=len(outcome.warnings), files=outcome.files,
    )  # fmt: skip
    for text in outcome.warnings[:20]:
        log.warning("sentinel.reload_warning", warning=text)
    return True
