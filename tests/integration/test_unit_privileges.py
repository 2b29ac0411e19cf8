"""The agent under exactly packaging/systemd/sentinel.service's capabilities (setpriv: bounding, inheritable
and ambient sets, securebits noroot-locked, no_new_privs), with a notify socket as systemd gives it: it
attaches, says READY=1 then WATCHDOG=1 at half of WATCHDOG_USEC, alerts on a real trigger and on
`sentinel test-alert`, carries a tamper record (its own SIGKILL) over a restart without CAP_SYS_ADMIN, and
says STOPPING=1 at SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import REPO, get, sentinel_cmd

pytestmark = pytest.mark.kernel

UNIT = REPO / "packaging" / "systemd" / "sentinel.service"
WATCHDOG_USEC = 2_000_000  # pings every second


def unit_capabilities() -> list[str]:
    """The unit's CapabilityBoundingSet, e.g. ["CAP_BPF", ...]."""
    caps: list[str] = []
    for line in UNIT.read_text().splitlines():
        if line.strip().startswith("CapabilityBoundingSet="):
            caps += line.split("=", 1)[1].split()
    assert caps, f"{UNIT} has no CapabilityBoundingSet"
    return caps


def setpriv_prefix(caps: list[str]) -> list[str]:
    names = ",".join(f"+{c.removeprefix('CAP_').lower()}" for c in caps)
    return [
        "setpriv", "--no-new-privs", "--securebits=+noroot,+noroot_locked",
        f"--bounding-set=-all,{names}", f"--inh-caps=-all,{names}", f"--ambient-caps=-all,{names}",
    ]  # fmt: skip


class NotifyReceiver:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET; records (time, message)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode(errors="replace")))

    def lines(self) -> list[str]:
        return [line for _t, m in list(self.messages) for line in m.split("\n")]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


class CappedAgent:
    """`sentinel run` under the unit's capabilities; alerts from stdout, diagnostics from stderr."""

    def __init__(self, caps: list[str], env: dict[str, str], state_dir: str) -> None:
        cmd = [*setpriv_prefix(caps), *sentinel_cmd("run", "--model", "off", "--state-dir", state_dir)]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env={**os.environ, **env}
        )
        self.alerts: list[dict[str, Any]] = []
        self.diagnostics: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._out, self._err)]
        for t in self._threads:
            t.start()
        if not self.ready.wait(120) or self.proc.poll() is not None:
            self.proc.kill()
            pytest.fail(f"sentinel run under {caps} did not become ready: {self.diagnostics[-8:]}")

    def _out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.alerts.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                pytest.fail(f"non-JSON alert line: {line[:200]!r}")

    def _err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                rec = {"event": "non-json", "line": line.decode(errors="replace")}
            self.diagnostics.append(rec)
            if rec.get("event") == "sentinel.ready":
                self.ready.set()

    def diagnostic(self, event: str) -> dict[str, Any] | None:
        return next((d for d in self.diagnostics if d.get("event") == event), None)

    def wait_alert(self, rule: str, executable: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for a in list(self.alerts):
                if get(a, "rule.name") == rule and get(a, "process.executable") == executable:
                    return a
            time.sleep(0.1)
        seen = sorted({get(a, "rule.name") for a in self.alerts})
        pytest.fail(f"no {rule!r} alert for {executable}; rules seen: {seen}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = -9
        for t in self._threads:
            t.join(10)
        return rc


@pytest.fixture
def pin() -> Iterator[str]:
    path = f"/sys/fs/bpf/sentinel_tamper_test_{uuid.uuid4().hex[:8]}"
    yield path
    Path(path).unlink(missing_ok=True)


def test_agent_under_the_unit_capabilities(tmp_path: Path, pin: str) -> None:
    if os.geteuid() != 0:
        pytest.fail("kernel tests need root: run the suite with scripts/run-tests.sh as root")
    caps = unit_capabilities()
    assert "CAP_SYS_ADMIN" not in caps
    notify = NotifyReceiver(str(tmp_path / "notify"))
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": str(WATCHDOG_USEC), "SENTINEL_TAMPER_PIN": pin}
    state = str(tmp_path / "state")
    try:
        first = CappedAgent(caps, env, state)
        ready = first.diagnostic("sentinel.ready")
        assert ready and ready["tracepoints"] > 100, ready
        privileges = first.diagnostic("sentinel.privileges")
        assert privileges is None, privileges

        # READY=1 first, then the watchdog pings about every second while the loop runs.
        time.sleep(3.5)
        lines = notify.lines()
        assert "READY=1" in lines, lines[:5]
        assert "WATCHDOG=1" not in lines[: lines.index("READY=1")], lines[:5]  # no ping before READY
        assert any(k.startswith("STATUS=running: ") for k in lines), lines[:5]
        assert lines.count("WATCHDOG=1") >= 3, lines

        # A real trigger of a shipped rule.
        cat = tmp_path / "cat"
        shutil.copy("/bin/cat", cat)
        subprocess.run([str(cat), "/etc/shadow"], check=True, stdout=subprocess.DEVNULL)
        alert = first.wait_alert("Shadow File Read By Unexpected Program", str(cat))
        assert get(alert, "file.path") == "/etc/shadow"
        assert Path(pin).exists(), "the tamper map was not pinned"

        # The README's first-run step: `sentinel test-alert` and the alert it promises.
        fired = subprocess.run(
            sentinel_cmd("test-alert", "--json"), capture_output=True, check=True, cwd=REPO
        )
        doc = orjson.loads(fired.stdout)
        first.wait_alert(doc["rule"], doc["executable"])

        # SIGKILL: the kernel records it in the pinned map; the next start (no CAP_SYS_ADMIN) reports it.
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        second = CappedAgent(caps, env, state)
        before = second.diagnostic("sentinel.tampered_before")
        assert before is not None, [d.get("event") for d in second.diagnostics]
        assert before["signal"] == signal.SIGKILL and before["target_tid"] == first.proc.pid, before
        assert second.stop() == 0
        assert "STOPPING=1" in notify.lines()
    finally:
        notify.close()
