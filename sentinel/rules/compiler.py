"""From syntax tree to a typed condition tree: fields looked up, operators checked against field types, values
converted once (ints, IP networks, compiled regexes and globs, frozensets for ``in``), macros and lists
resolved, and the event types a condition can match worked out for the index.

The typed tree (``IAnd/IOr/INot/IConst/ICheck``) is what :mod:`sentinel.rules.codegen` turns into Python. It
knows nothing of YAML or of Falco's syntax, so another rule language (Sigma: maps are AND, lists are OR,
modifiers are operators) can build the same tree and get the same matcher.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sentinel.rules.falco_fields import DOTTED
from sentinel.rules.fields import (
    BOOL,
    CANONICAL_EVENT_NAME,
    EVENT_NAMES,
    FIELDS,
    FLOAT,
    INT,
    IP,
    IPNET,
    LIST_OPS,
    OPS_BY_TYPE,
    STRING,
    TRANSFORMERS,
    UNCAPTURED_EVENT_NAMES,
    FieldDef,
)
from sentinel.rules.parser import (
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
from sentinel.rules.source import Locator

# --------------------------------------------------------------------------------------------- typed tree


@dataclass(eq=False, slots=True)
class IAnd:
    items: list[Any]


@dataclass(eq=False, slots=True)
class IOr:
    items: list[Any]


@dataclass(eq=False, slots=True)
class INot:
    item: Any


@dataclass(eq=False, slots=True)
class IConst:
    value: bool


@dataclass(eq=False, slots=True)
class FieldX:
    """A field with its argument and the transformers applied to it (innermost first)."""

    fdef: FieldDef
    arg: int | str | None
    transforms: tuple[str, ...]
    type: str
    text: str


@dataclass(eq=False, slots=True)
class ICheck:
    """``lhs op value``; ``value`` is already converted for the operator (see :func:`convert_value`)."""

    lhs: FieldX
    op: str
    value: Any = None
    rhs: FieldX | None = None  # val(other.field)
    evt_names: frozenset[str] | None = None  # canonical evt.type names of an evt.type =/in check


Where = tuple[Locator, int]
Report = Callable[[Locator, int, str, str, str], None]  # (locator, offset, severity, code, message)


class Scope(Protocol):
    """What a condition may refer to; implemented by the loader (order of definition, cycles, usage)."""

    def macro(self, name: str, seq: int, loc: Locator, pos: int) -> Any | None:
        """The typed tree of macro ``name`` as visible from load position ``seq``; None after reporting."""
        ...

    def list_items(self, name: str, seq: int, loc: Locator, pos: int) -> list[str] | None:
        """Items of list ``name`` (nested lists expanded), or None when no such list exists."""
        ...


class BadValue(Exception):
    pass


NUMERIC = (INT, FLOAT)


# --------------------------------------------------------------------------------------------- values


def parse_int(text: str) -> int:
    t = text.strip()
    try:
        return int(t, 10)
    except ValueError:
        pass
    try:
        return int(t, 0)
    except ValueError:
        pass
    try:
        float(t)
    except ValueError:
        raise BadValue(f"{text!r} is not a number") from None
    raise BadValue(f"{text!r} is not an integer")  # 0.5 against an int field: say what is wrong with it


def parse_float(text: str) -> float:
    t = text.strip()
    try:
        value = float(t)
    except ValueError:
        raise BadValue(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise BadValue(f"{text!r} is not a finite number")
    return value


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low == "true":
        return True
    if low == "false":
        return False
    raise BadValue(f"{text!r} is not a boolean (true or false)")


def parse_net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise BadValue(f"{text!r} is not an IP address or CIDR range") from None


def glob_regex(pattern: str, icase: bool) -> re.Pattern[str]:
    """A shell glob (``*``, ``?``, ``[...]``, ``[!...]``, ``\\`` escapes) as an anchored regex; ``*`` crosses
    ``/`` (Falco's glob is not a path glob)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                neg = body[:1] in ("!", "^")
                if neg:
                    body = body[1:]
                body = body.replace("\\", "\\\\").replace("[", "\\[")
                out.append("[" + ("^" if neg else "") + body + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile("".join(out), re.DOTALL | (re.IGNORECASE if icase else 0))
    except re.error as exc:
        raise BadValue(f"bad glob pattern {pattern!r}: {exc}") from None


def norm_prefix(text: str) -> str:
    t = text.strip()
    if len(t) > 1:
        t = t.rstrip("/") or "/"
    return t


def convert_scalar(ftype: str, text: str) -> Any:
    if ftype == INT:
        return parse_int(text)
    if ftype == FLOAT:
        return parse_float(text)
    if ftype == BOOL:
        return parse_bool(text)
    if ftype in (IP, IPNET):
        return parse_net(text)
    return text


def convert_value(ftype: str, op: str, texts: list[str]) -> Any:
    """The constant a check compares with, in the form the generated code uses; raises BadValue."""
    if op in ("=", "!="):
        v = convert_scalar(ftype, texts[0])
        return (v,) if ftype in (IP, IPNET) else v
    if op in ("<", "<=", ">", ">="):
        return parse_float(texts[0]) if ftype == FLOAT else parse_int(texts[0])
    if op in ("contains", "startswith", "endswith"):
        return texts[0]
    if op == "icontains":
        return texts[0].lower()
    if op in ("bcontains", "bstartswith"):
        try:
            return bytes.fromhex(texts[0].replace(" ", ""))
        except ValueError:
            raise BadValue(f"{texts[0]!r} is not hex bytes (as in bcontains 2f746d70)") from None
    if op in ("glob", "iglob"):
        return glob_regex(texts[0], op == "iglob").fullmatch
    if op == "regex":
        try:
            return re.compile(texts[0], re.DOTALL).fullmatch
        except (re.error, OverflowError, RecursionError) as exc:
            raise BadValue(f"bad regular expression {texts[0]!r}: {exc}") from None
    if op in ("in", "intersects"):
        if ftype in (IP, IPNET):
            return tuple(parse_net(t) for t in texts)
        return frozenset(convert_scalar(ftype, t) for t in texts)
    if op == "pmatch":
        return frozenset(norm_prefix(t) for t in texts)
    return None  # exists


# --------------------------------------------------------------------------------------------- compiler


def suggest_field(name: str) -> str | None:
    """The known field an unknown name most likely misspells, or None. Looked for among the fields of the
    name's own group (``thread.cap_efective`` → ``thread.cap_effective``, never ``fd.*``); across all
    fields only when the group itself is unknown (``prc.name``). Falco's whole syscall catalogue is known,
    so a real Falco field never gets here to be pointed elsewhere."""
    if name.lower() in FIELDS:
        return name.lower()
    group = name.split(".", 1)[0] + "."
    same = [f for f in FIELDS if f.startswith(group)]
    close = difflib.get_close_matches(name, same or FIELDS, n=1)
    return close[0] if close else None


def dotted_field(name: str) -> FieldDef | None:
    """A not-captured field whose argument Falco writes after a dot (``evt.arg.NAME``, ``evt.type.is.open``,
    ``thread.cgroup.cpu``), or None when ``name`` is not one."""
    for prefix, (ftype, desc) in DOTTED.items():
        rest = name[len(prefix) :]
        if name.startswith(prefix) and rest and "." not in rest:
            return FieldDef(name, ftype, desc, on=())
    return None


class CondCompiler:
    """Type-checks conditions in one scope, reporting every problem it finds (not just the first)."""

    def __init__(self, scope: Scope, report: Report) -> None:
        self.scope = scope
        self._report = report
        self.errors = 0
        self.unknown_fields = 0

    def error(self, loc: Locator, pos: int, code: str, message: str) -> None:
        self.errors += 1
        if code == "unknown-field":
            self.unknown_fields += 1
        self._report(loc, pos, "error", code, message)

    def warn(self, loc: Locator, pos: int, code: str, message: str) -> None:
        self._report(loc, pos, "warning", code, message)

    # -- conditions -----------------------------------------------------------------------------------

    def condition(self, text: str, loc: Locator, seq_of: Callable[[int], int]) -> Any | None:
        """Typed tree of a condition, or None (after reporting) when it has errors."""
        try:
            tree = parse_condition(text)
        except ParseError as exc:
            self.error(loc, exc.pos, exc.code, exc.message)
            return None
        except RecursionError:
            self.error(loc, 0, "syntax-error", "condition too deeply nested")
            return None
        before = self.errors
        try:
            ir = self.node(tree, loc, seq_of)
        except RecursionError:
            self.error(loc, 0, "syntax-error", "condition too deeply nested once its macros are expanded")
            return None
        return None if self.errors > before else ir

    def node(self, n: Any, loc: Locator, seq_of: Callable[[int], int]) -> Any:
        if isinstance(n, And):
            return IAnd([self.node(i, loc, seq_of) for i in n.items])
        if isinstance(n, Or):
            return IOr([self.node(i, loc, seq_of) for i in n.items])
        if isinstance(n, Not):
            return INot(self.node(n.item, loc, seq_of))
        if isinstance(n, MacroRef):
            ir = self.scope.macro(n.name, seq_of(n.pos), loc, n.pos)
            if ir is None:
                self.errors += 1
                return IConst(False)
            return ir
        if isinstance(n, Check):
            return self.check(n, loc, seq_of) or IConst(False)
        raise TypeError(f"unexpected node {n!r}")  # pragma: no cover - the parser makes only these

    def check(self, n: Check, loc: Locator, seq_of: Callable[[int], int]) -> ICheck | None:
        lhs = self.fieldx(n.lhs, loc)
        rhs_field: FieldX | None = None
        values: list[tuple[str, bool, Locator, int]] | None = None
        if isinstance(n.rhs, (FieldRef, Transform)):
            rhs_field = self.fieldx(n.rhs, loc)
            if rhs_field is None:
                return None
        elif isinstance(n.rhs, ListLit):
            values = [(i.text, i.quoted, loc, i.pos) for i in n.rhs.items]
        elif isinstance(n.rhs, Lit):
            values = [(n.rhs.text, n.rhs.quoted, loc, n.rhs.pos)]
        if lhs is None:
            return None
        return self.typed_check(
            lhs, n.op, (loc, n.op_pos), values, rhs_field, seq_of(n.pos), (loc, n.rhs_pos)
        )

    def fieldx(self, n: Any, loc: Locator) -> FieldX | None:
        """Look up a field (with transformers); None after reporting an unknown field or bad argument."""
        if isinstance(n, Transform):
            inner = self.fieldx(n.inner, loc)
            if inner is None:
                return None
            want, gives = TRANSFORMERS[n.fn]
            if inner.type != want:
                self.error(
                    loc,
                    n.pos,
                    "bad-operator",
                    f"{n.fn}() applies to {want} fields; {inner.text} is {inner.type}",
                )
                return None
            return FieldX(inner.fdef, inner.arg, (*inner.transforms, n.fn), gives, n.text)
        fdef = FIELDS.get(n.name)
        if fdef is None:
            fdef = dotted_field(n.name)
            if fdef is None:
                close = suggest_field(n.name)
                hint = f"; did you mean {close}?" if close else " (`sentinel fields` lists them)"
                self.error(loc, n.pos, "unknown-field", f"unknown field '{n.name}'{hint}")
                return None
        arg: int | str | None = None
        if n.arg is not None:
            if not fdef.arg:
                self.error(loc, n.arg_pos, "bad-value", f"field {fdef.name} takes no argument")
                return None
            if fdef.arg.startswith("index"):
                try:
                    arg = int(n.arg.strip())
                    if arg < 0:
                        raise ValueError
                except ValueError:
                    what = "an ancestor index" if fdef.multi_p else "an index"
                    self.error(
                        loc,
                        n.arg_pos,
                        "bad-value",
                        f"{fdef.name}[...] takes {what} (0, 1, 2 ...), not {n.arg!r}",
                    )
                    return None
            else:
                arg = n.arg
        elif fdef.arg == "index":
            self.error(loc, n.end, "bad-value", f"field {fdef.name} needs an index: {fdef.name}[N]")
            return None
        elif fdef.arg == "key":
            self.error(loc, n.end, "bad-value", f"field {fdef.name} needs an argument: {fdef.name}[KEY]")
            return None
        if not fdef.filled:
            self.warn(
                loc,
                n.pos,
                "field-not-captured",
                f"{fdef.name} is not captured by sentinel: it is always missing, so checks on it never hold",
            )
        return FieldX(fdef, arg, (), fdef.type, n.text)

    def typed_check(
        self,
        lhs: FieldX,
        op: str,
        op_at: Where,
        values: list[tuple[str, bool, Locator, int]] | None,
        rhs_field: FieldX | None,
        seq: int,
        value_at: Where,
    ) -> ICheck | None:
        """One check from its parts (exceptions build checks this way, each part with its own location)."""
        allowed = OPS_BY_TYPE[lhs.type]
        if op not in allowed:
            self.error(
                op_at[0],
                op_at[1],
                "bad-operator",
                f"operator '{op}' does not apply to {lhs.text} ({lhs.type}); use one of: "
                f"{', '.join(sorted(allowed))}",
            )
            return None
        if op == "exists":
            return ICheck(lhs, op)
        if rhs_field is not None:
            if op not in ("=", "!=", "<", "<=", ">", ">=", "contains", "startswith", "endswith"):
                self.error(op_at[0], op_at[1], "bad-operator", f"operator '{op}' cannot compare two fields")
                return None
            numeric = lhs.type in NUMERIC and rhs_field.type in NUMERIC  # ints and floats compare as numbers
            if (
                (rhs_field.type != lhs.type and not numeric)
                or (op in ("<", "<=", ">", ">=") and lhs.type not in NUMERIC)
                or (op in ("contains", "startswith", "endswith") and lhs.type != STRING)
            ):
                self.error(
                    value_at[0],
                    value_at[1],
                    "bad-value",
                    f"cannot compare {lhs.text} ({lhs.type}) {op} {rhs_field.text} ({rhs_field.type})",
                )
                return None
            return ICheck(lhs, op, rhs=rhs_field)
        assert values is not None
        origins: list[Where] = []  # where each of texts was written (a named list's items: at its name)
        if op in LIST_OPS:
            texts: list[str] = []
            for text, quoted, vloc, vpos in values:
                items = None if quoted else self.scope.list_items(text, seq, vloc, vpos)
                if items is not None:
                    texts.extend(items)
                    origins.extend([(vloc, vpos)] * len(items))
                else:
                    origins.append((vloc, vpos))
                    if (
                        not quoted
                        and lhs.fdef.path_like
                        and "_" in text
                        and "/" not in text
                        and not lhs.transforms
                    ):
                        self.warn(
                            vloc,
                            vpos,
                            "undefined-list",
                            f"'{text}' is not a list: it is compared as a literal path",
                        )
                    texts.append(text)
        else:
            texts = [values[0][0]]
        if lhs.fdef.name == "evt.type" and not lhs.transforms:
            return self.event_type_check(lhs, op, texts, values, value_at)
        try:
            value = convert_value(lhs.type, op, texts)
        except BadValue as exc:
            vloc, vpos = self.bad_item(lhs.type, op, texts, origins) or value_at
            msg = str(exc)
            word = len(values) == 1 and re.fullmatch(r"\w+", values[0][0])
            if lhs.type in NUMERIC and op in LIST_OPS and word:
                msg += f" (and no list named {values[0][0]!r} is defined)"
            self.error(vloc, vpos, "bad-value", f"{msg}; {lhs.text} is {lhs.type}")
            return None
        return ICheck(lhs, op, value)

    @staticmethod
    def bad_item(ftype: str, op: str, texts: list[str], origins: list[Where]) -> Where | None:
        """Where the first unconvertible item of an in/intersects list was written, to point at it rather
        than at the list."""
        if op not in ("in", "intersects") or len(origins) != len(texts):
            return None
        for text, origin in zip(texts, origins, strict=True):
            try:
                convert_scalar(ftype, text)
            except BadValue:
                return origin
        return None

    def event_type_check(
        self,
        lhs: FieldX,
        op: str,
        texts: list[str],
        values: list[tuple[str, bool, Locator, int]],
        value_at: Where,
    ) -> ICheck | None:
        """evt.type values are names: canonicalised, and names sentinel never sees are warned about."""
        vloc, vpos = value_at
        if op not in ("=", "!=", "in", "intersects"):
            try:
                return ICheck(lhs, op, convert_value(STRING, op, texts))
            except BadValue as exc:
                self.error(vloc, vpos, "bad-value", str(exc))
                return None
        names = []
        uncaptured = []
        unknown = []
        for t in texts:
            name = t.strip()
            if name in EVENT_NAMES:
                names.append(CANONICAL_EVENT_NAME.get(name, name))
            elif name in UNCAPTURED_EVENT_NAMES:
                uncaptured.append(name)
            else:
                unknown.append(name)
        if uncaptured:
            self.warn(
                vloc,
                vpos,
                "event-type-not-captured",
                f"sentinel does not capture {', '.join(uncaptured)} events: this part never matches",
            )
        if unknown:
            self.warn(
                vloc,
                vpos,
                "event-type-not-captured",
                f"unknown event type {', '.join(map(repr, unknown))}: this part never matches",
            )
        canon = frozenset(names)
        if op in ("=", "!="):
            value: Any = next(iter(canon)) if canon else "\0never"
        else:
            value = canon
        return ICheck(lhs, op, value, evt_names=canon if op in ("=", "in", "intersects") else None)

    # -- exceptions and outputs -----------------------------------------------------------------------

    def field_text(self, text: str, loc: Locator) -> FieldX | None:
        """A field written on its own (an exception's fields entry)."""
        try:
            n = parse_field_expr(text)
        except ParseError as exc:
            self.error(loc, exc.pos, "unknown-field", f"bad field {text!r}: {exc.message}")
            return None
        return self.fieldx(n, loc)


# --------------------------------------------------------------------------------------------- analysis


def event_names(ir: Any) -> frozenset[str] | None:
    """The canonical evt.type names a condition can match, or None when it does not restrict them.

    As in Falco: an ``evt.type = X`` / ``evt.type in (...)`` in an AND chain restricts; an OR restricts only
    if every branch does; ``not`` never restricts (so ``not evt.type = X`` checks every event).
    """
    if isinstance(ir, ICheck):
        return ir.evt_names
    if isinstance(ir, IAnd):
        out: frozenset[str] | None = None
        for item in ir.items:
            sub = event_names(item)
            if sub is not None:
                out = sub if out is None else out & sub
        return out
    if isinstance(ir, IOr):
        union: set[str] = set()
        for item in ir.items:
            sub = event_names(item)
            if sub is None:
                return None
            union |= sub
        return frozenset(union)
    if isinstance(ir, IConst):
        return None if ir.value else frozenset()
    return None


def event_types(names: frozenset[str] | None) -> frozenset[int] | None:
    if names is None:
        return None
    return frozenset(int(EVENT_NAMES[n]) for n in names if n in EVENT_NAMES)


MAX_IR_DEPTH = 64  # nesting after macros are expanded; Python's own parser stops at 200 parentheses


def depth(ir: Any) -> int:
    """Nesting depth of a typed condition (iterative: a pathological one must not overflow the stack)."""
    best = 0
    stack = [(ir, 1)]
    while stack:
        node, d = stack.pop()
        best = max(best, d)
        if best > MAX_IR_DEPTH:
            return best
        if isinstance(node, (IAnd, IOr)):
            stack.extend((item, d + 1) for item in node.items)
        elif isinstance(node, INot):
            stack.append((node.item, d + 1))
    return best


def fields_read(ir: Any) -> set[str]:
    """Names of the fields a typed condition reads (both sides of val() comparisons)."""
    out: set[str] = set()
    stack = [ir]
    while stack:
        node = stack.pop()
        if isinstance(node, ICheck):
            out.add(node.lhs.fdef.name)
            if node.rhs is not None:
                out.add(node.rhs.fdef.name)
        elif isinstance(node, (IAnd, IOr)):
            stack.extend(node.items)
        elif isinstance(node, INot):
            stack.append(node.item)
    return out


def on_demand_first(text: str, ir: Any) -> tuple[int, str] | None:
    """(offset, field) of a top-level AND term reading an on-demand field (the anomaly score) that comes
    before a cheaper term: the matcher evaluates terms in order, so every event reaching it may run the model
    even when the cheap term would have rejected it. evt.type terms do not count (they select the matcher)."""
    try:
        tree = parse_condition(text)
    except (ParseError, RecursionError):
        return None
    if not isinstance(tree, And) or not isinstance(ir, IAnd) or len(tree.items) != len(ir.items):
        return None
    first: tuple[int, str] | None = None
    for node, item in zip(tree.items, ir.items, strict=True):
        names = fields_read(item)
        costly = sorted(n for n in names if n in FIELDS and FIELDS[n].on_demand)
        if costly:
            first = first or (node.pos, costly[0])
        elif first is not None and names - {"evt.type"}:
            return first
    return None


def conjuncts(ir: Any) -> list[Any]:
    """The top-level AND terms (macros are already inlined, so they flatten too)."""
    if isinstance(ir, IAnd):
        out: list[Any] = []
        for item in ir.items:
            out.extend(conjuncts(item))
        return out
    return [ir]


# --------------------------------------------------------------------------------------------- outputs


@dataclass(slots=True)
class OutputTemplate:
    """An output with its %fields: literal text and (key as written, field) parts, in order."""

    parts: list[str | tuple[str, FieldX]]

    @property
    def keys(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for p in self.parts:
            if isinstance(p, tuple):
                seen.setdefault(p[0], None)
        return tuple(seen)

    @property
    def fields(self) -> list[tuple[str, FieldX]]:
        out: dict[str, FieldX] = {}
        for p in self.parts:
            if isinstance(p, tuple):
                out.setdefault(p[0], p[1])
        return list(out.items())


_OUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def parse_output(text: str, loc: Locator, comp: CondCompiler) -> OutputTemplate | None:
    """``%field``, ``%field[N]``, ``%tolower(field)``; ``%%`` is a percent sign; a ``%`` not followed by a
    dotted name is literal. Unknown fields are reported (at their place in the output)."""
    parts: list[str | tuple[str, FieldX]] = []
    lit: list[str] = []
    ok = True
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "%":
            lit.append(c)
            i += 1
            continue
        if text.startswith("%%", i):
            lit.append("%")
            i += 2
            continue
        start = i + 1
        if text.startswith("(", start):  # %(field)
            close = text.find(")", start)
            if close > start:
                key = text[start + 1 : close].strip()
                end = close + 1
            else:
                lit.append(c)
                i += 1
                continue
        else:
            m = _OUT_NAME.match(text, start)
            if not m:
                lit.append(c)
                i += 1
                continue
            key = m.group(0).rstrip(".")
            end = start + len(key)
            if key in TRANSFORMERS and text.startswith("(", end):
                depth, j = 0, end
                while j < n:
                    if text[j] == "(":
                        depth += 1
                    elif text[j] == ")":
                        depth -= 1
                        if depth == 0:
                            break
                    j += 1
                end = min(j + 1, n)
                key = text[start:end]
            elif "." not in key:
                lit.append(c)
                i += 1
                continue
            elif text.startswith("[", end):
                close = text.find("]", end)
                if close > 0:
                    key = text[start : close + 1]
                    end = close + 1
        try:
            node = parse_field_expr(key)
        except ParseError as exc:
            comp.error(loc, start + exc.pos, "unknown-field", f"bad output field %{key}: {exc.message}")
            ok = False
            i = end
            continue
        node = _shift(node, start)
        unknown = _unknown_field(node)
        if unknown is not None:  # as Falco prints a field it cannot fill; the rule still loads
            close = suggest_field(unknown.name)
            hint = f"; did you mean {close}?" if close else ""
            comp.warn(loc, unknown.pos, "unknown-field",
                      f"unknown field '{unknown.name}' in the output prints <NA>{hint}")  # fmt: skip
            lit.append("<NA>")
            i = end
            continue
        fx = comp.fieldx(node, loc)
        if fx is None:
            ok = False
        else:
            if lit:
                parts.append("".join(lit))
                lit = []
            parts.append((key, fx))
        i = end
    if lit:
        parts.append("".join(lit))
    return OutputTemplate(parts) if ok else None


def _unknown_field(node: Any) -> FieldRef | None:
    """The field under any transformers when sentinel does not know it (an output prints it as <NA>)."""
    while isinstance(node, Transform):
        node = node.inner
    if not isinstance(node, FieldRef) or node.name in FIELDS or dotted_field(node.name) is not None:
        return None
    return node


def _shift(node: Any, by: int) -> Any:
    """Positions of a field parsed from a slice, moved to the whole text."""
    node.pos += by
    if isinstance(node, FieldRef):
        node.arg_pos += by
        node.end += by
    elif isinstance(node, Transform):
        _shift(node.inner, by)
    return node
