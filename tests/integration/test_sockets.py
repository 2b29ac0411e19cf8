"""The listening side and sockets moved between fds, on the real kernel: bind, listen, accept (with and
without an address buffer), dup of a socket (and none for a pipe), each field read from the kernel's socket;
the reverse-shell and unusual-listener rules fire from real processes."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import Agent, get
from .test_security_syscalls import calls_of, run_calls

pytestmark = pytest.mark.kernel


def test_bind_listen_accept_and_dup_say_which_socket(agent: Agent, tmp_path: Path) -> None:
    unix_path = tmp_path / "s.sock"
    pid = run_calls(
        f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0)); s.listen(7)
        port = s.getsockname()[1]
        busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            busy.bind(("127.0.0.1", port))                        # EADDRINUSE: the address asked for
        except OSError:
            pass
        c = socket.create_connection(("127.0.0.1", port))
        conn, _ = s.accept()                                      # accept4 with an address buffer
        c2 = socket.create_connection(("127.0.0.1", port))
        fd = sc("accept", s.fileno(), None, None)                 # no buffer: the kernel's socket says
        os.dup2(c.fileno(), 9)
        r, w = os.pipe(); os.dup2(r, 8)                           # a pipe moved: not reported
        sc("dup3", conn.fileno(), 10, 0)
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); u.bind({str(unix_path)!r})
        six = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); six.bind(("::1", 0)); six.listen(1)
        print(port, c.getsockname()[1], c2.getsockname()[1], six.getsockname()[1], file=sys.stderr)
        """
    )
    binds = calls_of(agent, pid, "bind", count=4)
    ok = [d for d in binds if get(d, "event.outcome") == "success"]
    v4 = next(d for d in ok if get(d, "network.type") == "ipv4")
    port = get(v4, "server.port")
    assert get(v4, "server.ip") == "127.0.0.1" and port > 0  # the port the kernel chose, not the 0 asked for
    assert get(v4, "network.transport") == "tcp" and get(v4, "sentinel.event.family") == "listening"
    busy = next(d for d in binds if get(d, "event.outcome") == "failure")
    assert get(busy, "error.code") == "EADDRINUSE" and get(busy, "server.port") == port
    unix = next(d for d in ok if get(d, "network.type") == "unix")
    assert get(unix, "server.address") == str(unix_path)
    listens = calls_of(agent, pid, "listen", count=2)
    first = next(d for d in listens if get(d, "server.port") == port)
    assert get(first, "sentinel.event.arg.backlog") == 7 and get(first, "server.ip") == "127.0.0.1"
    six = next(d for d in listens if get(d, "network.type") == "ipv6")
    assert get(six, "server.ip") == "::1"
    accept4 = calls_of(agent, pid, "accept4")[0]
    assert get(accept4, "destination.port") == port and get(accept4, "source.ip") == "127.0.0.1"
    assert get(accept4, "network.direction") == "ingress" and get(accept4, "sentinel.event.fd") >= 3
    bare = calls_of(agent, pid, "accept")[0]
    assert get(bare, "source.port") > 0 and get(bare, "destination.port") == port
    assert get(bare, "source.port") != get(accept4, "source.port")
    dups = calls_of(agent, pid, "dup2")
    assert [get(d, "sentinel.event.newfd") for d in dups] == [9]  # the pipe's dup2 onto 8 was not reported
    assert get(dups[0], "sentinel.event.socket.peer.port") == port
    dup3 = calls_of(agent, pid, "dup3")[0]
    assert get(dup3, "sentinel.event.socket.local.port") == port  # conn: accepted, its local end the listener


def test_reverse_shell_and_unusual_listener_rules_fire() -> None:
    from .test_detection import Detector

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"hello\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    d = Detector(("--model", "off"))
    try:
        # bash's /dev/tcp: the child that will run cat moves the socket onto its stdin (comm bash).
        cmd = ["bash", "-c", f"cat < /dev/tcp/127.0.0.1/{port}"]
        shell = subprocess.run(cmd, capture_output=True, timeout=20)
        assert shell.stdout == b"hello\n"
        alert = d.wait_alert("Shell Or Interpreter With A Socket On Stdin Or Stdout",
                             lambda a: get(a, "process.name") == "bash", timeout=20.0)  # fmt: skip
        assert f"127.0.0.1:{port}" in get(alert, "message")
        pid = run_calls(
            f"""
            import socket
            s = socket.create_connection(("127.0.0.1", {port}))
            os.dup2(s.fileno(), 0)                                # python's reverse shell, minus the shell
            l = socket.socket(); l.bind(("0.0.0.0", 0)); l.listen(1)  # a listener on no known port
            """
        )
        rule = "Shell Or Interpreter With A Socket On Stdin Or Stdout"
        d.wait_alert(rule, lambda a: get(a, "process.pid") == pid)
        d.wait_alert("Program Listening On An Unusual Port", lambda a: get(a, "process.pid") == pid)
    finally:
        server.close()
        assert d.stop() == 0


def test_datagrams_report_each_new_destination_once(agent: Agent) -> None:
    """sendto/sendmsg with a destination: the first per process, socket and destination is an event (a
    failure each time), a new destination or a new socket is a new event, sends without one are none."""
    pid = run_calls(
        """
        import socket, struct
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(5):
            u.sendto(b"x", ("127.0.0.1", 40001))
        u.sendto(b"x", ("127.0.0.1", 40002))
        u.sendmsg([b"x"], [], 0, ("127.0.0.1", 40003))
        v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        v.sendto(b"x", ("127.0.0.1", 40001))                      # another socket: news again
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.connect(("127.0.0.1", 40004))
        for _ in range(3):
            try:
                c.send(b"x")                                      # connected: no destination, no event
            except ConnectionRefusedError:                        # loopback's port unreachable, reported
                pass
        six = struct.pack("=HHI16sI", 10, socket.htons(40005), 0, bytes(15) + b"\\x01", 0)
        for _ in range(2):
            sc("sendto", u.fileno(), b"x", 1, 0, six, 28)         # IPv6 on an IPv4 socket: fails each time
        """
    )
    calls_of(agent, pid, "sendto", count=5)
    time.sleep(1.0)  # anything more would have arrived by now
    sends = [d for d in agent.docs if get(d, "process.pid") == pid and get(d, "event.action") == "sendto"]
    ports = sorted(get(d, "destination.port") for d in sends if get(d, "event.outcome") == "success")
    assert ports == [40001, 40001, 40002], ports  # u and v to 40001, u to 40002: five sends, two events
    failed = [d for d in sends if get(d, "event.outcome") == "failure"]
    assert len(failed) == 2 and get(failed[0], "network.type") == "ipv6"
    assert get(failed[0], "destination.port") == 40005
    msg = calls_of(agent, pid, "sendmsg")[0]
    assert get(msg, "destination.ip") == "127.0.0.1" and get(msg, "destination.port") == 40003
    assert get(msg, "network.transport") == "udp" and get(msg, "source.port") > 0
    assert not [d for d in agent.docs if get(d, "process.pid") == pid and get(d, "destination.port") == 40004
                and get(d, "event.action") in ("sendto", "sendmsg")]  # fmt: skip


def test_a_dns_query_to_an_unconfigured_server_raises_the_rule() -> None:
    from .test_detection import Detector

    d = Detector(("--model", "off"))
    try:
        pid = run_calls(
            """
            import socket
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.sendto(b"\\x12\\x34\\x01\\x00\\x00\\x01" + bytes(6), ("127.0.0.2", 53))  # its own resolver
            """
        )
        alert = d.wait_alert("DNS Query To A Server Not In The Resolver Configuration",
                             lambda a: get(a, "process.pid") == pid)  # fmt: skip
        assert "127.0.0.2" in get(alert, "message")
    finally:
        assert d.stop() == 0


def test_connect_transport_is_read_from_the_kernel_socket(agent: Agent) -> None:
    """An fd number that was a UDP socket, closed and reused by dup2 for a TCP socket: connect says tcp (a
    table filled at socket() would still say udp)."""
    pid = run_calls(
        """
        import socket, struct
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        x = u.fileno()
        u.detach(); os.close(x)
        os.dup2(t.fileno(), x)
        addr = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(9), socket.inet_aton("127.0.0.1"))
        sc("connect", x, addr, 16)                                # ECONNREFUSED: nothing listens on 9
        """
    )
    doc = calls_of(agent, pid, "connect")[0]
    assert get(doc, "network.transport") == "tcp" and get(doc, "destination.port") == 9


def test_datagrams_say_whether_the_socket_was_connected(agent: Agent) -> None:
    """fd.connected from the kernel's socket state at the send: an unconnected UDP socket sending to a new
    destination is connected=false, name_changed=true; a connected one sending with an address is true."""
    pid = run_calls(
        """
        import socket
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b"x", ("127.0.0.1", 40011))
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.connect(("127.0.0.1", 40012))
        c.sendto(b"x", ("127.0.0.1", 40013))                      # connected, but with an address
        """
    )
    sends = calls_of(agent, pid, "sendto", count=2)
    free = next(d for d in sends if get(d, "destination.port") == 40011)
    tied = next(d for d in sends if get(d, "destination.port") == 40013)
    assert get(free, "sentinel.event.connected") is False and get(tied, "sentinel.event.connected") is True


OUTBOUND_RULES = """
- macro: outbound_with_loopback
  condition: >
    (((evt.type = connect and evt.dir=<) or
      (evt.type in (sendto,sendmsg) and evt.dir=< and
       fd.l4proto != tcp and fd.connected=false and fd.name_changed=true)) and
     (fd.typechar = 4 or fd.typechar = 6) and
     (fd.ip != "0.0.0.0") and
     (evt.rawres >= 0 or evt.res = EINPROGRESS))
- rule: Outbound Datagram Test
  desc: Falco's outbound condition with loopback allowed, on the sends (a UDP connect is outbound too).
  condition: outbound_with_loopback and evt.type != connect and fd.sport in (40021, 40022)
  output: "outbound %evt.type to %fd.name (connected=%fd.connected changed=%fd.name_changed)"
  priority: NOTICE
- rule: Datagram Fields Test
  desc: The two fields on both sends, through the rules.
  condition: evt.type = sendto and fd.sport in (40021, 40022)
  output: "sent to %fd.sport connected=%fd.connected changed=%fd.name_changed"
  priority: NOTICE
"""


def test_falcos_outbound_condition_fires_on_a_udp_send(tmp_path: Path) -> None:
    """Falco's outbound macro (loopback allowed) matches the real unconnected UDP send, not the connected
    socket's."""
    from .test_detection import Detector

    rules = tmp_path / "outbound.yaml"
    rules.write_text(OUTBOUND_RULES)
    d = Detector(("--rules", str(rules), "--model", "off", "--aggregation-window", "0"))
    try:
        pid = run_calls(
            """
            import socket
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.connect(("127.0.0.1", 40022))
            c.sendto(b"x", ("127.0.0.1", 40022))                  # connected: not outbound by Falco's rule
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.sendto(b"x", ("127.0.0.1", 40021))
            """
        )
        alert = d.wait_alert("Outbound Datagram Test", lambda a: get(a, "process.pid") == pid)
        assert "127.0.0.1:40021" in get(alert, "message") and "connected=false" in get(alert, "message")
        def sent_to(port: int) -> Callable[[dict[str, Any]], bool]:
            return lambda a: get(a, "process.pid") == pid and f"sent to {port} " in get(a, "message")

        fields = [d.wait_alert("Datagram Fields Test", sent_to(port)) for port in (40021, 40022)]
        assert "connected=false changed=true" in get(fields[0], "message")
        assert "connected=true changed=true" in get(fields[1], "message")
        time.sleep(1.0)
        outbound = [a for a in d.alerts if get(a, "rule.name") == "Outbound Datagram Test" and
                    get(a, "process.pid") == pid]  # fmt: skip
        assert len(outbound) == 1, outbound  # the connected socket's send is not outbound
    finally:
        assert d.stop() == 0


def test_sendmmsg_reports_its_first_destination_once(agent: Agent) -> None:
    """sendmmsg like sendmsg: the first message's destination, de-duplicated per process, socket and
    destination; Falco's evt.type name."""
    pid = run_calls(
        """
        import socket, struct
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        def batch(port, n):
            name = ctypes.create_string_buffer(
                struct.pack("=HH4s8x", socket.AF_INET, socket.htons(port), socket.inet_aton("127.0.0.1")), 16)
            data = ctypes.create_string_buffer(b"x")
            iov = ctypes.create_string_buffer(struct.pack("=QQ", ctypes.addressof(data), 1), 16)
            hdr = struct.pack("=QI4xQQQQI4xI4x", ctypes.addressof(name), 16, ctypes.addressof(iov), 1, 0, 0,
                              0, 0)  # struct mmsghdr: msghdr (56 bytes) and msg_len
            vec = ctypes.create_string_buffer(hdr * n, 64 * n)
            keep.extend((name, data, iov, vec))
            return sc("sendmmsg", u.fileno(), vec, n, 0)
        keep = []
        for _ in range(3):
            assert batch(40031, 2) == 2, "sendmmsg failed"
        assert batch(40032, 1) == 1
        """
    )
    sends = calls_of(agent, pid, "sendmmsg", count=2)
    time.sleep(1.0)  # a repeat would have arrived by now
    sends = [d for d in agent.docs if get(d, "process.pid") == pid and get(d, "event.action") == "sendmmsg"]
    assert sorted(get(d, "destination.port") for d in sends) == [40031, 40032]
    first = next(d for d in sends if get(d, "destination.port") == 40031)
    assert get(first, "destination.ip") == "127.0.0.1" and get(first, "network.transport") == "udp"
    assert get(first, "sentinel.event.type") == "sendmmsg" and get(first, "event.outcome") == "success"
    assert get(first, "sentinel.event.connected") is False
