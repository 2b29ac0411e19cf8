"""benchmarks/bench_cost.py on the real kernel: a quick CPU and latency pass prints its figures and exits 0.

The latency part also checks what the benchmark relies on: with aggregation off, each trigger (a temp-dir
program from a fresh shell) is an alert of its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .conftest import REPO

pytestmark = pytest.mark.kernel

BENCH = REPO / "benchmarks" / "bench_cost.py"


def test_bench_cost_quick_prints_its_figures() -> None:
    if os.geteuid() != 0:
        pytest.fail("kernel tests need root: run the suite with scripts/run-tests.sh as root")
    run = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--only", "cpu,latency"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    cpu = [line for line in lines if line.startswith("agent CPU, 1600 execs/s, defaults")]
    assert cpu and re.search(r"\d+\.\d% at [\d,]+/s, \d+ lost (met|NOT met)$", cpu[0]), run.stdout
    for sink in ("http", "file"):
        found = [line for line in lines if line.startswith(f"event-to-alert at the {sink} sink")]
        assert found, run.stdout
        m = re.search(r"p50 [\d.]+ p99 [\d.]+ max \d+ ms, (\d+)/(\d+) (met|NOT met)$", found[0])
        assert m, found[0]
        assert m[1] == m[2], f"not every trigger reached the {sink} sink: {found[0]}"
    assert "progress" not in run.stdout and "[bench_cost" in run.stderr  # progress goes to stderr only
