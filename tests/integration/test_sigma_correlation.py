"""A Sigma correlation on the real kernel: ``sentinel run`` with a process_creation rule for a program of
this test's own and an event_count correlation over it (≥ 5 execs within 30 s, grouped by user) raises one
correlation alert for a burst of 7 real execs, naming the first five processes, and the base rule raises none
(``generate`` is false)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import get
from .test_detection import Detector

pytestmark = pytest.mark.kernel

RULES = """\
title: Corr Probe Exec
id: 6f0c3d2e-52a1-4b7e-9d11-0c6a3e8b7f21
name: corr_probe_exec
status: test
author: sentinel tests
level: low
logsource:
  product: linux
  category: process_creation
detection:
  selection:
    Image|endswith: /{prog}
  condition: selection
---
title: Corr Probe Burst
id: 2b9e7a44-1c3d-4e5f-8a6b-7c8d9e0f1a2b
author: sentinel tests
level: high
tags: [attack.execution]
correlation:
  type: event_count
  rules: [corr_probe_exec]
  group-by: [User]
  timespan: 30s
  condition:
    gte: 5
"""


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[Detector, Path]]:
    work = Path(tempfile.mkdtemp(prefix="sentinel-corr-"))
    prog = f"corrprobe{uuid.uuid4().hex[:8]}"
    exe = work / prog
    shutil.copy2("/bin/true", exe)
    rules = work / "corr.yml"
    rules.write_text(RULES.format(prog=prog))
    det = Detector(("--rules", str(rules)))
    try:
        yield det, exe
    finally:
        det.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_a_burst_of_execs_raises_one_correlation_alert(setup: tuple[Detector, Path]) -> None:
    det, exe = setup
    pids = []
    for _ in range(7):
        proc = subprocess.Popen([str(exe)])
        pids.append(proc.pid)
        proc.wait()
    alert = det.wait_alert("Corr Probe Burst", lambda a: True, timeout=20)
    time.sleep(2.0)  # the two execs after the fifth must not raise a second alert
    corr = get(alert, "sentinel.correlation")
    assert corr["type"] == "event_count" and corr["count"] == 5 and corr["rules"] == ["Corr Probe Exec"]
    assert corr["group_by"] == {"user.name": "root"}  # kernel tests run as root
    assert corr["pids"] == pids[:5]
    assert get(alert, "process.pid") == pids[4] and get(alert, "rule.ruleset") == "sigma"
    assert "5 matches of Corr Probe Exec (>= 5)" in get(alert, "message")
    assert corr["last_ns"] - corr["first_ns"] <= 30 * 1_000_000_000
    names = [get(a, "rule.name") for a in det.alerts]
    assert names.count("Corr Probe Burst") == 1 and "Corr Probe Exec" not in names
