"""Falco's file requirements: ``required_engine_version`` (a file needing a newer rules-engine language, or
another major, does not load) and ``required_plugin_versions`` (checked for shape and versions; the container
plugin's fields are built into sentinel, other plugins are not part of it)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from sentinel.rules.reader import YamlReader
from sentinel.rules.source import SourceText

# The Falco rules-engine language version implemented (what required_engine_version is checked against).
ENGINE_VERSION = (0, 60, 0)
BUILT_IN_PLUGINS = frozenset({"container"})  # Falco plugins whose fields sentinel provides itself


def check_engine_version(read: YamlReader, src: SourceText, node: Any) -> None:
    """Falco's check: a file needing a newer rules-engine language (or another major) is refused."""
    text = read.text(src, node, "required_engine_version")
    if text is None:
        return
    wanted = parse_version(text)
    if wanted is None:
        read.rep.at_node(
            src, node, "error", "bad-value", f"required_engine_version {text!r} is not a version"
        )
        return
    if len(wanted) == 1:  # an old integer engine version: every 0.x language implements it
        return
    if wanted[0] != ENGINE_VERSION[0] or wanted > ENGINE_VERSION:
        have = ".".join(map(str, ENGINE_VERSION))
        read.rep.at_node(
            src,
            node,
            "error",
            "engine-version",
            f"this file requires rules-engine version {text.strip()}; sentinel implements Falco's "
            f"rules-engine language {have}",
        )


def check_plugin_versions(read: YamlReader, src: SourceText, node: Any) -> None:
    """Falco's ``required_plugin_versions``: checked for shape and versions like Falco; the container
    plugin's fields are built into sentinel, other plugins' event sources are not evaluated (their rules
    are skipped with a warning each), so needing one is a warning, not a refusal."""
    if not isinstance(node, yaml.SequenceNode):
        read.rep.at_node(src, node, "error", "bad-type", "required_plugin_versions must be a list")
        return
    for entry in node.value:
        wants: list[tuple[str, Any]] = []
        for alt in (entry, *_alternatives(read, src, entry)):
            if not isinstance(alt, yaml.MappingNode):
                read.rep.at_node(
                    src, alt, "error", "bad-type", "a plugin requirement is a mapping: name, version"
                )
                return
            pairs = read.pairs(src, alt, "a plugin requirement")
            name = read.text(src, pairs["name"][1], "the plugin name") if "name" in pairs else None
            version = (
                read.text(src, pairs["version"][1], "the plugin version") if "version" in pairs else None
            )
            if name is None or version is None:
                read.rep.at_node(
                    src, alt, "error", "missing-key", "a plugin requirement needs name and version"
                )
                return
            if parse_version(version) is None or len(parse_version(version) or ()) != 3:
                read.rep.at_node(
                    src, pairs["version"][1], "error", "bad-value",
                    f"invalid required version {version!r} for plugin {name!r} (major.minor.patch)",
                )  # fmt: skip
                return
            if any(n == name for n, _ in wants):
                read.rep.at_node(
                    src, alt, "error", "bad-value",
                    f"plugin {name!r} is named more than once among these alternatives",
                )  # fmt: skip
                return
            wants.append((name, alt))
        if not any(name in BUILT_IN_PLUGINS for name, _ in wants):
            names = " or ".join(repr(n) for n, _ in wants)
            read.rep.at_node(
                src, entry, "warning", "plugin-not-available",
                f"this file asks for plugin {names}: sentinel has no plugins (it evaluates syscall rules "
                "and has the container plugin's fields built in), so rules of that plugin's event source "
                "are skipped",
            )  # fmt: skip


def _alternatives(read: YamlReader, src: SourceText, entry: Any) -> list[Any]:
    if not isinstance(entry, yaml.MappingNode):
        return []
    node = read.pairs(src, entry, "a plugin requirement").get("alternatives", (None, None))[1]
    if node is None:
        return []
    if not isinstance(node, yaml.SequenceNode):
        read.rep.at_node(
            src, node, "error", "bad-type", "alternatives of a plugin requirement must be a list"
        )
        return []
    return list(node.value)


def parse_version(text: str) -> tuple[int, ...] | None:
    """``0.57.0`` → (0, 57, 0); ``0.57`` → (0, 57, 0); a bare integer (old engine versions) → (N,)."""
    m = re.fullmatch(r"\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?\s*", text)
    if not m:
        return None
    if m.group(2) is None:
        return (int(m.group(1)),)
    return tuple(int(g or 0) for g in m.groups())
