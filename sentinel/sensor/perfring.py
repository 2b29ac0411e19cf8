"""Read the probes' perf buffers straight from their mmap'd rings, a batch at a time.

bcc's reader calls back into Python through ctypes once per sample (thunk, argument objects, a copy): at
8,000 samples/s that was a fifth of the agent's CPU. Here each ring's new bytes are copied once per poll and
split into samples by offset. The transport is unchanged — the same ``BPF_PERF_OUTPUT`` maps, one perf event
per CPU, the same ``wakeup_events`` batching — only the user-space side differs. ``PERF_RECORD_LOST`` records
are counted as bcc's ``lost_cb`` counted them.

The ring protocol relies on x86's ordering (loads are not reordered with older loads, nor stores with older
loads): reading ``data_head`` before the data, and the data before writing ``data_tail``, needs no barrier
there. Python cannot issue one, so other architectures keep bcc's reader (:func:`supported`).
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import platform
import select
import struct
from collections.abc import Iterable

PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9
ATTR_SIZE = 112  # PERF_ATTR_SIZE_VER5: every field this reader sets is in it
SYSCALL_PERF_EVENT_OPEN = {"x86_64": 298}

# struct perf_event_mmap_page: data_head, data_tail, data_offset, data_size (kernel >= 4.1)
_CONTROL = struct.Struct("<QQQQ")
_CONTROL_OFFSET = 1024
_TAIL_OFFSET = 1032
_U64 = struct.Struct("<Q")
_HEADER = struct.Struct("<IHHI")  # perf_event_header (type, misc, size) + a sample's raw size
_HEADER8 = struct.Struct("<IHH")
_LOST = struct.Struct("<QQ")  # id, lost


class PerfRingError(OSError):
    """A ring could not be opened or mapped."""


def supported() -> bool:
    """Whether this machine's memory ordering lets Python read the rings without barriers."""
    return platform.machine() in SYSCALL_PERF_EVENT_OPEN


def _attr(wakeup_events: int) -> ctypes.Array[ctypes.c_char]:
    buf = ctypes.create_string_buffer(ATTR_SIZE)
    struct.pack_into("<IIQQQ", buf, 0, PERF_TYPE_SOFTWARE, ATTR_SIZE, PERF_COUNT_SW_BPF_OUTPUT, 1,
                     PERF_SAMPLE_RAW)  # fmt: skip
    struct.pack_into("<I", buf, 48, max(1, wakeup_events))
    return buf


def _perf_event_open(attr: ctypes.Array[ctypes.c_char], cpu: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    nr = SYSCALL_PERF_EVENT_OPEN[platform.machine()]
    fd = libc.syscall(nr, attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise PerfRingError(err, f"perf_event_open on CPU {cpu}: {os.strerror(err)}")
    return int(fd)


class PerfRing:
    """One CPU's ring of one perf buffer."""

    __slots__ = ("base", "cpu", "fd", "lost", "mask", "mm", "tail")

    def __init__(self, cpu: int, pages: int, wakeup_events: int) -> None:
        if pages <= 0 or pages & (pages - 1):
            raise ValueError(f"perf ring pages must be a power of two, not {pages}")
        self.cpu = cpu
        self.fd = _perf_event_open(_attr(wakeup_events), cpu)
        page = mmap.PAGESIZE
        try:
            self.mm = mmap.mmap(
                self.fd, (pages + 1) * page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
            fcntl.ioctl(self.fd, PERF_EVENT_IOC_ENABLE, 0)
        except OSError as exc:
            os.close(self.fd)
            raise PerfRingError(exc.errno, f"mapping the perf ring of CPU {cpu}: {exc.strerror}") from exc
        _head, tail, offset, size = _CONTROL.unpack_from(self.mm, _CONTROL_OFFSET)
        if not offset or size != pages * page:  # kernels before 4.1 leave these 0: the classic layout
            offset, size = page, pages * page
        self.base = offset
        self.mask = size - 1
        self.tail = tail
        self.lost = 0

    def read(self, out: list[bytes]) -> int:
        """Append the ring's new samples to ``out``; return how many records were malformed (then the rest of
        this batch is skipped, never misread)."""
        head = _U64.unpack_from(self.mm, _CONTROL_OFFSET)[0]
        tail = self.tail
        if head == tail:
            return 0
        n = head - tail
        mm, base, size = self.mm, self.base, self.mask + 1
        if n > size:  # the kernel never laps a reader it waits for: a corrupt head, skip what it claims
            _U64.pack_into(mm, _TAIL_OFFSET, head)
            self.tail = head
            return 1
        start = tail & self.mask
        if start + n <= size:
            buf = mm[base + start : base + start + n]
        else:
            buf = mm[base + start : base + size] + mm[base : base + start + n - size]
        bad = split_records(buf, out, self)
        _U64.pack_into(mm, _TAIL_OFFSET, head)
        self.tail = head
        return bad

    def close(self) -> None:
        self.mm.close()
        os.close(self.fd)


def split_records(buf: bytes, out: list[bytes], ring: PerfRing | None = None) -> int:
    """Split a ring's bytes into samples (appended to ``out``) and lost counts (added to ``ring.lost``).

    A sample's raw data keeps the perf padding to 8 bytes, as bcc handed it over. Returns 1 when a record is
    malformed (its size runs past the data or cannot advance) and stops there.
    """
    off = 0
    end = len(buf)
    unpack = _HEADER.unpack_from
    append = out.append
    while off < end:
        if off + 12 <= end:
            rtype, _misc, rsize, raw = unpack(buf, off)
        elif off + 8 <= end:
            (rtype, _misc, rsize), raw = _HEADER8.unpack_from(buf, off), -1
        else:
            return 1
        if rsize < 8 or off + rsize > end:
            return 1
        if rtype == PERF_RECORD_SAMPLE:
            if raw < 0 or 12 + raw > rsize:
                return 1
            append(buf[off + 12 : off + 12 + raw])
        elif rtype == PERF_RECORD_LOST and ring is not None and rsize >= 24:
            ring.lost += _LOST.unpack_from(buf, off + 8)[1]
        off += rsize
    return 0


class PerfReader:
    """Every ring of every buffer, polled together through one epoll."""

    def __init__(self) -> None:
        self.rings: dict[str, list[PerfRing]] = {}
        self._epoll = select.epoll()
        self.malformed = 0

    def open(self, name: str, cpus: Iterable[int], pages: int, wakeup_events: int) -> list[tuple[int, int]]:
        """Open ``name``'s rings; returns (cpu, fd) pairs to store in its BPF_PERF_OUTPUT map."""
        rings = self.rings.setdefault(name, [])
        out = []
        for cpu in cpus:
            ring = PerfRing(cpu, pages, wakeup_events)
            rings.append(ring)
            self._epoll.register(ring.fd, select.EPOLLIN)
            out.append((cpu, ring.fd))
        return out

    def poll(self, timeout_ms: int) -> None:
        """Wait until a ring has a batch ready (``wakeup_events``) or the timeout passes."""
        self._epoll.poll(max(0, timeout_ms) / 1000.0)

    def read(self, out: list[bytes], names: Iterable[str] | None = None) -> None:
        """Drain every ring (or only those of the buffers ``names``) into ``out`` (each CPU's samples in
        order; CPUs are not ordered)."""
        for name in self.rings if names is None else names:
            for ring in self.rings.get(name, ()):
                if ring.read(out):
                    self.malformed += 1

    def take_lost(self) -> dict[str, int]:
        """PERF_RECORD_LOST counts per buffer since the last call."""
        out = {}
        for name, rings in self.rings.items():
            lost = 0
            for ring in rings:
                lost += ring.lost
                ring.lost = 0
            if lost:
                out[name] = lost
        return out

    def close(self) -> None:
        for rings in self.rings.values():
            for ring in rings:
                ring.close()
        self.rings = {}
        self._epoll.close()
