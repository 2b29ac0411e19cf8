"""Reading /proc facts: a fake proc tree for the awkward cases, the real /proc for the ordinary one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from sentinel.process.facts import LiveFacts, ProcFacts, ReplayFacts, parse_ns_link, read_proc_facts

COMM = "my (odd) proc)"  # spaces and ')' as a process can set with prctl(PR_SET_NAME)


def _stat_line(pid: int, comm: bytes, ppid: int, tty_nr: int, start_ticks: int) -> bytes:
    # Fields 3.. of /proc/<pid>/stat; field 7 is tty_nr and field 22 is starttime.
    rest = ["S", str(ppid), str(pid), str(pid), str(tty_nr)] + ["0"] * 14 + [str(start_ticks)] + ["0"] * 30
    return b"%d (%s) %s\n" % (pid, comm, " ".join(rest).encode())


def make_proc(
    root: Path,
    pid: int,
    *,
    comm: bytes = b"sh",
    ppid: int = 1,
    tty_nr: int = 0,
    start_ticks: int = 4242,
    cmdline: bytes | None = b"sh\0",
    exe: bytes | None = b"/usr/bin/dash",
    cwd: bytes | None = b"/",
    status: bytes | None = b"Name:\tsh\nUid:\t1000\t0\t0\t0\nGid:\t100\t0\t0\t0\n",
    ns: dict[str, bytes] | None = None,
) -> Path:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "stat").write_bytes(_stat_line(pid, comm, ppid, tty_nr, start_ticks))
    if cmdline is not None:
        (d / "cmdline").write_bytes(cmdline)
    if status is not None:
        (d / "status").write_bytes(status)
    if exe is not None:
        os.symlink(exe, os.fsencode(d / "exe"))
    if cwd is not None:
        os.symlink(cwd, os.fsencode(d / "cwd"))
    if ns is not None:
        (d / "ns").mkdir()
        for kind, link in ns.items():
            os.symlink(link, os.fsencode(d / "ns" / kind))
    return d


def test_awkward_comm_and_non_utf8_bytes(tmp_path: Path) -> None:
    make_proc(
        tmp_path,
        321,
        comm=COMM.encode(),
        ppid=77,
        tty_nr=34816,
        start_ticks=123456,
        cmdline=b"/tmp/\xffbin\0-c\0a b\0",
        exe=b"/tmp/\xffbin (deleted)",
        cwd=b"/home/\xe9t\xe9",
    )
    facts = read_proc_facts(321, str(tmp_path))
    assert facts == ProcFacts(
        pid=321,
        start_ticks=123456,
        ppid=77,
        comm=COMM,
        exe=os.fsdecode(b"/tmp/\xffbin (deleted)"),
        cwd=os.fsdecode(b"/home/\xe9t\xe9"),
        args=[os.fsdecode(b"/tmp/\xffbin"), "-c", "a b"],
        uid=1000,
        gid=100,
        tty_nr=34816,
    )
    # The bytes survive the round trip.
    assert facts.exe is not None and os.fsencode(facts.exe) == b"/tmp/\xffbin (deleted)"


def test_cmdline_shapes(tmp_path: Path) -> None:
    make_proc(tmp_path, 1, cmdline=b"")  # kernel thread or zombie
    make_proc(tmp_path, 2, cmdline=b"no-trailing-nul")
    make_proc(tmp_path, 3, cmdline=b"a\0\0b\0")  # an empty argument in the middle
    assert read_proc_facts(1, str(tmp_path)).args == []  # type: ignore[union-attr]
    assert read_proc_facts(2, str(tmp_path)).args == ["no-trailing-nul"]  # type: ignore[union-attr]
    assert read_proc_facts(3, str(tmp_path)).args == ["a", "", "b"]  # type: ignore[union-attr]


def test_gone_and_partial(tmp_path: Path) -> None:
    assert read_proc_facts(999, str(tmp_path)) is None
    assert read_proc_facts(5, str(tmp_path / "no-such-root")) is None
    make_proc(tmp_path, 6, cmdline=None, exe=None, cwd=None, status=None)
    facts = read_proc_facts(6, str(tmp_path))
    assert facts is not None
    assert (facts.exe, facts.cwd, facts.args, facts.uid, facts.gid) == (None, None, None, -1, -1)
    assert facts.start_ticks == 4242
    bad = tmp_path / "7"
    bad.mkdir()
    (bad / "stat").write_bytes(b"7 (truncated")
    assert read_proc_facts(7, str(tmp_path)) is None


CONTAINER_STATUS = (
    b"Name:\tsh\nTgid:\t6143\nPid:\t6150\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n"
    b"NStgid:\t6143\t1\nNSpid:\t6150\t8\nNSpgid:\t6143\t1\n"
)


def test_the_pid_and_namespaces_as_the_process_sees_them(tmp_path: Path) -> None:
    """NStgid's last number is the pid in the process's own namespace (a container's first process: 1);
    /proc/PID/ns/pid and ns/mnt give the namespaces' inode numbers."""
    ns = {"pid": b"pid:[4026532245]", "mnt": b"mnt:[4026532243]"}
    make_proc(tmp_path, 6143, status=CONTAINER_STATUS, ns=ns)
    facts = read_proc_facts(6143, str(tmp_path))
    assert facts is not None
    assert (facts.vpid, facts.pid_ns, facts.mnt_ns, facts.uid) == (1, 4026532245, 4026532243, 0)
    host = b"Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nNStgid:\t77\nNSpid:\t77\n"
    make_proc(tmp_path, 77, status=host)  # no ns directory (not readable): unknown, never 0-as-a-value
    facts = read_proc_facts(77, str(tmp_path))
    assert facts is not None and (facts.vpid, facts.pid_ns, facts.mnt_ns) == (77, 0, 0)
    make_proc(tmp_path, 78)  # a kernel before 4.1: no NStgid
    facts = read_proc_facts(78, str(tmp_path))
    assert facts is not None and facts.vpid is None and facts.uid == 1000


@pytest.mark.parametrize(
    "status",
    [
        b"NStgid:\n",
        b"NStgid:\t12\t\xd9\xa3\n",  # an Arabic-Indic digit: str.isdigit() would take it
        b"NStgid:\t12\t-1\n",
        b"NStgid:\tx\n",
    ],
)
def test_odd_nstgid_lines_are_unknown(tmp_path: Path, status: bytes) -> None:
    make_proc(tmp_path, 5, status=b"Uid:\t1\t1\t1\t1\nGid:\t2\t2\t2\t2\n" + status)
    facts = read_proc_facts(5, str(tmp_path))
    assert facts is not None and facts.vpid is None and (facts.uid, facts.gid) == (1, 2)


@pytest.mark.parametrize(
    ("link", "kind", "expected"),
    [
        ("pid:[4026531836]", "pid", 4026531836),
        ("mnt:[4026531832]", "mnt", 4026531832),
        ("mnt:[4026531832]", "pid", 0),
        ("pid:[]", "pid", 0),
        ("pid:[12", "pid", 0),
        ("pid:[1\u0663]", "pid", 0),
        ("pid:[" + "9" * 40 + "]", "pid", 0),
        (None, "pid", 0),
    ],
)
def test_namespace_links(link: str | None, kind: str, expected: int) -> None:
    assert parse_ns_link(link, kind) == expected


def test_real_proc_for_this_process() -> None:
    facts = read_proc_facts(os.getpid())
    assert facts is not None
    assert facts.pid == os.getpid()
    assert facts.ppid == os.getppid()
    assert facts.uid == os.getuid() and facts.gid == os.getgid()
    assert facts.exe == os.path.realpath(sys.executable)
    assert facts.cwd == os.getcwd()
    assert facts.args == sys.orig_argv
    assert facts.start_ticks > 0
    assert facts.pid_ns == os.stat("/proc/self/ns/pid").st_ino
    assert facts.mnt_ns == os.stat("/proc/self/ns/mnt").st_ino
    assert facts.vpid is not None and facts.vpid > 0  # == pid on the host, smaller in a container


def test_live_facts_reports_reads(tmp_path: Path) -> None:
    make_proc(tmp_path, 10)
    (tmp_path / "self").mkdir()
    seen: list[ProcFacts] = []
    missed: list[int] = []
    live = LiveFacts(str(tmp_path), on_facts=seen.append, on_miss=missed.append)
    assert live.list_pids() == [10]
    assert live.read(10) is not None and live.read(11) is None
    assert [f.pid for f in seen] == [10] and missed == [11]


def test_live_read_fd_on_real_proc(tmp_path: Path) -> None:
    fds: list[tuple[int, int, str | None]] = []
    live = LiveFacts(on_fd=lambda pid, fd, path: fds.append((pid, fd, path)))
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert live.read_fd(os.getpid(), dfd) == str(tmp_path)
    finally:
        os.close(dfd)
    assert live.read_fd(os.getpid(), dfd) is None
    assert fds == [(os.getpid(), dfd, str(tmp_path)), (os.getpid(), dfd, None)]


def test_replay_facts() -> None:
    replay = ReplayFacts()
    assert replay.read(1) is None and replay.list_pids() == []
    replay.feed(ProcFacts(pid=5, start_ticks=1, ppid=1, comm="old"))
    replay.feed(ProcFacts(pid=3, start_ticks=2, ppid=1, comm="b"))
    replay.feed(ProcFacts(pid=5, start_ticks=9, ppid=1, comm="new"))
    assert replay.read(5).comm == "new"  # type: ignore[union-attr]
    assert replay.list_pids() == [5, 3]
    replay.forget(5)
    assert replay.read(5) is None and replay.list_pids() == [3]
    replay.feed_fd(3, 4, "/etc")
    assert replay.read_fd(3, 4) == "/etc" and replay.read_fd(3, 5) is None
    replay.feed_fd(3, 4, None)
    assert replay.read_fd(3, 4) is None
