"""The container identity service and the process table: which container each process is in, asked only
when a process is new, moves to another cgroup or (hosts with v1 hierarchies) execs; forks inherit; a
recording replays to the same answers without this host's cgroups."""

from __future__ import annotations

import os
import timeit
from pathlib import Path

import pytest

from sentinel.capture import CaptureWriter, ContainerFact, capture_header
from sentinel.capture.reader import CaptureReader
from sentinel.containers import CgroupInfo, ContainerRef, container_from_cgroup
from sentinel.containers.identity import ContainerIdentity, ReplayContainers, host_has_v1_hierarchies
from sentinel.events import Event, EventType
from sentinel.host import HostInfo
from sentinel.process.facts import ProcFacts, ReplayFacts
from sentinel.process.table import Process, ProcessTable
from sentinel.recording import replay_events

A = "3ad7b26ded6d8e7b23da7d48fe889434573036c27ae5a74837233de441c3601e"
B = "9f0c1d2e3b4a59687766554433221100ffeeddccbbaa99887766554433221100"
DOCKER_A = ContainerRef("docker", A, A[:12])
POD_UID = "2f1e8c9a-1b2c-4d3e-9f8a-0123456789ab"
CRI_B = ContainerRef("containerd", B, B[:12], pod_uid=POD_UID)  # the uid from its pod slice
HOST_ID, A_ID, B_ID, DAEMON_ID = 100, 200, 300, 400
PATHS = {
    1: "/",
    HOST_ID: "/user.slice/user-1000.slice/session-2.scope",
    A_ID: f"/system.slice/docker-{A}.scope",
    B_ID: f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2f1e8c9a_1b2c_4d3e_9f8a_"
    f"0123456789ab.slice/cri-containerd-{B}.scope",
    DAEMON_ID: "/system.slice/containerd.service",
}
V1_LINES = ["9:name=systemd:{p}", "4:memory:{p}", "1:cpu,cpuacct:{p}"]
CLK = 100


class FakeResolver:
    """Answers from PATHS as the real resolver would (ids it does not know: None), counting calls."""

    available = True

    def __init__(self, paths: dict[int, str] | None = None) -> None:
        self.paths = PATHS if paths is None else paths
        self.calls = 0

    def resolve(self, cgroup_id: int) -> CgroupInfo | None:
        self.calls += 1
        path = self.paths.get(cgroup_id)
        return CgroupInfo(path, container_from_cgroup(path)) if path is not None else None


class FakeProc:
    """``/proc/PID/cgroup`` texts by pid (absent: the process is gone), counting reads."""

    def __init__(self, texts: dict[int, str] | None = None) -> None:
        self.texts = texts or {}
        self.reads: list[int] = []

    def __call__(self, pid: int, proc_root: str) -> str | None:
        self.reads.append(pid)
        return self.texts.get(pid)


def v2_text(path: str) -> str:
    return f"0::{path}\n"


def hybrid_text(v1_path: str, v2_path: str) -> str:
    return "\n".join(line.format(p=v1_path) for line in V1_LINES) + f"\n0::{v2_path}\n"


def identity(v1: bool = False, texts: dict[int, str] | None = None, **kw: object) -> ContainerIdentity:
    return ContainerIdentity(FakeResolver(), v1=v1, read_proc=FakeProc(texts), **kw)  # type: ignore[arg-type]


def proc_reads(ident: ContainerIdentity) -> list[int]:
    return ident._read_proc.reads  # type: ignore[attr-defined]


# --- the service --------------------------------------------------------------------------------------------


def test_a_v2_host_answers_from_the_id_alone() -> None:
    ident = identity(v1=False)
    assert ident.container_of(A_ID, 10) == DOCKER_A
    assert ident.container_of(B_ID, 11) == CRI_B
    assert ident.container_of(HOST_ID, 12) is None
    assert ident.container_of(1, 13) is None
    assert proc_reads(ident) == [] and not ident.recheck_exec
    assert (ident.stats.lookups, ident.stats.by_id, ident.stats.containers) == (4, 4, 2)


def test_an_id_that_does_not_resolve_falls_back_to_proc() -> None:
    ident = identity(texts={10: v2_text(PATHS[A_ID]), 11: v2_text(PATHS[HOST_ID])})
    assert ident.container_of(999, 10) == DOCKER_A  # removed since, or made after the last walk
    assert ident.container_of(0, 11) is None  # no id at all (bootstrap)
    assert ident.container_of(999, 12) is None  # and the process is gone too
    assert ident.container_of(999, 12, DOCKER_A) == DOCKER_A  # ... so what was known stands (inherited)
    assert proc_reads(ident) == [10, 11, 12, 12]
    assert ident.stats.proc_gone == 2


def test_a_hybrid_host_reads_proc_when_the_id_names_no_container() -> None:
    """The cgroupfs driver on a hybrid host: the container is in the v1 hierarchies only; the v2 cgroup is
    the daemon's, whose id resolves fine and names no container."""
    texts = {10: hybrid_text(f"/docker/{A}", PATHS[DAEMON_ID]), 11: hybrid_text("/", "/")}
    ident = identity(v1=True, texts=texts)
    assert ident.recheck_exec
    assert ident.container_of(DAEMON_ID, 10) == DOCKER_A
    assert ident.container_of(1, 11) is None
    assert ident.container_of(B_ID, 12) == CRI_B  # the id names one: /proc is not read
    assert proc_reads(ident) == [10, 11]


def test_a_v1_only_host_has_no_resolver_and_reads_proc() -> None:
    class Unavailable(FakeResolver):
        available = False

    reads = FakeProc({10: "\n".join(line.format(p=f"/docker/{A}") for line in V1_LINES) + "\n"})
    ident = ContainerIdentity(Unavailable(), v1=True, read_proc=reads)
    assert ident.resolver is None and ident.recheck_exec
    assert ident.container_of(1, 10) == DOCKER_A
    assert reads.reads == [10]


def test_hostile_cgroup_texts_never_break_an_answer() -> None:
    texts = {
        10: "0::/odd\xff\x1b[31m name/docker-" + A + ".scope.evil\n",
        11: "garbage\n\x00\n::::\n" * 1000,
        12: "0::" + "/x" * 100_000 + "\n",
    }
    ident = identity(v1=True, texts=texts)
    assert [ident.container_of(0, pid) for pid in (10, 11, 12)] == [None, None, None]


def test_every_answer_is_reported() -> None:
    seen: list[tuple[int, ContainerRef | None]] = []
    ident = identity(texts={11: v2_text(PATHS[B_ID])}, on_answer=lambda pid, ref: seen.append((pid, ref)))
    assert ident.lookup(A_ID, 10, None) == DOCKER_A
    assert ident.lookup(0, 11, DOCKER_A) == CRI_B
    assert seen == [(10, DOCKER_A), (11, CRI_B)]


def test_this_host_is_seen_with_its_v1_hierarchies(tmp_path: Path) -> None:
    """The agent's own /proc/PID/cgroup lists every hierarchy the host has."""
    pid_dir = tmp_path / str(os.getpid())
    pid_dir.mkdir()
    (pid_dir / "cgroup").write_text("0::/\n")
    assert not host_has_v1_hierarchies(str(tmp_path))
    (pid_dir / "cgroup").write_text("1:name=systemd:/\n0::/\n")
    assert host_has_v1_hierarchies(str(tmp_path))
    (pid_dir / "cgroup").unlink()
    assert host_has_v1_hierarchies(str(tmp_path))  # cannot tell: ask /proc when the id says host


def test_replay_answers_each_recorded_answer_once() -> None:
    replay = ReplayContainers()
    replay.feed(10, DOCKER_A)
    assert replay.lookup(A_ID, 10, None) == DOCKER_A
    assert replay.lookup(A_ID, 10, CRI_B) == CRI_B  # nothing recorded for this question: keep
    replay.feed(10, None)
    assert replay.lookup(A_ID, 10, DOCKER_A) is None


# --- the process table --------------------------------------------------------------------------------------


def facts(pid: int, ppid: int = 1, start: int = 500) -> ProcFacts:
    return ProcFacts(pid, start, ppid, "sh", exe="/usr/bin/dash", cwd="/", args=["sh"])


def table(ident: ContainerIdentity | ReplayContainers, known: list[ProcFacts] = ()) -> ProcessTable:
    source = ReplayFacts()
    for f in known:
        source.feed(f)
    return ProcessTable("boot", source, clk_tck=CLK, user_lookup=lambda _: None, group_lookup=lambda _: None,
                        containers=ident)  # fmt: skip


def ev(etype: EventType, pid: int, cgroup_id: int, ts: int = 10_000_000_000, **kw: object) -> Event:
    return Event(etype, ts, pid, pid, 0, 0, "sh", cgroup_id=cgroup_id, **kw)  # type: ignore[arg-type]


def test_events_of_a_known_process_ask_nothing() -> None:
    ident = identity()
    t = table(ident)
    p = t.apply(ev(EventType.OPEN, 10, A_ID, path="/x", ret=3))
    assert p is not None and p.container == DOCKER_A and p.cgroup_id == A_ID
    for i in range(50):
        t.apply(ev(EventType.OPEN, 10, A_ID, ts=10_000_000_001 + i, path="/y", ret=3))
    assert ident.stats.lookups == 1


def test_a_fork_child_inherits_its_parents_container_without_asking() -> None:
    ident = identity()
    t = table(ident)
    t.apply(ev(EventType.OPEN, 10, A_ID, path="/x", ret=3))
    t.apply(ev(EventType.FORK, 10, A_ID, child_pid=11))
    child = t.get(11)
    assert child is not None and child.container == DOCKER_A and child.cgroup_id == A_ID
    t.apply(ev(EventType.EXEC, 11, A_ID, ts=10_000_000_100, filename="/bin/true", argv=["true"]))
    assert t.get(11).container == DOCKER_A  # type: ignore[union-attr]
    assert ident.stats.lookups == 1  # the parent's first event only


def test_a_process_moved_to_another_cgroup_is_asked_again() -> None:
    """runc: forked on the host, moved into the container's cgroup, then the entrypoint execs."""
    ident = identity()
    t = table(ident)
    t.apply(ev(EventType.OPEN, 10, HOST_ID, path="/x", ret=3))
    t.apply(ev(EventType.FORK, 10, HOST_ID, child_pid=11))
    assert t.get(11).container is None  # type: ignore[union-attr]
    p = t.apply(ev(EventType.EXEC, 11, B_ID, ts=10_000_000_100, filename="/pause", argv=["/pause"]))
    assert p is not None and p.container == CRI_B and p.cgroup_id == B_ID
    p = t.apply(ev(EventType.OPEN, 11, HOST_ID, ts=10_000_000_200, path="/x", ret=3))
    assert p is not None and p.container is None  # moved back out (or a thread left in the host's)
    assert ident.stats.lookups == 3


@pytest.mark.parametrize(
    ("exe", "comm"),
    [("/usr/bin/runc", "runc:[2:INIT]"), ("memfd:runc_cloned:/proc/self/exe", "runc:[2:INIT]"),
     ("/usr/bin/crun", "crun"), ("/usr/bin/lxc-start", "lxc-start"), ("/x/containerd-shim-runc-v2", "x")],
)  # fmt: skip
def test_an_exec_by_a_runtime_asks_again_on_a_host_with_v1_hierarchies_only(exe: str, comm: str) -> None:
    """A move in a v1 hierarchy changes no v2 id: on hybrid hosts the exec of a container runtime's init
    (the container's entrypoint) asks /proc again."""
    texts = {10: hybrid_text("/", "/")}
    ident = identity(v1=True, texts=texts)
    t = table(ident)
    t.apply(ev(EventType.OPEN, 10, DAEMON_ID, path="/x", ret=3))
    assert t.get(10).container is None  # type: ignore[union-attr]
    t.get(10).exe, t.get(10).comm = exe, comm  # type: ignore[union-attr]  # runc init, as the table knows it
    texts[10] = hybrid_text(f"/docker/{A}", PATHS[DAEMON_ID])  # runc moved it (v1 only), then it execs
    p = t.apply(ev(EventType.EXEC, 10, DAEMON_ID, ts=10_000_000_100, filename="/bin/sh", argv=["sh"]))
    assert p is not None and p.container == DOCKER_A
    assert proc_reads(ident) == [10, 10]
    t.apply(ev(EventType.EXEC, 10, DAEMON_ID, ts=10_000_000_200, ret=-2, filename="/nope", argv=["x"]))
    assert proc_reads(ident) == [10, 10]  # a failed exec changed nothing
    p = t.apply(ev(EventType.EXEC, 10, DAEMON_ID, ts=10_000_000_300, filename="/bin/ls", argv=["ls"]))
    assert p is not None and p.container == DOCKER_A
    assert proc_reads(ident) == [10, 10]  # the container's own execs ask nothing: only a runtime's does

    v2 = identity(v1=False)
    t = table(v2)
    t.apply(ev(EventType.OPEN, 10, HOST_ID, path="/x", ret=3))
    t.apply(ev(EventType.EXEC, 10, HOST_ID, ts=10_000_000_100, filename="/bin/sh", argv=["sh"]))
    assert v2.stats.lookups == 1  # a v2 host: the id is the whole truth


def test_a_short_lived_child_keeps_the_container_it_was_forked_in_on_a_hybrid_host() -> None:
    """Its exec is handled after it exited (events of another buffer came first), and the v2 id (the
    daemon's) names no container; what it inherited stands: a container's own execs do not ask (only a
    runtime's do), and when one must, a gone process's /proc says nothing that overrides it."""
    texts = {10: hybrid_text(f"/docker/{A}", PATHS[DAEMON_ID])}
    ident = identity(v1=True, texts=texts)
    t = table(ident)
    t.apply(ev(EventType.EXEC, 10, DAEMON_ID, filename="/entrypoint", argv=["/entrypoint"]))
    t.apply(ev(EventType.FORK, 10, DAEMON_ID, ts=10_000_000_100, child_pid=11))
    p = t.apply(ev(EventType.EXEC, 11, DAEMON_ID, ts=10_000_000_200, filename="/bin/cat", argv=["cat"]))
    assert p is not None and p.container == DOCKER_A
    assert proc_reads(ident) == [10]  # 10 when first seen (its exec); 11 inherited
    assert ident.container_of(DAEMON_ID, 11, DOCKER_A) == DOCKER_A  # had it asked: 11 is gone
    assert ident.stats.proc_gone == 1


def test_an_exiting_process_shows_nothing_conclusive() -> None:
    """A zombie shows / in every v1 hierarchy, and its v2 path marked deleted once the cgroup is removed."""
    texts = {
        10: hybrid_text("/", PATHS[DAEMON_ID]),
        11: "0::/system.slice/docker-" + "0" * 64 + ".scope (deleted)\n",
        12: hybrid_text("/", f"/system.slice/docker-{A}.scope"),  # a live container process: v2 decides
    }
    ident = identity(v1=True, texts=texts)
    assert ident.container_of(DAEMON_ID, 10, CRI_B) == CRI_B
    assert ident.container_of(999, 11, CRI_B) == CRI_B
    assert ident.container_of(DAEMON_ID, 10) is None
    assert ident.container_of(999, 12, CRI_B) == DOCKER_A


def test_bootstrap_gives_running_processes_their_containers() -> None:
    ident = identity(texts={10: v2_text(PATHS[A_ID]), 11: v2_text(PATHS[HOST_ID])})
    t = table(ident, [facts(10), facts(11)])
    assert t.bootstrap() == 2
    assert t.get(10).container == DOCKER_A and t.get(11).container is None  # type: ignore[union-attr]
    # the first event with an id confirms it by the id (a cache hit in the real resolver)
    p = t.apply(ev(EventType.OPEN, 10, A_ID, path="/x", ret=3))
    assert p is not None and p.container == DOCKER_A and p.cgroup_id == A_ID


def test_a_process_first_seen_late_is_asked_at_once() -> None:
    ident = identity(texts={10: v2_text(PATHS[A_ID])})
    t = table(ident, [facts(10)])
    p = t.apply(ev(EventType.OPEN, 10, 0, path="/x", ret=3))  # no id in this event: /proc says
    assert p is not None and p.container == DOCKER_A
    assert proc_reads(ident) == [10]


def test_a_table_without_identity_knows_only_the_host() -> None:
    t = ProcessTable("boot", ReplayFacts(), clk_tck=CLK)
    p = t.apply(ev(EventType.OPEN, 10, A_ID, path="/x", ret=3))
    assert p is not None and p.container is None and p.cgroup_id == A_ID


# --- record and replay --------------------------------------------------------------------------------------

HOST = HostInfo("h", "m", "boot", "6.18", boot_time_ns=1_700_000_000_000_000_000)


def script() -> list[Event]:
    """A process in a container forks a child that is moved to another; a host process; hybrid execs."""
    t0 = 10_000_000_000
    return [
        ev(EventType.OPEN, 20, A_ID, ts=t0, path="/x", ret=3),
        ev(EventType.FORK, 20, A_ID, ts=t0 + 1, child_pid=21),
        ev(EventType.EXEC, 21, A_ID, ts=t0 + 2, filename="/bin/sh", argv=["sh"]),
        ev(EventType.EXEC, 21, B_ID, ts=t0 + 3, filename="/bin/id", argv=["id"]),
        ev(EventType.OPEN, 30, DAEMON_ID, ts=t0 + 4, path="/y", ret=3),
        ev(EventType.EXEC, 30, DAEMON_ID, ts=t0 + 5, filename="/bin/sh", argv=["sh"]),
        ev(EventType.EXEC, 10, HOST_ID, ts=t0 + 6, filename="/bin/ls", argv=["ls"]),
        ev(EventType.FORK, 10, HOST_ID, ts=t0 + 7, child_pid=31),
        ev(EventType.OPEN, 31, HOST_ID, ts=t0 + 8, path="/z", ret=3),
    ]


def record(path: Path, v1: bool) -> list[ContainerRef | None]:
    """What the live table says per event, while recording as `sentinel record` does."""
    texts = {
        10: hybrid_text("/", "/"),
        30: hybrid_text(f"/docker/{B}", PATHS[DAEMON_ID]),
    }
    live_facts = ReplayFacts()
    live_facts.feed(facts(10))
    with CaptureWriter(path, capture_header("test", host=HOST.to_dict())) as w:
        ident = identity(v1=v1, texts=texts, on_answer=w.write_container)
        for f in [facts(10)]:
            w.write_facts(f)
        t = ProcessTable("boot", live_facts, clk_tck=CLK, user_lookup=lambda _: None,
                         group_lookup=lambda _: None, containers=ident)  # fmt: skip
        t.bootstrap()
        w.write_snapshot_end(1)
        answers = []
        for e in script():
            p = t.apply(e)
            w.write_event(e)
            answers.append(p.container if p is not None else None)
    return answers


def replayed(path: Path) -> list[ContainerRef | None]:
    out: list[ContainerRef | None] = []

    class Stream:
        def __init__(self, host: HostInfo, t: ProcessTable) -> None:
            self.t = t

        def handle(self, e: Event) -> None:
            p = self.t.apply(e)
            out.append(p.container if p is not None else None)

    assert replay_events(str(path), Stream) is None
    return out


def test_a_recording_replays_to_the_same_containers(tmp_path: Path) -> None:
    for v1 in (False, True):
        path = tmp_path / f"c{v1}"
        live = record(path, v1)
        assert live[2] == DOCKER_A and live[3] == CRI_B and live[8] is None
        docker_b = ContainerRef("docker", B, B[:12])
        assert live[4:6] == ([docker_b] * 2 if v1 else [None] * 2)  # only a host with v1 hierarchies sees it
        assert replayed(path) == live
        with CaptureReader(path) as reader:
            recorded = [item for item in reader if isinstance(item, ContainerFact)]
        assert ContainerFact(20, DOCKER_A) in recorded


def test_a_capture_without_container_records_replays_as_the_host(tmp_path: Path) -> None:
    path = tmp_path / "old"
    with CaptureWriter(path, capture_header("test", host=HOST.to_dict())) as w:
        for e in script():
            w.write_event(e)
    assert replayed(path) == [None] * len(script())


# --- cost ---------------------------------------------------------------------------------------------------


def test_the_per_event_cost_is_one_compare(capsys: object) -> None:
    """An event of a known process in an unchanged cgroup asks nothing: the table's apply() costs the same
    with the identity service as without (the figure is printed for the report, not asserted)."""
    ident = identity()
    t = table(ident)
    e = ev(EventType.OPEN, 10, A_ID, path="/x", ret=3)
    t.apply(e)
    n = 20_000
    with_ident = min(timeit.repeat(lambda: t.apply(e), number=n, repeat=3)) / n
    plain = ProcessTable("boot", ReplayFacts(), clk_tck=CLK, user_lookup=lambda _: None,
                         group_lookup=lambda _: None)  # fmt: skip
    plain.apply(e)
    without = min(timeit.repeat(lambda: plain.apply(e), number=n, repeat=3)) / n
    assert ident.stats.lookups == 1
    print(f"apply(): {with_ident * 1e6:.3f} us with containers, {without * 1e6:.3f} us without")


def test_process_defaults_are_the_host() -> None:
    p = Process(pid=1, ppid=0, start_ns=0, entity_id="e", comm="init")
    assert p.container is None and p.cgroup_id == 0
