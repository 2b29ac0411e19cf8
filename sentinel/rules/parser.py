"""The condition language: Falco's grammar, parsed into a small syntax tree with offsets for diagnostics.

    expr     := and ("or" and)*
    and      := not ("and" not)*
    not      := "not" not | primary
    primary  := "(" expr ")" | check | MACRO
    check    := fieldx ( "exists" | OP value | LISTOP "(" [value ("," value)*] ")" )
    fieldx   := FIELD ["[" ARG "]"] | TRANSFORMER "(" fieldx ")"
    value    := QUOTED | BARE | "val(" fieldx ")"

``or`` binds loosest, then ``and``, then ``not``. Values are lexed in context (after an operator a bare value
runs to the next blank, parenthesis or comma), which is how ``fd.name startswith /etc/cron.`` and
``proc.pname=runc:[0:PARENT]`` stay one value. Nothing here knows fields or types: the compiler checks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sentinel.rules.fields import STRING_OPS, TRANSFORMERS

MAX_DEPTH = 100  # nesting of parentheses/not; deeper is refused rather than overflowing the stack
MAX_LENGTH = 1 << 20

WORD_OPS = STRING_OPS - {"=", "==", "!="}  # the operators spelled as words
LIST_OPS = frozenset({"in", "intersects", "pmatch"})
SYMBOL_OPS = ("==", "!=", "<=", ">=", "=", "<", ">")
KEYWORDS = frozenset({"and", "or", "not"})
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "\\": "\\", '"': '"', "'": "'", "/": "/"}
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT = _IDENT_START | frozenset("0123456789.")
_BARE_STOP = frozenset(" \t\n\r\f\v(),")


class ParseError(Exception):
    """A syntax error at ``pos`` (an offset into the condition); ``code`` is the diagnostic code."""

    def __init__(self, message: str, pos: int, code: str = "syntax-error") -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.code = code


@dataclass(eq=False, slots=True)
class Node:
    pos: int


@dataclass(eq=False, slots=True)
class And(Node):
    items: list[Any]


@dataclass(eq=False, slots=True)
class Or(Node):
    items: list[Any]


@dataclass(eq=False, slots=True)
class Not(Node):
    item: Any


@dataclass(eq=False, slots=True)
class MacroRef(Node):
    name: str


@dataclass(eq=False, slots=True)
class FieldRef(Node):
    """``name`` with its optional ``[arg]`` (text as written; ``arg_pos`` points at it)."""

    name: str
    arg: str | None = None
    arg_pos: int = 0
    end: int = 0

    @property
    def text(self) -> str:
        return self.name if self.arg is None else f"{self.name}[{self.arg}]"


@dataclass(eq=False, slots=True)
class Transform(Node):
    fn: str
    inner: Any  # FieldRef | Transform

    @property
    def text(self) -> str:
        return f"{self.fn}({self.inner.text})"


@dataclass(eq=False, slots=True)
class Lit(Node):
    text: str
    quoted: bool = False


@dataclass(eq=False, slots=True)
class ListLit(Node):
    items: list[Lit]


@dataclass(eq=False, slots=True)
class Check(Node):
    lhs: Any  # FieldRef | Transform
    op: str
    op_pos: int
    rhs: Any = None  # None (exists) | Lit | ListLit | FieldRef/Transform (from val(...))
    rhs_pos: int = 0


def parse_condition(text: str) -> Any:
    """Parse a whole condition; raises :class:`ParseError`."""
    if len(text) > MAX_LENGTH:
        raise ParseError(f"condition too long ({len(text)} characters)", 0)
    p = _Parser(text)
    p.skip()
    if p.eof():
        raise ParseError("empty condition", 0)
    node = p.expr()
    p.skip()
    if not p.eof():
        raise ParseError(f"unexpected {p.describe()}; expected 'and', 'or' or the end of the condition", p.i)
    return node


def parse_field_expr(text: str) -> Any:
    """A field or transformer expression on its own (exception fields, output %fields, field_value)."""
    p = _Parser(text)
    p.skip()
    node = p.fieldx()
    p.skip()
    if not p.eof():
        raise ParseError(f"unexpected {p.describe()} after the field", p.i)
    return node


def unquote(text: str) -> str:
    """A list item written as a quoted condition string (Falco splices list items into the condition, so
    ``'"10.0.0.0/8"'`` is the value 10.0.0.0/8); anything else is returned as it is."""
    if len(text) >= 2 and text[0] in "\"'" and text[-1] == text[0]:
        p = _Parser(text)
        try:
            lit = p.quoted(text[0])
        except ParseError:
            return text
        if p.i == len(text):
            return lit.text
    return text


def quote(value: str) -> str:
    """A value as a quoted condition string (for messages and exception rendering)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Parser:
    __slots__ = ("depth", "i", "n", "s")

    def __init__(self, text: str) -> None:
        self.s = text
        self.n = len(text)
        self.i = 0
        self.depth = 0

    # -- lexing helpers ------------------------------------------------------------------------------------

    def eof(self) -> bool:
        return self.i >= self.n

    def skip(self) -> None:
        s, i, n = self.s, self.i, self.n
        while i < n and s[i].isspace():
            i += 1
        self.i = i

    def peek(self) -> str:
        return self.s[self.i] if self.i < self.n else ""

    def describe(self) -> str:
        if self.eof():
            return "end of condition"
        word = self.s[self.i : self.i + 20].split(None, 1)[0] if not self.s[self.i].isspace() else ""
        return repr(word) if word else repr(self.s[self.i])

    def word_at(self, i: int) -> str:
        """The identifier-like word starting at ``i`` ("" if none)."""
        s, n = self.s, self.n
        if i >= n or s[i] not in _IDENT_START:
            return ""
        j = i + 1
        while j < n and s[j] in _IDENT:
            j += 1
        return s[i:j]

    def keyword(self, kw: str) -> bool:
        """Consume keyword ``kw`` if it is next (as a whole word)."""
        self.skip()
        s, i = self.s, self.i
        if s.startswith(kw, i):
            j = i + len(kw)
            if j >= self.n or s[j] not in _IDENT:
                self.i = j
                return True
        return False

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError(f"condition nested more than {MAX_DEPTH} levels deep", self.i)

    # -- grammar -------------------------------------------------------------------------------------------

    def expr(self) -> Any:
        self.enter()
        start = self.i
        items = [self.and_()]
        while self.keyword("or"):
            items.append(self.and_())
        self.depth -= 1
        return items[0] if len(items) == 1 else Or(start, items)

    def and_(self) -> Any:
        self.skip()
        start = self.i
        items = [self.not_()]
        while self.keyword("and"):
            items.append(self.not_())
        return items[0] if len(items) == 1 else And(start, items)

    def not_(self) -> Any:
        self.skip()
        start = self.i
        if self.keyword("not"):
            self.enter()
            item = self.not_()
            self.depth -= 1
            return Not(start, item)
        return self.primary()

    def primary(self) -> Any:
        self.skip()
        start = self.i
        if self.eof():
            raise ParseError("unexpected end of condition; expected a check, a macro or '('", start)
        ch = self.s[start]
        if ch == "(":
            self.i += 1
            node = self.expr()
            self.skip()
            if self.peek() != ")":
                raise ParseError(f"expected ')' to close the '(' opened here, found {self.describe()}", start)
            self.i += 1
            return node
        word = self.word_at(start)
        if not word:
            raise ParseError(f"unexpected {self.describe()}; expected a check, a macro or '('", start)
        if word in KEYWORDS:
            raise ParseError(f"unexpected '{word}'; expected a check, a macro or '('", start)
        after = start + len(word)
        nxt = self.s[after] if after < self.n else ""
        if word in TRANSFORMERS and nxt == "(":
            return self.check()
        if "." in word or nxt == "[" or self._op_follows(after):
            return self.check()
        self.i = after
        return MacroRef(start, word)

    def _op_follows(self, i: int) -> bool:
        """A bare word followed by an operator is a (mistyped) field, not a macro."""
        s, n = self.s, self.n
        while i < n and s[i].isspace():
            i += 1
        if i >= n:
            return False
        if s[i] in "=<>" or s.startswith("!=", i):
            return True
        w = self.word_at(i)
        return w in WORD_OPS

    def fieldx(self) -> Any:
        self.skip()
        start = self.i
        word = self.word_at(start)
        if not word:
            raise ParseError(f"expected a field name, found {self.describe()}", start)
        after = start + len(word)
        if word in TRANSFORMERS and after < self.n and self.s[after] == "(":
            self.enter()
            self.i = after + 1
            inner = self.fieldx()
            self.skip()
            if self.peek() != ")":
                raise ParseError(f"expected ')' to close {word}(, found {self.describe()}", self.i)
            self.i += 1
            self.depth -= 1
            return Transform(start, word, inner)
        self.i = after
        ref = FieldRef(start, word, end=after)
        if self.peek() == "[":
            close = self.s.find("]", self.i + 1)
            if close < 0:
                raise ParseError("unclosed '[' in field argument", self.i)
            ref.arg = self.s[self.i + 1 : close]
            ref.arg_pos = self.i + 1
            self.i = close + 1
            ref.end = self.i
        return ref

    def check(self) -> Check:
        start = self.i
        lhs = self.fieldx()
        self.skip()
        op_pos = self.i
        op = self.operator(lhs)
        if op == "exists":
            return Check(start, lhs, op, op_pos)
        self.skip()
        rhs_pos = self.i
        if op in LIST_OPS:
            if self.peek() != "(":
                raise ParseError(
                    f"'{op}' takes a parenthesised list: {lhs.text} {op} (a, b, list_name)", self.i
                )
            return Check(start, lhs, op, op_pos, self.list_value(), rhs_pos)
        if self.word_at(self.i) == "val" and self.s.startswith("val(", self.i):
            self.i += 4
            inner = self.fieldx()
            self.skip()
            if self.peek() != ")":
                raise ParseError(f"expected ')' to close val(, found {self.describe()}", self.i)
            self.i += 1
            return Check(start, lhs, op, op_pos, inner, rhs_pos)
        if self.eof() or self.peek() in "(),":
            raise ParseError(f"expected a value after '{op}', found {self.describe()}", self.i)
        return Check(start, lhs, op, op_pos, self.value(), rhs_pos)

    def operator(self, lhs: Any) -> str:
        s, i = self.s, self.i
        for sym in SYMBOL_OPS:
            if s.startswith(sym, i):
                self.i = i + len(sym)
                return "=" if sym == "==" else sym
        word = self.word_at(i)
        if word in WORD_OPS:
            self.i = i + len(word)
            return word
        if self.eof():
            raise ParseError(f"expected an operator after {lhs.text}", i, "bad-operator")
        if word and word not in KEYWORDS:
            raise ParseError(f"unknown operator '{word}'", i, "bad-operator")
        if s[i] == "!":
            raise ParseError(f"unknown operator {self.describe()}", i, "bad-operator")
        raise ParseError(f"expected an operator after {lhs.text}, found {self.describe()}", i, "bad-operator")

    def list_value(self) -> ListLit:
        start = self.i
        self.i += 1  # "("
        items: list[Lit] = []
        self.skip()
        if self.peek() == ")":
            self.i += 1
            return ListLit(start, items)
        while True:
            self.skip()
            if self.eof():
                raise ParseError("unclosed '(' in value list", start)
            if self.peek() in ",)":
                raise ParseError(f"expected a value in the list, found {self.describe()}", self.i)
            items.append(self.value())
            self.skip()
            ch = self.peek()
            if ch == ",":
                self.i += 1
                continue
            if ch == ")":
                self.i += 1
                return ListLit(start, items)
            if self.eof():
                raise ParseError("unclosed '(' in value list", start)
            raise ParseError(f"expected ',' or ')' in the value list, found {self.describe()}", self.i)

    def value(self) -> Lit:
        s, start = self.s, self.i
        ch = self.peek()
        if ch in ('"', "'"):
            return self.quoted(ch)
        j = start
        n = self.n
        while j < n and s[j] not in _BARE_STOP:
            j += 1
        self.i = j
        return Lit(start, s[start:j])

    def quoted(self, q: str) -> Lit:
        s, start, n = self.s, self.i, self.n
        out: list[str] = []
        j = start + 1
        while j < n:
            ch = s[j]
            if ch == q:
                self.i = j + 1
                return Lit(start, "".join(out), quoted=True)
            if ch == "\\" and j + 1 < n:
                nxt = s[j + 1]
                if nxt in _ESCAPES:
                    out.append(_ESCAPES[nxt])
                    j += 2
                    continue
                if nxt == "x" and j + 3 < n + 1:
                    digits = s[j + 2 : j + 4]
                    try:
                        out.append(chr(int(digits, 16)))
                        j += 4
                        continue
                    except ValueError:
                        pass
                out.append(ch)  # an unknown escape keeps its backslash (regexes stay readable)
                j += 1
                continue
            out.append(ch)
            j += 1
        raise ParseError("unterminated quoted string", start)
