"""Process table behaviour from built events and replayed /proc facts: no kernel, no /proc (but one test)."""

from __future__ import annotations

import os
from typing import Any

from sentinel.events import AT_FDCWD, FLAG_EXECVEAT, Credentials, Event, EventType
from sentinel.process.facts import LiveFacts, ProcFacts, ReplayFacts, classify_exe, memfd_devices
from sentinel.process.table import (
    CLONE_PARENT,
    O_DIRECTORY,
    O_PATH,
    Process,
    ProcessTable,
    acting_process_path,
    entity_id,
    normalize_path,
)

BOOT = "0e6f0c1d-boot"
CLK = 100
S = 1_000_000_000
MS = 1_000_000
USERS = {0: "root", 1000: "alice", 1001: "bob"}
GROUPS = {0: "root", 1000: "alice"}
CLONE_THREAD = 0x10000


def ev(etype: int, ts: int, pid: int, **kw: Any) -> Event:
    kw.setdefault("tid", pid)
    kw.setdefault("uid", 1000)
    kw.setdefault("gid", 1000)
    kw.setdefault("comm", "x")
    return Event(type=etype, ts_ns=ts, pid=pid, **kw)  # type: ignore[arg-type]


def pf(pid: int, ppid: int, start_ticks: int = 100, **kw: Any) -> ProcFacts:
    kw.setdefault("comm", f"p{pid}")
    kw.setdefault("exe", f"/usr/bin/p{pid}")
    kw.setdefault("cwd", "/")
    kw.setdefault("args", [f"p{pid}"])
    kw.setdefault("uid", 1000)
    kw.setdefault("gid", 1000)
    return ProcFacts(pid=pid, start_ticks=start_ticks, ppid=ppid, **kw)


def make(*facts: ProcFacts, **kw: Any) -> tuple[ProcessTable, ReplayFacts]:
    source = ReplayFacts()
    for f in facts:
        source.feed(f)
    table = ProcessTable(BOOT, source, clk_tck=CLK, user_lookup=USERS.get, group_lookup=GROUPS.get, **kw)
    table.bootstrap()
    return table, source


def get(table: ProcessTable, pid: int) -> Process:
    proc = table.get(pid)
    assert proc is not None, pid
    return proc


def shell_table(**kw: Any) -> tuple[ProcessTable, ReplayFacts]:
    """init(1) -> bash(100) in /home/alice."""
    return make(
        pf(1, 0, 1, comm="systemd", exe="/usr/lib/systemd/systemd", args=["/sbin/init"], uid=0, gid=0),
        pf(100, 1, 5000, comm="bash", exe="/usr/bin/bash", cwd="/home/alice", args=["-bash"], tty_nr=34816),
        **kw,
    )


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_links_parents_whatever_the_listing_order() -> None:
    table, _ = make(pf(300, 200), pf(200, 100), pf(100, 1), pf(1, 0, uid=0, gid=0), pf(400, 999))
    assert len(table) == 5
    p300, p200, p100, p1 = get(table, 300), get(table, 200), get(table, 100), get(table, 1)
    assert p300.parent is p200 and p200.parent is p100 and p100.parent is p1 and p1.parent is None
    assert [p.depth for p in (p1, p100, p200, p300)] == [0, 1, 2, 3]
    orphan = get(table, 400)
    assert orphan.parent is None and orphan.ppid == 999 and orphan.depth == 0
    assert p1.user_name == "root" and p300.user_name == "alice" and p300.group_name == "alice"
    assert p300.source == "proc" and p300.exe == p300.filename == "/usr/bin/p300"
    assert p300.entity_id == entity_id(BOOT, 300, 100)
    assert p300.start_ns == 1 * S  # 100 ticks at 100 Hz


def test_bootstrap_breaks_a_cycle_from_an_inconsistent_snapshot() -> None:
    table, _ = make(pf(10, 11), pf(11, 10))
    a, b = get(table, 10), get(table, 11)
    assert (a.parent is None) != (b.parent is None)
    assert len(a.ancestors()) + len(b.ancestors()) == 1


def test_bootstrap_on_the_real_proc() -> None:
    table = ProcessTable(BOOT, LiveFacts())
    assert table.bootstrap() > 1
    me = get(table, os.getpid())
    assert me.ppid == os.getppid()
    assert me.parent is None or me.parent.pid == os.getppid()
    assert me.uid == os.getuid()


# ---------------------------------------------------------------- fork / exec / exit


def test_fork_exec_exit() -> None:
    table, _ = shell_table()
    bash = get(table, 100)
    t = 100 * S
    assert table.apply(ev(EventType.FORK, t, 100, child_pid=101)) is bash
    child = get(table, 101)
    assert child.parent is bash and child.ppid == 100 and child.depth == 2 and child.source == "fork"
    assert (child.exe, child.args, child.cwd, child.comm, child.tty_nr) == (
        "/usr/bin/bash",
        ["-bash"],
        "/home/alice",
        "bash",
        34816,
    )
    assert child.args is not bash.args and child.start_ns == t and child.exec_count == 0

    got = table.apply(
        ev(EventType.EXEC, t + MS, 101, comm="ls", filename="/usr/bin/ls", argv=["ls", "-l", "/tmp"])
    )
    assert got is child
    assert (child.exe, child.filename, child.comm) == ("/usr/bin/ls", "/usr/bin/ls", "ls")
    assert child.exec_count == 1
    assert child.command_line == "ls -l /tmp"
    assert bash.args == ["-bash"] and bash.exec_count == 0

    assert table.apply(ev(EventType.EXIT, t + 2 * MS, 101, comm="ls")) is child
    assert child.exited_ns == t + 2 * MS
    assert table.get(101) is child  # kept for the TTL
    assert table.stats.exited_pending == 1


def test_exec_prefers_matching_facts() -> None:
    table, source = shell_table()
    t = 100 * S
    table.apply(ev(EventType.FORK, t, 100, child_pid=101))
    # Live read /proc right at exec: the kernel's resolved exe (symlink followed) and cwd.
    source.feed(pf(101, 100, table.ticks(t) + 1, exe="/usr/bin/python3.11", cwd="/srv", tty_nr=0))
    table.apply(ev(EventType.EXEC, t + MS, 101, filename="python3", argv=["python3", "app.py"]))
    child = get(table, 101)
    assert (child.exe, child.filename, child.cwd) == ("/usr/bin/python3.11", "python3", "/srv")


def test_exec_ignores_facts_of_another_process() -> None:
    table, source = shell_table()
    t = 100 * S
    table.apply(ev(EventType.FORK, t, 100, child_pid=101))
    source.feed(pf(101, 1, 42, exe="/usr/sbin/stale", cwd="/stale"))  # an older holder of pid 101
    table.apply(ev(EventType.EXEC, t + MS, 101, filename="./tool", argv=["./tool"]))
    child = get(table, 101)
    assert (child.exe, child.cwd) == ("/home/alice/tool", "/home/alice")


def test_failed_exec_changes_nothing() -> None:
    table, _ = shell_table()
    bash = get(table, 100)
    got = table.apply(ev(EventType.EXEC, 100 * S, 100, ret=-2, filename="/nope", argv=["nope"]))
    assert got is bash
    assert (bash.exe, bash.args, bash.exec_count, bash.comm) == ("/usr/bin/bash", ["-bash"], 0, "bash")


def test_three_level_ancestry_survives_eviction_of_exited_parents() -> None:
    table, _ = shell_table(exit_ttl_ns=10 * S)
    t = 100 * S
    table.apply(ev(EventType.FORK, t, 100, child_pid=200))
    table.apply(ev(EventType.EXEC, t + 1, 200, filename="/usr/bin/make", argv=["make"]))
    table.apply(ev(EventType.FORK, t + 2, 200, child_pid=300))
    table.apply(ev(EventType.EXEC, t + 3, 300, filename="/usr/bin/cc", argv=["cc", "-c", "a.c"]))
    cc = get(table, 300)
    assert [p.pid for p in cc.ancestors()] == [200, 100, 1]
    assert [p.comm for p in cc.ancestors()] == ["x", "bash", "systemd"]
    assert [p.pid for p in cc.ancestors(max_depth=2)] == [200, 100]
    assert cc.depth == 3

    table.apply(ev(EventType.EXIT, t + 4, 200))
    table.apply(ev(EventType.OPEN, t + 20 * S, 300, path="/tmp/a.o", ret=3))
    assert table.get(200) is None  # evicted from the index ...
    assert cc.ancestors()[0].exe == "/usr/bin/make"  # ... but still the ancestor
    assert table.stats.expired == 1


def test_process_that_lives_for_microseconds_is_fully_enriched() -> None:
    table, _ = shell_table()
    t = 100 * S
    procs = [
        table.apply(ev(EventType.FORK, t, 100, child_pid=555)),
        table.apply(ev(EventType.EXEC, t + 8_000, 555, comm="id", filename="/usr/bin/id", argv=["id", "-u"])),
        table.apply(ev(EventType.EXIT, t + 15_000, 555, comm="id")),
    ]
    short = procs[2]
    assert short is not None and short is procs[1] and short is get(table, 555)
    assert (short.exe, short.command_line, short.cwd, short.user_name) == (
        "/usr/bin/id",
        "id -u",
        "/home/alice",
        "alice",
    )
    assert [p.comm for p in short.ancestors()] == ["bash", "systemd"]
    assert short.entity_id == entity_id(BOOT, 555, table.ticks(t))
    assert table.stats.late_processes == 0


def test_child_events_that_overtake_their_fork() -> None:
    """Per-CPU buffers: the child's exec and exit can be read before the parent's fork event."""
    table, _ = shell_table()
    t = 100 * S
    table.apply(ev(EventType.EXEC, t + 8_000, 556, comm="id", filename="/usr/bin/id", argv=["id"]))
    table.apply(ev(EventType.EXIT, t + 15_000, 556, comm="id"))
    early = get(table, 556)
    assert early.source == "event" and early.parent is None
    table.apply(ev(EventType.FORK, t, 100, child_pid=556))
    assert get(table, 556) is early  # the same process, now with its lineage
    assert early.parent is get(table, 100) and early.ppid == 100 and early.depth == 2
    assert early.cwd == "/home/alice" and early.tty_nr == 34816
    assert early.exe == "/usr/bin/id" and early.args == ["id"]
    # A child whose only early event was an open gets what it inherited at fork.
    table.apply(ev(EventType.OPEN, t + 9_000, 557, comm="bash", path="/etc/passwd", ret=3))
    table.apply(ev(EventType.FORK, t + 1, 100, child_pid=557))
    forked = get(table, 557)
    assert (forked.exe, forked.args, forked.exec_count) == ("/usr/bin/bash", ["-bash"], 0)


def test_thread_clone_is_not_a_process() -> None:
    table, _ = shell_table()
    table.apply(ev(EventType.FORK, 100 * S, 100, child_pid=101, clone_flags=CLONE_THREAD))
    assert table.get(101) is None


def test_clone_parent_makes_a_sibling() -> None:
    table, _ = shell_table()
    table.apply(ev(EventType.FORK, 100 * S, 100, child_pid=300, clone_flags=CLONE_PARENT | 0x11))
    sibling = get(table, 300)
    assert sibling.parent is get(table, 1) and sibling.ppid == 1 and sibling.depth == 1
    assert sibling.exe == "/usr/bin/bash"  # still a copy of the caller


# ---------------------------------------------------------------- late processes, pid reuse


def test_late_process_from_facts() -> None:
    table, source = shell_table()
    source.feed(pf(700, 100, 9000, comm="cron", exe="/usr/sbin/cron", cwd="/var/spool", uid=0, gid=0))
    proc = table.apply(ev(EventType.OPEN, 100 * S, 700, path="/etc/passwd", ret=3, uid=0, gid=0))
    assert proc is get(table, 700)
    assert proc.source == "late" and proc.parent is get(table, 100) and proc.exe == "/usr/sbin/cron"
    assert proc.entity_id == entity_id(BOOT, 700, 9000) and proc.user_name == "root"
    assert table.stats.late_processes == 1


def test_late_process_from_the_event_alone() -> None:
    table, _ = shell_table()
    proc = table.apply(ev(EventType.CONNECT, 100 * S, 701, comm="curl", uid=1001, gid=5))
    assert proc is not None and proc.source == "event"
    assert (proc.comm, proc.uid, proc.user_name, proc.group_name) == ("curl", 1001, "bob", None)
    assert proc.parent is None
    assert proc.start_ns == 100 * S and proc.exe == ""
    # Exit of a pid never seen: created, then marked exited.
    gone = table.apply(ev(EventType.EXIT, 101 * S, 702, comm="sleep"))
    assert gone is not None and gone.exited_ns == 101 * S
    assert table.stats.late_processes == 2


def test_pid_reuse_replaces_the_entry_but_keeps_old_ancestry() -> None:
    table, _ = make(pf(1, 0, 1), pf(100, 1, 50, comm="old"), pf(150, 100, 60))
    old = get(table, 100)
    table.apply(ev(EventType.FORK, 1000 * S, 1, child_pid=100))
    new = get(table, 100)
    assert new is not old and new.source == "fork" and new.entity_id != old.entity_id
    assert get(table, 150).parent is old and old.comm == "old"


def test_fork_while_bootstrapping_keeps_the_bootstrapped_entry() -> None:
    # /proc was read after the fork (start 10.00 s), the fork event arrives after bootstrap.
    table, _ = make(pf(1, 0, 1), pf(100, 1, 500), pf(101, 1, 1000, comm="child", exe="/usr/bin/child"))
    boot_entry = get(table, 101)
    table.apply(ev(EventType.FORK, 10 * S + 20 * MS, 100, child_pid=101))
    assert get(table, 101) is boot_entry
    assert boot_entry.parent is get(table, 100) and boot_entry.ppid == 100 and boot_entry.depth == 2
    assert boot_entry.source == "proc" and boot_entry.exe == "/usr/bin/child"
    assert boot_entry.entity_id == entity_id(BOOT, 101, 1000)


def test_stale_fork_does_not_replace_a_newer_process() -> None:
    table, _ = make(pf(1, 0, 1), pf(100, 1, 500), pf(101, 1, 90_000))
    newer = get(table, 101)
    table.apply(ev(EventType.FORK, 10 * S, 100, child_pid=101))
    assert get(table, 101) is newer and newer.parent is get(table, 1)


def test_entity_id_is_the_same_from_fork_and_from_bootstrap() -> None:
    t = 1234 * S + 567 * MS
    forked, _ = shell_table()
    forked.apply(ev(EventType.FORK, t, 100, child_pid=4242))
    # The agent restarts and finds the same process in /proc.
    booted, _ = make(pf(4242, 100, t * CLK // S))
    assert get(forked, 4242).entity_id == get(booted, 4242).entity_id == entity_id(BOOT, 4242, 123456)
    assert entity_id(BOOT, 4242, 123456) != entity_id("other-boot", 4242, 123456)
    assert len(entity_id(BOOT, 1, 1)) == 22


# ---------------------------------------------------------------- bounds


def test_exit_ttl_uses_event_time() -> None:
    table, _ = shell_table(exit_ttl_ns=10 * S)
    t = 100 * S
    table.apply(ev(EventType.FORK, t, 100, child_pid=101))
    table.apply(ev(EventType.EXIT, t + 1, 101))
    table.apply(ev(EventType.OPEN, t + 5 * S, 100, path="/x", ret=3))
    assert table.get(101) is not None
    table.apply(ev(EventType.OPEN, t + 10 * S + 1, 100, path="/x", ret=3))
    assert table.get(101) is None
    stats = table.stats
    assert (stats.expired, stats.exited_pending, stats.size, stats.evicted) == (1, 0, 2, 0)


def test_expiry_spares_a_reused_pid() -> None:
    table, _ = shell_table(exit_ttl_ns=10 * S)
    t = 100 * S
    table.apply(ev(EventType.FORK, t, 100, child_pid=101))
    table.apply(ev(EventType.EXIT, t + 1, 101))
    table.apply(ev(EventType.FORK, t + 2 * S, 100, child_pid=101))  # pid reused before the TTL ran out
    reused = get(table, 101)
    table.apply(ev(EventType.OPEN, t + 20 * S, 100, path="/x", ret=3))
    assert table.get(101) is reused and reused.exited_ns is None


def test_max_entries_evicts_exited_first_then_least_recently_active() -> None:
    table, _ = make(pf(1, 0, 1), pf(2, 1, 2), pf(3, 1, 3), max_entries=3)
    t = 100 * S
    table.apply(ev(EventType.EXIT, t, 2))
    table.apply(ev(EventType.FORK, t + 1, 1, child_pid=10))  # over the cap: the exited 2 goes
    assert table.get(2) is None and len(table) == 3
    table.apply(ev(EventType.FORK, t + 2, 1, child_pid=11))  # no exited left: 3 was active least recently
    assert table.get(3) is None and table.get(1) is not None and table.get(10) is not None
    assert len(table) == 3 and table.stats.evicted == 2
    assert get(table, 11).parent is get(table, 1)


def test_depth_cap() -> None:
    table, _ = make(pf(1, 0, 1), max_depth=3)
    t = 100 * S
    for pid in range(2, 6):
        table.apply(ev(EventType.FORK, t + pid, pid - 1, child_pid=pid))
    assert get(table, 4).depth == 3 and len(get(table, 4).ancestors()) == 3
    deep = get(table, 5)
    assert deep.parent is None and deep.depth == 0 and deep.ppid == 4
    assert table.stats.depth_truncated == 1
    table.apply(ev(EventType.FORK, t + 9, 5, child_pid=6))
    assert get(table, 6).depth == 1


def test_depth_cap_at_bootstrap() -> None:
    table, _ = make(*[pf(pid, pid - 1) for pid in range(1, 8)], max_depth=3)
    assert [get(table, pid).depth for pid in range(1, 8)] == [0, 1, 2, 3, 0, 1, 2]
    assert table.stats.depth_truncated == 1


def test_names_are_cached_including_misses() -> None:
    calls: list[int] = []

    def lookup(uid: int) -> str | None:
        calls.append(uid)
        return USERS.get(uid)

    table = ProcessTable(BOOT, ReplayFacts(), clk_tck=CLK, user_lookup=lookup, group_lookup=GROUPS.get)
    for i in range(3):
        table.apply(ev(EventType.OPEN, i, 50 + i, uid=4321))
    proc = table.apply(ev(EventType.OPEN, 9, 50, uid=0))  # setuid: the event's ids win
    assert proc is not None and proc.user_name == "root" and proc.uid == 0
    assert calls == [4321, 0]


# ---------------------------------------------------------------- paths


def test_normalize_path() -> None:
    assert normalize_path("/etc/../etc//shadow") == "/etc/shadow"
    assert normalize_path("//etc/./passwd/") == "/etc/passwd"
    assert normalize_path("///") == "/"
    assert normalize_path("/a/b/../../..") == "/"


def test_relative_paths_via_cwd_and_dirfd() -> None:
    table, source = shell_table()
    bash = get(table, 100)
    t = 100 * S
    assert table.resolve_path(bash, AT_FDCWD, "../bob/./notes.txt") == "/home/bob/notes.txt"
    assert table.resolve_path(bash, AT_FDCWD, "/etc/../etc/shadow") == "/etc/shadow"
    assert table.resolve_path(bash, AT_FDCWD, "") == "/home/alice"

    table.apply(ev(EventType.OPEN, t, 100, path="/var/lib", open_flags=O_DIRECTORY, ret=5))
    table.apply(ev(EventType.OPEN, t, 100, path="dpkg", dirfd=5, open_flags=O_PATH | 0o2000000, ret=6))
    table.apply(ev(EventType.OPEN, t, 100, path="/srv", open_flags=O_DIRECTORY, ret=-13))  # failed: nothing
    assert bash.dirfds == {5: "/var/lib", 6: "/var/lib/dpkg"}
    assert table.resolve_path(bash, 5, "dpkg/status") == "/var/lib/dpkg/status"
    assert table.resolve_path(bash, 6, "") == "/var/lib/dpkg"

    # A dirfd opened before we were watching: asked of the fact source once, then remembered.
    source.feed_fd(100, 9, "/opt")
    assert table.resolve_path(bash, 9, "tool") == "/opt/tool"
    source.feed_fd(100, 9, None)
    assert table.resolve_path(bash, 9, "tool") == "/opt/tool"
    # Nothing known: the path as given, never an exception.
    assert table.resolve_path(bash, 11, "rel/x") == "rel/x"
    source.feed_fd(100, 12, "socket:[1234]")
    assert table.resolve_path(bash, 12, "y") == "y"

    # fd 5 handed out again by a plain open: the directory was closed.
    table.apply(ev(EventType.OPEN, t, 100, path="/etc/hosts", ret=5))
    assert 5 not in bash.dirfds and table.resolve_path(bash, 5, "x") == "x"

    # Forks inherit directory fds.
    table.apply(ev(EventType.FORK, t, 100, child_pid=101))
    assert get(table, 101).dirfds == {6: "/var/lib/dpkg", 9: "/opt"}


def test_dirfds_are_capped() -> None:
    table, _ = shell_table()
    for fd in range(3, 3 + 70):
        table.apply(ev(EventType.OPEN, fd, 100, path=f"/d{fd}", open_flags=O_DIRECTORY, ret=fd))
    dirfds = get(table, 100).dirfds
    assert len(dirfds) == 64 and min(dirfds) == 9 and dirfds[72] == "/d72"


def test_execveat_and_fexecve_resolution() -> None:
    table, _ = shell_table()
    t = 100 * S
    table.apply(ev(EventType.OPEN, t, 100, path="/opt/bin", open_flags=O_DIRECTORY, ret=5))
    table.apply(ev(EventType.OPEN, t, 100, path="/usr/bin/true", open_flags=O_PATH, ret=7))
    table.apply(ev(EventType.FORK, t, 100, child_pid=101))
    table.apply(ev(EventType.FORK, t, 100, child_pid=102))
    table.apply(ev(EventType.EXEC, t + 1, 101, filename="tool", dirfd=5, flags=FLAG_EXECVEAT, argv=["tool"]))
    empty_path = 0x1000  # AT_EMPTY_PATH: fexecve
    fexecve = ev(EventType.EXEC, t + 1, 102, filename="", dirfd=7, flags=FLAG_EXECVEAT, open_flags=empty_path)
    table.apply(fexecve)
    assert get(table, 101).exe == "/opt/bin/tool" and get(table, 101).filename == "tool"
    assert get(table, 102).exe == "/usr/bin/true"
    # Without FLAG_EXECVEAT the dirfd is meaningless: relative to cwd.
    table.apply(ev(EventType.FORK, t, 100, child_pid=103))
    table.apply(ev(EventType.EXEC, t + 1, 103, filename="bin/run", dirfd=5, argv=["run"]))
    assert get(table, 103).exe == "/home/alice/bin/run"


# ---------------------------------------------------------------- chdir


def test_chdir_tracking() -> None:
    table, source = shell_table()
    chdir = EventType.CHDIR
    bash = get(table, 100)
    t = 100 * S
    table.apply(ev(chdir, t, 100, path="projects/../src"))
    assert bash.cwd == "/home/alice/src"
    table.apply(ev(chdir, t + 1, 100, path="/nonexistent", ret=-2))
    assert bash.cwd == "/home/alice/src"
    table.apply(ev(chdir, t + 2, 100, path="/var//log/"))
    assert bash.cwd == "/var/log"
    table.apply(ev(EventType.OPEN, t + 3, 100, path="/etc", open_flags=O_DIRECTORY, ret=4))
    table.apply(ev(chdir, t + 4, 100, path="", dirfd=4))  # fchdir, fd in dirfd as the probe sends it
    assert bash.cwd == "/etc"
    table.apply(ev(chdir, t + 5, 100, path="", fd=4))  # ... or in fd
    assert bash.cwd == "/etc"
    source.feed(pf(100, 1, 5000, cwd="/root"))  # an fd the table never saw: /proc says where it went
    table.apply(ev(chdir, t + 6, 100, path="", dirfd=8))
    assert bash.cwd == "/root"
    # Inherited by children.
    table.apply(ev(EventType.FORK, t + 7, 100, child_pid=101))
    assert get(table, 101).cwd == "/root"
    # A process first seen through its chdir takes its cwd from /proc, not from a double join.
    source.feed(pf(800, 1, 7000, cwd="/tmp/work"))
    table.apply(ev(chdir, t + 8, 800, path="work"))
    assert get(table, 800).cwd == "/tmp/work"


def test_unrelated_event_types_are_harmless() -> None:
    table, _ = shell_table()
    before = (get(table, 100).cwd, get(table, 100).dirfds)
    assert table.apply(ev(99, 100 * S, 100, path="x")) is get(table, 100)
    assert (get(table, 100).cwd, get(table, 100).dirfds) == before
    assert table.apply(ev(EventType.OPEN, 100 * S, 0)) is None


# ---------------------------------------------------------------- kernel identity (BTF offsets)


def test_child_start_from_the_kernel_makes_entity_id_exact_across_a_tick_boundary() -> None:
    """The fork event comes after the child's start; when a 10 ms tick lies between, only the kernel's
    start gives the entity id /proc will give."""
    start = 1234 * S + 9 * MS + 999_000  # tick 123400
    fork_seen = start + 2 * MS  # tick 123401
    table, _ = shell_table()
    table.apply(ev(EventType.FORK, fork_seen, 100, child_pid=4242, child_start_ns=start))
    child = get(table, 4242)
    assert child.entity_id == entity_id(BOOT, 4242, 123400) and child.start_exact
    booted, _ = make(pf(4242, 100, 123400))
    assert get(booted, 4242).entity_id == child.entity_id


def test_an_event_with_another_start_time_is_a_reused_pid() -> None:
    """The table missed the old process's exit and the new one's fork: the kernel's start time says so."""
    table, _ = shell_table()
    old = get(table, 100)
    new_start = 9000 * S
    proc = table.apply(ev(EventType.OPEN, new_start + S, 100, path="/x", ret=3, start_ns=new_start))
    assert proc is not None and proc is not old
    assert proc.entity_id == entity_id(BOOT, 100, 900000)
    same = table.apply(ev(EventType.OPEN, new_start + 2 * S, 100, path="/y", ret=3, start_ns=new_start))
    assert same is proc  # the same start: the same process


def test_late_process_without_facts_takes_the_kernel_start() -> None:
    table, _ = shell_table()
    proc = table.apply(ev(EventType.OPEN, 50 * S, 777, path="/x", start_ns=12 * S + 345 * MS))
    assert proc is not None and proc.entity_id == entity_id(BOOT, 777, 1234) and proc.start_exact


def test_credentials_follow_the_latest_event() -> None:
    table, _ = shell_table()
    first = Credentials(1000, 1000, 1000, 1000, 1000, 1000, 1000, 5, 0, 0)
    table.apply(ev(EventType.OPEN, 10 * S, 100, path="/a", creds=first))
    assert get(table, 100).creds == first
    table.apply(ev(EventType.OPEN, 11 * S, 100, path="/b"))  # no credentials read: keep the last ones
    assert get(table, 100).creds == first
    root = first._replace(euid=0, suid=0, fsuid=0)
    table.apply(ev(EventType.OPEN, 12 * S, 100, path="/c", creds=root))
    assert get(table, 100).creds == root
    table.apply(ev(EventType.FORK, 13 * S, 100, child_pid=101))
    assert get(table, 101).creds == root  # inherited at fork


def test_memfd_is_named_by_the_kernel_view_not_the_path() -> None:
    table, _ = shell_table()
    table.apply(ev(EventType.FORK, 10 * S, 100, child_pid=300))
    table.apply(
        ev(
            EventType.EXEC,
            11 * S,
            300,
            filename="/proc/self/fd/3",
            exe_name="memfd:x",
            exe_nlink=0,
            exe_dev=1,
        )
    )
    child = get(table, 300)
    assert child.exe == "memfd:x" and child.exe_memfd and not child.exe_deleted
    # A regular file that happens to be called memfd:...: links > 0, so it is what its path says.
    table.apply(ev(EventType.FORK, 12 * S, 100, child_pid=301))
    table.apply(ev(EventType.EXEC, 13 * S, 301, filename="/srv/memfd:x", exe_name="memfd:x", exe_nlink=1))
    assert get(table, 301).exe == "/srv/memfd:x" and not get(table, 301).exe_memfd
    # Executed from an fd after it was deleted.
    table.apply(ev(EventType.FORK, 14 * S, 100, child_pid=302))
    table.apply(ev(EventType.EXEC, 15 * S, 302, filename="/tmp/dropper", exe_name="dropper", exe_nlink=0))
    assert get(table, 302).exe_deleted and not get(table, 302).exe_memfd


class _OnlyShm(ReplayFacts):
    """Facts that know the memfd filesystem's device, as the live agent does."""

    def is_memfd_dev(self, dev: int) -> bool:
        return dev == 1


def test_a_deleted_file_named_memfd_on_another_filesystem_is_not_a_memfd() -> None:
    source = _OnlyShm()
    source.feed(pf(100, 1, 5000, comm="bash", exe="/usr/bin/bash"))
    table = ProcessTable(BOOT, source, clk_tck=CLK, user_lookup=USERS.get, group_lookup=GROUPS.get)
    table.bootstrap()
    table.apply(ev(EventType.FORK, 10 * S, 100, child_pid=300))
    table.apply(ev(EventType.EXEC, 11 * S, 300, filename="/tmp/memfd:x", exe_name="memfd:x", exe_nlink=0,
                   exe_dev=os.makedev(254, 0)))  # fmt: skip
    child = get(table, 300)
    assert not child.exe_memfd and child.exe_deleted


def test_proc_self_is_resolved_for_the_acting_process() -> None:
    assert acting_process_path("/proc/self/fd/3", 42, 43) == "/proc/42/fd/3"
    assert acting_process_path("/proc/self", 42, 43) == "/proc/42"
    assert acting_process_path("/proc/thread-self/exe", 42, 43) == "/proc/42/task/43/exe"
    assert acting_process_path("/dev/fd/7", 42, 43) == "/proc/42/fd/7"
    assert acting_process_path("/dev/stdin", 42, 43) == "/proc/42/fd/0"
    assert acting_process_path("/proc/selfish/x", 42, 43) == "/proc/selfish/x"
    assert acting_process_path("/usr/bin/id", 42, 43) == "/usr/bin/id"


class _RecordingFacts(ReplayFacts):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def realpath(self, path: str) -> str:
        self.asked.append(path)
        return path


def test_exec_of_proc_self_fd_is_never_resolved_in_the_agent() -> None:
    """A process gone before /proc could be read: its exe is looked up under its own pid, not the agent's."""
    source = _RecordingFacts()
    table = ProcessTable(BOOT, source, clk_tck=CLK, user_lookup=USERS.get, group_lookup=GROUPS.get)
    table.apply(ev(EventType.EXEC, 11 * S, 555, filename="/proc/self/fd/3"))
    assert source.asked == ["/proc/555/fd/3"]
    assert get(table, 555).exe == "/proc/555/fd/3"


def test_classify_exe_trusts_the_deleted_suffix_only_with_zero_links() -> None:
    st = os.stat("/")

    def fake(nlink: int, dev: int) -> os.stat_result:
        values = list(st)
        values[3], values[2] = nlink, dev
        return os.stat_result(values)

    shm = next(iter(memfd_devices()))
    assert classify_exe("/memfd:evil (deleted)", fake(0, shm)) == ("memfd:evil", False, True)
    assert classify_exe("/memfd:evil (deleted)", fake(0, os.makedev(254, 0))) == ("/memfd:evil", True, False)
    assert classify_exe("/tmp/x (deleted)", fake(0, os.makedev(254, 0))) == ("/tmp/x", True, False)
    # A file really named "x (deleted)": it has links, so nothing is stripped.
    assert classify_exe("/tmp/x (deleted)", fake(1, os.makedev(254, 0))) == ("/tmp/x (deleted)", False, False)
    assert classify_exe(None, None) == (None, False, False)


def test_a_start_time_seen_once_identifies_the_process_from_then_on() -> None:
    """Even an entry whose own start was only an event time (a fork the probe could not time) learns the
    kernel's start from its first event; another start later is another process."""
    table, _ = shell_table()
    table.apply(ev(EventType.FORK, 10 * S, 100, child_pid=600))  # no child_start_ns: not exact
    first = get(table, 600)
    assert not first.start_exact
    table.apply(ev(EventType.OPEN, 11 * S, 600, path="/a", ret=3, start_ns=10 * S - 5))
    assert table.get(600) is first and first.kernel_start_ns == 10 * S - 5
    later = table.apply(ev(EventType.OPEN, 90 * S, 600, path="/b", ret=3, start_ns=80 * S))
    assert later is not None and later is not first and later.kernel_start_ns == 80 * S


def test_the_terminal_the_probe_read_at_exec_is_used_without_proc() -> None:
    """A process gone before /proc could be read still shows the terminal the probe saw at its exec."""
    table, _ = shell_table()
    table.apply(ev(EventType.FORK, 10 * S, 100, child_pid=700))
    assert get(table, 700).tty_nr == 34816  # inherited from the shell
    table.apply(ev(EventType.EXEC, 11 * S, 700, filename="/usr/bin/setsid", tty_nr=0))
    assert get(table, 700).tty_nr == 0  # detached from the terminal: the probe says so
    table.apply(ev(EventType.EXEC, 12 * S, 700, filename="/usr/bin/id", tty_nr=34817))
    assert get(table, 700).tty_nr == 34817


def test_normalize_path_shortcut_agrees_with_normpath_on_every_shape() -> None:
    """Paths that are already normal skip normpath: the shortcut must never keep a "." or ".." (an attacker's
    ``/etc/./shadow`` or ``/tmp/../etc/shadow`` must read as /etc/shadow)."""
    import posixpath
    import random

    def reference(p: str) -> str:
        n = posixpath.normpath(p)
        return "/" + n.lstrip("/") if n.startswith("//") else n

    rnd = random.Random(0)
    parts = ["", ".", "..", "a", ".a", "..b", "a.", "b..", "...", "/", "//", "x y"]
    for _ in range(20_000):
        p = "".join(rnd.choice(parts) + rnd.choice(["/", "", "//"]) for _ in range(rnd.randrange(6)))
        p = "/" + p if rnd.random() < 0.5 else p
        if p:
            assert normalize_path(p) == reference(p), p
    assert normalize_path("/tmp/../etc/shadow") == "/etc/shadow"
    assert normalize_path("/etc/./shadow") == "/etc/shadow" and normalize_path("/etc/") == "/etc"
