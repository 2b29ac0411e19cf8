"""Capture files: exact round trips of hostile content, crash truncation, corrupt and hostile input."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.capture import (
    CaptureError,
    CaptureReader,
    CaptureWriter,
    ContainerFact,
    FactsMiss,
    FdFact,
    IdentityFact,
    LossReport,
    SegmentStart,
    SnapshotEnd,
    capture_header,
    describe,
)
from sentinel.capture.format import (
    EVENT_FIELDS,
    EVENT_V2_FIELDS,
    EVENT_V3_FIELDS,
    EVENT_V6_FIELDS,
    FACTS_FIELDS,
    MAX_ARRAY_LEN,
    MAX_RECORD_BYTES,
)
from sentinel.containers import ContainerMeta, ContainerRef, K8sPod
from sentinel.containers.meta_view import MetaChange
from sentinel.containers.metadata import Mount
from sentinel.events import AT_FDCWD, KERNEL_TYPES, Credentials, Event, EventType, NsView
from sentinel.process.facts import ProcFacts

HOST = {
    "hostname": "host-1",
    "machine_id": "0123456789abcdef",
    "boot_id": "b00t",
    "kernel": "6.18.0-test",
    "boot_time_ns": 1_700_000_000_000_000_000,
    "agent_version": "0.1.0",
}
HEADER = capture_header("test", host=HOST)
U64 = 2**64 - 1
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1

ITEM_TYPES = (SegmentStart, Event, FdFact, LossReport, SnapshotEnd, FactsMiss) + (
    (ProcFacts,) if ProcFacts is not None else ()
)


def raw(data: bytes) -> str:
    """How the decoder turns kernel bytes into str."""
    return data.decode("utf-8", "surrogateescape")


def header_bytes(**changes: Any) -> bytes:
    header = {"format": "sentinel-capture", "version": 2, "created_ns": 5, **HOST, "probe_mode": "test"}
    header.update(changes)
    return msgpack.packb({k: v for k, v in header.items() if v is not None}, use_bin_type=True)


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def read_all(path: Path) -> tuple[list[Any], CaptureReader]:
    reader = CaptureReader(path)
    return list(reader), reader


def hostile_event(etype: int) -> Event:
    big = "A" * 100_000
    return Event(
        type=etype,  # type: ignore[arg-type]
        ts_ns=U64,
        pid=2**31 - 1,
        tid=0,
        uid=2**32 - 1,
        gid=0,
        comm=raw(b"\xff\xfe\n\x1b[31mx\x00"),
        cgroup_id=U64,
        flags=I64_MIN,
        ret=-13,
        filename=raw(b"/tmp/\xc3\x28bad\r\n\tname"),
        argv=["", raw(b"\x80\x81"), "line1\nline2", big, "\u202e\x7f", raw(b"\xed\xa0\x80")],
        argc_total=I64_MAX,
        path=raw(b"/etc/../etc/sh\xaadow"),
        dirfd=AT_FDCWD,
        open_flags=0o100101,
        mode=0o7777,
        repeat_count=U64,
        fd=-1,
        family=10,
        address=raw(b"@\x00abstract\xff"),
        port=65535,
        sock_type=2,
        child_pid=0,
        clone_flags=U64,
    )


def make_facts(pid: int = 42, **changes: Any) -> Any:
    base = dict(
        pid=pid,
        start_ticks=12345,
        ppid=1,
        comm=raw(b"evil\xffcomm"),
        exe=raw(b"/tmp/x (deleted)\xfe"),
        cwd="/",
        args=["sh", "-c", raw(b"echo \xff\n"), ""],
        uid=-1,
        gid=0,
        tty_nr=34816,
    )
    base.update(changes)
    return ProcFacts(**base)


# -- layout ------------------------------------------------------------------------------------------------


def test_event_record_layout_covers_every_event_field() -> None:
    # A new Event field must be added to the capture layout (and the version bumped), or replay loses it.
    layout = EVENT_FIELDS + EVENT_V2_FIELDS + EVENT_V3_FIELDS + EVENT_V6_FIELDS
    assert tuple(f.name for f in dataclasses.fields(Event)) == layout


def test_facts_record_layout_covers_every_procfacts_field() -> None:
    assert tuple(f.name for f in dataclasses.fields(ProcFacts)) == FACTS_FIELDS


def test_event_record_is_the_documented_array(tmp_path: Path) -> None:
    path = tmp_path / "c"
    ev = Event(EventType.OPEN, 7, 1, 2, 3, 4, "cat", path="/etc/passwd", ret=3, repeat_count=2)
    with CaptureWriter(path, HEADER) as w:
        w.write_event(ev)
    objs = list(msgpack.Unpacker(io.BytesIO(path.read_bytes()), raw=False))
    assert list(objs[0])[:2] == ["format", "version"]
    assert objs[1][:8] == [1, 2, 7, 1, 2, 3, 4, b"cat"]
    assert objs[1][14] == b"/etc/passwd"
    assert len(objs[1]) == 1 + len(EVENT_FIELDS) + len(EVENT_V2_FIELDS) + len(EVENT_V3_FIELDS) + 2
    assert objs[1][-7:-5] == [0, None]  # start_ns and creds: not known for this event
    assert objs[1][-5:-2] == [None, None, None]  # no syscall arguments: an open
    assert objs[1][-2:] == [None, None]  # no namespace view: an open


def test_version_1_records_still_read(tmp_path: Path) -> None:
    """Captures written before credentials existed keep replaying: their events simply lack them."""
    path = tmp_path / "c"
    record = [
        1,
        2,
        7,
        1,
        2,
        3,
        4,
        b"cat",
        0,
        0,
        3,
        b"",
        [],
        0,
        b"/etc/passwd",
        -100,
        0,
        0,
        0,
        -1,
        0,
        b"",
        0,
        0,
        0,
        0,
    ]
    facts = [2, 5, 100, 1, b"sh", b"/usr/bin/dash", b"/", b"sh\0", 0, 0, 0]
    path.write_bytes(header_bytes(version=1) + pack(record) + pack(facts))
    items, reader = read_all(path)
    assert reader.problem is None
    ev, proc_facts = items[1], items[2]
    assert isinstance(ev, Event) and ev.path == "/etc/passwd" and ev.creds is None and ev.start_ns == 0
    assert proc_facts.exe == "/usr/bin/dash" and not proc_facts.exe_memfd and not proc_facts.exe_deleted


def test_credentials_and_exe_identity_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c"
    creds = Credentials(0, 0, 0, 0, 0, 0, None, None, 0x1FF, 0x3FF)
    ev = Event(EventType.EXEC, 7, 1, 2, 65534, 65534, "x", start_ns=5, creds=creds, exe_name="memfd:\udcff",
               exe_nlink=0, exe_dev=1, exe_ino=9, tty_nr=34816, child_start_ns=0)  # fmt: skip
    with CaptureWriter(path, HEADER) as w:
        w.write_event(ev)
    items, reader = read_all(path)
    assert reader.problem is None and items[1] == ev


def test_namespace_views_round_trip(tmp_path: Path) -> None:
    """An exec's view of itself and a fork's of its child (version 6), and facts with and without theirs."""
    path = tmp_path / "c"
    execed = Event(EventType.EXEC, 7, 6143, 6143, 0, 0, "sh", ns=NsView(1, 1, 4026532245, 4026532243))
    forked = Event(EventType.FORK, 8, 6143, 6143, 0, 0, "sh", child_pid=6150,
                   child_ns=NsView(2, 2, 4026532245, 4026532243))  # fmt: skip
    facts = [make_facts(6143, vpid=1, pid_ns=4026532245, mnt_ns=4026532243), make_facts(7)]
    with CaptureWriter(path, HEADER) as w:
        w.write_event(execed)
        w.write_event(forked)
        for f in facts:
            w.write_facts(f)
    items, reader = read_all(path)
    assert reader.problem is None and items[1:] == [execed, forked, *facts]
    assert items[4].vpid is None and items[4].pid_ns == 0  # unknown stays unknown


def test_version_5_records_still_read(tmp_path: Path) -> None:
    """Records from before the namespace view: events without it, facts without vpid or namespaces."""
    path = tmp_path / "c"
    record = VALID_EVENT_V6[:-2]
    path.write_bytes(header_bytes(version=5) + pack(record) + pack(FACTS_V6[:13]))
    items, reader = read_all(path)
    assert reader.problem is None
    ev, proc_facts = items[1], items[2]
    assert isinstance(ev, Event) and ev.ns is None and ev.child_ns is None and ev.path == "/p"
    assert isinstance(proc_facts, ProcFacts) and proc_facts.vpid is None and proc_facts.mnt_ns == 0


# -- round trips -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("etype", sorted(KERNEL_TYPES))
def test_every_event_type_round_trips_hostile_content(tmp_path: Path, etype: EventType) -> None:
    path = tmp_path / "c"
    events = [
        hostile_event(etype),
        Event(etype, 0, 0, 0, 0, 0, ""),
        Event(etype, 1, 2, 3, 4, 5, "x", argv=[]),
    ]
    with CaptureWriter(path, HEADER) as w:
        for ev in events:
            w.write_event(ev)
    items, reader = read_all(path)
    assert reader.problem is None
    assert items[1:] == events
    assert items[1].argv[3] == "A" * 100_000
    assert os.fsencode(items[1].comm) == b"\xff\xfe\n\x1b[31mx\x00"
    assert type(items[1].type) is EventType


texts = st.binary(max_size=64).map(raw)
ints = st.integers(min_value=I64_MIN, max_value=U64)


@st.composite
def events(draw: st.DrawFn) -> Event:
    return Event(
        type=draw(st.sampled_from(sorted(KERNEL_TYPES))),
        ts_ns=draw(ints),
        pid=draw(ints),
        tid=draw(ints),
        uid=draw(ints),
        gid=draw(ints),
        comm=draw(texts),
        cgroup_id=draw(ints),
        flags=draw(ints),
        ret=draw(ints),
        filename=draw(texts),
        argv=draw(st.lists(texts, max_size=8)),
        argc_total=draw(ints),
        path=draw(texts),
        dirfd=draw(ints),
        open_flags=draw(ints),
        mode=draw(ints),
        repeat_count=draw(ints),
        fd=draw(ints),
        family=draw(ints),
        address=draw(texts),
        port=draw(ints),
        sock_type=draw(ints),
        child_pid=draw(ints),
        clone_flags=draw(ints),
        ns=draw(st.none() | st.builds(NsView, ints, ints, ints, ints)),
        child_ns=draw(st.none() | st.builds(NsView, ints, ints, ints, ints)),
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(events(), max_size=20))
def test_arbitrary_events_round_trip_exactly(evs: list[Event]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c"
        with CaptureWriter(path, HEADER) as w:
            for ev in evs:
                w.write_event(ev)
        items, reader = read_all(path)
    assert reader.problem is None
    assert items[1:] == evs


def test_unknown_event_types_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "c"
    known = Event(EventType.EXIT, 1, 2, 2, 0, 0, "x")
    with CaptureWriter(path, HEADER) as w:
        w.write_event(Event(99, 1, 2, 2, 0, 0, "future"))  # type: ignore[arg-type]
        w.write_event(known)
        w.write_event(Event(99, 3, 2, 2, 0, 0, "future"))  # type: ignore[arg-type]
    # A newer writer may also change the record's length for its new type.
    with open(path, "ab") as fh:
        fh.write(pack([1, 1000, 5, "anything", [1, 2]]))
    items, reader = read_all(path)
    assert items[1:] == [known]
    assert reader.problem is None
    assert reader.unknown_event_types == {99: 2, 1000: 1}
    assert describe(path).unknown_event_types == {99: 2, 1000: 1}


def test_facts_fd_loss_snapshot_and_miss_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c"
    facts = [
        make_facts(),
        make_facts(7, exe=None, cwd=None, args=None),
        make_facts(8, args=[]),
        make_facts(9, args=[""]),
        make_facts(10, args=["", ""], comm=""),
        make_facts(11, args=["x" * 200_000] + [str(i) for i in range(20_000)], start_ticks=U64, tty_nr=-1),
    ]
    with CaptureWriter(path, HEADER) as w:
        for f in facts:
            w.write_facts(f)
        w.write_fd(42, 3, raw(b"/tmp/\xffdeleted\n"))
        w.write_fd(42, 4, None)
        w.write_fd(42, 5, "")
        w.write_loss(U64, "open", 12)
        w.write_loss(0, "", 0)
        w.write_snapshot_end(99)
        w.write_facts_miss(42)
    items, reader = read_all(path)
    assert reader.problem is None
    assert items[1:] == [
        *facts,
        FdFact(42, 3, raw(b"/tmp/\xffdeleted\n")),
        FdFact(42, 4, None),
        FdFact(42, 5, ""),
        LossReport(U64, "open", 12),
        LossReport(0, "", 0),
        SnapshotEnd(99),
        FactsMiss(42),
    ]
    assert type(items[1]) is ProcFacts


def test_identity_records_round_trip(tmp_path: Path) -> None:
    """A file identity lookup (version 4) and a failed one; any byte string as the path."""
    path = tmp_path / "c"
    with CaptureWriter(path, HEADER) as w:
        w.write_identity("/usr/bin/true", (U64, 2049))
        w.write_identity(raw(b"/tmp/\xff x"), None)
    items, reader = read_all(path)
    assert reader.problem is None
    assert items[1:] == [IdentityFact("/usr/bin/true", (U64, 2049)), IdentityFact(raw(b"/tmp/\xff x"), None)]
    assert describe(path).records["identity"] == 2


def test_container_records_round_trip(tmp_path: Path) -> None:
    """Which container a process is in (version 5): a container, a rootless one with a name that is not
    UTF-8, and the host."""
    full = "3ad7b26ded6d8e7b23da7d48fe889434573036c27ae5a74837233de441c3601e"
    docker = ContainerRef("docker", full, full[:12])
    odd = ContainerRef("lxc", raw(b"web\xff"), raw(b"web\xff"), rootless=True)
    path = tmp_path / "c"
    with CaptureWriter(path, HEADER) as w:
        w.write_container(7, docker)
        w.write_container(8, odd)
        w.write_container(9, None)
    items, reader = read_all(path)
    assert reader.problem is None
    assert items[1:] == [ContainerFact(7, docker), ContainerFact(8, odd), ContainerFact(9, None)]
    assert describe(path).records["container"] == 3


def test_container_records_of_version_5_have_no_pod(tmp_path: Path) -> None:
    """Version 7 added the pod uid (from the cgroup path); a version-5 (or -6) record reads as a container
    without."""
    full = "3ad7b26ded6d8e7b23da7d48fe889434573036c27ae5a74837233de441c3601e"
    pod = "2f1e8c9a-1b2c-4d3e-9f8a-0123456789ab"
    path = tmp_path / "c"
    old = [9, 7, "containerd", full.encode(), full[:12].encode(), False]
    path.write_bytes(header_bytes(version=5) + pack(old))
    items, reader = read_all(path)
    assert reader.problem is None
    assert items[1:] == [ContainerFact(7, ContainerRef("containerd", full, full[:12]))]
    with CaptureWriter(path, HEADER) as w:
        w.write_container(8, ContainerRef("containerd", full, full[:12], pod_uid=pod))
    items, reader = read_all(path)
    assert items[1:] == [ContainerFact(8, ContainerRef("containerd", full, full[:12], False, pod))]


def hostile_meta(full_id: str) -> ContainerMeta:
    """An answer with odd bytes everywhere a container's creator writes, every flag state and a pod."""
    odd = raw(b"x\xff\x00\n\x1b[31m")
    pod = K8sPod("web-0", odd, "u-1", "ab" * 32, labels=(("app", odd), ("k", "")))
    return ContainerMeta(
        full_id=full_id, source="docker:/var/run/docker.sock", name=odd, image="nginx:1.25",
        image_repository="nginx", image_tag="1.25", image_digest="sha256:" + "cd" * 32, image_id="ef" * 32,
        labels=((odd, odd), ("a", "")), labels_truncated=True, privileged=True, host_network=False,
        host_pid=None, host_ipc=None, pod=pod,
        mounts=(Mount(odd, "/host" + odd, "z", False, "rprivate"), Mount("/var/run/docker.sock", "/s")),
        mounts_truncated=True,
    )  # fmt: skip


def test_container_meta_records_round_trip(tmp_path: Path) -> None:
    """What the pipeline saw of runtime metadata (version 7): every state, an answer of hostile text with and
    without a pod; the replay gets equal objects back."""
    full = "9e" * 32
    found = MetaChange(full, "found", hostile_meta(full))
    bare = MetaChange(full, "found", ContainerMeta(full_id=full, source="podman:/p.sock"))
    changes = [MetaChange(full, state) for state in ("pending", "not_found", "failed", "unsupported")]
    path = tmp_path / "c"
    with CaptureWriter(path, HEADER) as w:
        for change in [*changes, found, bare]:
            w.write_container_meta(change)
    items, reader = read_all(path)
    assert reader.problem is None
    assert items[1:] == [*changes, found, bare]
    assert describe(path).records["container_meta"] == 6


def test_a_version_7_meta_without_mounts_is_read(tmp_path: Path) -> None:
    """Version 7 had no mounts: its 14-element meta reads as "the runtime did not say" (None)."""
    full = "9e" * 32
    path = tmp_path / "c"
    with CaptureWriter(path, HEADER) as w:
        w.write_container_meta(MetaChange(full, "found", hostile_meta(full)))
    raw = list(msgpack.Unpacker(io.BytesIO(path.read_bytes()), raw=False))
    raw[0]["version"] = 7
    raw[1][3] = raw[1][3][:14]
    path.write_bytes(b"".join(msgpack.packb(r, use_bin_type=True) for r in raw))
    items, reader = read_all(path)
    assert reader.problem is None
    assert items[1].meta.mounts is None and items[1].meta.name == hostile_meta(full).name


def test_facts_with_a_nul_inside_an_argument_are_refused(tmp_path: Path) -> None:
    with CaptureWriter(tmp_path / "c", HEADER) as w, pytest.raises(ValueError, match="NUL"):
        w.write_facts(make_facts(args=["a\x00b"]))


def test_header_is_complete_and_segments_are_exposed(tmp_path: Path) -> None:
    path = tmp_path / "c"
    with CaptureWriter(path, HEADER) as w:
        w.write_event(Event(EventType.FORK, 1, 1, 1, 0, 0, "a", child_pid=2))
    first_size = path.stat().st_size
    with CaptureWriter(path, {**HEADER, "boot_id": "other-boot", "created_ns": 77}, append=True) as w:
        w.write_event(Event(EventType.EXIT, 2, 2, 2, 0, 0, "b"))
    items, reader = read_all(path)
    assert reader.problem is None
    assert [type(i) for i in items] == [SegmentStart, Event, SegmentStart, Event]
    assert items[0].index == 0 and items[0].offset == 0
    assert items[2].index == 1 and items[2].offset == first_size
    assert [h["boot_id"] for h in reader.headers] == ["b00t", "other-boot"]
    assert reader.headers[1]["created_ns"] == 77
    head = reader.headers[0]
    assert head["format"] == "sentinel-capture" and head["version"] == 8
    assert {k: head[k] for k in HOST} == HOST and head["probe_mode"] == "test"
    assert isinstance(head["created_ns"], int)


def test_header_of_this_host_has_every_field() -> None:
    header = capture_header("tracepoints")
    for key in ("hostname", "machine_id", "boot_id", "kernel", "boot_time_ns", "agent_version"):
        assert key in header
    assert header["probe_mode"] == "tracepoints"


def test_writer_rejects_an_incomplete_header(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="boot_time_ns"):
        CaptureWriter(tmp_path / "c", {k: v for k, v in HEADER.items() if k != "boot_time_ns"})
    assert not (tmp_path / "c").exists()


# -- the writer --------------------------------------------------------------------------------------------


def test_writer_creates_private_files_and_buffers(tmp_path: Path) -> None:
    path = tmp_path / "c"
    w = CaptureWriter(path, HEADER, flush_interval=3600, flush_bytes=1 << 30)
    assert path.stat().st_mode & 0o777 == 0o600
    header_size = path.stat().st_size
    assert header_size > 0  # the header is written at once: the file is a capture from the start
    w.write_event(Event(EventType.EXEC, 1, 1, 1, 0, 0, "a"))
    w.flush_if_due()
    assert path.stat().st_size == header_size
    w.flush()
    assert path.stat().st_size > header_size
    w.close()
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.write_event(Event(EventType.EXEC, 1, 1, 1, 0, 0, "a"))


def test_writer_flushes_by_size_and_when_due(tmp_path: Path) -> None:
    path = tmp_path / "c"
    with CaptureWriter(path, HEADER, flush_interval=3600, flush_bytes=1000) as w:
        size = path.stat().st_size
        for _ in range(100):
            w.write_event(Event(EventType.EXEC, 1, 1, 1, 0, 0, "a"))
        assert path.stat().st_size > size
    with CaptureWriter(path, HEADER, flush_interval=0, flush_bytes=1 << 30) as w:
        size = path.stat().st_size
        w.write_event(Event(EventType.EXEC, 1, 1, 1, 0, 0, "a"))
        assert path.stat().st_size > size


def test_a_bad_record_is_refused_and_leaves_the_capture_intact(tmp_path: Path) -> None:
    path = tmp_path / "c"
    good = Event(EventType.EXEC, 1, 1, 1, 0, 0, "a")
    with CaptureWriter(path, HEADER) as w:
        w.write_event(good)
        with pytest.raises(ValueError):
            w.write_event(Event(EventType.EXEC, 2**64, 1, 1, 0, 0, "a"))
        with pytest.raises(ValueError):
            w.write_event(Event(EventType.EXEC, 1, 1, 1, 0, 0, "\ud800"))  # not from surrogateescape
        with pytest.raises(ValueError, match="argv"):
            w.write_event(Event(EventType.EXEC, 1, 1, 1, 0, 0, "a", argv=["x"] * (MAX_ARRAY_LEN + 1)))
        with pytest.raises(ValueError, match="limit"):
            w.write_fd(1, 1, "x" * MAX_RECORD_BYTES)
        with pytest.raises(ValueError):
            w.write_loss(1, "open", -(2**64))
        w.write_event(good)
    items, reader = read_all(path)
    assert reader.problem is None
    assert items[1:] == [good, good]


def test_writer_truncates_without_append_and_refuses_symlinks_and_a_second_writer(tmp_path: Path) -> None:
    path = tmp_path / "c"
    with CaptureWriter(path, HEADER) as w:
        w.write_event(Event(EventType.EXEC, 1, 1, 1, 0, 0, "a"))
    with CaptureWriter(path, HEADER):
        pass
    assert read_all(path)[0][1:] == []
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(CaptureError, match="symbolic link"):
        CaptureWriter(link, HEADER)
    with CaptureWriter(path, HEADER, append=True), pytest.raises(CaptureError, match="another process"):
        CaptureWriter(path, HEADER, append=True)
    with pytest.raises(CaptureError, match="regular file"):
        CaptureWriter("/dev/null", HEADER, append=True)


def test_append_cuts_a_partial_record_left_by_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "c"
    first = Event(EventType.EXEC, 1, 1, 1, 0, 0, "a", argv=["x"] * 10)
    with CaptureWriter(path, HEADER) as w:
        w.write_event(first)
        w.write_event(first)
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # the crash
    second = Event(EventType.EXIT, 2, 1, 1, 0, 0, "a")
    with CaptureWriter(path, HEADER, append=True) as w:
        w.write_event(second)
    items, reader = read_all(path)
    assert reader.problem is None
    assert [type(i) for i in items] == [SegmentStart, Event, SegmentStart, Event]
    assert items[1] == first and items[3] == second


def test_append_to_a_crash_during_the_header_and_to_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "c"
    path.write_bytes(header_bytes()[:7])
    with CaptureWriter(path, HEADER, append=True):
        pass
    assert len(read_all(path)[1].segments) == 1
    path.write_bytes(b"")
    with CaptureWriter(path, HEADER, append=True):
        pass
    assert len(read_all(path)[1].segments) == 1


def test_append_refuses_corrupt_files_and_other_formats(tmp_path: Path) -> None:
    path = tmp_path / "c"
    path.write_bytes(header_bytes() + b"\xc1" + pack([5, 1]))
    with pytest.raises(CaptureError, match="not appending"):
        CaptureWriter(path, HEADER, append=True)
    path.write_bytes(b"#!/bin/sh\necho hello\n")
    with pytest.raises(CaptureError):
        CaptureWriter(path, HEADER, append=True)
    assert path.read_bytes() == b"#!/bin/sh\necho hello\n"


# -- truncation --------------------------------------------------------------------------------------------


def _small_capture(tmp: Path) -> tuple[bytes, list[int], list[Any]]:
    """A capture with one record of each kind and a second segment; returns bytes, record ends, items."""
    path = tmp / "full"
    ends: list[int] = []
    with CaptureWriter(path, HEADER) as w:
        ends.append(path.stat().st_size)

        def mark() -> None:
            w.flush()
            ends.append(path.stat().st_size)

        w.write_event(Event(EventType.EXEC, 5, 10, 10, 0, 0, "sh", filename="/bin/ls", argv=["ls", "-l"]))
        mark()
        if ProcFacts is not None:
            w.write_facts(make_facts())
            mark()
        w.write_fd(10, 3, "/etc/passwd")
        mark()
        w.write_loss(6, "open", 3)
        mark()
        w.write_snapshot_end(7)
        mark()
        w.write_facts_miss(11)
        mark()
    with CaptureWriter(path, {**HEADER, "boot_id": "2"}, append=True) as w:
        ends.append(path.stat().st_size)
        w.write_event(Event(EventType.CONNECT, 8, 10, 10, 0, 0, "sh", address="10.0.0.1", port=443))
        mark()
    items, reader = read_all(path)
    assert reader.problem is None and len(items) == len(ends)
    return path.read_bytes(), ends, items


def test_truncation_at_every_byte_yields_the_complete_records_and_locates_the_cut(tmp_path: Path) -> None:
    data, ends, items = _small_capture(tmp_path)
    path = tmp_path / "cut"
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        if cut < ends[0]:
            with pytest.raises(CaptureError) as info:
                CaptureReader(path)
            assert info.value.problem.offset == 0
            assert info.value.problem.kind == ("not-a-capture" if cut == 0 else "truncated")
            assert str(path) in str(info.value)
            continue
        got, reader = read_all(path)
        complete = sum(1 for end in ends if end <= cut)
        assert got == items[:complete], cut
        if cut in ends:
            assert reader.problem is None, cut
        else:
            assert reader.problem is not None
            assert reader.problem.kind == "truncated"
            assert reader.problem.offset == ends[complete - 1], cut
            assert str(reader.problem).startswith(f"{path}: at byte {ends[complete - 1]}: ")


# -- corrupt and hostile input -----------------------------------------------------------------------------


def test_missing_empty_and_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cannot open") as info:
        CaptureReader(tmp_path / "nope")
    assert info.value.problem.kind == "io"
    cases = {
        b"": "empty file",
        b"hello world\n": "not a sentinel capture",
        pack([1, 1, 2, 3]): "expected a capture header map",
        pack({"format": "other", "version": 1}): "not a sentinel capture: format is str 'other'",
        b"\xc1\x00": "not valid msgpack",
        b"\xdd\x00\x00\x10\x00": "does not start with a header map",
        b"\xda\x10\x00abc": "does not start with a header map",
        pack({1: 2}): "not a sentinel capture: .*map key",
    }
    for data, message in cases.items():
        (tmp_path / "f").write_bytes(data)
        with pytest.raises(CaptureError, match=message) as info:
            CaptureReader(tmp_path / "f")
        assert info.value.problem.kind == "not-a-capture"
        assert info.value.problem.offset == 0


def test_headerless_file_is_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "c"
    path.write_bytes(pack(VALID_EVENT) + pack([6, 1]))
    with pytest.raises(CaptureError, match="expected a capture header map, found list") as info:
        CaptureReader(path)
    assert (info.value.problem.kind, info.value.problem.offset) == ("not-a-capture", 0)


@pytest.mark.parametrize(
    ("changes", "kind", "message"),
    [
        ({"version": 9}, "unsupported", "unsupported capture version 9"),
        ({"version": "1"}, "corrupt", "version is str"),
        ({"format": "sentinel-capturez"}, "not-a-capture", "not a sentinel capture: format is str"),
        ({"boot_time_ns": None}, "corrupt", "lacks 'boot_time_ns'"),
        ({"hostname": b"bin"}, "corrupt", "'hostname' is bytes"),
    ],
)
def test_bad_first_headers(tmp_path: Path, changes: dict[str, Any], kind: str, message: str) -> None:
    path = tmp_path / "c"
    path.write_bytes(header_bytes(**changes) + pack([6, 1]))
    with pytest.raises(CaptureError, match=message) as info:
        CaptureReader(path)
    assert info.value.problem.kind == kind and info.value.problem.offset == 0


def test_unknown_header_keys_are_allowed(tmp_path: Path) -> None:
    path = tmp_path / "c"
    path.write_bytes(header_bytes(future={"probes": ["a", "b"]}) + pack([6, 1]))
    items, reader = read_all(path)
    assert reader.problem is None and items[1] == FactsMiss(1)


VALID_EVENT = [1, 2, 7, 1, 1, 0, 0, b"c", 0, 0, 0, b"", [], 0, b"/p", -100, 0, 0, 0, -1, 0, b"", 0, 0, 0, 0]
VALID_EVENT_V6 = [*VALID_EVENT, 0, b"", 0, 0, -1, -1, 0, None, None, None, None, None, None]
FACTS_V6 = [2, 1, 2, 3, b"c", None, None, None, 0, 0, 0, False, False, None, 0, 0]


def _with(index: int, value: object) -> list[object]:
    record = list(VALID_EVENT)
    record[index] = value
    return record


def _meta_record(index: int, value: object) -> bytes:
    """A found container_meta record whose meta array has ``value`` at ``index``."""
    meta: list[Any] = [b""] * 7 + [[], False, None, None, None, None, None]
    meta[index] = value
    return pack([10, b"a", "found", meta])


BAD_RECORDS: list[Any] = [
    (pack(VALID_EVENT[:10]), r"event record has 10 elements, expected 39 \(or 37, 34 or 26: versions 3 to"),
    (pack([*VALID_EVENT, 0]), "event record has 27 elements"),
    (pack(_with(3, "1")), "event record pid is str '1', expected an integer"),
    (pack(_with(3, True)), "pid is True"),
    (pack(_with(2, 1.5)), "ts_ns is float"),
    (pack(_with(7, "comm")), "comm is str"),
    (pack(_with(14, None)), "path is None"),
    (pack(_with(12, [b"ok", "str"])), r"argv\[1\] is str"),
    (pack(_with(12, b"ls")), "argv is bytes"),
    (pack(_with(12, {b"k": b"v"})), "argv is dict"),
    (pack(_with(1, "exec")), "no integer event type"),
    (pack([1]), "no integer event type"),
    (pack([]), "record kind is missing"),
    (pack([True, 1]), "record kind is True"),
    (pack(["event"]), "record kind is str"),
    (pack([11, 1, 2]), "unknown record kind 11"),
    (pack(5), "expected a record array or a header map, found integer 5"),
    (pack(b"\x00"), "found bytes"),
    (pack(None), "found None"),
    (pack([3, 1, 2]), "fd record has 3 elements, expected 4"),
    (pack([3, 1, 2, 5]), "fd record path is integer 5, expected bin"),
    (pack([3, 1, 2, "/p"]), "path is str"),
    (pack([4, 1, b"open", 3]), "loss record event_type is bytes"),
    (pack([4, 1, "open", "3"]), "loss record count is str"),
    (pack([5]), "snapshot_end record has 1 elements"),
    (pack([6, "1"]), "facts_miss record pid is str"),
    (pack([8, b"/x", 1]), "identity record has 3 elements, expected 4"),
    (pack([9, 1, "docker", b"a", b"a"]), "container record has 5 elements, expected 7"),
    (pack([9, "1", None, None, None, False]), "container record pid is str"),
    (pack([9, 1, None, None, None, None]), "container record rootless is None, expected a boolean"),
    (pack([9, 1, b"docker", b"a", b"a", False]), "container record runtime is bytes"),
    (pack([9, 1, "docker", "a", b"a", False]), "container record full_id is str"),
    (pack([9, 1, "docker", b"a", None, False]), "container record id is None"),
    (pack([9, 1, "docker", b"a", b"a", False, "u"]), "container record pod_uid is str"),
    (pack([10, b"a", "found"]), "container_meta record has 3 elements, expected 4"),
    (pack([10, "a", "pending", None]), "container_meta record full_id is str"),
    (pack([10, b"a", "asked", None]), "container_meta record state is str 'asked', expected one of"),
    (pack([10, b"a", b"found", None]), "state is bytes"),
    (pack([10, b"a", "found", None]), "meta is None for state found: given exactly when found"),
    (pack([10, b"a", "pending", [b""] * 14]), "meta is list of 14 items for state pending"),
    (pack([10, b"a", "found", [b""] * 13]), "meta is list .*, expected an array of 16"),
    (_meta_record(0, "x"), "source is str"),
    (_meta_record(7, [b"k"]), "labels is list .*, expected an array of keys and values"),
    (_meta_record(7, ["k", "v"]), "labels is str"),
    (_meta_record(8, None), "labels_truncated is None, expected a boolean"),
    (_meta_record(9, 1), "privileged is integer 1, expected a boolean or nil"),
    (_meta_record(13, [b""] * 4), "pod is list .*, expected an array of 5 or nil"),
    (_meta_record(13, [b""] * 4 + [[b"k"]]), "pod labels is list"),
    (pack([8, "/x", 1, 2]), "identity record path is str"),
    (pack([8, b"/x", 1, None]), "identity record dev is None"),
    (pack([8, b"/x", "1", 2]), "identity record ino is str"),
    *(
        pytest.param(bad, message)
        for bad, message in [
            (pack([2, 1, 2]), "facts record has 3 elements, expected 16"),
            (pack([*FACTS_V6[:13], "1", 2, 3]), "facts record vpid is str '1', expected nil or an integer"),
            (pack([*FACTS_V6[:13], None, None, 3]), "facts record pid_ns is None, expected an integer"),
            (pack([*FACTS_V6[:13], 1, 2, True]), "facts record mnt_ns is True, expected an integer"),
            (
                pack([2, 1, 2, 3, b"c", None, None, b"no-nul", 0, 0, 0]),
                "facts record args does not end with NUL",
            ),
            (pack([2, 1, 2, 3, b"c", None, None, ["a"], 0, 0, 0]), "args is list"),
            (pack([2, 1, 2, 3, "c", None, None, None, 0, 0, 0]), "comm is str"),
            (pack([2, 1, 2, 3, b"c", 7, None, None, 0, 0, 0]), "exe is integer 7"),
            (pack([2, 1, 2, 3, b"c", None, None, None, 0, 0, None]), "tty_nr is None"),
        ]
    ),
    (pack({"format": "sentinel-capture", "version": 9}), "unsupported capture version 9"),
    (pack([*VALID_EVENT_V6[:-2], [1, 2, 3], None]), "event record ns is list of 3 items, expected nil or an"),
    (pack([*VALID_EVENT_V6[:-2], None, [1, 2, 3, "4"]]), "event record child_ns is list of 4 items"),
    (pack([*VALID_EVENT_V6[:-2], 1, None]), "event record ns is integer 1"),
    (pack({"format": "x", "version": 1}), "a map that is not a segment header: format is str 'x'"),
    (pack({"format": "sentinel-capture", "version": 1}), "header lacks 'hostname'"),
    (b"\xc1", "not valid msgpack"),
    (b"\x92\x05\xc1", "not valid msgpack"),
    (b"\xa3\xff\xfe\xfd", "not valid UTF-8"),
    (b"\x91\xd4\x00\x01", "max_ext_len"),
    (b"\x92\x05\xc7\x00\x05", "ts_ns is ExtType"),  # a zero-length ext gets through the length limit
    (b"\x91" * 2000 + b"\x05", "nested too deeply|more than"),
    (b"\xdd\xff\xff\xff\xff" + b"\x00" * 64, "max_array_len"),
    (b"\xdf\xff\xff\xff\xff" + b"\x00" * 64, "max_map_len"),
    (pack("a" * (64 * 1024 + 1)), "max_str_len"),
    (pack([[[]] * 10] * 10), "more than 64 arrays/maps"),
    (pack({"k": [{}] * 100}), "more than 64 arrays/maps"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_RECORDS)
def test_corrupt_records_stop_reading_with_their_offset(tmp_path: Path, bad: bytes, message: str) -> None:
    path = tmp_path / "c"
    prefix = header_bytes() + pack([6, 1]) + pack([5, 2])
    path.write_bytes(prefix + bad + pack([6, 3]))
    items, reader = read_all(path)
    assert items[1:] == [FactsMiss(1), SnapshotEnd(2)]
    assert reader.problem is not None
    assert reader.problem.offset == len(prefix)
    assert reader.problem.kind in ("corrupt", "unsupported")
    assert reader.problem.path == str(path)
    assert str(reader.problem).startswith(f"{path}: at byte {len(prefix)}: ")
    assert re.search(message, reader.problem.message), reader.problem.message


def test_declared_lengths_far_beyond_the_file_do_not_allocate(tmp_path: Path) -> None:
    # bin32/array32 headers claiming 4 GiB: the reader must stop, not try to buffer or pre-allocate it all.
    for bad in (b"\x92\x06\xc6\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xfe"):
        path = tmp_path / "c"
        path.write_bytes(header_bytes() + bad + b"\x00" * (MAX_RECORD_BYTES + 1024))
        items, reader = read_all(path)
        assert len(items) == 1
        assert reader.problem is not None and reader.problem.offset == len(header_bytes())


def test_a_record_at_the_size_limit_reads_and_one_byte_more_does_not(tmp_path: Path) -> None:
    path = tmp_path / "c"
    overhead = len(pack([3, 1, 2, b"\x00" * 70_000])) - 70_000
    at_limit = pack([3, 1, 2, b"x" * (MAX_RECORD_BYTES - overhead)])
    assert len(at_limit) == MAX_RECORD_BYTES
    with CaptureWriter(path, HEADER) as w:
        w.write_fd(1, 2, "x" * (MAX_RECORD_BYTES - overhead))
        with pytest.raises(ValueError, match="limit"):
            w.write_fd(1, 2, "x" * (MAX_RECORD_BYTES - overhead + 1))
        w.write_facts_miss(5)
    items, reader = read_all(path)
    assert reader.problem is None
    assert len(items[1].path) == MAX_RECORD_BYTES - overhead and items[2] == FactsMiss(5)
    path.write_bytes(header_bytes() + pack([3, 1, 2, b"x" * (MAX_RECORD_BYTES - overhead + 1)]))
    items, reader = read_all(path)
    assert len(items) == 1 and reader.problem is not None and reader.problem.kind == "corrupt"


def test_a_record_whose_parts_add_up_past_the_limit_is_refused(tmp_path: Path) -> None:
    # Each bin is within max_bin_len; together they exceed the record limit (msgpack >= 1.1 would accept it).
    path = tmp_path / "c"
    six_mib = b"x" * (6 << 20)
    path.write_bytes(
        header_bytes() + pack([6, 1]) + pack(_with(12, [six_mib, six_mib, six_mib])) + pack([6, 2])
    )
    items, reader = read_all(path)
    assert items[1:] == [FactsMiss(1)]
    assert reader.problem is not None and reader.problem.kind == "corrupt"
    assert reader.problem.offset == len(header_bytes() + pack([6, 1]))
    assert "larger than" in reader.problem.message


def test_a_later_segment_with_another_version_stops_there(tmp_path: Path) -> None:
    path = tmp_path / "c"
    first = header_bytes() + pack([6, 1])
    path.write_bytes(first + header_bytes(version=9) + pack([6, 2]))
    items, reader = read_all(path)
    assert items[1:] == [FactsMiss(1)]
    assert reader.problem is not None
    assert (reader.problem.kind, reader.problem.offset) == ("unsupported", len(first))


def test_iterating_twice_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c"
    path.write_bytes(header_bytes())
    reader = CaptureReader(path)
    list(reader)
    with pytest.raises(ValueError, match="once"):
        list(reader)


def _check_outcome(path: Path, size: int) -> tuple[list[Any], CaptureReader | None]:
    """Read a possibly broken file: only CaptureError may escape, and every problem is located."""
    try:
        reader = CaptureReader(path)
    except CaptureError as exc:
        assert 0 <= exc.problem.offset <= size
        assert str(exc).startswith(f"{path}: at byte ")
        return [], None
    items = list(reader)
    assert all(isinstance(i, ITEM_TYPES) for i in items)
    if reader.problem is not None:
        assert 0 < reader.problem.offset <= size
        assert str(reader.problem).startswith(f"{path}: at byte {reader.problem.offset}: ")
    return items, reader


_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(st.binary(max_size=2000))
def test_random_garbage_is_never_a_capture(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g"
        path.write_bytes(data)
        with pytest.raises(CaptureError) as info:
            CaptureReader(path)
    assert info.value.problem.offset == 0


@_SETTINGS
@given(st.binary(min_size=1, max_size=2000))
def test_garbage_after_valid_records_is_located(garbage: bytes) -> None:
    valid = header_bytes() + pack([6, 1]) + pack(VALID_EVENT)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g"
        path.write_bytes(valid + garbage)
        items, reader = _check_outcome(path, len(valid) + len(garbage))
    assert reader is not None
    assert items[1] == FactsMiss(1) and isinstance(items[2], Event)
    if reader.problem is not None:
        assert reader.problem.offset >= len(valid)
    else:  # the garbage happened to be well-formed records
        assert len(items) > 3 or reader.unknown_event_types


@pytest.fixture(scope="module")
def sample_capture(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _small_capture(tmp_path_factory.mktemp("sample"))[0]


@_SETTINGS
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0), st.sampled_from(["set", "insert", "delete"]), st.integers(0, 255)
        ),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_captures_never_crash_the_reader(
    sample_capture: bytes, edits: list[tuple[int, str, int]]
) -> None:
    data = bytearray(sample_capture)
    for position, op, value in edits:
        at = position % (len(data) + 1)
        if op == "insert":
            data[at:at] = bytes([value])
        elif data and at < len(data):
            if op == "set":
                data[at] = value
            else:
                del data[at]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m"
        path.write_bytes(bytes(data))
        _check_outcome(path, len(data))


# -- describe ----------------------------------------------------------------------------------------------


def test_describe_counts_records_events_and_losses(tmp_path: Path) -> None:
    path = tmp_path / "c"
    with CaptureWriter(path, HEADER) as w:
        for _ in range(3):
            w.write_event(Event(EventType.OPEN, 1, 1, 1, 0, 0, "a"))
        w.write_event(Event(EventType.EXEC, 1, 1, 1, 0, 0, "a"))
        w.write_fd(1, 2, None)
        w.write_loss(5, "open", 10)
        w.write_loss(6, "open", 5)
        w.write_snapshot_end(1)
        w.write_facts_miss(3)
    with CaptureWriter(path, HEADER, append=True):
        pass
    with open(path, "ab") as fh:
        fh.write(b"\xc1")
    summary = describe(path)
    assert summary.records == {
        "header": 2,
        "event": 4,
        "fd": 1,
        "loss": 2,
        "snapshot_end": 1,
        "facts_miss": 1,
    }
    assert summary.events == {"open": 3, "execve": 1}
    assert summary.lost == {"open": 15}
    assert len(summary.headers) == 2
    assert summary.problem is not None and summary.problem.offset == path.stat().st_size - 1
