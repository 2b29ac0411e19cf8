"""``sentinel.text`` beyond test_encoding: reversible keys (the rarity baseline), printable labels, documents
holding objects, huge integers and cycles, and diagnostics with hostile fields."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import orjson
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel import log as logmod
from sentinel.text import (
    dumps,
    escape,
    escape_keys,
    needs_escape,
    printable,
    unescape,
    unescape_keys,
    unescape_text,
)


def raw(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def test_unescape_text_inverts_escape() -> None:
    for data in (b"/tmp/x-\xff/f\xfe", b"a\\b\xff", b"\\x41\x80", b"\x00\n\xff"):
        assert unescape_text(escape(raw(data))) == raw(data)


def test_unescape_is_total_on_strings_escape_never_writes() -> None:
    """``\\x41`` (below 0x80) never comes out of escape(); a hand-made one still decodes, to its byte."""
    assert unescape("\\x41\\xff") == b"A\xff"


def test_printable_leaves_utf8_alone_and_escapes_the_rest() -> None:
    assert printable("rule \\x41 ✓") == "rule \\x41 ✓"
    assert printable(raw(b"/opt/\xff")) == "/opt/\\xff"
    assert not needs_escape(printable("x\ud800"))


def test_escape_keys_cannot_make_two_keys_equal() -> None:
    """A valid key that looks escaped (a literal backslash, x, f, f) and the byte it looks like stay two."""
    counts = {"/tmp/\\xff": 1.0, raw(b"/tmp/\xff"): 2.0, "/usr/bin/ls": 3.0, "a\x00b": 4.0}
    out, escaped = escape_keys(counts)
    assert len(out) == 4
    assert "/usr/bin/ls" in out and "a\x00b" in out and len(escaped) == 2
    orjson.dumps(out)  # strict JSON now
    assert unescape_keys(orjson.loads(orjson.dumps(out)), escaped) == counts


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.binary(max_size=24).map(raw) | st.text(max_size=12), st.floats(0, 1e6), max_size=8))
def test_property_keys_round_trip_through_json(counts: dict[str, float]) -> None:
    out, escaped = escape_keys(counts)
    back = orjson.loads(orjson.dumps({"counts": out, "escaped_keys": escaped}))
    assert unescape_keys(back["counts"], back["escaped_keys"]) == counts


class _Opaque:
    def __str__(self) -> str:
        return raw(b"opaque \xff")


def test_dumps_takes_objects_huge_ints_and_cycles_without_raising() -> None:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    deep: Any = "leaf"
    for _ in range(400):
        deep = [deep]
    doc = {"path": Path(raw(b"/tmp/\xfe")), "obj": _Opaque(), "big": 2**80, "cyclic": cyclic, "deep": deep,
           3: "int key"}  # fmt: skip
    out = orjson.loads(dumps(doc, default=str))
    assert unescape(out["path"]) == b"/tmp/\xfe" and unescape(out["obj"]) == b"opaque \xff"
    assert out["big"] == str(2**80) and out["cyclic"] == [1, "<cycle>"] and out["3"] == "int key"
    assert sorted(out["sentinel"]["escaped_fields"]) == ["obj", "path"]


def test_diagnostics_with_hostile_fields_are_one_json_line() -> None:
    """A log record quoting a non-UTF-8 path used to raise in orjson (default=str does not help a str)."""
    buf = io.StringIO()
    logmod.configure("debug")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buf))
    try:
        hostile = raw(b"/tmp/x-\xff/f\xfe")
        log = logmod.get_logger()
        log.error("sentinel.test", path=hostile, where=Path(hostile), argv=[hostile], nested={hostile: 1})
        try:
            raise OSError(2, "No such file", hostile)
        except OSError as exc:
            log.error("sentinel.test_exc", exc_info=exc)
    finally:
        logmod.configure("info")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (orjson.loads(line) for line in lines)
    assert unescape(first["path"]) == b"/tmp/x-\xff/f\xfe"
    assert {"path", "where", "argv"} <= set(first["sentinel"]["escaped_fields"])
    assert "OSError" in second["exception"]


def test_raw_bytes_gives_the_bytes_back_and_never_raises() -> None:
    from sentinel.text import raw_bytes

    hostile = b"/tmp/x-\xff/f\xfe".decode("utf-8", "surrogateescape")
    assert raw_bytes(hostile) == b"/tmp/x-\xff/f\xfe" and os.fsdecode(raw_bytes(hostile)) == hostile
    assert raw_bytes("a\ud800b") == "a\ufffdb".encode()  # no byte made that surrogate: U+FFFD, as elsewhere
