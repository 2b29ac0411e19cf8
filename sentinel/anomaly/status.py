"""`sentinel model status`: where the host's anomaly model stands, read from the state directory.

An operator asks "is it detecting yet, how much has it learned, when does it retrain?" without stopping the
agent: everything comes from the files the agent saves (:mod:`sentinel.anomaly.state`), never from the
running process. Problems (a file that does not parse, a refused model) are reported, not raised.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sentinel.anomaly.state import LEARNING_FILE, MODEL_DIR, SAMPLE_FILE, LearningProgress, anomaly_dir


@dataclass(slots=True)
class ModelStatus:
    state_dir: str
    phase: str  # "not started" | "learning" | "detection"
    learned_s: float = 0.0
    warm_up_s: float = 0.0
    events_seen: int = 0
    sample_bytes: int = 0
    trainings: int = 0
    next_training_s: float = 0.0  # learned time of the next training
    last_trained: str | None = None
    model: dict[str, Any] | None = None  # version, rows, thresholds, training window
    baseline: dict[str, int] = field(default_factory=dict)  # subjects and items per profile kind
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_status(state_dir: str | Path, warm_up_s: float) -> ModelStatus:
    """The status from ``<state_dir>/anomaly``; ``warm_up_s`` is the configured learning period."""
    from sentinel.anomaly.live import load_checked_model
    from sentinel.anomaly.state import HostState

    d = anomaly_dir(state_dir)
    st = ModelStatus(str(state_dir), "not started", warm_up_s=warm_up_s)
    learning = d / LEARNING_FILE
    if learning.exists():
        try:
            p = LearningProgress.from_dict(orjson.loads(learning.read_bytes()))
            st.learned_s, st.events_seen, st.trainings = p.learned_s, p.events, p.trainings
            st.next_training_s = p.next_train_s or warm_up_s
            st.last_trained = _iso(p.last_trained) if p.last_trained else None
            st.phase = "learning"
        except (OSError, ValueError, TypeError) as exc:
            st.problems.append(f"{learning}: {exc}")
    if (d / SAMPLE_FILE).exists():
        st.sample_bytes = (d / SAMPLE_FILE).stat().st_size
    if (d / MODEL_DIR / "manifest.json").exists():
        model, problem = load_checked_model(d / MODEL_DIR)
        if problem:
            st.problems.append(f"host model refused: {problem}")
        elif model is not None:
            m = model.manifest
            st.phase = "detection"
            st.model = {
                "version": str(m.get("files", {}).get("forest.npz", ""))[:12],
                "rows": m.get("n_samples"),
                "events_seen": m.get("events_seen"),
                "training_window": m.get("training_window"),
                "thresholds": {g.name: round(g.threshold, 4) for g in model.groups},
            }
    profiles, problem = HostState(state_dir).load_profiles() if d.exists() else (None, None)
    if problem:
        st.problems.append(problem)
    if profiles is not None:
        st.baseline = {kind: t.size for kind, t in profiles.tables.items()}
    return st


def format_status(st: ModelStatus) -> str:
    lines = [f"state directory  {st.state_dir}", f"phase            {st.phase}"]
    if st.phase != "not started":
        lines.append(f"learned          {_hours(st.learned_s)} of agent running time "
                     f"(warm-up {_hours(st.warm_up_s)}), {st.events_seen} events seen")  # fmt: skip
        left = max(0.0, st.next_training_s - st.learned_s)
        lines.append(f"next training    after {_hours(st.next_training_s)} learned (in {_hours(left)})")
        last = f", last {st.last_trained}" if st.last_trained else ""
        lines.append(f"trainings        {st.trainings}{last}")
        lines.append(f"sample           {st.sample_bytes} bytes")
    if st.model is not None:
        thr = ", ".join(f"{k} {v}" for k, v in st.model["thresholds"].items())
        lines.append(f"host model       {st.model['version']}: {st.model['rows']} rows, thresholds {thr}")
    if st.baseline:
        lines.append("baseline items   " + ", ".join(f"{k} {v}" for k, v in st.baseline.items()))
    lines += [f"problem          {p}" for p in st.problems]
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _iso(unix_s: float) -> str:
    return dt.datetime.fromtimestamp(unix_s, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
