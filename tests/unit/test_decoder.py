"""The wire decoder on built samples: layout, clamping, hostile bytes. No kernel needed."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.events import AF_INET, AF_INET6, AF_UNIX, FLAG_ARGV_TRUNCATED, EventType
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


def header(etype: int, flags: int = 0, aux: int = 0, comm: bytes = b"proc") -> bytes:
    return HEADER.pack(123_456_789, 42, 1000, 1001, 0, 0, etype, flags, aux, comm)


def exec_sample(
    filename: bytes, args: list[bytes], ret: int = 0, flags: int = 0, total: int | None = None
) -> bytes:
    data = filename + b"\0" + b"".join(a + b"\0" for a in args)
    fixed = EXEC_FIXED.pack(
        ret, -100, 0, len(args), total or len(args), len(filename) + 1, len(data) - len(filename) - 1
    )
    return header(1, flags) + fixed + data


def test_struct_sizes_match_the_c_header() -> None:
    text = HEADER_H.read_text()
    assert "#define COMM_LEN 16" in text
    assert HEADER.size == 56  # u64 u64 u32*4 u16 u16 u32 char[16]
    assert EXEC_FIXED.size == 32
    assert OPEN_FIXED.size + OPEN_KEY.size == 24 + 24
    assert CONNECT_FIXED.size == 8 + 4 + 2 + 2 + 4 + 4 + 16 + 108
    assert FORK_FIXED.size == 16
    assert re.search(r"#define EVT_CHDIR 6", text)


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
    ev = decode(header(2, aux=7) + fixed + OPEN_KEY.pack(0, 0, 0, 0, 0) + path + b"\0")
    assert ev.type is EventType.OPEN and ev.ret == -13 and ev.open_flags == 0o100101 and ev.mode == 0o644
    assert ev.path.encode("utf-8", "surrogateescape") == path and ev.repeat_count == 7


def test_fchdir_carries_the_fd() -> None:
    fixed = OPEN_FIXED.pack(0, 0, 0, 5, 1)
    ev = decode(header(6) + fixed + OPEN_KEY.pack(0, 0, 0, 0, 0) + b"\0")
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
    ev = decode(header(4) + FORK_FIXED.pack(2000, 1001, 0x11))
    assert ev.child_pid == 2000 and ev.clone_flags == 0x11
    assert decode(header(5) + FORK_FIXED.pack(0, 0, 0)).type is EventType.EXIT


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


def test_decoder_module_has_no_kernel_dependency() -> None:
    assert "bcc" not in decoder.__dict__
    assert struct.calcsize("<Q") == 8
