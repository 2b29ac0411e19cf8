"""Train a host model from baseline captures: time-ordered rows, isolation forest, budget threshold.

This is the only module that imports scikit-learn. Rarity features are scored before each event is counted,
so no row sees itself. The forest is fitted on the earlier part of the baseline and the threshold is chosen on
the later, held-out part so that at most ``alerts_per_day`` alerts would have fired there (``contamination``
is not a threshold: it gave 2-19% false positives on held-out data).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from sentinel.anomaly.features import (
    FEATURES,
    NEWS_LEVEL,
    NOVELTY,
    SCORED_TYPES,
    TYPE_NOVELTY,
    FeatureExtractor,
    loo_row,
)
from sentinel.anomaly.model import Forest, load_model, save_model, validate_forest
from sentinel.anomaly.profiles import NS_PER_DAY, ProfileState
from sentinel.anomaly.scorer import anomaly_scores, average_path_length
from sentinel.anomaly.state import Key
from sentinel.containers.meta_view import metadata_view
from sentinel.events import Event, EventType
from sentinel.host import HostInfo
from sentinel.process.table import Process, ProcessTable
from sentinel.recording import replay_events
from sentinel.text import printable

TRAIN_EXTRA = (
    "training the host model needs scikit-learn, which is not installed: install the 'train' extra "
    "(pip install 'sentinel[train]'; the Debian package and image are built with it unless --no-train)"
)


class TrainExtraMissing(ValueError):
    """scikit-learn is absent: the agent was installed without the ``train`` extra."""


def training_available() -> bool:
    """scikit-learn can be imported (looked up, not imported: it costs ~1 s and ~100 MB)."""
    return importlib.util.find_spec("sklearn") is not None

PROGRESS_EVERY = 50_000
# Per-row metadata a caller may compute from the event and its process (evaluation: "in the attack tree?").
RowTag = Callable[[Event, Process | None], Any]


@dataclass(slots=True)
class Rows:
    """Feature rows and their wall-clock times (ns), in event order."""

    x: np.ndarray
    wall_ns: np.ndarray
    extractor: FeatureExtractor = field(default_factory=FeatureExtractor)
    tags: list[Any] | None = None  # one per row when capture_rows got a ``row_tag``


class _RowStream:
    """``make_stream`` target for replay_events: updates the table and appends one row per scored event."""

    def __init__(self, host: HostInfo, table: ProcessTable, sink: _Collector) -> None:
        self.host = host
        self.table = table
        self.sink = sink
        view = metadata_view(table)  # the recorded runtime answers, as the live engine saw them
        self.containers = view.fields if view is not None else None

    def handle(self, ev: Event) -> None:
        proc = self.table.apply(ev)
        if ev.type not in SCORED_TYPES:
            return
        path = None
        if ev.type == EventType.OPEN and proc is not None:
            path = self.table.resolve_path(proc, ev.dirfd, ev.path)
        wall = self.host.boot_time_ns + ev.ts_ns
        extractor = self.sink.extractor
        extractor.containers = self.containers
        values, facts = extractor.compute(ev, proc, path, wall, learn=False)
        if self.sink.keys is not None:
            self.sink.keys.append((tuple(facts.keys), facts.repeats))
        extractor.commit(facts, wall)
        self.sink.add(values, wall)
        if self.sink.row_tag is not None:  # computed now: the table's view of the process changes later
            self.sink.tags.append(self.sink.row_tag(ev, proc))


class _Collector:
    def __init__(self, extractor: FeatureExtractor, progress: TextIO | None) -> None:
        self.extractor = extractor
        self.rows: list[list[float]] = []
        self.walls: list[int] = []
        self.progress = progress
        self.row_tag: RowTag | None = None
        self.tags: list[Any] = []
        self.keys: list[tuple[tuple[Key, ...], float]] | None = None  # per row, for leave-one-out

    def add(self, row: list[float], wall: int) -> None:
        self.rows.append(row)
        self.walls.append(wall)
        if self.progress is not None and len(self.rows) % PROGRESS_EVERY == 0:
            print(f"  {len(self.rows)} rows", file=self.progress, flush=True)


def capture_rows(
    captures: Iterable[str | Path],
    state: ProfileState | None = None,
    progress: TextIO | None = None,
    row_tag: RowTag | None = None,
    leave_one_out: bool = False,
) -> Rows:
    """Feature rows of every exec/open/connect in the captures (read in the order given: oldest first).

    Each row is measured against the profiles before it is counted, as the agent measures a live event;
    with ``leave_one_out`` (training) the rows are then re-measured against the profiles of all the
    captures with each row left out, so they look as they would after learning (:func:`loo_row`).
    ``row_tag(event, process)`` is called for every row, at the time the row is made, and its results are
    ``Rows.tags``: evaluation uses it to know which rows belong to an attack's process tree while the
    profiles still learn from every event. Without it (the default) nothing changes.
    """
    extractor = FeatureExtractor(state=state or ProfileState(), learn=False)
    sink = _Collector(extractor, progress)
    sink.row_tag = row_tag
    if leave_one_out:
        sink.keys = []
    for cap in captures:
        if progress is not None:
            print(f"reading {cap}", file=progress, flush=True)
        problem = replay_events(str(cap), lambda host, table: _RowStream(host, table, sink))
        if problem is not None and progress is not None:
            print(f"  {cap}: stopped early: {problem}", file=progress, flush=True)
    x = np.array(sink.rows, dtype=np.float64).reshape(len(sink.rows), len(FEATURES))
    if sink.keys is not None:
        for i, (keys, _) in enumerate(sink.keys):
            loo_row(extractor.state, x[i], list(keys))  # a row is one slot's count
    walls = np.array(sink.walls, dtype=np.int64)
    tags = sink.tags if row_tag is not None else None
    return Rows(x=x, wall_ns=walls, extractor=extractor, tags=tags)


def forest_from_sklearn(model: Any, n_features: int) -> Forest:
    """Flatten a fitted ``IsolationForest`` into arrays; leaf value = depth + c(samples at the leaf)."""
    if getattr(model, "_max_features", n_features) != n_features:
        raise ValueError("only forests fitted with max_features=1.0 can be exported")
    feats, thrs, lefts, rights, values, roots = [], [], [], [], [], []
    offset = 0
    for est in model.estimators_:
        tree = est.tree_
        n = tree.node_count
        left = tree.children_left.astype(np.int64)
        right = tree.children_right.astype(np.int64)
        depth = np.zeros(n, dtype=np.float64)
        for i in range(n):  # sklearn numbers children after their parent
            if left[i] >= 0:
                depth[left[i]] = depth[right[i]] = depth[i] + 1
        leaf = left < 0
        value = np.where(leaf, depth + average_path_length(tree.n_node_samples), 0.0)
        roots.append(offset)
        feats.append(np.where(leaf, 0, tree.feature))
        thrs.append(np.where(leaf, 0.0, tree.threshold))
        lefts.append(np.where(leaf, -1, left + offset))
        rights.append(np.where(leaf, -1, right + offset))
        values.append(value)
        offset += n
    return Forest(
        feature=np.concatenate(feats).astype(np.int32),
        threshold=np.concatenate(thrs).astype(np.float64),
        left=np.concatenate(lefts).astype(np.int32),
        right=np.concatenate(rights).astype(np.int32),
        value=np.concatenate(values).astype(np.float64),
        roots=np.array(roots, dtype=np.int64),
        c_psi=float(average_path_length(np.array([model.max_samples_]))[0]),
        n_features=n_features,
    )


TOLERANCE = 0.01  # score drift a benign pattern at the cut may show later (scores lie in (0, 1])


def budget_threshold(scores: np.ndarray, span_ns: int, alerts_per_day: float) -> float:
    """Anomaly threshold (alert when score > threshold) letting at most the budget fire on ``scores``.

    The cut sits midway between the lowest score the budget lets fire and the next one below, and at least
    ``TOLERANCE`` above the latter: the highest non-alerting held-out rows are often a benign pattern repeated
    many times, and its scores drift a little as the host's counts grow, so a cut right on it would fire at
    its next occurrence. Fewer alerts than the budget may fire, never more.
    """
    if scores.size == 0:
        raise ValueError("no held-out rows to set a threshold on")
    days = max(span_ns, 0) / NS_PER_DAY
    allowed = int(np.floor(alerts_per_day * max(days, 1.0 / 24)))  # at least an hour's worth of budget
    desc = np.sort(scores)[::-1]
    if allowed >= desc.size:
        return float(np.nextafter(desc[-1], -np.inf))
    cut = float(desc[allowed]) + TOLERANCE
    if allowed == 0:
        return cut
    return max(cut, float((desc[allowed] + desc[allowed - 1]) / 2.0))


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat().replace("+00:00", "Z")


GROUPS: tuple[tuple[str, str], ...] = (
    ("exec", "type_exec"),
    ("open", "type_open"),
    ("connect", "type_connect"),
)
NOVELTY_COLUMNS = [FEATURES.index(f) for f in NOVELTY]
MIN_GROUP_ROWS = 20  # training rows an event type needs for a forest of its own
MAX_SAMPLES = 1024  # rows per tree: enough that a tree's sample holds the period's rare novelties
# Range anchors: a forest can only isolate along a column that varies in its trees' samples, and after a
# good learning period novelties are rare (as they should be). A few training rows are copied with one
# novelty column set to ANCHOR_VALUE (a subject with millions of events and nothing new), so every tree
# knows each column's range and a novelty never seen in training is isolated all the same. Measured on the
# lab: without them a forest's score barely moved with the novelty (0.40 → 0.42 from 1 to 10).
ANCHOR_SHARE = 0.005
ANCHOR_MIN = 4  # per novelty column
ANCHOR_VALUE = 16.0
# An event alerts when it scores at least as high as the lowest-scoring row whose only novelty is at the news
# level or above (features.NEWS_LEVEL: something new from a program whose chance of doing something new is
# below 1.8 %), and above the budget cut on held-out rows that did nothing new. Rows below the news level hold
# 0 and score as familiar rows do; taking the lowest score over the whole range up to the anchors keeps a
# forest's dips (its score is not monotone in a column) from hiding a novelty above the level.
NOVELTY_LEVEL = NEWS_LEVEL
LEVEL_GRID_STEP = 0.25


def fit_groups(
    x: np.ndarray,
    wall_ns: np.ndarray,
    alerts_per_day: float,
    trees: int = 100,
    seed: int = 0,
    holdout: float = 0.2,
    max_samples: int = MAX_SAMPLES,
    weight: float = 1.0,
    progress: TextIO | None = None,
) -> tuple[dict[str, Forest], dict[str, Any]]:
    """One forest per event type, each thresholded on its own held-out rows; the budget is shared evenly.

    A single forest over all events isolates the rare event types (an exec among hundreds of opens) instead
    of unusual behaviour, so each type is compared only with its own kind. Rows are time-ordered: the split
    is by time. Each forest sees its type's novelty columns plus range anchors (``ANCHOR_SHARE``). The
    threshold is the higher of: the budget cut on the held-out rows that did nothing new (every novelty 0:
    what the host keeps doing after learning), and the score of a row whose only novelty is
    ``NOVELTY_LEVEL``. Rows that did something new once in the whole period are the very shape the model is
    there to report; letting them set the cut would put it above every novelty (the manifest counts them).
    ``weight`` is how many real events a row stands for (learning mode samples). Returns the forests and
    the manifest fields (groups, windows, counts). Raises ValueError when no type has enough.
    """
    try:
        from sklearn import __version__ as sklearn_version
        from sklearn.ensemble import IsolationForest
    except ImportError as exc:
        raise TrainExtraMissing(TRAIN_EXTRA) from exc

    if not 0.0 < holdout < 1.0:
        raise ValueError("holdout must be between 0 and 1")
    n = x.shape[0]
    split = int(n * (1.0 - holdout))
    if split < 2 or n - split < 1:
        raise ValueError(f"only {n} scorable events: too few to train on")
    span = int(wall_ns[-1] - wall_ns[split])
    usable = []
    skipped: dict[str, str] = {}
    for name, feature in GROUPS:
        col = FEATURES.index(feature)
        train_mask = x[:split, col] == 1.0
        held_mask = x[split:, col] == 1.0
        if train_mask.sum() < MIN_GROUP_ROWS or not held_mask.any():
            skipped[name] = f"{int(train_mask.sum())} training and {int(held_mask.sum())} held-out events"
            continue
        usable.append((name, feature, train_mask, held_mask))
    if not usable:
        raise ValueError(f"no event type has enough events to train on ({skipped})")
    forests: dict[str, Forest] = {}
    groups: list[dict[str, Any]] = []
    share = alerts_per_day / len(usable)
    for i, (name, feature, train_mask, held_mask) in enumerate(usable):
        xt, xh = x[:split][train_mask].copy(), x[split:][held_mask]
        cols = [FEATURES.index(f) for f in TYPE_NOVELTY[name]]
        unused = [c for c in NOVELTY_COLUMNS if c not in cols]
        xt[:, unused] = 0.0  # no tree splits on a column its type does not judge by
        median = np.median(xt, axis=0)
        n_real = len(xt)
        anchors = range_anchors(xt, cols, seed + i)
        xt = np.vstack([xt, anchors])
        if progress is not None:
            print(f"fitting {trees} trees for {name}: {len(xt)} rows, threshold on {len(xh)} held-out rows",
                  file=progress)  # fmt: skip
        fitted = IsolationForest(
            n_estimators=trees, max_samples=min(max_samples, len(xt)), max_features=1.0, random_state=seed + i
        ).fit(xt)
        forest = forest_from_sklearn(fitted, len(FEATURES))
        validate_forest(forest)
        held = anomaly_scores(forest, xh)
        novel = np.any(xh[:, NOVELTY_COLUMNS] > 0.0, axis=1)
        familiar = held[~novel] if (~novel).any() else held
        budget_cut = budget_threshold(familiar, span, share / weight)
        level_cut = float(anomaly_scores(forest, level_probes(median, cols)).min())
        # Alert is score > threshold: a hair below the lowest probe, so the probe itself alerts.
        threshold = max(budget_cut, level_cut - 1e-9)
        forests[name] = forest
        groups.append({
            "name": name,
            "route": feature,
            "threshold": threshold,
            "median_row": median.tolist(),
            "budget_cut": budget_cut,
            "novelty_level_cut": level_cut,
            "n_train": n_real,
            "n_anchors": len(anchors),
            "n_holdout": len(xh),
            "holdout_alerts": int(np.count_nonzero(held > threshold)),
            "holdout_novel": int(np.count_nonzero(novel)),
            "holdout_novel_alerts": int(np.count_nonzero(held[novel] > threshold)),
            "max_samples": int(fitted.max_samples_),
            "novelty_features": list(TYPE_NOVELTY[name]),
        })  # fmt: skip
    fields = {
        "features": list(FEATURES),
        "versions": {"sklearn": sklearn_version, "numpy": np.__version__},
        "training_window": {"start": _iso(int(wall_ns[0])), "end": _iso(int(wall_ns[-1]))},
        "holdout_window": {"start": _iso(int(wall_ns[split])), "end": _iso(int(wall_ns[-1]))},
        "n_samples": n,
        "n_train": split,
        "n_holdout": n - split,
        "trees": trees,
        "seed": seed,
        "alerts_per_day": alerts_per_day,
        "novelty_level": NOVELTY_LEVEL,
        "anchors": {"share": ANCHOR_SHARE, "min_per_column": ANCHOR_MIN, "value": ANCHOR_VALUE},
        "groups": groups,
        "skipped_groups": skipped,
    }
    return forests, fields


def level_probes(median: np.ndarray, cols: list[int]) -> np.ndarray:
    """Rows like the median row with one of ``cols`` at each value from the news level to the anchors."""
    values = np.arange(NOVELTY_LEVEL, ANCHOR_VALUE + LEVEL_GRID_STEP / 2, LEVEL_GRID_STEP)
    probes = np.repeat(median[None, :], len(cols) * len(values), axis=0)
    probes[np.arange(len(probes)), np.repeat(cols, len(values))] = np.tile(values, len(cols))
    return probes


def range_anchors(xt: np.ndarray, cols: list[int], seed: int) -> np.ndarray:
    """Copies of random training rows, each with one of ``cols`` set to ``ANCHOR_VALUE`` (see above)."""
    rng = np.random.default_rng(seed)
    k = max(ANCHOR_MIN * len(cols), int(len(xt) * ANCHOR_SHARE))
    anchors = xt[rng.integers(0, len(xt), k)].copy()
    anchors[np.arange(k), np.array(cols)[np.arange(k) % len(cols)]] = ANCHOR_VALUE
    return anchors


def train(
    captures: list[str | Path],
    output_dir: str | Path,
    alerts_per_day: float = 5.0,
    trees: int = 100,
    seed: int = 0,
    holdout: float = 0.2,
    max_samples: int = MAX_SAMPLES,
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Fit and save a model; returns its manifest. Raises ValueError when the captures are too small.

    ``progress`` (the CLI passes stderr) gets one line per capture, every 50k rows and per stage.
    """
    rows = capture_rows(captures, progress=progress, leave_one_out=True)
    if rows.x.shape[0] < 3:
        raise ValueError(f"only {rows.x.shape[0]} scorable events in the captures: too few to train on")
    forests, fields = fit_groups(
        rows.x, rows.wall_ns, alerts_per_day, trees, seed, holdout, max_samples, progress=progress
    )
    manifest = {**fields, "captures": [printable(Path(c).name) for c in captures]}  # names are shown only
    save_model(output_dir, forests, manifest, rows.extractor.state)
    if progress is not None:
        thresholds = ", ".join(f"{g['name']} {g['threshold']:.4f}" for g in fields["groups"])
        print(f"model written to {output_dir} (thresholds: {thresholds})", file=progress)
    return load_model(output_dir).manifest
