"""Real-kernel fixtures: one `sentinel events` agent for the session, and helpers to find its documents.

These tests never skip: without root or with probes that fail to load, they fail and say why, because a
green run that tested nothing would hide a broken sensor.

The session agent sees every event of the host for the whole run (the storms of other tests, podman, apt,
compilers). Its documents are kept only while a module that uses it runs, and dropped when that module
ends: kept for the whole session they grew the pytest process to 23.8 GB and the kernel's OOM killer ended
a CI run. Every line is still parsed, so a line that is not JSON is caught wherever it comes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from .podman import podman_image  # noqa: F401  (a session fixture: the real containers' base image)

REPO = Path(__file__).resolve().parents[2]
HELPERS = Path(__file__).resolve().parent / "helpers"
READY_TIMEOUT = 60.0
MAX_DOCS = 2_000_000  # within one module's window; beyond it the oldest half goes (counted, named on failure)


def sentinel_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sentinel.cli", *args]


def bad_line_reason(line: bytes, exc: orjson.JSONDecodeError) -> str:
    """Where a line stopped being JSON: a long line's middle is what a truncated repr would hide."""
    pos = getattr(exc, "pos", 0) or 0
    return f"{len(line)} bytes, {exc}; around byte {pos}: {line[max(0, pos - 300) : pos + 300]!r}"


class Agent:
    """A running `sentinel events` process whose stdout documents are collected by a thread."""

    def __init__(self, *args: str) -> None:
        if os.geteuid() != 0:
            pytest.fail("kernel tests need root: run the suite with scripts/run-tests.sh as root")
        self.proc = subprocess.Popen(
            sentinel_cmd("events", "--types", "all", *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        self.docs: list[dict[str, Any]] = []
        self.collecting = True  # documents kept only in a window of a module that uses the agent
        self.trimmed = 0  # documents dropped from a window past MAX_DOCS
        self.diagnostics: list[dict[str, Any]] = []
        self.bad_lines: list[bytes] = []
        self.bad_reasons: list[str] = []  # the parser's message and the bytes around where it failed
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._readers:
            t.start()
        if not self._ready.wait(READY_TIMEOUT) or self.proc.poll() is not None:
            self.proc.kill()
            diag = "\n".join(orjson.dumps(d).decode() for d in self.diagnostics[-20:])
            pytest.fail(f"sentinel events did not become ready (probes failed to load?):\n{diag}")

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                self.bad_lines.append(line)
                self.bad_reasons.append(bad_line_reason(line, exc))
                continue
            if not self.collecting:
                continue
            with self._lock:
                self.docs.append(doc)
                if len(self.docs) > MAX_DOCS:
                    half = len(self.docs) // 2
                    del self.docs[:half]
                    self.trimmed += half

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                rec = {"event": "non-json-stderr", "line": line.decode(errors="replace")}
            self.diagnostics.append(rec)
            if rec.get("event") == "sentinel.ready":
                self._ready.set()

    def window(self, collecting: bool) -> None:
        """Start or end a module's window: what came before it is dropped either way."""
        with self._lock:
            self.docs = []
            self.trimmed = 0
            self.collecting = collecting

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.docs)

    def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0, count: int = 1, what: str = ""
    ) -> list[dict[str, Any]]:
        """Documents matching ``pred``, waiting until ``count`` of them arrived."""
        deadline = time.monotonic() + timeout
        while True:
            found = [d for d in self.snapshot() if pred(d)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                trimmed = f", {self.trimmed} older ones dropped past {MAX_DOCS}" if self.trimmed else ""
                pytest.fail(
                    f"no event matching {what or pred} within {timeout}s ({len(self.docs)} seen{trimmed})"
                )
            time.sleep(0.05)

    def stop(self) -> int:
        """Stop the agent and wait until its last lines are read (its stop record comes last)."""
        self.proc.terminate()
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = -9
        for t in self._readers:
            t.join(10)
        return rc


_session_agent: list[Agent] = []  # the session's agent once a test started it


@pytest.fixture(scope="session")
def agent() -> Iterator[Agent]:
    """The shipped defaults (open de-duplication on): what users run is what the kernel tests exercise."""
    a = Agent()
    _session_agent.append(a)
    yield a
    rc = a.stop()
    assert rc == 0, f"agent exited with {rc}"
    assert not a.bad_lines, "agent wrote lines that are not JSON:\n" + "\n".join(a.bad_reasons[:3])


@pytest.fixture(scope="module", autouse=True)
def _agent_window(request: pytest.FixtureRequest) -> Iterator[None]:
    """Keep the session agent's documents for the modules that use it, one module at a time."""
    module = request.module
    uses = any("agent" in item.fixturenames for item in request.session.items if item.module is module)
    if uses and _session_agent:
        _session_agent[0].window(collecting=True)
    yield
    if _session_agent:
        _session_agent[0].window(collecting=False)


@pytest.fixture(scope="session")
def helper_bin(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """Compile a helper C program from tests/integration/helpers once per session."""
    out_dir = tmp_path_factory.mktemp("helpers")
    built: dict[str, str] = {}

    def build(name: str) -> str:
        if name not in built:
            cc = shutil.which("cc") or shutil.which("gcc")
            if cc is None:
                pytest.fail("no C compiler: scripts/setup.sh installs gcc")
            target = out_dir / name
            subprocess.run([cc, "-O1", "-o", str(target), str(HELPERS / f"{name}.c")], check=True)
            built[name] = str(target)
        return built[name]

    return build


def get(doc: dict[str, Any], dotted: str) -> Any:
    cur: Any = doc
    for key in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur
