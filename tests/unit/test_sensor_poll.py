"""How long the sensor's poll waits: the ordering hold-back's short wait on a quiet host, a longer one under
load (each poll's fixed work then costs more than the few milliseconds of latency saved)."""

from __future__ import annotations

from typing import Any

from sentinel.sensor.decoder import HEADER
from sentinel.sensor.loader import Sensor, SensorConfig, boottime_ns
from tests.unit.test_decoder import NO_CREDS


def exit_sample(ts_ns: int) -> bytes:
    return HEADER.pack(ts_ns, 42, 0, 1000, 1000, 0, 0, 5, 0, 0, b"proc", *NO_CREDS)


class Reader:
    """The direct perf reader's surface: each full read hands over the next batch."""

    def __init__(self, batches: list[list[bytes]]) -> None:
        self.batches = batches
        self.timeouts: list[int] = []
        self.malformed = 0

    def poll(self, timeout_ms: int) -> None:
        self.timeouts.append(timeout_ms)

    def read(self, out: list[bytes], names: Any = None) -> None:
        if names is None and self.batches:
            out.extend(self.batches.pop(0))

    def take_lost(self) -> dict[str, int]:
        return {}


def test_held_events_wait_briefly_on_a_quiet_host_and_longer_under_load() -> None:
    cfg = SensorConfig(ignore_pid=0)
    sensor = Sensor(cfg)
    future = boottime_ns() + 60 * 1_000_000_000  # newer than any cut-off: held back
    busy = [exit_sample(future + i) for i in range(cfg.busy_batch)]
    reader = Reader([busy, [exit_sample(future + 1_000)], []])
    sensor.reader = reader  # type: ignore[assignment]
    assert sensor.poll() == []  # everything held
    sensor.poll()
    sensor.poll()
    assert reader.timeouts == [cfg.poll_timeout_ms, int(cfg.busy_wait_ms), int(cfg.holdback_ms) + 1]
    assert len(sensor.drain()) == cfg.busy_batch + 1  # nothing held is lost
