"""Resolving names the way Falco does: which macros and lists a condition sees, expanded once each.

A rule sees every macro and list wherever it is defined; a macro sees every list but only the macros defined
before it; inside a list only lists defined earlier expand (a later one's name is a literal value). Macros
are compiled once (cycles and runaway nesting refused); a macro that cannot be compiled is remembered so the
rules using it can be refused by name.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from sentinel.rules.collector import Frag, Item
from sentinel.rules.parser import unquote
from sentinel.rules.reader import Reporter
from sentinel.rules.source import JoinedLoc, Locator, diag_at

MAX_MACRO_NESTING = 32  # macros using macros using macros ...: deeper is refused, not a stack overflow


class Resolver:
    """The condition compiler's scope (``macro``, ``list_items``) over the collected items."""

    def __init__(self, rep: Reporter, items: dict[tuple[str, str], Item]) -> None:
        self.rep = rep
        self.items = items
        self.comp: Any = None  # the CondCompiler using this scope (set once both exist)
        self._macro_ir: dict[int, Any] = {}
        self._macro_stack: set[int] = set()
        self._list_values: dict[int, list[str]] = {}
        self._list_stack: set[int] = set()
        self.broken_used: list[Item] = []  # macros that could not be compiled, used by the rule at hand

    def macro(self, name: str, seq: int, loc: Locator, pos: int) -> Any | None:
        item = self.items.get(("macro", name))
        if item is None:
            other = self.items.get(("list", name))
            hint = " (a list of that name exists: lists go inside ( ... ))" if other else ""
            if not hint:
                close = difflib.get_close_matches(name, [n for k, n in self.items if k == "macro"], n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
            self.comp.error(loc, pos, "undefined-macro", f"undefined macro '{name}'{hint}")
            return None
        item.used = True
        if self._macro_stack and item.seq >= seq:  # Falco: a macro sees only macros defined before it
            self.comp.error(
                loc,
                pos,
                "undefined-macro",
                f"macro '{name}' is used before its definition ({item.where}); a macro may only use "
                "macros defined earlier (a rule may use any)",
            )
            return None
        ir = self.macro_ir(item, loc, pos)
        if ir is None:
            self.broken_used.append(item)
        return ir

    def macro_ir(self, item: Item, loc: Locator, pos: int) -> Any | None:
        key = id(item)
        if key in self._macro_ir:
            return self._macro_ir[key]
        if key in self._macro_stack:
            self.comp.error(loc, pos, "macro-cycle", f"macro '{item.name}' refers to itself")
            return None
        if len(self._macro_stack) >= MAX_MACRO_NESTING:
            self.comp.error(
                loc, pos, "syntax-error", f"macros nested more than {MAX_MACRO_NESTING} levels deep"
            )
            return None
        if not item.valid or not item.cond:
            self._macro_ir[key] = None
            return None
        self._macro_stack.add(key)
        saved = self.rep.current
        self.rep.current = item.name
        try:
            text, jloc, seq_of = joined(item.cond)
            ir = self.comp.condition(text, jloc, seq_of)
        finally:
            self._macro_stack.discard(key)
            self.rep.current = saved
        self._macro_ir[key] = ir
        return ir

    def list_items(self, name: str, seq: int, loc: Locator, pos: int) -> list[str] | None:
        item = self.items.get(("list", name))
        if item is None:
            return None
        item.used = True  # conditions see every list, wherever it is defined (as in Falco)
        return self.list_values(item)

    def list_values(self, item: Item) -> list[str]:
        key = id(item)
        cached = self._list_values.get(key)
        if cached is not None:
            return cached
        if key in self._list_stack:
            return []
        self._list_stack.add(key)
        out: list[str] = []
        try:
            for text, loc, seq in item.items:
                sub = self.items.get(("list", text))
                if sub is None or sub is item:
                    out.append(unquote(text))
                    continue
                if sub.seq >= seq:  # Falco expands only lists defined earlier; a later one's name is a value
                    self.rep.diags.append(
                        diag_at(
                            loc,
                            0,
                            "warning",
                            "list-defined-later",
                            f"list '{text}' is defined after list '{item.name}' ({sub.where}): inside a list "
                            "only lists defined earlier are expanded, so this is the literal value "
                            f"'{text}' (as in Falco); move list '{text}' up to expand it",
                            item.name,
                        )
                    )
                    out.append(unquote(text))
                    continue
                sub.used = True
                out.extend(self.list_values(sub))
        finally:
            self._list_stack.discard(key)
        self._list_values[key] = out
        return out


def joined(frags: list[Frag]) -> tuple[str, JoinedLoc, Callable[[int], int]]:
    """Fragments joined with one space (Falco's append), with a locator and the load position per offset."""
    parts: list[tuple[int, Locator]] = []
    seqs: list[tuple[int, int]] = []
    texts: list[str] = []
    off = 0
    for f in frags:
        parts.append((off, f.loc))
        seqs.append((off, f.seq))
        texts.append(f.text)
        off += len(f.text) + 1
    src = frags[0].loc.src

    def seq_of(offset: int) -> int:
        seq = seqs[0][1]
        for start, s in seqs:
            if start <= offset:
                seq = s
        return seq

    return " ".join(texts), JoinedLoc(src, parts), seq_of
