"""Rules that read the anomaly model: ``ml.*`` fields, float comparisons, lazy evaluation, missing values."""

from __future__ import annotations

from typing import Any

import pytest

from sentinel.rules import EvalContext, load_text
from sentinel.rules.fields import FIELDS, FLOAT
from tests.unit.rules_support import connect_ctx, exec_ctx, holds, open_ctx, rule_yaml, ruleset, web_shell


class View:
    """Stands in for the agent's MlView: fixed values, and a count of what was asked."""

    def __init__(self, **values: Any) -> None:
        self.values = {k.replace("__", "."): v for k, v in values.items()}
        self.asked: list[str] = []

    def value(self, name: str) -> Any:
        self.asked.append(name)
        return self.values.get(name)


def with_ml(ctx: EvalContext, view: View | None) -> EvalContext:
    ctx.ml = view
    return ctx


def test_ml_fields_are_registered_with_types_and_event_types() -> None:
    assert FIELDS["ml.score"].type == FLOAT
    assert FIELDS["ml.seen.parent_exe"].type == "int"
    assert FIELDS["ml.anomalous"].type == "bool"
    assert [t.name for t in FIELDS["ml.rarity.exe_port"].on] == ["CONNECT"]
    assert [t.name for t in FIELDS["ml.rarity.exe_dir"].on] == ["OPEN"]


def test_float_comparisons() -> None:
    ctx = with_ml(exec_ctx(web_shell()), View(score=0.82, threshold=0.6, anomalous=True))
    assert holds("ml.score > 0.8", ctx)
    assert not holds("ml.score > 0.9", ctx)
    assert holds("ml.score >= 0.82 and ml.score <= 1", ctx)
    assert holds("ml.score > val(ml.threshold)", ctx)
    assert holds("ml.anomalous = true", ctx)
    assert holds("ml.score in (0.82, 0.5)", ctx)
    assert holds("ml.score exists", ctx)


def test_missing_values_behave_like_other_missing_fields() -> None:
    ctx = with_ml(exec_ctx(web_shell()), None)  # no model: every ml field is missing
    assert not holds("ml.score > 0", ctx)
    assert holds("not ml.score > 0", ctx)
    assert not holds("ml.score exists", ctx)
    learning = with_ml(exec_ctx(web_shell()), View(**{"rarity__exe": 7.5}))  # learning: rarities only
    assert holds("ml.rarity.exe > 7", learning)
    assert not holds("ml.score exists", learning)


def test_fields_limited_to_their_event_types() -> None:
    view = View(new_dest=True, **{"rarity__exe_port": 6.0, "rarity__exe_dir": 5.0})
    assert holds("ml.new_dest = true", with_ml(connect_ctx(), view))
    assert holds("ml.rarity.exe_port > 5", with_ml(connect_ctx(), view))
    assert not holds("ml.new_dest = true", with_ml(open_ctx("/etc/passwd"), view))
    assert holds("ml.rarity.exe_dir > 4", with_ml(open_ctx("/etc/passwd"), view))
    assert not holds("ml.rarity.exe_dir > 4", with_ml(exec_ctx(web_shell()), view))


def test_the_score_is_read_only_when_the_check_is_reached() -> None:
    rs = ruleset(rule_yaml("evt.type = execve and proc.name = nosuchname and ml.score > 0.5"))
    view = View(score=0.9)
    assert rs.match(with_ml(exec_ctx(web_shell()), view)) == []
    assert view.asked == []  # the cheap check failed first: the model was never asked


def test_bad_values_are_located_errors() -> None:
    res = load_text(rule_yaml("ml.score > high"), "r.yaml")
    assert res.ruleset is None
    bad = [d for d in res.diagnostics if d.severity == "error"]
    assert bad and bad[0].code == "bad-value" and bad[0].line > 0 and "not a number" in bad[0].message
    res = load_text(rule_yaml("ml.score > nan"), "r.yaml")
    assert res.ruleset is None


@pytest.mark.parametrize(("value", "text"), [(0.73126, "0.7313"), (12.0, "12"), (None, "<NA>")])
def test_output_renders_floats_briefly(value: float | None, text: str) -> None:
    rs = ruleset(rule_yaml("evt.type = execve", output="score=%ml.score"))
    ctx = with_ml(exec_ctx(web_shell()), View(score=value))
    rule = rs.match(ctx)[0]
    out, fields = rs.output(rule, ctx)
    assert out == f"score={text}"
    assert fields["ml.score"] == value


def test_fixture_documents_can_carry_ml_values() -> None:
    from sentinel.rules.fixtures import FixtureError, StaticMlView, from_ecs

    doc = {
        "event": {"action": "exec"},
        "process": {"pid": 10, "executable": "/bin/sh", "name": "sh", "args": ["sh"]},
        "sentinel": {
            "ml": {"score": 0.9, "threshold": 0.6, "rarity": {"exe": 7.1}, "seen": {"parent_exe": 0}}
        },
    }
    ctx = from_ecs(doc)
    assert ctx.ml is not None
    assert ctx.ml.value("score") == 0.9 and ctx.ml.value("rarity.exe") == 7.1
    assert ctx.ml.value("seen.parent_exe") == 0 and ctx.ml.value("new_dest") is None
    assert holds("ml.score > val(ml.threshold) and ml.seen.parent_exe = 0", ctx)
    with pytest.raises(FixtureError):
        StaticMlView.from_doc({"score": "high"})
