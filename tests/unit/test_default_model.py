"""The shipped model loads, matches the agent's features and carries its evaluation; the lab scripts run.

``models/default`` is produced by ``scripts/train-default-model.sh``; these tests catch a model that no
longer fits the code (the feature list changed without retraining) or a lab script that no longer starts.
Nothing here needs root or touches the host.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from unittest import mock

from sentinel.anomaly.features import FEATURES
from sentinel.anomaly.live import find_default_model
from sentinel.anomaly.model import load_model

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "models" / "default"
LAB = REPO / "scripts" / "lab"
EVAL_KEYS = {
    "normal_events", "normal_days", "normal_alerts", "attack_instances", "auc", "detection_at_0_1pct_fpr",
    "detection_at_1pct_fpr", "detected_at_threshold", "alerts_per_day", "detected", "instances", "setup",
}  # fmt: skip


def test_default_model_loads_and_matches_the_features() -> None:
    with mock.patch.dict("os.environ", {"SENTINEL_MODEL": ""}):
        assert find_default_model() == DEFAULT
    model = load_model(DEFAULT)  # verifies checksums, arrays and structure, without pickle
    assert model.manifest["features"] == list(FEATURES)
    assert {g.name for g in model.groups} == {"exec", "open", "connect"}
    assert all(0.0 < g.threshold < 1.0 for g in model.groups)
    assert model.profiles is not None
    for name in ("forest.npz", "profiles.json"):
        assert (DEFAULT / name).stat().st_size < 2_000_000  # the repository stays small


def test_default_model_evaluation_is_recorded() -> None:
    report = json.loads((DEFAULT / "evaluation.json").read_text())
    assert set(report) >= EVAL_KEYS
    assert report["attack_instances"] >= 6 and len(report["instances"]) == report["attack_instances"]
    assert set(report["detected"]) == {i["scenario"] for i in report["instances"]}
    assert 0.0 <= report["auc"] <= 1.0
    assert report["setup"]["command"] == "bash scripts/train-default-model.sh"


def test_model_card_reports_the_evaluation() -> None:
    card = (REPO / "models" / "README.md").read_text()
    report = json.loads((DEFAULT / "evaluation.json").read_text())
    assert "scripts/train-default-model.sh" in card
    assert f"{report['auc']:.3f}" in card
    for scenario in report["detected"]:
        assert scenario in card


def test_attack_scenarios_are_listed() -> None:
    out = subprocess.run(
        [sys.executable, str(LAB / "attacks.py"), "--list"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert len(names) >= 6 and {"web_shell", "reverse_shell", "dropper", "memfd_exec"} <= set(names)
    bad = subprocess.run(
        [sys.executable, str(LAB / "attacks.py"), "run", "nope"], capture_output=True, timeout=30
    )
    assert bad.returncode == 2 and b"unknown scenario" in bad.stderr


def test_benign_workload_has_help() -> None:
    out = subprocess.run(
        [sys.executable, str(LAB / "benign_workload.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0
    assert "--duration" in out.stdout and "--seed" in out.stdout and "--rate" in out.stdout
    bad = subprocess.run(
        [sys.executable, str(LAB / "benign_workload.py"), "--duration", "0"], capture_output=True, timeout=30
    )
    assert bad.returncode == 2


def test_novelty_scenarios_and_the_quality_benchmark_have_help() -> None:
    """The live quality benchmark's scenarios: at least two of each kind the issue names."""
    out = subprocess.run(
        [sys.executable, str(LAB / "novelty.py"), "--list"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0
    kinds = [line.split()[1] for line in out.stdout.splitlines()]
    for kind in ("service_new_program", "service_new_read", "service_new_write", "service_new_destination",
                 "job_new_behaviour", "db_child_process"):  # fmt: skip
        assert kinds.count(kind) >= 2, kind
    bench = REPO / "benchmarks" / "bench_model_quality.py"
    out = subprocess.run([sys.executable, str(bench), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--learn" in out.stdout and "--normal" in out.stdout
