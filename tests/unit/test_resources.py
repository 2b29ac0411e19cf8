"""The shipped files' search order: environment, checkout, /usr/share/sentinel, the wheel's package data."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel import resources


def test_environment_then_checkout_then_share(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SENTINEL_RULES", str(tmp_path))
    order = resources.candidates("SENTINEL_RULES", "rules")
    assert order[:3] == [tmp_path, resources.REPO_ROOT / "rules", Path("/usr/share/sentinel/rules")]
    assert resources.find("SENTINEL_RULES", "rules", Path.is_dir) == tmp_path
    monkeypatch.delenv("SENTINEL_RULES")
    assert resources.find("SENTINEL_RULES", "rules", Path.is_dir) == resources.REPO_ROOT / "rules"


def test_package_data_is_last(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(resources, "REPO_ROOT", tmp_path / "no-checkout")
    monkeypatch.setattr(resources, "SHARE_DIR", tmp_path / "no-share")
    data = tmp_path / "pkg" / "models" / "default"
    monkeypatch.setattr(resources, "package_data", lambda rel: tmp_path / "pkg" / rel)
    assert resources.find("X_UNSET", "models/default", Path.is_dir) is None
    data.mkdir(parents=True)
    assert resources.find("X_UNSET", "models/default", Path.is_dir) == data


def test_package_data_path_inside_the_package() -> None:
    found = resources.package_data("rules")
    assert found is not None and found.parts[-3:] == ("sentinel", "_data", "rules")


def test_the_setup_hint_follows_how_sentinel_was_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resources.setup_hint() == "run scripts/setup.sh"  # this checkout
    monkeypatch.setattr(resources, "REPO_ROOT", tmp_path)  # installed: no pyproject.toml beside the package
    linker = tmp_path / "link-headers"
    monkeypatch.setattr(resources, "LINK_HEADERS", str(linker))
    assert "linux-headers-$(uname -r)" in resources.setup_hint()  # a wheel elsewhere
    linker.write_text("#!/bin/sh\n")
    assert resources.setup_hint().startswith(f"run {linker}")  # the Debian package
