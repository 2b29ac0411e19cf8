"""Hostile content from real processes against `sentinel run` with its defaults: the agent stays up, its
periodic work survives, its state reloads and every line it writes is JSON.

The reported crash: a file name that is not UTF-8 became a key of the anomaly baseline, and the periodic save
raised five minutes later and killed the agent. Here the save runs every second (the only setting changed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sentinel.anomaly.state import HostState

from .test_detection import Detector

pytestmark = pytest.mark.kernel


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings_in(k)
            yield from strings_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from strings_in(v)


def hostile_workload(base: bytes, helper_bin: Callable[[str], str]) -> None:
    """What any local user can do: odd names, odd arguments, odd lineages."""
    odd_dir = base + b"/x-\xff"
    os.mkdir(odd_dir)
    target = odd_dir + b"/f\xfe"
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600))
    for _ in range(3):
        os.close(os.open(target, os.O_RDONLY))
    newline_name = base + b"/evil\nname\x1b[31m"
    os.close(os.open(newline_name, os.O_WRONLY | os.O_CREAT, 0o600))
    exe = odd_dir + b"/t\xfe\x1b[31m"
    shutil.copy("/bin/true", exe)
    os.chmod(exe, 0o755)
    subprocess.run([exe, b"arg\xff", b"new\nline", b"\x1b]0;title\x07", b"A" * 100_000], check=True)
    subprocess.run([helper_bin("exec_argv"), "zero", "/bin/true"], check=False)
    subprocess.run([helper_bin("exec_argv"), "big", "300", "1000", "/bin/true"], check=True)
    deep = base + b"/deep.sh"  # 40 nested shells: a lineage deeper than most
    with open(deep, "w") as f:
        f.write('[ "$1" -gt 0 ] && sh "$0" $(( $1 - 1 ))\nexit 0\n')
    subprocess.run(["sh", deep, "40"], check=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, contextlib.suppress(OSError):
        sock.connect(b"\0sentinel-\xff\nsock")  # nobody listens: a refused connect, reported


def test_hostile_processes_cannot_break_the_agent_or_its_state(
    tmp_path: Path, helper_bin: Callable[[str], str]
) -> None:
    config = tmp_path / "sentinel.yaml"
    config.write_text("learning: {save_interval: 1s}\n")
    state_dir = tmp_path / "state"
    args = ("--config", str(config), "--state-dir", str(state_dir))  # --model auto: learning, as shipped
    agent = Detector(args)
    try:
        hostile_workload(os.fsencode(tmp_path), helper_bin)
        time.sleep(3.5)  # several periodic saves with the hostile keys in the baseline
        assert agent.proc.poll() is None, f"the agent died: {agent.diagnostics[-5:]}"
    finally:
        rc = agent.stop()
    assert rc == 0, agent.diagnostics[-5:]
    assert not agent.bad, f"lines that are not JSON: {agent.bad[:3]}"
    assert not [d for d in agent.diagnostics if d.get("event") == "non-json"]
    failed = [d for d in agent.diagnostics if d.get("event") == "sentinel.task_failed"]
    assert not failed, failed[:3]
    stopped = [d for d in agent.diagnostics if d.get("event") == "sentinel.stopped"][-1]
    assert not any((stopped.get("task_failures") or {}).values()), stopped.get("task_failures")

    profiles, problem = HostState(state_dir).load_profiles()
    assert problem is None and profiles is not None
    keys = list(strings_in(profiles.to_dict()))
    assert any("x-\udcff" in k for k in keys), "the hostile directory is not in the reloaded baseline"

    again = Detector(args)  # the next start reads the same state
    try:
        time.sleep(1.5)
    finally:
        assert again.stop() == 0
    corrupt = [d for d in again.diagnostics if d.get("event") == "sentinel.state_corrupt"]
    assert not corrupt, corrupt
