"""Train the host's own model from what the agent sampled, the same way `sentinel train` does.

Each sampled row is re-measured against the host's profiles as they stand now, with the row itself left out
(:func:`sentinel.anomaly.features.loo_row`): a training row then looks as it would at detection time, so what
happened once in the whole period reads as new and what recurred reads as known. (Measured the other way,
score-then-update, "first seen" was common among training rows and a novelty after training looked ordinary:
1 of 6 novel behaviours was caught.) The forest is fitted on the earlier 80% of the rows in time and the
threshold set on the later 20% from the alert budget, scaled by how many real events each sampled row stands
for. scikit-learn is imported here only, when training starts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentinel.anomaly.features import N_FEATURES, loo_row
from sentinel.anomaly.model import load_model, save_model
from sentinel.anomaly.profiles import ProfileState
from sentinel.anomaly.state import Key
from sentinel.anomaly.train import fit_groups

HOLDOUT = 0.2


def train_from_sample(
    rows: list[tuple[Sequence[float], int, float, tuple[Key, ...]]],
    seen: int,
    profiles: ProfileState,
    output_dir: str | Path,
    alerts_per_day: float = 5.0,
    trees: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit, threshold and save a model from time-ordered sampled rows; returns the verified manifest."""
    n = len(rows)
    if n < 3:
        raise ValueError(f"only {n} sampled events: too few to train on")
    x = np.array([r[0] for r in rows], dtype=np.float64).reshape(n, N_FEATURES)
    wall = np.array([r[1] for r in rows], dtype=np.int64)
    for i, (_, _, _, keys) in enumerate(rows):
        loo_row(profiles, x[i], list(keys))  # a row is one slot's count, whatever its repeats
    weight = max(seen, n) / n  # real events per sampled row
    forests, fields = fit_groups(x, wall, alerts_per_day, trees, seed, HOLDOUT, weight=weight)
    save_model(output_dir, forests, {**fields, "events_seen": seen, "source": "learning mode"}, profiles)
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
