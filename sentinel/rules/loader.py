"""Loading Falco-style rule files: YAML items → located definitions → typed conditions → a RuleSet.

Files load in the order given (a directory: its ``*.yaml``/``*.yml`` files, fixtures excluded, sorted), all
into one collection, so a later file tunes an earlier one: ``override`` (append/replace per key), legacy
``append: true``, a redefinition (replaces, with a warning), or ``- rule: X / enabled: false``. Conditions are
compiled after everything is collected, so shipped rules see the final definition of the macros and lists
they use; a reference must still name an item defined *earlier* in load order, as in Falco.

Every problem becomes a located :class:`Diagnostic` (file, line, column, snippet); nothing about a bad rules
file raises. YAML is composed, not constructed, so every node keeps its position, and scalar values are
taken as written (``no`` stays the string "no", ``0644`` stays "0644").
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sentinel.rules.compiler import (
    MAX_IR_DEPTH,
    CondCompiler,
    IAnd,
    INot,
    IOr,
    depth,
    event_names,
    event_types,
    on_demand_first,
    parse_output,
)
from sentinel.rules.fields import ALL_OPS, LIST_OPS
from sentinel.rules.model import PRIORITIES, Diagnostic, Rule
from sentinel.rules.parser import unquote
from sentinel.rules.ruleset import RuleSet
from sentinel.rules.source import JoinedLoc, Locator, MarkLoc, ScalarLoc, SourceText, diag_at

ENGINE_VERSION = (
    0,
    60,
    0,
)  # the Falco rules-engine version whose language this implements (for files' checks)

BUILT_IN_PLUGINS = frozenset({"container"})  # Falco plugins whose fields sentinel provides itself
MAX_MACRO_NESTING = 32  # macros using macros using macros ...: deeper is refused, not a stack overflow
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
_BOOL_TRUE = frozenset({"true", "yes", "on", "y"})
_BOOL_FALSE = frozenset({"false", "no", "off", "n"})
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass
class LoadResult:
    ruleset: RuleSet | None  # None when any file has an error
    diagnostics: list[Diagnostic]
    files: list[str]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]


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


def expand_paths(paths: Iterable[str | Path]) -> list[tuple[str, bool]]:
    """Files to load, in order: (path, is_dir_member). A directory gives its rule files, sorted."""
    out: list[tuple[str, bool]] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if (
                    child.suffix in (".yaml", ".yml")
                    and not child.name.endswith((".fixtures.yaml", ".fixtures.yml"))
                    and child.is_file()
                ):
                    out.append((str(child), True))
        else:
            out.append((str(path), False))
    return out


def load_rules(paths: Iterable[str | Path], *, index_min: int | None = None) -> LoadResult:
    """Load rule files and directories in order into one RuleSet; never raises for bad input."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    loader = Loader()
    files: list[str] = []
    try:
        for path, _ in expand_paths(paths):
            files.append(path)
            loader.load_file(path)
        rules = loader.finish()
        if any(d.severity == "error" for d in loader.diags):
            return LoadResult(None, loader.diags, files)
        kwargs = {} if index_min is None else {"index_min": index_min}
        ruleset = RuleSet(rules, loader.hash.hexdigest(), **kwargs)
    except Exception as exc:  # a bug must not become a traceback for a rule author
        where = files[-1] if files else "<rules>"
        loader.diags.append(
            Diagnostic("error", "internal-error", f"internal error while loading rules: {exc!r}", where, 1, 1)
        )
        return LoadResult(None, loader.diags, files)
    return LoadResult(ruleset, loader.diags, files)


def load_text(text: str, name: str = "<rules>", **kw: Any) -> LoadResult:
    """Load rules from a string (tests, tools): as one file called ``name``."""
    loader = Loader()
    try:
        loader.load_source(SourceText(name, text), text.encode("utf-8", "surrogateescape"))
        rules = loader.finish()
        if any(d.severity == "error" for d in loader.diags):
            return LoadResult(None, loader.diags, [name])
        return LoadResult(RuleSet(rules, loader.hash.hexdigest(), **kw), loader.diags, [name])
    except Exception as exc:
        loader.diags.append(Diagnostic("error", "internal-error", f"internal error: {exc!r}", name, 1, 1))
        return LoadResult(None, loader.diags, [name])


class Loader:
    """Collects items from files in order, then compiles them (``finish``)."""

    def __init__(self) -> None:
        self.diags: list[Diagnostic] = []
        self.hash = hashlib.sha256()
        self.items: dict[tuple[str, str], Item] = {}
        self.rule_order: list[Item] = []
        self.seq = 0
        self.comp = CondCompiler(self, self._report)
        self._macro_ir: dict[int, Any] = {}
        self._macro_stack: set[int] = set()
        self._list_values: dict[int, list[str]] = {}
        self._list_stack: set[int] = set()
        self._broken_used: list[Item] = []  # macros that could not be compiled, used by the rule at hand
        self.refused: list[tuple[str, str]] = []  # (rule, why) for rules refused alone

    # -- reporting ------------------------------------------------------------------------------------

    def _report(self, loc: Locator, pos: int, severity: str, code: str, message: str) -> None:
        self.diags.append(diag_at(loc, pos, severity, code, message, self._current))

    _current: str | None = None

    def at_node(
        self, src: SourceText, node: Any, severity: str, code: str, message: str, item: str | None = None
    ) -> None:
        line, col = src.position(node.start_mark.index)
        self.diags.append(src.diagnostic(severity, code, message, line, col, item))

    # -- files ----------------------------------------------------------------------------------------

    def load_file(self, path: str) -> None:
        empty = SourceText(path, "")
        try:
            data = Path(path).read_bytes()
        except IsADirectoryError:
            self.diags.append(
                empty.diagnostic("error", "unreadable-file", f"cannot read {path}: a directory", 1, 1)
            )
            return
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self.diags.append(
                empty.diagnostic("error", "unreadable-file", f"cannot read {path}: {reason}", 1, 1)
            )
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.hash.update(data)
            head = SourceText(path, data[: exc.start].decode("utf-8", "replace"))
            line, col = head.position(len(head.text))
            self.diags.append(
                head.diagnostic(
                    "error",
                    "yaml-error",
                    f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded",
                    line,
                    col,
                )
            )
            return
        if text.startswith("\ufeff"):
            text = text[1:]
        self.load_source(SourceText(path, text), data)

    def load_source(self, src: SourceText, data: bytes) -> None:
        self.hash.update(data)
        try:
            docs = list(yaml.compose_all(src.text, Loader=yaml.SafeLoader))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = src.position(mark.index) if mark is not None else (1, 1)
            what = " ".join(x for x in (exc.context, exc.problem) if x) or "YAML error"
            self.diags.append(src.diagnostic("error", "yaml-error", f"YAML: {what}", line, col))
            return
        except yaml.reader.ReaderError as exc:
            line, col = src.position(exc.position)
            self.diags.append(
                src.diagnostic(
                    "error",
                    "yaml-error",
                    f"YAML: character {exc.character!r} is not allowed in YAML",
                    line,
                    col,
                )
            )
            return
        except RecursionError:
            self.diags.append(src.diagnostic("error", "yaml-error", "YAML: nested too deeply", 1, 1))
            return
        except yaml.YAMLError as exc:
            self.diags.append(src.diagnostic("error", "yaml-error", f"YAML: {exc}", 1, 1))
            return
        for doc in docs:
            if doc is None or (isinstance(doc, yaml.ScalarNode) and doc.tag == _NULL_TAG):
                continue
            if not isinstance(doc, yaml.SequenceNode):
                self.at_node(
                    src,
                    doc,
                    "error",
                    "not-a-list",
                    "a rules file is a YAML list of items (- rule: ..., - macro: ..., - list: ...)",
                )
                continue
            for node in doc.value:
                self.seq += 1
                self._current = None
                self.item(src, node)
        self._current = None

    # -- yaml helpers ---------------------------------------------------------------------------------

    def pairs(self, src: SourceText, node: Any, what: str, depth: int = 0) -> dict[str, tuple[Any, Any]]:
        """A mapping's keys (as text) with their key and value nodes; merge keys (<<) expanded."""
        out: dict[str, tuple[Any, Any]] = {}
        merged: dict[str, tuple[Any, Any]] = {}
        for knode, vnode in node.value:
            if knode.tag == _MERGE_TAG and depth < 8:
                subs = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
                for sub in subs:
                    if isinstance(sub, yaml.MappingNode):
                        merged.update(self.pairs(src, sub, what, depth + 1))
                    else:
                        self.at_node(src, sub, "error", "bad-type", "a merge key (<<) needs a mapping")
                continue
            if not isinstance(knode, yaml.ScalarNode):
                self.at_node(src, knode, "error", "bad-type", f"keys of {what} must be plain names")
                continue
            key = knode.value
            if key in out:
                self.at_node(
                    src,
                    knode,
                    "warning",
                    "duplicate-key",
                    f"key '{key}' appears twice in {what}; the last one is used",
                    self._current,
                )
            out[key] = (knode, vnode)
        return {**merged, **out}

    def text(self, src: SourceText, node: Any, what: str, *, allow_null: bool = False) -> str | None:
        """A scalar's text as written; reports bad-type (and returns None) for anything else."""
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _NULL_TAG and node.style is None:
                if allow_null:
                    return ""
                self.at_node(src, node, "error", "bad-type", f"{what} is empty", self._current)
                return None
            return str(node.value)
        kind = "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
        self.at_node(src, node, "error", "bad-type", f"{what} must be a string, not {kind}", self._current)
        return None

    def boolean(self, src: SourceText, node: Any, what: str) -> bool | None:
        if isinstance(node, yaml.ScalarNode):
            low = str(node.value).strip().lower()
            if low in _BOOL_TRUE:
                return True
            if low in _BOOL_FALSE:
                return False
        self.at_node(src, node, "error", "bad-type", f"{what} must be true or false", self._current)
        return None

    def scalar_list(self, src: SourceText, node: Any, what: str) -> list[tuple[str, Locator]] | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG and node.style is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.at_node(src, node, "error", "bad-type", f"{what} must be a list", self._current)
            return None
        out: list[tuple[str, Locator]] = []
        ok = True
        for sub in node.value:
            if not isinstance(sub, yaml.ScalarNode):
                self.at_node(
                    src, sub, "error", "bad-type", f"items of {what} must be plain values", self._current
                )
                ok = False
                continue
            out.append((str(sub.value), scalar_loc(src, sub)))
        return out if ok else None

    def frag(self, src: SourceText, node: Any, what: str, *, allow_null: bool = False) -> Frag | None:
        text = self.text(src, node, what, allow_null=allow_null)
        if text is None:
            return None
        return Frag(text, scalar_loc(src, node), self.seq)

    # -- items ----------------------------------------------------------------------------------------

    def item(self, src: SourceText, node: Any) -> None:
        if not isinstance(node, yaml.MappingNode):
            self.at_node(
                src,
                node,
                "error",
                "bad-type",
                "each item of a rules file is a mapping: - rule: ..., - macro: ..., - list: ...",
            )
            return
        pairs = self.pairs(src, node, "an item")
        kinds = [k for k in ITEM_KINDS if k in pairs]
        if not kinds:
            keys = ", ".join(pairs) or "none"
            self.at_node(
                src,
                node,
                "error",
                "unknown-item",
                f"unknown item: expected a rule, macro, list or required_engine_version (keys: {keys})",
            )
            return
        if len(kinds) > 1:
            self.at_node(
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
        text = self.text(src, node, "required_engine_version")
        if text is None:
            return
        wanted = parse_version(text)
        if wanted is None:
            self.at_node(
                src, node, "error", "bad-value", f"required_engine_version {text!r} is not a version"
            )
            return
        if len(wanted) == 1:  # an old integer engine version: every 0.x language implements it
            return
        if wanted[0] != ENGINE_VERSION[0] or wanted > ENGINE_VERSION:
            have = ".".join(map(str, ENGINE_VERSION))
            self.at_node(
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
            self.at_node(src, node, "error", "bad-type", "required_plugin_versions must be a list")
            return
        for entry in node.value:
            wants: list[tuple[str, Any]] = []
            for alt in (entry, *self._alternatives(src, entry)):
                if not isinstance(alt, yaml.MappingNode):
                    self.at_node(
                        src, alt, "error", "bad-type", "a plugin requirement is a mapping: name, version"
                    )
                    return
                pairs = self.pairs(src, alt, "a plugin requirement")
                name = self.text(src, pairs["name"][1], "the plugin name") if "name" in pairs else None
                version = (
                    self.text(src, pairs["version"][1], "the plugin version") if "version" in pairs else None
                )
                if name is None or version is None:
                    self.at_node(
                        src, alt, "error", "missing-key", "a plugin requirement needs name and version"
                    )
                    return
                if parse_version(version) is None or len(parse_version(version) or ()) != 3:
                    self.at_node(
                        src, pairs["version"][1], "error", "bad-value",
                        f"invalid required version {version!r} for plugin {name!r} (major.minor.patch)",
                    )  # fmt: skip
                    return
                if any(n == name for n, _ in wants):
                    self.at_node(
                        src, alt, "error", "bad-value",
                        f"plugin {name!r} is named more than once among these alternatives",
                    )  # fmt: skip
                    return
                wants.append((name, alt))
            if not any(name in BUILT_IN_PLUGINS for name, _ in wants):
                names = " or ".join(repr(n) for n, _ in wants)
                self.at_node(
                    src, entry, "warning", "plugin-not-available",
                    f"this file asks for plugin {names}: sentinel has no plugins (it evaluates syscall rules "
                    "and has the container plugin's fields built in), so rules of that plugin's event source "
                    "are skipped",
                )  # fmt: skip

    def _alternatives(self, src: SourceText, entry: Any) -> list[Any]:
        if not isinstance(entry, yaml.MappingNode):
            return []
        node = self.pairs(src, entry, "a plugin requirement").get("alternatives", (None, None))[1]
        if node is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.at_node(
                src, node, "error", "bad-type", "alternatives of a plugin requirement must be a list"
            )
            return []
        return list(node.value)

    def definition(self, src: SourceText, node: Any, kind: str, pairs: dict[str, tuple[Any, Any]]) -> None:
        _knode, vnode = pairs[kind]
        name = self.text(src, vnode, f"the {kind} name")
        if name is None:
            return
        if not name.strip():
            self.at_node(src, vnode, "error", "bad-value", f"the {kind} name is empty")
            return
        self._current = name
        for key, (kn, _) in pairs.items():
            if key not in KEYS[kind]:
                close = difflib.get_close_matches(key, KEYS[kind], n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.at_node(
                    src, kn, "warning", "unknown-key", f"unknown key '{key}' in {kind} '{name}'{hint}", name
                )
        existing = self.items.get((kind, name))
        if "override" in pairs:
            if "append" in pairs:
                self.at_node(
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
            append = self.boolean(src, pairs["append"][1], "append")
            if append:
                self.at_node(
                    src,
                    pairs["append"][0],
                    "warning",
                    "deprecated-append",
                    "append: true is deprecated; use override: {condition: append, ...}",
                    name,
                )
                if existing is None:
                    self.at_node(
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
                    self.at_node(
                        src,
                        node,
                        "error",
                        "missing-key",
                        f"rule '{name}' is missing: {', '.join(REQUIRED['rule'])}",
                        name,
                    )
                else:
                    self.at_node(
                        src,
                        vnode,
                        "error",
                        "override-unknown-item",
                        f"rule '{name}' is not defined earlier: cannot set enabled on it",
                        name,
                    )
                return
            if keys:
                enabled = self.boolean(src, pairs["enabled"][1], "enabled")
                if enabled is not None:
                    existing.enabled = enabled
            return
        missing = [k for k in REQUIRED[kind] if k not in pairs]
        line, col = src.position(vnode.start_mark.index)
        item = Item(kind, name, self.seq, src, scalar_loc(src, vnode), line, col)
        if missing:
            self.at_node(
                src, node, "error", "missing-key", f"{kind} '{name}' is missing: {', '.join(missing)}", name
            )
            item.valid = False
        modes = {k: "replace" for k in pairs if k not in (kind, "append")}
        self.apply(src, kind, item, pairs, modes)
        if existing is not None:
            self.at_node(
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
            self.at_node(
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
        for key, (kn, vn) in self.pairs(src, onode, "override").items():
            mode = self.text(src, vn, f"override of {key}")
            if mode is None:
                ok = False
                continue
            if mode not in ("append", "replace"):
                self.at_node(
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
                self.at_node(
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
                self.at_node(
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
                self.at_node(
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
            self.at_node(
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
                    self.at_node(src, vnode, "error", "bad-value", f"the condition of '{item.name}' is empty")
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
                text = self.text(src, vnode, "priority")
                prio = normalize_priority(text) if text is not None else None
                if prio is None:
                    if text is not None:
                        self.at_node(
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
                value = self.boolean(src, vnode, key)
                if value is None:
                    item.valid = False
                elif key == "enabled":
                    item.enabled = value
                elif key == "warn_evttypes":
                    item.warn_evttypes = value
                else:
                    item.skip_unknown = value
            elif key == "tags":
                tags = self.scalar_list(src, vnode, "tags")
                if tags is None:
                    item.valid = False
                else:
                    new = [t for t, _ in tags]
                    item.tags = [*item.tags, *(t for t in new if t not in item.tags)] if append else new
            elif key == "items":
                values = self.scalar_list(src, vnode, f"the items of list '{item.name}'")
                if values is None:
                    item.valid = False
                else:
                    new_items = [(t, loc, self.seq) for t, loc in values]
                    item.items = [*item.items, *new_items] if append else new_items
            elif key == "source":
                text = self.text(src, vnode, "source")
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
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG and node.style is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.at_node(
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
                self.at_node(
                    src,
                    enode,
                    "error",
                    "bad-type",
                    "an exception is a mapping: {name, fields, comps, values}",
                    rule,
                )
                ok = False
                continue
            pairs = self.pairs(src, enode, "an exception")
            for key, (kn, _) in pairs.items():
                if key not in EXCEPTION_KEYS:
                    self.at_node(
                        src, kn, "warning", "unknown-key", f"unknown key '{key}' in an exception", rule
                    )
            if "name" not in pairs:
                self.at_node(src, enode, "error", "missing-key", "an exception needs a name", rule)
                ok = False
                continue
            name = self.text(src, pairs["name"][1], "the exception name")
            if name is None:
                ok = False
                continue
            exc = ExcDef(name, scalar_loc(src, pairs["name"][1]), self.seq, src)
            if "fields" in pairs:
                fnode = pairs["fields"][1]
                if isinstance(fnode, yaml.ScalarNode) and fnode.tag != _NULL_TAG:
                    exc.fields, exc.single = [(str(fnode.value), scalar_loc(src, fnode))], True
                else:
                    exc.fields = self.scalar_list(src, fnode, "exception fields")
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
                if isinstance(cnode, yaml.ScalarNode) and cnode.tag != _NULL_TAG:
                    exc.comps = [(str(cnode.value), scalar_loc(src, cnode))]
                else:
                    exc.comps = self.scalar_list(src, cnode, "exception comps")
                    if exc.comps is None:
                        ok = False
                        continue
            if "values" in pairs:
                vnode = pairs["values"][1]
                if isinstance(vnode, yaml.ScalarNode) and vnode.tag == _NULL_TAG and vnode.style is None:
                    pass
                elif not isinstance(vnode, yaml.SequenceNode):
                    self.at_node(src, vnode, "error", "bad-type", "exception values must be a list", rule)
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
                    self.diags.append(
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

    # -- scope (compiler callbacks) -------------------------------------------------------------------

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
            self._broken_used.append(item)
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
        saved = self._current
        self._current = item.name
        try:
            text, jloc, seq_of = joined(item.cond)
            ir = self.comp.condition(text, jloc, seq_of)
        finally:
            self._macro_stack.discard(key)
            self._current = saved
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
                    self.diags.append(
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

    # -- compile --------------------------------------------------------------------------------------

    def finish(self) -> list[Rule]:
        """Compile every rule (and every macro, used or not), then report unused macros and lists.

        A rule that cannot be compiled is refused alone (its problems become warnings, one more names it and
        why) and the others load; a disabled rule's own problems are not reported, and it is compiled only so
        that configuration can switch it on. A macro that cannot be compiled refuses the rules that use it."""
        rules: list[Rule] = []
        for item in self.rule_order:
            self._current = item.name
            mark = len(self.diags)
            self._broken_used = []
            rule = self.compile_rule(item)
            if rule is None and item.valid and item.cond:
                rule = self.refuse(item, mark)
            if not item.enabled:  # quiet, but a macro's own problems are still the macro's
                self.diags[mark:] = [d for d in self.diags[mark:] if d.item != item.name]
            if rule is not None:
                rules.append(rule)
        self._current = None
        for (kind, _), item in self.items.items():
            if kind == "macro":
                self._current = item.name
                mark = len(self.diags)
                self.macro_ir(item, item.loc, 0)
                for d in self.diags[mark:]:
                    d.severity = "warning" if d.severity == "error" else d.severity
            elif kind == "list":
                self.list_values(item)
        for (kind, name), item in self.items.items():
            if kind in ("macro", "list") and not item.used:
                self.diags.append(
                    diag_at(
                        item.loc,
                        0,
                        "warning",
                        f"unused-{kind}",
                        f"{kind} '{name}' is not used by any rule, macro or list",
                        name,
                    )
                )
        self._current = None
        return rules

    def refuse(self, item: Item, mark: int) -> Rule:
        """The rule as loaded but never evaluated: its errors (and those of macros it compiled) turned into
        warnings, and one more warning at the rule that names it and the first reason."""
        causes = [d for d in self.diags[mark:] if d.severity == "error"]
        for d in causes:
            d.severity, d.refuses = "warning", item.name
        if causes:
            first = causes[0]
            reason = (
                first.message
                if first.item in (None, item.name)
                else f"in macro '{first.item}': {first.message}"
            )
            if len(causes) > 1:
                reason += f" (and {len(causes) - 1} more problem{'s' if len(causes) > 2 else ''})"
        elif self._broken_used:
            broken = self._broken_used[0]
            reason = f"it uses macro '{broken.name}' ({broken.where}), which cannot be compiled"
        else:
            reason = "its condition cannot be compiled"
        if item.enabled:
            self.diags.append(
                diag_at(
                    item.loc,
                    0,
                    "warning",
                    "rule-refused",
                    f"rule '{item.name}' is not loaded: {reason}; the other rules load",
                    item.name,
                )
            )
            self.refused.append((item.name, reason))
        rule = self.base_rule(item)
        rule.skipped = f"refused: {reason}"
        return rule

    def base_rule(self, item: Item) -> Rule:
        text = joined(item.cond)[0] if item.cond else ""
        return Rule(
            name=item.name,
            desc=" ".join(f.text for f in item.desc).strip(),
            condition=text,
            output=" ".join(f.text for f in item.output).strip(),
            priority=item.priority,
            tags=list(item.tags),
            enabled=item.enabled,
            source=item.source,
            file=item.src.file,
            line=item.line,
            column=item.column,
        )

    def compile_rule(self, item: Item) -> Rule | None:
        """The compiled rule; None when it has errors (its other parts are still checked and reported)."""
        if not item.cond:
            return None
        text, jloc, seq_of = joined(item.cond)
        rule = self.base_rule(item)
        if item.source != "syscall":
            self.diags.append(
                diag_at(
                    item.loc,
                    0,
                    "warning",
                    "unsupported-source",
                    f"rule '{item.name}' is for source '{item.source}': sentinel only evaluates "
                    "syscall rules, so it is skipped",
                    item.name,
                )
            )
            rule.skipped = f"source {item.source}"
            return rule
        mark = len(self.diags)
        errors0, unknown0 = self.comp.errors, self.comp.unknown_fields
        ir = self.comp.condition(text, jloc, seq_of)
        exc_irs = [x for exc in item.exceptions if (x := self.compile_exception(item, exc)) is not None]
        tpl_loc, tpl_text = self.output_loc(item)
        template = parse_output(tpl_text.rstrip(), tpl_loc, self.comp) if tpl_loc is not None else None
        if template is not None and template.parts and isinstance(template.parts[0], str):
            template.parts[0] = template.parts[0].lstrip()
        errors = self.comp.errors - errors0
        if errors:
            if item.skip_unknown and errors == self.comp.unknown_fields - unknown0:
                for d in self.diags[mark:]:
                    if d.code == "unknown-field":
                        d.severity = "warning"
                        d.message += " (rule skipped: skip-if-unknown-filter is true)"
                rule.skipped = "unknown filter"
                return rule
            return None
        if ir is None or not item.valid:
            return None
        if depth(ir) > MAX_IR_DEPTH:
            self.comp.error(
                jloc,
                0,
                "syntax-error",
                f"condition nested more than {MAX_IR_DEPTH} levels deep once its macros are expanded",
            )
            return None
        costly = on_demand_first(text, ir)
        if costly is not None:
            self.diags.append(
                diag_at(
                    jloc,
                    costly[0],
                    "warning",
                    "costly-check-first",
                    f"{costly[1]} is checked before cheaper checks: it may run the anomaly model on every "
                    "event that reaches it; put it after them",
                    item.name,
                )
            )
        if exc_irs:
            ir = IAnd([ir, *exc_irs])
        rule.ir = ir
        rule.template = template
        rule.output_fields = template.keys if template is not None else ()
        names = event_names(ir)
        rule.event_types = event_types(names)
        if item.warn_evttypes:
            if rule.event_types is None:
                self.diags.append(
                    diag_at(
                        jloc,
                        0,
                        "warning",
                        "no-event-type",
                        f"rule '{item.name}' does not restrict evt.type, so it is checked on "
                        "every event; start it with evt.type = ... or a macro such as "
                        "spawned_process",
                        item.name,
                    )
                )
            elif not rule.event_types:
                self.diags.append(
                    diag_at(
                        jloc,
                        0,
                        "warning",
                        "event-type-not-captured",
                        f"rule '{item.name}' can never match: sentinel captures none of its "
                        "event types (exec, open, connect are captured)",
                        item.name,
                    )
                )
        return rule

    def output_loc(self, item: Item) -> tuple[Locator | None, str]:
        if not item.output:
            return None, ""
        text, loc, _ = joined(item.output)
        return loc, text

    def compile_exception(self, item: Item, exc: ExcDef) -> Any | None:
        """``and not ((f1 c1 v1 and f2 c2 v2) or ...)`` for one exception; None when it has no values."""
        if not exc.values:
            return None
        if exc.fields is None:
            self.comp.error(exc.loc, 0, "missing-key", f"exception '{exc.name}' has values but no fields")
            return None
        fxs = [self.comp.field_text(text, loc) for text, loc in exc.fields]
        n = len(exc.fields)
        comps = [("in" if exc.single else "=", exc.loc)] * n if exc.comps is None else list(exc.comps)
        if len(comps) != n:
            cloc = exc.comps_loc or exc.loc
            self.comp.error(
                cloc,
                0,
                "exception-arity",
                f"exception '{exc.name}' has {n} field(s) but {len(comps)} comp(s)",
            )
            return None
        ok = all(fx is not None for fx in fxs)
        for op, loc in comps:
            if op.strip() == "==":
                continue
            if op.strip() not in ALL_OPS:
                self.comp.error(
                    loc, 0, "bad-operator", f"unknown comparison '{op}' in exception '{exc.name}'"
                )
                ok = False
        if not ok:
            return None
        ops = ["=" if op.strip() == "==" else op.strip() for op, _ in comps]
        alternatives: list[Any] = []
        if exc.single:
            fx, op = fxs[0], ops[0]
            if op in LIST_OPS:
                values = [v for node, src in exc.values if (v := self.exc_values(exc, node, src, True))]
                flat = [x for v in values for x in v]
                check = self.comp.typed_check(
                    fx, op, (comps[0][1], 0), flat, None, exc.seq, (flat[0][2], 0) if flat else (exc.loc, 0)
                )  # type: ignore[arg-type]
                if check is None:
                    return None
                alternatives.append(check)
            else:
                for node, src in exc.values:
                    vals = self.exc_values(exc, node, src, False)
                    if vals is None:
                        return None
                    check = self.comp.typed_check(
                        fx, op, (comps[0][1], 0), vals, None, exc.seq, (vals[0][2], 0)
                    )
                    if check is None:
                        return None
                    alternatives.append(check)
        else:
            for node, src in exc.values:
                if not isinstance(node, yaml.SequenceNode):
                    self.comp.error(
                        MarkLoc(src, node.start_mark.index),
                        0,
                        "exception-arity",
                        f"each value of exception '{exc.name}' is a list of {n} value(s), one per "
                        f"field ({', '.join(t for t, _ in exc.fields)})",
                    )
                    return None
                if len(node.value) != n:
                    self.comp.error(
                        MarkLoc(src, node.start_mark.index),
                        0,
                        "exception-arity",
                        f"exception '{exc.name}' has {n} field(s) but this value has {len(node.value)}",
                    )
                    return None
                checks = []
                for fx, op, (_, oloc), vnode in zip(fxs, ops, comps, node.value, strict=True):
                    vals = self.exc_values(exc, vnode, src, op in LIST_OPS)
                    if vals is None:
                        return None
                    check = self.comp.typed_check(
                        fx, op, (oloc, 0), vals, None, exc.seq, (vals[0][2], 0) if vals else (oloc, 0)
                    )  # type: ignore[arg-type]
                    if check is None:
                        return None
                    checks.append(check)
                alternatives.append(IAnd(checks))
        if not alternatives:
            return None
        return INot(IOr(alternatives) if len(alternatives) > 1 else alternatives[0])

    def exc_values(
        self, exc: ExcDef, node: Any, src: SourceText, as_list: bool
    ) -> list[tuple[str, bool, Locator, int]] | None:
        """Values of one exception entry; for list comparisons a YAML list, or a name of a list."""
        if isinstance(node, yaml.ScalarNode):
            return [(str(node.value), not as_list, scalar_loc(src, node), 0)]
        if as_list and isinstance(node, yaml.SequenceNode):
            out = []
            for sub in node.value:
                if not isinstance(sub, yaml.ScalarNode):
                    self.comp.error(
                        MarkLoc(src, sub.start_mark.index),
                        0,
                        "bad-type",
                        f"values of exception '{exc.name}' must be plain values",
                    )
                    return None
                out.append((str(sub.value), False, scalar_loc(src, sub), 0))
            return out
        self.comp.error(
            MarkLoc(src, node.start_mark.index),
            0,
            "bad-type",
            f"a value of exception '{exc.name}' must be a plain value here",
        )
        return None


def scalar_loc(src: SourceText, node: Any) -> ScalarLoc:
    return ScalarLoc(src, node.start_mark.index, node.end_mark.index, str(node.value), node.style)


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
