"""The numpy scorer gives scikit-learn's ``score_samples`` to 1e-9, and explanations find planted features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from sentinel.anomaly.features import FEATURES
from sentinel.anomaly.model import validate_forest
from sentinel.anomaly.scorer import (
    CompiledForest,
    anomaly_scores,
    average_path_length,
    explain,
    score_samples,
)
from sentinel.anomaly.train import capture_rows, forest_from_sklearn
from tests.unit.anomaly_support import write_baseline


def fit(x: np.ndarray, trees: int = 50, seed: int = 0, **kw: object) -> tuple[IsolationForest, object]:
    model = IsolationForest(n_estimators=trees, random_state=seed, max_features=1.0, **kw).fit(x)
    forest = forest_from_sklearn(model, x.shape[1])
    validate_forest(forest)
    return model, forest


def test_average_path_length() -> None:
    got = average_path_length(np.array([0.0, 1.0, 2.0, 3.0, 256.0]))
    assert got[:3].tolist() == [0.0, 0.0, 1.0]
    assert got[3] == pytest.approx(2 * (np.log(2) + np.euler_gamma) - 4 / 3)
    assert got[4] == pytest.approx(2 * (np.log(255) + np.euler_gamma) - 2 * 255 / 256)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parity_with_sklearn_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1500, 9))
    x[:, 3] = rng.integers(0, 3, size=1500)  # discrete columns, like one-hot and flags
    model, forest = fit(x, seed=seed, max_samples=200 + 50 * seed)
    test = np.vstack([rng.normal(size=(400, 9)) * 4, x[:100]])
    np.testing.assert_allclose(score_samples(forest, test), model.score_samples(test), rtol=0, atol=1e-9)
    np.testing.assert_allclose(
        score_samples(forest, test[:1]), model.score_samples(test[:1]), rtol=0, atol=1e-9
    )
    compiled = CompiledForest(forest)  # the agent's hot-path layout scores the same
    np.testing.assert_allclose(compiled.scores(test), -model.score_samples(test), rtol=0, atol=1e-9)
    np.testing.assert_allclose(compiled.scores(test[:1]), -model.score_samples(test[:1]), rtol=0, atol=1e-9)


def test_parity_with_sklearn_on_feature_rows(tmp_path: Path) -> None:
    rows = capture_rows([write_baseline(tmp_path / "base.cap")])
    assert rows.x.shape[1] == len(FEATURES)
    model, forest = fit(rows.x, trees=30)
    np.testing.assert_allclose(score_samples(forest, rows.x), model.score_samples(rows.x), rtol=0, atol=1e-9)


def test_score_rejects_wrong_width() -> None:
    _, forest = fit(np.random.default_rng(0).normal(size=(100, 4)), trees=5)
    with pytest.raises(ValueError, match="4 features"):
        score_samples(forest, np.zeros((2, 5)))


def test_explain_finds_planted_features() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 6))
    _, forest = fit(x, trees=100)
    names = [f"f{i}" for i in range(6)]
    median = np.median(x, axis=0)
    row = median.copy()
    row[2], row[4] = 9.0, -8.0
    out = explain(
        forest, names, row, median, details={"f2": "parent→child php-fpm→sh seen 0 times on this host"}
    )
    assert {c.feature for c in out[:2]} == {"f2", "f4"}
    assert all(c.drop > 0 for c in out)
    texts = {c.feature: c.text for c in out}
    assert texts["f2"] == "parent→child php-fpm→sh seen 0 times on this host"
    assert texts["f4"] == "f4 = -8 (host median " + f"{median[4]:g})"
    assert anomaly_scores(forest, row[None, :])[0] > anomaly_scores(forest, median[None, :])[0]


def test_explain_says_what_is_unusual_when_no_single_feature_lowers_the_score() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1000, 4))
    x[:, 3] = 0.0  # constant in training: no tree splits on it, so resetting it changes nothing
    _, forest = fit(x, trees=50)
    median = np.median(x, axis=0)
    row = median.copy()
    row[3] = 5.0
    out = explain(forest, ["a", "b", "c", "rare"], row, median, details={"rare": "rare thing seen 0 times"})
    assert [(c.feature, c.drop, c.text) for c in out] == [("rare", 0.0, "rare thing seen 0 times")]
    assert explain(forest, ["a", "b", "c", "rare"], median, median) == []  # nothing unusual: nothing said
