"""Carry the pinned tamper map across a restart without CAP_SYS_ADMIN.

bcc (0.26) reopens a pinned map (``BPF_TABLE_PINNED``) by asking the pin for the map's id and then calling
``BPF_MAP_GET_FD_BY_ID``, which the kernel allows only with CAP_SYS_ADMIN: an agent holding just CAP_BPF
fails to compile its probes at every start after the first. Reading the pin itself needs no more than
CAP_BPF (``BPF_OBJ_GET`` on a file the agent owns), so before compiling, an agent without CAP_SYS_ADMIN
reads the old map's entries here, unlinks the pin and lets bcc create and pin a fresh map; the loader then
writes the entries back. Records survive; only a SIGKILL in the few milliseconds between the unlink and
the write-back would lose them (the previous instance's records, already in this process's memory).
"""

from __future__ import annotations

import ctypes
import os
import platform

# bpf(2) commands (include/uapi/linux/bpf.h)
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_GET = 7
BPF_OBJ_GET_INFO_BY_FD = 15
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
MAX_ENTRIES_READ = 4096  # the tamper map holds 64; a bound against a pin that is not ours


class PinError(OSError):
    """The pin could not be read (the message names the pin and the step)."""


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        raise PinError(0, f"bpf(2) syscall number unknown on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    ret = libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise PinError(err, os.strerror(err))
    return int(ret)


def _attr(*fields: tuple[str, int]) -> ctypes.Array[ctypes.c_char]:
    """A zeroed bpf_attr (128 bytes) with little/native-endian fields packed in order: ("I", v), ("Q", v)."""
    import struct

    buf = ctypes.create_string_buffer(128)
    fmt = "=" + "".join(f for f, _ in fields)
    struct.pack_into(fmt, buf, 0, *(v for _, v in fields))
    return buf


def _map_sizes(fd: int) -> tuple[int, int]:
    """(key_size, value_size) from BPF_OBJ_GET_INFO_BY_FD (struct bpf_map_info: type, id, key_size,
    value_size, ...)."""
    import struct

    info = ctypes.create_string_buffer(96)
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _attr(("I", fd), ("I", len(info)), ("Q", ctypes.addressof(info))))
    _type, _id, key_size, value_size = struct.unpack_from("=IIII", info, 0)
    return key_size, value_size


def read_pinned_map(path: str) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of the map pinned at ``path``, as raw bytes; raises PinError."""
    name = os.fsencode(path) + b"\0"
    cpath = ctypes.create_string_buffer(name, len(name))
    try:
        fd = _bpf(BPF_OBJ_GET, _attr(("Q", ctypes.addressof(cpath)), ("I", 0), ("I", 0)))
    except PinError as exc:
        raise PinError(exc.errno, f"{path}: opening the pinned map: {exc.strerror}") from None
    try:
        key_size, value_size = _map_sizes(fd)
        out: list[tuple[bytes, bytes]] = []
        key = ctypes.create_string_buffer(key_size)
        nxt = ctypes.create_string_buffer(key_size)
        value = ctypes.create_string_buffer(value_size)
        first = True
        while len(out) < MAX_ENTRIES_READ:
            prev = 0 if first else ctypes.addressof(key)  # NULL key: the first one
            try:
                attr = _attr(("I", fd), ("I", 0), ("Q", prev), ("Q", ctypes.addressof(nxt)))
                _bpf(BPF_MAP_GET_NEXT_KEY, attr)
            except PinError as exc:
                if exc.errno == 2:  # ENOENT: no more keys
                    break
                raise
            first = False
            ctypes.memmove(key, nxt, key_size)
            try:
                _bpf(BPF_MAP_LOOKUP_ELEM, _attr(("I", fd), ("I", 0), ("Q", ctypes.addressof(key)),
                                                ("Q", ctypes.addressof(value)), ("Q", 0)))  # fmt: skip
            except PinError as exc:
                if exc.errno == 2:  # removed meanwhile
                    continue
                raise
            out.append((key.raw, value.raw))
        return out
    finally:
        os.close(fd)


def adopt_pin(path: str) -> list[tuple[bytes, bytes]]:
    """Read the map pinned at ``path`` and unlink the pin, so that bcc creates a new one; the entries to
    write back. Nothing pinned: an empty list. Raises PinError when the pin exists but cannot be read
    (then it is left in place)."""
    if not os.path.exists(path):
        return []
    entries = read_pinned_map(path)
    os.unlink(path)
    return entries
