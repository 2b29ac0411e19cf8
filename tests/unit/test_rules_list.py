"""``sentinel rules list``: each rule's format (falco/sigma), status, priority and location; a Sigma rule's id
and level. Sigma rules are Falco-loaded rules given ``Rule.meta`` by hand (no Sigma parser needed)."""

from __future__ import annotations

from pathlib import Path

import orjson

from sentinel.rules import RuleSet, load_text
from sentinel.rules.listing import format_list, list_doc
from sentinel.rules.model import rule_format
from tests.unit.test_cli import run

REPO = Path(__file__).resolve().parents[2]

RULES = """\
- rule: Exec
  desc: d
  condition: evt.type = execve and proc.name = nc
  output: "%proc.name"
  priority: warning
- rule: Off
  desc: d
  condition: evt.type = execve
  output: o
  priority: info
  enabled: false
- rule: Typo
  desc: d
  condition: evt.type = execve and proc.nme = x
  output: o
  priority: error
- rule: Container
  desc: d
  condition: evt.type = execve and container.healthcheck = nginx
  output: o
  priority: notice
- rule: Sigma One
  desc: d
  condition: evt.type = execve and proc.name = curl
  output: "%proc.name"
  priority: error
  tags: [attack.execution, attack.t1059.004]
"""
SIGMA_META = {
    "format": "sigma",
    "id": "5a1e0c7e-6f4d-4f8a-9b7a-2d2f3e4c5b6a",
    "author": "A, B (Org, Inc)",
    "references": ["https://example.org/x"],
    "license": "DRL-1.1",
    "level": "high",
    "status": "test",
    "falsepositives": [],
    "logsource": {"category": "process_creation", "product": "linux"},
}


def ruleset() -> RuleSet:
    result = load_text(RULES, "r.yaml")
    rs = result.ruleset
    assert rs is not None
    rs.get("Sigma One").meta = dict(SIGMA_META)
    return rs


def test_list_doc() -> None:
    doc = list_doc(ruleset())
    by_name = {e["name"]: e for e in doc["rules"]}
    assert [e["name"] for e in doc["rules"]] == ["Exec", "Off", "Typo", "Container", "Sigma One"]
    assert {n: e["status"] for n, e in by_name.items()} == {
        "Exec": "enabled",
        "Off": "disabled",
        "Typo": "refused",
        "Container": "never-fires",
        "Sigma One": "enabled",
    }
    assert {n: e["format"] for n, e in by_name.items()} == {
        "Exec": "falco", "Off": "falco", "Typo": "falco", "Container": "falco", "Sigma One": "sigma",
    }  # fmt: skip
    assert doc["formats"] == {"falco": 4, "sigma": 1}
    assert (doc["count"], doc["enabled"]) == (5, 3)
    sigma = by_name["Sigma One"]
    assert sigma["meta"] == SIGMA_META and sigma["priority"] == "error"
    assert sigma["tags"] == ["attack.execution", "attack.t1059.004"]
    assert (sigma["file"], sigma["line"]) == ("r.yaml", 22)
    assert by_name["Exec"]["meta"] == {}
    assert by_name["Typo"]["skipped"].startswith("refused")
    orjson.dumps(doc)  # JSON-ready


def test_format_list() -> None:
    text = format_list(list_doc(ruleset()))
    lines = text.splitlines()
    assert len(lines) == 6
    assert lines[0].split() == ["falco", "enabled", "warning", "r.yaml:1", "Exec"]
    assert lines[2].split()[:2] == ["falco", "refused"]
    assert lines[4].split()[:4] == ["sigma", "enabled", "error", "r.yaml:22"]
    assert lines[4].endswith("Sigma One  (sigma id 5a1e0c7e-6f4d-4f8a-9b7a-2d2f3e4c5b6a, level high)")
    assert len({line.index("r.yaml") for line in lines[:5]}) == 1  # columns line up
    assert lines[5].startswith("5 rules (3 enabled; 4 falco, 1 sigma); sha256 ")


def test_rule_format() -> None:
    rs = ruleset()
    assert rule_format(rs.get("Exec")) == "falco"
    assert rule_format(rs.get("Sigma One")) == "sigma"


def test_hostile_names_are_escaped() -> None:
    rs = load_text(RULES.replace("rule: Exec", 'rule: "Ex\\x1b[31mec"'), "r.yaml").ruleset
    assert rs is not None
    assert "\x1b" not in format_list(list_doc(rs))


def test_cli_rules_list(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(RULES)
    out = run("rules", "list", str(f))
    assert out.returncode == 0, out.stderr
    assert "falco  refused " in out.stdout and "Typo" in out.stdout
    assert "5 rules (3 enabled; 5 falco); sha256 " in out.stdout
    js = run("rules", "list", "--json", str(f))
    doc = orjson.loads(js.stdout)
    assert js.returncode == 0 and doc["count"] == 5 and doc["rules"][0]["format"] == "falco"
    bad = tmp_path / "bad.yaml"
    bad.write_text("- rule: r\n  desc: [x\n")
    out = run("rules", "list", str(bad))
    assert out.returncode == 1 and out.stdout == ""
    assert "yaml-error" in out.stderr and "Traceback" not in out.stderr


def test_cli_rules_list_defaults_to_the_shipped_rules() -> None:
    out = run("rules", "list")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("falco  enabled")
    assert "credential_access.yaml" in out.stdout
