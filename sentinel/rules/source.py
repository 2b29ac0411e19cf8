"""Where things are in a rules file: line/column arithmetic that agrees with the YAML parser, and locators
that turn an offset inside a condition (which YAML may have folded, unquoted or unescaped) back into a file
position. Every diagnostic goes through here, so every message can point at the exact spot.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Protocol

from sentinel.rules.model import Diagnostic

# PyYAML's reader counts these as line breaks (a lone "\r" too); str.splitlines() knows more, so it cannot
# be used.
_BREAK = re.compile("\r\n|[\n\x85\u2028\u2029\r]")
SNIPPET_MAX = 200  # characters of a very long line shown around the column


class SourceText:
    """The decoded text of one file with its line starts, counted the way the YAML parser counts them."""

    __slots__ = ("_starts", "file", "n_lines", "text")

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.text = text
        starts = [0]
        starts.extend(m.end() for m in _BREAK.finditer(text))
        self._starts = starts
        # A final break does not open another line: "a\n" has one line.
        self.n_lines = max(1, len(starts) - 1 if starts[-1] == len(text) and len(starts) > 1 else len(starts))

    def line_text(self, line: int) -> str:
        """Line ``line`` (1-based) without its line break; "" outside the file."""
        if not 1 <= line <= len(self._starts):
            return ""
        start = self._starts[line - 1]
        end = self._starts[line] if line < len(self._starts) else len(self.text)
        return self.text[start:end].rstrip("\r\n\x85\u2028\u2029")

    def position(self, index: int) -> tuple[int, int]:
        """1-based (line, column) of a character index, clamped into the file."""
        index = min(max(index, 0), len(self.text))
        line0 = bisect.bisect_right(self._starts, index) - 1
        if line0 >= self.n_lines:  # at the very end, after a final line break
            line = self.n_lines
            return line, len(self.line_text(line)) + 1
        return line0 + 1, index - self._starts[line0] + 1

    def clamp(self, line: int, column: int) -> tuple[int, int]:
        """A YAML mark (0-based line and column) as a 1-based position inside the file."""
        line += 1
        column += 1
        if line > self.n_lines:
            line = self.n_lines
            column = len(self.line_text(line)) + 1
        return max(1, line), max(1, column)

    def diagnostic(
        self,
        severity: str,
        code: str,
        message: str,
        line: int,
        column: int,
        item: str | None = None,
    ) -> Diagnostic:
        line = min(max(1, line), self.n_lines)
        snippet = self.line_text(line)
        column = max(1, min(column, len(snippet) + 1))
        if len(snippet) > SNIPPET_MAX:  # keep the column's neighbourhood; the column stays the file's column
            start = max(0, min(column - 1 - SNIPPET_MAX // 2, len(snippet) - SNIPPET_MAX))
            snippet = snippet[start : start + SNIPPET_MAX]
        return Diagnostic(severity, code, message, self.file, line, column, snippet, item)


class Locator(Protocol):
    """Maps an offset inside some text taken from a file back to a character index of that file."""

    src: SourceText

    def index(self, offset: int) -> int: ...


@dataclass(slots=True)
class MarkLoc:
    """A fixed place (a key, a mapping, the start of a file)."""

    src: SourceText
    at: int

    def index(self, offset: int) -> int:
        return self.at


@dataclass(slots=True)
class ScalarLoc:
    """Offsets inside the *value* of a YAML scalar, mapped onto its source text.

    YAML folds lines, strips indentation and resolves escapes, so the value and its source differ; they are
    aligned greedily character by character, which is exact for plain and block scalars and close for quoted
    ones with escapes. Built lazily: only diagnostics need it.
    """

    src: SourceText
    start: int  # source index of the scalar (its quote or block indicator included)
    end: int
    value: str
    style: str | None
    _map: list[int] | None = field(default=None, repr=False)

    def index(self, offset: int) -> int:
        if self._map is None:
            self._map = self._align()
        if not self._map:
            return self.start
        offset = min(max(offset, 0), len(self._map) - 1)
        return self._map[offset]

    def _align(self) -> list[int]:
        text = self.src.text
        end = min(self.end, len(text))
        j = self.start
        if self.style in ("|", ">"):  # content starts on the line after the block header
            m = _BREAK.search(text, j, end)
            j = m.end() if m else j
        elif self.style in ('"', "'"):
            j += 1
        out: list[int] = []
        last = max(self.start, end - 1)
        for ch in self.value:
            if j >= end:
                out.append(last)
                continue
            if ch.isspace():
                if not text[j].isspace():
                    k = j
                    while k < end and k - j < 8 and not text[k].isspace():
                        k += 1
                    if k < end and text[k].isspace():
                        j = k
                out.append(min(j, last))
                j += 1
                continue
            k = j
            limit = min(end, j + 64)
            while k < limit and text[k] != ch:
                k += 1
            if k < limit:
                j = k
            out.append(min(j, last))
            j += 1
        out.append(min(j, last))  # one past the end: errors "at the end of the condition"
        return out


@dataclass(slots=True)
class JoinedLoc:
    """Text made of several fragments joined by one space (a condition and its appends)."""

    src: SourceText
    parts: list[tuple[int, Locator]]  # (start offset in the joined text, locator of that fragment)

    def index(self, offset: int) -> int:
        starts = [p[0] for p in self.parts]
        i = max(0, bisect.bisect_right(starts, offset) - 1)
        start, loc = self.parts[i]
        return loc.index(offset - start)

    def source_of(self, offset: int) -> SourceText:
        starts = [p[0] for p in self.parts]
        i = max(0, bisect.bisect_right(starts, offset) - 1)
        return self.parts[i][1].src


def locate(loc: Locator, offset: int) -> tuple[SourceText, int, int]:
    """(file text, line, column) of an offset through any locator."""
    src = loc.source_of(offset) if isinstance(loc, JoinedLoc) else loc.src
    line, column = src.position(loc.index(offset))
    return src, line, column


def diag_at(
    loc: Locator, offset: int, severity: str, code: str, message: str, item: str | None = None
) -> Diagnostic:
    src, line, column = locate(loc, offset)
    return src.diagnostic(severity, code, message, line, column, item)
