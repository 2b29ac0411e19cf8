"""Bytes from the perf buffer → :class:`~sentinel.events.Event`.

Mirrors ``bpf_probes/sentinel_events.h``. Decoding is pure (no kernel, no /proc) so it is unit-tested on built
byte strings, and it never raises on hostile content: lengths are clamped to what was received and strings
are decoded with ``surrogateescape`` so any byte sequence survives.
"""

from __future__ import annotations

import os
import socket
import struct

from sentinel.events import (
    AF_INET,
    AF_INET6,
    AF_UNIX,
    FLAG_CHILD_START,
    FLAG_CREDS,
    FLAG_EXE_INFO,
    FLAG_LOGIN,
    FLAG_NS_VIEW,
    FLAG_START,
    FLAG_TTY,
    KERNEL_TYPES,
    Credentials,
    Event,
    EventType,
    NsView,
)

SYSCALL_FIRST = EventType.SETUID  # wire types from here on are security syscalls (struct sys_event)

# ts_ns, cgroup_id, start_ns, pid, tid, uid, gid, type, flags, aux, comm, then struct creds: euid, suid,
# fsuid, egid, sgid, fsgid, loginuid, sessionid, cap_effective, cap_permitted
HEADER = struct.Struct("<QQQIIIIHHI16sIIIIIIIIQQ")
_BASE = struct.Struct("<QQQIIIIHHI16s")  # the header without the credentials, unpacked on every event
_CREDS = struct.Struct("<IIIIIIIIQQ")  # ... and those, only when the probe could read them
# ret, dirfd, at_flags, argc_captured, argc_total, filename_len, args_len, tty, exe_nlink, exe_ino, exe_dev,
# exe_name_len, ns (vpid, vtid, pid_ns, mnt_ns), exe_name
EXEC_FIXED = struct.Struct("<qiIIIIIIIQII4I256s")
OPEN_FIXED = struct.Struct("<qIIiI")  # ret, flags, mode, dirfd, path_len
OPEN_KEY = struct.Struct("<IIiIQQQQQQ")  # the dedup key before the path (identities of directory and file)
CONNECT_FIXED = struct.Struct("<qiHHII16s108s")
# The connect's local end (u64[3], a bind's sys_extra encoding), after unix_path aligned to 8 bytes.
CONNECT_LOCAL = struct.Struct("<3Q")
CONNECT_LOCAL_OFFSET = (CONNECT_FIXED.size + 7) // 8 * 8
# child_pid, parent_tid, clone_flags, child_start_ns, child_ns (vpid, vtid, pid_ns, mnt_ns)
FORK_FIXED = struct.Struct("<IIQQ4I")
SYS_FIXED = struct.Struct("<q6Q3Q3HH")  # ret, arg[6], extra[3], str_len[3], nstr
TAMPER_FIXED = struct.Struct("<IiII")  # what, sig (or ptrace request), target_tid, pad
SYS_STR_LEN = 4096
SYS_STRS = 3

HEADER_SIZE = HEADER.size
EXEC_DATA_OFFSET = HEADER_SIZE + EXEC_FIXED.size
OPEN_PATH_OFFSET = HEADER_SIZE + OPEN_FIXED.size + OPEN_KEY.size
SYS_STR_OFFSET = HEADER_SIZE + SYS_FIXED.size
_CREDS_OFFSET = _BASE.size


def kernel_dev_to_user(dev: int) -> int:
    """A kernel-internal dev_t (major << 20 | minor) in the form stat(2) gives (os.major/os.minor work)."""
    return os.makedev(dev >> 20, dev & 0xFFFFF)


def kernel_dev_to_tty_nr(dev: int) -> int:
    """A kernel dev_t as ``/proc/PID/stat`` prints a tty (new_encode_dev)."""
    major, minor = dev >> 20, dev & 0xFFFFF
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


class DecodeError(ValueError):
    """A sample that does not match the wire layout (a probe/agent version mismatch, never user input)."""


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _cstr(raw: bytes) -> str:
    """Bytes up to the first NUL."""
    end = raw.find(b"\0")
    return _text(raw if end < 0 else raw[:end])


_TYPES: dict[int, EventType] = {int(t): t for t in KERNEL_TYPES}
# Few distinct commands and credential sets make most of a host's events: their decoded forms are shared
# (both immutable). Bounded: emptied when full, so hostile variety costs a re-decode, never memory.
_CACHE_MAX = 4096
_comms: dict[bytes, str] = {}
_creds: dict[bytes, Credentials] = {}


def decode(data: bytes) -> Event:
    """Decode one perf-buffer sample."""
    if len(data) < HEADER_SIZE:
        raise DecodeError(f"sample of {len(data)} bytes is shorter than the {HEADER_SIZE}-byte header")
    ts, cgroup, start, pid, tid, uid, gid, etype, flags, aux, raw_comm = _BASE.unpack_from(data, 0)
    kind = _TYPES.get(etype)
    if kind is None:
        raise DecodeError(f"unknown event type {etype}")
    comm = _comms.get(raw_comm)
    if comm is None:
        if len(_comms) >= _CACHE_MAX:
            _comms.clear()
        comm = _comms[raw_comm] = _cstr(raw_comm)
    ev = Event(kind, ts, pid, tid, uid, gid, comm, cgroup, flags)
    if flags & FLAG_START:
        ev.start_ns = start
    if flags & FLAG_CREDS:
        key = data[_CREDS_OFFSET:HEADER_SIZE] + (b"L" if flags & FLAG_LOGIN else b"")
        creds = _creds.get(key)
        if creds is None:
            if len(_creds) >= _CACHE_MAX:
                _creds.clear()
            creds = _creds[key] = _credentials(_CREDS.unpack_from(data, _CREDS_OFFSET), flags)
        ev.creds = creds
    if kind is EventType.OPEN or kind is EventType.CHDIR:
        _decode_open(data, ev, aux)
    elif kind is EventType.EXEC:
        _decode_exec(data, ev)
    elif kind is EventType.CONNECT:
        _decode_connect(data, ev)
    elif kind >= SYSCALL_FIRST:
        _decode_sys(data, ev)
    elif kind is EventType.TAMPER:
        if len(data) < HEADER_SIZE + TAMPER_FIXED.size:
            raise DecodeError("short tamper sample")
        what, sig, target, _ = TAMPER_FIXED.unpack_from(data, HEADER_SIZE)
        ev.sys_args = (what, sig, target)
    elif kind is EventType.FORK:
        if len(data) < HEADER_SIZE + FORK_FIXED.size:
            raise DecodeError("short fork sample")
        (ev.child_pid, _parent_tid, ev.clone_flags, child_start, vpid, vtid, pid_ns,
         mnt_ns) = FORK_FIXED.unpack_from(data, HEADER_SIZE)  # fmt: skip
        if flags & FLAG_CHILD_START:
            ev.child_start_ns = child_start
        if flags & FLAG_NS_VIEW:
            ev.child_ns = NsView(vpid, vtid, pid_ns, mnt_ns)
    return ev


def _credentials(raw: tuple[int, ...], flags: int) -> Credentials:
    if flags & FLAG_LOGIN:
        return tuple.__new__(Credentials, raw)  # what Credentials._make does, without the length check
    euid, suid, fsuid, egid, sgid, fsgid, _, _, cap_eff, cap_prm = raw
    return Credentials(euid, suid, fsuid, egid, sgid, fsgid, None, None, cap_eff, cap_prm)


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
    (ev.ret, ev.dirfd, ev.open_flags, argc, argc_total, flen, alen, tty, nlink, ino, dev, name_len,
     vpid, vtid, pid_ns, mnt_ns, name) = EXEC_FIXED.unpack_from(data, HEADER_SIZE)  # fmt: skip
    if ev.flags & FLAG_NS_VIEW:
        ev.ns = NsView(vpid, vtid, pid_ns, mnt_ns)
    if ev.flags & FLAG_TTY:
        ev.tty_nr = kernel_dev_to_tty_nr(tty)
    if ev.flags & FLAG_EXE_INFO:
        ev.exe_name = _cstr(name[: max(0, min(name_len, len(name)))])
        ev.exe_ino, ev.exe_dev, ev.exe_nlink = ino, kernel_dev_to_user(dev), nlink
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
    at = HEADER_SIZE + CONNECT_LOCAL_OFFSET
    if family != AF_UNIX and len(data) >= at + CONNECT_LOCAL.size:
        local = CONNECT_LOCAL.unpack_from(data, at)
        if local[2]:  # zeros: not read (no socket offsets, a failed connect)
            ev.sys_extra = local


def _decode_sys(data: bytes, ev: Event) -> None:
    """A security syscall: raw arguments, values read behind pointers, and up to three strings, each in its
    own slot (the sample ends after the last one used)."""
    if len(data) < SYS_STR_OFFSET:
        raise DecodeError("short syscall sample")
    fixed = SYS_FIXED.unpack_from(data, HEADER_SIZE)
    ev.ret = fixed[0]
    ev.sys_args = fixed[1:7]
    ev.sys_extra = fixed[7:10]
    lens, nstr = fixed[10:13], min(fixed[13], SYS_STRS)
    strs = []
    for i in range(nstr):
        start = SYS_STR_OFFSET + i * SYS_STR_LEN
        end = min(start + min(lens[i], SYS_STR_LEN), len(data))
        strs.append(_cstr(data[start:end]) if end > start else "")
    ev.sys_strs = tuple(strs)


def unix_socket_path(raw: bytes) -> str:
    """Filesystem paths end at the first NUL; abstract names start with NUL and are shown as ``@name``."""
    if raw[:1] == b"\0":
        return "@" + _text(raw[1:].rstrip(b"\0"))
    return _cstr(raw)
