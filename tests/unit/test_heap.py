"""Returning freed heap to the kernel: callable any time, on any C library, and it does release memory that
freed C allocations left mapped."""

from __future__ import annotations

import ctypes

from sentinel import heap


def rss_anon_kib() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("RssAnon:"))


def test_freed_heap_goes_back_to_the_kernel() -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(64 * 1024) for _ in range(1024)]  # 64 MiB below the mmap threshold: the heap
    for p in blocks:
        ctypes.memset(p, 1, 64 * 1024)  # touched: resident
    keep = blocks[-1]  # the top block stays in use, so glibc cannot give the rest back by itself
    for p in blocks[:-1]:
        libc.free(p)
    before = rss_anon_kib()
    assert heap.release_free_heap() is True
    assert before - rss_anon_kib() > 32 * 1024  # most of the 64 MiB freed below the live block
    libc.free(keep)
    assert heap.release_free_heap() in (True, False)  # nothing left to give: still fine
