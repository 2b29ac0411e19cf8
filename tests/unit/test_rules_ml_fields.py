"""Rules that read the anomaly model: ``ml.*`` fields, float comparisons, lazy evaluation, missing values,
output rendering, fixtures that carry model values, and the warning for a costly check written first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sentinel.anomaly.live import AnomalyEngine, AnomalySettings, MlView
from sentinel.events import AF_INET6, AF_UNIX, EventType
from sentinel.rules import EvalContext, load_text
from sentinel.rules.fields import FIELDS, FIELDS_LIST, FLOAT, INT, INT_OPS, OPS_BY_TYPE, reference
from sentinel.rules.fixtures import FixtureError, StaticMlView, from_ecs, run_fixtures
from sentinel.rules.runtime import namespace
from tests.unit.rules_support import (
    connect_ctx,
    errors,
    event,
    exec_ctx,
    holds,
    open_ctx,
    refused,
    rule_yaml,
    ruleset,
    web_shell,
)

CONDITION_COL = len("  condition: '") + 1  # column of a rule_yaml condition's first character
ML_NAMES = [f.name for f in FIELDS_LIST if f.name.startswith("ml.")]
# What ml.novelty.K and ml.seen.K measure, in registry order, and the one event type that has it.
KINDS = {
    "exe": EventType.EXEC, "child": EventType.EXEC, "user": EventType.EXEC,
    "read_dir": EventType.OPEN, "write_dir": EventType.OPEN,
    "port": EventType.CONNECT, "dest": EventType.CONNECT, "host_dest": EventType.CONNECT,
}  # fmt: skip


class View:
    """Stands in for the agent's MlView: fixed values, and a record of what was asked."""

    def __init__(self, **values: Any) -> None:
        self.values = {k.replace("__", "."): v for k, v in values.items()}
        self.asked: list[str] = []

    def value(self, name: str) -> float | int | bool | None:
        self.asked.append(name)
        return self.values.get(name)


def with_ml(ctx: EvalContext, view: View | None) -> EvalContext:
    ctx.ml = view
    return ctx


def diags(condition: str, **kw: Any) -> list[Any]:
    return load_text(rule_yaml(condition, **kw), "r.yaml").diagnostics


# --------------------------------------------------------------------------------------------- registry


def test_ml_fields_are_registered_with_types_and_event_types() -> None:
    novelty, seen = [f"ml.novelty.{k}" for k in KINDS], [f"ml.seen.{k}" for k in KINDS]
    registered = ML_NAMES
    assert registered == ["ml.score", "ml.threshold", "ml.anomalous", *novelty, *seen, "ml.new_dest"]
    types = {name: FIELDS[name].type for name in ML_NAMES}
    assert {n for n, t in types.items() if t == FLOAT} == {
        "ml.score", "ml.threshold", *(n for n in ML_NAMES if n.startswith("ml.novelty."))
    }  # fmt: skip
    assert {n for n, t in types.items() if t == INT} == {n for n in ML_NAMES if n.startswith("ml.seen.")}
    assert types["ml.anomalous"] == types["ml.new_dest"] == "bool"
    main = {EventType.EXEC, EventType.OPEN, EventType.CONNECT}
    want = {"score": main, "threshold": main, "anomalous": main, "new_dest": {EventType.CONNECT}} | {
        k: {etype} for k, etype in KINDS.items()
    }  # novelty.K and seen.K: only the event type that has K (exe/child/user: execs alone now)
    for name in ML_NAMES:
        f = FIELDS[name]
        assert set(f.on) == want[name.rsplit(".", 1)[-1]], name
        assert f.nullable and f.cached, name  # missing without a model; read once per event
    assert OPS_BY_TYPE[FLOAT] == INT_OPS
    assert [n for n in ML_NAMES if FIELDS[n].on_demand] == ["ml.score", "ml.anomalous"]


def test_the_helper_passes_the_name_without_prefix() -> None:
    ml = namespace()["_ml"]
    view = View(score=0.5, seen__child=2, novelty__child=3.5)
    ctx = with_ml(exec_ctx(), view)
    assert ml(ctx, "score") == 0.5 and ml(ctx, "seen.child") == 2 and ml(ctx, "new_dest") is None
    assert ml(ctx, "novelty.child") == 3.5
    assert view.asked == ["score", "seen.child", "new_dest", "novelty.child"]
    assert ml(with_ml(exec_ctx(), None), "score") is None


def test_the_reference_documents_floats_and_the_ml_group() -> None:
    md = reference(markdown=True)
    assert "`float`" in md and "| `ml.score` | float | exec, open, connect |" in md
    group = md.split("## ml\n\n", 1)[1]
    assert group.startswith("The anomaly model's view of the event.")  # the group note comes first
    assert "| `ml.new_dest` | bool | connect |" in group
    assert "| `ml.novelty.child` | float | exec |" in group and "| `ml.seen.port` | int | connect |" in group
    assert "| `ml.novelty.read_dir` | float | open |" in group and "ml.rarity" not in md
    assert "ml:\n  The anomaly model's view" in reference()


# --------------------------------------------------------------------------------------------- conditions


def test_float_comparisons() -> None:
    ctx = with_ml(exec_ctx(web_shell()), View(score=0.82, threshold=0.6, anomalous=True))
    assert holds("ml.score > 0.8", ctx)
    assert not holds("ml.score > 0.9", ctx)
    assert holds("ml.score >= 0.82 and ml.score <= 1", ctx)
    assert holds("ml.score < 1 and ml.score != 0.5 and ml.score = 0.82 and ml.score == .82", ctx)
    assert holds("ml.score > 8e-1", ctx)
    assert holds("ml.score > val(ml.threshold)", ctx)
    assert not holds("ml.threshold >= val(ml.score)", ctx)
    assert holds("ml.anomalous = true", ctx)
    assert holds("ml.score in (0.82, 0.5)", ctx)
    assert holds("ml.score intersects (0.82)", ctx)
    assert not holds("ml.score in (0.8, 0.5)", ctx)
    assert holds("ml.score exists", ctx)


def test_integer_literals_and_integer_values_compare_as_numbers() -> None:
    one = with_ml(exec_ctx(), View(score=1.0, threshold=1, novelty__exe=3))  # a view may answer an int
    assert holds("ml.score >= 1", one)
    assert holds("ml.score = 1", one)
    assert holds("ml.score in (1, 2)", one)
    assert holds("ml.threshold = 1.0", one)
    assert holds("ml.novelty.exe > 2", one)
    assert holds("ml.score = val(ml.threshold)", one)


def test_lists_of_floats() -> None:
    prelude = "- list: high_scores\n  items: [0.9, 0.95, 1]\n"
    assert holds("ml.score in (high_scores)", with_ml(exec_ctx(), View(score=0.95)), prelude)
    assert not holds("ml.score in (high_scores)", with_ml(exec_ctx(), View(score=0.5)), prelude)


def test_ints_and_floats_compare_across_fields() -> None:
    ctx = with_ml(exec_ctx(), View(novelty__exe=7.5, seen__exe=3, novelty__child=3.0))
    assert holds("ml.novelty.exe > val(ml.seen.exe)", ctx)
    assert holds("ml.seen.exe < val(ml.novelty.exe)", ctx)
    assert not holds("ml.seen.exe = val(ml.novelty.exe)", ctx)
    assert holds("ml.seen.exe = val(ml.novelty.child)", ctx)  # 3 = 3.0


def test_missing_values_behave_like_other_missing_fields() -> None:
    ctx = with_ml(exec_ctx(web_shell()), None)  # no model: every ml field is missing
    for name in ML_NAMES:
        op = "= true" if FIELDS[name].type == "bool" else "> 0"
        assert not holds(f"{name} {op}", ctx), name
        assert holds(f"not {name} {op}", ctx), name
        assert not holds(f"{name} exists", ctx), name
    assert not holds("ml.score < 2 or ml.seen.exe = 0", ctx)
    assert not holds("ml.score > val(ml.threshold)", with_ml(exec_ctx(), View(score=0.9)))  # one side missing
    learning = with_ml(exec_ctx(web_shell()), View(novelty__exe=7.5, seen__exe=0))  # learning: no score
    assert holds("ml.novelty.exe > 7 and ml.seen.exe = 0", learning)
    assert not holds("ml.score exists", learning)
    assert holds("not ml.anomalous = true", learning)


def test_fields_limited_to_their_event_types() -> None:
    # A view answering every name: what a rule sees still depends on the event type.
    view = View(new_dest=True, **{f"novelty__{k}": 6.0 for k in KINDS}, **{f"seen__{k}": 2 for k in KINDS})
    assert holds("ml.new_dest = true", with_ml(connect_ctx(), view))
    assert holds("ml.novelty.port > 5 and ml.seen.port = 2", with_ml(connect_ctx(), view))
    assert holds("ml.novelty.dest > 5 and ml.seen.host_dest = 2", with_ml(connect_ctx(), view))
    assert not holds("ml.new_dest = true", with_ml(open_ctx("/etc/passwd"), view))
    assert not holds("ml.new_dest = true", with_ml(exec_ctx(), view))
    assert holds("not ml.new_dest = true", with_ml(exec_ctx(), view))
    assert holds("ml.novelty.read_dir > 4 and ml.seen.write_dir = 2", with_ml(open_ctx("/etc/passwd"), view))
    assert not holds("ml.novelty.read_dir > 4", with_ml(exec_ctx(web_shell()), view))
    assert not holds("ml.novelty.port > 5", with_ml(open_ctx("/etc/passwd"), view))
    assert holds("ml.novelty.child > 5 and ml.seen.user = 2", with_ml(exec_ctx(), view))
    for other in (open_ctx("/etc/passwd"), connect_ctx()):  # exe/child/user: execs only (were every type)
        for name in ("ml.novelty.exe", "ml.novelty.child", "ml.novelty.user"):
            assert not holds(f"{name} > 0", with_ml(other, view)), name
            assert not holds(f"{name.replace('novelty', 'seen')} exists", with_ml(other, view)), name
    by_type = {EventType.EXEC: exec_ctx(), EventType.OPEN: open_ctx("/x"), EventType.CONNECT: connect_ctx()}
    for etype, ctx in by_type.items():
        for k, has in KINDS.items():
            for name in (f"ml.novelty.{k}", f"ml.seen.{k}"):
                assert holds(f"{name} exists", with_ml(ctx, view)) == (has == etype), (etype, name)
    fork = EvalContext(event(EventType.FORK, web_shell(), child_pid=9), web_shell(), None, 0, View(score=1.0))
    assert not holds("ml.score > 0", fork)


def test_new_dest_missing_where_the_agent_has_no_range() -> None:
    # The agent answers None for unix sockets (no host-wide range); the rule treats it as any missing field.
    for ctx in (connect_ctx("2001:db8::1", family=AF_INET6), connect_ctx("/run/x.sock", family=AF_UNIX)):
        assert not holds("ml.new_dest = true", with_ml(ctx, View()))
        assert not holds("ml.new_dest = false", with_ml(ctx, View()))


def learning_engine() -> AnomalyEngine:
    """A real engine learning the host (no model): rows are computed and counted, nothing is scored."""
    engine = AnomalyEngine(AnomalySettings(state_dir=""))
    engine.start_learning(None, None)
    return engine


def observed(engine: AnomalyEngine, ctx: EvalContext) -> EvalContext:
    engine.observe(ctx)
    assert isinstance(ctx.ml, MlView)
    return ctx


def test_the_agent_view_answers_novelty_and_seen_per_event_type() -> None:
    engine = learning_engine()
    first = observed(engine, exec_ctx())
    for k in ("exe", "child", "user"):  # a new program, child of its parent and user: unexpected, never seen
        assert first.ml.value(f"novelty.{k}") > 0 and first.ml.value(f"seen.{k}") == 0, k  # type: ignore
    assert holds("ml.novelty.child > 0 and ml.seen.child = 0 and not ml.score exists", first)
    again = observed(engine, exec_ctx())
    assert {k: again.ml.value(f"novelty.{k}") for k in ("exe", "child", "user")} == dict.fromkeys(
        ("exe", "child", "user"), 0.0
    )  # done before: 0
    assert again.ml.value("seen.child") == 1 and isinstance(again.ml.value("seen.child"), int)
    assert not holds("ml.novelty.child > 0", again) and holds("ml.seen.child = 1", again)
    for name in ("score", "threshold", "anomalous", "novelty.port", "seen.read_dir", "new_dest"):
        assert again.ml.value(name) is None, name  # learning: no score; the other types' fields

    read = observed(engine, open_ctx("/etc/passwd"))
    assert read.ml.value("novelty.read_dir") > 0 and read.ml.value("seen.read_dir") == 0  # type: ignore
    assert observed(engine, open_ctx("/etc/shadow")).ml.value("seen.read_dir") == 1  # same directory
    write = observed(engine, open_ctx("/etc/passwd", flags=1))  # O_WRONLY: a write, new to this program
    assert write.ml.value("novelty.write_dir") > 0 and write.ml.value("seen.write_dir") == 0  # type: ignore
    assert write.ml.value("seen.read_dir") is None and read.ml.value("seen.write_dir") is None
    for name in ("novelty.exe", "seen.child", "novelty.port"):
        assert read.ml.value(name) is None, name

    con = observed(engine, connect_ctx("203.0.113.7", 4444))
    assert con.ml.value("new_dest") is True and holds("ml.new_dest = true and ml.seen.port = 0", con)
    for k in ("port", "dest", "host_dest"):
        assert con.ml.value(f"novelty.{k}") > 0 and con.ml.value(f"seen.{k}") == 0, k  # type: ignore
    near = observed(engine, connect_ctx("203.0.113.99", 4444))  # the same /24 and port
    assert near.ml.value("new_dest") is False and near.ml.value("novelty.host_dest") == 0.0
    assert [near.ml.value(f"seen.{k}") for k in ("port", "dest", "host_dest")] == [1, 1, 1]
    assert con.ml.value("novelty.exe") is None and con.ml.value("seen.user") is None  # execs only

    v6 = observed(engine, connect_ctx("2001:db8::1", 443, family=AF_INET6))
    assert v6.ml.value("new_dest") is True  # IPv6 has a range now (/64)
    unix = observed(engine, connect_ctx("/run/x.sock", 0, family=AF_UNIX))
    assert unix.ml.value("new_dest") is None and unix.ml.value("novelty.host_dest") is None
    assert unix.ml.value("novelty.dest") > 0 and unix.ml.value("seen.dest") == 0  # type: ignore
    assert not holds("ml.new_dest = true", unix) and not holds("ml.new_dest = false", unix)


# --------------------------------------------------------------------------------------------- laziness


def test_the_score_is_read_only_when_the_check_is_reached() -> None:
    rs = ruleset(rule_yaml("evt.type = execve and proc.name = nosuchname and ml.score > 0.5"))
    view = View(score=0.9)
    assert rs.match(with_ml(exec_ctx(web_shell()), view)) == []
    assert view.asked == []  # the cheap check failed first: the model was never asked


@pytest.mark.parametrize("index_min", [1, 100])  # through the hash index, and checked in sequence
def test_lazy_with_many_rules(index_min: int) -> None:
    text = "".join(
        rule_yaml(f"evt.type = execve and proc.name = {name} and ml.score > 0.5", name=f"r{i}")
        for i, name in enumerate(["x", "bash", "y", "bash", "z"])
    ) + rule_yaml("evt.type = execve and proc.name = bash and ml.score > val(ml.threshold)", name="t")
    rs = ruleset(text, index_min=index_min)
    quiet = View(score=0.9, threshold=0.5)
    other = exec_ctx(web_shell())
    other.proc.comm = "vim"  # type: ignore[union-attr]
    assert rs.match(with_ml(other, quiet)) == []
    assert quiet.asked == []
    asked = View(score=0.9, threshold=0.5)
    hits = rs.match(with_ml(exec_ctx(web_shell()), asked))
    assert [r.name for r in hits] == ["r1", "r3", "t"]
    if index_min == 100:  # one matcher function: the score is read once for every rule that needs it
        assert asked.asked.count("score") == 1
    assert asked.asked.count("threshold") == 1


def test_no_value_is_read_for_events_no_ml_rule_looks_at() -> None:
    rs = ruleset(
        rule_yaml("evt.type = execve and proc.name = bash", name="plain")
        + rule_yaml("evt.type = connect and ml.new_dest = true", name="net")
    )
    view = View(new_dest=True)
    assert [r.name for r in rs.match(with_ml(exec_ctx(), view))] == ["plain"]
    assert view.asked == []


def test_an_ml_check_written_first_still_works_and_is_warned_about() -> None:
    cond = "ml.score > 0.5 and proc.name = bash and evt.type = execve"
    found = diags(cond)
    assert errors(found) == []
    warn = [d for d in found if d.code == "costly-check-first"]
    assert len(warn) == 1 and warn[0].severity == "warning"
    assert (warn[0].line, warn[0].column) == (3, CONDITION_COL) and "ml.score" in warn[0].message
    rs = ruleset(rule_yaml(cond))
    assert rs.match(with_ml(exec_ctx(), View(score=0.7)))
    assert not rs.match(with_ml(exec_ctx(), View(score=0.3)))
    assert not rs.match(with_ml(exec_ctx(), None))
    anomalous = diags("evt.type = execve and ml.anomalous = true and proc.name = bash")
    assert [d.column for d in anomalous if d.code == "costly-check-first"] == [CONDITION_COL + 22]


@pytest.mark.parametrize(
    "condition",
    [
        "evt.type = execve and proc.name = bash and ml.score > 0.5",
        "ml.score > 0.5 and evt.type = execve",  # evt.type picks the matcher: nothing to gain
        "evt.type = execve and ml.novelty.exe > 5 and proc.name = bash",  # features are computed anyway
        "evt.type = execve and (ml.score > 0.5 or proc.name = bash)",
        "evt.type = execve and ml.score > 0.5 and ml.score < val(ml.threshold)",
    ],
)
def test_no_order_warning(condition: str) -> None:
    assert [d for d in diags(condition) if d.code == "costly-check-first"] == []


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("condition", "offset", "code", "words"),
    [
        (
            "evt.type = execve and ml.score > high",
            33,
            "bad-value",
            "'high' is not a number; ml.score is float",
        ),
        ("evt.type = execve and ml.score > nan", 33, "bad-value", "not a finite number"),
        ("evt.type = execve and ml.score >= 1e999", 34, "bad-value", "not a finite number"),
        (
            "evt.type = execve and ml.seen.exe > 0.5",
            36,
            "bad-value",
            "'0.5' is not an integer; ml.seen.exe is int",
        ),
        ("evt.type = execve and ml.seen.exe in (1, 2.5)", 41, "bad-value", "'2.5' is not an integer"),
        ("evt.type = execve and ml.score in (scores)", 35, "bad-value", "no list named 'scores'"),
        ("evt.type = execve and ml.anomalous = 0.5", 37, "bad-value", "not a boolean"),
        (
            "evt.type = execve and ml.score contains 1",
            31,
            "bad-operator",
            "does not apply to ml.score (float)",
        ),
        (
            "evt.type = execve and ml.score > val(proc.name)",
            33,
            "bad-value",
            "cannot compare ml.score (float)",
        ),
        ("evt.type = execve and ml.scor > 1", 22, "unknown-field", "did you mean ml.score?"),
        (
            "evt.type = execve and ml.seen.child > 0.5",
            38,
            "bad-value",
            "'0.5' is not an integer; ml.seen.child is int",
        ),
        # The names before the novelty redesign are gone.
        ("evt.type = execve and ml.rarity.exe > 1", 22, "unknown-field", "did you mean ml.novelty.exe?"),
        ("evt.type = execve and ml.seen.parent_exe = 0", 22, "unknown-field", "did you mean ml.seen.exe?"),
    ],
)
def test_bad_conditions_are_located_errors(condition: str, offset: int, code: str, words: str) -> None:
    res = load_text(rule_yaml(condition), "r.yaml")
    assert refused(res) == ["r"]
    bad = errors(res.diagnostics)
    assert len(bad) == 1, bad
    d = bad[0]
    assert (d.code, d.file, d.line, d.column) == (code, "r.yaml", 3, CONDITION_COL + offset), d
    assert words in d.message and d.snippet is not None and "ml." in d.snippet


def test_exceptions_on_ml_fields() -> None:
    extra = """  exceptions:
    - name: known_rare
      fields: [proc.name, ml.novelty.exe]
      comps: [=, <]
      values:
        - [bash, 9.5]
"""
    rs = ruleset(rule_yaml("evt.type = execve and ml.novelty.exe > 5", extra=extra))
    assert not rs.match(with_ml(exec_ctx(), View(novelty__exe=7.0)))  # excepted: bash below 9.5
    assert rs.match(with_ml(exec_ctx(), View(novelty__exe=9.9)))
    bad = load_text(rule_yaml("evt.type = execve", extra=extra.replace("9.5", "rare")), "r.yaml")
    assert [d.code for d in errors(bad.diagnostics)] == ["bad-value"] and errors(bad.diagnostics)[
        0
    ].line == 11


# --------------------------------------------------------------------------------------------- output


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.73126, "0.7313"), (0.7312, "0.7312"), (7.123456, "7.123"), (12.0, "12"), (1, "1"), (None, "<NA>")],
)
def test_output_renders_floats_briefly(value: float | None, text: str) -> None:
    rs = ruleset(rule_yaml("evt.type = execve", output="score=%ml.score"))
    ctx = with_ml(exec_ctx(web_shell()), View(score=value))
    rule = rs.match(ctx)[0]
    out, fields = rs.output(rule, ctx)
    assert out == f"score={text}"
    assert fields["ml.score"] == value
    assert json.loads(json.dumps(fields))["ml.score"] == value  # a JSON number (or null), not text


def test_output_of_every_ml_type() -> None:
    out = (
        "s=%ml.score t=%ml.threshold a=%ml.anomalous nov=%ml.novelty.port seen=%ml.seen.port "
        "new=%ml.new_dest child=%ml.seen.child"
    )
    rs = ruleset(rule_yaml("evt.type = connect", output=out))
    view = View(score=0.912345, threshold=0.6, anomalous=True, novelty__port=3.0625, seen__port=0)
    view.values["seen.child"] = 4  # the view has it, but an exec-only field is missing on a connect
    ctx = with_ml(connect_ctx(), view)
    text, fields = rs.output(rs.match(ctx)[0], ctx)
    assert text == "s=0.9123 t=0.6 a=true nov=3.062 seen=0 new=<NA> child=<NA>"  # seen.child: execs only
    assert fields == {
        "ml.score": 0.912345, "ml.threshold": 0.6, "ml.anomalous": True, "ml.novelty.port": 3.0625,
        "ml.seen.port": 0, "ml.new_dest": None, "ml.seen.child": None,
    }  # fmt: skip
    assert rs.field_text("ml.score", ctx) == "0.9123" and rs.field_value("ml.score", ctx) == 0.912345


# --------------------------------------------------------------------------------------------- fixtures


def exec_doc(**ml: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event": {"action": "exec"},
        "process": {"pid": 10, "executable": "/bin/sh", "name": "sh", "args": ["sh"]},
    }
    if ml:
        doc["sentinel"] = {"ml": ml}
    return doc


def test_fixture_documents_can_carry_ml_values() -> None:
    ctx = from_ecs(exec_doc(score=0.9, threshold=0.6, novelty={"child": 7.1}, seen={"child": 0}))
    assert ctx.ml is not None
    assert ctx.ml.value("score") == 0.9 and ctx.ml.value("novelty.child") == 7.1
    assert ctx.ml.value("seen.child") == 0 and ctx.ml.value("new_dest") is None
    assert holds("ml.score > val(ml.threshold) and ml.seen.child = 0 and ml.novelty.child > 7", ctx)
    assert not holds("ml.new_dest exists or ml.novelty.user exists", ctx)
    assert from_ecs(exec_doc()).ml is None
    dotted = StaticMlView.from_doc({"novelty.exe": 2, "seen.exe": 3.0, "anomalous": False, "score": None})
    assert dotted.values == {"novelty.exe": 2, "seen.exe": 3, "anomalous": False, "score": None}
    assert isinstance(dotted.value("seen.exe"), int)


def test_a_pasted_ml_alert_loads_as_a_fixture() -> None:
    ml = {
        "score": 0.8123,
        "threshold": 0.61,
        "model": {"name": "default", "version": "1", "phase": "detection", "forest": "exec"},
        "explanation": [{"feature": "new_child", "value": 9.1, "contribution": 0.1, "text": "new child"}],
        "incident": {"id": "i-1", "root": {"pid": 1}, "first_ns": 1, "events": 2},
    }
    ctx = from_ecs(exec_doc(**ml))
    assert ctx.ml is not None and ctx.ml.value("score") == 0.8123 and ctx.ml.value("model") is None


def test_a_pasted_ml_alert_with_its_novelties_loads_as_a_fixture() -> None:
    new = {"what": "child", "subject": "/usr/sbin/nginx", "item": "/bin/sh", "baseline_events": 310}
    ml = {
        "score": 0.8123,
        "threshold": 0.61,
        "model": {"name": "host", "version": "1", "phase": "detection", "forest": "exec"},
        "new": [{**new, "baseline_distinct": 2, "text": "nginx started /bin/sh: ..."}],  # as live.py writes
        "baseline_s": 18000,
        "explanation": [{"feature": "new_child", "value": 9.1, "contribution": 0.1, "text": "new child"}],
        "incident": {"id": "i-1", "root": {"pid": 1}, "first_ns": 1, "events": 2},
    }
    ctx = from_ecs(exec_doc(**ml))
    assert ctx.ml is not None and ctx.ml.value("score") == 0.8123 and ctx.ml.value("new") is None


@pytest.mark.parametrize(
    ("ml", "words"),
    [
        ({"score": "high"}, "sentinel.ml.score must be a finite number"),
        ({"score": True}, "sentinel.ml.score must be a finite number"),
        ({"score": float("nan")}, "finite"),
        ({"seen": {"exe": 2.5}}, "sentinel.ml.seen.exe must be an integer"),
        ({"anomalous": 1}, "sentinel.ml.anomalous must be true or false"),
        ({"scor": 0.9}, "sentinel.ml.scor is not an ml field; did you mean score?"),
        ({"novelty": {"exe_name": 1.0}}, "sentinel.ml.novelty.exe_name is not an ml field"),
        ({"novelty": 3.0}, "sentinel.ml.novelty is not an ml field"),
        ({"seen": {"port": 1.5}}, "sentinel.ml.seen.port must be an integer"),
        ({"novelty": {"child": "new"}}, "sentinel.ml.novelty.child must be a finite number"),
        ({"rarity": {"exe": 7.0}}, "sentinel.ml.rarity is not an ml field"),  # the names before novelty
        ({"seen": {"parent_exe": 0}}, "sentinel.ml.seen.parent_exe is not an ml field"),
    ],
)
def test_bad_fixture_ml_values(ml: dict[str, Any], words: str) -> None:
    with pytest.raises(FixtureError) as info:
        from_ecs(exec_doc(**ml))
    assert words in str(info.value)


RULES = """
- rule: Rare Child Of A Web Server
  desc: d
  condition: >-
    evt.type = execve and proc.pname = nginx and ml.seen.child = 0
    and ml.score > val(ml.threshold)
  output: "child=%proc.exepath score=%ml.score"
  priority: warning
- rule: New Destination
  desc: d
  condition: evt.type = connect and ml.new_dest = true
  output: "%fd.name"
  priority: notice
"""
FIXTURES = """
- name: never-seen child, anomalous
  event:
    event: {action: exec}
    process: {name: sh, executable: /usr/bin/dash, parent: {pid: 100, name: nginx}}
    sentinel: {ml: {score: 0.91, threshold: 0.6, seen: {child: 0}}}
  expect: [Rare Child Of A Web Server]
- name: never-seen child, usual score
  event:
    event: {action: exec}
    process: {name: sh, parent: {pid: 100, name: nginx}}
    sentinel: {ml: {score: 0.42, threshold: 0.6, seen: {child: 0}}}
  expect: []
- name: no model values
  event:
    event: {action: exec}
    process: {name: sh, parent: {pid: 100, name: nginx}}
  expect: []
- name: new destination
  event:
    event: {action: connect}
    destination: {ip: 198.51.100.7, port: 443}
    sentinel: {ml: {new_dest: true, novelty: {port: 8.5}, seen: {port: 0}}}
  expect: [New Destination]
- name: known destination
  event:
    event: {action: connect}
    destination: {ip: 198.51.100.7, port: 443}
    sentinel: {ml: {new_dest: false}}
  expect: []
"""


def test_rules_test_runs_fixtures_with_ml_values(tmp_path: Path) -> None:
    d = tmp_path / "rules"
    d.mkdir()
    (d / "ml.yaml").write_text(RULES)
    (d / "ml.fixtures.yaml").write_text(FIXTURES)
    report = run_fixtures([d])
    assert report.ok, report.to_dict()
    cov = report.coverage
    assert (cov["Rare Child Of A Web Server"].positive, cov["Rare Child Of A Web Server"].negative) == (1, 2)
    assert (cov["New Destination"].positive, cov["New Destination"].negative) == (1, 1)
    (d / "ml.fixtures.yaml").write_text(FIXTURES.replace("{score: 0.91,", "{scor: 0.91,"))
    broken = run_fixtures([d])
    assert not broken.ok
    [failed] = broken.failed
    assert failed.fixture.name == "never-seen child, anomalous" and "did you mean score?" in (
        failed.error or ""
    )
