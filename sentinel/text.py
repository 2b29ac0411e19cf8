"""Hostile text on its way out of the agent: one escaping rule for every JSON line, state file and label.

Strings from monitored processes (paths, argv, comm, cwd, exe, socket paths) are ``surrogateescape``-decoded,
so bytes that are not UTF-8 show up as lone surrogates (U+DC80..U+DCFF), which neither JSON nor UTF-8 can
carry: a serializer raises on them. Anything that writes such a string goes through this module.

The rule: a string that is valid UTF-8 is written as it is. A string that is not is written with every ``\\``
doubled and every undecodable byte as ``\\xNN`` (two lower-case hex digits), and the writer records which
strings it escaped, so a reader recovers the bytes exactly:

- JSON documents (alerts in both formats, event documents, diagnostics): the dotted field names are listed
  under ``sentinel.escaped_fields`` (:func:`dumps`); every string under a listed name is escaped, clean or
  not (list elements and a path repeated in a list of objects included), so :func:`unescape` is right for
  each of them.
- mappings whose keys are read back (the anomaly baseline's profiles): :func:`escape_keys` escapes and lists
  every key that is not valid UTF-8 *or holds a backslash*, so an escaped key can never equal a key written
  as it is; :func:`unescape_keys` gives the same keys back.
- text that is only displayed (Prometheus label values): :func:`printable`, escaped without a marker.

Control characters, NUL and newlines are left to JSON's own escaping (``\\n``, ``\\u0000``): a document is one
line whatever its strings hold. A lone surrogate that no byte produced (only Python code can make one)
becomes U+FFFD; nothing read from the kernel, ``/proc`` or a capture contains one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import orjson

V = TypeVar("V")

_ESCAPED = re.compile(r"\\(\\|x[0-9a-f]{2})")
_SURROGATE = re.compile("[\ud800-\udfff]")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson serializes
_MAX_DEPTH = 128  # orjson refuses documents nested deeper than 254 levels
ESCAPED_FIELDS = "escaped_fields"


def needs_escape(text: str) -> bool:
    """True when ``text`` cannot be written as UTF-8 (it holds a lone surrogate)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _surrogate(m: re.Match[str]) -> str:
    code = ord(m.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return "\ufffd"  # a lone surrogate that no byte produced: cannot be round-tripped


def escape(text: str) -> str:
    """Reversible printable form of a string (``\\`` doubled, each undecodable byte ``\\xNN``)."""
    return _SURROGATE.sub(_surrogate, text.replace("\\", "\\\\"))


def _unescaped(m: re.Match[str]) -> str:
    tok = m.group(1)
    if tok == "\\":
        return "\\"
    code = int(tok[1:], 16)
    return chr(code) if code < 0x80 else chr(0xDC00 + code)  # escape() writes only 80..ff; stay total


def unescape_text(text: str) -> str:
    """The ``surrogateescape`` string :func:`escape` was given (the inverse of :func:`escape`)."""
    return _ESCAPED.sub(_unescaped, text)


def unescape(text: str) -> bytes:
    """The original bytes of an escaped string (a field listed in ``sentinel.escaped_fields``)."""
    return unescape_text(text).encode("utf-8", "surrogateescape")


def raw_bytes(text: str) -> bytes:
    """The bytes a ``surrogateescape`` string came from (for binary state such as msgpack); a surrogate no
    byte produced becomes U+FFFD, as everywhere else. ``os.fsdecode`` gives the same string back."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return re.sub("[\ud800-\udc7f\udd00-\udfff]", "\ufffd", text).encode("utf-8", "surrogateescape")


def printable(text: str) -> str:
    """``text`` as it is when valid UTF-8, else escaped: for text that is shown, never read back."""
    return escape(text) if needs_escape(text) else text


# ---- mappings whose keys are read back -------------------------------------------------------------------


def _key_needs_escape(key: str) -> bool:
    return "\\" in key or needs_escape(key)


def escape_keys(mapping: Mapping[str, V]) -> tuple[dict[str, V], list[str]]:
    """A copy with every key JSON-safe, and the escaped keys (as written) in order.

    A key is escaped when it is not valid UTF-8 or holds a backslash: unlisted keys then never contain one,
    while every escaped key does, so no two keys can become equal.
    """
    out: dict[str, V] = {}
    escaped: list[str] = []
    for key, value in mapping.items():
        if _key_needs_escape(key):
            key = escape(key)
            escaped.append(key)
        out[key] = value
    return out, escaped


def unescape_keys(mapping: Mapping[str, V], escaped: Iterable[str]) -> dict[str, V]:
    """The mapping :func:`escape_keys` was given, from its output and list of escaped keys."""
    listed = set(escaped)
    if not listed:
        return dict(mapping)
    return {(unescape_text(k) if k in listed else k): v for k, v in mapping.items()}


# ---- JSON documents -------------------------------------------------------------------------------------


def _plain(value: Any, default: Callable[[Any], Any], depth: int, stack: set[int]) -> Any:
    """Only what orjson always takes: dicts with str keys, lists, str, bool, None, 64-bit ints and floats.

    Objects go through ``default`` (then ``str``); a container deeper than orjson allows, or one that holds
    itself, becomes a short marker string instead of raising.
    """
    if value is None or isinstance(value, bool | float | str):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, dict | list | tuple):
        if depth >= _MAX_DEPTH:
            return "<nested too deep>"
        if id(value) in stack:
            return "<cycle>"
        stack.add(id(value))
        try:
            if isinstance(value, dict):
                return {(k if isinstance(k, str) else str(k)): _plain(v, default, depth + 1, stack)
                        for k, v in value.items()}  # fmt: skip
            return [_plain(v, default, depth + 1, stack) for v in value]
        finally:
            stack.discard(id(value))
    try:
        converted = default(value)
    except Exception:  # a default that fails on this object: its str() still says what it was
        converted = None
    if converted is None or converted is value or not isinstance(converted, str | dict | list | tuple):
        converted = str(value)
    return _plain(converted, default, depth + 1, stack)


def _dirty_paths(value: Any, path: str, found: set[str]) -> None:
    """Dotted paths holding at least one string (or key) that is not valid UTF-8."""
    if isinstance(value, str):
        if needs_escape(value):
            found.add(path)
    elif isinstance(value, dict):
        for k, v in value.items():
            key = k
            if needs_escape(key):
                key = escape(key)
                found.add(f"{path}.{key}" if path else key)
            _dirty_paths(v, f"{path}.{key}" if path else key, found)
    elif isinstance(value, list):
        for v in value:
            _dirty_paths(v, path, found)


def _rewrite(value: Any, path: str, dirty: set[str]) -> Any:
    """Escape every string under a dirty path, clean or not, so ``unescape`` is right for all of them."""
    if isinstance(value, str):
        return escape(value) if path in dirty else value
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = escape(k) if needs_escape(k) else k
            out[key] = _rewrite(v, f"{path}.{key}" if path else key, dirty)
        return out
    if isinstance(value, list):
        return [_rewrite(v, path, dirty) for v in value]
    return value


def dumps(doc: dict[str, Any], default: Callable[[Any], Any] | None = None) -> bytes:
    """One JSON document, without a newline; never raises for hostile strings.

    The fast path hands ``doc`` to orjson as it is; only when that fails is it rewritten: non-UTF-8 strings
    escaped and listed under ``sentinel.escaped_fields``, objects orjson does not know through ``default``
    (else ``str``). The caller's document is never modified (renderers share cached blocks).
    """
    try:
        return orjson.dumps(doc, default=default)
    except TypeError:  # orjson.JSONEncodeError is one
        pass
    plain = _plain(doc, default or str, 0, set())
    dirty: set[str] = set()
    _dirty_paths(plain, "", dirty)
    clean = _rewrite(plain, "", dirty)
    if dirty:
        block = clean.get("sentinel")
        if not isinstance(block, dict):
            block = clean["sentinel"] = {}
        block[ESCAPED_FIELDS] = sorted(dirty)
    return orjson.dumps(clean)
