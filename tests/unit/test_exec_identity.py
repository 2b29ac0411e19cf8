"""An exec of a process the table already knows is named from its event when the resolved path is the very
file the probe saw it run (inode and device), and from /proc otherwise: never on an unverified path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sentinel.capture import CaptureWriter, capture_header
from sentinel.events import FLAG_EXECVEAT, Event, EventType
from sentinel.host import HostInfo
from sentinel.process.facts import LiveFacts, ProcFacts, ReplayFacts
from sentinel.process.table import O_DIRECTORY, Process, ProcessTable
from sentinel.recording import replay_events
from tests.unit.test_process_facts import make_proc

BOOT = "b"
CLK = 100
S = 1_000_000_000
MS = 1_000_000
DEV = os.makedev(254, 1)
TTY = 34816


class CountingFacts(ReplayFacts):
    """Replayed facts that count the /proc reads the table asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[int] = []

    def read(self, pid: int) -> ProcFacts | None:
        self.reads.append(pid)
        return super().read(pid)


def pf(pid: int, ppid: int, start_ticks: int, **kw: Any) -> ProcFacts:
    kw.setdefault("comm", f"p{pid}")
    kw.setdefault("exe", f"/usr/bin/p{pid}")
    kw.setdefault("cwd", "/")
    kw.setdefault("args", [f"p{pid}"])
    return ProcFacts(pid=pid, start_ticks=start_ticks, ppid=ppid, uid=1000, gid=1000, **kw)


def ev(etype: EventType, ts: int, pid: int, **kw: Any) -> Event:
    kw.setdefault("tid", pid)
    return Event(type=etype, ts_ns=ts, pid=pid, uid=1000, gid=1000, comm="x", **kw)


def exec_ev(ts: int, pid: int, filename: str, ino: int = 77, **kw: Any) -> Event:
    """A successful exec as the probe reports it with BTF offsets: the file's identity and the terminal."""
    kw.setdefault("exe_nlink", 1)
    kw.setdefault("tty_nr", TTY)
    return ev(EventType.EXEC, ts, pid, filename=filename, argv=[filename], exe_ino=ino, exe_dev=DEV,
              exe_name=os.path.basename(filename), **kw)  # fmt: skip


def shell(source: ReplayFacts | None = None) -> tuple[ProcessTable, CountingFacts, Process]:
    """init(1) -> bash(100) in /home/alice, and a child 101 forked at 100 s (start tick 10000)."""
    facts = source if source is not None else CountingFacts()
    facts.feed(pf(1, 0, 1, comm="systemd", exe="/usr/lib/systemd/systemd"))
    facts.feed(pf(100, 1, 5000, comm="bash", exe="/usr/bin/bash", cwd="/home/alice", tty_nr=TTY))
    table = ProcessTable(BOOT, facts, clk_tck=CLK, user_lookup=lambda _: None, group_lookup=lambda _: None)
    table.bootstrap()
    table.apply(ev(EventType.FORK, 100 * S, 100, child_pid=101))
    child = table.get(101)
    assert child is not None
    assert isinstance(facts, CountingFacts)
    facts.reads.clear()
    return table, facts, child


# What /proc would say for 101 after its exec: deliberately different, so a test sees which one was used.
PROC_101 = pf(101, 100, 10000, exe="/usr/bin/from-proc", cwd="/from/proc", tty_nr=0)


def test_a_verified_exec_reads_no_proc() -> None:
    table, facts, child = shell()
    facts.feed(PROC_101)
    facts.feed_realpath("/usr/bin/python3", "/usr/bin/python3.11")
    facts.feed_identity("/usr/bin/python3.11", (77, DEV))
    assert table.apply(exec_ev(101 * S, 101, "/usr/bin/python3")) is child
    assert facts.reads == []
    assert (child.exe, child.filename, child.cwd, child.tty_nr) == (
        "/usr/bin/python3.11",
        "/usr/bin/python3",
        "/home/alice",  # the table's own: inherited at fork, kept current by chdir
        TTY,  # the probe's
    )
    assert not child.exe_deleted and not child.exe_memfd
    assert child.parent is table.get(100)
    assert (table.stats.exec_verified, table.stats.exec_proc_reads) == (1, 0)
    # A relative name, against the table's cwd.
    facts.feed_identity("/home/alice/bin/tool", (78, DEV))
    table.apply(exec_ev(102 * S, 101, "bin/tool", ino=78))
    assert child.exe == "/home/alice/bin/tool" and facts.reads == []
    assert table.stats.exec_verified == 2


def test_an_identity_mismatch_reads_proc_and_takes_its_exe() -> None:
    """The path leads to another file (a re-pointed symlink, a replaced file): /proc names the right one."""
    table, facts, child = shell()
    facts.feed(PROC_101)
    facts.feed_realpath("/tmp/link", "/tmp/b")
    facts.feed_identity("/tmp/b", (99, DEV))  # the probe saw inode 77 run
    table.apply(exec_ev(101 * S, 101, "/tmp/link"))
    assert facts.reads == [101]
    assert (child.exe, child.cwd, child.tty_nr) == ("/usr/bin/from-proc", "/from/proc", TTY)
    assert (table.stats.exec_verified, table.stats.exec_proc_reads) == (0, 1)
    # Same inode on another device is another file too.
    facts.feed_identity("/tmp/b", (77, os.makedev(8, 1)))
    table.apply(exec_ev(102 * S, 101, "/tmp/link"))
    assert facts.reads == [101, 101]


def test_a_mismatch_with_the_process_gone_keeps_the_event_path() -> None:
    """No /proc to ask: the resolved path is the best left (as before the identity check existed)."""
    table, facts, child = shell()
    facts.feed_realpath("/tmp/link", "/tmp/b")
    facts.feed_identity("/tmp/b", (99, DEV))
    table.apply(exec_ev(101 * S, 101, "/tmp/link"))
    assert facts.reads == [101] and child.exe == "/tmp/b" and child.cwd == "/home/alice"


def test_without_what_the_kernel_cannot_say_proc_is_read() -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("no identity (no BTF offsets)", {"exe_nlink": -1}),
        ("deleted or memfd: no path to verify", {"exe_nlink": 0}),
        ("no terminal from the probe", {"tty_nr": -1}),
        ("identity never looked up (an old capture)", {"filename": "/usr/bin/other"}),
    ]
    for what, kw in cases:
        table, facts, child = shell()
        facts.feed(PROC_101)
        facts.feed_identity("/usr/bin/id", (77, DEV))
        table.apply(exec_ev(101 * S, 101, kw.pop("filename", "/usr/bin/id"), **kw))
        assert facts.reads == [101], what
        assert child.exe == "/usr/bin/from-proc" and child.cwd == "/from/proc", what
        assert table.stats.exec_proc_reads == 1, what


def test_a_path_under_proc_is_only_named_by_proc() -> None:
    """An unresolved /proc/self/exe names the process's own file: only /proc's own answer is taken."""
    table, facts, child = shell()
    facts.feed(PROC_101)
    facts.feed_identity("/proc/101/exe", (77, DEV))
    table.apply(exec_ev(101 * S, 101, "/proc/self/exe"))
    assert facts.reads == [101] and child.exe == "/usr/bin/from-proc"


def test_an_unknown_cwd_or_lineage_is_still_read_from_proc() -> None:
    """A bootstrapped orphan (ppid 0) learns its parent from /proc at its exec, as before."""
    facts = CountingFacts()
    facts.feed(pf(100, 1, 5000, cwd="/home/alice"))
    facts.feed(pf(400, 0, 6000, cwd="/srv"))
    table = ProcessTable(BOOT, facts, clk_tck=CLK)
    table.bootstrap()
    facts.reads.clear()
    orphan = table.get(400)
    assert orphan is not None and orphan.parent is None and orphan.ppid == 0
    facts.feed(pf(400, 100, 6000, cwd="/srv"))
    facts.feed_identity("/usr/bin/id", (77, DEV))
    table.apply(exec_ev(70 * S, 400, "/usr/bin/id"))
    assert facts.reads == [400]
    assert orphan.parent is table.get(100) and orphan.ppid == 100
    # A process first seen by an event, with /proc gone then: neither cwd nor lineage known.
    table.apply(ev(EventType.OPEN, 80 * S, 500, path="/etc/passwd", ret=3))
    late = table.get(500)
    assert late is not None and late.cwd == "" and late.ppid == 0
    facts.feed(pf(500, 100, 7999, cwd="/var"))
    table.apply(exec_ev(81 * S, 500, "/usr/bin/id"))
    assert facts.reads == [400, 500, 500]
    assert late.cwd == "/var" and late.parent is table.get(100)


def test_execveat_is_verified_against_its_dirfd() -> None:
    table, facts, child = shell()
    table.apply(ev(EventType.OPEN, 100 * S, 101, path="/opt/bin", open_flags=O_DIRECTORY, ret=5))
    facts.feed_identity("/opt/bin/tool", (77, DEV))
    table.apply(exec_ev(101 * S, 101, "tool", dirfd=5, flags=FLAG_EXECVEAT))
    assert facts.reads == [] and child.exe == "/opt/bin/tool"


# ---------------------------------------------------------------- on the real filesystem


def live_table(tmp_path: Path, **callbacks: Any) -> tuple[ProcessTable, LiveFacts, Path]:
    """A table on LiveFacts over a fake /proc (bash 100 in ``tmp_path``) and the real files under tmp_path."""
    proc = tmp_path / "proc"
    make_proc(proc, 1, ppid=0, start_ticks=1, exe=b"/usr/lib/systemd/systemd")
    make_proc(proc, 100, ppid=1, start_ticks=5000, exe=b"/usr/bin/bash", cwd=os.fsencode(tmp_path))
    facts = LiveFacts(str(proc), **callbacks)
    table = ProcessTable(BOOT, facts, clk_tck=CLK)
    table.bootstrap()
    return table, facts, proc


def real_exec(ts: int, pid: int, filename: str, target: Path) -> Event:
    """The exec event of ``filename`` whose running file is ``target`` (its real inode and device)."""
    st = os.stat(target)
    return ev(EventType.EXEC, ts, pid, filename=filename, argv=[filename], exe_ino=st.st_ino,
              exe_dev=st.st_dev, exe_nlink=st.st_nlink, exe_name=target.name, tty_nr=0)  # fmt: skip


def test_a_symlink_re_pointed_after_the_exec_is_caught(tmp_path: Path) -> None:
    """exec /tmp/link while it points to a; link -> b before the agent looks: b's inode is not the one the
    probe saw, so /proc (which says a) names the file. Then the cached resolution (b) of a later exec of a
    meets the same check."""
    a, b, link = tmp_path / "a", tmp_path / "b", tmp_path / "link"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    table, facts, proc = live_table(tmp_path)
    table.apply(ev(EventType.FORK, 100 * S, 100, child_pid=101))
    child = table.get(101)
    assert child is not None
    os.symlink(a, link)
    event = real_exec(101 * S, 101, str(link), a)  # what the probe saw
    os.unlink(link)
    os.symlink(b, link)  # the swap, before the agent handles the event
    make_proc(proc, 101, ppid=100, start_ticks=10000, exe=os.fsencode(a), cwd=os.fsencode(tmp_path))
    table.apply(event)
    assert child.exe == str(a)
    assert (table.stats.exec_verified, table.stats.exec_proc_reads) == (0, 1)
    # The link now resolves to b, cached; b is swapped for a: the cached answer fails the check.
    table.apply(real_exec(102 * S, 101, str(link), b))
    assert child.exe == str(b) and table.stats.exec_verified == 1
    os.unlink(link)
    os.symlink(a, link)
    os.unlink(proc / "101" / "exe")
    os.symlink(a, proc / "101" / "exe")
    assert facts.realpath(str(link)) == str(b)  # stale for a few seconds
    table.apply(real_exec(103 * S, 101, str(link), a))
    assert child.exe == str(a) and table.stats.exec_proc_reads == 2


def test_a_hard_link_is_the_same_file(tmp_path: Path) -> None:
    """Two names of one inode are one file: the name the process called is accepted."""
    a, hard = tmp_path / "a", tmp_path / "hard"
    a.write_bytes(b"a")
    os.link(a, hard)
    table, _, _ = live_table(tmp_path)
    table.apply(ev(EventType.FORK, 100 * S, 100, child_pid=101))
    table.apply(real_exec(101 * S, 101, "hard", a))
    child = table.get(101)
    assert child is not None and child.exe == str(hard)
    assert table.stats.exec_verified == 1


def test_replay_reaches_the_same_decisions_as_live(tmp_path: Path) -> None:
    """A recording of verified, mismatched and vanished execs replays into the same table, /proc untouched."""
    capture = tmp_path / "cap"
    host = HostInfo(hostname="h", machine_id="m", boot_id=BOOT, kernel="6.18", boot_time_ns=1)
    writer = CaptureWriter(capture, capture_header("test", host=host.to_dict()))
    files = tmp_path / "files"
    files.mkdir()
    a, b, link = files / "a", files / "b", files / "link"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    os.symlink(a, link)
    table, _, proc = live_table(
        tmp_path,
        on_facts=writer.write_facts,
        on_fd=writer.write_fd,
        on_miss=writer.write_facts_miss,
        on_realpath=writer.write_realpath,
        on_identity=writer.write_identity,
    )
    writer.write_snapshot_end(1)
    seen: list[tuple[int, str, str, int, int]] = []

    def apply(event: Event) -> None:
        p = table.apply(event)
        writer.write_event(event)
        assert p is not None
        seen.append((p.pid, p.exe, p.cwd, p.tty_nr, p.ppid))

    assert os.sysconf("SC_CLK_TCK") == CLK  # replay builds its table with the host's
    apply(ev(EventType.FORK, 100 * S, 100, child_pid=101))
    apply(real_exec(101 * S, 101, "files/link", a))  # verified
    apply(ev(EventType.FORK, 102 * S, 100, child_pid=102))
    make_proc(proc, 102, ppid=100, start_ticks=table.ticks(102 * S), exe=os.fsencode(b), cwd=b"/srv")
    apply(real_exec(103 * S, 102, "files/link", b))  # link -> a runs b (swapped): /proc names b, cwd /srv
    apply(ev(EventType.FORK, 104 * S, 100, child_pid=103))
    apply(real_exec(105 * S, 103, str(link), b))  # the same, gone from /proc: only the resolved path left
    apply(real_exec(106 * S, 101, str(b), b))  # verified
    writer.close()
    assert table.stats.exec_verified == 2 and table.stats.exec_proc_reads == 2

    replayed: list[tuple[int, str, str, int, int]] = []
    tables: list[ProcessTable] = []

    class Stream:
        def __init__(self, rtable: ProcessTable) -> None:
            self.table = rtable
            tables.append(rtable)

        def handle(self, event: Event) -> None:
            p = self.table.apply(event)
            assert p is not None
            replayed.append((p.pid, p.exe, p.cwd, p.tty_nr, p.ppid))

    for name in ("a", "b", "link"):
        os.unlink(files / name)  # the replaying host has none of it
    assert replay_events(str(capture), lambda _host, rtable: Stream(rtable)) is None
    assert replayed == seen
    assert seen[1][1] == str(a) and seen[3][1:3] == (str(b), "/srv") and seen[5][1] == str(a)
    assert seen[6][1] == str(b)
    assert (tables[0].stats.exec_verified, tables[0].stats.exec_proc_reads) == (2, 2)
