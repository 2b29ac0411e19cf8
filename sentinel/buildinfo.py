"""What ``sentinel --version`` says: the release and the build it came from.

A wheel or package built from git carries ``sentinel/_build.py`` (written by ``setup.py`` at build time:
``git describe`` and the commit), so an installed agent names its exact source without git. A checkout
without that file asks git when the version is asked for (never at import: it costs a process).
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any

from sentinel import __version__

CHECKOUT = Path(__file__).resolve().parents[1]


def build() -> str:
    """``describe (commit)`` of the source this agent was built from, or ``unknown build``."""
    try:
        from sentinel import _build  # type: ignore[attr-defined]  # generated at build time

        return f"{_build.DESCRIBE} ({_build.COMMIT})"
    except ImportError:
        pass
    if not (CHECKOUT / ".git").exists():
        return "unknown build"
    try:
        describe = _git("describe", "--tags", "--always", "--dirty")
        commit = _git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return "unknown build (git unavailable)"
    return f"{describe} ({commit}, checkout {CHECKOUT})"


def _git(*argv: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(CHECKOUT), *argv], capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def version_text() -> str:
    return f"sentinel {__version__}, build {build()}"


class VersionAction(argparse.Action):
    """``--version``, computed only when asked (the build may run git)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print the version and the build it came from, then exit")
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None
    ) -> None:
        print(version_text())
        parser.exit()
