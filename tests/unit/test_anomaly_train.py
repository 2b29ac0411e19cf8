"""Training from a capture: a model that loads, verifies through the CLI and flags an unusual event."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sentinel.anomaly import features
from sentinel.anomaly.features import FEATURES, INDEX
from sentinel.anomaly.model import MANIFEST_FILE, load_model
from sentinel.anomaly.profiles import HOST, NS_PER_DAY
from sentinel.anomaly.scorer import anomaly_scores, explain, score_model
from sentinel.anomaly.train import budget_threshold, capture_rows, train
from sentinel.cli import main
from tests.unit.anomaly_support import write_baseline


def test_budget_threshold() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    assert budget_threshold(scores, NS_PER_DAY, 2) == pytest.approx(0.75)  # 0.9 and 0.8 fire; mid-gap
    assert budget_threshold(scores, NS_PER_DAY, 0) == pytest.approx(0.91)  # nothing fires, with tolerance
    assert budget_threshold(np.array([0.712, 0.705, 0.7]), NS_PER_DAY, 1) == pytest.approx(0.715)  # tolerance
    assert budget_threshold(scores, 2 * NS_PER_DAY, 1) == pytest.approx(0.75)  # budget scales with the span
    assert budget_threshold(scores, NS_PER_DAY, 50) < 0.5  # all may fire
    ties = np.array([0.9, 0.9, 0.9, 0.1])
    thr = budget_threshold(ties, NS_PER_DAY, 1)
    assert np.count_nonzero(ties > thr) <= 1  # a block of ties at the top cannot overrun the budget
    with pytest.raises(ValueError):
        budget_threshold(np.array([]), NS_PER_DAY, 1)


def test_rows_are_time_ordered_live_then_leave_one_out_for_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(features, "NEWS_LEVEL", 0.0)  # every novelty in the rows: the small baseline's too
    cap = write_baseline(tmp_path / "b.cap", runs=40)
    live = capture_rows([cap])
    assert np.all(np.diff(live.wall_ns) >= 0)
    execs = live.x[live.x[:, INDEX["type_exec"]] == 1.0]
    assert execs[1, INDEX["new_exe"]] > 0.0  # live: ls (run 1) was new when it first ran
    assert execs[5, INDEX["new_exe"]] == 0.0  # and known on its next run
    trained = capture_rows([cap], leave_one_out=True)
    loo = trained.x[trained.x[:, INDEX["type_exec"]] == 1.0]
    assert loo[1, INDEX["new_exe"]] == 0.0  # ls recurs in the period: known, as at detection time
    assert loo[30, INDEX["new_exe"]] > 0.0  # run 30 is a one-off tool: new even with the period known


def test_train_then_info_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(features, "NEWS_LEVEL", 0.0)  # the small baseline's one-off runs are novel rows
    cap = write_baseline(tmp_path / "base.cap")
    out = tmp_path / "model"
    assert main(["train", str(cap), "--output", str(out), "--trees", "20", "--alerts-per-day", "2"]) == 0
    err = capsys.readouterr().err
    assert "fitting 20 trees" in err and "model written" in err
    m = load_model(out)
    man = m.manifest
    assert man["features"] == list(FEATURES)
    groups = {g["name"]: g for g in man["groups"]}
    assert set(groups) == {"exec", "open", "connect"}  # one forest per event type
    assert man["n_trees"] == 20 * 3 and man["n_samples"] == man["n_train"] + man["n_holdout"]
    assert sum(g["n_train"] + g["n_holdout"] for g in groups.values()) == man["n_samples"]
    # the budget (2/day over a held-out slice of ~0.4 days) is shared by the three forests
    assert sum(g["holdout_alerts"] - g["holdout_novel_alerts"] for g in groups.values()) <= 2 * 0.4 + 3
    assert sum(g["holdout_novel"] for g in groups.values()) > 0  # the one-off runs: what novelty looks like
    assert man["training_window"]["start"].startswith("2023-11-14T22:13")
    assert set(man["versions"]) == {"sklearn", "numpy"}
    assert m.profiles is not None and m.profiles.tables["exe"].count(HOST, "/usr/bin/ls") > 50

    assert main(["model", "info", "--model", str(out)]) == 0
    printed = capsys.readouterr().out
    shown = json.loads(printed[: printed.rindex("}") + 1])
    assert [g["threshold"] for g in shown["groups"]] == [g.threshold for g in m.groups]
    assert f"verified (60 trees, {len(FEATURES)} features; forests: exec (threshold" in printed

    # An exec new in every way (a program new on the host, new for its parent and its user) scores above the
    # exec threshold, and the explanation names what was new.
    exec_group = next(g for g in m.groups if g.name == "exec")
    assert exec_group.median_row is not None
    median = exec_group.median_row
    odd = median.copy()
    odd[[INDEX["new_exe"], INDEX["new_child"], INDEX["new_user"]]] = 6.0
    assert anomaly_scores(exec_group.forest, odd[None, :])[0] > exec_group.threshold
    scores, thresholds = score_model(m, odd[None, :])
    assert scores[0] > thresholds[0] == exec_group.threshold
    top = explain(exec_group.forest, m.feature_names, odd, median)
    assert top and all(c.feature in {"new_exe", "new_child", "new_user"} for c in top)


def test_info_refuses_tampered_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    train([write_baseline(tmp_path / "base.cap", runs=80)], out, trees=5, progress=None)
    man = json.loads((out / MANIFEST_FILE).read_text())
    man["files"]["forest.npz"] = "0" * 64
    (out / MANIFEST_FILE).write_text(json.dumps(man))
    assert main(["model", "info", "--model", str(out)]) == 1
    err = capsys.readouterr().err
    assert "model refused" in err and "sha256 does not match" in err


def test_train_refuses_too_little_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap = write_baseline(tmp_path / "tiny.cap", runs=1)
    assert main(["train", str(cap), "--output", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "too few to train on" in err or "no event type has enough events to train on" in err
    (tmp_path / "junk.cap").write_bytes(b"not a capture")
    assert main(["train", str(tmp_path / "junk.cap"), "--output", str(tmp_path / "m")]) == 1


def test_eval_separates_attack_from_normal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    train([write_baseline(tmp_path / "base.cap")], out, trees=50, progress=None)
    normal = write_baseline(tmp_path / "normal.cap", runs=120, span_s=86_400)
    attacks = [
        write_baseline(tmp_path / f"attack{i}.cap", runs=8 + i, span_s=3_600, attack=True) for i in range(3)
    ]
    model = load_model(out)
    from sentinel.anomaly.evaluate import auc, evaluate

    assert auc(np.array([2.0, 0.5]), np.array([0.0, 1.0])) == 0.75
    report = evaluate(model, [normal], attacks)
    assert report.attack_instances == 3
    assert report.normal_events > 200
    assert report.auc == 1.0
    assert report.detection_at_1pct_fpr == 1.0 and report.detected_at_threshold == 1.0
    assert report.normal_days == pytest.approx(1.0, rel=0.05)
    args = ["model", "eval", "--model", str(out), "--normal", str(normal), "--attack", *map(str, attacks)]
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["auc"] == 1.0
    assert main(args) == 0
    assert "detection @1% FPR  100.0%" in capsys.readouterr().out
