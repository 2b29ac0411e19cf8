"""Helpers of the packaging tests: they build the real artefacts (wheel, .deb, image) from this checkout and
install them somewhere else, so what is tested is what a user gets, not the checkout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def run(
    argv: list[Any], timeout: float = 300, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run a build or install step without the checkout on the path; a failure names the step and output."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(kw.pop("env", None) or {})
    argv = [str(a) for a in argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {done.returncode}\nstdout:\n{done.stdout[-4000:]}\n"
            f"stderr:\n{done.stderr[-4000:]}"
        )
    return done


def git_commit() -> str:
    return run(["git", "-C", REPO, "rev-parse", "HEAD"]).stdout.strip()
