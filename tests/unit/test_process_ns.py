"""The in-container view in the process table: each process's pid in its own pid namespace and its pid and
mount namespaces, from its exec or fork event or from /proc; and exec naming for a process in another mount
namespace than the agent's, whose paths the agent's own lookups cannot follow."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from sentinel.capture import CaptureWriter, capture_header
from sentinel.events import Event, EventType, NsView
from sentinel.host import HostInfo
from sentinel.process.table import Process, ProcessTable
from sentinel.recording import replay_events
from tests.unit.test_exec_identity import CLK, DEV, TTY, CountingFacts, ev, exec_ev, pf

S = 1_000_000_000
HOST_PID_NS = 4026531836
HOST_MNT_NS = 4026531832
CT_PID_NS = 4026532245
CT_MNT_NS = 4026532243


def table_of(facts: CountingFacts, **kw: Any) -> ProcessTable:
    kw.setdefault("agent_mnt_ns", HOST_MNT_NS)
    kw.setdefault("host_pid_ns", HOST_PID_NS)
    return ProcessTable("b", facts, clk_tck=CLK, user_lookup=lambda _: None, group_lookup=lambda _: None,
                        **kw)  # fmt: skip


def host_view(pid: int) -> NsView:
    return NsView(pid, pid, HOST_PID_NS, HOST_MNT_NS)


def runtime(facts: CountingFacts | None = None, **kw: Any) -> tuple[ProcessTable, CountingFacts, Process]:
    """init(1) -> runc(500) on the host, from /proc; runc forks 501 into a new pid and mount namespace."""
    facts = facts or CountingFacts()
    facts.feed(pf(1, 0, 1, comm="init", exe="/sbin/init", vpid=1, pid_ns=HOST_PID_NS, mnt_ns=HOST_MNT_NS))
    facts.feed(pf(500, 1, 5000, comm="runc", exe="/usr/bin/runc", cwd="/run", tty_nr=TTY, vpid=500,
                  pid_ns=HOST_PID_NS, mnt_ns=HOST_MNT_NS))  # fmt: skip
    table = table_of(facts, **kw)
    table.bootstrap()
    table.apply(ev(EventType.FORK, 100 * S, 500, child_pid=501, child_ns=NsView(1, 1, CT_PID_NS, CT_MNT_NS)))
    child = table.get(501)
    assert child is not None
    facts.reads.clear()
    return table, facts, child


def test_bootstrap_takes_the_view_from_proc() -> None:
    facts = CountingFacts()
    facts.feed(pf(1, 0, 1, vpid=1, pid_ns=HOST_PID_NS, mnt_ns=HOST_MNT_NS))
    facts.feed(pf(6143, 1, 9, vpid=1, pid_ns=CT_PID_NS, mnt_ns=CT_MNT_NS))
    facts.feed(pf(7, 1, 9))  # no namespace facts (unreadable, or a capture from before them)
    table = table_of(facts)
    table.bootstrap()
    init, ct, unknown = table.get(1), table.get(6143), table.get(7)
    assert init is not None and (init.vpid, init.pid_ns, init.mnt_ns, init.host_pid_ns) == (
        1, HOST_PID_NS, HOST_MNT_NS, True,
    )  # fmt: skip
    assert ct is not None and (ct.vpid, ct.pid_ns, ct.host_pid_ns) == (1, CT_PID_NS, False)
    assert unknown is not None and (unknown.vpid, unknown.pid_ns, unknown.host_pid_ns) == (None, 0, None)


def test_a_fork_gives_the_child_its_own_view_and_an_exec_refreshes_it() -> None:
    table, _, child = runtime()
    assert (child.vpid, child.pid_ns, child.mnt_ns, child.host_pid_ns) == (1, CT_PID_NS, CT_MNT_NS, False)
    runc = table.get(500)
    assert runc is not None and runc.vpid == 500 and runc.host_pid_ns is True  # the fork is the parent's
    # Without the probe's view (no offsets, or the child not found) the child's is unknown, not its parent's:
    # CLONE_NEWPID, or an unshare before the fork, puts it elsewhere.
    table.apply(ev(EventType.FORK, 101 * S, 500, child_pid=502))
    other = table.get(502)
    assert other is not None and (other.vpid, other.pid_ns, other.host_pid_ns) == (None, 0, None)
    table.apply(exec_ev(102 * S, 502, "/bin/true", ns=NsView(2, 2, CT_PID_NS, CT_MNT_NS)))
    assert (other.vpid, other.pid_ns, other.mnt_ns) == (2, CT_PID_NS, CT_MNT_NS)


def test_a_child_seen_before_its_fork_gets_the_view_from_the_fork() -> None:
    table, _, _ = runtime()
    table.apply(ev(EventType.OPEN, 101 * S, 503, path="/etc/hosts", ret=3))  # its own event came first
    early = table.get(503)
    assert early is not None and early.pid_ns == 0
    view = NsView(3, 3, CT_PID_NS, CT_MNT_NS)
    table.apply(ev(EventType.FORK, 100 * S + 1, 500, child_pid=503, child_ns=view))
    assert table.get(503) is early and (early.vpid, early.pid_ns) == (3, CT_PID_NS)


def test_an_exec_without_the_view_takes_it_from_proc_when_it_reads_it() -> None:
    facts = CountingFacts()
    facts.feed(pf(1, 0, 1, vpid=1, pid_ns=HOST_PID_NS, mnt_ns=HOST_MNT_NS))
    table = table_of(facts)
    table.bootstrap()
    facts.feed(pf(900, 1, 9, vpid=4, pid_ns=CT_PID_NS, mnt_ns=CT_MNT_NS))
    proc = table.apply(exec_ev(9 * S // CLK, 900, "/bin/sh"))  # first seen at its exec: read from /proc
    assert proc is not None and (proc.vpid, proc.pid_ns, proc.host_pid_ns) == (4, CT_PID_NS, False)


def test_an_unknown_host_namespace_says_nothing_about_the_host() -> None:
    _, _, child = runtime(host_pid_ns=0)
    assert child.pid_ns == CT_PID_NS and child.host_pid_ns is None


# -------------------------------------------------------------------------------- exec naming across mounts


def test_a_container_exec_is_never_named_through_the_agents_own_lookups() -> None:
    """A container bind-mounts the host's /srv/real at /srv/link, where the host has a symlink to /srv/real.
    The container runs /srv/link/tool: the host resolves that path to /srv/real/tool, the very file it runs
    (same inode and device), but the container has no /srv/real. The agent asks /proc (the kernel names
    the file relative to the container's root) and never resolves the container's path on its side."""
    table, facts, child = runtime()
    facts.feed_realpath("/srv/link/tool", "/srv/real/tool")
    facts.feed_identity("/srv/real/tool", (77, DEV))
    facts.feed(pf(501, 500, 10000, exe="/srv/link/tool", cwd="/", vpid=1, pid_ns=CT_PID_NS, mnt_ns=CT_MNT_NS))
    view = NsView(1, 1, CT_PID_NS, CT_MNT_NS)
    table.apply(exec_ev(101 * S, 501, "/srv/link/tool", ns=view))
    assert child.exe == "/srv/link/tool" and facts.reads == [501]
    assert (table.stats.exec_verified, table.stats.exec_proc_reads) == (0, 1)


def test_a_container_exec_whose_process_is_gone_keeps_its_own_path_unresolved() -> None:
    table, facts, child = runtime()
    facts.feed_realpath("/srv/link/tool", "/srv/real/tool")  # never asked: the host's symlinks
    facts.feed_identity("/srv/real/tool", (77, DEV))
    looked: list[str] = []
    facts.realpath = lambda path: looked.append(path) or "/srv/real/tool"  # type: ignore[method-assign]
    table.apply(exec_ev(101 * S, 501, "/srv/link/../link/tool", ns=NsView(1, 1, CT_PID_NS, CT_MNT_NS)))
    assert child.exe == "/srv/link/tool" and looked == []  # normalised as a string, no lookup on the host
    assert facts.reads == [501]  # asked /proc, which no longer had it


def test_a_host_exec_is_still_verified_from_the_event() -> None:
    table, facts, _ = runtime()
    table.apply(ev(EventType.FORK, 101 * S, 500, child_pid=600, child_ns=host_view(600)))
    proc = table.get(600)
    assert proc is not None
    facts.feed_realpath("/usr/bin/python3", "/usr/bin/python3.11")
    facts.feed_identity("/usr/bin/python3.11", (77, DEV))
    table.apply(exec_ev(102 * S, 600, "/usr/bin/python3", ns=host_view(600)))
    assert proc.exe == "/usr/bin/python3.11" and facts.reads == []
    assert table.stats.exec_verified == 1 and proc.vpid == 600 and proc.host_pid_ns is True


def test_without_the_view_or_the_agents_namespace_the_exec_is_verified_as_before() -> None:
    """An event without the view (no offsets; a capture from before it), or a table without the agent's
    namespace (an old capture's header): the agent cannot tell, and keeps its earlier behaviour."""
    for view, agent_mnt_ns in ((None, HOST_MNT_NS), (NsView(1, 1, CT_PID_NS, CT_MNT_NS), 0)):
        table, facts, child = runtime(agent_mnt_ns=agent_mnt_ns)
        facts.feed_realpath("/srv/link/tool", "/srv/real/tool")
        facts.feed_identity("/srv/real/tool", (77, DEV))
        table.apply(exec_ev(101 * S, 501, "/srv/link/tool", ns=view))
        assert child.exe == "/srv/real/tool" and facts.reads == [] and table.stats.exec_verified == 1


def test_hostile_view_values_are_kept_as_numbers() -> None:
    """The view comes from the kernel, but a capture is a file: any integers are stored, none breaks."""
    table, _, child = runtime()
    big = NsView(2**64 - 1, 0, 2**64 - 1, 0)
    table.apply(Event(EventType.EXEC, 101 * S, 501, 501, 0, 0, "x", filename="/x", argv=["/x"], ns=big))
    assert (child.vpid, child.pid_ns, child.mnt_ns, child.host_pid_ns) == (2**64 - 1, 2**64 - 1, 0, False)


@pytest.mark.parametrize("recorded", [True, False])
def test_replay_takes_the_agents_namespaces_from_the_header(tmp_path: Path, recorded: bool) -> None:
    """The recording agent's mount namespace and the host's pid namespace travel in the capture header, so a
    replay decides as live did; a capture without them (before version 6) replays as the agent then did."""
    path = tmp_path / "c"
    ns = {"agent_mnt_ns": HOST_MNT_NS, "host_pid_ns": HOST_PID_NS} if recorded else {}
    host = HostInfo(hostname="h", machine_id="m", boot_id="b", kernel="6.18", boot_time_ns=1, **ns)
    view = NsView(1, 1, CT_PID_NS, CT_MNT_NS)
    with CaptureWriter(path, capture_header("test", host=host.to_dict())) as w:
        w.write_facts(pf(1, 0, 1, vpid=1, pid_ns=HOST_PID_NS, mnt_ns=HOST_MNT_NS))
        w.write_facts(pf(500, 1, 5000, cwd="/run", tty_nr=TTY, vpid=500, pid_ns=HOST_PID_NS,
                         mnt_ns=HOST_MNT_NS))  # fmt: skip
        w.write_snapshot_end(1)
        w.write_event(ev(EventType.FORK, 100 * S, 500, child_pid=501, child_ns=view))
        # What a lookup on the host would answer (written whatever the agent asked, to tell the two apart).
        w.write_realpath("/srv/link/tool", "/srv/real/tool")
        w.write_identity("/srv/real/tool", (77, DEV))
        w.write_facts(pf(501, 500, 10000, exe="/srv/link/tool", vpid=1, pid_ns=CT_PID_NS, mnt_ns=CT_MNT_NS))
        w.write_event(exec_ev(101 * S, 501, "/srv/link/tool", ns=view))
    seen: list[tuple[str, int | None, bool | None]] = []

    class Stream:
        def __init__(self, table: ProcessTable) -> None:
            self.table = table

        def handle(self, event: Event) -> None:
            proc = self.table.apply(event)
            assert proc is not None
            if event.type is EventType.EXEC:
                seen.append((proc.exe, proc.vpid, proc.host_pid_ns))

    assert os.sysconf("SC_CLK_TCK") == CLK
    assert replay_events(str(path), lambda _host, table: Stream(table)) is None
    if recorded:
        assert seen == [("/srv/link/tool", 1, False)]
    else:
        assert seen == [("/srv/real/tool", 1, None)]  # verified through the host's lookups, as before
