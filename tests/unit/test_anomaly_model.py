"""Model files: saved models load and score the same; anything corrupt, tampered or malicious is refused."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from sentinel.anomaly.model import (
    FOREST_FILE,
    MANIFEST_FILE,
    PROFILES_FILE,
    ModelError,
    load_model,
    save_model,
)
from sentinel.anomaly.profiles import ProfileState
from sentinel.anomaly.scorer import score_samples
from sentinel.anomaly.train import forest_from_sklearn

NAMES = ["a", "b", "c"]


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    x = np.random.default_rng(0).normal(size=(300, 3))
    sk = IsolationForest(n_estimators=10, random_state=0, max_features=1.0).fit(x)
    out = tmp_path / "m"
    save_model(out, forest_from_sklearn(sk, 3), {"features": NAMES, "threshold": 0.6}, ProfileState())
    return out


def arrays(d: Path) -> dict[str, np.ndarray]:
    """The single group's arrays, without the group prefix."""
    with np.load(d / FOREST_FILE, allow_pickle=False) as npz:
        return {k.removeprefix("all."): npz[k] for k in npz.files}


def save(d: Path, arr: dict[str, np.ndarray]) -> None:
    np.savez(d / FOREST_FILE, **{f"all.{k}": v for k, v in arr.items()})


def rewrite(d: Path, **changes: np.ndarray) -> None:
    """Replace arrays and re-sign the manifest, as an attacker who can write the directory would."""
    arr = arrays(d)
    arr.update(changes)
    save(d, arr)
    resign(d)


def resign(d: Path) -> None:
    man = json.loads((d / MANIFEST_FILE).read_text())
    for name in (FOREST_FILE, PROFILES_FILE):
        man["files"][name] = hashlib.sha256((d / name).read_bytes()).hexdigest()
    (d / MANIFEST_FILE).write_text(json.dumps(man))


def test_round_trip(model_dir: Path) -> None:
    m = load_model(model_dir)
    assert m.feature_names == NAMES
    assert m.threshold == 0.6
    assert m.manifest["n_trees"] == 10
    x = np.random.default_rng(1).normal(size=(20, 3))
    assert score_samples(m.forest, x).shape == (20,)
    assert b"pickle" not in (model_dir / FOREST_FILE).read_bytes()


def refused(d: Path, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        load_model(d)


def test_missing_and_bad_manifest(model_dir: Path, tmp_path: Path) -> None:
    refused(tmp_path / "nope", "not a directory")
    (model_dir / MANIFEST_FILE).write_text("{not json")
    refused(model_dir, "not readable JSON")
    (model_dir / MANIFEST_FILE).write_text(json.dumps({"format": "other"}))
    refused(model_dir, "manifest")
    (model_dir / MANIFEST_FILE).unlink()
    refused(model_dir, "missing")


def test_tampered_forest_is_refused_by_checksum(model_dir: Path) -> None:
    data = bytearray((model_dir / FOREST_FILE).read_bytes())
    data[-100] ^= 0xFF
    (model_dir / FOREST_FILE).write_bytes(bytes(data))
    refused(model_dir, "sha256 does not match")


def test_tampered_profiles_are_refused_by_checksum(model_dir: Path) -> None:
    (model_dir / PROFILES_FILE).write_text(json.dumps(ProfileState().to_dict()) + " ")
    refused(model_dir, "profiles.json: sha256")


def test_truncated_forest(model_dir: Path) -> None:
    data = (model_dir / FOREST_FILE).read_bytes()
    (model_dir / FOREST_FILE).write_bytes(data[: len(data) // 2])
    resign(model_dir)
    refused(model_dir, "corrupt or truncated")


def test_garbage_forest(model_dir: Path) -> None:
    (model_dir / FOREST_FILE).write_bytes(b"\x00" * 1000)
    resign(model_dir)
    refused(model_dir, "corrupt or truncated")


def test_object_array_needing_pickle_is_refused(model_dir: Path) -> None:
    evil = np.array([{"__reduce__": "os.system"}], dtype=object)
    arr = arrays(model_dir)
    arr["threshold"] = evil
    save(model_dir, arr)  # savez pickles object arrays; load must refuse them
    with zipfile.ZipFile(model_dir / FOREST_FILE) as z:
        assert "all.threshold.npy" in z.namelist()
    resign(model_dir)
    refused(model_dir, "refused")


def test_wrong_shape_and_dtype(model_dir: Path) -> None:
    a = arrays(model_dir)
    rewrite(model_dir, left=a["left"][:-1])
    refused(model_dir, "'left' has")
    rewrite(model_dir, left=a["left"].reshape(1, -1))
    refused(model_dir, "1-D int32")
    rewrite(model_dir, left=a["left"], threshold=a["threshold"].astype(np.float32))
    refused(model_dir, "'threshold' must be 1-D float64")


def test_unexpected_or_missing_array(model_dir: Path) -> None:
    a = arrays(model_dir)
    rewrite(model_dir, extra=np.zeros(1))
    refused(model_dir, "expected")
    del a["value"]
    save(model_dir, a)
    resign(model_dir)
    refused(model_dir, "expected")


def test_out_of_bounds_and_cyclic_children(model_dir: Path) -> None:
    a = arrays(model_dir)
    inner = np.flatnonzero(a["left"] >= 0)
    left = a["left"].copy()
    left[inner[0]] = 10**6
    rewrite(model_dir, left=left)
    refused(model_dir, "left child index out of range")
    left = a["left"].copy()
    left[inner[1]] = inner[1]  # points at itself: a cycle
    rewrite(model_dir, left=left)
    refused(model_dir, "left child index out of range")
    right = a["right"].copy()
    right[inner[0]] = a["right"][inner[1]]  # two parents share a child
    rewrite(model_dir, left=a["left"], right=right)
    refused(model_dir, "shared or unreachable")


def test_bad_values(model_dir: Path) -> None:
    a = arrays(model_dir)
    inner = np.flatnonzero(a["left"] >= 0)
    thr = a["threshold"].copy()
    thr[inner[0]] = np.nan
    rewrite(model_dir, threshold=thr)
    refused(model_dir, "non-finite split threshold")
    feat = a["feature"].copy()
    feat[inner[0]] = 7
    rewrite(model_dir, threshold=a["threshold"], feature=feat)
    refused(model_dir, "split feature index out of range")
    rewrite(model_dir, feature=a["feature"], c_psi=np.array([-1.0]))
    refused(model_dir, "c\\(psi\\)")
    rewrite(model_dir, c_psi=a["c_psi"], roots=np.array([0, 5, 3], dtype=np.int64))
    refused(model_dir, "tree offsets")


def test_feature_count_must_match_manifest(model_dir: Path) -> None:
    man = json.loads((model_dir / MANIFEST_FILE).read_text())
    man["features"] = ["a", "b"]
    (model_dir / MANIFEST_FILE).write_text(json.dumps(man))
    refused(model_dir, "forest 'all' uses 3 features, manifest lists 2")


def test_bad_median_row(model_dir: Path) -> None:
    man = json.loads((model_dir / MANIFEST_FILE).read_text())
    man["groups"][0]["median_row"] = [0.0, "x", 1.0]
    (model_dir / MANIFEST_FILE).write_text(json.dumps(man))
    refused(model_dir, "median_row")


def test_scoring_side_imports_no_sklearn_and_nothing_pickles() -> None:
    """The agent loads and scores without scikit-learn; no anomaly module touches pickle or joblib."""
    code = (
        "import sys; import sentinel.anomaly.model, sentinel.anomaly.scorer, sentinel.anomaly.features; "
        "assert 'sklearn' not in sys.modules and 'joblib' not in sys.modules, 'sklearn imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    src = Path(__file__).resolve().parents[2] / "sentinel" / "anomaly"
    for path in src.glob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "import joblib" not in text, path
        assert "allow_pickle=True" not in text, path
