"""Execs of processes the agent already knows are named from the kernel's event (verified by the file's
inode and device) without reading /proc: the name must be the one /proc gives, live and in replay."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from sentinel.capture import CaptureReader, IdentityFact
from sentinel.events import Event, EventType
from sentinel.process.facts import ProcFacts

from .conftest import Agent, get
from .test_capture_live import replay, start_recorder

pytestmark = pytest.mark.kernel


def proc_exe_after(pid: int, name: str, timeout: float = 10.0) -> str:
    """/proc/PID/exe once the process runs a file called ``name`` (after any exec in between)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = ""
        if os.path.basename(exe) == name:
            return exe
        if time.monotonic() > deadline:
            pytest.fail(f"pid {pid} never ran {name} (exe {exe!r})")
        time.sleep(0.01)


def test_exec_paths_from_the_event_are_what_proc_says(agent: Agent, helper_bin: Any, tmp_path: Path) -> None:
    """Through a symlink, relative after a chdir, by execveat and through the /bin -> usr/bin link: the live
    documents and the replay of a recording name /proc/PID/exe, and the recording shows the exec checked by
    identity with no /proc read for the process."""
    tool = helper_bin("exec_argv")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    name = "sl-" + uuid.uuid4().hex[:8]
    real = bindir / name
    shutil.copy("/bin/sleep", real)
    link = tmp_path / "link"
    os.symlink(real, link)
    capture = tmp_path / "exec.capture"
    recorder, diags = start_recorder(capture)
    # (argv, cwd, the exec's filename as the probe reports it, the name /proc/PID/exe ends with)
    cases: list[tuple[list[str], Path | None, str, str]] = [
        ([str(link), "30"], None, str(link), name),
        ([f"./bin/{name}", "30"], tmp_path, f"./bin/{name}", name),  # the child chdirs, then execs
        ([tool, "at", str(bindir), name, "30"], None, name, name),  # execveat(dirfd, name)
        (["/bin/sleep", "30"], None, "/bin/sleep", "sleep"),
    ]
    procs = [subprocess.Popen(argv, cwd=cwd) for argv, cwd, _, _ in cases]
    try:
        expected = {p.pid: proc_exe_after(p.pid, case[3]) for p, case in zip(procs, cases, strict=True)}
        assert expected[procs[0].pid] == str(real)
        assert expected[procs[3].pid] == os.path.realpath("/bin/sleep")
        for p, (_, _, filename, _) in zip(procs, cases, strict=True):
            doc = agent.wait_for(
                lambda d, pid=p.pid, fn=filename: (
                    get(d, "event.action") == "exec"
                    and get(d, "process.pid") == pid
                    and get(d, "sentinel.event.filename") == fn
                ),
                what=f"exec of {filename}",
            )[0]
            assert get(doc, "process.executable") == expected[p.pid], filename
        time.sleep(0.5)  # the recorder polls on its own: let it take the same execs
    finally:
        for p in procs:
            p.kill()
            p.wait()
        recorder.terminate()
        assert recorder.wait(30) == 0
        recorder.reader.join(10)  # type: ignore[attr-defined]
    assert any(d.get("event") == "sentinel.stopped" for d in diags)

    # In the recording: before each exec event, an identity record with the probe's inode and device,
    # and no /proc facts for the process.
    wanted = {(p.pid, case[2]) for p, case in zip(procs, cases, strict=True)}
    since_last_event: list[Any] = []
    checked = set()
    with CaptureReader(capture) as reader:
        for item in reader:
            if not isinstance(item, Event):
                since_last_event.append(item)
                continue
            key = (item.pid, item.filename)
            if item.type == EventType.EXEC and item.ret == 0 and key in wanted:
                assert item.exe_nlink > 0, "no executable identity from the probe (BTF offsets?)"
                facts = [f for f in since_last_event if isinstance(f, ProcFacts) and f.pid == item.pid]
                assert facts == [], f"{item.filename}: /proc was read"
                ids = [f for f in since_last_event if isinstance(f, IdentityFact)]
                assert [f.identity for f in ids] == [(item.exe_ino, item.exe_dev)], item.filename
                assert ids[0].path == expected[item.pid]
                checked.add(key)
            since_last_event = []
    assert checked == wanted
    stopped = next(d for d in diags if d.get("event") == "sentinel.stopped")
    assert stopped["process_table"]["exec_verified"] >= len(cases)

    rc, docs, err = replay(capture)
    assert rc == 0, err
    for p, (_, _, filename, _) in zip(procs, cases, strict=True):
        got = [
            get(d, "process.executable")
            for d in docs
            if get(d, "event.action") == "exec"
            and get(d, "process.pid") == p.pid
            and get(d, "sentinel.event.filename") == filename
        ]
        assert got == [expected[p.pid]], filename
