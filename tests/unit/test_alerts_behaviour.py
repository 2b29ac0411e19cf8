"""Aggregation by behaviour with the real rule engine (issue 18): fresh shells running fresh binaries from
/tmp fold into one alert and one summary; ``aggregate_by`` keys a rule on its own fields (validated and
located); summaries render their key, a redacted sample and the rate limit in ECS and Falco alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sentinel.detect import DetectionStream
from sentinel.events import EventType
from sentinel.redact import Redactor
from sentinel.rules import load_rules
from tests.unit.detect_fixtures import (  # noqa: F401 - the autouse fixture
    HOST,
    ListSink,
    S,
    diagnostics_to_the_current_stderr,
    ev,
    make_table,
)

RULES = """\
- rule: Program Run From Tmp
  desc: a program in /tmp ran.
  condition: evt.type = execve and proc.exe startswith /tmp/
  output: "%proc.exe ran (cmdline=%proc.cmdline parent=%proc.pname)"
  priority: warning

- rule: Opened Anything Under Etc
  desc: by file, whatever opened it.
  condition: evt.type in (open, openat) and fd.name startswith /etc/
  output: "%proc.name opened %fd.name"
  priority: notice
  aggregate_by: [fd.name]
"""


def stream_for(tmp_path: Path, text: str = RULES, **kw: Any) -> tuple[DetectionStream, ListSink]:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    result = load_rules([path])
    assert result.ruleset is not None, [str(d.message) for d in result.diagnostics]
    sink = ListSink()
    return DetectionStream(make_table(), result.ruleset, HOST, sink, **kw), sink


def fresh_shell_runs(stream: DetectionStream, n: int, secret: str = "") -> None:
    """What a build loop does: each run a fresh shell (forked by pid 100) execs a fresh binary in /tmp."""
    for i in range(n):
        pid, t = 1000 + i, (i + 1) * S
        stream.handle(ev(EventType.FORK, t, 100, comm="bash", child_pid=pid))
        prog = f"/tmp/tmp.{i:03d}/a.out"
        stream.handle(
            ev(
                EventType.EXEC,
                t + 1000,
                pid,
                filename=prog,
                argv=[prog, f"--token={secret}" if secret else "-q"],
            )
        )


def test_a_build_loop_is_one_alert_then_one_summary(tmp_path: Path) -> None:
    stream, sink = stream_for(tmp_path, window_s=60.0, rate_per_min=20)
    fresh_shell_runs(stream, 30)
    stream.close()
    docs = [d for d in sink.docs() if d["rule"]["name"] == "Program Run From Tmp"]
    assert len(docs) == 2
    first, summary = docs
    assert "aggregation" not in first["sentinel"] and first["process"]["executable"] == "/tmp/tmp.000/a.out"
    agg = summary["sentinel"]["aggregation"]
    assert agg["count"] == 29
    assert agg["key"]["program"] == "/tmp/" and agg["key"]["container"] == "host"
    assert len(agg["distinct"]["process.executable"]) == 10 and agg["more"]["process.executable"] == 19
    assert summary["event"]["start"] == agg["first"] and summary["event"]["end"] == agg["last"]


def test_aggregation_by_lineage_is_gone_but_window_zero_still_writes_each(tmp_path: Path) -> None:
    stream, sink = stream_for(tmp_path, window_s=0.0)
    fresh_shell_runs(stream, 5)
    stream.close()
    assert len(sink.docs()) == 5


def test_aggregate_by_keys_a_rule_on_its_own_fields(tmp_path: Path) -> None:
    stream, sink = stream_for(tmp_path, window_s=60.0)
    for i, (comm, path) in enumerate([("cat", "/etc/hosts"), ("less", "/etc/hosts"), ("cat", "/etc/passwd")]):
        stream.handle(ev(EventType.OPEN, (i + 1) * S, 200 + i, comm=comm, path=path, ret=3))
    stream.close()
    docs = sink.docs()
    # /etc/hosts by two programs is one behaviour for this rule; /etc/passwd is another
    assert [(d["file"]["path"], "aggregation" in d["sentinel"]) for d in docs] == [
        ("/etc/hosts", False), ("/etc/passwd", False), ("/etc/hosts", True),
    ]  # fmt: skip
    assert docs[2]["sentinel"]["aggregation"]["key"] == {"fd.name": "/etc/hosts"}


@pytest.mark.parametrize(
    ("value", "words", "line", "column"),
    [
        ("[proc.nme]", "unknown field", 6, 18),
        ("[fd.name, fd.name]", "names 'fd.name' twice", 6, 27),
        ("fd.name", "must be a list", 6, 17),
    ],
)
def test_aggregate_by_errors_are_located(
    tmp_path: Path, value: str, words: str, line: int, column: int
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "- rule: R\n  desc: d\n  condition: evt.type = execve\n  output: x\n  priority: warning\n"
        f"  aggregate_by: {value}\n"
    )
    result = load_rules([path])
    (found,) = [d for d in result.diagnostics if words in d.message and d.code != "rule-refused"]
    assert (found.line, found.column) == (line, column)
    assert result.ruleset is None or not [r for r in result.ruleset.rules if r.name == "R" and not r.refused]


def test_summaries_render_in_falco_format_and_redact_the_sample(tmp_path: Path) -> None:
    stream, sink = stream_for(tmp_path, window_s=60.0, fmt="falco", redactor=Redactor([], True))
    fresh_shell_runs(stream, 3, secret="hunter2hunter2")
    stream.close()
    docs = sink.docs()
    assert len(docs) == 2
    fields = docs[1]["output_fields"]
    assert fields["sentinel.aggregation.count"] == 2
    assert fields["sentinel.aggregation.key.program"] == "/tmp/"
    lines = fields["sentinel.aggregation.distinct.process.command_line"]
    assert len(lines) == 2 and all("hunter2" not in line for line in lines), lines


def test_the_rate_limit_summary_is_marked(tmp_path: Path) -> None:
    stream, sink = stream_for(tmp_path, window_s=60.0, rate_per_min=2)
    for i in range(5):  # five files: five behaviours of one aggregate_by rule within a minute
        stream.handle(ev(EventType.OPEN, (i + 1) * S, 200, comm="cat", path=f"/etc/f{i}", ret=3))
    stream.close()
    docs = sink.docs()
    assert [d["file"]["path"] for d in docs[:2]] == ["/etc/f0", "/etc/f1"]
    (held,) = docs[2:]
    agg = held["sentinel"]["aggregation"]
    assert agg["rate_limited"] is True and agg["count"] == 3 and "key" not in agg


def test_aggregate_by_can_be_set_by_an_override(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "- rule: R\n  desc: d\n  condition: evt.type = execve\n  output: x\n  priority: warning\n"
        "- rule: R\n  aggregate_by: [proc.name]\n  override: {aggregate_by: replace}\n"
    )
    result = load_rules([path])
    assert result.ruleset is not None and not result.diagnostics
    assert [r.aggregate_by for r in result.ruleset.rules] == [("proc.name",)]
