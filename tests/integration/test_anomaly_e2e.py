"""End to end on the real kernel: record a benign capture, train a model on it, run the agent with that model;
more benign activity raises no anomaly alert, a web shell in the service (bash connecting out on an odd
port) raises explained sentinel-ml alerts that form one incident."""

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

from .conftest import HELPERS, REPO, get, sentinel_cmd
from .test_detection import Detector, in_tree

pytestmark = pytest.mark.kernel
RECORD_S = 40.0


class Lab:
    """A fake php-fpm serving a docroot on loopback, and the benign rounds that use it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for d in ("www", "conf", "log", "bin"):
            (root / d).mkdir(parents=True)
        (root / "www" / "index.html").write_text("<h1>hello</h1>\n")
        (root / "conf" / "site.ini").write_text("[site]\nname=lab\n")
        self.exe = root / "bin" / "php-fpm"
        shutil.copy(os.path.realpath(sys.executable), self.exe)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "PYTHONHOME": sys.base_prefix}  # a copied interpreter needs its stdlib
        self.service = subprocess.Popen(
            [str(self.exe), str(HELPERS / "fake_service.py"), str(self.port), str(root)],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.service.stdout is not None and self.service.stdout.readline().strip() == b"ready"
        self.benign_pids: list[int] = [self.service.pid]

    def benign_round(self) -> None:
        url = f"http://127.0.0.1:{self.port}/page"
        for cmd in (
            ["curl", "-fsS", "-o", "/dev/null", url],
            ["/bin/sh", "-c", f"ls {self.root}/www >/dev/null; date >/dev/null; cat /etc/hostname"],
            ["curl", "-fsS", "-o", "/dev/null", url],
        ):
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
            self.benign_pids.append(p.pid)
            assert p.wait(30) == 0

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.benign_round()
            time.sleep(0.1)

    def close(self) -> None:
        self.service.terminate()
        self.service.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("kernel tests need root: run the suite with scripts/run-tests.sh as root")
    lab = Lab(Path(f"/srv/sentinel-e2e-{uuid.uuid4().hex[:8]}"))
    yield lab
    lab.close()


def record_baseline(lab: Lab, capture: Path) -> None:
    rec = subprocess.Popen(sentinel_cmd("record", "--output", str(capture)), stderr=subprocess.PIPE, cwd=REPO)
    ready = threading.Event()
    lines: list[bytes] = []

    def read() -> None:
        assert rec.stderr is not None
        for line in rec.stderr:
            lines.append(line)
            if b'"sentinel.ready"' in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(90):
        rec.kill()
        pytest.fail(f"sentinel record did not become ready: {lines[-10:]}")
    lab.run_for(RECORD_S)
    rec.send_signal(signal.SIGINT)
    assert rec.wait(60) == 0, lines[-10:]


@pytest.fixture(scope="module")
def model(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("anomaly")
    capture = work / "baseline.cap"
    record_baseline(lab, capture)
    out = work / "model"
    train = subprocess.run(
        # A 40 s baseline is short: an hour's budget at 300/day lets the threshold sit below the few odd
        # events any busy host has in its held-out slice, instead of at the single oddest one.
        sentinel_cmd("train", str(capture), "--output", str(out), "--alerts-per-day", "300"),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert train.returncode == 0, train.stderr
    info = subprocess.run(sentinel_cmd("model", "info", "--model", str(out)), capture_output=True, cwd=REPO)
    assert info.returncode == 0, info.stderr
    return out


def ml_alerts(d: Detector) -> list[dict[str, Any]]:
    return [a for a in list(d.alerts) if get(a, "rule.ruleset") == "sentinel-ml"]


def test_model_alerts_on_a_web_shell_and_stays_quiet_on_benign(lab: Lab, model: Path, tmp_path: Path) -> None:
    d = Detector(("--model", str(model), "--state-dir", str(tmp_path / "state")))
    try:
        started = [x for x in d.diagnostics if x.get("event") == "sentinel.anomaly"]
        assert started and started[0]["phase"] == "detection", d.diagnostics[-5:]

        first_benign = len(lab.benign_pids)
        lab.run_for(8.0)
        time.sleep(1.0)
        benign_roots = [*lab.benign_pids[first_benign:], lab.service.pid]
        noisy = [a for a in ml_alerts(d) if any(in_tree(a, pid) for pid in benign_roots)]
        assert not noisy, "\n".join(str(get(a, "message")) for a in noisy)

        listener = socket.create_server(("127.0.0.1", 0))
        odd_port = listener.getsockname()[1]
        listener.settimeout(10)
        try:
            curl = subprocess.run(
                ["curl", "-fsS", f"http://127.0.0.1:{lab.port}/exec?port={odd_port}"], capture_output=True
            )
            assert curl.returncode == 0, curl.stderr
            conn, _ = listener.accept()
            assert conn.recv(100).startswith(b"owned")
            conn.close()
        finally:
            listener.close()

        deadline = time.monotonic() + 15
        attack: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            attack = [
                a for a in ml_alerts(d)
                if in_tree(a, lab.service.pid) and get(a, "process.pid") != lab.service.pid
            ]  # fmt: skip
            if attack:
                break
            time.sleep(0.1)
        seen = [(get(a, "process.executable"), get(a, "message")) for a in ml_alerts(d)]
        assert attack, f"no anomaly alert for the web shell; ml alerts seen: {seen[:10]}"
        a = attack[0]
        assert get(a, "event.kind") == "alert" and get(a, "rule.name") == "Anomalous behaviour for this host"
        ml = get(a, "sentinel.ml")
        assert ml["score"] > ml["threshold"] and ml["model"]["phase"] == "detection"
        assert 1 <= len(ml["explanation"]) <= 3
        assert all(e["text"] and "feature" in e for e in ml["explanation"])
        assert get(a, "process.parent.executable") == str(lab.exe) or any(
            x.get("executable") == str(lab.exe) for x in get(a, "sentinel.ancestors") or []
        )
        incidents = {get(x, "sentinel.ml.incident.id") for x in attack}
        assert len(incidents) == 1, incidents  # one attack, one incident
    finally:
        assert d.stop() == 0
    stopped = [x for x in d.diagnostics if x.get("event") == "sentinel.detection_stopped"]
    assert stopped and stopped[0]["anomaly"]["scored"] > 0
    assert not d.bad, d.bad[:3]
    assert orjson  # documents were parsed by the Detector
