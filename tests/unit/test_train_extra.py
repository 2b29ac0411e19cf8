"""Without the ``train`` extra (scikit-learn absent) training says which extra to install, and ``--model
auto``, which must train this host's model, is refused at start instead of learning for nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from sentinel.anomaly import live, train
from sentinel.anomaly.features import FEATURES
from sentinel.anomaly.live import AnomalySettings, open_engine

from .test_anomaly_live import Log


def test_fit_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn raises ImportError
    x = np.zeros((10, len(FEATURES)))
    with pytest.raises(train.TrainExtraMissing, match=r"'train' extra .*sentinel\[train\]"):
        train.fit_groups(x, np.arange(10, dtype=np.int64), 5.0, 10, 0, 0.2)


def test_auto_is_refused_naming_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(live, "training_available", lambda: False)
    log = Log()
    engine, notices = open_engine(AnomalySettings(model="auto", state_dir=str(tmp_path)), log)
    assert engine is None
    assert len(notices) == 1 and "sentinel[train]" in notices[0].output


def test_auto_learns_when_training_is_available(tmp_path: Path) -> None:
    assert train.training_available()  # the test venv has the extra (scripts/setup.sh installs it)
    engine, notices = open_engine(AnomalySettings(model="auto", state_dir=str(tmp_path)), Log())
    assert engine is not None and notices == []
