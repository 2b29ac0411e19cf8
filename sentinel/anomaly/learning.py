"""Train the host's own model from what learning mode sampled, the same way `sentinel train` does.

The rows were scored against the host's rarity tables before each event was counted (no row sees itself);
the forest is fitted on the earlier 80% of the sample in time and the threshold set on the later 20% from
the alert budget. The sample is uniform over the period, so the budget is scaled by how many real events
each sampled row stands for. scikit-learn is imported here only, when training starts.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentinel.anomaly.model import load_model, save_model
from sentinel.anomaly.rarity import RarityState
from sentinel.anomaly.train import fit_groups

HOLDOUT = 0.2


def train_from_sample(
    x: np.ndarray,
    wall_ns: np.ndarray,
    seen: int,
    rarity: RarityState,
    output_dir: str | Path,
    alerts_per_day: float = 5.0,
    trees: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit, threshold and save a model from time-ordered rows; returns the verified manifest."""
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"only {n} sampled events: too few to train on")
    weight = max(seen, n) / n  # real events per sampled row
    forests, fields = fit_groups(x, wall_ns, alerts_per_day, trees, seed, HOLDOUT, weight=weight)
    save_model(output_dir, forests, {**fields, "events_seen": seen, "source": "learning mode"}, rarity)
    return load_model(output_dir).manifest


@dataclass(slots=True)
class TrainingJob:
    """Training on a background thread so the event loop keeps reading the perf buffers meanwhile.

    The thread never raises: any failure is kept in ``exc``/``error`` for the agent's loop, which counts and
    reports it (:mod:`sentinel.tasks`) and lets learning go on.
    """

    thread: threading.Thread | None = None
    manifest: dict[str, Any] | None = None
    error: str | None = None
    exc: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def start(self, **kwargs: Any) -> None:
        def run() -> None:
            try:
                self.manifest = train_from_sample(**kwargs)
            except Exception as exc:  # reported by the agent; learning goes on
                self.exc = exc
                self.error = f"{type(exc).__name__}: {exc}"
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, name="sentinel-train", daemon=True)
        self.thread.start()
