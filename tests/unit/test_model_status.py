"""`sentinel model status`: phase, time learned and next training, read from the state the agent saves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentinel.anomaly.live import AnomalySettings, open_engine
from sentinel.cli import main
from tests.unit.test_anomaly_live import Log, benign_stream


def test_status_follows_the_agent_from_nothing_to_learning_to_detection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path)
    assert main(["model", "status", "--state-dir", state, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["phase"] == "not started"

    settings = AnomalySettings(state_dir=state, learn_period_s=600, min_events=50, save_interval_s=1e9)
    log = Log()
    engine, _ = open_engine(settings, log)
    assert engine is not None and engine.progress is not None
    benign_stream(engine, 60)
    engine.progress.learned_s = 300.0
    engine.save(log)
    assert main(["model", "status", "--state-dir", state]) == 0
    text = capsys.readouterr().out
    assert "phase            learning" in text
    assert "learned          5 min of agent running time (warm-up 60 min)" in text
    assert "next training    after 10 min learned (in 5 min)" in text

    engine.progress.learned_s = 600.0
    engine.tick(log)
    assert engine.job is not None and engine.job.done.wait(60)
    engine.tick(log)
    assert main(["model", "status", "--state-dir", state, "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["phase"] == "detection" and st["trainings"] == 1 and st["next_training_s"] >= 1200
    assert set(st["model"]["thresholds"]) <= {"exec", "open", "connect"} and st["model"]["rows"] == 120
    assert st["baseline"]["exe"] == 3 and not st["problems"]


def test_status_reports_an_unreadable_state_file_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "anomaly").mkdir()
    (tmp_path / "anomaly" / "learning.json").write_text("{broken")
    assert main(["model", "status", "--state-dir", str(tmp_path)]) == 1
    assert "learning.json" in capsys.readouterr().out
