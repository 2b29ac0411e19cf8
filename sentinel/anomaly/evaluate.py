"""Honest evaluation of a model: scores on normal captures not used in training vs attack captures.

Each attack capture is one attack instance, detected when its highest-scoring event clears the threshold, so
fifty alerts for one attack count once. Each event type has its own forest and threshold, so events are
compared by their margin (score minus their type's threshold): an alert is a margin above 0. Thresholds for
the detection rates come from the normal margins at 0.1% and 1% false-positive rate; expected alerts per
day use the model's own thresholds on the normal captures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentinel.anomaly.model import Model
from sentinel.anomaly.rarity import NS_PER_DAY, RarityState
from sentinel.anomaly.scorer import margins
from sentinel.anomaly.train import capture_rows


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fresh_state(model: Model) -> RarityState:
    """Each capture starts from the trained baseline; copying through the dict form keeps runs independent."""
    return RarityState.from_dict(model.rarity.to_dict()) if model.rarity is not None else RarityState()


def _scores(model: Model, capture: str | Path) -> tuple[np.ndarray, np.ndarray]:
    m, wall, _ = _margins(model, capture, lineages=False)
    return m, wall


def _margins(
    model: Model, capture: str | Path, lineages: bool
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, ...]]]:
    rows = capture_rows([capture], state=_fresh_state(model), lineages=lineages)
    if not rows.x.shape[0]:
        return np.zeros(0), rows.wall_ns, []
    m = margins(model, rows.x)
    keep = ~np.isnan(m)  # event types the model has no forest for are not scored
    lin = [p for p, k in zip(rows.lineages or [], keep, strict=False) if k] if lineages else []
    return m[keep], rows.wall_ns[keep], lin


def attack_instances(capture: str | Path) -> list[dict[str, Any]] | None:
    """The attack instances a capture's sidecar (``CAPTURE.attacks.json``) names, or None without one.

    A capture is system-wide: other processes ran beside the attack. The sidecar lists each instance's
    ``scenario`` and ``root_pid``; only events of that process tree count for it.
    """
    side = Path(f"{capture}.attacks.json")
    if not side.exists():
        return None
    data = json.loads(side.read_text())
    instances = data.get("instances") if isinstance(data, dict) else None
    if not isinstance(instances, list) or not all(
        isinstance(i, dict) and isinstance(i.get("root_pid"), int) for i in instances
    ):
        raise ValueError(f"{side}: 'instances' must list objects with an integer root_pid")
    return instances


def attack_tops(model: Model, capture: str | Path) -> list[tuple[str, float]]:
    """(scenario, highest margin) per attack instance in the capture: the whole capture is one instance
    without a sidecar, else each listed process tree is one."""
    instances = attack_instances(capture)
    m, _, lin = _margins(model, capture, lineages=instances is not None)
    if instances is None:
        return [(Path(capture).name, float(m.max()))] if m.size else []
    out = []
    for inst in instances:
        root = inst["root_pid"]
        mask = np.array([root in pids for pids in lin], dtype=bool)
        if mask.any():
            out.append((str(inst.get("scenario", root)), float(m[mask].max())))
        else:
            out.append((str(inst.get("scenario", root)), float("-inf")))  # nothing of it was seen: a miss
    return out


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
        s, wall = _scores(model, cap)
        normal_scores.append(s)
        if wall.size:
            days += float(wall[-1] - wall[0]) / NS_PER_DAY
    neg = np.concatenate(normal_scores) if normal_scores else np.zeros(0)
    tops: list[float] = []
    per_scenario: dict[str, bool] = {}
    for cap in attack:
        for scenario, top in attack_tops(model, cap):
            tops.append(top)
            per_scenario[scenario] = top > 0.0
    pos = np.array(tops)
    if neg.size == 0 or pos.size == 0:
        raise ValueError("need scorable events in both the normal and the attack captures")

    def detection(fpr: float) -> float:
        cut = float(np.quantile(neg, 1.0 - fpr, method="higher"))
        return float(np.mean(pos > cut))

    return EvalReport(
        normal_events=int(neg.size),
        normal_days=days,
        attack_instances=int(pos.size),
        auc=auc(pos, neg),
        detection_at_0_1pct_fpr=detection(0.001),
        detection_at_1pct_fpr=detection(0.01),
        detected_at_threshold=float(np.mean(pos > 0.0)),
        alerts_per_day=float(np.count_nonzero(neg > 0.0)) / max(days, 1.0 / 24),
        detected=per_scenario,
    )


def format_report(r: EvalReport) -> str:
    return "\n".join(
        [
            f"normal events      {r.normal_events} over {r.normal_days:.2f} days",
            f"attack instances   {r.attack_instances}",
            f"AUC                {r.auc:.4f}",
            f"detection @0.1%FPR {r.detection_at_0_1pct_fpr:.1%}",
            f"detection @1% FPR  {r.detection_at_1pct_fpr:.1%}",
            f"detection @thresh  {r.detected_at_threshold:.1%}",
            f"alerts per day     {r.alerts_per_day:.2f}",
            *(f"  {name:<24} {'detected' if hit else 'missed'}" for name, hit in r.detected.items()),
        ]
    )
