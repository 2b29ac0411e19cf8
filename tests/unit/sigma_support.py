"""Builders for the Sigma front-end tests: a Sigma rule from a detection block, loaded as a ruleset."""

from __future__ import annotations

import os
import textwrap
import uuid

import pytest

from sentinel.rules import EvalContext, RuleSet, load_text
from sentinel.rules.loader import LoadResult

try:
    import sigma.rule  # noqa: F401
except ImportError:  # the test command installs the sigma extra: in CI its absence is a failure
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("pySigma (the sigma extra) is not installed", allow_module_level=True)


def sigma_yaml(
    detection: str, category: str = "process_creation", title: str = "T", extra: str = "", sid: str = ""
) -> str:
    """A Sigma rule whose ``detection:`` block is ``detection`` (dedented, then indented under it)."""
    body = textwrap.indent(textwrap.dedent(detection).strip("\n"), "  ")
    # One id per title: the loader keeps a single copy of a Sigma id (a reloaded rule, not a new one).
    if not sid:
        sid = (
            "0b2f4c1e-1f4e-4c59-9a53-2d8c5e0f6a11"
            if title == "T"
            else str(uuid.uuid5(uuid.NAMESPACE_URL, title))
        )
    return (
        f"title: {title}\nid: {sid}\nstatus: test\ndescription: d\n"
        f"author: A. Author\nlogsource:\n  product: linux\n  category: {category}\ndetection:\n{body}\n"
        f"level: high\n{extra}"
    )


def sigma_load(detection: str, category: str = "process_creation", **kw: str) -> LoadResult:
    return load_text(sigma_yaml(detection, category, **kw), "r.yml")


def sigma_rules(detection: str, category: str = "process_creation") -> RuleSet:
    got = sigma_load(detection, category)
    assert got.ruleset is not None, got.diagnostics
    refused = [d for d in got.diagnostics if d.refuses]
    assert not refused, refused
    return got.ruleset


def fires(detection: str, ctx: EvalContext, category: str = "process_creation") -> bool:
    return bool(sigma_rules(detection, category).match(ctx))
