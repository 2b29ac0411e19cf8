"""The dynamic loader's library opens right after exec: counted in the kernel, not sent (--loader-opens).

Each case runs a fresh process and looks at its own pid's events: what the loader opens for every program
is hidden, anything that could carry an attack (a preloaded library outside the system directories, a
symlink named like a library, /etc/ld.so.preload, a library read after main started) is reported.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import HELPERS, Agent, get

pytestmark = pytest.mark.kernel

# What ld.so opens for /bin/true on the test hosts (Debian, x86-64: libc's path as ld.so.cache spells it).
LOADER_PATHS = {"/etc/ld.so.cache", "/lib/x86_64-linux-gnu/libc.so.6"}
TYPES = ("--types", "exec,open,exit")  # what this module reads: its own agents stop fast on a busy host


def system_libc() -> str:
    found = sorted(glob.glob("/usr/lib/*/libc.so.6"))
    if not found:
        pytest.fail("no /usr/lib/*/libc.so.6 on this host")
    return found[0]


def run_traced(agent: Agent, argv: list[str], **kw: Any) -> int:
    """Run argv to its end; return its pid once the agent has seen its exit (so all its opens came first)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, **kw)
    assert proc.wait(30) == 0, argv
    agent.wait_for(
        lambda d: get(d, "event.action") == "exit" and get(d, "process.pid") == proc.pid,
        what=f"exit of {argv[0]} ({proc.pid})",
    )
    return proc.pid


def opened(agent: Agent, pid: int) -> list[str]:
    """The paths (as spelled) of the opens reported for pid."""
    return [
        get(d, "sentinel.event.raw_path")
        for d in agent.snapshot()
        if get(d, "event.action") == "open" and get(d, "process.pid") == pid
    ]


def loader_opens_filtered(agent: Agent) -> int:
    stopped = [d for d in agent.diagnostics if d.get("event") == "sentinel.stopped"]
    assert stopped, agent.diagnostics[-5:]
    return stopped[-1]["kernel"]["loader_opens_filtered"]


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    """Compile a C source with extra flags (-static, -shared...) once per module."""
    out = tmp_path_factory.mktemp("loader-bin")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler: scripts/setup.sh installs gcc")

    def compile_(source: Path, name: str, *flags: str) -> str:
        target = out / name
        if not target.exists():
            subprocess.run([cc, "-O1", *flags, "-o", str(target), str(source)], check=True)
        return str(target)

    return compile_


@pytest.fixture(scope="module")
def preload_lib(build: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> str:
    src = tmp_path_factory.mktemp("libx") / "libx.c"
    src.write_text("int sentinel_test_preload(void) { return 1; }\n")
    return build(src, "libx.so", "-shared", "-fPIC")


def test_true_loader_opens_are_counted_not_sent() -> None:
    """A fresh filtering agent: /bin/true's ld.so.cache and libc opens are not sent, and are counted."""
    own = Agent(*TYPES)
    try:
        ready = next(d for d in own.diagnostics if d.get("event") == "sentinel.ready")
        assert ready["loader_opens"] == "filter"
        pid = run_traced(own, ["/bin/true", "m" + uuid.uuid4().hex])
        assert not LOADER_PATHS & set(opened(own, pid)), opened(own, pid)
    finally:
        assert own.stop() == 0
    assert loader_opens_filtered(own) >= 2


def test_hash_fallback_filters_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without task storage the phase is kept with the process's generation: the same result."""
    monkeypatch.setenv("SENTINEL_STASH", "hash")
    own = Agent(*TYPES)
    monkeypatch.delenv("SENTINEL_STASH")
    try:
        ready = next(d for d in own.diagnostics if d.get("event") == "sentinel.ready")
        assert ready["stash"].startswith("hash") and ready["loader_opens"] == "filter"
        pid = run_traced(own, ["/bin/true", "m" + uuid.uuid4().hex])
        assert not LOADER_PATHS & set(opened(own, pid)), opened(own, pid)
        # ... and a program's own read of a library after main started is reported
        data = tmp_path / "data"
        data.write_text("x")
        libc = system_libc()
        script = f"open({str(data)!r}).close(); open({libc!r}, 'rb')"
        pid = run_traced(own, ["/usr/bin/python3", "-c", script])
        assert libc in opened(own, pid)
    finally:
        assert own.stop() == 0
    assert loader_opens_filtered(own) >= 2


def test_report_sends_the_loader_opens() -> None:
    own = Agent(*TYPES, "--loader-opens", "report")
    try:
        ready = next(d for d in own.diagnostics if d.get("event") == "sentinel.ready")
        assert ready["loader_opens"] == "report"
        pid = run_traced(own, ["/bin/true", "m" + uuid.uuid4().hex])
        assert set(opened(own, pid)) >= LOADER_PATHS, opened(own, pid)
    finally:
        assert own.stop() == 0
    assert loader_opens_filtered(own) == 0


def test_ld_preload_outside_system_directories_is_reported(agent: Agent, preload_lib: str) -> None:
    pid = run_traced(agent, ["/bin/true"], env={**os.environ, "LD_PRELOAD": preload_lib})
    paths = opened(agent, pid)
    assert preload_lib in paths
    # the preloaded library ended the loader phase: what the loader opens after it is reported too
    assert "/lib/x86_64-linux-gnu/libc.so.6" in paths


def test_ld_library_path_copy_of_a_system_library_is_reported(agent: Agent, tmp_path: Path) -> None:
    libdir = tmp_path / "lib"
    libdir.mkdir()
    shutil.copy(system_libc(), libdir / "libc.so.6")
    pid = run_traced(agent, ["/bin/true"], env={**os.environ, "LD_LIBRARY_PATH": str(libdir)})
    assert str(libdir / "libc.so.6") in opened(agent, pid), opened(agent, pid)


def test_library_read_after_main_started_is_reported(agent: Agent, build: Callable[..., str]) -> None:
    tool = build(HELPERS / "open_paths.c", "open_paths")
    libc = system_libc()
    pid = run_traced(agent, [tool, "/etc/hostname", libc])
    paths = opened(agent, pid)
    assert "/etc/hostname" in paths and libc in paths
    assert not LOADER_PATHS & set(paths), "the loader's own opens (before main) are still filtered"


def test_symlink_named_like_a_library_is_reported(agent: Agent, build: Callable[..., str]) -> None:
    """The file reached must carry the name the path ends with: x.so -> /etc/hostname is not a library."""
    static = build(HELPERS / "open_paths.c", "open_paths_static", "-static")
    dynamic = build(HELPERS / "open_paths.c", "open_paths")
    link = Path(f"/usr/lib/sentinel-test-{uuid.uuid4().hex[:8]}.so")
    link.symlink_to("/etc/hostname")
    try:
        pid = run_traced(agent, [static, str(link)])  # the very first open after exec
        assert str(link) in opened(agent, pid)
        pid = run_traced(agent, [dynamic, str(link)])  # the first open after the loader's
        assert str(link) in opened(agent, pid)
    finally:
        link.unlink()


def test_ld_so_preload_is_never_filtered(agent: Agent, build: Callable[..., str]) -> None:
    static = build(HELPERS / "open_paths.c", "open_paths_static", "-static")
    pid = run_traced(agent, [static, "/etc/ld.so.preload"])  # first open after exec; fails if absent
    assert "/etc/ld.so.preload" in opened(agent, pid)


@pytest.fixture
def empty_preload_file() -> Iterator[None]:
    """An empty /etc/ld.so.preload for the test, made only if there is none (an existing one is never
    touched)."""
    try:
        fd = os.open("/etc/ld.so.preload", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        pytest.skip("/etc/ld.so.preload exists on this host: not replaced for a test")
    os.close(fd)
    try:
        yield
    finally:
        os.unlink("/etc/ld.so.preload")


def test_the_loaders_read_of_ld_so_preload_is_reported(agent: Agent, empty_preload_file: None) -> None:
    pid = run_traced(agent, ["/bin/true"])
    paths = opened(agent, pid)
    assert "/etc/ld.so.preload" in paths
    assert "/etc/ld.so.cache" in paths, "an open that is not the loader's kind ends the phase"
