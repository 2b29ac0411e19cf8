"""`sentinel config check`: the configuration and everything it names (rules, selectors, model, outputs,
state directory), errors located in the config or the rules file, warnings for what this host lacks."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest

from sentinel.config_check import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, check_config, format_report, run_check
from sentinel.detect import find_rules_dir, load_ruleset

RULES = find_rules_dir()
EXAMPLE = Path(__file__).resolve().parents[2] / "packaging" / "sentinel.yaml"
SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "models" / "default"


@pytest.fixture(scope="module")
def shipped() -> object:
    assert RULES is not None
    outcome = load_ruleset([str(RULES)])
    assert outcome.ruleset is not None
    return outcome.ruleset


def write_config(tmp_path: Path, body: str, model: str = "off") -> str:
    path = tmp_path / "sentinel.yaml"
    path.write_text(f"rules: [{RULES}]\nstate_dir: {tmp_path / 'state'}\nmodel: {model}\n" + body)
    return str(path)


def run(path: str | None, as_json: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_check(path, as_json, out, err)
    return code, out.getvalue(), err.getvalue()


def test_good_config(tmp_path: Path, shipped: object) -> None:
    path = write_config(tmp_path, f"sinks: [{{kind: file, target: {tmp_path / 'alerts.json'}}}]\n")
    report = check_config(path)
    assert report.ok and report.errors == [] and report.warnings == []
    assert report.rules_total == report.rules_enabled == len(shipped.rules)  # type: ignore[attr-defined]
    assert report.outputs == [f"file:{tmp_path / 'alerts.json'}"]
    code, out, err = run(path)
    assert code == EXIT_OK and err == ""
    assert out.startswith(
        f"OK: {path}: {report.rules_total} rules ({report.rules_enabled} enabled), 1 output(s)"
    )


def test_selectors_resolve_like_with_enabled(tmp_path: Path, shipped: object) -> None:
    rules = shipped.rules  # type: ignore[attr-defined]
    tag = "mitre_discovery"
    tagged = {r.name for r in rules if tag in r.tags}
    assert tagged
    keep = sorted(tagged)[0]
    path = write_config(tmp_path, f"rules_disable: ['tag:{tag}']\nrules_enable: ['{keep}']\n")
    report = check_config(path)
    assert report.ok
    expected = shipped.with_enabled([keep], [f"tag:{tag}"])  # type: ignore[attr-defined]
    assert report.rules_enabled == len(expected.enabled_rules) == len(rules) - len(tagged)
    # the rule named in rules_enable stays off: disable wins, and the check says so where it was enabled
    (w,) = report.warnings
    assert (w.file, w.line, w.column, w.code) == (path, 5, 16, "selector")
    assert "disable wins" in w.message and keep in w.message


def test_unknown_rule_name_is_an_error_and_unknown_tag_a_warning(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "rules_enable:\n  - tag:no_such_tag\nrules_disable:\n  - Shell Spawned By Web Servr\n"
    )
    report = check_config(path)
    assert not report.ok
    (e,) = report.errors
    assert (e.file, e.line, e.column, e.code) == (path, 7, 5, "selector")
    assert "no rule named 'Shell Spawned By Web Servr'; did you mean" in e.message
    (w,) = report.warnings
    assert (w.line, w.column) == (5, 5) and "no rule is tagged 'no_such_tag'" in w.message
    code, out, _ = run(path)
    assert code == EXIT_ERRORS
    assert out.splitlines()[0] == f"{path}:7:5: error: {e.message}"
    assert out.splitlines()[-1] == f"INVALID: {path}: 1 error, 1 warning"


def test_rule_diagnostics_are_passed_through_located(tmp_path: Path) -> None:
    rules = tmp_path / "local.yaml"
    rules.write_text(
        "- rule: Broken\n  desc: d\n  condition: evt.type = execve and proc.nmae = x\n"
        "  output: o\n  priority: WARNING\n"
    )
    path = tmp_path / "sentinel.yaml"
    path.write_text(f"rules: [{rules}]\nmodel: off\nstate_dir: {tmp_path}\n")
    report = check_config(str(path))
    assert not report.ok  # the agent would run without the rule: the check fails and names it
    refused = report.errors[0]
    assert (refused.file, refused.line, refused.code) == (str(rules), 1, "rules:rule-refused")
    assert "'Broken'" in refused.message and "proc.nmae" in refused.message
    e = next(w for w in report.warnings if w.code == "rules:unknown-field")
    assert (e.file, e.line) == (str(rules), 3) and e.column > 1
    assert "proc.nmae" in e.message
    _, out, _ = run(str(path))
    assert f"{rules}:3:{e.column}: warning: " in out and "[unknown-field]" in out
    assert f"{rules}:1:{refused.column}: error: " in out and "[rule-refused]" in out
    assert "proc.nmae = x" in out  # the snippet


def test_rules_append_reaches_the_check(tmp_path: Path) -> None:
    local = tmp_path / "local.yaml"
    local.write_text("- rule: Extra\n  desc: d\n  condition: evt.type = execve and proc.name = zz\n"
                     "  output: o\n  priority: WARNING\n")  # fmt: skip
    path = write_config(tmp_path, f"rules_append: [{local}]\nrules_disable: [Extra]\n")
    report = check_config(path)
    assert report.ok and report.rules_enabled == report.rules_total - 1


def test_model_directory_is_verified(tmp_path: Path) -> None:
    path = write_config(tmp_path, "", model="./absent-model")
    report = check_config(path)
    (e,) = report.errors
    assert (e.line, e.column, e.code) == (3, 1, "model") and "not a directory" in e.message


def test_tampered_model_is_an_error(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL, model)
    path = write_config(tmp_path, "", model=str(model))
    assert check_config(path).ok
    data = bytearray((model / "forest.npz").read_bytes())
    data[-1] ^= 0xFF
    (model / "forest.npz").write_bytes(bytes(data))
    (e,) = check_config(path).errors
    assert "sha256 does not match" in e.message and e.line == 3


def test_model_default_is_refused_with_the_reason_and_auto_is_fine(tmp_path: Path) -> None:
    (e,) = check_config(write_config(tmp_path, "", model="default")).errors
    assert e.line == 3 and "not a detection mode" in e.message and "--model auto" in e.message
    assert check_config(write_config(tmp_path, "", model="auto")).ok


def test_state_dir(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    path = tmp_path / "sentinel.yaml"
    path.write_text(f"rules: [{RULES}]\nmodel: off\nstate_dir: {tmp_path / 'afile'}\n")
    (e,) = check_config(str(path)).errors
    assert (e.line, e.code) == (3, "state-dir") and "not a directory" in e.message
    path.write_text(f"rules: [{RULES}]\nmodel: off\nstate_dir: {tmp_path / 'afile' / 'below'}\n")
    (e,) = check_config(str(path)).errors
    assert "cannot be created" in e.message
    path.write_text(f"rules: [{RULES}]\nmodel: off\nstate_dir: {tmp_path / 'new' / 'deeper'}\n")
    assert check_config(str(path)).ok  # creatable


def test_output_paths_are_warnings_a_directory_is_an_error(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "sinks:\n"
        f"  - {{kind: file, target: {tmp_path / 'no-dir' / 'a.json'}}}\n"
        f"  - {{kind: syslog, target: 'tls://logs:6514', tls_ca_file: {tmp_path / 'ca.pem'}}}\n"
        f"  - {{kind: file, target: {tmp_path}}}\n",
    )
    report = check_config(path)
    # The file output makes a missing directory (0750) at start: nothing to warn about when it can.
    assert [(f.line, f.code) for f in report.warnings] == [(6, "output")]
    assert "tls_ca_file" in report.warnings[0].message
    (e,) = report.errors
    assert (e.line, e.column) == (7, 5) and "is a directory" in e.message


def test_a_missing_output_directory_that_cannot_be_made_is_a_warning(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    path = write_config(tmp_path, f"sinks:\n  - {{kind: file, target: {locked / 'logs' / 'a.json'}}}\n")
    report = check_config(path)
    if os.geteuid() == 0:  # root writes anywhere: nothing to warn about
        assert report.warnings == []
        return
    (w,) = report.warnings
    assert "cannot create" in w.message and str(locked) in w.message


def test_redact_pattern_that_can_backtrack_is_a_warning(tmp_path: Path) -> None:
    report = check_config(write_config(tmp_path, "redact: ['(\\w+)*x', '(a|b)+', 'tok-[0-9]+']\n"))
    assert report.ok
    assert [(w.code, w.line, w.column) for w in report.warnings] == [("redact", 4, 10)]


def test_config_errors_and_usage(tmp_path: Path) -> None:
    path = write_config(tmp_path, "format: xml\n")
    report = check_config(path)
    (e,) = report.errors
    assert (e.file, e.line, e.column, e.code) == (path, 4, 9, "config")
    code, out, _ = run(path)
    assert code == EXIT_ERRORS and out.startswith(f"{path}:4:9: error: format must be one of")

    code, out, err = run(str(tmp_path / "absent.yaml"))
    assert (code, out) == (EXIT_USAGE, "") and "absent.yaml: no such file" in err


def test_json_report(tmp_path: Path) -> None:
    path = write_config(tmp_path, "rules_enable: [Nope]\nmetrics: {address: '127.0.0.1:9464'}\n")
    code, out, _ = run(path, as_json=True)
    data = json.loads(out)
    assert code == EXIT_ERRORS and data["ok"] is False and data["files"] == [path]
    assert data["errors"][0]["line"] == 4 and data["errors"][0]["code"] == "selector"
    assert data["summary"]["metrics_address"] == "127.0.0.1:9464"


def test_no_file_checks_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_CONFIG", str(tmp_path / "sentinel.yaml"))
    report = check_config(None)
    assert report.path is None and report.files == [] and report.errors == []
    assert "no configuration file: the defaults" in format_report(report)


def test_example_config_with_a_local_dropin_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIEM_TOKEN", "t")
    main = tmp_path / "sentinel.yaml"
    shutil.copy(EXAMPLE, main)
    (tmp_path / "sentinel.d").mkdir()
    (tmp_path / "sentinel.d" / "99-test.yaml").write_text(
        f"rules: [{RULES}]\nstate_dir: {tmp_path / 'state'}\nmetrics: {{address: off}}\n"
    )
    report = check_config(str(main))
    assert report.ok, format_report(report)
    assert report.rules_enabled == report.rules_total - 1  # the example disables one shipped rule
    assert {w.code for w in report.warnings} <= {"output"}  # /var/log/sentinel, the SIEM CA: not on this host


def test_hostile_text_is_escaped(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'rules_enable: ["\\e[31mred\\u0007"]\n')
    _, out, _ = run(path)
    assert "\x1b" not in out and "\x07" not in out and "\\x1b" in out


def test_auto_with_a_refused_host_model_is_a_warning(tmp_path: Path) -> None:
    host_model = tmp_path / "state" / "anomaly" / "model"
    host_model.mkdir(parents=True)
    (host_model / "manifest.json").write_text("{not json")
    report = check_config(write_config(tmp_path, "", model="auto"))
    assert report.ok
    (w,) = report.warnings
    assert w.code == "model" and "trained model is refused" in w.message


def test_every_problem_in_one_run(tmp_path: Path) -> None:
    """Issue 18: five independent problems are five located errors in one run, not five rounds."""
    path = tmp_path / "sentinel.yaml"
    path.write_text(
        f"rules: [{tmp_path / 'no-such-rules'}]\n"  # 1: a rules directory that does not exist
        f"state_dir: {tmp_path / 'state'}\n"
        "model: off\n"
        "format: xml\n"  # 4
        "sinks:\n"
        "  - {kind: http, target: 'ftp://siem.example/alerts'}\n"  # 6
        "aggregation_window_s: -5\n"  # 7
        "redact: ['token=([a-z']\n"  # 8
    )
    report = check_config(str(path))
    assert not report.ok
    lines = sorted(e.line for e in report.errors)
    assert lines == [1, 4, 6, 7, 8], [str(e) for e in report.errors]
    assert all(e.file == str(path) and e.column > 0 for e in report.errors)
    text = {e.line: e.message for e in report.errors}
    assert "no-such-rules" in text[1]
    assert "format must be one of ecs, falco, not 'xml'" in text[4]
    assert "ftp://" in text[6]
    assert "aggregation_window_s must be at least 0" in text[7]
    assert "bad regular expression" in text[8]
    code, out, _ = run(str(path))
    assert code == EXIT_ERRORS
    assert out.splitlines()[-1] == f"INVALID: {path}: 5 errors, 0 warnings"
    assert sum(": error: " in line for line in out.splitlines()) == 5


def test_a_bad_setting_keeps_its_default_and_the_rest_is_read(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "format: xml\naggregation_window_s: 5\nsensor: {pages: 3, wakeup_events: 0}\n"
    )
    report = check_config(path)
    assert report.config is not None
    assert report.config.format == "ecs" and report.config.aggregation_window_s == 5
    assert sorted((e.line, e.message.split(" must")[0]) for e in report.errors) == [
        (4, "format"), (6, "pages"), (6, "wakeup_events"),
    ]  # fmt: skip


def test_start_up_refuses_with_the_full_list(tmp_path: Path) -> None:
    from sentinel.config import ConfigErrors, load_config

    path = write_config(tmp_path, "format: xml\nunknown_key: 1\nml: {batch_ms: 0}\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert [line.split(": ")[0] for line in lines[:3]] == [f"{path}:4:9", f"{path}:5:1", f"{path}:6:16"]
    assert lines[-1] == "3 errors in the configuration"


def test_rule_rate_limit_is_read_and_checked(tmp_path: Path) -> None:
    from sentinel.config import parse_config

    assert parse_config("rule_rate_limit: 5\n", "/c.yaml").rule_rate_limit == 5
    assert parse_config("rule_rate_limit: 0\n", "/c.yaml").rule_rate_limit == 0  # no limit
    report = check_config(write_config(tmp_path, "rule_rate_limit: -1\n"))
    (e,) = report.errors
    assert (e.line, e.column) == (4, 18) and "rule_rate_limit must be at least 0" in e.message
