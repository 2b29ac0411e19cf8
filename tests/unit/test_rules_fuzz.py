"""Property tests: random and mutated rule files and conditions never crash the loader or the parser; every
problem comes back as a located diagnostic (line within the file, column within the line)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.rules import load_text
from sentinel.rules.model import Diagnostic
from sentinel.rules.parser import ParseError, parse_condition
from sentinel.rules.source import SourceText
from tests.unit.rules_support import exec_ctx, open_ctx, rule_yaml
from tests.unit.test_rules_loader import FALCO_STYLE

REPO = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENS = [
    "and",
    "or",
    "not",
    "(",
    ")",
    ",",
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "contains",
    "icontains",
    "startswith",
    "endswith",
    "glob",
    "iglob",
    "pmatch",
    "in",
    "intersects",
    "exists",
    "regex",
    "bcontains",
    "proc.name",
    "proc.aname[2]",
    "proc.aname",
    "proc.pid",
    "fd.name",
    "fd.sip",
    "fd.snet",
    "evt.type",
    "evt.is_open_write",
    "user.uid",
    "proc.env[HOME]",
    "tolower(",
    "basename(",
    "val(",
    "len(",
    "b64(",
    "execve",
    "open",
    "connect",
    "ptrace",
    "bash",
    "/etc/",
    "10.0.0.0/8",
    "'q'",
    '"dq"',
    "'",
    '"',
    "\\",
    "[",
    "]",
    "true",
    "false",
    "123",
    "-1",
    "0x1f",
    "spawned_process",
    "shells",
    "(a, b)",
    "()",
    "%",
    "\n",
    "\t",
    "é",
    "\x00",
    "proc.",
    ".name",
    "evt.arg.foo",
]
PRELUDE = "- list: shells\n  items: [bash, sh]\n- macro: spawned_process\n  condition: evt.type = execve\n"
SEEDS = [FALCO_STYLE, PRELUDE + rule_yaml("spawned_process and proc.name in (shells)")]
for _p in sorted((REPO / "rules").glob("*.yaml"))[:3]:
    SEEDS.append(_p.read_text(encoding="utf-8"))


def assert_located(text: str, diags: list[Diagnostic]) -> None:
    src = SourceText("t.yaml", text)
    for d in diags:
        assert d.code != "internal-error", d.message
        assert 1 <= d.line <= src.n_lines, d
        assert d.column >= 1, d
        assert d.column <= len(src.line_text(d.line)) + 1, d
        assert d.snippet == src.line_text(d.line)[: len(d.snippet)] or len(src.line_text(d.line)) > 200, d
        assert d.file == "t.yaml"


def condition_text() -> st.SearchStrategy[str]:
    return st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=6)), max_size=25).map(" ".join)


@FUZZ
@given(condition_text())
def test_parser_only_raises_parse_errors(text: str) -> None:
    try:
        parse_condition(text)
    except ParseError as exc:
        assert 0 <= exc.pos <= len(text)


@FUZZ
@given(condition_text())
def test_random_conditions_give_located_diagnostics(cond: str) -> None:
    text = PRELUDE + rule_yaml(cond)
    res = load_text(text, "t.yaml")
    assert_located(text, res.diagnostics)
    if res.ruleset is not None:  # whatever compiled must run
        res.ruleset.match(exec_ctx())
        res.ruleset.match(open_ctx("/etc/shadow"))
        for r in res.ruleset.rules:
            res.ruleset.output(r, exec_ctx())


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 5))
        pos = draw(st.integers(0, len(text)))
        if op == 0:  # insert a character or a token
            text = (
                text[:pos]
                + draw(
                    st.one_of(
                        st.sampled_from([*TOKENS, ":", "-", "{", "}", "&a", "*a", "#"]), st.characters()
                    )
                )
                + text[pos:]
            )
        elif op == 1:  # delete a span
            text = text[:pos] + text[pos + draw(st.integers(1, 20)) :]
        elif op == 2:  # duplicate a line
            lines = text.splitlines(keepends=True)
            if lines:
                i = draw(st.integers(0, len(lines) - 1))
                lines.insert(i, lines[i])
                text = "".join(lines)
        elif op == 3:  # swap two lines
            lines = text.splitlines(keepends=True)
            if len(lines) > 1:
                i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
                text = "".join(lines)
        elif op == 4:  # change indentation
            text = text[:pos] + draw(st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "\r"])) + text[pos:]
        else:  # truncate
            text = text[:pos]
    return text


@FUZZ
@given(mutated())
def test_mutated_files_never_crash(text: str) -> None:
    res = load_text(text, "t.yaml")
    assert_located(text, res.diagnostics)


KEYS = [
    "rule",
    "macro",
    "list",
    "desc",
    "condition",
    "output",
    "priority",
    "enabled",
    "tags",
    "exceptions",
    "items",
    "override",
    "append",
    "name",
    "fields",
    "comps",
    "values",
    "source",
    "required_engine_version",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(TOKENS + KEYS + ["append", "replace"]),
    st.text(max_size=8),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)
    ),
    max_leaves=20,
)


@FUZZ
@given(st.lists(st.dictionaries(st.sampled_from(KEYS), VALUES, min_size=1, max_size=7), max_size=6))
def test_random_structures_never_crash(items: list[dict[str, object]]) -> None:
    text = yaml.safe_dump(items, allow_unicode=True)
    res = load_text(text, "t.yaml")
    assert_located(text, res.diagnostics)


@pytest.mark.parametrize("bad", ["\ud800", "\udcff", "\udfff"])
def test_text_with_lone_surrogates_is_refused_where_it_is(bad: str) -> None:
    """Text handed to load_text is refused as a file with undecodable bytes is: located, never an internal
    error (the fuzzer's mutations insert any character; a surrogate cannot be encoded)."""
    text = f"- rule: r\n  desc: a{bad}b\n  condition: proc.name = x\n  output: o\n  priority: warning\n"
    res = load_text(text, "t.yaml")
    assert res.ruleset is None
    [d] = res.diagnostics
    assert (d.code, d.line, d.column) == ("yaml-error", 2, 10) and "cannot be encoded" in d.message
