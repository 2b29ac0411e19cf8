"""Reading rule files with locations: bytes → text → YAML nodes that keep their positions, and the typed reads
(text, booleans, lists, mappings with merge keys) every item needs.

YAML is composed, not constructed, so every node keeps its position, and scalar values are taken as written
(``no`` stays the string "no", ``0644`` stays "0644"). Every problem becomes a located :class:`Diagnostic` in
the shared :class:`Reporter`; nothing about a bad file raises.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from sentinel.rules.model import Diagnostic
from sentinel.rules.source import Locator, ScalarLoc, SourceText, diag_at

_BOOL_TRUE = frozenset({"true", "yes", "on", "y"})
_BOOL_FALSE = frozenset({"false", "no", "off", "n"})
NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class Reporter:
    """Where every stage of loading puts its diagnostics; ``current`` names the item being worked on."""

    def __init__(self) -> None:
        self.diags: list[Diagnostic] = []
        self.current: str | None = None

    def report(self, loc: Locator, pos: int, severity: str, code: str, message: str) -> None:
        """The condition compiler's callback: a problem at an offset of a located text."""
        self.diags.append(diag_at(loc, pos, severity, code, message, self.current))

    def at_node(
        self, src: SourceText, node: Any, severity: str, code: str, message: str, item: str | None = None
    ) -> None:
        line, col = src.position(node.start_mark.index)
        self.diags.append(src.diagnostic(severity, code, message, line, col, item))


class YamlReader:
    """Files to located YAML nodes, and typed reads of those nodes; ``hash`` covers every byte read."""

    def __init__(self, rep: Reporter) -> None:
        self.rep = rep
        self.hash = hashlib.sha256()

    def read_file(self, path: str) -> tuple[SourceText, list[Any]] | None:
        """A file's text and YAML documents; None (after reporting) when it cannot be read or parsed."""
        empty = SourceText(path, "")
        try:
            data = Path(path).read_bytes()
        except IsADirectoryError:
            self.rep.diags.append(
                empty.diagnostic("error", "unreadable-file", f"cannot read {path}: a directory", 1, 1)
            )
            return None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self.rep.diags.append(
                empty.diagnostic("error", "unreadable-file", f"cannot read {path}: {reason}", 1, 1)
            )
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.hash.update(data)
            head = SourceText(path, data[: exc.start].decode("utf-8", "replace"))
            line, col = head.position(len(head.text))
            self.rep.diags.append(
                head.diagnostic(
                    "error",
                    "yaml-error",
                    f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded",
                    line,
                    col,
                )
            )
            return None
        if text.startswith("\ufeff"):
            text = text[1:]
        src = SourceText(path, text)
        docs = self.read_source(src, data)
        return None if docs is None else (src, docs)

    def read_source(self, src: SourceText, data: bytes) -> list[Any] | None:
        """The YAML documents of one text, composed (not constructed) so every node keeps its position."""
        self.hash.update(data)
        try:
            docs = list(yaml.compose_all(src.text, Loader=yaml.SafeLoader))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = src.position(mark.index) if mark is not None else (1, 1)
            what = " ".join(x for x in (exc.context, exc.problem) if x) or "YAML error"
            self.rep.diags.append(src.diagnostic("error", "yaml-error", f"YAML: {what}", line, col))
            return None
        except yaml.reader.ReaderError as exc:
            line, col = src.position(exc.position)
            self.rep.diags.append(
                src.diagnostic(
                    "error",
                    "yaml-error",
                    f"YAML: character {exc.character!r} is not allowed in YAML",
                    line,
                    col,
                )
            )
            return None
        except RecursionError:
            self.rep.diags.append(src.diagnostic("error", "yaml-error", "YAML: nested too deeply", 1, 1))
            return None
        except yaml.YAMLError as exc:
            self.rep.diags.append(src.diagnostic("error", "yaml-error", f"YAML: {exc}", 1, 1))
            return None
        return docs

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
                        self.rep.at_node(src, sub, "error", "bad-type", "a merge key (<<) needs a mapping")
                continue
            if not isinstance(knode, yaml.ScalarNode):
                self.rep.at_node(src, knode, "error", "bad-type", f"keys of {what} must be plain names")
                continue
            key = knode.value
            if key in out:
                self.rep.at_node(
                    src,
                    knode,
                    "warning",
                    "duplicate-key",
                    f"key '{key}' appears twice in {what}; the last one is used",
                    self.rep.current,
                )
            out[key] = (knode, vnode)
        return {**merged, **out}

    def text(self, src: SourceText, node: Any, what: str, *, allow_null: bool = False) -> str | None:
        """A scalar's text as written; reports bad-type (and returns None) for anything else."""
        if isinstance(node, yaml.ScalarNode):
            if node.tag == NULL_TAG and node.style is None:
                if allow_null:
                    return ""
                self.rep.at_node(src, node, "error", "bad-type", f"{what} is empty", self.rep.current)
                return None
            return str(node.value)
        kind = "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
        self.rep.at_node(
            src, node, "error", "bad-type", f"{what} must be a string, not {kind}", self.rep.current
        )
        return None

    def boolean(self, src: SourceText, node: Any, what: str) -> bool | None:
        if isinstance(node, yaml.ScalarNode):
            low = str(node.value).strip().lower()
            if low in _BOOL_TRUE:
                return True
            if low in _BOOL_FALSE:
                return False
        self.rep.at_node(src, node, "error", "bad-type", f"{what} must be true or false", self.rep.current)
        return None

    def scalar_list(self, src: SourceText, node: Any, what: str) -> list[tuple[str, Locator]] | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG and node.style is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.rep.at_node(src, node, "error", "bad-type", f"{what} must be a list", self.rep.current)
            return None
        out: list[tuple[str, Locator]] = []
        ok = True
        for sub in node.value:
            if not isinstance(sub, yaml.ScalarNode):
                self.rep.at_node(
                    src, sub, "error", "bad-type", f"items of {what} must be plain values", self.rep.current
                )
                ok = False
                continue
            out.append((str(sub.value), scalar_loc(src, sub)))
        return out if ok else None


def scalar_loc(src: SourceText, node: Any) -> ScalarLoc:
    return ScalarLoc(src, node.start_mark.index, node.end_mark.index, str(node.value), node.style)
