"""bind, listen, accept, dup and datagram events: the socket the probe read from the kernel, as fields and
documents."""

from __future__ import annotations

import socket

from sentinel.alerts.ecs import EcsRenderer
from sentinel.events import AF_INET, AF_INET6, AF_UNIX, Event, EventType
from sentinel.host import HostInfo
from sentinel.rules import EvalContext
from sentinel.sockets import (
    SOCK_KNOWN,
    SOCK_STATE_KNOWN,
    SOCK_STATE_SHIFT,
    TCP_CLOSE,
    TCP_ESTABLISHED,
    sock_facts,
    sock_name,
)
from tests.unit.rules_support import WALL, ruleset

T = EventType
HOST = HostInfo(hostname="h", machine_id="m", boot_id="b", kernel="6.18", boot_time_ns=1_700_000_000 * 10**9)
RS = ruleset("- rule: any\n  desc: d\n  condition: evt.type = execve\n  output: o\n  priority: debug\n")


def v4(ip: str) -> int:
    return int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "little")


def word(port: int, local_port: int, family: int, sock_type: int = 1) -> int:
    return port | local_port << 16 | family << 32 | sock_type << 48 | SOCK_KNOWN


def ev(etype: EventType, args: tuple[int, ...], extra=(0, 0, 0), ret: int = 0, strs=()) -> Event:
    return Event(etype, 5, 300, 300, 0, 0, "x", ret=ret, sys_args=args, sys_extra=extra, sys_strs=strs)


def ctx(e: Event) -> EvalContext:
    return EvalContext(e, None, None, WALL)


SOCKET_VALUES = {  # an accepted IPv4 connection: client 203.0.113.9:51000 to the local 10.0.0.5:8443
    "fd.num": 7,
    "fd.type": "ipv4",
    "fd.typechar": "4",
    "fd.sockfamily": "ip",
    "fd.l4proto": "tcp",
    "fd.name": "203.0.113.9:51000->10.0.0.5:8443",
    "fd.nameraw": "203.0.113.9:51000->10.0.0.5:8443",
    "fd.sip": "10.0.0.5",
    "fd.sport": 8443,
    "fd.snet": "10.0.0.5",
    "fd.cip": "203.0.113.9",
    "fd.cport": 51000,
    "fd.cnet": "203.0.113.9",
    "fd.lip": "10.0.0.5",
    "fd.lport": 8443,
    "fd.lnet": "10.0.0.5",
    "fd.rip": "203.0.113.9",
    "fd.rport": 51000,
    "fd.rnet": "203.0.113.9",
}
ACCEPTED = ev(T.ACCEPT4, (3, 0x80000, 0, 0, 0, 0), (v4("203.0.113.9") | v4("10.0.0.5") << 32, 0,
              word(51000, 8443, AF_INET)), ret=7)  # fmt: skip


def test_an_accepted_connection_in_falco_fields() -> None:
    c = ctx(ACCEPTED)
    for name, value in SOCKET_VALUES.items():
        got = RS.field_value(name, c)
        assert (str(got) if name.endswith("net") else got) == value, name
    assert RS.field_value("evt.arg.tuple", c) == "203.0.113.9:51000->10.0.0.5:8443"
    assert RS.field_value("evt.arg.listen_fd", c) == 3 and RS.field_value("evt.arg.flags", c) == "0x80000"


def test_listening_and_bound_sockets_name_the_local_end() -> None:
    six = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    lo, hi = int.from_bytes(six[:8], "little"), int.from_bytes(six[8:], "little")
    listen = ev(T.LISTEN, (4, 128, 0, 0, 0, 0), (lo, hi, word(8080, 8080, AF_INET6)))
    c = ctx(listen)
    assert RS.field_value("fd.name", c) == "2001:db8::1:8080" and RS.field_value("fd.sport", c) == 8080
    assert RS.field_value("fd.num", c) == 4 and RS.field_value("fd.cip", c) is None
    assert RS.field_value("fd.rip", c) is None and RS.field_value("fd.lport", c) == 8080
    failed_bind = ev(T.BIND, (5, 1, 16, 0, 0, 0), (v4("0.0.0.0"), 0, word(80, 80, AF_INET)), ret=-13)
    assert sock_name(failed_bind) == "0.0.0.0:80"
    assert RS.field_value("evt.arg.addr", ctx(failed_bind)) == "0.0.0.0:80"
    unix = ev(T.BIND, (5, 1, 20, 0, 0, 0), (0, 0, word(0, 0, AF_UNIX)), strs=("/run/app.sock",))
    assert RS.field_value("fd.name", ctx(unix)) == "/run/app.sock"
    assert RS.field_value("fd.type", ctx(unix)) == "unix"
    assert RS.field_value("fd.sip", ctx(unix)) is None


def test_a_dup_names_both_ends_but_no_server() -> None:
    ends = v4("203.0.113.9") | v4("10.0.0.5") << 32
    dup = ev(T.DUP2, (3, 0, 0, 0, 0, 0), (ends, 0, word(4444, 40000, AF_INET)))
    c = ctx(dup)
    assert RS.field_value("fd.rip", c) == "203.0.113.9" and RS.field_value("fd.rport", c) == 4444
    assert RS.field_value("fd.lport", c) == 40000 and RS.field_value("fd.sip", c) is None
    assert RS.field_value("fd.name", c) == "10.0.0.5:40000->203.0.113.9:4444"
    assert RS.field_value("fd.num", c) == 0 and RS.field_value("evt.arg.newfd", c) == 0


def test_no_socket_facts_no_fields() -> None:
    bare = ev(T.LISTEN, (4, 128, 0, 0, 0, 0))
    assert sock_facts(bare) is None and RS.field_value("fd.type", ctx(bare)) is None
    assert RS.field_value("fd.num", ctx(bare)) == 4  # the call's own fd is always known


def test_documents() -> None:
    r = EcsRenderer(HOST)
    doc = r.event_doc(ACCEPTED, None)
    assert doc["event"]["category"] == ["network"] and doc["network"]["direction"] == "ingress"
    assert doc["source"] == {"ip": "203.0.113.9", "port": 51000, "address": "203.0.113.9"}
    assert doc["destination"] == {"port": 8443, "ip": "10.0.0.5", "address": "10.0.0.5"}
    assert doc["network"]["transport"] == "tcp" and doc["sentinel"]["event"]["family"] == "listening"
    listen = ev(T.LISTEN, (4, 128, 0, 0, 0, 0), (v4("0.0.0.0"), 0, word(31337, 31337, AF_INET)))
    ldoc = r.event_doc(listen, None)
    assert ldoc["server"] == {"ip": "0.0.0.0", "port": 31337, "address": "0.0.0.0"}
    assert ldoc["message"] == "listen 0.0.0.0:31337"
    dup = ev(T.DUP2, (3, 0, 0, 0, 0, 0), (v4("203.0.113.9"), 0, word(4444, 40000, AF_INET)))
    ddoc = r.event_doc(dup, None)
    assert ddoc["sentinel"]["event"]["socket"]["peer"] == {"address": "203.0.113.9", "port": 4444}
    assert ddoc["sentinel"]["event"]["newfd"] == 0 and "onto fd 0" in ddoc["message"]


def test_a_datagram_names_its_destination_like_a_connect() -> None:
    send = ev(T.SENDTO, (3, 48, 0, 0, 0, 0), (v4("198.51.100.53"), 0, word(53, 40123, AF_INET, 2)), ret=48)
    c = ctx(send)
    assert RS.field_value("fd.sip", c) == "198.51.100.53" and RS.field_value("fd.sport", c) == 53
    assert RS.field_value("fd.l4proto", c) == "udp" and RS.field_value("fd.num", c) == 3
    assert RS.field_value("fd.lport", c) == 40123 and RS.field_value("fd.cip", c) is None
    assert RS.field_value("evt.arg.tuple", c) == "0.0.0.0:40123->198.51.100.53:53"
    doc = EcsRenderer(HOST).event_doc(send, None)
    assert doc["destination"] == {"ip": "198.51.100.53", "port": 53, "address": "198.51.100.53"}
    assert doc["network"] == {"type": "ipv4", "transport": "udp", "direction": "egress"}
    assert doc["source"] == {"port": 40123} and doc["sentinel"]["event"]["family"] == "datagram"


def test_a_datagram_from_a_bound_socket_names_its_local_address() -> None:
    """The probe puts a bound IPv4 socket's address in the high half, as for accept: fd.name, fd.cip and
    fd.lip say it (Falco's client end), and the document's source.ip."""
    dest = v4("198.51.100.53") | v4("192.0.2.2") << 32
    send = ev(T.SENDTO, (3, 48, 0, 0, 0, 0), (dest, 0, word(53, 40123, AF_INET, 2)), ret=48)
    c = ctx(send)
    assert RS.field_value("fd.name", c) == "192.0.2.2:40123->198.51.100.53:53"
    assert RS.field_value("fd.cip", c) == "192.0.2.2" and RS.field_value("fd.lip", c) == "192.0.2.2"
    assert RS.field_value("fd.cport", c) == 40123
    assert RS.field_value("fd.sip", c) == "198.51.100.53" and RS.field_value("fd.rip", c) == "198.51.100.53"
    doc = EcsRenderer(HOST).event_doc(send, None)
    assert doc["source"] == {"port": 40123, "ip": "192.0.2.2", "address": "192.0.2.2"}
    assert doc["destination"]["ip"] == "198.51.100.53"


def test_resolvers_come_from_resolv_conf(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sentinel import sockets

    conf = tmp_path / "resolv.conf"
    conf.write_text("# x\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nsearch lan\nnameserver\n")
    monkeypatch.setattr(sockets, "_RESOLVERS", (0.0, frozenset()))
    assert sockets.host_resolvers(100.0, (str(conf), str(tmp_path / "missing"))) == {"10.0.0.2", "fe80::1"}
    conf.write_text("nameserver 10.9.9.9\n")
    assert sockets.host_resolvers(130.0, (str(conf),)) == {"10.0.0.2", "fe80::1"}  # read once a minute
    assert sockets.host_resolvers(161.0, (str(conf),)) == {"10.9.9.9"}
    monkeypatch.setattr(sockets, "_RESOLVERS", (1e18, frozenset({"10.0.0.2"})))  # fresh: not re-read
    to = ev(T.SENDMSG, (3, 0, 0, 0, 0, 0), (v4("10.0.0.2"), 0, word(53, 1000, AF_INET, 2)))
    other = ev(T.SENDMSG, (3, 0, 0, 0, 0, 0), (v4("198.51.100.53"), 0, word(53, 1000, AF_INET, 2)))
    assert RS.field_value("sentinel.dest.resolver", ctx(to)) is True
    assert RS.field_value("sentinel.dest.resolver", ctx(other)) is False
    assert RS.field_value("sentinel.dest.resolver", ctx(ev(T.SENDTO, (3, 0, 0, 0, 0, 0)))) is None


def state(connected: bool) -> int:
    """The socket state bits the probe adds (skc_state, known): established or closed."""
    return (TCP_ESTABLISHED if connected else TCP_CLOSE) << SOCK_STATE_SHIFT | SOCK_STATE_KNOWN


OUTBOUND = ruleset(
    "- macro: outbound\n  condition: >\n    (((evt.type = connect and evt.dir=<) or\n"
    "      (evt.type in (sendto,sendmsg) and evt.dir=< and\n"
    "       fd.l4proto != tcp and fd.connected=false and fd.name_changed=true)) and\n"
    "     (fd.typechar = 4 or fd.typechar = 6) and\n"
    '     (fd.ip != "0.0.0.0" and fd.net != "127.0.0.0/8") and\n'
    "     (evt.rawres >= 0 or evt.res = EINPROGRESS))\n"
    "- rule: out\n  desc: d\n  condition: outbound\n  output: o %fd.name\n  priority: notice\n"
)


def test_a_datagram_says_whether_its_socket_was_connected_and_the_destination_new() -> None:
    dest = v4("198.51.100.53")
    free = ev(T.SENDTO, (3, 48, 0, 0, 0, 0), (dest, 0, word(53, 40123, AF_INET, 2) | state(False)), ret=48)
    c = ctx(free)
    assert RS.field_value("fd.connected", c) is False and RS.field_value("fd.name_changed", c) is True
    assert RS.field_value("fd.ip", c) == "198.51.100.53" and RS.field_value("fd.port", c) == 53
    assert str(RS.field_value("fd.net", c)) == "198.51.100.53"
    assert [r.name for r in OUTBOUND.match(c)] == ["out"]
    doc = EcsRenderer(HOST).event_doc(free, None)
    assert doc["sentinel"]["event"]["connected"] is False
    tied = ev(T.SENDMSG, (3, 0, 0, 0, 0, 0), (dest, 0, word(53, 40123, AF_INET, 2) | state(True)), ret=48)
    assert RS.field_value("fd.connected", ctx(tied)) is True and OUTBOUND.match(ctx(tied)) == []
    failed = ev(T.SENDTO, (3, 48, 0, 0, 0, 0), (dest, 0, word(53, 0, AF_INET, 2) | state(False)), ret=-101)
    assert RS.field_value("fd.name_changed", ctx(failed)) is False and OUTBOUND.match(ctx(failed)) == []
    tcp = ev(T.SENDTO, (3, 48, 0, 0, 0, 0), (dest, 0, word(53, 40123, AF_INET, 1) | state(False)), ret=48)
    assert OUTBOUND.match(ctx(tcp)) == []
    unread = ev(T.SENDTO, (3, 48, 0, 0, 0, 0), (dest, 0, word(53, 40123, AF_INET, 2)), ret=48)
    assert RS.field_value("fd.connected", ctx(unread)) is None  # no socket offsets: missing, never guessed
    assert OUTBOUND.match(ctx(unread)) == [] and "connected" not in EcsRenderer(HOST).event_doc(
        unread, None
    )["sentinel"]["event"]
    assert RS.field_value("fd.name_changed", ctx(ACCEPTED)) is None


def test_connected_on_the_other_socket_calls() -> None:
    assert RS.field_value("fd.connected", ctx(ACCEPTED)) is True  # an accepted fd is connected
    assert EcsRenderer(HOST).event_doc(ACCEPTED, None)["sentinel"]["event"]["connected"] is True
    listen = ev(T.LISTEN, (4, 128, 0, 0, 0, 0), (0, 0, word(80, 80, AF_INET) | state(False)))
    assert RS.field_value("fd.connected", ctx(listen)) is False
    dup = ev(T.DUP2, (3, 0, 0, 0, 0, 0), (v4("203.0.113.9"), 0, word(4444, 40000, AF_INET) | state(True)))
    assert RS.field_value("fd.connected", ctx(dup)) is True
    for ret, family, want in ((0, AF_INET, True), (-115, AF_INET, False), (-111, AF_INET, False),
                              (-106, AF_INET, True), (0, 0, False)):  # fmt: skip
        conn = Event(T.CONNECT, 5, 300, 300, 0, 0, "x", ret=ret, fd=3, family=family, address="192.0.2.1")
        assert RS.field_value("fd.connected", ctx(conn)) is want, (ret, family)


def test_a_fixture_says_whether_the_socket_was_connected() -> None:
    from sentinel.rules.fixture_context import from_ecs

    def fixture(**detail: object) -> dict[str, object]:
        return {
            "event": {"action": "sendto", "outcome": "success"},
            "network": {"type": "ipv4", "transport": "udp"},
            "destination": {"ip": "198.51.100.53", "port": 53},
            "sentinel": {"event": {"type": "sendto", "ret": 48, "rawarg": {"fd": 3}, **detail}},
        }

    for want in (True, False):
        back = from_ecs(fixture(connected=want))
        assert RS.field_value("fd.connected", back) is want
        assert RS.field_value("fd.name_changed", back) is True
    assert RS.field_value("fd.connected", from_ecs(fixture())) is None


def test_a_failed_accept_or_dup_is_fd_num_minus_one() -> None:
    failed_accept = ev(T.ACCEPT4, (3, 0, 0, 0, 0, 0), ret=-11)
    assert RS.field_value("fd.num", ctx(failed_accept)) == -1
    assert RS.field_value("evt.rawres", ctx(failed_accept)) == -11
    failed_dup = ev(T.DUP2, (3, 99999, 0, 0, 0, 0), ret=-9)
    assert RS.field_value("fd.num", ctx(failed_dup)) == -1
    assert RS.field_value("fd.num", ctx(ev(T.DUP, (3, 0, 0, 0, 0, 0), ret=0))) == 0


def test_sendmmsg_is_a_datagram_under_falcos_name() -> None:
    extra = (v4("198.51.100.53"), 0, word(53, 40123, AF_INET, 2) | state(False))
    send = ev(T.SENDMMSG, (3, 0, 0, 0, 0, 0), extra, ret=2)
    c = ctx(send)
    assert RS.field_value("evt.type", c) == "sendmmsg" and RS.field_value("fd.sip", c) == "198.51.100.53"
    assert RS.field_value("fd.connected", c) is False and RS.field_value("fd.name_changed", c) is True
    rs = ruleset("- rule: m\n  desc: d\n  condition: evt.type = sendmmsg and fd.sport = 53\n  output: o\n"
                 "  priority: debug\n")  # fmt: skip
    assert [r.name for r in rs.match(c)] == ["m"]
    doc = EcsRenderer(HOST).event_doc(send, None)
    assert doc["event"]["action"] == "sendmmsg" and doc["destination"]["port"] == 53
