"""Per-thread stashes on the real kernel: entries whose exit never comes cannot blind the sensor.

bcc attaches each probe as it loads it, so for a moment (seconds on a loaded host) an exec's entry probe runs
without its exit probe: its stash entry is never taken. On a busy host's start 512 of them filled the exec
stash (a plain hash map) and the agent never saw another exec. The stashes are LRU maps now, and a thread's
entries go when it exits.
"""

from __future__ import annotations

import ctypes
import subprocess
import time
import uuid

import pytest

from sentinel.events import EventType
from sentinel.sensor.loader import Sensor, SensorConfig

pytestmark = pytest.mark.kernel


def _wait_exec(sensor: Sensor, marker: str, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for ev in sensor.poll(100):
            if ev.type is EventType.EXEC and marker in ev.argv:
                return True
    return False


def test_a_stash_full_of_dead_threads_entries_still_takes_new_execs() -> None:
    sensor = Sensor(SensorConfig(scheduling="normal"))
    sensor.start()
    try:
        stash = sensor.bpf["exec_stash"]
        for i in range(600):  # more than its capacity, for threads that do not exist (pids stop at 2^22)
            stash[ctypes.c_uint32(0x7FFF0000 + i)] = stash.Leaf()
        assert len(stash.items()) > 256  # full, as an LRU map is (it evicts a little before its capacity)
        marker = "m" + uuid.uuid4().hex[:12]
        subprocess.run(["/bin/true", marker], check=True)
        assert _wait_exec(sensor, marker), "no exec event: the full stash refused the new exec"
    finally:
        sensor.close()


def test_an_exited_threads_stash_entries_are_dropped() -> None:
    sensor = Sensor(SensorConfig(scheduling="normal"))
    sensor.start()
    try:
        proc = subprocess.Popen(["/bin/sleep", "30"])
        try:
            stash = sensor.bpf["exec_stash"]
            stash[ctypes.c_uint32(proc.pid)] = stash.Leaf()  # as if it had entered an exec never finished
            clones = sensor.bpf["clone_stash"]
            clones[ctypes.c_uint32(proc.pid)] = ctypes.c_uint64(0x10000)  # CLONE_THREAD, stale
        finally:
            proc.kill()
            proc.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (
            ctypes.c_uint32(proc.pid) in stash or ctypes.c_uint32(proc.pid) in clones
        ):
            time.sleep(0.05)
        assert ctypes.c_uint32(proc.pid) not in stash
        assert ctypes.c_uint32(proc.pid) not in clones
    finally:
        sensor.close()
