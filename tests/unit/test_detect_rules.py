"""Detection with the real rule engine: rule files written here, the shipped ruleset, reload with real
validation errors, and `sentinel replay` / `sentinel run` as a user runs them (subprocess, real exit codes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from sentinel import log as logmod
from sentinel.alerts.mitre import TECHNIQUES, threat_from_tags
from sentinel.detect import DetectionStream, find_rules_dir, load_ruleset, reload_rules
from sentinel.events import AF_INET, EventType
from sentinel.rules import load_rules
from tests.unit.detect_fixtures import (  # noqa: F401 - the autouse fixture
    HOST,
    ListSink,
    S,
    diagnostics_to_the_current_stderr,
    ev,
    make_table,
)
from tests.unit.test_cli import json_lines, no_traceback, run
from tests.unit.test_recording import write_capture

RULES = """\
- list: web_servers
  items: [nginx, apache2, httpd]

- rule: Shell Spawned By Web Server
  desc: A shell whose parent is a web server.
  condition: evt.type = execve and proc.name in (sh, bash, dash) and proc.pname in (web_servers)
  output: "Shell %proc.name spawned by %proc.pname (cmdline=%proc.cmdline user=%user.name)"
  priority: warning
  tags: [host, mitre_execution, T1059.004]

- rule: Read Shadow
  desc: Something opened /etc/shadow.
  condition: evt.type in (open, openat) and fd.name = /etc/shadow
  output: "%proc.name read %fd.name (parent=%proc.pname env=%proc.env)"
  priority: critical
  tags: [mitre_credential_access, T1003.008]

- rule: Cat Reads Anything
  desc: cat opened a file.
  condition: evt.type = openat and proc.name = cat
  output: "cat read %fd.name"
  priority: notice
  tags: [mitre_collection]

- rule: Outbound 443
  desc: A connect to port 443.
  condition: evt.type = connect and fd.sport = 443
  output: "%proc.name connected to %fd.name"
  priority: error
  tags: [mitre_command_and_control, T1071]
"""

BAD = """\
- rule: Bad
  desc: a typo in a field name
  condition: evt.type = execve and proc.nme = sh
  output: "x"
  priority: warning
"""


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "test-rules.yaml"
    path.write_text(RULES)
    return path


def real_stream(path: Path, **kw: Any) -> tuple[DetectionStream, ListSink]:
    result = load_rules([path])
    assert result.ruleset is not None, result.diagnostics
    sink = ListSink()
    return DetectionStream(make_table(), result.ruleset, HOST, sink, **kw), sink


def test_real_rules_raise_alerts(rules_file: Path) -> None:
    stream, sink = real_stream(rules_file, window_s=0)
    stream.handle(ev(EventType.FORK, 1 * S, 100, comm="nginx", child_pid=200))
    stream.handle(ev(EventType.EXEC, 2 * S, 200, filename="/bin/sh", argv=["sh", "-c", "id"]))
    stream.handle(ev(EventType.OPEN, 3 * S, 200, path="/etc/shadow", ret=3))
    stream.handle(ev(EventType.OPEN, 4 * S, 200, path="/etc/hosts", ret=3))
    stream.handle(
        ev(EventType.CONNECT, 5 * S, 200, fd=3, family=AF_INET, address="10.1.2.3", port=443, sock_type=1)
    )
    stream.close()
    docs = sink.docs()
    assert [d["rule"]["name"] for d in docs] == ["Shell Spawned By Web Server", "Read Shadow", "Outbound 443"]
    shell, shadow, outbound = docs
    assert shell["message"] == "Shell sh spawned by nginx (cmdline=sh -c id user=root)"
    assert shell["threat"]["technique"]["subtechnique"]["id"] == ["T1059.004"]
    assert shell["sentinel"]["output_fields"]["proc"]["cmdline"] == "sh -c id"
    assert shell["rule"]["version"] == load_rules([rules_file]).ruleset.sha256[:12]  # type: ignore[union-attr]
    assert shadow["event"]["severity"] == 99
    assert shadow["file"]["path"] == "/etc/shadow"
    assert shadow["message"] == "sh read /etc/shadow (parent=nginx env=<NA>)"
    assert shadow["sentinel"]["output_fields"]["proc"]["env"] is None
    assert outbound["destination"] == {"ip": "10.1.2.3", "port": 443, "address": "10.1.2.3"}
    assert outbound["threat"]["tactic"]["id"] == ["TA0011"]


def test_real_rules_every_matching_rule_fires(rules_file: Path) -> None:
    stream, sink = real_stream(rules_file)
    stream.handle(ev(EventType.OPEN, 3 * S, 300, comm="cat", path="/etc/shadow", ret=3))
    assert [d["rule"]["name"] for d in sink.docs()] == ["Read Shadow", "Cat Reads Anything"]


def test_reload_with_real_validation(
    tmp_path: Path, rules_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stream, sink = real_stream(rules_file, window_s=0)
    old = stream.ruleset
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    logmod.configure("info")
    assert not reload_rules(stream, [rules_file, bad], ts_ns=9 * S)
    assert stream.ruleset is old
    (alert,) = sink.docs()
    assert alert["rule"]["name"] == "Rules reload failed"
    errors = alert["sentinel"]["reload"]["errors"]
    assert errors[0].startswith(f"{bad}:3:")
    assert "proc.nme" in errors[0]
    assert f"{bad}:3:" in alert["message"]
    err = capsys.readouterr().err
    diag = [orjson.loads(line) for line in err.splitlines() if '"sentinel.reload_failed"' in line]
    assert diag and diag[0]["kept_sha256"] == old.sha256
    # A valid change is swapped in.
    rules_file.write_text(RULES.replace("priority: critical", "priority: alert"))
    assert reload_rules(stream, [rules_file], ts_ns=10 * S)
    assert stream.ruleset is not old
    assert stream.ruleset.get("Read Shadow").priority == "alert"


def test_load_ruleset_reports_yaml_errors_located(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("- rule: x\n  desc: [unclosed\n")
    outcome = load_ruleset([path])
    assert outcome.ruleset is None
    assert outcome.errors and outcome.errors[0].startswith(f"{path}:")


# -------------------------------------------------------------------------------------- shipped ruleset


def test_shipped_rules_load_and_name_their_techniques() -> None:
    shipped = find_rules_dir()
    assert shipped is not None and shipped.name == "rules"
    outcome = load_ruleset([shipped])
    assert outcome.ruleset is not None, outcome.errors
    unnamed = set()
    for r in outcome.ruleset.rules:
        threat = threat_from_tags(r.tags)
        unnamed.update(t for t in threat.techniques + threat.subtechniques if t not in TECHNIQUES)
    assert not unnamed, f"add these to sentinel/alerts/mitre.py TECHNIQUES: {sorted(unnamed)}"


# ---------------------------------------------------------------------------------------- the commands


def test_replay_detection_cli(tmp_path: Path) -> None:
    cap = write_capture(tmp_path / "cap.msgpack")
    rules = tmp_path / "r.yaml"
    rules.write_text(RULES)
    result = run("replay", str(cap.path), "--rules", str(rules))
    assert result.returncode == 0, result.stderr
    no_traceback(result)
    docs = json_lines(result.stdout)
    assert [d["rule"]["name"] for d in docs] == ["Cat Reads Anything", "Kernel events lost", "Outbound 443"]
    assert docs[0]["message"] == "cat read /srv/notes.txt"
    assert docs[2]["process"]["executable"] == "/usr/bin/dash"
    diags = json_lines(result.stderr)
    (loaded,) = [d for d in diags if d["event"] == "sentinel.rules_loaded"]
    assert loaded["rules"] == 4 and loaded["files"] == [str(rules)]

    falco = run("replay", str(cap.path), "--rules", str(rules), "--format", "falco")
    assert falco.returncode == 0
    fdocs = json_lines(falco.stdout)
    assert [(d["rule"], d["priority"]) for d in fdocs] == [
        ("Cat Reads Anything", "Notice"),
        ("Kernel events lost", "Warning"),
        ("Outbound 443", "Error"),
    ]
    assert fdocs[2]["output_fields"]["fd.name"].endswith("10.9.8.7:443")


def test_replay_with_shipped_rules(tmp_path: Path) -> None:
    cap = write_capture(tmp_path / "cap.msgpack")
    result = run("replay", str(cap.path))
    assert result.returncode == 0, result.stderr
    no_traceback(result)
    assert all(d["event"]["kind"] == "alert" for d in json_lines(result.stdout))


def test_invalid_rules_exit_1_with_located_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    cap = write_capture(tmp_path / "cap.msgpack")
    for args in (["run", "--rules", str(bad)], ["replay", str(cap.path), "--rules", str(bad)]):
        result = run(*args)
        assert result.returncode == 1, args
        no_traceback(result)
        assert result.stdout == ""
        assert f"{bad}:3:" in result.stderr
        assert "proc.nme" in result.stderr
        assert "sentinel.starting" not in result.stderr  # nothing touched the kernel


def test_replay_truncated_capture_still_exits_1(tmp_path: Path) -> None:
    cap = write_capture(tmp_path / "cap.msgpack")
    rules = tmp_path / "r.yaml"
    rules.write_text(RULES)
    cut = tmp_path / "cut.msgpack"
    cut.write_bytes(cap.path.read_bytes()[: cap.last_record + 3])
    result = run("replay", str(cut), "--rules", str(rules))
    assert result.returncode == 1
    assert "sentinel replay:" in result.stderr
    # What was readable was still detected.
    names = [d["rule"]["name"] for d in json_lines(result.stdout)]
    assert names == ["Cat Reads Anything", "Kernel events lost"]


def test_reload_keeps_refusals_it_started_with_but_never_adds_one(tmp_path: Path, rules_file: Path) -> None:
    falco_like = tmp_path / "upstream.yaml"  # a refused rule the operator cannot fix: the agent ran with it
    falco_like.write_text(BAD.replace("Bad", "Upstream"))
    outcome = load_ruleset([rules_file, falco_like])
    assert [r.name for r in outcome.ruleset.refused] == ["Upstream"]
    stream, sink = real_stream(rules_file, window_s=0)
    stream.swap(outcome.ruleset)
    assert reload_rules(stream, [rules_file, falco_like], ts_ns=9 * S)  # the same refusal: fine
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    kept = stream.ruleset
    assert not reload_rules(stream, [rules_file, falco_like, bad], ts_ns=10 * S)  # a new one: kept
    assert stream.ruleset is kept
    (alert,) = sink.docs()
    errors = alert["sentinel"]["reload"]["errors"]
    assert errors[0].startswith(f"{bad}:3:") and "proc.nme" in errors[0]
    assert any("[rule-refused] rule 'Bad' is not loaded" in e for e in errors)
    assert not any("Upstream" in e for e in errors)
