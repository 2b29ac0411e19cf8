"""Sigma correlation documents: parsed and resolved across the files of a load, refused alone with a located
reason, then evaluated by the detection stream on real rules (alerts in ECS and Falco formats, the
``generate`` flag, replay determinism) and left out of single-event fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from sentinel.detect import DetectionStream
from sentinel.events import EventType
from sentinel.rules import load_rules, load_text
from sentinel.rules.fixtures import run_fixtures
from sentinel.rules.loader import LoadResult
from tests.unit.detect_fixtures import HOST, ListSink, S, ev, make_table
from tests.unit.sigma_support import sigma_yaml

WHOAMI = sigma_yaml("sel:\n  Image|endswith: /whoami\ncondition: sel", title="Whoami", extra="name: whoami\n")
ID_RULE = sigma_yaml(
    "sel:\n  Image|endswith: /id\ncondition: sel", title="Id", extra="name: id_run\n",
    sid="5d7e0c52-3a8b-4d38-bb0e-5f1a4c9d2e77",
)  # fmt: skip


def correlation(body: str, title: str = "Burst", extra: str = "") -> str:
    return (
        f"title: {title}\nid: 9c4e2a10-7d1b-4f3e-8a55-0e6b2d4c1f99\nauthor: C. Orrelator\nlevel: high\n"
        f"tags: [attack.discovery, attack.t1033]\n{extra}correlation:\n{body}"
    )


COUNT = correlation("  type: event_count\n  rules: [whoami]\n  group-by: [User]\n  timespan: 30s\n"
                    "  condition: {gte: 3}\n")  # fmt: skip


def load(*docs: str) -> LoadResult:
    return load_text("---\n".join(docs), "c.yml")


def refusal(got: LoadResult, name: str = "Burst", also: tuple[str, ...] = ()) -> Any:
    refused = [r.name for r in got.ruleset.refused] if got.ruleset is not None else None
    assert refused == [*also, name], got.diagnostics
    return next(d for d in got.diagnostics if d.refuses == name)


# ------------------------------------------------------------------------------------------ parsing


def test_a_correlation_before_its_base_rule_in_another_file_resolves(tmp_path: Path) -> None:
    (tmp_path / "a_corr.yml").write_text(COUNT)
    (tmp_path / "b_base.yml").write_text(WHOAMI)
    got = load_rules([tmp_path])
    assert got.ruleset is not None and not got.ruleset.refused, got.diagnostics
    burst = got.ruleset.get("Burst")
    assert burst is not None and burst.priority == "error" and "attack.t1033" in burst.tags
    spec = burst.correlation
    assert [b.name for b in spec.bases] == ["Whoami"] and spec.timespan_s == 30
    assert (spec.op, spec.count, spec.generate) == ("gte", 3, False)
    assert burst.meta["author"] == "C. Orrelator" and burst.meta["license"] == "DRL-1.1"


def test_a_reference_by_id_and_aliases_map_fields_per_rule() -> None:
    body = (
        "  type: temporal\n  rules: [whoami, 5d7e0c52-3a8b-4d38-bb0e-5f1a4c9d2e77]\n  group-by: [who]\n"
        "  timespan: 1m\n  aliases:\n    who:\n      whoami: User\n      id_run: ParentImage\n"
    )
    got = load(WHOAMI, ID_RULE, correlation(body))
    spec = got.ruleset.get("Burst").correlation  # type: ignore[union-attr]
    assert spec.group_fields == (("user.name",), ("proc.pexepath",)) and spec.op == "all"


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        (
            "  type: event_count\n  rules: [whoami, nosuch]\n  timespan: 1m\n  condition: {gte: 2}\n",
            23,
            "unknown rule 'nosuch'",
        ),
        (
            "  type: event_count\n  rules: [whoami]\n  group-by: [LogonId]\n  timespan: 1m\n"
            "  condition: {gte: 2}\n",
            24,
            "login session id",
        ),
        (
            "  type: value_count\n  rules: [whoami]\n  timespan: 1m\n  condition: {gte: 2, field: Nope}\n",
            25,
            "'Nope'",
        ),
        (
            "  type: value_sum\n  rules: [whoami]\n  timespan: 1m\n  condition: {gte: 2, field: ProcessId}\n",
            22,
            "value_sum",
        ),
        ("  type: event_count\n  rules: [whoami]\n  timespan: 1m\n  condition: {gte: 20000}\n", 25, "20000"),
        (
            "  type: temporal_ordered\n  rules: [whoami]\n  timespan: 1m\n  condition: {gte: 3}\n",
            25,
            "in order",
        ),
        ("  type: event_count\n  rules: [whoami]\n  timespan: 1x\n  condition: {gte: 2}\n", 24, "Timespan"),
    ],
)
def test_a_correlation_that_cannot_be_evaluated_is_refused_alone_and_located(
    body: str, line: int, words: str
) -> None:
    got = load(WHOAMI, correlation(body))
    first = refusal(got)
    assert first.line == line and words in first.message, (first.line, first.message)
    assert got.ruleset.get("Whoami").skipped is None  # type: ignore[union-attr]
    assert any(d.code == "rule-refused" and d.item == "Burst" for d in got.diagnostics)


def test_a_refused_base_rule_or_a_correlation_of_correlations_refuses_the_correlation() -> None:
    bad = sigma_yaml("sel:\n  LogonId: 1\ncondition: sel", title="Bad", extra="name: bad\n")
    got = load(
        bad, correlation("  type: event_count\n  rules: [bad]\n  timespan: 1m\n  condition: {gte: 2}\n")
    )
    assert "is not evaluated: refused" in refusal(got, also=("Bad",)).message
    inner = COUNT.replace("title: Burst", "title: Inner\nname: inner").replace("9c4e", "1c4e")
    outer = correlation("  type: event_count\n  rules: [inner]\n  timespan: 1m\n  condition: {gte: 2}\n")
    got = load(WHOAMI, inner, outer)
    assert "correlations of correlations" in refusal(got).message


# ------------------------------------------------------------------------------------------ detection


def run_execs(docs: list[str], users: list[str], fmt: str = "ecs") -> tuple[list[dict[str, Any]], Any]:
    got = load(*docs)
    assert got.ruleset is not None and not got.ruleset.refused, got.diagnostics
    sink = ListSink()
    stream = DetectionStream(make_table(), got.ruleset, HOST, sink, fmt=fmt)
    for i, user in enumerate(users):
        pid = 200 + i
        stream.handle(ev(EventType.FORK, (10 + i) * S, 100, comm="nginx", child_pid=pid))
        stream.handle(ev(EventType.EXEC, (10 + i) * S + 1, pid, uid=0 if user == "root" else 1000,
                         filename="/usr/bin/whoami", argv=["whoami"]))  # fmt: skip
    stream.close()
    return sink.docs(), stream


def test_an_event_count_fires_once_per_burst_and_its_base_rule_stays_quiet() -> None:
    docs, stream = run_execs([WHOAMI, COUNT], ["root"] * 4)
    assert [d["rule"]["name"] for d in docs] == ["Burst"]
    doc = docs[0]
    assert doc["message"].startswith("Sigma correlation: Burst | 3 matches of Whoami (>= 3) in 2s of a 30s")
    assert "user.name=root" in doc["message"] and "pids=200,201,202" in doc["message"]
    assert doc["message"].endswith("[Sigma rule by C. Orrelator]")
    corr = doc["sentinel"]["correlation"]
    assert (
        corr["count"] == 3 and corr["group_by"] == {"user.name": "root"} and corr["pids"] == [200, 201, 202]
    )
    assert doc["rule"]["uuid"] == "9c4e2a10-7d1b-4f3e-8a55-0e6b2d4c1f99" and doc["event"]["severity"] == 73
    assert doc["threat"]["technique"]["id"] == ["T1033"] and doc["process"]["pid"] == 202
    assert stream.stats()["matches_by_rule"] == {"Whoami": 4, "Burst": 1}


def test_generate_true_keeps_the_base_rules_alerts() -> None:
    docs, _ = run_execs([WHOAMI, COUNT.replace("correlation:\n", "correlation:\n  generate: true\n")],
                        ["root"] * 3)  # fmt: skip
    names = [d["rule"]["name"] for d in docs]
    assert names.count("Burst") == 1 and "Whoami" in names


def test_falco_format_carries_the_counts() -> None:
    docs, _ = run_execs([WHOAMI, COUNT], ["root"] * 3, fmt="falco")
    (doc,) = docs
    assert doc["rule"] == "Burst" and doc["priority"] == "Error"
    fields = doc["output_fields"]
    assert fields["correlation.count"] == 3 and fields["user.name"] == "root"
    assert fields["correlation.rules"] == ["Whoami"]


def test_a_replay_of_the_same_events_gives_the_same_alerts() -> None:
    def strip(doc: dict[str, Any]) -> bytes:
        doc["event"].pop("id", None)
        doc["event"].pop("created", None)
        doc["event"].pop("ingested", None)
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    users = ["root", "u", "root", "u", "root", "u", "root"]
    first, _ = run_execs([WHOAMI, COUNT], users)
    again, _ = run_execs([WHOAMI, COUNT], users)
    assert [strip(d) for d in first] == [strip(d) for d in again] and len(first) == 2


def test_fixtures_test_base_rules_and_refuse_to_expect_a_correlation(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(WHOAMI + "---\n" + COUNT)
    event = {"event": {"action": "exec"}, "process": {"pid": 5, "executable": "/usr/bin/whoami",
             "name": "whoami", "args": ["whoami"]}}  # fmt: skip
    fixtures = [
        {"name": "base fires", "event": event, "expect": ["Whoami"]},
        {"name": "no correlation from one event", "event": event, "expect": ["Whoami", "Burst"]},
    ]
    (tmp_path / "r.fixtures.yaml").write_text(orjson.dumps(fixtures).decode())
    report = run_fixtures([tmp_path / "r.yml"])
    assert [r.ok for r in report.results] == [True, False]
    assert "Burst" not in report.coverage
    problem = next(d for d in report.diagnostics if d.code == "unknown-rule")
    assert "single-event fixture" in problem.message
