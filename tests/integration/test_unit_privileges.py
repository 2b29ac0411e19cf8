"""The agent under exactly packaging/systemd/sentinel.service's capabilities (setpriv: bounding, inheritable
and ambient sets, securebits noroot-locked, no_new_privs) and its filesystem sandbox (read-only system,
private /tmp: packaging/systemd/sandbox-run.sh), with a notify socket as systemd gives it: it
attaches, says READY=1 then WATCHDOG=1 at half of WATCHDOG_USEC, alerts on a real trigger and on
`sentinel test-alert`, carries a tamper record (its own SIGKILL) over a restart without CAP_SYS_ADMIN, and
says STOPPING=1 at SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import REPO, get, sentinel_cmd
from .test_detection import Detector

pytestmark = pytest.mark.kernel

UNIT = REPO / "packaging" / "systemd" / "sentinel.service"
SANDBOX = REPO / "packaging" / "systemd" / "sandbox-run.sh"
WATCHDOG_USEC = 2_000_000  # pings every second


def unit_capabilities() -> list[str]:
    """The unit's CapabilityBoundingSet, e.g. ["CAP_BPF", ...]."""
    caps: list[str] = []
    for line in UNIT.read_text().splitlines():
        if line.strip().startswith("CapabilityBoundingSet="):
            caps += line.split("=", 1)[1].split()
    assert caps, f"{UNIT} has no CapabilityBoundingSet"
    return caps


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


class CappedAgent(Detector):
    """`sentinel run` in the unit's sandbox (packaging/systemd/sandbox-run.sh: its filesystem protections in a
    private mount namespace, then setpriv with the unit's capabilities); alerts from stdout, diagnostics from
    stderr."""

    def __init__(self, caps: list[str], env: dict[str, str], dirs: tuple[str, str]) -> None:
        env = {**os.environ, **env, "SENTINEL_PYTHON": sys.executable}
        if "PYTHONPATH" in env:  # the agent runs from / in the sandbox
            env["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in env["PYTHONPATH"].split(":"))
        self.caps = caps
        super().__init__(cmd=["bash", str(SANDBOX), *dirs, "--model", "off"], env=env, ready_timeout=120)

    def wait_alert_of(self, rule: str, executable: str, timeout: float = 20.0) -> dict[str, Any]:
        return self.wait_alert(rule, lambda a: get(a, "process.executable") == executable, timeout)


@pytest.fixture
def pin() -> Iterator[str]:
    path = f"/sys/fs/bpf/sentinel_tamper_test_{uuid.uuid4().hex[:8]}"
    yield path
    Path(path).unlink(missing_ok=True)


@pytest.fixture
def service_dirs() -> Iterator[tuple[str, str, str]]:
    """StateDirectory, LogsDirectory and a stand-in for /run/systemd/ (the notify socket), outside /tmp."""
    tag = uuid.uuid4().hex[:8]
    dirs = (f"/var/lib/sentinel-test-{tag}", f"/var/log/sentinel-test-{tag}", f"/run/sentinel-test-{tag}")
    for d in dirs:
        os.makedirs(d, mode=0o700)
    yield dirs
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def test_agent_under_the_unit_capabilities(
    tmp_path: Path, pin: str, service_dirs: tuple[str, str, str]
) -> None:
    if os.geteuid() != 0:
        pytest.fail("kernel tests need root: run the suite with scripts/run-tests.sh as root")
    caps = unit_capabilities()
    assert "CAP_SYS_ADMIN" not in caps
    state, logs, run = service_dirs
    notify = NotifyReceiver(f"{run}/notify")
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": str(WATCHDOG_USEC), "SENTINEL_TAMPER_PIN": pin}
    try:
        first = CappedAgent(caps, env, (state, logs))
        ready = first.diagnostic("sentinel.ready")
        assert ready and ready["tracepoints"] > 100, ready
        privileges = first.diagnostic("sentinel.privileges")
        assert privileges is None, privileges
        lines = [d.get("line", "") for d in first.diagnostics if d.get("event") == "non-json"]
        sandbox = [line for line in lines if "sandbox-run" in line]
        assert not sandbox, sandbox  # every mount was made read-only as the unit's ProtectSystem does

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
        alert = first.wait_alert_of("Shadow File Read By Unexpected Program", str(cat))
        assert get(alert, "file.path") == "/etc/shadow"
        assert Path(pin).exists(), "the tamper map was not pinned"

        # The README's first-run step: `sentinel test-alert` and the alert it promises.
        fired = subprocess.run(
            sentinel_cmd("test-alert", "--json"), capture_output=True, check=True, cwd=REPO
        )
        doc = orjson.loads(fired.stdout)
        first.wait_alert_of(doc["rule"], doc["executable"])

        # SIGKILL: the kernel records it in the pinned map; the next start (no CAP_SYS_ADMIN) reports it.
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        second = CappedAgent(caps, env, (state, logs))
        before = second.diagnostic("sentinel.tampered_before")
        assert before is not None, [d.get("event") for d in second.diagnostics]
        assert before["signal"] == signal.SIGKILL and before["target_tid"] == first.proc.pid, before
        assert second.stop() == 0
        assert "STOPPING=1" in notify.lines()
    finally:
        notify.close()
