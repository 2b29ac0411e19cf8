"""The direct perf-ring reader: records split exactly as the kernel lays them out, wrap-around, losses, and
malformed data never misread. The kernel side is covered by the sensor's integration tests (both readers)."""

from __future__ import annotations

import struct

import pytest

from sentinel.sensor.perfring import PERF_RECORD_LOST, PERF_RECORD_SAMPLE, PerfReader, PerfRing, split_records

PAGE = 4096


def sample(raw: bytes) -> bytes:
    """A PERF_RECORD_SAMPLE as the kernel writes it: raw data padded so the record is 8-byte aligned."""
    body = struct.pack("<I", 0) + raw
    pad = (-len(body)) % 8
    raw_padded = raw + bytes(pad)
    return struct.pack("<IHHI", PERF_RECORD_SAMPLE, 0, 8 + 4 + len(raw_padded), len(raw_padded)) + raw_padded


def lost(n: int) -> bytes:
    return struct.pack("<IHHQQ", PERF_RECORD_LOST, 0, 24, 7, n)


def fake_ring(pages: int = 1) -> PerfRing:
    ring = object.__new__(PerfRing)
    ring.mm = bytearray((pages + 1) * PAGE)  # type: ignore[assignment]
    ring.base, ring.mask, ring.tail, ring.lost, ring.cpu, ring.fd = PAGE, pages * PAGE - 1, 0, 0, 0, -1
    return ring


def produce(ring: PerfRing, data: bytes) -> None:
    """What the kernel does: write at head (wrapping), then publish the new head."""
    head = struct.unpack_from("<Q", ring.mm, 1024)[0]
    size = ring.mask + 1
    for i, b in enumerate(data):
        ring.mm[ring.base + ((head + i) & ring.mask)] = b
    assert len(data) <= size
    struct.pack_into("<Q", ring.mm, 1024, head + len(data))


def test_samples_keep_their_padding_and_order() -> None:
    out: list[bytes] = []
    buf = sample(b"abc") + sample(b"12345678") + sample(b"")
    assert split_records(buf, out) == 0
    assert out == [b"abc" + bytes(1), b"12345678" + bytes(4), bytes(4)]


def test_lost_records_are_counted_on_the_ring() -> None:
    ring = fake_ring()
    out: list[bytes] = []
    assert split_records(sample(b"x") + lost(5) + lost(2) + sample(b"y"), out, ring) == 0
    assert [o[:1] for o in out] == [b"x", b"y"]
    assert ring.lost == 7


def test_read_follows_head_and_writes_tail() -> None:
    ring = fake_ring()
    produce(ring, sample(b"one") + sample(b"two"))
    out: list[bytes] = []
    assert ring.read(out) == 0
    assert [o.rstrip(b"\0") for o in out] == [b"one", b"two"]
    assert (
        struct.unpack_from("<Q", ring.mm, 1032)[0] == ring.tail == struct.unpack_from("<Q", ring.mm, 1024)[0]
    )
    assert ring.read(out) == 0 and len(out) == 2  # nothing new


def test_read_across_the_end_of_the_ring() -> None:
    ring = fake_ring()
    filler = sample(bytes(4000))
    produce(ring, filler)
    ring.read([])
    rec = sample(b"wrapped-record" * 10)  # starts near the end of the 4 KiB data area and wraps
    produce(ring, rec)
    out: list[bytes] = []
    assert ring.read(out) == 0
    assert out == [b"wrapped-record" * 10 + bytes((-(4 + 140)) % 8)]
    assert ring.tail > PAGE  # head and tail count bytes forever; only the offset wraps


@pytest.mark.parametrize(
    "buf",
    [
        struct.pack("<IHHI", PERF_RECORD_SAMPLE, 0, 0, 0),  # a size that cannot advance
        struct.pack("<IHHI", PERF_RECORD_SAMPLE, 0, 64, 4) + bytes(4),  # runs past the data
        struct.pack("<IHHI", PERF_RECORD_SAMPLE, 0, 16, 400) + bytes(4),  # raw larger than its record
        bytes(5),  # a truncated header
    ],
)
def test_malformed_data_is_reported_not_misread(buf: bytes) -> None:
    out: list[bytes] = []
    assert split_records(sample(b"ok") + buf, out) == 1
    assert out == [b"ok" + bytes(2)]


def test_a_head_beyond_one_lap_is_skipped_not_read() -> None:
    ring = fake_ring()
    struct.pack_into("<Q", ring.mm, 1024, 3 * PAGE)
    out: list[bytes] = []
    assert ring.read(out) == 1 and out == []
    assert ring.tail == 3 * PAGE and struct.unpack_from("<Q", ring.mm, 1032)[0] == 3 * PAGE


def test_sends_that_failed_before_the_rings_opened_are_not_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    """bcc attaches the probes a moment before the rings open: what failed then is reported once (ready),
    and only later failures are losses, each counted once."""
    from sentinel.sensor.loader import BUFFERS, Sensor

    sensor = Sensor()
    sensor.bpf = object()
    counters = {f"submit_failed_{name}": 0 for name in BUFFERS} | {"submit_failed_exec": 7}
    monkeypatch.setattr(Sensor, "kernel_stats", lambda self: dict(counters))
    sensor.at_ready = dict(counters)
    assert sensor.take_losses() == []
    counters["submit_failed_exec"] = 10
    sensor.perf_lost["open"] = 2
    assert sorted(sensor.take_losses()) == [("exec", 3), ("open", 2)]
    assert sensor.take_losses() == []


def test_execs_whose_stash_entry_was_evicted_are_exec_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exec whose exit found no stashed entry was never sent: a loss of the exec buffer, beside (not a
    second view of) failed sends; misses from before the probes were all attached are not counted."""
    from sentinel.sensor.loader import BUFFERS, Sensor

    sensor = Sensor()
    sensor.bpf = object()
    counters = {f"submit_failed_{name}": 0 for name in BUFFERS} | {"exec_stash_miss": 4}
    monkeypatch.setattr(Sensor, "kernel_stats", lambda self: dict(counters))
    sensor.at_ready = dict(counters)
    assert sensor.take_losses() == []
    counters["exec_stash_miss"] = 6
    counters["submit_failed_exec"] = 1
    assert sensor.take_losses() == [("exec", 3)]


def test_the_reader_can_empty_only_the_buffers_named() -> None:
    """Sensor.service empties the exec/proc/sys rings in the middle of a long batch: the open rings stay."""
    reader = object.__new__(PerfReader)
    reader.malformed = 0
    opens, execs = fake_ring(), fake_ring()
    reader.rings = {"exec": [execs], "open": [opens]}
    produce(opens, sample(b"open"))
    produce(execs, sample(b"exec"))
    out: list[bytes] = []
    reader.read(out, ("exec", "proc"))
    assert out == [b"exec"]
    reader.read(out)
    assert out == [b"exec", b"open"]
