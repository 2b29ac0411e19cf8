"""ECS documents of the listening side and of sockets moved between fds (``sentinel.sockets``).

bind and listen name the local end as ``server.ip``/``server.port`` (``server.address`` a unix socket's
path); accept is an inbound connection: ``source`` the client, ``destination`` the local end,
``network.direction: ingress``; a dup of a socket names both ends under ``sentinel.event.socket`` (which is
the server is not known from the fd alone) and the fd it now sits on, ``sentinel.event.newfd`` (0, 1 or 2: a
shell's stdin/stdout on a socket). A datagram names its ``destination`` (the first per process, socket and
destination), ``network.direction: egress``. Whether the socket had a connected peer (Falco's
``fd.connected``: read from the kernel's socket state, or an accept that returned an fd) is
``sentinel.event.connected``, absent when not known.
"""

from __future__ import annotations

from typing import Any

from sentinel.alerts.ecs_security import argument_blocks
from sentinel.events import AF_INET6, AF_UNIX, Event
from sentinel.sockets import ACCEPTS, DATAGRAMS, DUPS, LOCAL_END, connected, sock_facts, sock_name
from sentinel.syscalls import SYSCALLS


def socket_doc(doc: dict[str, Any], event: dict[str, Any], detail: dict[str, Any], ev: Event) -> None:
    """Fill ``doc`` (already holding the common blocks) for bind, listen, accept or a dup."""
    etype = ev.type
    spec = SYSCALLS[etype]
    _raw, shown = argument_blocks(detail, ev)
    facts = sock_facts(ev)
    network: dict[str, Any] = {}
    if facts is not None:
        network["type"] = {AF_INET6: "ipv6", AF_UNIX: "unix"}.get(facts.family, "ipv4")
        if facts.transport:
            network["transport"] = facts.transport
    name = sock_name(ev) or ""
    if etype in LOCAL_END:
        event.update(category=["network"], type=["start"], action=spec.name)
        if facts is not None:
            if facts.family == AF_UNIX:
                doc["server"] = {"address": facts.address} if facts.address else {}
            else:
                doc["server"] = {"ip": facts.address, "port": facts.port, "address": facts.address}
    elif etype in ACCEPTS:
        event.update(category=["network"], type=["connection", "start"], action=spec.name)
        network["direction"] = "ingress"
        if facts is not None and facts.family != AF_UNIX:
            doc["source"] = {"ip": facts.address, "port": facts.port, "address": facts.address}
            local = {"port": facts.local_port}
            if facts.local_address:
                local.update(ip=facts.local_address, address=facts.local_address)
            doc["destination"] = local
        detail["fd"] = ev.ret
    elif etype in DATAGRAMS:
        event.update(category=["network"], type=["connection", "start"], action=spec.name)
        network["direction"] = "egress"
        if facts is not None:
            doc["destination"] = {"ip": facts.address, "port": facts.port, "address": facts.address}
            if facts.local_port:
                doc["source"] = {"port": facts.local_port}
                if facts.local_address:  # a bound IPv4 socket's (unbound: the kernel picks per packet)
                    doc["source"].update(ip=facts.local_address, address=facts.local_address)
    elif etype in DUPS:
        event.update(category=["process"], type=["change"], action=spec.name)
        detail["newfd"] = ev.ret
        if facts is not None:
            sock: dict[str, Any] = {"peer": {"address": facts.address, "port": facts.port}}
            sock["local"] = {"address": facts.local_address, "port": facts.local_port}
            detail["socket"] = sock
    is_connected = connected(ev)
    if is_connected is not None:
        detail["connected"] = is_connected
    if network:
        doc["network"] = network
    if etype in DUPS and ev.ret >= 0:
        doc["message"] = f"{spec.name} socket {name} onto fd {ev.ret}"
    else:
        words = " ".join(f"{k}={v}" for k, v in shown.items())
        doc["message"] = f"{spec.name} {name or words}".rstrip()
    if ev.ret < 0:
        doc["message"] += f" failed: {doc.get('error', {}).get('code', ev.ret)}"
