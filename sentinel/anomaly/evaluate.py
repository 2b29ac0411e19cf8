"""Honest evaluation of a model: scores on normal captures not used in training vs attack captures.

Each attack capture is one attack instance, detected when its highest-scoring event clears the threshold, so
fifty alerts for one attack count once. Each event type has its own forest and threshold, so events are
compared by their margin (score minus their type's threshold): an alert is a margin above 0. Thresholds for
the detection rates come from the normal margins at 0.1% and 1% false-positive rate; expected alerts per
day use the model's own thresholds on the normal captures.

A capture is system-wide: whatever else ran on the host during an attack is in it too, and an unrelated rare
event would "detect" the attack. A sidecar ``CAPTURE.attack.json`` (written by ``scripts/lab/attacks.py``)
names the root process of the attack (pid and start time); then only events of that process and its
descendants count for the instance, while the profiles still learn from every event in order, as the
live agent would.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentinel.anomaly.model import Model
from sentinel.anomaly.profiles import NS_PER_DAY, ProfileState
from sentinel.anomaly.scorer import margins
from sentinel.anomaly.train import capture_rows
from sentinel.events import Event
from sentinel.process.table import Process

SIDECAR_SUFFIX = ".attack.json"
# The table's start of a process comes from its fork event, /proc's from the kernel's task start: they differ
# by well under a tick, but a process first met after its fork starts when it was first seen. A second is far
# below the time pids take to wrap, so it still tells a reused pid from the root.
START_TOLERANCE_S = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")  # what the replaying process table converts start times with


@dataclass(slots=True, frozen=True)
class AttackTree:
    """The root of one attack's process tree, as a sidecar names it."""

    scenario: str
    root_pid: int
    root_start_ticks: int | None = None  # /proc/PID/stat starttime (clock ticks since boot); None: pid only

    def contains(self, proc: Process | None, clk_tck: int = CLK_TCK) -> bool:
        """Whether ``proc`` is the root or one of its descendants (by the table's lineage, which keeps the
        original parent of a re-parented process)."""
        if proc is None:
            return False
        lineage = (proc, *proc.ancestors())
        return any(p.pid == self.root_pid and self._same_start(p, clk_tck) for p in lineage)

    def _same_start(self, proc: Process, clk_tck: int) -> bool:
        if self.root_start_ticks is None:
            return True
        return abs(proc.start_ticks - self.root_start_ticks) <= START_TOLERANCE_S * clk_tck


@dataclass(slots=True)
class InstanceResult:
    scenario: str
    capture: str
    top_margin: float  # -inf when no event of the attack was seen
    events: int  # scored events that counted for the instance (its tree's, or the whole capture's)
    detected: bool  # at the model threshold

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["top_margin"] = None if not np.isfinite(self.top_margin) else round(self.top_margin, 6)
        return d


@dataclass(slots=True)
class EvalReport:
    normal_events: int
    normal_days: float
    attack_instances: int
    auc: float  # P(an attack instance's top score > a normal event's score), ties count half
    detection_at_0_1pct_fpr: float
    detection_at_1pct_fpr: float
    detected_at_threshold: float
    alerts_per_day: float  # normal events above the model threshold, per day of normal data
    detected: dict[str, bool] = field(default_factory=dict)  # per attack instance, at the model threshold
    normal_alerts: int = 0  # normal events above the model threshold
    instances: list[InstanceResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["instances"] = [i.to_dict() for i in self.instances]
        return d


def _fresh_state(model: Model) -> ProfileState:
    """Each capture starts from the trained baseline; a copy keeps runs independent."""
    return model.profiles.copy() if model.profiles is not None else ProfileState()


def _margins(
    model: Model, capture: str | Path, row_tag: Callable[[Event, Process | None], Any] | None = None
) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Margins, wall times and (with ``row_tag``) tags of the capture's scorable rows."""
    rows = capture_rows([capture], state=_fresh_state(model), row_tag=row_tag)
    if not rows.x.shape[0]:
        return np.zeros(0), rows.wall_ns, []
    m = margins(model, rows.x)
    keep = ~np.isnan(m)  # event types the model has no forest for are not scored
    tags = [t for t, k in zip(rows.tags, keep, strict=True) if k] if rows.tags is not None else []
    return m[keep], rows.wall_ns[keep], tags


def sidecar_path(capture: str | Path) -> Path:
    return Path(f"{capture}{SIDECAR_SUFFIX}")


def attack_tree(capture: str | Path) -> AttackTree | None:
    """The attack tree the capture's sidecar names, or None without a sidecar (the whole capture counts).

    Raises ValueError for a sidecar that is not valid JSON or lacks an integer ``root_pid``.
    """
    side = sidecar_path(capture)
    if not side.exists():
        return None
    try:
        data = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{side}: not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{side}: expected a JSON object")
    pid, ticks = data.get("root_pid"), data.get("root_start_ticks")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise ValueError(f"{side}: 'root_pid' must be a positive integer")
    if ticks is not None and (not isinstance(ticks, int) or isinstance(ticks, bool) or ticks < 0):
        raise ValueError(f"{side}: 'root_start_ticks' must be a non-negative integer or absent")
    scenario = data.get("scenario")
    return AttackTree(str(scenario) if scenario else Path(capture).name, pid, ticks)


def attack_instance(model: Model, capture: str | Path) -> InstanceResult:
    """Score one attack capture: its sidecar's process tree, or the whole capture without a sidecar."""
    tree = attack_tree(capture)
    if tree is None:
        m, _, _ = _margins(model, capture)
        name = Path(capture).name
    else:

        def in_tree(ev: Event, proc: Process | None) -> bool:
            return tree.contains(proc)

        m, _, tags = _margins(model, capture, in_tree)
        m = m[np.array(tags, dtype=bool)] if m.size else m
        name = tree.scenario
    top = float(m.max()) if m.size else float("-inf")  # nothing of the attack seen: a miss, not a crash
    return InstanceResult(name, Path(capture).name, top, int(m.size), top > 0.0)


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Mann-Whitney AUC with ties counted half."""
    neg = np.sort(negative)
    below = np.searchsorted(neg, positive, side="left")
    not_above = np.searchsorted(neg, positive, side="right")
    return float(np.mean((below + not_above) / 2.0) / neg.size)


def evaluate(model: Model, normal: Sequence[str | Path], attack: Sequence[str | Path]) -> EvalReport:
    """Score every capture from the trained baseline state; raises ValueError when a side has no events."""
    normal_scores, days = [], 0.0
    for cap in normal:
        s, wall, _ = _margins(model, cap)
        normal_scores.append(s)
        if wall.size:
            days += float(wall[-1] - wall[0]) / NS_PER_DAY
    neg = np.concatenate(normal_scores) if normal_scores else np.zeros(0)
    instances = [attack_instance(model, cap) for cap in attack]
    pos = np.array([i.top_margin for i in instances])
    if neg.size == 0 or pos.size == 0:
        raise ValueError("need scorable events in both the normal and the attack captures")
    detected: dict[str, bool] = {}
    for inst in instances:
        key, n = inst.scenario, 2
        while key in detected:  # the same scenario recorded twice stays two entries
            key, n = f"{inst.scenario}#{n}", n + 1
        detected[key] = inst.detected

    def detection(fpr: float) -> float:
        cut = float(np.quantile(neg, 1.0 - fpr, method="higher"))
        return float(np.mean(pos > cut))

    alerts = int(np.count_nonzero(neg > 0.0))
    return EvalReport(
        normal_events=int(neg.size),
        normal_days=days,
        attack_instances=int(pos.size),
        auc=auc(pos, neg),
        detection_at_0_1pct_fpr=detection(0.001),
        detection_at_1pct_fpr=detection(0.01),
        detected_at_threshold=float(np.mean(pos > 0.0)),
        alerts_per_day=float(alerts) / max(days, 1.0 / 24),
        detected=detected,
        normal_alerts=alerts,
        instances=instances,
    )


def format_report(r: EvalReport) -> str:
    lines = [
        f"normal events      {r.normal_events} over {r.normal_days:.4f} days ({r.normal_days * 1440:.1f} m)",
        f"normal alerts      {r.normal_alerts} (events above the model threshold)",
        f"attack instances   {r.attack_instances}",
        f"AUC                {r.auc:.4f}",
        f"detection @0.1%FPR {r.detection_at_0_1pct_fpr:.1%}",
        f"detection @1% FPR  {r.detection_at_1pct_fpr:.1%}",
        f"detection @thresh  {r.detected_at_threshold:.1%}",
        f"alerts per day     {r.alerts_per_day:.2f}",
    ]
    for inst in r.instances:
        margin = f"{inst.top_margin:+.4f}" if np.isfinite(inst.top_margin) else "no events"
        verdict = "detected" if inst.detected else "missed"
        lines.append(f"  {inst.scenario:<24} {verdict:<8} top margin {margin} over {inst.events} events")
    return "\n".join(lines)
