"""Where the shipped rules, default model and probe source are: one search order for every lookup.

A git checkout (editable install) keeps them at the repository root; the Debian package puts them under
``/usr/share/sentinel``; a wheel carries a copy inside the package (``sentinel/_data``, added at build time
by ``setup.py``) found through :mod:`importlib.resources`. An environment variable wins, then the checkout,
then ``/usr/share/sentinel`` (an administrator's copy there overrides a pip-installed one), then the package.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARE_DIR = Path("/usr/share/sentinel")
DATA_PACKAGE_DIR = "_data"  # inside the sentinel package, in a wheel only (setup.py's build_py copies it)


def package_data(relative: str) -> Path | None:
    """The wheel's copy of ``relative`` (e.g. ``rules``), as a real directory, or None.

    Only a package installed as files qualifies (pip always installs wheels so): bcc and the rule loader read
    paths, so a zipped import would need extraction, which nothing here supports.
    """
    try:
        root = resources.files("sentinel") / DATA_PACKAGE_DIR
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - the package itself is always importable
        return None
    target = root.joinpath(*relative.split("/"))
    return Path(str(target)) if isinstance(target, Path) else None


LINK_HEADERS = "/usr/lib/sentinel/link-headers"  # the Debian package's headers fallback (packaging/debian)


def candidates(env: str, relative: str) -> list[Path]:
    """Where ``relative`` may be, in the order it is looked for."""
    found = [Path(os.environ[env])] if os.environ.get(env) else []
    if (REPO_ROOT / "pyproject.toml").is_file():  # a checkout; installed, REPO_ROOT is site-packages
        found.append(REPO_ROOT / relative)
    found.append(SHARE_DIR / relative)
    data = package_data(relative)
    if data is not None:
        found.append(data)
    return found


def find(env: str, relative: str, accept: Callable[[Path], bool]) -> Path | None:
    """The first candidate ``accept`` takes, or None."""
    for c in candidates(env, relative):
        if accept(c):
            return c
    return None


def setup_hint() -> str:
    """How to prepare this host, as the way sentinel was installed has it: a checkout's ``scripts/setup.sh``,
    the Debian package's header linker, or (a wheel elsewhere) the distro's packages by name."""
    if (REPO_ROOT / "pyproject.toml").is_file():
        return "run scripts/setup.sh"
    if Path(LINK_HEADERS).is_file():
        return f"run {LINK_HEADERS} (kernel headers) and mount tracefs"
    return "install python3-bpfcc and your kernel's headers (linux-headers-$(uname -r)), and mount tracefs"

