"""Collecting items: rules, macros and lists from every file in load order into one collection.

A later file tunes an earlier one: ``override`` (append/replace per key), legacy ``append: true``, a
redefinition (replaces, with a warning), or ``- rule: X / enabled: false``. Each piece of text keeps its load
position (``seq``) so the resolver can apply Falco's visibility rules. ``required_engine_version`` and
``required_plugin_versions`` are checked here, as Falco's collector does.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from sentinel.rules.model import PRIORITIES
from sentinel.rules.reader import NULL_TAG, Reporter, YamlReader, scalar_loc
from sentinel.rules.source import Locator, MarkLoc, SourceText, diag_at

# The Falco rules-engine language version implemented (what required_engine_version is checked against).
ENGINE_VERSION = (0, 60, 0)

BUILT_IN_PLUGINS = frozenset({"container"})  # Falco plugins whose fields sentinel provides itself
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
            }
        ),
    },
    "macro": {"append": frozenset({"condition"}), "replace": frozenset({"condition"})},
    "list": {"append": frozenset({"items"}), "replace": frozenset({"items"})},
}
EXCEPTION_KEYS = frozenset({"name", "fields", "comps", "values"})
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
class ExcDef:
    name: str
    loc: Locator  # the exception's name
    seq: int
    src: SourceText
    fields: list[tuple[str, Locator]] | None = None
    single: bool = False  # fields given as one name, not a list
    comps: list[tuple[str, Locator]] | None = None
    comps_loc: Locator | None = None
    values: list[tuple[Any, SourceText]] = field(default_factory=list)  # (yaml node, its file)


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
            self.engine_version(src, pairs[kind][1])
            return
        if kind == "required_plugin_versions":
            self.plugin_versions(src, pairs[kind][1])
            return
        self.definition(src, node, kind, pairs)

    def engine_version(self, src: SourceText, node: Any) -> None:
        """Falco's check: a file needing a newer rules-engine language (or another major) is refused."""
        text = self.read.text(src, node, "required_engine_version")
        if text is None:
            return
        wanted = parse_version(text)
        if wanted is None:
            self.rep.at_node(
                src, node, "error", "bad-value", f"required_engine_version {text!r} is not a version"
            )
            return
        if len(wanted) == 1:  # an old integer engine version: every 0.x language implements it
            return
        if wanted[0] != ENGINE_VERSION[0] or wanted > ENGINE_VERSION:
            have = ".".join(map(str, ENGINE_VERSION))
            self.rep.at_node(
                src,
                node,
                "error",
                "engine-version",
                f"this file requires rules-engine version {text.strip()}; sentinel implements Falco's "
                f"rules-engine language {have}",
            )

    def plugin_versions(self, src: SourceText, node: Any) -> None:
        """Falco's ``required_plugin_versions``: checked for shape and versions like Falco; the container
        plugin's fields are built into sentinel, other plugins' event sources are not evaluated (their rules
        are skipped with a warning each), so needing one is a warning, not a refusal."""
        if not isinstance(node, yaml.SequenceNode):
            self.rep.at_node(src, node, "error", "bad-type", "required_plugin_versions must be a list")
            return
        for entry in node.value:
            wants: list[tuple[str, Any]] = []
            for alt in (entry, *self._alternatives(src, entry)):
                if not isinstance(alt, yaml.MappingNode):
                    self.rep.at_node(
                        src, alt, "error", "bad-type", "a plugin requirement is a mapping: name, version"
                    )
                    return
                pairs = self.read.pairs(src, alt, "a plugin requirement")
                name = self.read.text(src, pairs["name"][1], "the plugin name") if "name" in pairs else None
                version = (
                    self.read.text(src, pairs["version"][1], "the plugin version")
                    if "version" in pairs
                    else None
                )
                if name is None or version is None:
                    self.rep.at_node(
                        src, alt, "error", "missing-key", "a plugin requirement needs name and version"
                    )
                    return
                if parse_version(version) is None or len(parse_version(version) or ()) != 3:
                    self.rep.at_node(
                        src, pairs["version"][1], "error", "bad-value",
                        f"invalid required version {version!r} for plugin {name!r} (major.minor.patch)",
                    )  # fmt: skip
                    return
                if any(n == name for n, _ in wants):
                    self.rep.at_node(
                        src, alt, "error", "bad-value",
                        f"plugin {name!r} is named more than once among these alternatives",
                    )  # fmt: skip
                    return
                wants.append((name, alt))
            if not any(name in BUILT_IN_PLUGINS for name, _ in wants):
                names = " or ".join(repr(n) for n, _ in wants)
                self.rep.at_node(
                    src, entry, "warning", "plugin-not-available",
                    f"this file asks for plugin {names}: sentinel has no plugins (it evaluates syscall rules "
                    "and has the container plugin's fields built in), so rules of that plugin's event source "
                    "are skipped",
                )  # fmt: skip

    def _alternatives(self, src: SourceText, entry: Any) -> list[Any]:
        if not isinstance(entry, yaml.MappingNode):
            return []
        node = self.read.pairs(src, entry, "a plugin requirement").get("alternatives", (None, None))[1]
        if node is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.rep.at_node(
                src, node, "error", "bad-type", "alternatives of a plugin requirement must be a list"
            )
            return []
        return list(node.value)

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
                excs = self.exceptions(src, vnode, item.name)
                if excs is None:
                    item.valid = False
                elif append:
                    for exc in excs:
                        self.merge_exception(src, item, exc)
                else:
                    item.exceptions = excs

    def exceptions(self, src: SourceText, node: Any, rule: str) -> list[ExcDef] | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG and node.style is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.rep.at_node(
                src,
                node,
                "error",
                "bad-type",
                "exceptions must be a list of {name, fields, comps, values}",
                rule,
            )
            return None
        out: list[ExcDef] = []
        ok = True
        for enode in node.value:
            if not isinstance(enode, yaml.MappingNode):
                self.rep.at_node(
                    src,
                    enode,
                    "error",
                    "bad-type",
                    "an exception is a mapping: {name, fields, comps, values}",
                    rule,
                )
                ok = False
                continue
            pairs = self.read.pairs(src, enode, "an exception")
            for key, (kn, _) in pairs.items():
                if key not in EXCEPTION_KEYS:
                    self.rep.at_node(
                        src, kn, "warning", "unknown-key", f"unknown key '{key}' in an exception", rule
                    )
            if "name" not in pairs:
                self.rep.at_node(src, enode, "error", "missing-key", "an exception needs a name", rule)
                ok = False
                continue
            name = self.read.text(src, pairs["name"][1], "the exception name")
            if name is None:
                ok = False
                continue
            exc = ExcDef(name, scalar_loc(src, pairs["name"][1]), self.seq, src)
            if "fields" in pairs:
                fnode = pairs["fields"][1]
                if isinstance(fnode, yaml.ScalarNode) and fnode.tag != NULL_TAG:
                    exc.fields, exc.single = [(str(fnode.value), scalar_loc(src, fnode))], True
                else:
                    exc.fields = self.read.scalar_list(src, fnode, "exception fields")
                    if exc.fields is None:
                        ok = False
                        continue
            if "comps" in pairs:
                cnode = pairs["comps"][1]
                exc.comps_loc = (
                    scalar_loc(src, cnode)
                    if isinstance(cnode, yaml.ScalarNode)
                    else MarkLoc(src, cnode.start_mark.index)
                )
                if isinstance(cnode, yaml.ScalarNode) and cnode.tag != NULL_TAG:
                    exc.comps = [(str(cnode.value), scalar_loc(src, cnode))]
                else:
                    exc.comps = self.read.scalar_list(src, cnode, "exception comps")
                    if exc.comps is None:
                        ok = False
                        continue
            if "values" in pairs:
                vnode = pairs["values"][1]
                if isinstance(vnode, yaml.ScalarNode) and vnode.tag == NULL_TAG and vnode.style is None:
                    pass
                elif not isinstance(vnode, yaml.SequenceNode):
                    self.rep.at_node(src, vnode, "error", "bad-type", "exception values must be a list", rule)
                    ok = False
                    continue
                else:
                    exc.values = [(v, src) for v in vnode.value]
            out.append(exc)
        return out if ok else None

    def merge_exception(self, src: SourceText, item: Item, exc: ExcDef) -> None:
        """Appending an exception: values join an existing one of that name, or it is added whole."""
        for cur in item.exceptions:
            if cur.name == exc.name:
                if exc.fields is not None or exc.comps is not None:
                    loc = exc.loc
                    self.rep.diags.append(
                        diag_at(
                            loc,
                            0,
                            "warning",
                            "bad-override",
                            f"exception '{exc.name}' exists: only its values are appended; "
                            "fields and comps given here are ignored",
                            item.name,
                        )
                    )
                cur.values = [*cur.values, *exc.values]
                return
        item.exceptions.append(exc)


def parse_version(text: str) -> tuple[int, ...] | None:
    """``0.57.0`` → (0, 57, 0); ``0.57`` → (0, 57, 0); a bare integer (old engine versions) → (N,)."""
    m = re.fullmatch(r"\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?\s*", text)
    if not m:
        return None
    if m.group(2) is None:
        return (int(m.group(1)),)
    return tuple(int(g or 0) for g in m.groups())


def normalize_priority(text: str) -> str | None:
    low = text.strip().lower()
    low = PRIORITY_ALIASES.get(low, low)
    return low if low in PRIORITIES else None
