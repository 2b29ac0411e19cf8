"""Attack captures are system-wide: with a sidecar, only the attack's own process tree counts for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentinel.anomaly.evaluate import attack_instances, attack_tops, evaluate
from sentinel.anomaly.model import load_model
from sentinel.anomaly.train import train
from tests.unit.anomaly_support import write_baseline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("m")
    train([write_baseline(d / "base.cap")], d / "model", trees=50)
    return d / "model"


def test_sidecar_restricts_each_instance_to_its_tree(model_dir: Path, tmp_path: Path) -> None:
    model = load_model(model_dir)
    cap = write_baseline(tmp_path / "att.cap", runs=20, span_s=3_600, attack=True)
    whole = attack_tops(model, cap)
    assert len(whole) == 1 and whole[0][1] > 0  # no sidecar: the capture is one instance
    Path(f"{cap}.attacks.json").write_text(json.dumps({"instances": [
        {"scenario": "dropper", "root_pid": 9999},
        {"scenario": "benign-tool-run", "root_pid": 1003},  # a normal ls run: its tree is not an attack
        {"scenario": "never-ran", "root_pid": 424242},
    ]}))  # fmt: skip
    tops = dict(attack_tops(model, cap))
    assert tops["dropper"] > 0  # detected at the model threshold
    assert tops["benign-tool-run"] < tops["dropper"]
    assert tops["never-ran"] == float("-inf")  # nothing of it in the capture: a miss, not a crash
    report = evaluate(model, [write_baseline(tmp_path / "n.cap", runs=60, span_s=86_400)], [cap])
    assert report.attack_instances == 3 and report.detected["dropper"] is True
    assert report.detected["never-ran"] is False


def test_bad_sidecar_is_an_error(tmp_path: Path) -> None:
    cap = tmp_path / "x.cap"
    Path(f"{cap}.attacks.json").write_text(json.dumps({"instances": [{"root_pid": "one"}]}))
    with pytest.raises(ValueError, match="root_pid"):
        attack_instances(cap)
    assert attack_instances(tmp_path / "none.cap") is None
