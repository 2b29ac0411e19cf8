"""Collecting items: rules, macros and lists from every file in load order into one collection.

A later file tunes an earlier one: ``override`` (append/replace per key), legacy ``append: true``, a
redefinition (replaces, with a warning), or ``- rule: X / enabled: false``. Each piece of text keeps its load
position (``seq``) so the resolver can apply Falco's visibility rules. ``required_engine_version`` and
``required_plugin_versions`` are checked here, as Falco's collector does.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import yaml

from sentinel.rules.exceptions import ExcDef, merge_exception, parse_exceptions
from sentinel.rules.model import PRIORITIES
from sentinel.rules.reader import NULL_TAG, Reporter, YamlReader, scalar_loc
from sentinel.rules.requirements import check_engine_version, check_plugin_versions
from sentinel.rules.source import Locator, SourceText

ITEM_KINDS = ("rule", "macro", "list", "required_engine_version", "required_plugin_versions")
KEYS: dict[str, frozenset[str]] = {
    "rule": frozenset(
        {
            "rule",
            "desc",
            "condition",
            "output",
            "priority",
            "enabled",
            "tags",
            "exceptions",
            "source",
            "override",
            "append",
            "warn_evttypes",
            "skip-if-unknown-filter",
            "capture",
            "capture_duration",
            "aggregate_by",
        }
    ),
    "macro": frozenset(["macro", "condition", "override", "append", "source"]),
    "list": frozenset(["list", "items", "override", "append", "source"]),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "rule": ("desc", "condition", "output", "priority"),
    "macro": ("condition",),
    "list": ("items",),
}
OVERRIDE: dict[str, dict[str, frozenset[str]]] = {
    "rule": {
        "append": frozenset({"condition", "output", "desc", "tags", "exceptions"}),
        "replace": frozenset(
            {
                "condition",
                "output",
                "desc",
                "priority",
                "tags",
                "exceptions",
                "enabled",
                "warn_evttypes",
                "skip-if-unknown-filter",
                "aggregate_by",
            }
        ),
    },
    "macro": {"append": frozenset({"condition"}), "replace": frozenset({"condition"})},
    "list": {"append": frozenset({"items"}), "replace": frozenset({"items"})},
}
PRIORITY_ALIASES = {
    "info": "informational",
    "warn": "warning",
    "err": "error",
    "crit": "critical",
    "emerg": "emergency",
}


@dataclass
class Frag:
    """A piece of text from a file (a condition, or what an append adds) and when it was loaded."""

    text: str
    loc: Locator
    seq: int


@dataclass
class Item:
    kind: str
    name: str
    seq: int
    src: SourceText
    loc: Locator  # the name
    line: int
    column: int
    valid: bool = True
    used: bool = False
    cond: list[Frag] = field(default_factory=list)
    items: list[tuple[str, Locator, int]] = field(default_factory=list)
    desc: list[Frag] = field(default_factory=list)
    output: list[Frag] = field(default_factory=list)
    priority: str = "warning"
    enabled: bool = True
    tags: list[str] = field(default_factory=list)
    exceptions: list[ExcDef] = field(default_factory=list)
    source: str = "syscall"
    warn_evttypes: bool = True
    skip_unknown: bool = False
    aggregate_by: list[tuple[str, Locator]] = field(default_factory=list)  # sentinel's own key (not Falco's)

    @property
    def where(self) -> str:
        return f"{self.src.file}:{self.line}"


class Collector:
    """Items by (kind, name), rules in load order, and the load position of the item being read."""

    def __init__(self, rep: Reporter, read: YamlReader) -> None:
        self.rep = rep
        self.read = read
        self.items: dict[tuple[str, str], Item] = {}
        self.rule_order: list[Item] = []
        self.seq = 0

    def add_documents(self, src: SourceText, docs: list[Any]) -> None:
        """Every item of a file's documents, in order (each gets the next load position)."""
        for doc in docs:
            if doc is None or (isinstance(doc, yaml.ScalarNode) and doc.tag == NULL_TAG):
                continue
            if not isinstance(doc, yaml.SequenceNode):
                self.rep.at_node(
                    src,
                    doc,
                    "error",
                    "not-a-list",
                    "a rules file is a YAML list of items (- rule: ..., - macro: ..., - list: ...)",
                )
                continue
            for node in doc.value:
                self.seq += 1
                self.rep.current = None
                self.item(src, node)
        self.rep.current = None

    def frag(self, src: SourceText, node: Any, what: str, *, allow_null: bool = False) -> Frag | None:
        text = self.read.text(src, node, what, allow_null=allow_null)
        if text is None:
            return None
        return Frag(text, scalar_loc(src, node), self.seq)

    def item(self, src: SourceText, node: Any) -> None:
        if not isinstance(node, yaml.MappingNode):
            self.rep.at_node(
                src,
                node,
                "error",
                "bad-type",
                "each item of a rules file is a mapping: - rule: ..., - macro: ..., - list: ...",
            )
            return
        pairs = self.read.pairs(src, node, "an item")
        kinds = [k for k in ITEM_KINDS if k in pairs]
        if not kinds:
            keys = ", ".join(pairs) or "none"
            self.rep.at_node(
                src,
                node,
                "error",
                "unknown-item",
                f"unknown item: expected a rule, macro, list or required_engine_version (keys: {keys})",
            )
            return
        if len(kinds) > 1:
            self.rep.at_node(
                src,
                pairs[kinds[1]][0],
                "error",
                "bad-type",
                f"an item is one of rule, macro or list, not {' and '.join(kinds)}",
            )
            return
        kind = kinds[0]
        if kind == "required_engine_version":
            check_engine_version(self.read, src, pairs[kind][1])
            return
        if kind == "required_plugin_versions":
            check_plugin_versions(self.read, src, pairs[kind][1])
            return
        self.definition(src, node, kind, pairs)

    def definition(self, src: SourceText, node: Any, kind: str, pairs: dict[str, tuple[Any, Any]]) -> None:
        _knode, vnode = pairs[kind]
        name = self.read.text(src, vnode, f"the {kind} name")
        if name is None:
            return
        if not name.strip():
            self.rep.at_node(src, vnode, "error", "bad-value", f"the {kind} name is empty")
            return
        self.rep.current = name
        for key, (kn, _) in pairs.items():
            if key not in KEYS[kind]:
                close = difflib.get_close_matches(key, KEYS[kind], n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.rep.at_node(
                    src, kn, "warning", "unknown-key", f"unknown key '{key}' in {kind} '{name}'{hint}", name
                )
        existing = self.items.get((kind, name))
        if "override" in pairs:
            if "append" in pairs:
                self.rep.at_node(
                    src,
                    pairs["append"][0],
                    "error",
                    "bad-override",
                    "use either override or append, not both",
                )
                return
            self.override(src, kind, name, existing, pairs, vnode)
            return
        if "append" in pairs:
            append = self.read.boolean(src, pairs["append"][1], "append")
            if append:
                self.rep.at_node(
                    src,
                    pairs["append"][0],
                    "warning",
                    "deprecated-append",
                    "append: true is deprecated; use override: {condition: append, ...}",
                    name,
                )
                if existing is None:
                    self.rep.at_node(
                        src,
                        vnode,
                        "error",
                        "override-unknown-item",
                        f"append to {kind} '{name}', which is not defined earlier",
                        name,
                    )
                    return
                modes = {
                    k: ("replace" if k in ("enabled", "priority") else "append")
                    for k in pairs
                    if k not in (kind, "append")
                }
                self.apply(src, kind, existing, pairs, modes)
                return
        keys = set(pairs) - {kind, "append"}
        if kind == "rule" and keys <= {"enabled"}:
            if existing is None:
                if not keys:
                    self.rep.at_node(
                        src,
                        node,
                        "error",
                        "missing-key",
                        f"rule '{name}' is missing: {', '.join(REQUIRED['rule'])}",
                        name,
                    )
                else:
                    self.rep.at_node(
                        src,
                        vnode,
                        "error",
                        "override-unknown-item",
                        f"rule '{name}' is not defined earlier: cannot set enabled on it",
                        name,
                    )
                return
            if keys:
                enabled = self.read.boolean(src, pairs["enabled"][1], "enabled")
                if enabled is not None:
                    existing.enabled = enabled
            return
        missing = [k for k in REQUIRED[kind] if k not in pairs]
        line, col = src.position(vnode.start_mark.index)
        item = Item(kind, name, self.seq, src, scalar_loc(src, vnode), line, col)
        if missing:
            self.rep.at_node(
                src, node, "error", "missing-key", f"{kind} '{name}' is missing: {', '.join(missing)}", name
            )
            item.valid = False
        modes = {k: "replace" for k in pairs if k not in (kind, "append")}
        self.apply(src, kind, item, pairs, modes)
        if existing is not None:
            self.rep.at_node(
                src,
                vnode,
                "warning",
                "duplicate-item",
                f"{kind} '{name}' is defined again (first at {existing.where}); this definition replaces it",
                name,
            )
            # The new definition takes the old one's place in the order (what rules may refer to it).
            item.seq = existing.seq
            if kind == "rule":
                self.rule_order[self.rule_order.index(existing)] = item
        elif kind == "rule":
            self.rule_order.append(item)
        self.items[(kind, name)] = item

    def override(
        self,
        src: SourceText,
        kind: str,
        name: str,
        existing: Item | None,
        pairs: dict[str, tuple[Any, Any]],
        name_node: Any,
    ) -> None:
        onode = pairs["override"][1]
        if not isinstance(onode, yaml.MappingNode):
            self.rep.at_node(
                src,
                onode,
                "error",
                "bad-override",
                "override is a mapping of key: append|replace (override: {condition: append})",
                name,
            )
            return
        modes: dict[str, str] = {}
        ok = True
        for key, (kn, vn) in self.read.pairs(src, onode, "override").items():
            mode = self.read.text(src, vn, f"override of {key}")
            if mode is None:
                ok = False
                continue
            if mode not in ("append", "replace"):
                self.rep.at_node(
                    src,
                    vn,
                    "error",
                    "bad-override",
                    f"override mode of '{key}' must be append or replace, not {mode!r}",
                    name,
                )
                ok = False
                continue
            if key not in OVERRIDE[kind][mode]:
                can = sorted(OVERRIDE[kind][mode])
                self.rep.at_node(
                    src,
                    kn,
                    "error",
                    "bad-override",
                    f"'{key}' of a {kind} cannot be {mode}d (keys that can: {', '.join(can)})",
                    name,
                )
                ok = False
                continue
            if key not in pairs:
                self.rep.at_node(
                    src,
                    kn,
                    "error",
                    "missing-key",
                    f"override says how to {mode} '{key}' but the item has no '{key}'",
                    name,
                )
                ok = False
                continue
            modes[key] = mode
        for key, (kn, _) in pairs.items():
            if key not in (kind, "override") and key not in modes and key in KEYS[kind] and ok:
                self.rep.at_node(
                    src,
                    kn,
                    "error",
                    "bad-override",
                    f"'{key}' is given without an override mode: add {key}: append or {key}: replace "
                    "to override",
                    name,
                )
                ok = False
        if existing is None:
            self.rep.at_node(
                src,
                name_node,
                "error",
                "override-unknown-item",
                f"override of {kind} '{name}', which is not defined earlier",
                name,
            )
            return
        if ok:
            self.apply(src, kind, existing, pairs, modes)

    def apply(
        self, src: SourceText, kind: str, item: Item, pairs: dict[str, tuple[Any, Any]], modes: dict[str, str]
    ) -> None:
        """Set (replace) or extend (append) the item's keys from this YAML item."""
        for key, mode in modes.items():
            if key not in pairs or key not in KEYS[kind] or key in ("override",):
                continue
            vnode = pairs[key][1]
            append = mode == "append"
            what = f"{kind} '{item.name}' {key}"
            if key == "condition":
                frag = self.frag(src, vnode, f"the condition of {kind} '{item.name}'")
                if frag is None:
                    item.valid = False
                elif not frag.text.strip():
                    self.rep.at_node(
                        src, vnode, "error", "bad-value", f"the condition of '{item.name}' is empty"
                    )
                    item.valid = False
                else:
                    item.cond = [*item.cond, frag] if append else [frag]
            elif key in ("desc", "output"):
                frag = self.frag(src, vnode, what, allow_null=True)
                if frag is None:
                    item.valid = False
                else:
                    cur = getattr(item, key)
                    setattr(item, key, [*cur, frag] if append else [frag])
            elif key == "priority":
                text = self.read.text(src, vnode, "priority")
                prio = normalize_priority(text) if text is not None else None
                if prio is None:
                    if text is not None:
                        self.rep.at_node(
                            src,
                            vnode,
                            "error",
                            "bad-value",
                            f"unknown priority {text!r}; use one of: {', '.join(PRIORITIES)}",
                            item.name,
                        )
                    item.valid = False
                else:
                    item.priority = prio
            elif key in ("enabled", "warn_evttypes", "skip-if-unknown-filter"):
                value = self.read.boolean(src, vnode, key)
                if value is None:
                    item.valid = False
                elif key == "enabled":
                    item.enabled = value
                elif key == "warn_evttypes":
                    item.warn_evttypes = value
                else:
                    item.skip_unknown = value
            elif key == "tags":
                tags = self.read.scalar_list(src, vnode, "tags")
                if tags is None:
                    item.valid = False
                else:
                    new = [t for t, _ in tags]
                    item.tags = [*item.tags, *(t for t in new if t not in item.tags)] if append else new
            elif key == "aggregate_by":
                names = self.read.scalar_list(src, vnode, "aggregate_by")
                if names is None:
                    item.valid = False
                else:
                    item.aggregate_by = list(names)
            elif key == "items":
                values = self.read.scalar_list(src, vnode, f"the items of list '{item.name}'")
                if values is None:
                    item.valid = False
                else:
                    new_items = [(t, loc, self.seq) for t, loc in values]
                    item.items = [*item.items, *new_items] if append else new_items
            elif key == "source":
                text = self.read.text(src, vnode, "source")
                if text is not None:
                    item.source = text.strip()
            elif key == "exceptions":
                excs = parse_exceptions(self.read, src, vnode, item.name, self.seq)
                if excs is None:
                    item.valid = False
                elif append:
                    for exc in excs:
                        merge_exception(self.rep, item, exc)
                else:
                    item.exceptions = excs


def normalize_priority(text: str) -> str | None:
    low = text.strip().lower()
    low = PRIORITY_ALIASES.get(low, low)
    return low if low in PRIORITIES else None
