"""The condition grammar: precedence, values, fields with arguments, transformers, and located errors."""

from __future__ import annotations

import pytest

from sentinel.rules.parser import (
    MAX_DEPTH,
    And,
    Check,
    FieldRef,
    ListLit,
    Lit,
    MacroRef,
    Not,
    Or,
    ParseError,
    Transform,
    parse_condition,
    parse_field_expr,
)
from tests.unit.rules_support import exec_ctx, holds, open_ctx


def test_or_is_loosest_then_and_then_not() -> None:
    tree = parse_condition("a or b and not c")
    assert isinstance(tree, Or)
    assert isinstance(tree.items[0], MacroRef)
    second = tree.items[1]
    assert isinstance(second, And)
    assert isinstance(second.items[1], Not)
    assert isinstance(second.items[1].item, MacroRef)


def test_parentheses_group() -> None:
    tree = parse_condition("(a or b) and c")
    assert isinstance(tree, And)
    assert isinstance(tree.items[0], Or)


def test_not_binds_tighter_than_and() -> None:
    tree = parse_condition("not a and b")
    assert isinstance(tree, And)
    assert isinstance(tree.items[0], Not)


def test_keywords_need_word_boundaries() -> None:
    tree = parse_condition("andy and notable or oracle")
    assert isinstance(tree, Or)
    assert [m.name for m in tree.items[0].items] == ["andy", "notable"]
    tree = parse_condition("not(a)")
    assert isinstance(tree, Not)


def test_checks_symbols_and_words() -> None:
    for op in (
        "=",
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
        "regex",
        "bcontains",
        "bstartswith",
    ):
        tree = parse_condition(f"proc.name {op} x")
        assert isinstance(tree, Check) and tree.op == op
    assert parse_condition("proc.name == x").op == "="
    assert parse_condition("proc.name=x").rhs.text == "x"
    ex = parse_condition("proc.name exists")
    assert ex.op == "exists" and ex.rhs is None


def test_list_values_and_names() -> None:
    tree = parse_condition('proc.name in (bash, "sh", shell_binaries)')
    assert isinstance(tree.rhs, ListLit)
    assert [(i.text, i.quoted) for i in tree.rhs.items] == [
        ("bash", False),
        ("sh", True),
        ("shell_binaries", False),
    ]
    assert parse_condition("proc.name in ()").rhs.items == []
    assert [i.text for i in parse_condition("fd.name pmatch (/etc, /usr/bin)").rhs.items] == [
        "/etc",
        "/usr/bin",
    ]
    assert [i.text for i in parse_condition("proc.aname intersects (a,b)").rhs.items] == ["a", "b"]


def test_bare_values_run_to_blank_paren_or_comma() -> None:
    assert parse_condition("proc.pname = runc:[0:PARENT]").rhs.text == "runc:[0:PARENT]"
    assert parse_condition("fd.name startswith /etc/cron.").rhs.text == "/etc/cron."
    assert parse_condition("proc.args contains --x=1").rhs.text == "--x=1"
    assert parse_condition("(proc.name = a)").rhs.text == "a"


def test_quoted_strings_and_escapes() -> None:
    assert parse_condition(r'proc.cmdline contains "a \"b\" c"').rhs.text == 'a "b" c'
    assert parse_condition(r"proc.cmdline contains 'it\'s'").rhs.text == "it's"
    assert parse_condition(r'proc.cmdline contains "tab\there"').rhs.text == "tab\there"
    assert parse_condition(r'proc.cmdline contains "\x41"').rhs.text == "A"
    assert parse_condition(r'proc.cmdline regex "^a\.b$"').rhs.text == r"^a\.b$"  # unknown escape kept
    assert parse_condition('proc.name = "a b (c)"').rhs.text == "a b (c)"
    assert parse_condition('proc.name = ""').rhs.text == ""


def test_fields_with_arguments_and_transformers() -> None:
    tree = parse_condition("proc.aname[2] = sshd")
    assert isinstance(tree.lhs, FieldRef) and tree.lhs.arg == "2" and tree.lhs.text == "proc.aname[2]"
    assert parse_condition("proc.env[HOME] = /root").lhs.arg == "HOME"
    tree = parse_condition("tolower(basename(proc.exepath)) = bash")
    assert isinstance(tree.lhs, Transform) and tree.lhs.fn == "tolower"
    assert isinstance(tree.lhs.inner, Transform) and tree.lhs.inner.fn == "basename"
    assert tree.lhs.text == "tolower(basename(proc.exepath))"
    tree = parse_condition("proc.name = val(proc.pname)")
    assert isinstance(tree.rhs, FieldRef) and tree.rhs.name == "proc.pname"
    assert isinstance(parse_field_expr("len(proc.args)"), Transform)


def test_a_dotless_word_before_an_operator_is_a_field() -> None:
    tree = parse_condition("foo = bar")
    assert isinstance(tree, Check) and tree.lhs.name == "foo"


@pytest.mark.parametrize(
    ("text", "pos", "code"),
    [
        ("", 0, "syntax-error"),
        ("proc.name = a and", 17, "syntax-error"),
        ("proc.name = a b", 14, "syntax-error"),
        ("(proc.name = a", 0, "syntax-error"),
        ("proc.name = a)", 13, "syntax-error"),
        ("proc.name", 9, "bad-operator"),
        ("proc.name foo bar", 10, "bad-operator"),
        ("proc.name !~ bar", 10, "bad-operator"),
        ("proc.name in bash", 13, "syntax-error"),
        ("proc.name in (a, b", 13, "syntax-error"),
        ("proc.name in (a b)", 16, "syntax-error"),
        ("proc.name in (a,)", 16, "syntax-error"),
        ('proc.name = "abc', 12, "syntax-error"),
        ("proc.name =", 11, "syntax-error"),
        ("proc.aname[2 = x", 10, "syntax-error"),
        ("and", 0, "syntax-error"),
        ("a or or b", 5, "syntax-error"),
        ("tolower(proc.name = x", 18, "syntax-error"),
        ("proc.name = val(proc.pname", 26, "syntax-error"),
        ("= x", 0, "syntax-error"),
    ],
)
def test_errors_are_located(text: str, pos: int, code: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_condition(text)
    assert info.value.pos == pos, info.value.message
    assert info.value.code == code


def test_depth_is_bounded() -> None:
    deep = "(" * (MAX_DEPTH + 5) + "a" + ")" * (MAX_DEPTH + 5)
    with pytest.raises(ParseError, match="nested"):
        parse_condition(deep)
    nots = "not " * (MAX_DEPTH + 5) + "a"
    with pytest.raises(ParseError, match="nested"):
        parse_condition(nots)
    ok = "(" * 20 + "a" + ")" * 20
    assert isinstance(parse_condition(ok), MacroRef)


def test_precedence_in_evaluation() -> None:
    ctx = exec_ctx()  # bash, child of nginx
    assert holds("proc.name = nope or proc.name = bash and proc.pname = nginx", exec_ctx())
    assert not holds("(proc.name = nope or proc.name = bash) and proc.pname = nope", ctx)
    assert holds("proc.name = nope or (proc.name = bash and proc.pname = nginx)", ctx)
    assert holds("not proc.name = nope and proc.name = bash", ctx)
    assert not holds("not (proc.name = nope or proc.name = bash)", ctx)
    assert holds("not not proc.name = bash", ctx)
    assert not holds("evt.type = execve and not evt.type = execve", ctx)


def test_lit_positions_point_at_values() -> None:
    tree = parse_condition("proc.name in (a, 'b')")
    items = tree.rhs.items
    assert isinstance(items[0], Lit) and items[0].pos == 14 and items[1].pos == 17
    assert holds("fd.name in ('/etc/shadow')", open_ctx("/etc/shadow"))
