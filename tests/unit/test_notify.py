"""sd_notify: messages reach a real unix datagram socket (a path or an abstract name); the watchdog pings at
half of WATCHDOG_USEC and only when the loop ticks."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.notify import Notifier, socket_address, watchdog_interval


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def messages(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    return out


def test_ready_status_stopping_reach_the_socket(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    n = Notifier({"NOTIFY_SOCKET": path})
    n.ready("running: 107 rules")
    n.status("reloaded\ninjected=1")
    n.stopping()
    got = messages(sock)
    assert got[0].split("\n")[:2] == ["READY=1", "STATUS=running: 107 rules"]
    assert f"MAINPID={os.getpid()}" in got[0]
    assert got[1] == "STATUS=reloaded injected=1"  # one line: a newline cannot inject another key
    assert got[2].startswith("STOPPING=1\nSTATUS=")
    assert n.sent == 3 and n.failed == 0


def test_abstract_socket() -> None:
    name = f"sentinel-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert sock.recv(4096).startswith(b"READY=1\n")
    finally:
        sock.close()


def test_watchdog_pings_at_half_the_timeout_only_when_ticked(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    now = [100.0]
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"}, clock=lambda: now[0])
    assert n.interval == 2.0
    n.ready("up")
    n.tick()  # right after READY
    now[0] += 1.0
    n.tick()  # not due
    now[0] += 1.5
    n.tick()  # due
    now[0] += 30.0  # a stuck loop does not tick: nothing is sent meanwhile
    got = messages(sock)
    assert got[1:] == ["WATCHDOG=1", "WATCHDOG=1"]


def test_inert_without_systemd() -> None:
    n = Notifier({})
    assert not n.active and n.interval is None
    n.ready("up")
    n.tick()
    assert n.sent == 0 and n.failed == 0


def test_a_receiver_gone_is_counted_not_raised(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    n.ready("up")
    assert n.failed == 1


@pytest.mark.parametrize(
    ("env", "pid", "want"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 5, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "5"}, 5, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "6"}, 5, None),
        ({"WATCHDOG_USEC": "x"}, 5, None),
        ({"WATCHDOG_USEC": "0"}, 5, None),
        ({}, 5, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], pid: int, want: float | None) -> None:
    assert watchdog_interval(env, pid) == want


def test_socket_address() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abc") == b"\0abc"
    assert socket_address("vsock:2:1") is None
    assert socket_address("") is None
