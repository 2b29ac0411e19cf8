"""Train the host's own model from what learning mode sampled, the same way `sentinel train` does.

The rows were scored against the host's rarity tables before each event was counted (no row sees itself);
the forest is fitted on the earlier 80% of the sample in time and the threshold set on the later 20% from
the alert budget. The sample is uniform over the period, so the budget is scaled by how many real events
each sampled row stands for. scikit-learn is imported here only, when training starts.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentinel.anomaly.features import FEATURES
from sentinel.anomaly.model import load_model, save_model, validate_forest
from sentinel.anomaly.rarity import RarityState
from sentinel.anomaly.scorer import anomaly_scores
from sentinel.anomaly.train import budget_threshold, forest_from_sklearn

HOLDOUT = 0.2


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat().replace("+00:00", "Z")


def train_from_sample(
    x: np.ndarray,
    wall_ns: np.ndarray,
    seen: int,
    rarity: RarityState,
    output_dir: str | Path,
    alerts_per_day: float = 5.0,
    trees: int = 100,
    seed: int = 0,
    max_samples: int = 256,
) -> dict[str, Any]:
    """Fit, threshold and save a model from time-ordered rows; returns the verified manifest."""
    from sklearn import __version__ as sklearn_version
    from sklearn.ensemble import IsolationForest

    n = x.shape[0]
    split = int(n * (1.0 - HOLDOUT))
    if split < 2 or n - split < 1:
        raise ValueError(f"only {n} sampled events: too few to train on")
    fitted = IsolationForest(
        n_estimators=trees, max_samples=min(max_samples, split), max_features=1.0, random_state=seed
    ).fit(x[:split])
    forest = forest_from_sklearn(fitted, len(FEATURES))
    validate_forest(forest)
    held = anomaly_scores(forest, x[split:])
    weight = max(seen, n) / n  # real events per sampled row
    span = int(wall_ns[-1] - wall_ns[split])
    threshold = budget_threshold(held, span, alerts_per_day / weight)
    manifest = {
        "features": list(FEATURES),
        "versions": {"sklearn": sklearn_version, "numpy": np.__version__},
        "training_window": {"start": _iso(int(wall_ns[0])), "end": _iso(int(wall_ns[-1]))},
        "holdout_window": {"start": _iso(int(wall_ns[split])), "end": _iso(int(wall_ns[-1]))},
        "n_samples": n,
        "n_train": split,
        "n_holdout": n - split,
        "events_seen": seen,
        "trees": trees,
        "seed": seed,
        "max_samples": int(fitted.max_samples_),
        "alerts_per_day": alerts_per_day,
        "threshold": threshold,
        "holdout_alerts": int(np.count_nonzero(held > threshold)),
        "median_row": np.median(x[:split], axis=0).tolist(),
        "source": "learning mode",
    }
    save_model(output_dir, forest, manifest, rarity)
    return load_model(output_dir).manifest


@dataclass(slots=True)
class TrainingJob:
    """Training on a background thread so the event loop keeps reading the perf buffers meanwhile."""

    thread: threading.Thread | None = None
    manifest: dict[str, Any] | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def start(self, **kwargs: Any) -> None:
        def run() -> None:
            try:
                self.manifest = train_from_sample(**kwargs)
            except Exception as exc:  # reported by the agent; learning goes on
                self.error = f"{type(exc).__name__}: {exc}"
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, name="sentinel-train", daemon=True)
        self.thread.start()
