"""Every event names its container, on the real kernel, live and in the replay of a recording.

Cgroups are made by hand with the names runtimes give them (no runtime is installed here): a shell is started
on the host and moved into one, then execs an "entrypoint" (as runc moves its child before the entrypoint
execs) that forks ``cat`` of a marker file and execs ``cat`` of another. The session's `sentinel events`
agent must put the container's whole id and runtime in ``container`` and its short id in
``sentinel.container`` on the exec and open documents of both; a host process's documents have no
``container`` block. The layouts: docker and cri-containerd (systemd driver) on the v2 hierarchy, and, on a
host with v1 hierarchies (this one is hybrid), docker's cgroupfs driver in a v1 hierarchy only, where the v2
cgroup (so the BPF id) stays the host's and only ``/proc/PID/cgroup`` tells (read at the entrypoint's exec;
the short-lived ``cat``s, often gone when their exec is handled, keep what they were forked with).

Needs root and a cgroup2 mount. Never skips: without them it fails and says why.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sentinel.containers import ContainerRef, parse_proc_cgroup, read_proc_cgroup

from .conftest import Agent, get
from .test_capture_live import replay, start_recorder
from .test_container_cgroups import move, remove_tree, require_cgroup2

pytestmark = pytest.mark.kernel

A = "5c1e8f0a9b2d4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6"
B = "e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70819"
C = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
POD = (
    "kubepods.slice/kubepods-besteffort.slice/"
    "kubepods-besteffort-pod7d3c1e2a_4b5c_4d6e_8f90_a1b2c3d4e5f6.slice"
)
V1_PREFERRED = ("name=systemd", "pids", "memory", "devices", "freezer", "blkio")  # no cpuset: it needs setup


@dataclass
class Case:
    name: str
    expected: ContainerRef | None
    markers: tuple[Path, Path]  # forked `cat` reads the first, the exec'd `cat` the second
    pid: int = 0


def v1_hierarchy() -> tuple[str, str] | None:
    """(mount point, this process's path) of a v1 hierarchy to place a cgroupfs-driver container in, below
    our own cgroup there (so no limit set above us is left); None on a host without v1 hierarchies."""
    own = {
        c: line.path
        for line in parse_proc_cgroup(read_proc_cgroup(os.getpid()) or "")
        for c in line.controllers
    }
    mounts: dict[str, str] = {}
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _source, opts = [*right.split(), "", "", ""][:3]
            if fstype == "cgroup":
                for opt in opts.split(","):
                    mounts.setdefault(opt, left.split()[4])
    for controller in V1_PREFERRED:
        if controller in mounts and controller in own:
            return mounts[controller], own[controller]
    return None


def shell(markers: tuple[Path, Path], runtime: Path) -> subprocess.Popen[bytes]:
    """A shell on the host that waits for a line (while it is moved), then execs the "entrypoint": a shell
    that lives a moment, forks `cat` of one marker and execs `cat` of the other. As runc does it: its child
    is moved into the container's cgroups, then execs the entrypoint. The waiting shell runs from a copy
    named ``runc`` (``runtime``): on a host with v1 hierarchies only a runtime's exec asks /proc again."""
    entrypoint = f"sleep 0.3; /bin/cat {markers[0]} >/dev/null; exec /bin/cat {markers[1]}"
    script = f"read go; exec /bin/sh -c '{entrypoint}'"
    return subprocess.Popen([str(runtime), "-c", script], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def placed(agent: Agent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Case], Path]]:
    """Each case run once, while the session's agent and a recorder watch; yields the cases and the
    capture."""
    mount = require_cgroup2()
    tmp = tmp_path_factory.mktemp("containers")
    token = f"sentinel-test-{os.getpid()}-{secrets.token_hex(4)}"
    v2_top = os.fsencode(mount.mount_point) + b"/" + token.encode()
    v1 = v1_hierarchy()
    v1_top = os.fsencode(f"{v1[0]}{v1[1].rstrip('/')}/{token}") if v1 is not None else None
    targets: dict[str, tuple[bytes | None, ContainerRef | None]] = {
        "docker": (v2_top + f"/system.slice/docker-{A}.scope".encode(), ContainerRef("docker", A, A[:12])),
        "cri": (v2_top + f"/{POD}/cri-containerd-{B}.scope".encode(), ContainerRef("containerd", B, B[:12])),
        "host": (None, None),
    }
    if v1_top is not None:
        targets["v1-cgroupfs"] = (v1_top + f"/docker/{C}".encode(), ContainerRef("docker", C, C[:12]))
    cases = []
    for name, (_, expected) in targets.items():
        markers = (tmp / f"{name}-forked-{secrets.token_hex(4)}", tmp / f"{name}-exec-{secrets.token_hex(4)}")
        for m in markers:
            m.write_text("x\n")
        cases.append(Case(name, expected, markers))
    runtime = tmp / "runc"
    shutil.copy2("/bin/sh", runtime)
    capture = tmp / "containers.capture"
    recorder, diags = start_recorder(capture)
    procs = []
    try:
        for case in cases:
            directory = targets[case.name][0]
            proc = shell(case.markers, runtime)
            procs.append(proc)
            case.pid = proc.pid
            if directory is not None:
                os.makedirs(directory)
                move(proc.pid, directory)
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.close()
            assert proc.wait(30) == 0, case.name
        for case in cases:
            agent.wait_for(
                lambda d, m=str(case.markers[1]): get(d, "file.path") == m, what=f"{case.name} open"
            )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        recorder.terminate()
        assert recorder.wait(30) == 0
        recorder.reader.join(10)  # type: ignore[attr-defined]
        remove_tree(v2_top)
        if v1_top is not None:
            remove_tree(v1_top)
    assert any(d.get("event") == "sentinel.stopped" for d in diags)
    yield cases, capture


def documents(docs: list[dict[str, Any]], case: Case) -> list[dict[str, Any]]:
    """The exec and open documents of both `cat`s of a case (not the test's own writes of the markers)."""
    wanted = {str(m) for m in case.markers}
    return [
        d
        for d in docs
        if (get(d, "process.args") or [None])[-1] in wanted
        and get(d, "event.action") in ("exec", "open")
        and (get(d, "event.action") == "exec" or get(d, "file.path") in wanted)
    ]


def check(docs: list[dict[str, Any]], case: Case) -> None:
    found = documents(docs, case)
    kinds = sorted(
        (get(d, "event.action"), (get(d, "process.args") or [""])[-1], get(d, "file.path")) for d in found
    )
    assert len(kinds) >= 4, f"{case.name}: exec and open of both markers expected, got {kinds}"
    assert {get(d, "process.pid") for d in found if get(d, "event.action") == "exec"} >= {case.pid}
    for d in found:
        what = f"{case.name}: {get(d, 'event.action')} by pid {get(d, 'process.pid')}"
        ref = case.expected
        if ref is None:
            assert "container" not in d and "container" not in d["sentinel"], what
        else:
            assert d["container"] == {"id": ref.full_id, "runtime": ref.runtime}, what
            extra = d["sentinel"]["container"]
            assert (extra["short_id"], extra["rootless"]) == (ref.id, False), what
            # no runtime knows these hand-made containers: asked (pending), then no answer (unavailable)
            assert extra.get("metadata") in ("pending", "unavailable"), what


def test_the_agent_says_how_it_knows_containers(agent: Agent) -> None:
    ready = next(d for d in agent.diagnostics if d.get("event") == "sentinel.ready")
    info = ready["containers"]
    assert info["cgroup2"] == require_cgroup2().mount_point
    assert info["id_lookup"] == "handle"  # root has CAP_DAC_READ_SEARCH: ids resolve exactly
    assert info["v1_hierarchies"] is (v1_hierarchy() is not None)


@pytest.mark.parametrize("name", ["docker", "cri", "host", "v1-cgroupfs"])
def test_each_event_names_its_container_live(
    agent: Agent, placed: tuple[list[Case], Path], name: str
) -> None:
    cases, _ = placed
    by_name = {c.name: c for c in cases}
    if name == "v1-cgroupfs" and name not in by_name:
        assert v1_hierarchy() is None  # a v2-only host: no v1 hierarchy to place a cgroupfs container in
        return
    check(agent.snapshot(), by_name[name])


def test_the_replay_names_the_same_containers(placed: tuple[list[Case], Path]) -> None:
    cases, capture = placed
    rc, docs, err = replay(capture)
    assert rc == 0, err
    for case in cases:
        check(docs, case)
