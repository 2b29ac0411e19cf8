"""`sentinel test-alert`: the action runs and leaves nothing behind; the rule it names fires on such an
exec (the rule's fixture covers the match; tests/integration/test_unit_privileges.py sees the real alert)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from sentinel import cli
from sentinel.trigger import RULE, describe, fire


def test_fire_runs_the_copy_and_deletes_it(tmp_path: Path) -> None:
    result = fire(shm=str(tmp_path))
    assert not result.problem, result.problem
    assert result.pid > 0 and result.executable.startswith(f"{tmp_path}/sentinel-test-alert-")
    assert list(tmp_path.iterdir()) == []
    assert RULE in describe(result)


def test_problems_are_reported_not_raised(tmp_path: Path) -> None:
    assert "does not exist" in fire(shm=str(tmp_path / "none")).problem
    noexec = tmp_path / "script"
    noexec.write_text("not an executable\n")  # exec fails: not a binary, not a script
    os.chmod(noexec, stat.S_IRUSR)
    result = fire(shm=str(tmp_path), source=str(noexec))
    assert result.problem.startswith("cannot run")
    assert list(tmp_path.iterdir()) == [noexec]  # the copy is gone


def test_cli_test_alert(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["test-alert", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rule"] == RULE and doc["problem"] == ""
    assert not os.path.exists(doc["executable"])


def test_the_rule_named_is_a_shipped_rule() -> None:
    text = (Path(__file__).resolve().parents[2] / "rules" / "execution.yaml").read_text()
    assert f"- rule: {RULE}\n" in text
