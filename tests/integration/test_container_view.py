"""The in-container view on the real kernel, with real podman containers: each process's pid in its own pid
namespace (``process.vpid``), its pid and mount namespaces, and paths as the container sees them.

A marker binary (a copy of ``sleep`` with a name of its own) is bind-mounted into a container and runs as its
first process; ``podman exec`` runs it again. The session's `sentinel events` agent must give the first
process vpid 1 and a later one its own small vpid (both with host pids in ``process.pid``), the container's
pid namespace (not the host's) and mount namespace, as ``/proc`` shows them; a host process has vpid = pid.
A ``--pid host`` container's processes see host pids. A recorder captures the same and its replay must
agree. Paths are the container's: a host directory bind-mounted where the host has a symlink to it is named
by the container's path, never by the host's resolution of it (same file, a path the container does not
have). Falco's ``container_started`` macro
(``spawned_process and proc.vpid=1 and container``) fires through Falco's own incubating rule "Launch
Excessively Capable Container" for a container with CAP_SYS_ADMIN, for its first process only.

Needs root, podman and the base image (scripts/setup.sh, scripts/container-image.sh). Never skips.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import Agent, get
from .podman import Bind, Container, host_pid_of_exec, running_container
from .test_capture_live import replay, start_recorder

pytestmark = pytest.mark.kernel

MARK = "snv" + secrets.token_hex(5)  # the marker's comm: 13 characters, below the kernel's 15
LINKED = "snl" + secrets.token_hex(5)  # the marker run through the symlinked bind mount
BIND_TARGET = "/mnt/sentinel-view"  # where the marker's directory appears in the container (not on the host)
FALCO_INCUBATING = Path(__file__).resolve().parents[3] / "shared" / "falco" / "falco-incubating_rules.yaml"
EXCESSIVE = "Launch Excessively Capable Container"


def ns_inode(pid: int | str, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def nstgid(pid: int) -> list[int]:
    """``NStgid`` of /proc/PID/status: the pid from the host's namespace down to the process's own."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("NStgid:"):
                return [int(n) for n in line.split()[1:]]
    pytest.fail(f"no NStgid in /proc/{pid}/status")


@dataclass(frozen=True)
class Files:
    bin: Path  # holds MARK; bind-mounted read-only at BIND_TARGET
    real: Path  # holds LINKED; bind-mounted at the path of `link` in the container
    link: Path  # on the host, a symlink to `real`


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    top = tmp_path_factory.mktemp("view")
    sleep = shutil.which("sleep")
    assert sleep is not None
    found = Files(top / "bin", top / "real", top / "link")
    found.bin.mkdir()
    found.real.mkdir()
    shutil.copy(sleep, found.bin / MARK)
    shutil.copy(sleep, found.real / LINKED)
    found.link.symlink_to(found.real)
    return found


@dataclass
class Seen:
    """What happened while the agent and a recorder watched, and the capture."""

    container: Container
    first: dict[str, Any]  # the exec document of the container's first process
    execed_pid: int  # a `podman exec` of the marker: its host pid...
    execed_nstgid: list[int]  # ...and its NStgid, read while it ran
    execed: dict[str, Any]
    linked: dict[str, Any]  # the symlinked bind mount's marker, alive when the agent handled its exec
    linked_gone: dict[str, Any]  # the same, exited at once
    opened: dict[str, Any]  # an open in the container, relative to a directory only the container has
    host: dict[str, Any]  # the marker run on the host
    host_pid_container: dict[str, Any]  # the first process of a `--pid host` container
    capture: Path
    first_pid_ns: int
    first_mnt_ns: int


def exec_doc(agent: Agent, pid: int, name: str) -> dict[str, Any]:
    docs = agent.wait_for(
        lambda d: get(d, "event.action") == "exec" and get(d, "process.pid") == pid
        and get(d, "process.name") == name,
        timeout=20.0,
        what=f"the exec of {name} by pid {pid}",
    )  # fmt: skip
    return docs[-1]


def linked_exec_doc(agent: Agent, container: Container, argv: list[str]) -> dict[str, Any]:
    """Run ``argv`` (the linked marker) to completion in the container; its exec document."""
    container.exec(*argv)
    return agent.wait_for(
        lambda d: get(d, "event.action") == "exec" and get(d, "process.name") == LINKED
        and get(d, "process.args") == argv and get(d, "container.id") == container.id,
        timeout=20.0,
        what=f"the exec of {argv}",
    )[-1]  # fmt: skip


@pytest.fixture(scope="module")
def seen(
    agent: Agent, podman_image: str, files: Files, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Seen]:
    capture = tmp_path_factory.mktemp("view-capture") / "view.capture"
    recorder, diags = start_recorder(capture)
    try:
        binds = [Bind(str(files.bin), BIND_TARGET), Bind(str(files.real), str(files.link))]
        command = (f"{BIND_TARGET}/{MARK}", "infinity")
        with running_container(podman_image, binds=binds, command=command) as container:
            first = exec_doc(agent, container.pid, MARK)
            first_pid_ns, first_mnt_ns = ns_inode(container.pid, "pid"), ns_inode(container.pid, "mnt")
            execed_pid = host_pid_of_exec(container, [f"{BIND_TARGET}/{MARK}", "30"])
            execed_nstgid = nstgid(execed_pid)
            execed = exec_doc(agent, execed_pid, MARK)
            # Alive while the agent handles the exec (it asks /proc), then exited before (the event alone).
            linked_pid = host_pid_of_exec(container, [f"{files.link}/{LINKED}", "30"])
            linked = exec_doc(agent, linked_pid, LINKED)
            linked_gone = linked_exec_doc(agent, container, [f"{files.link}/{LINKED}", "0"])
            token = secrets.token_hex(6)
            container.exec("/bin/sh", "-c", f"mkdir -p /ctonly/d && cd /ctonly/d && exec cat ./f-{token}",
                           check=False)  # fmt: skip
            raw = f"./f-{token}"
            opened = agent.wait_for(
                lambda d: get(d, "event.action") == "open" and get(d, "sentinel.event.raw_path") == raw,
                what="the container's open",
            )[-1]
        with running_container(podman_image, binds=binds[:1], command=command, pid="host") as shared:
            host_pid_container = exec_doc(agent, shared.pid, MARK)
            assert get(host_pid_container, "container.id") == shared.id
        host_run = subprocess.run([str(files.bin / MARK), "0"], check=True)
        assert host_run.returncode == 0
        host = agent.wait_for(
            lambda d: get(d, "event.action") == "exec" and get(d, "process.name") == MARK
            and get(d, "container") is None,
            what="the marker's exec on the host",
        )[-1]  # fmt: skip
    finally:
        recorder.terminate()
        assert recorder.wait(30) == 0
        recorder.reader.join(10)  # type: ignore[attr-defined]
    assert any(d.get("event") == "sentinel.stopped" for d in diags)
    yield Seen(container, first, execed_pid, execed_nstgid, execed, linked, linked_gone, opened, host,
               host_pid_container, capture, first_pid_ns, first_mnt_ns)  # fmt: skip


def test_the_agent_says_it_reads_the_view(agent: Agent) -> None:
    ready = next(d for d in agent.diagnostics if d.get("event") == "sentinel.ready")
    assert ready["pid_view"] is True  # this kernel's BTF has every offset: the probes read the view


def test_the_containers_first_process_has_vpid_1(seen: Seen) -> None:
    doc = seen.first
    assert get(doc, "process.pid") == seen.container.pid  # the host's pid
    assert get(doc, "process.vpid") == 1  # as the container sees itself
    assert get(doc, "container.id") == seen.container.id
    assert get(doc, "sentinel.process.pid_ns") == seen.first_pid_ns != ns_inode("self", "pid")
    assert get(doc, "sentinel.process.mnt_ns") == seen.first_mnt_ns != ns_inode("self", "mnt")
    assert get(doc, "sentinel.process.host_pid_ns") is False
    assert get(doc, "host.pid_ns_ino") == str(ns_inode("self", "pid"))
    assert get(doc, "process.executable") == f"{BIND_TARGET}/{MARK}"  # the container's path (not the host's)


def test_a_podman_exec_has_its_own_vpid_in_the_containers_namespace(seen: Seen) -> None:
    doc = seen.execed
    host_pid, *_, vpid = seen.execed_nstgid
    assert host_pid == seen.execed_pid == get(doc, "process.pid")
    assert get(doc, "process.vpid") == vpid and 1 < vpid < 100 and vpid != host_pid
    assert get(doc, "sentinel.process.pid_ns") == seen.first_pid_ns
    assert get(doc, "sentinel.process.mnt_ns") == seen.first_mnt_ns
    assert get(doc, "sentinel.process.host_pid_ns") is False
    assert get(doc, "container.id") == seen.container.id


def test_a_host_process_has_vpid_equal_to_pid(seen: Seen) -> None:
    doc = seen.host
    assert get(doc, "process.vpid") == get(doc, "process.pid")
    assert get(doc, "sentinel.process.pid_ns") == ns_inode("self", "pid")
    assert get(doc, "sentinel.process.mnt_ns") == ns_inode("self", "mnt")  # the agent's, and ours
    assert get(doc, "sentinel.process.host_pid_ns") is True


def test_a_container_in_the_hosts_pid_namespace_sees_host_pids(seen: Seen) -> None:
    """``--pid host``: a container (its cgroup, its mount namespace) whose processes see host pids, so its
    first process is no vpid 1 and Falco's container_started does not hold for it (as in Falco)."""
    doc = seen.host_pid_container
    assert get(doc, "process.vpid") == get(doc, "process.pid") != 1
    assert get(doc, "sentinel.process.host_pid_ns") is True
    assert get(doc, "sentinel.process.pid_ns") == ns_inode("self", "pid")
    assert get(doc, "sentinel.process.mnt_ns") != ns_inode("self", "mnt")


def test_a_bind_mount_at_a_host_symlinks_path_is_named_as_the_container_sees_it(
    seen: Seen, files: Files
) -> None:
    """On the host the container's path resolves (through the host's symlink) to the very file the container
    runs: same inode, same device. The agent's lookups must not name it: the container has no such path."""
    container_path = f"{files.link}/{LINKED}"
    host_path = os.path.realpath(container_path)
    assert host_path == f"{files.real}/{LINKED}" and os.path.samefile(host_path, container_path)
    for doc in (seen.linked, seen.linked_gone):
        assert get(doc, "process.executable") == container_path, get(doc, "process.args")
        assert get(doc, "sentinel.process.mnt_ns") == seen.first_mnt_ns


def test_an_open_in_the_container_is_resolved_against_its_own_cwd(seen: Seen) -> None:
    doc = seen.opened
    token = get(doc, "sentinel.event.raw_path")[len("./") :]
    assert get(doc, "process.working_directory") == "/ctonly/d"  # exists in the container only
    assert get(doc, "file.path") == f"/ctonly/d/{token}"
    assert get(doc, "process.vpid") not in (None, get(doc, "process.pid"))


def test_the_replay_gives_the_same_view(seen: Seen) -> None:
    rc, docs, err = replay(seen.capture)
    assert rc == 0, err
    keys = ("process.pid", "process.vpid", "sentinel.process.pid_ns", "sentinel.process.mnt_ns",
            "sentinel.process.host_pid_ns", "process.executable", "process.parent.vpid")  # fmt: skip
    for live in (seen.first, seen.execed, seen.linked, seen.linked_gone, seen.host, seen.host_pid_container):
        want = {k: get(live, k) for k in keys}
        pid = want["process.pid"]
        replayed = [
            d for d in docs
            if get(d, "event.action") == "exec" and get(d, "process.pid") == pid
            and get(d, "process.name") == get(live, "process.name")
        ]  # fmt: skip
        assert replayed, f"no replayed exec of pid {pid}"
        assert {k: get(replayed[-1], k) for k in keys} == want


# ------------------------------------------------------------------------------- Falco's container_started


@pytest.fixture(scope="module")
def incubating() -> Iterator[Any]:
    from .rule_triggers import rules_detector

    if not FALCO_INCUBATING.is_file():
        pytest.fail(f"Falco's incubating rules are missing: {FALCO_INCUBATING} (shared/ is beside the repo)")
    yield from rules_detector(FALCO_INCUBATING)


def test_container_started_fires_for_the_first_process_only(
    incubating: Any, agent: Agent, podman_image: str, files: Files
) -> None:
    """Falco's "Launch Excessively Capable Container" is ``container_started and excessively_capable_container
    ...``: a container with CAP_SYS_ADMIN raises it for its first process (vpid 1), not for a `podman exec`
    in it (its own vpid); a container with podman's default capabilities raises nothing."""
    binds = [Bind(str(files.bin), BIND_TARGET)]
    command = (f"{BIND_TARGET}/{MARK}", "infinity")
    capable = ("--cap-add", "SYS_ADMIN")
    with running_container(podman_image, binds=binds, command=command, extra_args=capable) as c:
        alert = incubating.wait_alert(EXCESSIVE, lambda a: get(a, "process.pid") == c.pid, timeout=30.0)
        assert get(alert, "process.vpid") == 1 and get(alert, "container.id") == c.id
        later = host_pid_of_exec(c, [f"{BIND_TARGET}/{MARK}", "30"])
        exec_doc(agent, later, MARK)
    with running_container(podman_image, binds=binds, command=command) as default:
        exec_doc(agent, default.pid, MARK)
    time.sleep(2.0)  # both execs were handled by the events agent; the detector sees the same stream
    pids = {get(a, "process.pid") for a in incubating.alerts if get(a, "rule.name") == EXCESSIVE}
    assert later not in pids and default.pid not in pids
