"""Kept for existing imports: the escaping rule and ``dumps`` live in :mod:`sentinel.text` (project-wide)."""

from __future__ import annotations

from sentinel.text import dumps, escape, needs_escape, unescape, unescape_text

__all__ = ["dumps", "escape", "needs_escape", "unescape", "unescape_text"]
