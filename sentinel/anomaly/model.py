"""The on-disk model: an isolation forest as plain arrays in ``forest.npz`` plus ``manifest.json``.

Pickle and joblib run code when loaded, so a model is data only: arrays read with ``allow_pickle=False`` and
JSON. Everything is checked before use (sha256, shapes, dtypes, child indices, finite thresholds, feature
count): a tampered file may change scores but can never run code or send the scorer out of bounds, and any
failure is a :class:`ModelError` that says why, so the agent can fall back to rules only.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentinel.anomaly.profiles import ProfileState

FOREST_FILE = "forest.npz"
MANIFEST_FILE = "manifest.json"
PROFILES_FILE = "profiles.json"
FORMAT = "sentinel-iforest"
FORMAT_VERSION = 2  # 2: one forest per group (event type)
ARRAY_DTYPES = {
    "feature": np.int32,
    "threshold": np.float64,
    "left": np.int32,
    "right": np.int32,
    "value": np.float64,
    "roots": np.int64,
}


class ModelError(Exception):
    """The model cannot be used; the message says which file and why."""


@dataclass(slots=True)
class Forest:
    """All trees' nodes concatenated; tree ``i`` owns nodes ``roots[i]:roots[i+1]`` (the last to the end).

    A leaf has ``left == right == -1`` and ``value`` = its depth + c(samples at the leaf). Inner nodes send a
    row left when ``x[feature] <= threshold``; child indices are global and always greater than the parent's.
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    c_psi: float  # average path length of an unsuccessful search in a tree built on max_samples rows
    n_features: int
    max_depth: int = field(default=0)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "feature": self.feature,
            "threshold": self.threshold,
            "left": self.left,
            "right": self.right,
            "value": self.value,
            "roots": self.roots,
            "c_psi": np.array([self.c_psi], dtype=np.float64),
            "n_features": np.array([self.n_features], dtype=np.int64),
        }


@dataclass(slots=True)
class Group:
    """One forest and its threshold, for the rows it is routed: an event type has its own, because a forest
    fitted on all events isolates the rare types (execs among opens) rather than unusual behaviour."""

    name: str
    forest: Forest
    threshold: float
    median_row: np.ndarray | None = None
    route: int | None = None  # index of the feature that must be 1.0 for a row to be here; None: all rows


@dataclass(slots=True)
class Model:
    groups: list[Group]
    manifest: dict[str, Any]
    profiles: ProfileState | None = None

    @property
    def forest(self) -> Forest:
        """The forest of a single-group model (tests and generic tools)."""
        return self._only().forest

    @property
    def threshold(self) -> float:
        return self._only().threshold

    def _only(self) -> Group:
        if len(self.groups) != 1:
            raise ValueError("this model has one forest per event type: use its groups")
        return self.groups[0]

    @property
    def feature_names(self) -> list[str]:
        return list(self.manifest["features"])

    def route(self, x: np.ndarray) -> np.ndarray:
        """Group index per row (-1: no group scores it, e.g. an event type the baseline never had)."""
        out = np.full(x.shape[0], -1, dtype=np.int64)
        for i, g in reversed(list(enumerate(self.groups))):  # the first matching group wins
            mask = np.ones(x.shape[0], dtype=bool) if g.route is None else x[:, g.route] == 1.0
            out[mask] = i
        return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(
    directory: str | Path,
    forests: Forest | dict[str, Forest],
    manifest: dict[str, Any],
    profiles: ProfileState,
) -> Path:
    """Write forest.npz, profiles.json and manifest.json (with their sha256); returns the directory.

    ``forests`` maps group names to forests, in ``manifest["groups"]`` order (each group: name, route,
    threshold, median_row); a single Forest is the group ``all`` with the manifest's threshold/median_row.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    full = dict(manifest)
    if isinstance(forests, Forest):
        forests = {"all": forests}
        full["groups"] = [{"name": "all", "route": None, "threshold": full.pop("threshold"),
                           "median_row": full.pop("median_row", None)}]  # fmt: skip
    arrays: dict[str, np.ndarray] = {}
    for name, forest in forests.items():
        validate_forest(forest)
        arrays.update({f"{name}.{k}": v for k, v in forest.arrays().items()})
    if [g["name"] for g in full["groups"]] != list(forests):
        raise ValueError("manifest groups and forests differ")
    np.savez(out / FOREST_FILE, **arrays)
    # Keys that are not UTF-8 escaped (and listed): the file is strict JSON and reloads to the same keys.
    (out / PROFILES_FILE).write_text(json.dumps(profiles.to_dict(json_safe=True), sort_keys=True))
    full.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        n_features=next(iter(forests.values())).n_features,
        n_trees=sum(int(f.roots.shape[0]) for f in forests.values()),
        n_nodes=sum(int(f.feature.shape[0]) for f in forests.values()),
        files={FOREST_FILE: sha256_file(out / FOREST_FILE), PROFILES_FILE: sha256_file(out / PROFILES_FILE)},
    )
    (out / MANIFEST_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return out


GROUP_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: not a JSON object")
    if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} manifest")
    feats = data.get("features")
    if not isinstance(feats, list) or not feats or not all(isinstance(f, str) for f in feats):
        raise ModelError(f"{path}: 'features' must be a non-empty list of names")
    groups = data.get("groups")
    if not isinstance(groups, list) or not groups:
        raise ModelError(f"{path}: 'groups' must be a non-empty list")
    seen: set[str] = set()
    for g in groups:
        name = g.get("name") if isinstance(g, dict) else None
        if not isinstance(name, str) or not GROUP_NAME.fullmatch(name) or name in seen:
            raise ModelError(f"{path}: each group needs a unique lower-case 'name'")
        seen.add(name)
        thr = g.get("threshold")
        if not isinstance(thr, int | float) or isinstance(thr, bool) or not math.isfinite(thr):
            raise ModelError(f"{path}: group {name!r}: 'threshold' must be a finite number")
        route = g.get("route")
        if route is not None and route not in feats:
            raise ModelError(f"{path}: group {name!r}: route {route!r} is not a feature")
        median = g.get("median_row")
        if median is not None and (
            not isinstance(median, list)
            or len(median) != len(feats)
            or not all(isinstance(v, int | float) and math.isfinite(v) for v in median)
        ):
            raise ModelError(f"{path}: group {name!r}: 'median_row' must list {len(feats)} finite numbers")
    files = data.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(files.get(n), str) for n in (FOREST_FILE, PROFILES_FILE)
    ):
        raise ModelError(f"{path}: 'files' must give the sha256 of {FOREST_FILE} and {PROFILES_FILE}")
    return data


def _load_arrays(path: Path, groups: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if not zipfile.is_zipfile(path):  # np.load would otherwise try it as a pickle (and refuse, less clearly)
        raise ModelError(f"{path}: corrupt or truncated (not an npz archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            expected = {f"{g}.{k}" for g in groups for k in (*ARRAY_DTYPES, "c_psi", "n_features")}
            if names != expected:
                raise ModelError(f"{path}: arrays {sorted(names)} != expected {sorted(expected)}")
            for name in expected:
                out[name] = npz[name]
    except ModelError:
        raise
    except ValueError as exc:  # object arrays need pickle: refused by allow_pickle=False
        raise ModelError(f"{path}: refused ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise ModelError(f"{path}: corrupt or truncated ({exc})") from None
    return out


def validate_forest(forest: Forest) -> None:
    """Check every invariant the scorer relies on; raises ModelError."""
    n = forest.feature.shape[0] if forest.feature.ndim == 1 else -1
    for name, dtype in ARRAY_DTYPES.items():
        arr = getattr(forest, name)
        if arr.dtype != dtype or arr.ndim != 1:
            raise ModelError(
                f"array {name!r} must be 1-D {np.dtype(dtype).name}, got {arr.ndim}-D {arr.dtype}"
            )
        if name != "roots" and arr.shape[0] != n:
            raise ModelError(f"array {name!r} has {arr.shape[0]} entries, expected {n}")
    if n <= 0 or forest.roots.shape[0] == 0:
        raise ModelError("forest has no nodes or no trees")
    if forest.n_features <= 0:
        raise ModelError("forest has no features")
    if not math.isfinite(forest.c_psi) or forest.c_psi <= 0:
        raise ModelError("c(psi) must be finite and positive")
    roots = forest.roots
    if roots[0] != 0 or np.any(np.diff(roots) <= 0) or roots[-1] >= n:
        raise ModelError("tree offsets must start at 0, increase strictly and stay below the node count")
    ends = np.append(roots[1:], n)
    tree_end = np.repeat(ends, np.diff(np.append(roots, n)))  # per node: end of its tree
    idx = np.arange(n)
    left, right = forest.left.astype(np.int64), forest.right.astype(np.int64)
    leaf = left == -1
    if np.any(leaf != (right == -1)):
        raise ModelError("a node has exactly one child")
    inner = ~leaf
    for name, child in (("left", left), ("right", right)):
        if np.any(inner & ((child <= idx) | (child >= tree_end))):
            raise ModelError(f"{name} child index out of range (must be after its parent, within its tree)")
    if np.any(inner & ((forest.feature < 0) | (forest.feature >= forest.n_features))):
        raise ModelError(f"split feature index out of range 0..{forest.n_features - 1}")
    if not np.all(np.isfinite(forest.threshold[inner])):
        raise ModelError("non-finite split threshold")
    if not np.all(np.isfinite(forest.value[leaf])):
        raise ModelError("non-finite leaf value")
    # Every node reachable from its root exactly once: together with child > parent this rules out sharing.
    refs = np.zeros(n, dtype=np.int64)
    np.add.at(refs, left[inner], 1)
    np.add.at(refs, right[inner], 1)
    refs[roots] += 1
    if np.any(refs != 1):
        raise ModelError("tree structure is not a set of trees (a node is shared or unreachable)")
    forest.max_depth = _max_depth(left, right, roots, n)


def _max_depth(left: np.ndarray, right: np.ndarray, roots: np.ndarray, n: int) -> int:
    """Levels below the deepest root, one vectorised step per level (loading stays in milliseconds)."""
    frontier = roots.astype(np.int64)
    depth = 0
    while True:
        inner = frontier[left[frontier] >= 0]
        if inner.size == 0 or depth > n:  # depth > n cannot happen in a validated forest; belt and braces
            return depth
        frontier = np.concatenate([left[inner], right[inner]])
        depth += 1


def load_model(directory: str | Path) -> Model:
    """Load and verify a model directory; raises ModelError with the reason."""
    d = Path(directory)
    if not d.is_dir():
        raise ModelError(f"{d}: not a directory")
    manifest = _read_manifest(d)
    for name in (FOREST_FILE, PROFILES_FILE):
        path = d / name
        if not path.is_file():
            raise ModelError(f"{path}: missing")
        if sha256_file(path) != manifest["files"][name]:
            raise ModelError(f"{path}: sha256 does not match the manifest (tampered or replaced)")
    names = [g["name"] for g in manifest["groups"]]
    arrays = _load_arrays(d / FOREST_FILE, names)
    features = list(manifest["features"])
    groups: list[Group] = []
    for spec in manifest["groups"]:
        g = spec["name"]
        for name in ("c_psi", "n_features"):
            if arrays[f"{g}.{name}"].shape != (1,):
                raise ModelError(f"{d / FOREST_FILE}: {g}.{name} must hold one value")
        if arrays[f"{g}.c_psi"].dtype != np.float64 or arrays[f"{g}.n_features"].dtype != np.int64:
            raise ModelError(f"{d / FOREST_FILE}: {g}: c_psi/n_features have the wrong dtype")
        forest = Forest(
            **{k: arrays[f"{g}.{k}"] for k in ARRAY_DTYPES},
            c_psi=float(arrays[f"{g}.c_psi"][0]),
            n_features=int(arrays[f"{g}.n_features"][0]),
        )
        try:
            validate_forest(forest)
        except ModelError as exc:
            raise ModelError(f"{d / FOREST_FILE}: group {g!r}: {exc}") from None
        if forest.n_features != len(features):
            raise ModelError(
                f"{d}: forest {g!r} uses {forest.n_features} features, manifest lists {len(features)}"
            )
        median = spec.get("median_row")
        route = spec.get("route")
        groups.append(
            Group(
                name=g,
                forest=forest,
                threshold=float(spec["threshold"]),
                median_row=np.asarray(median, dtype=np.float64) if median is not None else None,
                route=features.index(route) if route is not None else None,
            )
        )
    try:
        profiles = ProfileState.from_dict(json.loads((d / PROFILES_FILE).read_text()))
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{d / PROFILES_FILE}: {exc}") from None
    return Model(groups=groups, manifest=manifest, profiles=profiles)
