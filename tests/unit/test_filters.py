"""``--filter`` expressions: parsing, each operator, list fields, ``!=`` and missing fields."""

from __future__ import annotations

from typing import Any

import pytest

from sentinel.filters import FieldFilter, FilterError, compile_filters, parse_filter

DOC: dict[str, Any] = {
    "@timestamp": "2023-11-14T22:13:21.000000000Z",
    "process": {
        "name": "bash",
        "pid": 4242,
        "args": ["curl", "-fsSL", "https://example.com/x.sh"],
        "command_line": "curl -fsSL https://example.com/x.sh",
        "working_directory": None,
        "user": {"id": "1000", "name": "alice"},
        "parent": {"pid": 1, "name": "systemd"},
    },
    "file": {"path": "/etc/passwd"},
    "destination": {"port": 53, "ip": "10.0.0.1"},
    "sentinel": {"truncated": {"args": True}, "ancestors": [{"pid": 1, "executable": "/sbin/init"}]},
    "event": {"type": ["connection", "start"]},
}


def match(expr: str, doc: dict[str, Any] = DOC) -> bool:
    return parse_filter(expr)(doc)


# --------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("expr", "path", "op", "value"),
    [
        ("process.name=bash", ("process", "name"), "=", "bash"),
        ("process.name!=bash", ("process", "name"), "!=", "bash"),
        ("process.command_line~curl", ("process", "command_line"), "~", "curl"),
        ("file.path^=/etc/", ("file", "path"), "^=", "/etc/"),
        ("file.path$=.conf", ("file", "path"), "$=", ".conf"),
        ("  process.name  =  bash  ", ("process", "name"), "=", "bash"),
        ("@timestamp^=2023", ("@timestamp",), "^=", "2023"),
        ("process.command_line=a=b", ("process", "command_line"), "=", "a=b"),
        ("process.command_line~x != y", ("process", "command_line"), "~", "x != y"),
        ("process.args=", ("process", "args"), "=", ""),
        ("_x=1", ("_x",), "=", "1"),
    ],
)
def test_parse(expr: str, path: tuple[str, ...], op: str, value: str) -> None:
    assert parse_filter(expr) == FieldFilter(path, op, value)


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "   ",
        "process.name",
        "=bash",
        "!=bash",
        "1process=x",
        "process name=bash",
        "process.name<5",
        "process.name>=5",
        "process-name=bash",
        "process.name=a\nb",
    ],
)
def test_parse_errors(expr: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_filter(expr)
    message = str(info.value)
    assert repr(expr) in message  # says which expression
    for op in ("=", "!=", "~", "^=", "$="):
        assert op in message  # and what is allowed
    assert "process.name=bash" in message  # with an example


def test_filter_error_is_a_value_error() -> None:
    """The CLI catches ValueError for usage errors; FilterError must be one."""
    assert issubclass(FilterError, ValueError)


def test_compile_reports_the_bad_expression() -> None:
    with pytest.raises(FilterError, match="nonsense"):
        compile_filters(["process.name=bash", "nonsense"])


# ------------------------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("process.name=bash", True),
        ("process.name=bas", False),
        ("process.name=BASH", False),  # case-sensitive
        ("process.name~as", True),
        ("process.name~zsh", False),
        ("process.name^=ba", True),
        ("process.name^=sh", False),
        ("process.name$=sh", True),
        ("process.name$=ba", False),
        ("process.name!=zsh", True),
        ("process.name!=bash", False),
        ("file.path^=/etc/", True),
        ("file.path$=passwd", True),
        ("file.path~/etc/passwd", True),
    ],
)
def test_string_operators(expr: str, expected: bool) -> None:
    assert match(expr) is expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("destination.port=53", True),
        ("destination.port=053", False),  # text comparison of the rendered value
        ("destination.port!=53", False),
        ("destination.port!=443", True),
        ("destination.port^=5", True),
        ("process.pid~42", True),
        ("process.parent.pid=1", True),
        ("sentinel.truncated.args=true", True),
        ("sentinel.truncated.args=True", False),
        ("sentinel.truncated.args!=false", True),
    ],
)
def test_numbers_and_booleans_compare_as_json_text(expr: str, expected: bool) -> None:
    assert match(expr) is expected


def test_value_with_spaces_and_operators() -> None:
    assert match("process.command_line=curl -fsSL https://example.com/x.sh")
    assert match("process.command_line~-fsSL https://")


# ----------------------------------------------------------------------------------------------- lists


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("process.args=curl", True),
        ("process.args=-fsSL", True),
        ("process.args=wget", False),
        ("process.args~example.com", True),
        ("process.args^=https://", True),
        ("process.args$=.sh", True),
        ("process.args$=.py", False),
        ("event.type=start", True),
        ("event.type=end", False),
    ],
)
def test_list_matches_when_any_element_matches(expr: str, expected: bool) -> None:
    assert match(expr) is expected


def test_list_not_equal_means_no_element_equals() -> None:
    assert match("process.args!=wget")
    assert not match("process.args!=curl")
    assert not match("process.args!=-fsSL")


def test_empty_list() -> None:
    doc = {"process": {"args": []}}
    assert not match("process.args=x", doc)
    assert not match("process.args~", doc)
    assert match("process.args!=x", doc)


def test_list_with_null_elements() -> None:
    doc = {"process": {"args": [None, "a"]}}
    assert match("process.args=a", doc)
    assert not match("process.args=None", doc)


# -------------------------------------------------------------------------------------- missing fields


@pytest.mark.parametrize("op", ["=", "~", "^=", "$="])
def test_missing_field_never_matches_positive_operators(op: str) -> None:
    assert not match(f"no.such.field{op}x")
    assert not match(f"process.nothing{op}x")
    assert not match(f"process.name.deeper{op}bash")  # through a string
    assert not match(f"process.working_directory{op}None")  # present but null


@pytest.mark.parametrize("value", ["x", "", "None", "null"])
def test_missing_field_is_not_equal_to_anything(value: str) -> None:
    assert match(f"no.such.field!={value}")
    assert match(f"process.working_directory!={value}")


def test_empty_value() -> None:
    assert not match("process.name=")
    assert match("process.name~")  # every present string contains ""
    assert match("process.name^=")
    assert not match("no.such.field~")


def test_non_dict_document_root() -> None:
    assert not parse_filter("a=b")({"a": {"b": 1}})
    assert parse_filter("a.b=1")({"a": {"b": 1}})


# ------------------------------------------------------------------------------------------- combining


def test_compile_no_filters_is_none() -> None:
    assert compile_filters([]) is None


def test_compile_all_must_hold() -> None:
    keep = compile_filters(["process.name=bash", "destination.port=53"])
    assert keep is not None
    assert keep(DOC)
    keep = compile_filters(["process.name=bash", "destination.port=443"])
    assert keep is not None
    assert not keep(DOC)


def test_compile_same_field_twice() -> None:
    keep = compile_filters(["file.path^=/etc/", "file.path!=/etc/shadow"])
    assert keep is not None
    assert keep(DOC)
    assert not keep({"file": {"path": "/etc/shadow"}})
    assert not keep({"file": {"path": "/tmp/x"}})


# --------------------------------------------------------------------------------------------- containers

FULL = "3ad7b26ded6d8e7b23da7d48fe889434573036c27ae5a74837233de441c3601e"
IN_CONTAINER: dict[str, Any] = {
    **DOC,
    "container": {"id": FULL, "runtime": "docker"},
    "sentinel": {"container": {"short_id": FULL[:12], "rootless": False}},
}


@pytest.mark.parametrize(
    ("expr", "in_container", "on_host"),
    [
        (f"container.id={FULL}", True, False),  # the whole id, as ECS has it
        (f"container.id={FULL[:12]}", True, False),  # the short one, as docker ps and Falco show it
        ("container.id^=3ad7b2", True, False),
        ("container.id=host", False, True),  # Falco's value for a process in no container
        ("container.id!=host", True, False),
        (f"container.id!={FULL[:12]}", False, True),
        ("container.runtime=docker", True, False),
        ("sentinel.container.rootless=false", True, False),
    ],
)
def test_container_id_takes_the_whole_id_the_short_one_and_host(
    expr: str, in_container: bool, on_host: bool
) -> None:
    assert match(expr, IN_CONTAINER) is in_container
    assert match(expr, DOC) is on_host
