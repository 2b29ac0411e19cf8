"""Positions inside a Sigma document. pySigma keeps none (an error names the file at most), so problems are
placed by walking the composed YAML: the detection, the field key (``Image|endswith``), the logsource."""

from __future__ import annotations

import re
from typing import Any

import yaml

from sentinel.rules.sigma.detect import top_keys
from sentinel.rules.source import MarkLoc, SourceText


class SigmaDoc:
    """One Sigma document of a file: its text, its composed node, and lookups that give :class:`MarkLoc`."""

    def __init__(self, src: SourceText, node: Any) -> None:
        self.src = src
        self.node = node
        self.keys = top_keys(node)

    @property
    def text(self) -> str:
        """The document's own text, as pySigma is given it."""
        return self.src.text[self.node.start_mark.index : self.node.end_mark.index]

    def at(self, node: Any) -> MarkLoc:
        return MarkLoc(self.src, node.start_mark.index)

    def start(self) -> MarkLoc:
        """Where the rule is named: its title key, else the document's start."""
        if "title" in self.keys:
            return self.at(self.keys["title"][0])
        return self.at(self.node)

    def key(self, name: str) -> MarkLoc:
        """A top-level key (``logsource``, ``level`` ...), else the rule's start."""
        pair = self.keys.get(name)
        return self.at(pair[0]) if pair is not None else self.start()

    def scalar(self, name: str) -> str | None:
        pair = self.keys.get(name)
        if pair is None or not isinstance(pair[1], yaml.ScalarNode):
            return None
        return str(pair[1].value)

    def detection(self, name: str | None) -> MarkLoc:
        """A detection (a search identifier) by name, else the detection key."""
        det = self.keys.get("detection")
        if det is None:
            return self.start()
        if name is not None:
            for k, _v in _pairs(det[1]):
                if k.value == name:
                    return self.at(k)
        return self.at(det[0])

    def field(self, detection: str | None, field: str | None) -> MarkLoc:
        """The key naming ``field`` (with or without modifiers) inside a detection; the detection when the
        field is not written there (keywords)."""
        det = self.keys.get("detection")
        if det is None or field is None:
            return self.detection(detection)
        for k, v in _pairs(det[1]):
            if detection is not None and k.value != detection:
                continue
            found = _find_key(v, field)
            if found is not None:
                return self.at(found)
        return self.detection(detection)

    def guess(self, message: str) -> MarkLoc:
        """The best place for a pySigma error message: a quoted name in it that is a key of the detection
        (a field, a modifier, a search identifier), else the detection, else the rule's start."""
        det = self.keys.get("detection")
        words = re.findall(r"'([^']+)'", message)
        words += [m.lower() for m in re.findall(r"Sigma(\w+?)Modifier", message)]  # its class, not its name
        for word in words:
            if det is not None:
                for k, v in _pairs(det[1]):
                    if k.value == word:
                        return self.at(k)
                    found = _find_key(v, word, partial=True)
                    if found is not None:
                        return self.at(found)
            if word in self.keys:
                return self.at(self.keys[word][0])
        if "condition" in message.lower() and det is not None:
            for k, _v in _pairs(det[1]):
                if k.value == "condition":
                    return self.at(k)
        if det is not None and ("detection" in message.lower() or "modifier" in message.lower()):
            return self.at(det[0])
        return self.start()


def _pairs(node: Any) -> list[tuple[Any, Any]]:
    if not isinstance(node, yaml.MappingNode):
        return []
    return [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]


def _find_key(node: Any, field: str, *, partial: bool = False) -> Any | None:
    """The first key node (depth first) whose field part is ``field``; with ``partial``, any key that has
    ``field`` as one of its ``|``-separated parts (a modifier named in an error)."""
    stack = [node]
    while stack:
        n = stack.pop(0)
        if isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode):
                    parts = str(k.value).split("|")
                    if parts[0] == field or (partial and field in parts):
                        return k
                stack.append(v)
    return None
