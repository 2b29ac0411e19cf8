"""The wire decoder on built samples: layout, clamping, hostile bytes. No kernel needed."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel import events
from sentinel.events import (
    AF_INET,
    AF_INET6,
    AF_UNIX,
    FLAG_ARGV_TRUNCATED,
    FLAG_CHILD_START,
    FLAG_CREDS,
    FLAG_EXE_INFO,
    FLAG_LOGIN,
    FLAG_NS_VIEW,
    FLAG_START,
    FLAG_TTY,
    EventType,
    NsView,
)
from sentinel.sensor import decoder
from sentinel.sensor.decoder import (
    CONNECT_FIXED,
    EXEC_FIXED,
    FORK_FIXED,
    HEADER,
    OPEN_FIXED,
    OPEN_KEY,
    DecodeError,
    decode,
)

HEADER_H = Path(__file__).resolve().parents[2] / "bpf_probes" / "sentinel_events.h"


NO_CREDS = (0,) * 10


def header(
    etype: int,
    flags: int = 0,
    aux: int = 0,
    comm: bytes = b"proc",
    start: int = 0,
    creds: tuple[int, ...] = NO_CREDS,
) -> bytes:
    return HEADER.pack(123_456_789, 42, start, 1000, 1001, 0, 0, etype, flags, aux, comm, *creds)


def exec_sample(
    filename: bytes,
    args: list[bytes],
    ret: int = 0,
    flags: int = 0,
    total: int | None = None,
    exe: tuple[int, int, int, int, bytes] = (0, 0, 0, 0, b""),
    ns: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> bytes:
    data = filename + b"\0" + b"".join(a + b"\0" for a in args)
    tty, nlink, ino, dev, name = exe
    fixed = EXEC_FIXED.pack(
        ret, -100, 0, len(args), total or len(args), len(filename) + 1, len(data) - len(filename) - 1,
        tty, nlink, ino, dev, len(name) + 1, *ns, name,
    )  # fmt: skip
    return header(1, flags) + fixed + data


# Where each struct of the C header puts its members, as the decoder's formats must reproduce them.
LAYOUT_PROGRAM = r"""
#include <stddef.h>
#include <stdio.h>
typedef unsigned char u8; typedef unsigned short u16; typedef unsigned int u32; typedef int s32;
typedef unsigned long long u64; typedef long long s64;
#include "sentinel_events.h"
#define P(s, m) printf(#s "." #m " %zu %zu\n", offsetof(struct s, m), sizeof(((struct s *)0)->m))
int main(void) {
    P(event_header, ts_ns); P(event_header, cgroup_id); P(event_header, start_ns); P(event_header, pid);
    P(event_header, tid); P(event_header, uid); P(event_header, gid); P(event_header, type);
    P(event_header, flags); P(event_header, aux); P(event_header, comm); P(event_header, cred);
    P(creds, euid); P(creds, suid); P(creds, fsuid); P(creds, egid); P(creds, sgid); P(creds, fsgid);
    P(creds, loginuid); P(creds, sessionid); P(creds, cap_effective); P(creds, cap_permitted);
    P(exec_event, ret); P(exec_event, dirfd); P(exec_event, at_flags); P(exec_event, argc_captured);
    P(exec_event, argc_total); P(exec_event, filename_len); P(exec_event, args_len); P(exec_event, tty);
    P(exec_event, exe_nlink); P(exec_event, exe_ino); P(exec_event, exe_dev); P(exec_event, exe_name_len);
    P(exec_event, ns); P(exec_event, exe_name); P(exec_event, data);
    P(ns_view, vpid); P(ns_view, vtid); P(ns_view, pid_ns); P(ns_view, mnt_ns);
    P(open_event, ret); P(open_event, flags); P(open_event, mode); P(open_event, dirfd);
    P(open_event, path_len); P(open_event, key);
    P(open_key, tgid); P(open_key, flags_class); P(open_key, result); P(open_key, pad); P(open_key, gen);
    P(open_key, base_mnt); P(open_key, base_dentry); P(open_key, file_mnt); P(open_key, file_dentry);
    P(open_key, file_inode); P(open_key, path);
    P(connect_event, ret); P(connect_event, fd); P(connect_event, family); P(connect_event, port);
    P(connect_event, sock_type); P(connect_event, addrlen); P(connect_event, addr);
    P(connect_event, unix_path); P(connect_event, local);
    P(fork_event, child_pid); P(fork_event, parent_tid); P(fork_event, clone_flags);
    P(fork_event, child_start_ns); P(fork_event, child_ns);
    printf("sizeof.event_header %zu 0\n", sizeof(struct event_header));
    printf("sizeof.connect_event %zu 0\n", sizeof(struct connect_event));
    return 0;
}
"""


def compiled_layout(tmp_path: Path) -> dict[str, tuple[int, int]]:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler: scripts/setup.sh installs gcc"
    (tmp_path / "layout.c").write_text(LAYOUT_PROGRAM)
    binary = tmp_path / "layout"
    subprocess.run([cc, f"-I{HEADER_H.parent}", "-o", str(binary), str(tmp_path / "layout.c")], check=True)
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    return {name: (int(off), int(size)) for name, off, size in (line.split() for line in out.splitlines())}


def struct_offsets(fmt: struct.Struct) -> list[tuple[int, int]]:
    """(offset, size) of each item of a little-endian struct format, expanding counts like ``16s``."""
    out = []
    offset = 0
    for count, code in re.findall(r"(\d*)([a-zA-Z])", fmt.format.lstrip("<")):
        n = int(count or 1)
        size = struct.calcsize("<" + code)
        if code == "s":
            out.append((offset, n))
            offset += n
            continue
        for _ in range(n):
            out.append((offset, size))
            offset += size
    return out


def test_decoder_formats_match_the_compiled_c_layout(tmp_path: Path) -> None:
    c = compiled_layout(tmp_path)
    header_members = ["ts_ns", "cgroup_id", "start_ns", "pid", "tid", "uid", "gid", "type", "flags", "aux",
                      "comm"]  # fmt: skip
    cred_members = ["euid", "suid", "fsuid", "egid", "sgid", "fsgid", "loginuid", "sessionid",
                    "cap_effective",
                    "cap_permitted"]  # fmt: skip
    cred_base = c["event_header.cred"][0]
    expected = [c[f"event_header.{m}"] for m in header_members]
    expected += [(cred_base + c[f"creds.{m}"][0], c[f"creds.{m}"][1]) for m in cred_members]
    assert struct_offsets(HEADER) == expected
    assert HEADER.size == c["sizeof.event_header"][0]

    def body(struct_name: str, members: list[str]) -> list[tuple[int, int]]:
        return [(c[f"{struct_name}.{m}"][0] - HEADER.size, c[f"{struct_name}.{m}"][1]) for m in members]

    def with_ns(layout: list[tuple[int, int]], struct_name: str, member: str) -> list[tuple[int, int]]:
        """``member`` (a struct ns_view) expanded into its four u32s."""
        base, size = c[f"{struct_name}.{member}"]
        assert size == 16
        i = layout.index((base - HEADER.size, size))
        view = [(base - HEADER.size + c[f"ns_view.{m}"][0], c[f"ns_view.{m}"][1])
                for m in ("vpid", "vtid", "pid_ns", "mnt_ns")]  # fmt: skip
        return [*layout[:i], *view, *layout[i + 1 :]]

    exec_members = ["ret", "dirfd", "at_flags", "argc_captured", "argc_total", "filename_len", "args_len",
                    "tty",
                    "exe_nlink", "exe_ino", "exe_dev", "exe_name_len", "ns", "exe_name"]  # fmt: skip
    assert struct_offsets(EXEC_FIXED) == with_ns(body("exec_event", exec_members), "exec_event", "ns")
    assert c["exec_event.data"][0] == decoder.EXEC_DATA_OFFSET
    assert struct_offsets(OPEN_FIXED) == body("open_event", ["ret", "flags", "mode", "dirfd", "path_len"])
    key_base = c["open_event.key"][0] - HEADER.size - OPEN_FIXED.size
    key_members = ["tgid", "flags_class", "result", "pad", "gen", "base_mnt", "base_dentry", "file_mnt",
                   "file_dentry", "file_inode"]  # fmt: skip
    assert key_base == 0
    assert struct_offsets(OPEN_KEY) == [c[f"open_key.{m}"] for m in key_members]
    assert c["open_event.key"][0] + c["open_key.path"][0] == decoder.OPEN_PATH_OFFSET
    connect_members = ["ret", "fd", "family", "port", "sock_type", "addrlen", "addr", "unix_path"]
    assert struct_offsets(CONNECT_FIXED) == body("connect_event", connect_members)
    assert body("connect_event", ["local"]) == [(decoder.CONNECT_LOCAL_OFFSET, decoder.CONNECT_LOCAL.size)]
    end = HEADER.size + decoder.CONNECT_LOCAL_OFFSET + decoder.CONNECT_LOCAL.size
    assert c["sizeof.connect_event"][0] == end
    fork_members = ["child_pid", "parent_tid", "clone_flags", "child_start_ns", "child_ns"]
    assert struct_offsets(FORK_FIXED) == with_ns(body("fork_event", fork_members), "fork_event", "child_ns")


def test_event_type_numbers_match_the_c_header() -> None:
    text = HEADER_H.read_text()
    defined = {name: int(value) for name, value in re.findall(r"#define EVT_([A-Z_0-9]+) (\d+)", text)}
    assert {t.name: int(t) for t in EventType} == defined
    flags = {name: int(bit) for name, bit in re.findall(r"#define EVF_([A-Z_]+) \(1 << (\d+)\)", text)}
    for name, bit in flags.items():
        assert getattr(events, f"FLAG_{name}") == 1 << bit, name


def test_credentials_start_and_exe_identity_are_decoded_only_when_flagged() -> None:
    creds = (0, 0, 0, 0, 0, 0, 1000, 7, 0x1FF, 0x3FF)
    sample = exec_sample(b"/proc/self/fd/3", [b"x"], exe=((136 << 20) | 2, 0, 99, (0 << 20) | 1, b"memfd:x"))
    plain = decode(sample)
    assert plain.creds is None and plain.start_ns == 0 and plain.exe_name == "" and plain.tty_nr == -1
    flags = FLAG_CREDS | FLAG_LOGIN | FLAG_START | FLAG_EXE_INFO | FLAG_TTY
    full = header(1, flags, start=555, creds=creds) + sample[HEADER.size :]
    ev = decode(full)
    assert ev.start_ns == 555
    assert ev.creds is not None and ev.creds.loginuid == 1000 and ev.creds.sessionid == 7
    assert ev.creds.cap_effective == 0x1FF and ev.creds.cap_permitted == 0x3FF and ev.creds.euid == 0
    assert ev.exe_name == "memfd:x" and ev.exe_nlink == 0 and ev.exe_ino == 99 and os.minor(ev.exe_dev) == 1
    assert ev.tty_nr == 34818  # pts/2 as /proc/PID/stat prints it: (136 << 8) | 2
    no_login = decode(header(1, FLAG_CREDS, creds=creds) + sample[HEADER.size :])
    assert no_login.creds is not None and no_login.creds.loginuid is None and no_login.creds.sessionid is None


def test_shared_decodings_are_exact_and_bounded() -> None:
    """Commands and credential sets are decoded once and shared; hostile variety (every event a new comm or
    credential set) re-decodes, never grows the caches past their bound, never mixes two values up."""
    sample = exec_sample(b"/bin/x", [b"x"])
    body = sample[HEADER.size :]
    for i in range(decoder._CACHE_MAX + 50):
        comm = f"c{i}\xff".encode("latin-1")[:15].ljust(16, b"\0")
        creds = (i, 0, 0, 0, 0, 0, 1000, i, 0, 0)
        ev = decode(header(1, FLAG_CREDS | FLAG_LOGIN, comm=comm, creds=creds) + body)
        assert ev.comm == comm.rstrip(b"\0").decode("utf-8", "surrogateescape")
        assert ev.creds is not None and ev.creds.euid == i and ev.creds.sessionid == i
        assert len(decoder._comms) <= decoder._CACHE_MAX and len(decoder._creds) <= decoder._CACHE_MAX
    a = decode(header(1, comm=b"same" + bytes(12)) + body)
    b = decode(header(1, comm=b"same" + bytes(12)) + body)
    assert a.comm == b.comm == "same"


def test_exec_round_trip_with_hostile_bytes() -> None:
    args = [b"/bin/echo", b"two words", b"\xff\xfe", b"new\nline", b""]
    ev = decode(exec_sample(b"/bin/echo", args))
    assert ev.type is EventType.EXEC
    assert ev.pid == 1000 and ev.tid == 1001 and ev.ts_ns == 123_456_789 and ev.cgroup_id == 42
    assert ev.filename == "/bin/echo"
    assert [a.encode("utf-8", "surrogateescape") for a in ev.argv] == args
    assert ev.comm == "proc"


def test_exec_zero_args_and_truncation_flag() -> None:
    ev = decode(exec_sample(b"/bin/true", []))
    assert ev.argv == [] and ev.argc_total == 0
    ev = decode(exec_sample(b"/x", [b"a"] * 3, flags=FLAG_ARGV_TRUNCATED, total=500))
    assert ev.flags & FLAG_ARGV_TRUNCATED and ev.argc_total == 500 and len(ev.argv) == 3


def test_exec_lengths_are_clamped_to_received_bytes() -> None:
    sample = exec_sample(b"/bin/true", [b"a", b"b"])
    ev = decode(sample[:-2])  # the last argument cut off in transit
    assert ev.filename == "/bin/true" and ev.argv == ["a"]


def test_open_decodes_path_flags_and_repeat_count() -> None:
    path = b"/etc/\xffshadow"
    fixed = OPEN_FIXED.pack(-13, 0o100101, 0o644, -100, len(path) + 1)
    ev = decode(header(2, aux=7) + fixed + bytes(OPEN_KEY.size) + path + b"\0")
    assert ev.type is EventType.OPEN and ev.ret == -13 and ev.open_flags == 0o100101 and ev.mode == 0o644
    assert ev.path.encode("utf-8", "surrogateescape") == path and ev.repeat_count == 7


def test_fchdir_carries_the_fd() -> None:
    fixed = OPEN_FIXED.pack(0, 0, 0, 5, 1)
    ev = decode(header(6) + fixed + bytes(OPEN_KEY.size) + b"\0")
    assert ev.type is EventType.CHDIR and ev.path == "" and ev.fd == 5


@pytest.mark.parametrize(
    ("family", "raw", "expected"),
    [
        (AF_INET, socket.inet_pton(socket.AF_INET, "127.0.0.1") + bytes(12), "127.0.0.1"),
        (AF_INET6, socket.inet_pton(socket.AF_INET6, "::1"), "::1"),
    ],
)
def test_connect_inet(family: int, raw: bytes, expected: str) -> None:
    body = CONNECT_FIXED.pack(-111, 3, family, 8080, 1, 16, raw, bytes(108))
    ev = decode(header(3) + body)
    assert ev.address == expected and ev.port == 8080 and ev.ret == -111 and ev.sock_type == 1


def test_connect_unix_path_and_abstract() -> None:
    body = CONNECT_FIXED.pack(0, 3, AF_UNIX, 0, 1, 2 + 9, bytes(16), b"/run/sock".ljust(108, b"\0"))
    assert decode(header(3) + body).address == "/run/sock"
    body = CONNECT_FIXED.pack(0, 3, AF_UNIX, 0, 1, 2 + 5, bytes(16), b"\0abcd".ljust(108, b"\0"))
    assert decode(header(3) + body).address == "@abcd"


def test_fork_and_exit() -> None:
    view = (1, 1, 4026532245, 4026532243)
    ev = decode(header(4) + FORK_FIXED.pack(2000, 1001, 0x11, 777, *view))
    assert ev.child_pid == 2000 and ev.clone_flags == 0x11 and ev.child_start_ns == 0  # not flagged
    assert ev.child_ns is None and ev.ns is None
    ev = decode(header(4, FLAG_CHILD_START) + FORK_FIXED.pack(2000, 1001, 0x11, 777, *view))
    assert ev.child_start_ns == 777 and ev.child_ns is None
    ev = decode(header(4, FLAG_NS_VIEW) + FORK_FIXED.pack(2000, 1001, 0x11, 777, *view))
    assert ev.child_ns == NsView(1, 1, 4026532245, 4026532243)  # the child's, not the caller's
    assert ev.ns is None
    assert decode(header(5) + FORK_FIXED.pack(0, 0, 0, 0, 0, 0, 0, 0)).type is EventType.EXIT


def test_the_namespace_view_of_an_exec_only_when_flagged() -> None:
    sample = exec_sample(b"/bin/sh", [b"sh"], ns=(7, 9, 4026532245, 4026532243))
    assert decode(sample).ns is None
    ev = decode(header(1, FLAG_NS_VIEW) + sample[HEADER.size :])
    assert ev.ns == NsView(vpid=7, vtid=9, pid_ns=4026532245, mnt_ns=4026532243) and ev.child_ns is None


def test_short_and_unknown_samples_raise_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(b"\0" * 10)
    with pytest.raises(DecodeError):
        decode(header(99))
    with pytest.raises(DecodeError):
        decode(header(1) + b"\0" * 4)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=600), st.integers(min_value=1, max_value=6))
def test_random_bodies_never_crash(body: bytes, etype: int) -> None:
    with contextlib.suppress(DecodeError):
        decode(header(etype) + body)
