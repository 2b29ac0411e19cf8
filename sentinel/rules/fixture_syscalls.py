"""Rule fixtures' security syscalls, file changes and sockets: the raw arguments and kernel facts the probe
would have sent, rebuilt from a document's ``sentinel.event`` (rawarg, arg, setns, userns, fd_path, socket)
and its ``network``/``server``/``source``/``destination`` blocks."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sentinel.events import (
    AF_INET,
    AF_INET6,
    AF_UNIX,
    AT_FDCWD,
    Event,
    EventType,
)
from sentinel.file_changes import FilePaths, file_paths
from sentinel.process.table import Process, normalize_path
from sentinel.rules.fixture_values import TRANSPORTS, FixtureError
from sentinel.rules.fixture_values import as_int as _int
from sentinel.rules.fixture_values import as_map as _map
from sentinel.rules.fixture_values import as_str as _str
from sentinel.sockets import (
    ACCEPTS,
    DATAGRAMS,
    LOCAL_END,
    SOCK_KNOWN,
    SOCK_STATE_KNOWN,
    SOCK_STATE_SHIFT,
    TCP_CLOSE,
    TCP_ESTABLISHED,
)
from sentinel.syscalls import (
    NS_KINDS,
    SYSCALLS,
    USERNS_KNOWN,
    UTIME_NOW,
    UTIME_OMIT,
    init_ns_mask,
)


def syscall_args(ev: Event, etype: EventType, detail: Mapping[str, Any]) -> None:
    """A security syscall's arguments from ``sentinel.event.rawarg`` (as the live documents carry them; a
    string argument may be given under ``sentinel.event.arg`` alone)."""
    raw = _map(detail.get("rawarg"), "sentinel.event.rawarg")
    shown = _map(detail.get("arg"), "sentinel.event.arg")
    args, extra, strs = [0] * 6, [0] * 3, ["", "", ""]
    used_strs = 0
    for arg in SYSCALLS[etype].args:
        where, i = arg.source[0], int(arg.source[1])
        value = raw.get(arg.name, shown.get(arg.name) if arg.kind in ("str", "path") else None)
        what = f"sentinel.event.rawarg.{arg.name}"
        if arg.kind == "time":  # utimensat: tv_sec in rawarg, or the time as shown (ISO, UTIME_NOW/OMIT)
            sec, nsec = _utime(value, shown.get(arg.name), what)
            if sec is not None:
                extra[i] = sec & 0xFFFFFFFFFFFFFFFF
                extra[2] |= nsec << (32 * i)
                args[2] = args[2] or 1  # a times pointer
            continue
        if where == "s":
            strs[i] = _str(value, what)
            used_strs = max(used_strs, i + 1)
        elif value is not None:
            (args if where == "a" else extra)[i] = _int(value, what, 0) & 0xFFFFFFFFFFFFFFFF
    setns = _map(detail.get("setns"), "sentinel.event.setns")
    if setns:  # what the kernel resolved the fd to (without either, a namespace inode of 1 stands in)
        extra[1] = _int(setns.get("pid"), "sentinel.event.setns.pid", 0)
        extra[0] = _int(setns.get("ns_inode"), "sentinel.event.setns.ns_inode", 0 if extra[1] else 1)
        kinds = setns.get("init_ns") or []
        if not isinstance(kinds, list) or not all(isinstance(k, str) and k in NS_KINDS for k in kinds):
            raise FixtureError(f"sentinel.event.setns.init_ns must be a list of {', '.join(NS_KINDS)}")
        extra[1] |= init_ns_mask(kinds) << 32
    userns = _map(detail.get("userns"), "sentinel.event.userns")
    if userns:
        level = _int(userns.get("level"), "sentinel.event.userns.level", 0)
        extra[2] = _int(userns.get("inode"), "sentinel.event.userns.inode", 1) | level << 32 | USERNS_KNOWN
    ev.sys_args, ev.sys_extra, ev.sys_strs = tuple(args), tuple(extra), tuple(strs[:used_strs])


_NET_FAMILIES = {"ipv4": AF_INET, "ipv6": AF_INET6, "unix": AF_UNIX}


def socket_end(ev: Event, doc: Mapping[str, Any], detail: Mapping[str, Any]) -> None:
    """The socket of a bind, listen, accept or dup fixture, as the probe packs it: ``network.type`` and
    ``.transport``; ``server`` (bind, listen), ``source``/``destination`` (accept: client, local end) or
    ``sentinel.event.socket.peer``/``.local`` (dup); ``sentinel.event.connected`` the socket's state."""
    net = _map(doc.get("network"), "network")
    family = _NET_FAMILIES.get(_str(net.get("type"), "network.type"), 0)
    if not family:
        return
    sock_type = TRANSPORTS.get(_str(net.get("transport"), "network.transport"), 0)
    if ev.type in LOCAL_END:
        end = _map(doc.get("server"), "server")
        local = end
    elif ev.type in ACCEPTS:
        end, local = _map(doc.get("source"), "source"), _map(doc.get("destination"), "destination")
    elif ev.type in DATAGRAMS:
        end, local = _map(doc.get("destination"), "destination"), _map(doc.get("source"), "source")
    else:
        sock = _map(detail.get("socket"), "sentinel.event.socket")
        end, local = _map(sock.get("peer"), "socket.peer"), _map(sock.get("local"), "socket.local")
    port = _int(end.get("port"), "port", 0) & 0xFFFF
    local_port = _int(local.get("port"), "port", 0) & 0xFFFF
    lo = hi = 0
    address = _str(end.get("ip") or end.get("address"), "address")
    try:
        if family == AF_INET and address:
            lo = int.from_bytes(socket.inet_pton(socket.AF_INET, address), "little")
            local_ip = _str(local.get("ip"), "local ip")
            if local_ip and ev.type not in LOCAL_END:
                lo |= int.from_bytes(socket.inet_pton(socket.AF_INET, local_ip), "little") << 32
        elif family == AF_INET6 and address:
            raw = socket.inet_pton(socket.AF_INET6, address)
            lo, hi = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")
    except OSError:
        raise FixtureError(f"not an IP address: {address!r}") from None
    word = port | local_port << 16 | family << 32 | sock_type << 48 | SOCK_KNOWN
    is_connected = detail.get("connected")
    if is_connected is not None:  # the state the probe would have read: established or closed
        if not isinstance(is_connected, bool):
            raise FixtureError("sentinel.event.connected: true or false")
        state = TCP_ESTABLISHED if is_connected else TCP_CLOSE
        word |= state << SOCK_STATE_SHIFT | SOCK_STATE_KNOWN
    ev.sys_extra = (lo, hi, word)
    if family == AF_UNIX and address:
        ev.sys_strs = (address,)


def _utime(raw: Any, shown: Any, what: str) -> tuple[int | None, int]:
    """(tv_sec, tv_nsec) of a fixture's utimensat time; (None, 0) when none is given."""
    if shown in ("UTIME_NOW", "UTIME_OMIT"):
        return _int(raw, what, 0), UTIME_NOW if shown == "UTIME_NOW" else UTIME_OMIT
    if raw is not None:
        return _int(raw, what, 0), 0
    if shown is None:
        return None, 0
    try:
        when = datetime.fromisoformat(str(shown).replace("Z", "+00:00"))
    except ValueError:
        raise FixtureError(f"{what}: a time like 2020-01-01T00:00:00Z, UTIME_NOW or UTIME_OMIT") from None
    return int(when.timestamp()), when.microsecond * 1000


def fixture_file_paths(ev: Event, proc: Process, detail: Mapping[str, Any]) -> FilePaths:
    """A fixture's file-change paths: relative ones against the process's working directory, an fd's path
    from ``sentinel.event.fd_path``."""
    fd_path = _str(detail.get("fd_path"), "sentinel.event.fd_path") or None

    def resolve(dirfd: int, path: str) -> str:
        if path.startswith("/"):
            return normalize_path(path)
        if not path:
            return fd_path or ""
        return normalize_path(f"{proc.cwd}/{path}") if dirfd == AT_FDCWD and proc.cwd else path

    return file_paths(ev, resolve)
