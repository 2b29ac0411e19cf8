"""What an attacker tries against the sensor's shortcuts, on the real kernel with the shipped defaults.

The open de-duplication must never merge opens of two different files (or of one file through two names),
paths under /proc/self must be the acting process's, a memfd must be named as one, and the credentials the
probes read must be what /proc says.
"""

from __future__ import annotations

import os
import pty
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sentinel.alerts.identity import capability_names, ordinary_capabilities
from sentinel.process.table import entity_id
from sentinel.sensor.environment import boot_id

from .conftest import Agent, get

pytestmark = pytest.mark.kernel


def run_actor(code: str, *args: str) -> int:
    """Run ``code`` in one fresh Python process (one tgid, one image) and return its pid."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[0])


def opens_of(agent: Agent, pid: int, pred: Callable[[str], bool]) -> list[dict[str, Any]]:
    return [
        d
        for d in agent.snapshot()
        if get(d, "event.action") == "open"
        and get(d, "process.pid") == pid
        and pred(get(d, "file.path") or "")
    ]


def wait_opens(agent: Agent, pid: int, paths: list[str], timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every path of ``paths`` opened by ``pid``, in order of the events."""
    wanted = set(paths)
    agent.wait_for(
        lambda d: get(d, "process.pid") == pid and get(d, "file.path") == paths[-1],
        timeout=timeout,
        what=f"open of {paths[-1]} by {pid}",
    )
    time.sleep(0.2)
    return opens_of(agent, pid, lambda p: p in wanted)


def test_decoy_then_chdir_cannot_hide_the_second_file(agent: Agent, tmp_path: Path) -> None:
    """The reported attack: `shadow` relative to a decoy directory, chdir("/etc"), `shadow` again."""
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "shadow").write_text("decoy")
    pid = run_actor(
        """
        import os, sys
        os.chdir(sys.argv[1])
        for _ in range(3):
            os.close(os.open("shadow", os.O_RDONLY))
        os.chdir("/etc")
        os.close(os.open("shadow", os.O_RDONLY))
        print(os.getpid())
        """,
        str(decoy),
    )
    docs = wait_opens(agent, pid, [str(decoy / "shadow"), "/etc/shadow"])
    assert [get(d, "file.path") for d in docs] == [str(decoy / "shadow"), "/etc/shadow"]
    assert all(get(d, "sentinel.event.raw_path") == "shadow" for d in docs)


def test_same_dirfd_number_for_two_directories(agent: Agent, tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(name)
    pid = run_actor(
        """
        import os, sys
        base = sys.argv[1]
        first = os.open(base + "/one", os.O_RDONLY | os.O_DIRECTORY)
        os.close(os.open("f", os.O_RDONLY, dir_fd=first))
        os.close(first)
        second = os.open(base + "/two", os.O_RDONLY | os.O_DIRECTORY)
        assert second == first, (first, second)  # the kernel hands the same number out again
        os.close(os.open("f", os.O_RDONLY, dir_fd=second))
        print(os.getpid())
        """,
        str(tmp_path),
    )
    docs = wait_opens(agent, pid, [str(tmp_path / "one" / "f"), str(tmp_path / "two" / "f")])
    assert [get(d, "file.path") for d in docs] == [str(tmp_path / "one" / "f"), str(tmp_path / "two" / "f")]


def test_file_replaced_and_symlink_swapped_between_opens(agent: Agent, tmp_path: Path) -> None:
    (tmp_path / "target").write_text("old")
    (tmp_path / "new").write_text("new")
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    pid = run_actor(
        """
        import os, sys
        base = sys.argv[1]
        os.close(os.open(base + "/target", os.O_RDONLY))
        os.rename(base + "/new", base + "/target")  # another file now has the name
        os.close(os.open(base + "/target", os.O_RDONLY))
        os.close(os.open(base + "/link", os.O_RDONLY))
        os.unlink(base + "/link")
        os.symlink(base + "/b", base + "/link")  # the same name now leads elsewhere
        os.close(os.open(base + "/link", os.O_RDONLY))
        print(os.getpid())
        """,
        str(tmp_path),
    )
    docs = wait_opens(agent, pid, [str(tmp_path / "target"), str(tmp_path / "link")])
    paths = [get(d, "file.path") for d in docs]
    assert paths.count(str(tmp_path / "target")) == 2, paths
    assert paths.count(str(tmp_path / "link")) == 2, paths


def test_one_file_through_two_hard_links_is_two_names(agent: Agent, tmp_path: Path) -> None:
    """Same inode, different names: what a rule matches is the name, so both are reported."""
    for name in ("x", "y"):
        (tmp_path / name).mkdir()
    (tmp_path / "x" / "f").write_text("same inode")
    os.link(tmp_path / "x" / "f", tmp_path / "y" / "f")
    pid = run_actor(
        """
        import os, sys
        os.chdir(sys.argv[1] + "/x")
        os.close(os.open("f", os.O_RDONLY))
        os.chdir(sys.argv[1] + "/y")
        os.close(os.open("f", os.O_RDONLY))
        print(os.getpid())
        """,
        str(tmp_path),
    )
    docs = wait_opens(agent, pid, [str(tmp_path / "x" / "f"), str(tmp_path / "y" / "f")])
    assert len(docs) == 2


def test_identical_opens_are_reported_once_per_process(agent: Agent, tmp_path: Path) -> None:
    """The default de-duplication works: one process, 50 opens of one file, one event; and five processes
    of the same image opening the same file are five events."""
    target = tmp_path / "hot"
    target.write_text("x")
    code = """
        import os, sys
        for _ in range(int(sys.argv[2])):
            os.close(os.open(sys.argv[1], os.O_RDONLY))
        print(os.getpid())
        """
    pid = run_actor(code, str(target), "50")
    pids = [run_actor(code, str(target), "3") for _ in range(5)]
    for p in [pid, *pids]:
        agent.wait_for(lambda d, p=p: get(d, "process.pid") == p and get(d, "file.path") == str(target))
    time.sleep(0.3)
    assert len(opens_of(agent, pid, lambda p: p == str(target))) == 1
    for p in pids:
        assert len(opens_of(agent, p, lambda path: path == str(target))) == 1


def test_a_different_access_or_result_is_another_event(agent: Agent, tmp_path: Path) -> None:
    target = tmp_path / "f"
    pid = run_actor(
        """
        import os, sys
        path = sys.argv[1]
        for flags in (os.O_RDONLY, os.O_RDONLY):
            try:
                os.close(os.open(path, flags))  # missing: ENOENT twice
            except OSError:
                pass
        open(path, "w").close()               # created
        os.close(os.open(path, os.O_RDONLY))  # now it exists
        os.close(os.open(path, os.O_WRONLY))  # written
        print(os.getpid())
        """,
        str(target),
    )
    agent.wait_for(
        lambda d: get(d, "process.pid") == pid and "O_WRONLY" in (get(d, "sentinel.event.flags") or []),
        what="the write open",
    )
    time.sleep(0.2)
    docs = opens_of(agent, pid, lambda p: p == str(target))
    outcomes = [(get(d, "event.outcome"), get(d, "sentinel.event.flags")[0]) for d in docs]
    # The second ENOENT is the same open and is folded; the creation, the read and the write all differ.
    assert outcomes == [("failure", "O_RDONLY"), ("success", "O_WRONLY"), ("success", "O_RDONLY"),
                        ("success", "O_WRONLY")], outcomes  # fmt: skip


# ------------------------------------------------------------------------------ memfd and /proc/self


MEMFD_EXEC = """
    import os, subprocess, sys
    fd = os.memfd_create(sys.argv[1], 0)
    with open("/bin/sleep", "rb") as src:
        os.write(fd, src.read())
    child = subprocess.Popen([f"/proc/self/fd/{fd}", "1"], pass_fds=[fd])
    print(child.pid, fd)
    child.wait()
    """


def test_memfd_exec_is_reported_as_a_memfd_not_an_agent_file(agent: Agent) -> None:
    name = "payload-" + uuid.uuid4().hex[:8]
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MEMFD_EXEC), name], capture_output=True, text=True, check=True
    ).stdout.split()
    child, fd = int(out[0]), int(out[1])
    doc = agent.wait_for(
        lambda d: get(d, "event.action") == "exec" and get(d, "process.pid") == child, what="memfd exec"
    )[0]
    assert get(doc, "process.executable") == f"memfd:{name}"
    assert get(doc, "sentinel.process.exe_from_memfd") is True
    assert get(doc, "sentinel.event.filename") == f"/proc/self/fd/{fd}"


def test_deleted_executable_run_from_its_fd(agent: Agent, tmp_path: Path) -> None:
    copy = tmp_path / ("dropper-" + uuid.uuid4().hex[:8])
    shutil.copy("/bin/sleep", copy)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import os, subprocess, sys
                fd = os.open(sys.argv[1], os.O_RDONLY)
                os.unlink(sys.argv[1])
                child = subprocess.Popen([f"/proc/self/fd/{fd}", "1"], pass_fds=[fd])
                print(child.pid)
                child.wait()
                """
            ),
            str(copy),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    child = int(out[0])
    doc = agent.wait_for(
        lambda d: get(d, "event.action") == "exec" and get(d, "process.pid") == child, what="deleted exec"
    )[0]
    assert get(doc, "sentinel.process.exe_deleted") is True
    assert get(doc, "process.executable") in (str(copy), f"/proc/{child}/fd/3", f"/proc/{child}/fd/4")
    assert not (get(doc, "process.executable") or "").startswith("/proc/self")


# ------------------------------------------------------------------------------ credentials


def proc_status(pid: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.split()
    return out


def proc_start_ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def check_against_proc(doc: dict[str, Any], pid: int) -> None:
    """Every credential field of ``doc`` is what /proc/PID says."""
    status = proc_status(pid)
    ruid, euid, suid, fsuid = status["Uid"]
    rgid, egid, sgid, fsgid = status["Gid"]
    assert get(doc, "process.real_user.id") == ruid
    # Top-level user mirrors process.user (the effective ids), as Elastic's own agents write it.
    assert get(doc, "process.user.id") == euid and get(doc, "user.id") == euid
    assert get(doc, "user.effective") is None and get(doc, "group.id") == egid
    assert get(doc, "process.saved_user.id") == suid
    assert get(doc, "sentinel.process.fs_user.id") == fsuid
    assert get(doc, "process.real_group.id") == rgid and get(doc, "process.group.id") == egid
    assert get(doc, "process.saved_group.id") == sgid and get(doc, "sentinel.process.fs_group.id") == fsgid
    eff, prm = int(status["CapEff"][0], 16), int(status["CapPrm"][0], 16)
    if ordinary_capabilities(int(euid), eff, prm):
        assert get(doc, "process.thread.capabilities") is None
    else:
        assert get(doc, "process.thread.capabilities.effective") == capability_names(eff)
        assert get(doc, "process.thread.capabilities.permitted") == capability_names(prm)
    loginuid = int(Path(f"/proc/{pid}/loginuid").read_text())
    if loginuid == 4294967295:
        assert get(doc, "sentinel.process.login_user") is None
    else:
        assert get(doc, "sentinel.process.login_user.id") == str(loginuid)
    assert get(doc, "process.entity_id") == entity_id(boot_id(), pid, proc_start_ticks(pid))
    tty_nr = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[4])
    assert get(doc, "process.interactive") is (tty_nr != 0)


# Stays alive until told to open a file, then waits again, so /proc can be compared with the event.
WAITER = """
    import os, sys
    mode = sys.argv[2] if len(sys.argv) > 2 else ""
    if "loginuid" in mode:
        with open("/proc/self/loginuid", "w") as f:  # as pam_loginuid does at a login
            f.write("1000")
    if "setresuid" in mode:
        os.setresgid(65534, 0, 0)
        os.setresuid(65534, 0, 0)  # real nobody, effective and saved root
    if "dropped" in mode:
        os.setresuid(65534, 65534, 0)  # effective nobody: no effective capabilities, permitted ones kept
    print(os.getpid(), flush=True)
    sys.stdin.readline()
    os.close(os.open(sys.argv[1], os.O_RDONLY))
    sys.stdin.readline()
    """


def start_waiter(target: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WAITER), str(target), *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def poke(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()


def test_credentials_match_proc_for_processes_started_before_and_after_the_agent(tmp_path: Path) -> None:
    before_target, after_target = tmp_path / "before", tmp_path / "after"
    before_target.write_text("x")
    after_target.write_text("x")
    before = start_waiter(before_target, "setresuid")
    assert before.stdout is not None
    before_pid = int(before.stdout.readline())
    fresh = Agent()  # the defaults, started after `before`
    try:
        after = start_waiter(after_target, "setresuid,loginuid")
        assert after.stdout is not None
        after_pid = int(after.stdout.readline())
        dropped = start_waiter(Path("/etc/hostname"), "dropped")  # nobody may read it
        assert dropped.stdout is not None
        dropped_pid = int(dropped.stdout.readline())
        for proc in (before, after, dropped):
            poke(proc)
        docs = {
            pid: fresh.wait_for(
                lambda d, pid=pid: get(d, "process.pid") == pid and get(d, "event.action") == "open"
                and get(d, "file.path") in (str(before_target), str(after_target), "/etc/hostname"),
                what=f"open by {pid}",
            )[0]
            for pid in (before_pid, after_pid, dropped_pid)
        }
        for pid, doc in docs.items():
            check_against_proc(doc, pid)
        for pid in (before_pid, after_pid):
            assert get(docs[pid], "process.user.id") == "0"
            assert get(docs[pid], "process.real_user.id") == "65534"
        assert get(docs[after_pid], "sentinel.process.login_user.id") == "1000"
        caps = get(docs[dropped_pid], "process.thread.capabilities")  # not what its user implies: shown
        assert caps["effective"] == [] and "CAP_SYS_ADMIN" in caps["permitted"]
        assert get(docs[dropped_pid], "process.saved_user.id") == "0"
        for proc in (before, after, dropped):
            poke(proc)
            proc.wait(10)
    finally:
        assert fresh.stop() == 0


def test_entity_id_is_the_same_across_agent_restarts(tmp_path: Path) -> None:
    """A process forked while one agent runs gets the entity id the next agent computes from /proc."""
    target = tmp_path / "t"
    target.write_text("x")
    first = Agent()
    try:
        waiter = start_waiter(target)
        assert waiter.stdout is not None
        pid = int(waiter.stdout.readline())
        want = entity_id(boot_id(), pid, proc_start_ticks(pid))
        exec_doc = first.wait_for(
            lambda d: get(d, "event.action") == "exec" and get(d, "process.pid") == pid,
            what="exec of the waiter",
        )[0]
    finally:
        assert first.stop() == 0
    second = Agent()
    try:
        poke(waiter)
        doc = second.wait_for(
            lambda d: get(d, "process.pid") == pid and get(d, "file.path") == str(target), what="open"
        )[0]
    finally:
        assert second.stop() == 0
    poke(waiter)
    waiter.wait(10)
    assert get(exec_doc, "process.entity_id") == want  # from the fork the first agent saw
    assert get(doc, "process.entity_id") == want  # from /proc, read by the second at its start


def test_controlling_terminal_matches_proc(agent: Agent) -> None:
    child, master = pty.fork()
    if child == 0:  # the child: a session leader on the pty, as a login shell would be
        os.execv("/bin/sleep", ["/bin/sleep", "60"])  # alive until /proc is read, however slow the alert
    try:
        doc = agent.wait_for(
            lambda d: get(d, "event.action") == "exec" and get(d, "process.pid") == child,
            what="exec on a pty",
        )[0]
        tty_nr = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[4])
        assert tty_nr != 0
        major, minor = (tty_nr >> 8) & 0xFFF, (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
        assert get(doc, "process.tty.char_device") == {"major": major, "minor": minor}
        assert get(doc, "process.interactive") is True
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(master)


def test_without_btf_fields_are_absent_and_every_open_is_reported(tmp_path: Path) -> None:
    """Not the defaults, on purpose: the agent as it runs on a host whose kernel has no BTF."""
    target = tmp_path / "f"
    target.write_text("x")
    os.environ["SENTINEL_BTF"] = str(tmp_path / "no-such-btf")
    try:
        blind = Agent()
    finally:
        del os.environ["SENTINEL_BTF"]
    try:
        ready = next(d for d in blind.diagnostics if d.get("event") == "sentinel.ready")
        assert ready["kernel_offsets"].startswith("none (") and ready["open_dedup_s"] == 0
        pid = run_actor(
            """
            import os, sys
            for _ in range(3):
                os.close(os.open(sys.argv[1], os.O_RDONLY))
            print(os.getpid())
            """,
            str(target),
        )
        docs = blind.wait_for(
            lambda d: get(d, "process.pid") == pid and get(d, "file.path") == str(target),
            count=3,
            what="3 opens",
        )
        doc = docs[0]
        assert get(doc, "process.saved_user") is None and get(doc, "user.effective") is None
        assert get(doc, "process.thread.capabilities") is None
        assert get(doc, "process.user") == get(doc, "process.real_user")  # the real user, the only one known
    finally:
        assert blind.stop() == 0
