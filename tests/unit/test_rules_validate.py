"""`sentinel rules validate`: per-file status; every diagnostic code located (file, line, column, snippet)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sentinel.rules import load_text
from sentinel.rules.model import Diagnostic
from sentinel.rules.validate import (
    INVALID,
    OK,
    OK_WARNINGS,
    REFUSED,
    caret_line,
    format_diagnostic,
    safe,
    validate,
)
from tests.unit.test_cli import run

REPO = Path(__file__).resolve().parents[2]

R = "- rule: r\n  desc: d\n  output: o\n  priority: info\n"

# (file text, code, severity, line, marker): the column is where ``marker`` starts on that line ("" = the end)
CASES: list[tuple[str, str, str, int, str]] = [
    ("- rule: r\n  desc: [x\n", "yaml-error", "error", 2, ""),
    ("rule: r\n", "not-a-list", "error", 1, "rule"),
    ("- rule: r\n  desc: d\n", "missing-key", "error", 1, "rule"),
    ("- frob: 1\n", "unknown-item", "error", 1, "frob"),
    (R + "  condition: evt.type = execve\n  colour: red\n", "unknown-key", "warning", 6, "colour"),
    (R + "  condition: evt.type = execve\n  enabled: perhaps\n", "bad-type", "error", 6, "perhaps"),
    (R.replace("info", "loud") + "  condition: evt.type = execve\n", "bad-value", "error", 4, "loud"),
    (R + "  condition: evt.type = execve and proc.nme = x\n", "unknown-field", "error", 5, "proc.nme"),
    (R + "  condition: evt.type = execve and proc.name ~ x\n", "bad-operator", "error", 5, "~ x"),
    (R + "  condition: evt.type = execve and proc.pid > abc\n", "bad-value", "error", 5, "abc"),
    (R + "  condition: evt.type = execve and nope\n", "undefined-macro", "error", 5, "nope"),
    (
        "- list: a\n  items: [b]\n- list: b\n  items: [x]\n"
        + R
        + "  condition: evt.type = execve and proc.name in (a)\n",
        "list-defined-later",
        "warning",
        2,
        "b]",
    ),
    (
        "- rule: ghost\n  condition: and x\n  override:\n    condition: append\n",
        "override-unknown-item",
        "error",
        1,
        "ghost",
    ),
    (
        R + "  condition: evt.type = execve\n  exceptions:\n    - name: e\n"
        "      fields: [proc.name, proc.pid]\n      values:\n        - [a]\n",
        "exception-arity",
        "error",
        10,
        "[a]",
    ),
    (
        "- macro: m\n  condition: proc.name = x\n" + R + "  condition: evt.type = execve\n",
        "unused-macro",
        "warning",
        1,
        "$m",
    ),
    ("- list: l\n  items: [a]\n" + R + "  condition: evt.type = execve\n", "unused-list", "warning", 1, "$l"),
    (R + "  condition: proc.name = bash\n", "no-event-type", "warning", 5, "proc.name"),
    (
        R + "  condition: evt.type = ioctl and proc.name = x\n",
        "event-type-not-captured",
        "warning",
        5,
        "ioctl",
    ),
    (
        R + "  condition: evt.type = execve\n" + R + "  condition: evt.type = execve\n",
        "duplicate-item",
        "warning",
        6,
        "$r",
    ),
    (R + "  condition: evt.type = execve and proc.name = (x\n", "syntax-error", "error", 5, "(x"),
    (
        R + "  condition: >\n    evt.type = execve and\n    proc.nme = x\n",
        "unknown-field",
        "error",
        7,
        "proc.nme",
    ),
    (
        R + '  condition: "evt.type = execve and proc.name = \\"a\\" and proc.nme = x"\n',
        "unknown-field",
        "error",
        5,
        "proc.nme",
    ),
    (
        R + "  condition: 'evt.type = execve and proc.name = ''a'' and proc.nme = x'\n",
        "unknown-field",
        "error",
        5,
        "proc.nme",
    ),
    (
        R.replace("output: o", "output: 'x %proc.nam y'") + "  condition: evt.type = execve\n",
        "unknown-field",
        "warning",
        3,
        "proc.nam",
    ),
    (
        R + "  condition: evt.type = execve and fd.name in (x_files)\n",
        "undefined-list",
        "warning",
        5,
        "x_files",
    ),
    (
        R + "  condition: evt.type = execve and fd.ino = 1\n",
        "field-not-captured",
        "warning",
        5,
        "fd.ino",
    ),
]


@pytest.mark.parametrize(("text", "code", "severity", "line", "marker"), CASES)
def test_each_code_is_located(text: str, code: str, severity: str, line: int, marker: str) -> None:
    res = load_text(text, "rules.yaml")
    found = [d for d in res.diagnostics if d.code == code]
    assert found, res.diagnostics
    d = found[0]
    source_line = text.splitlines()[line - 1]
    if marker.startswith("$"):
        column = source_line.rindex(marker[1:]) + 1
    else:
        column = source_line.index(marker) + 1 if marker else len(source_line) + 1
    effective = "error" if d.refuses else d.severity  # a problem that refused its rule counts as one
    assert (effective, d.line, d.column) == (severity, line, column), d
    assert d.file == "rules.yaml"
    assert d.snippet == source_line


def test_positions_in_an_appended_condition_point_into_the_append(tmp_path: Path) -> None:
    base = tmp_path / "a.yaml"
    base.write_text(R + "  condition: evt.type = execve\n")
    local = tmp_path / "b.yaml"
    local.write_text("- rule: r\n  condition: and proc.nme = x\n  override:\n    condition: append\n")
    res = validate([base, local])
    assert [f.status for f in res.files] == [OK_WARNINGS, REFUSED]  # the rule-refused warning sits at r
    d = res.files[1].diagnostics[0]
    assert (d.file, d.line, d.column, d.code) == (str(local), 2, 18, "unknown-field")


def test_statuses_and_report(tmp_path: Path) -> None:
    ok = tmp_path / "a.yaml"
    ok.write_text(R + "  condition: evt.type = execve\n")
    warn = tmp_path / "b.yaml"
    warn.write_text(R.replace("rule: r", "rule: w") + "  condition: proc.name = x\n")
    bad = tmp_path / "c.yaml"
    bad.write_text(R.replace("rule: r", "rule: e") + "  condition: evt.type = execve and proc.x = 1\n")
    res = validate([ok, warn, bad])
    assert [f.status for f in res.files] == [OK, OK_WARNINGS, REFUSED]
    assert not res.ok
    doc = res.to_dict()
    assert doc["ok"] is False and doc["files"][2]["errors"] == 0 and doc["refused_rules"] == ["e"]
    assert doc["rules"] == 3 and doc["enabled_rules"] == 2  # e is loaded as refused, never evaluated
    broken = tmp_path / "d.yaml"
    broken.write_text("- rule: x\n  desc: [\n")
    assert validate([ok, broken]).to_dict()["rules"] is None  # a file error: nothing loads
    good = validate([ok, warn])
    assert good.ok and good.to_dict()["rules"] == 2 and len(good.to_dict()["sha256"]) == 64


def test_text_format_has_a_caret_under_the_column() -> None:
    d = Diagnostic(
        "error", "unknown-field", "unknown field 'proc.nme'", "r.yaml", 5, 16, "  condition: a\tproc.nme = x"
    )
    lines = format_diagnostic(d).splitlines()
    assert lines[0] == "r.yaml:5:16: error [unknown-field] unknown field 'proc.nme'"
    assert lines[1] == "      condition: a\tproc.nme = x"
    assert lines[2] == "    " + "  " + " " * 11 + " " + "\t" + "^"
    assert caret_line("abc", 1) == "^"


def test_hostile_text_cannot_drive_the_terminal() -> None:
    assert safe("a\x1b[31mb\u2028c") == "a\\x1b[31mb\\u2028c"
    d = Diagnostic("error", "x", "bad \x1b]0;title\x07", "f\x1b.yaml", 1, 3, "ab\x1bcd")
    text = format_diagnostic(d)
    assert "\x1b" not in text and "\x07" not in text
    assert text.splitlines()[1:] == ["    ab\\x1bcd", "      ^"]


def test_cli_validate(tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text(R + "  condition: evt.type = execve\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(R.replace("rule: r", "rule: b") + "  condition: evt.type = execve and proc.nme = x\n")
    out = run("rules", "validate", str(ok))
    assert out.returncode == 0 and f"{ok}: Ok" in out.stdout and "1 rules (1 enabled)" in out.stdout
    out = run("rules", "validate", str(ok), str(bad))
    assert out.returncode == 1
    assert f"{bad}: Rules refused" in out.stdout
    assert (
        f"{bad}:5:36: warning [unknown-field] unknown field 'proc.nme'; did you mean proc.name?" in out.stdout
    )
    assert f"{bad}:1:9: warning [rule-refused] rule 'b' is not loaded: unknown field 'proc.nme'" in out.stdout
    assert "1 rule(s) refused (not loaded; the warnings above say why): b" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    js = run("rules", "validate", "--json", str(ok), str(bad))
    doc = orjson.loads(js.stdout)
    assert js.returncode == 1 and doc["ok"] is False
    cause = next(d for d in doc["files"][1]["diagnostics"] if d["code"] == "unknown-field")
    assert cause["column"] == 36 and cause["refuses"] == "b" and doc["refused_rules"] == ["b"]
    shipped = run("rules", "validate")  # no path: the shipped rules (checkout, /usr/share/sentinel, package)
    assert shipped.returncode == 0 and "Ok" in shipped.stdout, shipped.stdout[-2000:] + shipped.stderr


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\x01\x02",
        b"- rule: \xff\xfe\n",
        b"[[[[[[[[[[" * 500,
        b"- rule: &a [*a]\n",
        b"\t- rule: x\n",
        b"- rule: r\n  desc: d\n  condition: " + b"(" * 5000 + b"\n  output: o\n  priority: info\n",
        b"- !!python/object:os.system {}\n",
        b"- rule: r\n  exceptions: &e\n    - name: x\n      values: *e\n",
    ],
)
def test_cli_never_shows_a_traceback(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "hostile.yaml"
    f.write_bytes(content)
    out = run("rules", "validate", str(f))
    assert out.returncode == 1
    assert "Traceback" not in out.stdout + out.stderr
    assert f"{f}: {INVALID}" in out.stdout or f"{f}: {REFUSED}" in out.stdout  # a bad condition: its rule


def test_directory_without_rules_warns(tmp_path: Path) -> None:
    res = validate([tmp_path])
    assert res.ok and res.files[0].diagnostics[0].code == "no-rules-files"
