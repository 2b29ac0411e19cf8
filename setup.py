"""Build hooks pyproject.toml cannot express: the wheel's package data and its build stamp.

The rules, default model and probe source live at the repository root (the checkout runs from there); a
wheel needs a copy inside the package, found with importlib.resources (sentinel/resources.py). build_py
copies them to sentinel/_data in the build tree only, and writes sentinel/_build.py with git's description
of the source, which `sentinel --version` prints. Nothing is written into the source tree.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# Source directory -> where it goes under sentinel/_data, and which files (the rest stays in the checkout).
DATA = {
    "rules": ("rules", ("*.yaml", "*.example", "README.md")),
    "models/default": ("models/default", ("*",)),
    "bpf_probes": ("bpf_probes", ("*.c", "*.h", "LICENSE")),
}


def _git(*argv: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def build_stamp() -> str:
    """The text of sentinel/_build.py: from git when the source is a checkout, else what the sdist kept."""
    describe = _git("describe", "--tags", "--always", "--dirty")
    commit = _git("rev-parse", "HEAD")
    if describe is None or commit is None:
        kept = ROOT / "sentinel" / "_build.py"  # an sdist built from git carries it
        if kept.is_file():
            return kept.read_text()
        describe, commit = "unknown", "no git"
    return f'"""Written by setup.py at build time."""\n\nDESCRIBE = "{describe}"\nCOMMIT = "{commit}"\n'


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        package = Path(self.build_lib) / "sentinel"
        data = package / "_data"
        if data.exists():
            shutil.rmtree(data)
        for source, (target, patterns) in DATA.items():
            src = ROOT / source
            if not src.is_dir():
                raise SystemExit(f"setup.py: {src} is missing: the wheel would ship without it")
            for pattern in patterns:
                for f in sorted(src.glob(pattern)):
                    if f.is_file():
                        dest = data / target / f.name
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(f, dest)
        (package / "_build.py").write_text(build_stamp())


setup(cmdclass={"build_py": BuildWithData})
