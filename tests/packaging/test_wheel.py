"""The wheel is complete: installed into a fresh venv outside the checkout it finds its rules, default model
and probe source through importlib.resources, names its build, and asks for the train extra to train."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from .steps import REPO, git_commit, run

pytestmark = pytest.mark.packaging

SYSTEM_PYTHON = "/usr/bin/python3"  # bcc is importable only from Debian's interpreter


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv (system site packages, for bcc) with the wheel and the hash-pinned runtime dependencies."""
    tmp = tmp_path_factory.mktemp("wheel")
    assert not tmp.resolve().is_relative_to(REPO)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", REPO], timeout=600)
    wheels = list((tmp / "dist").glob("sentinel-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp / "venv"
    run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", venv])
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run([*pip, "--require-hashes", "-r", REPO / "packaging" / "requirements.txt"], timeout=600)
    run([*pip, "--no-deps", wheels[0]])
    return venv


def sentinel(venv: Path, *argv: str, check: bool = True) -> tuple[int, str, str]:
    done = run([venv / "bin" / "sentinel", *argv], cwd=venv.parent, check=check)
    return done.returncode, done.stdout, done.stderr


def in_venv(venv: Path, code: str) -> str:
    return run([venv / "bin" / "python", "-c", code], cwd=venv.parent).stdout.strip()


def test_version_names_the_build(installed: Path) -> None:
    _, out, _ = sentinel(installed, "--version")
    from sentinel import __version__

    assert out.startswith(f"sentinel {__version__}, build "), out
    assert git_commit() in out, f"the wheel's build stamp should name the commit it was built from: {out}"
    assert "checkout" not in out  # read from the stamp, not from git


def test_shipped_files_come_from_the_package(installed: Path) -> None:
    code = (
        "import json; from sentinel.detect import find_rules_dir; from sentinel.anomaly.live import "
        "find_default_model; from sentinel.sensor.loader import find_probe_dir; "
        "import sentinel.anomaly.train as t; "
        "print(json.dumps([str(find_rules_dir()), str(find_default_model()), str(find_probe_dir()), "
        "t.training_available()]))"
    )
    rules, model, probes, can_train = json.loads(in_venv(installed, code))
    for found, relative in ((rules, "rules"), (model, "models/default"), (probes, "bpf_probes")):
        if Path("/usr/share/sentinel", relative).exists():  # an installed package's copy wins, as documented
            continue
        assert found.startswith(str(installed)) and found.endswith(f"sentinel/_data/{relative}"), found
    assert can_train is False, "scikit-learn must come only with the train extra"


def test_rules_validate_finds_the_shipped_rules(installed: Path) -> None:
    rc, out, err = sentinel(installed, "rules", "validate", "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["ok"] is True
    assert len(report["files"]) > 10, report


def test_default_model_loads(installed: Path) -> None:
    rc, out, _ = sentinel(installed, "model", "info", "--model", "default")
    assert rc == 0
    assert "verified" in out.splitlines()[-1], out[-500:]
    assert '"features"' in out


def test_auto_model_without_the_train_extra_names_it(installed: Path, tmp_path: Path) -> None:
    code = (
        "from sentinel.anomaly.live import AnomalySettings, open_engine; "
        "from sentinel.log import get_logger; "
        f"settings = AnomalySettings(model='auto', state_dir='{tmp_path}'); "
        "engine, notices = open_engine(settings, get_logger()); "
        "print(engine is None, notices[0].output if notices else None)"
    )
    out = in_venv(installed, code)
    assert out.startswith("True"), out
    assert "'train' extra" in out and "sentinel[train]" in out, out
