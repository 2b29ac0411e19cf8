"""The listening side of the network, datagrams and fd plumbing (bind, listen, accept, accept4, sendto,
sendmsg and sendmmsg with a destination, dup, dup2, dup3): the socket behind the call's fd as the probe read
it.

The probe packs one socket end into ``sys_extra`` (see ``sys_event`` in bpf_probes/sentinel_events.h): bind
and listen carry the local end, accept the accepted connection's peer (with the local port, and the local
IPv4 address), dup* the peer of the socket the new fd names, a datagram its destination (the first per
process, socket and destination: the probe de-duplicates, so a new destination is always an event). A
failed bind carries the address asked for; a call on an fd that is not a socket, or a kernel without the
socket offsets, carries none. With the socket offsets the probe also reads the socket's state (``skc_state``):
whether it had a connected peer (Falco's ``fd.connected``).
"""

from __future__ import annotations

import socket
import time
from typing import NamedTuple

from sentinel.events import AF_INET, AF_INET6, AF_UNIX, Event, EventType

T = EventType
DATAGRAMS = frozenset((T.SENDTO, T.SENDMSG, T.SENDMMSG))  # the end carried is the destination, as for connect
SOCKET_TYPES = frozenset((T.BIND, T.LISTEN, T.ACCEPT, T.ACCEPT4, T.DUP, T.DUP2, T.DUP3, *DATAGRAMS))
LOCAL_END = frozenset((T.BIND, T.LISTEN))  # the address carried is the local one
ACCEPTS = frozenset((T.ACCEPT, T.ACCEPT4))
DUPS = frozenset((T.DUP, T.DUP2, T.DUP3))
SOCK_KNOWN = 1 << 63
SOCK_STATE_KNOWN = 1 << 62  # bits 56..61 hold the socket's skc_state
SOCK_STATE_SHIFT = 56
SOCK_STREAM, SOCK_DGRAM = 1, 2
TCP_ESTABLISHED, TCP_CLOSE = 1, 7  # skc_state values; a UDP socket after connect() is TCP_ESTABLISHED too
AF_UNSPEC = 0
EISCONN = 106


class SockFacts(NamedTuple):
    """One socket as the probe saw it: ``address``/``port`` of the end the event carries (the local end for
    bind and listen, else the peer), the local port, and the local IPv4 address where known."""

    family: int
    sock_type: int
    address: str | None
    port: int
    local_port: int
    local_address: str | None
    connected: bool | None = None  # the socket had a connected peer (state TCP_ESTABLISHED); None: not read

    @property
    def transport(self) -> str | None:
        return {SOCK_STREAM: "tcp", SOCK_DGRAM: "udp"}.get(self.sock_type) if self.family != AF_UNIX else None


def sock_facts(ev: Event) -> SockFacts | None:
    """The socket facts of a bind, listen, accept or dup event; None when the probe had none."""
    if ev.type not in SOCKET_TYPES or len(ev.sys_extra) < 3:
        return None
    word = ev.sys_extra[2]
    if not word & SOCK_KNOWN:
        return None
    family = (word >> 32) & 0xFFFF
    sock_type = (word >> 48) & 0xFF
    port, local_port = word & 0xFFFF, (word >> 16) & 0xFFFF
    address = local_address = None
    lo, hi = ev.sys_extra[0], ev.sys_extra[1]
    if family == AF_INET:
        address = socket.inet_ntop(socket.AF_INET, (lo & 0xFFFFFFFF).to_bytes(4, "little"))
        if ev.type in LOCAL_END:
            local_address = address
        elif lo >> 32:
            local_address = socket.inet_ntop(socket.AF_INET, (lo >> 32).to_bytes(4, "little"))
    elif family == AF_INET6:
        address = socket.inet_ntop(socket.AF_INET6, lo.to_bytes(8, "little") + hi.to_bytes(8, "little"))
        if ev.type in LOCAL_END:
            local_address = address
    elif family == AF_UNIX:
        address = (ev.sys_strs[0] if ev.sys_strs else "") or None
    connected = ((word >> SOCK_STATE_SHIFT) & 0x3F) == TCP_ESTABLISHED if word & SOCK_STATE_KNOWN else None
    return SockFacts(family, sock_type, address, port, local_port, local_address, connected)


def connect_source(ev: Event) -> tuple[str, int] | None:
    """A connect's local address and port (ECS ``source.*``), as the kernel's socket had them when the call
    returned (success or EINPROGRESS; the probe reads them through BTF offsets, in a bind's encoding); None
    when the probe could not read them."""
    if ev.type is not EventType.CONNECT or len(ev.sys_extra) < 3:
        return None
    lo, hi, word = ev.sys_extra[0], ev.sys_extra[1], ev.sys_extra[2]
    if not word & SOCK_KNOWN:
        return None
    family, port = (word >> 32) & 0xFFFF, (word >> 16) & 0xFFFF
    if family == AF_INET:
        return socket.inet_ntop(socket.AF_INET, (lo & 0xFFFFFFFF).to_bytes(4, "little")), port
    if family == AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, lo.to_bytes(8, "little") + hi.to_bytes(8, "little")), port
    return None


def connected(ev: Event) -> bool | None:
    """Falco's ``fd.connected`` where the event shows it: a connect that succeeded (or found the socket
    already connected, EISCONN) is true, any other connect false (EINPROGRESS: not yet; a connect to
    AF_UNSPEC dissolves a datagram socket's peer); an accept that returned an fd is true; bind, listen, dup
    and datagrams say what the socket's state was read from the kernel at the call's exit (TCP_ESTABLISHED:
    a TCP connection, or a UDP socket after connect()); None without the socket offsets."""
    etype = ev.type
    if etype == T.CONNECT:
        return (ev.ret == 0 and ev.family != AF_UNSPEC) or ev.ret == -EISCONN
    if etype in ACCEPTS and ev.ret >= 0:
        return True
    facts = sock_facts(ev)
    return facts.connected if facts is not None else None


def name_changed(ev: Event) -> bool | None:
    """Falco's ``fd.name_changed`` for a datagram: the probe reports a send with a destination only when its
    (process, socket, destination) is new to its LRU, so a reported send that went through changed the
    destination the socket last sent to (true); a failed send changed nothing (false). None for other
    events."""
    if ev.type in DATAGRAMS:
        return ev.ret >= 0
    return None


def endpoint(address: str | None, port: int, family: int) -> str:
    """``IP:PORT`` as Falco writes it (IPv6 unbracketed: ``::1:8080``), the unspecified address when unknown;
    a unix socket's path as is."""
    if family == AF_UNIX:
        return address or ""
    return f"{address or ('::' if family == AF_INET6 else '0.0.0.0')}:{port}"


def sock_name(ev: Event) -> str | None:
    """Falco's ``fd.name`` for the socket: ``IP:PORT`` for a bound or listening one, ``CIP:CPORT->SIP:SPORT``
    for an accepted one (client first), ``LOCAL->REMOTE`` for a duplicated connected one."""
    facts = sock_facts(ev)
    if facts is None:
        return None
    if facts.family == AF_UNIX:
        return facts.address
    if ev.type in LOCAL_END:
        return endpoint(facts.address, facts.port, facts.family)
    local = endpoint(facts.local_address, facts.local_port, facts.family)
    peer = endpoint(facts.address, facts.port, facts.family)
    return f"{peer}->{local}" if ev.type in ACCEPTS else f"{local}->{peer}"


_RESOLVERS: tuple[float, frozenset[str]] = (0.0, frozenset())
RESOLVER_FILES = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")


def host_resolvers(now: float | None = None, files: tuple[str, ...] = RESOLVER_FILES) -> frozenset[str]:
    """The DNS servers this host is configured to use (``nameserver`` lines of resolv.conf, and of
    systemd-resolved's upstream list), re-read at most once a minute; loopback stubs included."""
    global _RESOLVERS
    now = time.monotonic() if now is None else now
    if now - _RESOLVERS[0] < 60.0 and _RESOLVERS[0]:
        return _RESOLVERS[1]
    found: set[str] = set()
    for name in files:
        try:
            with open(name, encoding="utf-8", errors="replace") as fh:
                lines = fh.read(65536).splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                found.add(parts[1].split("%", 1)[0])
    _RESOLVERS = (now, frozenset(found))
    return _RESOLVERS[1]
