"""The on-disk spool: lines on disk when flush() returns, acknowledged position survives a restart, torn and
NUL-filled lines skipped and counted, drop-oldest past the bound with the dropped lines counted, one process
per directory, and a damaged ack file or a vanished segment never stops it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sentinel import log as logmod
from sentinel.sinks.spool import ACK_FILE, Spool, SpoolError, segment_bytes_for, spool_dir


def drain(spool: Spool, max_lines: int = 1000) -> list[bytes]:
    out: list[bytes] = []
    while (batch := spool.peek(max_lines)) is not None:
        out.extend(batch.lines)
        spool.ack(batch)
    return out


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def test_lines_reach_the_disk_at_flush(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 1 << 20)
    spool.append(b"one")
    spool.append(b"two")
    assert spool.peek(10) is None and not any(p.stat().st_size for p in segments(tmp_path))
    spool.flush()
    assert b"".join(p.read_bytes() for p in segments(tmp_path)) == b"one\ntwo\n"
    assert stat_mode(segments(tmp_path)[0]) == 0o600 and stat_mode(tmp_path) == 0o700
    batch = spool.peek(10)
    assert batch is not None and batch.lines == [b"one", b"two"]
    assert spool.stats()["backlog_alerts"] == 2
    spool.ack(batch)
    assert spool.stats()["backlog_alerts"] == 0 and spool.peek(10) is None
    spool.close()


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_restart_resumes_after_the_acknowledged_position(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 1 << 20)
    for i in range(10):
        spool.append(b"line %d" % i)
    spool.flush()
    batch = spool.peek(4)
    assert batch is not None
    spool.ack(batch)
    spool.peek(3)  # read but never acknowledged: delivered again after the restart
    spool.close()
    again = Spool(str(tmp_path), 1 << 20)
    assert again.stats()["backlog_alerts"] == 6
    assert drain(again) == [b"line %d" % i for i in range(4, 10)]
    again.append(b"after")
    again.flush()
    assert drain(again) == [b"after"]
    again.close()


def test_a_torn_tail_is_skipped_and_counted(tmp_path: Path) -> None:
    (tmp_path / "0000000000000001.seg").write_bytes(b'a\nb\n{"cut')
    (tmp_path / "0000000000000002.seg").write_bytes(b"c\n")
    logmod.configure("info")
    with capture_logs() as logs:
        spool = Spool(str(tmp_path), 1 << 20)
        assert drain(spool) == [b"a", b"b", b"c"]
    assert spool.stats()["corrupt"] == 1
    assert any(e["event"] == "sentinel.spool_torn_line" for e in logs)
    assert not (tmp_path / "0000000000000001.seg").exists()  # delivered segments are deleted
    spool.close()


def test_nul_filled_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    (tmp_path / "0000000000000001.seg").write_bytes(b"a\n\x00\x00\x00\x00\nb\n\nc\n")
    spool = Spool(str(tmp_path), 1 << 20)
    assert drain(spool, max_lines=2) == [b"a", b"b", b"c"]
    assert spool.stats()["corrupt"] == 2
    spool.close()


def test_drop_oldest_past_the_bound(tmp_path: Path) -> None:
    logmod.configure("info")
    spool = Spool(str(tmp_path), 8192)
    assert segment_bytes_for(8192) == 1024
    with capture_logs() as logs:
        for i in range(1000):
            spool.append(b"%04d" % i + b"." * 95)  # 100 bytes a line
            if i % 5 == 4:
                spool.flush()
    stats = spool.stats()
    assert stats["spool_bytes"] <= 8192 + 1024
    assert stats["dropped"] + stats["backlog_alerts"] == 1000
    kept = drain(spool)
    assert len(kept) == stats["backlog_alerts"]
    numbers = [int(x[:4]) for x in kept]
    assert numbers == list(range(numbers[0], 1000))  # the newest, contiguous
    assert [e["event"] for e in logs].count("sentinel.spool_dropping") == 1
    spool.close()


def test_a_batch_dropped_while_in_flight_is_not_acknowledged_twice(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 4096)
    for i in range(20):
        spool.append(b"%03d" % i + b"-" * 96)
    spool.flush()
    batch = spool.peek(5)
    assert batch is not None and spool.still_pending(batch)
    for i in range(20, 200):  # the receiver is slow and the spool overflows meanwhile
        spool.append(b"%03d" % i + b"-" * 96)
        spool.flush()
    assert not spool.still_pending(batch)
    spool.ack(batch)  # ignored: the position already moved past the dropped segment
    kept = drain(spool)
    assert int(kept[-1][:3]) == 199
    assert spool.stats()["dropped"] + len(kept) == 200
    spool.close()


def test_one_process_per_directory(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 1 << 20)
    with pytest.raises(SpoolError, match="in use"):
        Spool(str(tmp_path), 1 << 20)
    spool.close()
    Spool(str(tmp_path), 1 << 20).close()


def test_a_damaged_ack_file_means_redelivery_not_loss(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 1 << 20)
    spool.append(b"x")
    spool.flush()
    spool.close()
    (tmp_path / ACK_FILE).write_bytes(b"garbage")
    again = Spool(str(tmp_path), 1 << 20)
    assert drain(again) == [b"x"]
    again.close()


def test_a_segment_removed_behind_its_back(tmp_path: Path) -> None:
    logmod.configure("info")
    spool = Spool(str(tmp_path), 1 << 20)
    spool.segment_bytes = 7
    for i in range(6):
        spool.append(b"line-%d" % i)
        spool.flush()  # one small segment per line
    os.unlink(segments(tmp_path)[0])
    with capture_logs():
        assert drain(spool) == [b"line-%d" % i for i in range(1, 6)]
    assert spool.stats()["dropped"] == 1
    spool.close()


def test_a_line_longer_than_one_read(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 1 << 20)
    spool.append(b"y" * 5000)
    spool.append(b"z")
    spool.flush()
    batch = spool.peek(1, max_bytes=100)
    assert batch is not None and batch.lines == [b"y" * 5000]  # read whole, never cut
    spool.ack(batch)
    assert drain(spool) == [b"z"]
    spool.close()


def test_delivered_segments_go_away(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 1 << 20)
    spool.segment_bytes = 1000
    for _ in range(50):
        for _ in range(10):
            spool.append(b"q" * 99)
        spool.flush()
    assert len(segments(tmp_path)) >= 40
    drain(spool)
    spool.append(b"last")
    spool.flush()
    drain(spool)
    assert len(segments(tmp_path)) <= 2
    assert spool.stats()["spool_bytes"] < 3000
    spool.close()


def test_spool_dir_is_safe_and_distinct() -> None:
    a = spool_dir("/var/lib/sentinel", "http:https://siem.example:8088/services/collector")
    b = spool_dir("/var/lib/sentinel", "http:https://siem.example:8088/services/collector/")
    assert a.startswith("/var/lib/sentinel/spool/http_https_siem.example_8088_services_collector-")
    assert a != b and "/" not in os.path.basename(a)
    assert os.path.basename(spool_dir("/s", "../../etc")).startswith("etc-")


def test_numbers_are_never_reused_after_a_full_drain(tmp_path: Path) -> None:
    """Drained and restarted, then killed before the first acknowledgement: the new lines must survive."""
    spool = Spool(str(tmp_path), 1 << 20)
    spool.segment_bytes = 10
    for i in range(5):
        spool.append(b"old-%d" % i)
        spool.flush()
    assert drain(spool) == [b"old-%d" % i for i in range(5)]
    spool.close()
    assert not segments(tmp_path)  # nothing left on disk once delivered
    second = Spool(str(tmp_path), 1 << 20)
    second.append(b"new")
    second.flush()
    second._closed = True  # as if SIGKILLed: no close(), no acknowledgement
    os.close(second._lock_fd)
    third = Spool(str(tmp_path), 1 << 20)
    assert drain(third) == [b"new"]
    third.close()


def test_an_ack_naming_a_vanished_segment_starts_at_the_oldest(tmp_path: Path) -> None:
    (tmp_path / ACK_FILE).write_bytes(b"3 5\n")  # segment 3 is gone; 4 was never acknowledged
    (tmp_path / "0000000000000004.seg").write_bytes(b"kept\n")
    spool = Spool(str(tmp_path), 1 << 20)
    assert (tmp_path / ACK_FILE).read_bytes() == b"4 0\n"  # recorded at once
    assert drain(spool) == [b"kept"]
    spool.close()
