"""The sensor's user-space half that needs no kernel: counter names against the probes, compile flags."""

from __future__ import annotations

import re
from pathlib import Path

from sentinel.sensor.loader import STAT_NAMES, Sensor, SensorConfig, probe_cflags

PROBES = Path(__file__).resolve().parents[2] / "bpf_probes"


def test_stat_names_follow_the_probes_counter_indices() -> None:
    """A counter read under the wrong name would report one thing as another."""
    text = (PROBES / "sentinel.c").read_text()
    defined = {int(i): name for name, i in re.findall(r"^#define STAT_(\w+) (\d+)$", text, re.MULTILINE)}
    size = [i for i, name in defined.items() if name == "MAX"]
    assert size == [len(STAT_NAMES)]
    assert defined[STAT_NAMES.index("loader_opens_filtered")] == "LOADER_OPENS_FILTERED"
    assert defined[STAT_NAMES.index("open_suppressed")] == "OPEN_SUPPRESSED"


def test_loader_opens_compile_flag() -> None:
    assert "-DLOADER_FILTER=1" in probe_cflags(PROBES, SensorConfig(ignore_pid=1), [])
    assert "-DLOADER_FILTER=0" in probe_cflags(PROBES, SensorConfig(ignore_pid=1, loader_opens="report"), [])


def test_loader_opens_mode_needs_kernel_offsets() -> None:
    sensor = Sensor(SensorConfig(ignore_pid=1))
    sensor.kernel_offsets_mode = "btf"
    assert sensor.loader_opens_mode == "filter"
    sensor.kernel_offsets_mode = "none (no BTF)"
    assert sensor.loader_opens_mode == "report (no kernel offsets)"
    sensor.config.loader_opens = "report"
    assert sensor.loader_opens_mode == "report"
