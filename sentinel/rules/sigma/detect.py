"""Telling a Sigma document from a Falco-style one, from the composed YAML alone (pySigma is optional)."""

from __future__ import annotations

from typing import Any

import yaml


def top_keys(node: Any) -> dict[str, tuple[Any, Any]]:
    """A mapping document's plain keys with their key and value nodes; {} for anything else."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def sigma_kind(node: Any) -> str | None:
    """ "rule" for a document with ``logsource`` and ``detection``, "correlation" for one with
    ``correlation``, None otherwise (a Falco-style file is a YAML list, so the two never overlap)."""
    keys = top_keys(node)
    if "correlation" in keys:
        return "correlation"
    if "logsource" in keys and "detection" in keys:
        return "rule"
    return None
