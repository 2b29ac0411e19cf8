"""``dumps``: every document, however hostile its strings, becomes exactly one line of valid JSON, and the
bytes of non-UTF-8 strings can be recovered from it (``escape``/``unescape`` and ``sentinel.escaped_fields``).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.text import dumps, escape, needs_escape, unescape


def raw(data: bytes) -> str:
    """How the decoder and the capture reader turn kernel bytes into str."""
    return data.decode("utf-8", "surrogateescape")


def one_line(out: bytes) -> Any:
    """Parse ``out`` with both orjson and json, after checking it is a single line; return the document."""
    assert isinstance(out, bytes)
    assert b"\n" not in out
    assert b"\r" not in out
    parsed = orjson.loads(out)
    assert json.loads(out.decode("utf-8")) == parsed
    return parsed


def escaped_fields(doc: dict[str, Any]) -> list[str]:
    return doc.get("sentinel", {}).get("escaped_fields", [])


# ------------------------------------------------------------------------------------------- fast path


def test_fast_path_is_plain_orjson() -> None:
    doc = {"a": 1, "b": {"c": ["x", "y"], "d": None, "e": True}, "f": 1.5}
    assert dumps(doc) == orjson.dumps(doc)


def test_fast_path_adds_no_escaped_fields() -> None:
    doc = {"process": {"name": "bash", "args": ["ls", "-l", "ünïcødé ✓"]}}
    out = one_line(dumps(doc))
    assert out == doc
    assert "sentinel" not in out


def test_valid_utf8_with_backslash_sequences_is_left_alone() -> None:
    """A clean string is not rewritten, so ``\\x41`` written literally stays as it was."""
    doc = {"process": {"command_line": "printf '\\x41\\\\n'"}}
    out = one_line(dumps(doc))
    assert out["process"]["command_line"] == "printf '\\x41\\\\n'"
    assert escaped_fields(out) == []


def test_output_has_no_trailing_newline() -> None:
    out = dumps({"a": "b"})
    assert not out.endswith(b"\n")


# ------------------------------------------------------------------------------------- hostile strings


@pytest.mark.parametrize(
    "text",
    [
        "line1\nline2",
        "cr\rlf\r\n",
        "nul\x00inside",
        "".join(chr(c) for c in range(32)) + "\x7f",
        "tab\tand\x0bvt\x0cff",
        "\u2028\u2029",  # JSON-legal but line separators for some readers
        'quote " and backslash \\ and slash /',
        "\\x41",
        "\\\\x41",
        "\\u0041",
        "\x1b[31mred\x1b[0m",
    ],
)
def test_control_characters_stay_on_one_line(text: str) -> None:
    doc = {"process": {"args": [text], "name": text}, "file": {"path": text}}
    out = one_line(dumps(doc))
    assert out["process"]["args"] == [text]
    assert out["file"]["path"] == text
    assert escaped_fields(out) == []


def test_large_string_is_one_line() -> None:
    text = ("A\n\x00\\" * 25_000)[:100_000]
    out_bytes = dumps({"process": {"command_line": text}})
    out = one_line(out_bytes)
    assert out["process"]["command_line"] == text
    assert len(text) == 100_000


def test_large_non_utf8_string_round_trips() -> None:
    data = bytes(range(256)) * 400  # 100 KB with every byte value, NUL and newline included
    out = one_line(dumps({"process": {"command_line": raw(data)}}))
    assert escaped_fields(out) == ["process.command_line"]
    assert unescape(out["process"]["command_line"]) == data


def test_non_utf8_top_level_string() -> None:
    out = one_line(dumps({"message": raw(b"exec /tmp/\xff\xfe")}))
    assert out["message"] == "exec /tmp/\\xff\\xfe"
    assert escaped_fields(out) == ["message"]
    assert unescape(out["message"]) == b"exec /tmp/\xff\xfe"


def test_non_utf8_in_nested_dicts_lists_the_dotted_path() -> None:
    doc = {
        "process": {
            "name": "ok",
            "executable": raw(b"/tmp/\x80evil"),
            "parent": {"command_line": raw(b"sh -c \xc3\x28")},
        },
        "file": {"path": raw(b"/etc/\xff")},
    }
    out = one_line(dumps(doc))
    assert sorted(escaped_fields(out)) == [
        "file.path",
        "process.executable",
        "process.parent.command_line",
    ]
    assert unescape(out["process"]["executable"]) == b"/tmp/\x80evil"
    assert unescape(out["process"]["parent"]["command_line"]) == b"sh -c \xc3\x28"
    assert unescape(out["file"]["path"]) == b"/etc/\xff"
    assert out["process"]["name"] == "ok"


def test_lists_use_the_path_of_the_list() -> None:
    doc = {"process": {"args": [raw(b"\xff"), raw(b"a\x80b")]}}
    out = one_line(dumps(doc))
    assert escaped_fields(out) == ["process.args"]
    assert [unescape(a) for a in out["process"]["args"]] == [b"\xff", b"a\x80b"]


def test_list_of_dicts_paths_skip_the_index() -> None:
    doc = {"sentinel": {"ancestors": [{"command_line": raw(b"x\xff")}, {"command_line": raw(b"y\xfe")}]}}
    out = one_line(dumps(doc))
    assert escaped_fields(out) == ["sentinel.ancestors.command_line"]
    assert [unescape(a["command_line"]) for a in out["sentinel"]["ancestors"]] == [b"x\xff", b"y\xfe"]


def test_each_path_is_listed_once() -> None:
    doc = {"a": [raw(b"\xff"), raw(b"\xfe"), raw(b"\xfd")], "b": {"c": raw(b"\x80")}}
    out = one_line(dumps(doc))
    assert escaped_fields(out) == ["a", "b.c"]


def test_tuples_are_serialised_as_lists() -> None:
    out = one_line(dumps({"a": (raw(b"\xff"), "ok")}))
    assert out["a"][1] == "ok"
    assert unescape(out["a"][0]) == b"\xff"


def test_existing_sentinel_block_is_kept() -> None:
    doc = {"sentinel": {"event": {"type": "open"}}, "file": {"path": raw(b"/\xff")}}
    out = one_line(dumps(doc))
    assert out["sentinel"]["event"] == {"type": "open"}
    assert out["sentinel"]["escaped_fields"] == ["file.path"]


def test_slow_path_does_not_modify_the_input() -> None:
    """Renderers share cached blocks between documents; encoding must not write into them."""
    doc = {"process": {"args": [raw(b"\xff"), "x"]}, "sentinel": {"event": {"type": "exec"}}}
    before = copy.deepcopy(doc)
    dumps(doc)
    assert doc == before
    assert "escaped_fields" not in doc["sentinel"]


def test_backslash_in_escaped_string_is_doubled_and_reversible() -> None:
    data = b"C:\\x41\\\\ \xff \\xff"
    out = one_line(dumps({"file": {"path": raw(data)}}))
    assert out["file"]["path"] == "C:\\\\x41\\\\\\\\ \\xff \\\\xff"
    assert unescape(out["file"]["path"]) == data


def test_non_string_values_pass_through_the_slow_path() -> None:
    doc = {"n": 5, "f": 0.5, "b": False, "z": None, "s": raw(b"\xff"), "l": [1, None, True]}
    out = one_line(dumps(doc))
    assert {k: out[k] for k in ("n", "f", "b", "z", "l")} == {
        "n": 5,
        "f": 0.5,
        "b": False,
        "z": None,
        "l": [1, None, True],
    }


def test_lone_surrogate_not_from_a_byte_is_replaced() -> None:
    """A high surrogate cannot come from surrogateescape: it is replaced, but the line stays valid JSON."""
    out = one_line(dumps({"a": "x\ud800y"}))
    assert out["a"] == "x\ufffdy"
    assert escaped_fields(out) == ["a"]


def test_mixed_list_elements_all_round_trip() -> None:
    """Every element under a listed path is escaped, clean ones too, so a consumer can unescape them all
    (a regression test: clean elements used to be left as they were and came back wrong)."""
    clean = b"printf \\x41\\\\"  # valid UTF-8 that looks escaped
    dirty = b"\xff"
    out = one_line(dumps({"process": {"args": [raw(clean), raw(dirty)]}}))
    assert escaped_fields(out) == ["process.args"]
    assert [unescape(a) for a in out["process"]["args"]] == [clean, dirty]


def test_mixed_list_of_dicts_all_round_trip() -> None:
    """The same dotted path in several objects of a list (ancestors): all occurrences are escaped."""
    clean = b"bash -c 'echo \\x41'"
    dirty = b"\xfe"
    doc = {"sentinel": {"ancestors": [{"command_line": raw(dirty)}, {"command_line": raw(clean)}]}}
    out = one_line(dumps(doc))
    assert "sentinel.ancestors.command_line" in escaped_fields(out)
    assert [unescape(a["command_line"]) for a in out["sentinel"]["ancestors"]] == [dirty, clean]


def test_clean_paths_are_not_escaped_in_the_slow_path() -> None:
    """Only listed paths are rewritten: another field's backslashes stay as they were."""
    out = one_line(dumps({"file": {"path": raw(b"/\xff")}, "process": {"command_line": "a\\b \\x41"}}))
    assert escaped_fields(out) == ["file.path"]
    assert out["process"]["command_line"] == "a\\b \\x41"


def test_clean_key_with_backslash_unchanged_in_the_slow_path() -> None:
    doc = {"labels": {"C:\\temp": "v"}, "file": {"path": raw(b"/\xff")}}
    out = one_line(dumps(doc))
    assert escaped_fields(out) == ["file.path"]
    assert out["labels"] == {"C:\\temp": "v"}


def test_non_utf8_key_does_not_raise() -> None:
    """``dumps`` promises never to raise for hostile strings; dict keys are strings too."""
    out = one_line(dumps({"env": {raw(b"VAR\xff"): "x"}}))
    (key,) = out["env"]
    assert unescape(key) == b"VAR\xff"
    assert out["env"][key] == "x"
    assert f"env.{key}" in escaped_fields(out)


# ----------------------------------------------------------------------------------- escape / unescape


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"\xff", "\\xff"),
        (b"a\x80b", "a\\x80b"),
        (b"\\\xff", "\\\\\\xff"),
        (b"\\x41\xff", "\\\\x41\\xff"),
    ],
)
def test_escape_examples(data: bytes, text: str) -> None:
    assert needs_escape(raw(data))
    assert escape(raw(data)) == text
    assert unescape(text) == data


def test_needs_escape_only_for_surrogates() -> None:
    assert not needs_escape("plain \\x41 \x00 \n ✓")
    assert needs_escape(raw(b"\xff"))


# ------------------------------------------------------------------------------------------ properties

hostile_bytes = st.binary(max_size=200)
hostile_text = hostile_bytes.map(raw)
field_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6)


@settings(max_examples=400, deadline=None)
@given(hostile_bytes)
def test_property_any_bytes_round_trip_through_escape(data: bytes) -> None:
    text = raw(data)
    assert text.encode("utf-8", "surrogateescape") == data
    if needs_escape(text):
        escaped = escape(text)
        assert not needs_escape(escaped)
        assert unescape(escaped) == data


@settings(max_examples=400, deadline=None)
@given(hostile_bytes, st.lists(field_name, min_size=1, max_size=4))
def test_property_any_bytes_in_a_field_round_trip(data: bytes, path: list[str]) -> None:
    doc: dict[str, Any] = {}
    cur = doc
    for key in path[:-1]:
        cur = cur.setdefault(key, {})
    cur[path[-1]] = raw(data)
    out = one_line(dumps(doc))
    value = out
    for key in path:
        value = value[key]
    dotted = ".".join(path)
    if dotted in escaped_fields(out):
        assert unescape(value) == data
    else:
        assert value.encode("utf-8") == data
    assert (dotted in escaped_fields(out)) == needs_escape(raw(data))


@settings(max_examples=300, deadline=None)
@given(st.lists(hostile_bytes, max_size=8))
def test_property_lists_round_trip_every_element(items: list[bytes]) -> None:
    """With the list's path listed, unescape gives every element's bytes back; unlisted, all are as given."""
    out = one_line(dumps({"process": {"args": [raw(b) for b in items]}}))
    got = out["process"]["args"]
    assert len(got) == len(items)
    listed = "process.args" in escaped_fields(out)
    assert listed == any(needs_escape(raw(b)) for b in items)
    for data, value in zip(items, got, strict=True):
        if listed:
            assert unescape(value) == data
        else:
            assert value.encode("utf-8") == data


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), hostile_text)
json_docs = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(field_name, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(field_name, json_docs, max_size=5))
def test_property_any_document_is_one_valid_json_line(doc: dict[str, Any]) -> None:
    out = dumps(doc)
    parsed = one_line(out)
    assert isinstance(parsed, dict)
    for path in escaped_fields(parsed):
        assert path  # never the empty root path


def test_random_bytes_documents_are_one_line() -> None:
    """Plain random data (no shrinking): a wide net next to the hypothesis tests."""
    for _ in range(200):
        data = os.urandom(64)
        out = one_line(dumps({"a": {"b": [raw(data), raw(data[::-1])]}, "c": raw(data)}))
        if needs_escape(raw(data)):
            assert unescape(out["c"]) == data
        else:
            assert out["c"] == raw(data)
