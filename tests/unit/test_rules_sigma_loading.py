"""Sigma files in the loader: metadata, located problems, refusals, Falco and Sigma together, and the
SigmaHQ corpus (test data beside the repository in shared/sigma, never copied in)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sentinel.events import EventType
from sentinel.rules import load_rules
from sentinel.rules.sigma import frontend
from tests.unit.rules_support import exec_ctx, open_ctx, rule_yaml
from tests.unit.sigma_support import sigma_load, sigma_rules, sigma_yaml

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "sigma"
SENSOR = ("process_creation", "file_event", "network_connection")


def test_a_sigma_rule_becomes_a_rule_with_its_metadata() -> None:
    rs = sigma_rules("sel:\n  Image|endswith: '/bash'\ncondition: sel")
    rule = rs.rules[0]
    assert (rule.name, rule.priority, rule.desc, rule.line) == ("T", "error", "d", 1)
    assert rule.event_types == {EventType.EXEC}
    assert rule.meta == {
        "format": "sigma",
        "id": "0b2f4c1e-1f4e-4c59-9a53-2d8c5e0f6a11",
        "title": "T",
        "author": "A. Author",
        "references": [],
        "license": "DRL-1.1",
        "level": "high",
        "status": "test",
        "falsepositives": [],
        "logsource": {"category": "process_creation", "product": "linux"},
    }
    text, _ = rs.output(rule, exec_ctx())
    assert text.startswith("Sigma: T | user.name=www-data proc.name=bash proc.exepath=/usr/bin/bash")
    assert "cmdline=bash -c 'id; uname -a'" in text


@pytest.mark.parametrize(
    ("level", "priority"),
    [("informational", "informational"), ("low", "notice"), ("medium", "warning"), ("critical", "critical")],
)
def test_level_gives_the_priority(level: str, priority: str) -> None:
    text = sigma_yaml("sel:\n  Image: x\ncondition: sel").replace("level: high", f"level: {level}")
    got = load_rules_text(text)
    assert got.ruleset is not None and got.ruleset.rules[0].priority == priority


def load_rules_text(text: str):  # type: ignore[no-untyped-def]
    from sentinel.rules import load_text

    return load_text(text, "r.yml")


def test_file_event_means_writes_and_new_names() -> None:
    rs = sigma_rules("sel:\n  TargetFilename|startswith: '/etc/cron.d/'\ncondition: sel", "file_event")
    assert rs.match(open_ctx("/etc/cron.d/job", flags=0o1101))
    assert not rs.match(open_ctx("/etc/cron.d/job"))  # a read
    assert {EventType.OPEN, EventType.RENAME, EventType.LINKAT, EventType.SYMLINK} <= set(
        rs.rules[0].event_types or ()
    )
    reads = sigma_rules("sel:\n  TargetFilename: '/etc/shadow'\ncondition: sel", "file_access")
    assert reads.match(open_ctx("/etc/shadow")) and not reads.match(open_ctx("/etc/shadow", flags=1))


def test_an_unmapped_field_refuses_the_rule_at_its_key() -> None:
    got = sigma_load("sel:\n  Image: x\nother:\n  LogonId: 0\ncondition: sel or other")
    assert got.ruleset is not None and [r.name for r in got.ruleset.refused] == ["T"]
    cause = next(d for d in got.diagnostics if d.code == "sigma-unmapped-field")
    assert (cause.line, cause.column, cause.refuses) == (13, 5, "T")
    assert "LogonId" in cause.message and "login session" in cause.message
    assert cause.snippet.strip() == "LogonId: 0"
    refused = next(d for d in got.diagnostics if d.code == "rule-refused")
    assert refused.line == 1 and "LogonId" in refused.message


def test_pysigma_errors_are_located_at_the_key_they_name() -> None:
    got = sigma_load("sel:\n  Image|endswithx: '/sh'\ncondition: sel")
    cause = next(d for d in got.diagnostics if d.code == "sigma-error")
    assert (cause.line, cause.severity, cause.refuses) == (11, "warning", "T")
    assert "endswithx" in cause.message
    bad = sigma_load("sel:\n  CommandLine|re: 'a(?i)b'\ncondition: sel")
    cause = next(d for d in bad.diagnostics if d.refuses and d.code != "rule-refused")
    assert cause.line == 11 and "regular expression" in cause.message
    mismatch = sigma_load("sel:\n  Image: x\n  CommandLine|contains: 0\ncondition: sel")
    cause = next(d for d in mismatch.diagnostics if d.code == "sigma-error")
    assert cause.line == 12 and cause.snippet.strip() == "CommandLine|contains: 0"
    undefined = sigma_load("sel:\n  Image: x\ncondition: sel and nope")
    cause = next(d for d in undefined.diagnostics if d.refuses and d.code != "rule-refused")
    assert cause.line == 12 and cause.snippet.strip().startswith("condition")


def test_other_logsources_are_skipped_with_a_located_warning() -> None:
    text = sigma_yaml("keywords:\n  - 'Failed password'\ncondition: keywords").replace(
        "category: process_creation", "service: sshd"
    )
    got = load_rules_text(text)
    assert got.ruleset is not None and not got.errors
    warn = next(d for d in got.diagnostics if d.code == "unsupported-logsource")
    assert (warn.line, warn.severity) == (6, "warning") and "service: sshd" in warn.message
    assert got.ruleset.rules[0].skipped == "unsupported logsource" and not got.ruleset.enabled_rules


def test_falco_and_sigma_files_load_together_in_order(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(rule_yaml("evt.type = execve and proc.name = bash", name="falco one"))
    two = sigma_yaml("sel:\n  Image|endswith: '/bash'\ncondition: sel", title="sigma two")
    three = sigma_yaml("sel:\n  CommandLine|contains: uname\ncondition: sel", title="sigma three")
    (tmp_path / "b.yml").write_text(two + "---\n" + three)
    (tmp_path / "c.yaml").write_text(rule_yaml("evt.type = execve", name="falco four"))
    got = load_rules([tmp_path])
    assert got.ruleset is not None, got.diagnostics
    assert not got.diagnostics
    names = ["falco one", "sigma two", "sigma three", "falco four"]
    assert [r.name for r in got.ruleset.rules] == names
    assert [r.name for r in got.ruleset.match(exec_ctx())] == names


def test_without_pysigma_a_sigma_file_is_refused_and_falco_rules_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frontend, "pysigma", lambda: False)
    (tmp_path / "a.yaml").write_text(rule_yaml("evt.type = execve", name="falco"))
    doc = sigma_yaml("sel:\n  Image: x\ncondition: sel")
    other = doc.replace("title: T", "title: U").replace("0b2f4c1e", "1b2f4c1e")
    (tmp_path / "b.yml").write_text(doc + "---\n" + other)
    got = load_rules([tmp_path])
    assert got.ruleset is not None and [r.name for r in got.ruleset.enabled_rules] == ["falco"]
    assert [r.name for r in got.ruleset.refused] == ["T", "U"]
    hint = [d for d in got.diagnostics if d.code == "sigma-unavailable"]
    assert len(hint) == 1 and hint[0].line == 1 and "pip install" in hint[0].message


def test_a_correlation_loads_beside_its_base_rule() -> None:
    doc = sigma_yaml("sel:\n  Image: x\ncondition: sel", extra="name: base\n")
    corr = (
        "title: Many\ncorrelation:\n  type: event_count\n  rules: [base]\n  group-by: [User]\n"
        "  timespan: 5m\n  condition: {gte: 10}\n"
    )
    got = load_rules_text(doc + "---\n" + corr)
    assert got.ruleset is not None and not got.ruleset.refused, got.diagnostics
    many = got.ruleset.get("Many")
    assert many is not None and many.correlation.group_fields == (("user.name",),)
    assert many not in got.ruleset.never_fire


def corpus_rules() -> list[Path]:
    if not CORPUS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Sigma corpus is missing: {CORPUS}")
        pytest.skip(f"the Sigma corpus is not beside the repository ({CORPUS})")
    return sorted((CORPUS / "rules").rglob("*.yml"))


def test_the_sigmahq_linux_corpus() -> None:
    """162 of the 167 process_creation/file_event/network_connection rules load; the other 5 name fields
    sentinel does not capture (LogonId, DestinationHostname) and each says so at the field."""
    got = load_rules(corpus_rules())
    assert got.ruleset is not None and not got.errors
    sensor = [r for r in got.ruleset.rules if r.meta.get("logsource", {}).get("category") in SENSOR]
    refused = [r for r in sensor if r.skipped]
    assert len(sensor) == 167
    assert len(sensor) - len(refused) >= 160
    assert len(refused) == 5
    for rule in refused:
        causes = [d for d in got.diagnostics if d.refuses == rule.name and d.code == "sigma-unmapped-field"]
        assert causes and causes[0].file == rule.file and causes[0].line > 1, rule.name
    auditd = [r for r in got.ruleset.rules if r.meta.get("logsource", {}).get("service") == "auditd"]
    assert len(auditd) == 54
    assert len([r for r in auditd if not r.skipped]) == 43  # the 11 others: see test_rules_sigma_auditd.py
    assert all(r.skipped.startswith("refused: ") for r in auditd if r.skipped)
    others = [r for r in got.ruleset.rules if r not in sensor and r not in auditd]
    assert len(others) == 27 and all(r.skipped == "unsupported logsource" for r in others)


def test_names_stay_unique_across_formats_and_copies(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(rule_yaml("evt.type = execve and proc.name = x", name="T"))
    rule = sigma_yaml("sel:\n  Image|endswith: /whoami\ncondition: sel\n")
    (tmp_path / "b.yml").write_text(rule)
    (tmp_path / "c.yml").write_text(rule)  # the same Sigma rule (same id) again
    (tmp_path / "d.yml").write_text(rule.replace("0b2f4c1e", "99999999"))  # another rule, same title
    res = load_rules([tmp_path])
    assert res.ruleset is not None
    names = [r.name for r in res.ruleset.rules]
    assert names == ["T", "T [sigma 0b2f4c1e]", "T [sigma 99999999]"]
    assert res.ruleset.rules[1].file.endswith("c.yml")  # the later copy replaced the earlier
    codes = sorted(d.code for d in res.diagnostics if d.code.startswith("duplicate"))
    assert codes == ["duplicate-item", "duplicate-name", "duplicate-name"]
