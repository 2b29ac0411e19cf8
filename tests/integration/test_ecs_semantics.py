"""ECS meanings on the real kernel: an open is ``creation`` only when it created the file (the kernel's
FMODE_CREATED, read through BTF offsets), a shell's ``>`` onto an existing file and an O_TRUNC open are
``change``, a plain open ``access``; the probe's de-duplication never merges a creating open with one that
did not create. A connect carries its local end as ``source.*``."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import Agent, get
from .test_security_syscalls import run_calls, run_program

pytestmark = pytest.mark.kernel


def opens_of(agent: Agent, pid: int, path: str, count: int = 1) -> list[dict[str, Any]]:
    return agent.wait_for(
        lambda d: get(d, "process.pid") == pid and get(d, "event.action") == "open"
        and get(d, "file.path") == path,
        what=f"{count} open(s) of {path} by pid {pid}",
        count=count,
    )  # fmt: skip


def test_a_redirect_to_an_existing_file_is_a_change_and_a_new_file_a_creation(
    agent: Agent, tmp_path: Path
) -> None:
    old, new = tmp_path / "existing", tmp_path / "new"
    old.write_text("before\n")
    shell = subprocess.Popen(["sh", "-c", f"echo x > {old}; echo y > {new}"])
    assert shell.wait(10) == 0
    redirect = opens_of(agent, shell.pid, str(old))[0]
    assert "O_CREAT" in get(redirect, "sentinel.event.flags")
    assert get(redirect, "event.type") == ["change"]
    assert get(redirect, "sentinel.event.created") is False
    assert get(redirect, "sentinel.event.requested_mode") == "0666"
    assert "mode" not in redirect["file"]  # the requested mode is not the file's (ECS file.mode)
    created = opens_of(agent, shell.pid, str(new))[0]
    assert get(created, "event.type") == ["creation"]
    assert get(created, "sentinel.event.created") is True


def test_truncate_exclusive_creat_and_plain_opens(agent: Agent, tmp_path: Path) -> None:
    t = str(tmp_path)
    (tmp_path / "trunc").write_text("data\n")
    (tmp_path / "read").write_text("data\n")
    (tmp_path / "creat-old").write_text("data\n")
    pid = run_calls(
        f"""
        os.chdir({t!r})
        os.close(os.open("trunc", os.O_WRONLY | os.O_TRUNC))
        os.close(os.open("read", os.O_RDONLY))
        os.close(os.open("excl", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            os.open("excl", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        libc.syscall(85, b"creat-old", 0o644)  # creat(2), x86-64
        libc.syscall(85, b"creat-new", 0o644)
        """
    )
    assert get(opens_of(agent, pid, f"{t}/trunc")[0], "event.type") == ["change"]
    plain = opens_of(agent, pid, f"{t}/read")[0]
    assert get(plain, "event.type") == ["access"] and "created" not in plain["sentinel"]["event"]
    excl = opens_of(agent, pid, f"{t}/excl", count=2)
    assert [get(d, "event.type") for d in excl] == [["creation"], ["change"]]
    assert [get(d, "event.outcome") for d in excl] == ["success", "failure"]
    assert get(opens_of(agent, pid, f"{t}/creat-old")[0], "event.type") == ["change"]
    assert get(opens_of(agent, pid, f"{t}/creat-new")[0], "event.type") == ["creation"]


def test_dedup_never_hides_a_creation_behind_an_open_that_did_not_create(
    agent: Agent, tmp_path: Path
) -> None:
    """The same process, path and flags, within the de-duplication window: an open of the existing file,
    then (the file deleted) one that creates it again. The kernel may reuse the freed dentry and inode for
    the new file, so only the created bit in the probe's key keeps the creation from counting as a repeat."""
    t = str(tmp_path)
    (tmp_path / "f").write_text("data\n")
    pid = run_calls(
        f"""
        os.chdir({t!r})
        for _ in range(3):
            os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644))
            os.unlink("f")
            os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644))
        """
    )
    docs = opens_of(agent, pid, f"{t}/f", count=2)
    types = [get(d, "event.type") for d in docs]
    assert types[:2] == [["change"], ["creation"]], types


def test_connects_carry_their_local_end_as_source(agent: Agent) -> None:
    """source.ip/port: the address and port the kernel gave the socket at connect (TCP over IPv4 and IPv6,
    a connected UDP socket), read from the socket through BTF offsets; a refused connect has none."""
    listeners = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.bind((host, 0))
        s.listen(4)
        listeners.append(s)
    tcp4, tcp6 = (s.getsockname()[1] for s in listeners)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()
    pid, err = run_program(
        f"""
        import socket, sys
        ends = []
        for family, host, port, kind in ((socket.AF_INET, "127.0.0.1", {tcp4}, socket.SOCK_STREAM),
                                         (socket.AF_INET6, "::1", {tcp6}, socket.SOCK_STREAM),
                                         (socket.AF_INET, "127.0.0.1", 9, socket.SOCK_DGRAM)):
            c = socket.socket(family, kind)
            c.connect((host, port))
            ends.append(str(c.getsockname()[1]))
        try:
            socket.create_connection(("127.0.0.1", {refused_port}))
        except ConnectionRefusedError:
            pass
        sys.stderr.write(" ".join(ends))
        """
    )
    for s in listeners:
        s.close()
    ports = [int(p) for p in err.split()[-3:]]
    docs = agent.wait_for(
        lambda d: get(d, "process.pid") == pid and get(d, "event.action") == "connect", count=4,
        what=f"4 connects by pid {pid}",
    )  # fmt: skip
    by_port = {get(d, "destination.port"): d for d in docs}
    expected = ((tcp4, "127.0.0.1", ports[0]), (tcp6, "::1", ports[1]), (9, "127.0.0.1", ports[2]))
    for dport, ip, sport in expected:
        doc = by_port[dport]
        assert get(doc, "source.ip") == ip and get(doc, "source.port") == sport, doc.get("source")
        assert get(doc, "source.address") == ip
    refused = by_port[refused_port]
    assert get(refused, "event.outcome") == "failure" and "source" not in refused
