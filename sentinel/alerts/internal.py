"""Alerts about the agent itself (ruleset ``sentinel-internal``): a blind spot is a security event too.

Kernel events lost means detections may have been missed; a failed rules reload means the rules running
are not the ones the operator just deployed; a failed agent task (the anomaly state not saved, a sink's
delivery thread hitting a bug) means part of the agent is not doing its job. All go to the same alert stream
as detections, so the SIEM sees them, and through the same aggregation (losses in a flood add up into one
summary).
"""

from __future__ import annotations

from typing import Any

from sentinel import __version__
from sentinel.alerts.model import INTERNAL_RULESET, Alert
from sentinel.rules.model import Rule

TAGS = ["sentinel-internal"]

EVENTS_LOST = Rule(
    name="Kernel events lost",
    desc="The sensor's perf buffers overflowed: kernel events were dropped before the agent could read "
    "them, so activity in that window may have gone undetected.",
    condition="",
    output="Kernel events lost (buffer={buffer} lost={lost})",
    priority="warning",
    tags=TAGS,
    source="internal",
)
RELOAD_FAILED = Rule(
    name="Rules reload failed",
    desc="A rules reload (SIGHUP) found invalid rules; the previous ruleset keeps running until the rules "
    "are fixed and reloaded.",
    condition="",
    output="Rules reload failed: {errors} error(s), still running ruleset {kept_version}; "
    "first: {first_error}",
    priority="error",
    tags=TAGS,
    source="internal",
)
SINK_BACKLOG = Rule(
    name="Alert sink backlog",
    desc="An alert destination is not keeping up or is down: alerts wait in its on-disk spool. They are "
    "delivered when it recovers; past the spool's size limit the oldest are dropped.",
    condition="",
    output="Alert sink {sink} has {backlog} alerts waiting (threshold {threshold}): {status}",
    priority="warning",
    tags=TAGS,
    source="internal",
)
SPOOL_DROPPING = Rule(
    name="Alert spool dropping",
    desc="An alert destination was down so long that its spool reached its size limit: the oldest alerts "
    "were dropped and will never be delivered there.",
    condition="",
    output="Alert spool of {sink} dropped {dropped} alerts (spool full)",
    priority="error",
    tags=TAGS,
    source="internal",
)
MODEL_REFUSED = Rule(
    name="Anomaly model refused",
    desc="The anomaly model could not be used (missing, tampered, truncated or built for other features); "
    "the agent runs the rules only until a valid model is given.",
    condition="",
    output="Anomaly model refused, running rules only: {problem}",
    priority="error",
    tags=TAGS,
    source="internal",
)
TASK_FAILED = Rule(
    name="Agent task failed",
    desc="A periodic or background task of the agent (saving the anomaly state, training the host model, "
    "delivering to a sink, feeding the metrics, a reload…) failed. The agent keeps running and the task runs "
    "again at its next turn; until the cause is fixed, what that task does is not done. Reported at most "
    "once per task every few minutes, with the count of failures since the last report.",
    condition="",
    output="Agent task {task} failed ({failures} time(s) since the last report, {total} in all): {problem}",
    priority="error",
    tags=TAGS,
    source="internal",
)

AGENT_TAMPERED = Rule(
    name="Agent tampered with",
    desc="A signal, ptrace, memory write or file-descriptor theft (pidfd_getfd) aimed at the agent itself, "
    "recorded by the kernel from the sender's side. A stop by the service manager (SIGTERM/SIGHUP from init) "
    "is noted; a SIGKILL or SIGSTOP, a ptrace, a write into its memory or taking one of its descriptors (a "
    "perf event can then be disabled) is how an attacker blinds a sensor (T1562.001). One the previous "
    "instance could not report (it was killed) is reported at the next start.",
    condition="",
    output="Agent tampered with: {kind} {what} from {sender_comm} (pid {sender_pid}, uid {sender_uid}){when}",
    priority="critical",
    tags=[*TAGS, "T1562.001"],
    source="internal",
)
AGENT_SIGNALLED = Rule(
    name="Agent stopped or reloaded by a signal",
    desc="SIGTERM, SIGINT or SIGHUP sent to the agent: how a service manager or an operator stops or reloads "
    "it. Recorded with the sender, so an unexpected stop can be traced.",
    condition="",
    output=AGENT_TAMPERED.output.replace("Agent tampered with", "Agent signalled"),
    priority="notice",
    tags=[*TAGS, "T1562.001"],
    source="internal",
)
AGENT_BPF_OPENED = Rule(
    name="Agent's BPF objects opened by another process",
    desc="Another process opened one of the agent's BPF programs or maps by id (bpf GET_FD_BY_ID). With "
    "that descriptor it can read the maps or rewrite them, and the maps decide what the sensor reports "
    "(the open de-duplication, the socket table): a way to blind it without stopping it (T1562.001). "
    "`bpftool prog show` and `bpftool map` open every object on the host this way too, hence a warning.",
    condition="",
    output="Agent's BPF {object} {object_id} opened by {sender_comm} (pid {sender_pid}, uid {sender_uid}, "
    "{command}){when}",
    priority="warning",
    tags=[*TAGS, "T1562.001"],
    source="internal",
)
# Signals an operator's service manager sends: still recorded, at a lower priority.
_ROUTINE_SIGNALS = frozenset({1, 2, 15})  # SIGHUP, SIGINT, SIGTERM


def tamper(ev: Any, previous: bool = False) -> Alert:
    """An ``Agent tampered with`` alert for a tamper record (``previous``: it was aimed at an earlier
    instance, read from the kernel's pinned record at start)."""
    from sentinel.syscalls import (
        BPF_COMMANDS,
        TAMPER_BPF,
        TAMPER_FD,
        TAMPER_KINDS,
        TAMPER_PTRACE,
        TAMPER_SIGNAL,
        signal_name,
        tamper_fields,
    )

    what_kind, sig, tid = tamper_fields(ev)
    kind = TAMPER_KINDS.get(what_kind, str(what_kind))
    when = " to the previous instance" if previous else ""
    if what_kind == TAMPER_BPF:
        command = BPF_COMMANDS[sig] if 0 <= sig < len(BPF_COMMANDS) else str(sig)
        obj = command.removeprefix("BPF_").split("_", 1)[0].lower()  # BPF_MAP_GET_FD_BY_ID -> map
        fields = {"object": obj, "object_id": tid, "command": command, "sender_comm": ev.comm,
                  "sender_pid": ev.pid, "sender_uid": ev.uid, "when": when}  # fmt: skip
        detail = {"kind": kind, "command": command, "object_id": tid, "sender_pid": ev.pid,
                  "sender_uid": ev.uid, "sender_comm": ev.comm, "previous_instance": previous}  # fmt: skip
        return _alert(AGENT_BPF_OPENED, ev.ts_ns, fields, lineage=("tamper", kind, ev.pid),
                      extra={"tamper": detail})  # fmt: skip
    what = ""
    if what_kind == TAMPER_SIGNAL:
        what = signal_name(sig)
    elif what_kind == TAMPER_PTRACE:
        what = f"request {sig}"
    elif what_kind == TAMPER_FD:
        what = f"fd {sig}"
    fields = {"kind": kind, "what": what, "sender_comm": ev.comm, "sender_pid": ev.pid, "sender_uid": ev.uid,
              "target_tid": tid, "when": when}  # fmt: skip
    routine = what_kind == 1 and sig in _ROUTINE_SIGNALS
    detail = {"kind": kind, "signal" if what_kind == 1 else "detail": what, "sender_pid": ev.pid,
              "sender_uid": ev.uid, "sender_comm": ev.comm, "target_tid": tid, "previous_instance": previous}
    rule = AGENT_SIGNALLED if routine else AGENT_TAMPERED
    return _alert(rule, ev.ts_ns, fields, lineage=("tamper", kind, ev.pid), extra={"tamper": detail})


def _alert(rule: Rule, ts_ns: int, fields: dict[str, Any], **kw: Any) -> Alert:
    return Alert(
        rule=rule,
        ctx=None,
        output=rule.output.format_map(fields),
        output_fields=fields,
        ts_ns=ts_ns,
        ruleset=INTERNAL_RULESET,
        ruleset_version=__version__,
        **kw,
    )


def events_lost(ts_ns: int, buffer: str, lost: int) -> Alert:
    """One loss report for one perf buffer; repeats per buffer aggregate with the counts summed."""
    return _alert(
        EVENTS_LOST, ts_ns, {"buffer": buffer, "lost": lost}, lineage=(buffer,), sum_fields=("lost",)
    )


def reload_failed(ts_ns: int, errors: list[str], kept_sha256: str, files: list[str]) -> Alert:
    fields = {
        "errors": len(errors),
        "first_error": errors[0].splitlines()[0] if errors else "unknown error",  # the snippet stays in extra
        "kept_version": kept_sha256[:12],
    }
    return _alert(
        RELOAD_FAILED,
        ts_ns,
        fields,
        lineage=("reload",),
        extra={"reload": {"errors": errors[:50], "files": files, "kept_sha256": kept_sha256}},
    )


def model_refused(ts_ns: int, model: str, problem: str) -> Alert:
    return _alert(
        MODEL_REFUSED, ts_ns, {"model": model, "problem": problem}, lineage=("model",),
        extra={"model": {"path": model, "problem": problem}},
    )  # fmt: skip


def sink_backlog(ts_ns: int, sink: str, backlog: int, threshold: int, status: str) -> Alert:
    fields = {"sink": sink, "backlog": backlog, "threshold": threshold, "status": status}
    return _alert(SINK_BACKLOG, ts_ns, fields, lineage=("backlog", sink))


def spool_dropping(ts_ns: int, sink: str, dropped: int) -> Alert:
    """Repeats per sink aggregate with the dropped counts added up."""
    return _alert(SPOOL_DROPPING, ts_ns, {"sink": sink, "dropped": dropped}, lineage=("spool", sink),
                  sum_fields=("dropped",))  # fmt: skip


def task_failed(ts_ns: int, task: str, problem: str, failures: int, total: int) -> Alert:
    """Repeats per task aggregate with the failure counts added up."""
    fields = {"task": task, "problem": problem, "failures": failures, "total": total}
    return _alert(
        TASK_FAILED, ts_ns, fields, lineage=("task", task), sum_fields=("failures",),
        extra={"task": {"name": task, "error": problem}},
    )  # fmt: skip
