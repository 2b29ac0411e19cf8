"""Turn documents holding hostile strings into one valid JSON line, always.

Strings from monitored processes are ``surrogateescape``-decoded, so bytes that are not UTF-8 show up as lone
surrogates, which JSON cannot carry. The fast path hands the document to orjson as is; only when that fails
is it rewritten: in each string that is not valid UTF-8, ``\\`` becomes ``\\\\`` and each undecodable byte
``\\xNN``, and the field's dotted name is listed under ``sentinel.escaped_fields`` so the original bytes can
be recovered exactly (``unescape``). Every string under a listed name is escaped, clean or not (list
elements and paths repeated in a list of objects included), so ``unescape`` is right for each of them.
Control characters and newlines are escaped by JSON itself.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_ESCAPED = re.compile(r"\\(\\|x[0-9a-f]{2})")


def needs_escape(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def escape(text: str) -> str:
    """Reversible printable form of a surrogateescape string that is not valid UTF-8."""
    out: list[str] = []
    for ch in text.replace("\\", "\\\\"):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\ufffd")  # a lone surrogate that no byte produced: cannot be round-tripped
        else:
            out.append(ch)
    return "".join(out)


def unescape(text: str) -> bytes:
    """The original bytes of a field listed in ``sentinel.escaped_fields``."""

    def repl(m: re.Match[str]) -> str:
        tok = m.group(1)
        return "\\" if tok == "\\" else chr(0xDC00 + int(tok[1:], 16))

    return _ESCAPED.sub(repl, text).encode("utf-8", "surrogateescape")


def _dirty_paths(value: Any, path: str, found: set[str]) -> None:
    """Dotted paths holding at least one string (or key) that is not valid UTF-8."""
    if isinstance(value, str):
        if needs_escape(value):
            found.add(path)
    elif isinstance(value, dict):
        for k, v in value.items():
            key = k if isinstance(k, str) else str(k)
            if needs_escape(key):
                key = escape(key)
                found.add(f"{path}.{key}" if path else key)
            _dirty_paths(v, f"{path}.{key}" if path else key, found)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _dirty_paths(v, path, found)


def _rewrite(value: Any, path: str, dirty: set[str]) -> Any:
    """Escape every string under a dirty path, clean or not, so ``unescape`` is right for all of them."""
    if isinstance(value, str):
        return escape(value) if path in dirty else value
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = k if isinstance(k, str) else str(k)
            if needs_escape(key):
                key = escape(key)
            out[key] = _rewrite(v, f"{path}.{key}" if path else key, dirty)
        return out
    if isinstance(value, (list, tuple)):
        return [_rewrite(v, path, dirty) for v in value]
    return value


def dumps(doc: dict[str, Any]) -> bytes:
    """One JSON document, without a newline; never raises for hostile strings."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        pass
    dirty: set[str] = set()
    _dirty_paths(doc, "", dirty)
    clean = _rewrite(doc, "", dirty)
    if dirty:
        sentinel = clean.get("sentinel")
        if not isinstance(sentinel, dict):
            sentinel = clean["sentinel"] = {}
        sentinel["escaped_fields"] = sorted(dirty)
    return orjson.dumps(clean, default=str)
