"""Bytes from the perf buffer → :class:`~sentinel.events.Event`.

Mirrors ``bpf_probes/sentinel_events.h``. Decoding is pure (no kernel, no /proc) so it is unit-tested on built
byte strings, and it never raises on hostile content: lengths are clamped to what was received and strings
are decoded with ``surrogateescape`` so any byte sequence survives.
"""

from __future__ import annotations

import socket
import struct

from sentinel.events import AF_INET, AF_INET6, AF_UNIX, Event, EventType

HEADER = struct.Struct("<QQIIIIHHI16s")
EXEC_FIXED = struct.Struct(
    "<qiIIIII"
)  # ret, dirfd, at_flags, argc_captured, argc_total, filename_len, args_len
OPEN_FIXED = struct.Struct("<qIIiI")  # ret, flags, mode, dirfd, path_len
OPEN_KEY = struct.Struct("<IIiiQ")  # the dedup key prefix before the path
CONNECT_FIXED = struct.Struct("<qiHHII16s108s")
FORK_FIXED = struct.Struct("<IIQ")

HEADER_SIZE = HEADER.size
EXEC_DATA_OFFSET = HEADER_SIZE + EXEC_FIXED.size
OPEN_PATH_OFFSET = HEADER_SIZE + OPEN_FIXED.size + OPEN_KEY.size


class DecodeError(ValueError):
    """A sample that does not match the wire layout (a probe/agent version mismatch, never user input)."""


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _cstr(raw: bytes) -> str:
    """Bytes up to the first NUL."""
    end = raw.find(b"\0")
    return _text(raw if end < 0 else raw[:end])


def decode(data: bytes) -> Event:
    """Decode one perf-buffer sample."""
    if len(data) < HEADER_SIZE:
        raise DecodeError(f"sample of {len(data)} bytes is shorter than the {HEADER_SIZE}-byte header")
    ts, cgroup, pid, tid, uid, gid, etype, flags, aux, comm = HEADER.unpack_from(data, 0)
    try:
        kind = EventType(etype)
    except ValueError:
        raise DecodeError(f"unknown event type {etype}") from None
    ev = Event(kind, ts, pid, tid, uid, gid, _cstr(comm), cgroup, flags)
    if kind is EventType.OPEN or kind is EventType.CHDIR:
        _decode_open(data, ev, aux)
    elif kind is EventType.EXEC:
        _decode_exec(data, ev)
    elif kind is EventType.CONNECT:
        _decode_connect(data, ev)
    elif kind is EventType.FORK:
        if len(data) < HEADER_SIZE + FORK_FIXED.size:
            raise DecodeError("short fork sample")
        ev.child_pid, _parent_tid, ev.clone_flags = FORK_FIXED.unpack_from(data, HEADER_SIZE)
    return ev


def _decode_open(data: bytes, ev: Event, aux: int) -> None:
    if len(data) < OPEN_PATH_OFFSET:
        raise DecodeError("short open sample")
    ev.ret, ev.open_flags, ev.mode, ev.dirfd, path_len = OPEN_FIXED.unpack_from(data, HEADER_SIZE)
    end = min(OPEN_PATH_OFFSET + path_len, len(data))
    ev.path = _cstr(data[OPEN_PATH_OFFSET:end])
    ev.repeat_count = aux
    if ev.type is EventType.CHDIR and not ev.path:
        ev.fd = ev.dirfd  # fchdir(fd)


def _decode_exec(data: bytes, ev: Event) -> None:
    if len(data) < EXEC_DATA_OFFSET:
        raise DecodeError("short exec sample")
    ev.ret, ev.dirfd, ev.open_flags, argc, argc_total, flen, alen = EXEC_FIXED.unpack_from(data, HEADER_SIZE)
    payload = data[EXEC_DATA_OFFSET : EXEC_DATA_OFFSET + flen + alen]
    ev.filename = _cstr(payload[:flen])
    args = payload[flen:].split(b"\0")
    if args and args[-1] == b"":
        args.pop()
    # The probe counted the arguments it copied; trust the bytes but never exceed that count.
    ev.argv = [_text(a) for a in args[:argc]]
    ev.argc_total = max(argc_total, len(ev.argv))


def _decode_connect(data: bytes, ev: Event) -> None:
    if len(data) < HEADER_SIZE + CONNECT_FIXED.size:
        raise DecodeError("short connect sample")
    ret, fd, family, port, sock_type, addrlen, addr, unix_path = CONNECT_FIXED.unpack_from(data, HEADER_SIZE)
    ev.ret, ev.fd, ev.family, ev.port, ev.sock_type = ret, fd, family, port, sock_type
    if family == AF_INET:
        ev.address = socket.inet_ntop(socket.AF_INET, addr[:4])
    elif family == AF_INET6:
        ev.address = socket.inet_ntop(socket.AF_INET6, addr)
    elif family == AF_UNIX:
        ev.address = unix_socket_path(unix_path[: max(0, min(addrlen - 2, len(unix_path)))])


def unix_socket_path(raw: bytes) -> str:
    """Filesystem paths end at the first NUL; abstract names start with NUL and are shown as ``@name``."""
    if raw[:1] == b"\0":
        return "@" + _text(raw[1:].rstrip(b"\0"))
    return _cstr(raw)
