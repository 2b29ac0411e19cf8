"""End to end on the real kernel, with the shipped default (``--model auto``): the agent learns a lab service
for a short warm-up, trains its host model by itself and switches to detection; more benign activity raises
no anomaly alert, while a web shell in the service (a shell it never started, connecting out on a port it
never used) raises sentinel-ml alerts that say what was new, as one incident. A model trained from a
recorded capture (`sentinel record` + `sentinel train`) is checked to load and verify as well."""

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
RECORD_S = 20.0


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


def ml_alerts(d: Detector) -> list[dict[str, Any]]:
    return [a for a in list(d.alerts) if get(a, "rule.ruleset") == "sentinel-ml"]


# A program's first child alerts once its profiles hold enough evidence that it does not start children: about
# thirty 10-second slots of activity (features.NEWS_LEVEL, -log 0.018); sixty here. Ten minutes is also the
# learning period the lab measures.
WARM_UP_S = 600


def test_auto_learns_then_alerts_on_a_web_shell_saying_what_was_new(lab: Lab, tmp_path: Path) -> None:
    state = str(tmp_path / "s")
    d = Detector(("--model", "auto", "--learn-period", f"{WARM_UP_S}s", "--state-dir", state))
    try:
        started = [x for x in d.diagnostics if x.get("event") == "sentinel.anomaly"]
        assert started and started[0]["phase"] == "learning", d.diagnostics[-5:]
        deadline = time.monotonic() + WARM_UP_S + 120
        while not any(x.get("event") == "sentinel.model_trained" for x in d.diagnostics):
            assert time.monotonic() < deadline, [x.get("event") for x in d.diagnostics][-20:]
            lab.benign_round()
            time.sleep(0.1)
        trained = next(x for x in d.diagnostics if x.get("event") == "sentinel.model_trained")
        assert trained["retrained"] is False and trained["next_training_s"] >= 2 * WARM_UP_S
        assert not ml_alerts(d)  # nothing while learning: rules only
        status = subprocess.run(sentinel_cmd("model", "status", "--state-dir", state, "--json"),
                                capture_output=True, cwd=REPO)  # fmt: skip
        assert status.returncode == 0 and orjson.loads(status.stdout)["phase"] == "detection", status.stderr

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
        assert ml["model"]["name"] == "host"
        assert 1 <= len(ml["explanation"]) <= 3
        assert all(e["text"] and "feature" in e for e in ml["explanation"])
        news = [n for x in attack for n in get(x, "sentinel.ml.new") or []]
        assert news and all(n["text"] in get(x, "message") for x in attack for n in get(x, "sentinel.ml.new"))
        assert any(n["what"] in ("child", "exe", "port", "dest") for n in news), news
        assert any("of baseline" in n["text"] for n in news)
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


def test_a_model_trained_from_a_recorded_capture_loads_and_verifies(lab: Lab, tmp_path: Path) -> None:
    capture = tmp_path / "baseline.cap"
    record_baseline(lab, capture)
    out = tmp_path / "model"
    train = subprocess.run(sentinel_cmd("train", str(capture), "--output", str(out)), capture_output=True,
                           text=True, cwd=REPO)  # fmt: skip
    assert train.returncode == 0, train.stderr
    assert "fitting" in train.stderr and "model written" in train.stderr  # progress on stderr
    info = subprocess.run(sentinel_cmd("model", "info", "--model", str(out)), capture_output=True, cwd=REPO)
    assert info.returncode == 0, info.stderr
