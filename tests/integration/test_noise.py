"""Quiet by default on the real kernel (issue 18): what build jobs do all day — a fresh shell copies a
program into a fresh /tmp directory and runs it, again and again — is one alert at once, then summaries."""

from __future__ import annotations

import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from .conftest import get
from .test_detection import Detector

pytestmark = pytest.mark.kernel

RULE = "Program Run From Temporary Directory"
RUNS = 30


def mine(alert: dict[str, Any], marker: str) -> bool:
    """A line about this test's runs: its process, or (a summary) its sample of executables."""
    if get(alert, "rule.name") != RULE:
        return False
    exes = [get(alert, "process.executable") or ""]
    exes += (get(alert, "sentinel.aggregation.distinct") or {}).get("process.executable", [])
    return any(marker in e for e in exes)


def test_a_build_loop_in_fresh_tmp_dirs_is_one_alert_then_a_summary() -> None:
    marker = f"noise-{uuid.uuid4().hex[:8]}"
    detector = Detector()
    try:
        started = time.monotonic()
        for i in range(RUNS):
            run_dir = Path(tempfile.mkdtemp(prefix=f"{marker}-{i}-", dir="/tmp"))
            script = f'cp /bin/true "{run_dir}/prog" && "{run_dir}/prog" --run {i}; rm -rf "{run_dir}"'
            subprocess.run(["bash", "-c", script], check=True)  # a fresh shell every time
            if i == 0:
                first = detector.wait_alert(RULE, lambda a: marker in (get(a, "process.executable") or ""))
                latency = time.monotonic() - started
        time.sleep(2)  # the last runs' events through the buffers
    finally:
        assert detector.stop() == 0  # pending summaries are written at shutdown
    lines = [a for a in detector.alerts if mine(a, marker)]
    summaries = [a for a in lines if get(a, "sentinel.aggregation.count")]
    assert get(first, "sentinel.aggregation") is None and latency < 15
    assert len(lines) <= 5, [(get(a, "process.executable"), get(a, "sentinel.aggregation")) for a in lines]
    assert summaries, "the repeats were not summarised"
    agg = get(summaries[0], "sentinel.aggregation")
    assert agg["key"]["program"] == "/tmp/"
    # Nothing silently dropped: every run is the first alert or counted in a summary (other root programs
    # run from /tmp by a shell at the same time may fold in too, hence at least).
    assert len(lines) - len(summaries) + sum(get(a, "sentinel.aggregation.count") for a in summaries) >= RUNS
