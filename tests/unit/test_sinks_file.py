"""File sink: rotation under load keeps every line exactly once and whole, keep_files drops only the oldest,
0600 on every file it creates, reopen after an external logrotate, a partial line left by SIGKILL is cut at
the next open, and failing writes keep their lines (whole) until the disk takes them again.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from sentinel.sinks import SinkConfig, open_sink
from sentinel.sinks import file as filemod
from sentinel.sinks.file import FileSink

REPO = Path(__file__).resolve().parents[2]


def line(i: int) -> bytes:
    return orjson.dumps({"event": {"id": i}, "pad": "x" * (i * 7919 % 400)})


def all_files(path: Path) -> list[Path]:
    """PATH.N … PATH.1, PATH: oldest first."""
    rotated = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    return [*rotated, path] if path.exists() else rotated


def read_ids(files: list[Path]) -> list[int]:
    out = []
    for f in files:
        data = f.read_bytes()
        assert not data or data.endswith(b"\n"), f"{f} ends inside a line"
        out.extend(orjson.loads(x)["event"]["id"] for x in data.splitlines())
    return out


def test_rotation_under_load_keeps_every_line_once(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    old = os.umask(0o022)
    try:
        sink = open_sink(
            SinkConfig(kind="file", target=str(path), rotate_bytes=64 * 1024, keep_files=100), ""
        )
        for i in range(20_000):
            sink.write(line(i))
            if i % 37 == 36:
                sink.flush()
        sink.close()
    finally:
        os.umask(old)
    files = all_files(path)
    assert len(files) > 40  # many rotations
    assert read_ids(files) == list(range(20_000))  # every line exactly once, in order, none split
    for f in files:
        assert f.stat().st_size <= 64 * 1024
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert sink.stats()["rotations"] == len(files) - 1
    assert sink.stats()["delivered"] == 20_000


def test_keep_files_drops_only_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    sink = FileSink(str(path), rotate_bytes=8 * 1024, keep_files=2)
    for i in range(3000):
        sink.write(line(i))
        if i % 10 == 9:
            sink.flush()
    sink.close()
    files = all_files(path)
    assert [f.name for f in files] == ["alerts.json.2", "alerts.json.1", "alerts.json"]
    ids = read_ids(files)
    assert ids == list(range(ids[0], 3000))  # the newest lines, contiguous


def test_keep_zero_and_a_line_longer_than_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    sink = FileSink(str(path), rotate_bytes=1000, keep_files=1)
    big = orjson.dumps({"event": {"id": 1}, "pad": "y" * 5000})
    sink.write(line(0))
    sink.write(big)  # alone in a file of its own, never split
    sink.write(line(2))
    sink.close()
    assert read_ids(all_files(path)) == [1, 2]
    assert (tmp_path / "a.json.1").read_bytes() == big + b"\n"
    none_kept = FileSink(str(tmp_path / "b.json"), rotate_bytes=200, keep_files=0)
    for i in range(50):
        none_kept.write(line(i))
        none_kept.flush()
    none_kept.close()
    assert not list(tmp_path.glob("b.json.*"))


def test_reopen_after_external_logrotate(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    sink = FileSink(str(path))
    sink.write(line(0))
    sink.flush()
    os.rename(path, tmp_path / "alerts.json.1")  # logrotate's rename …
    sink.write(line(1))  # an alert between the rename and the signal
    sink.reopen()  # … then SIGUSR1
    sink.write(line(2))
    sink.close()
    assert read_ids([tmp_path / "alerts.json.1", path]) == [0, 1, 2]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_file_moved_or_deleted_without_signal_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    sink = FileSink(str(path))
    sink.write(line(0))
    sink.flush()
    path.unlink()
    sink.write(line(1))
    sink.flush()
    sink.close()
    assert read_ids([path]) == [1]


def test_reopen_is_safe_inside_a_flush(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path / "a.json"))
    sink.write(line(0))
    sink._busy = True  # as if a signal handler ran while flush() was writing
    sink.reopen()
    assert sink._reopen_wanted
    sink._busy = False
    sink.flush()
    assert not sink._reopen_wanted
    sink.close()
    assert read_ids([tmp_path / "a.json"]) == [0]


def test_a_partial_last_line_is_cut_at_open(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    path.write_bytes(line(0) + b"\n" + line(1)[:20])
    sink = FileSink(str(path))
    sink.write(line(2))
    sink.close()
    assert read_ids([path]) == [0, 2]
    assert sink.repaired == 1
    only_partial = tmp_path / "p.json"
    only_partial.write_bytes(b'{"event":{"id"')
    FileSink(str(only_partial)).close()
    assert only_partial.read_bytes() == b""


class _TornWrites:
    """``os`` for the file module: after ``fail()``, one write stores half its bytes, the next ones fail."""

    def __init__(self) -> None:
        self.failing = False
        self.torn = False

    def fail(self) -> None:
        self.failing, self.torn = True, False

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: Any) -> int:
        if not self.failing:
            return os.write(fd, data)
        if not self.torn and len(data) > 1:
            self.torn = True
            return os.write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")


def test_torn_writes_are_completed_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _TornWrites()
    monkeypatch.setattr(filemod, "os", fake)
    path = tmp_path / "alerts.json"
    sink = FileSink(str(path), rotate_bytes=4000, keep_files=100)
    for i in range(30):
        sink.write(line(i))
    sink.flush()
    for i in range(30, 60):
        sink.write(line(i))
        fake.fail()
        sink.flush()  # writes half of what it has (ending inside a line), then fails
        data = path.read_bytes()
        assert not data.endswith(b"\n")  # torn indeed
    assert sink.stats()["status"] == "failing" and sink.stats()["backlog_alerts"] > 0
    fake.failing = False
    sink.write(line(60))
    sink.close()
    assert read_ids(all_files(path)) == list(range(61))  # the torn line completed, nothing twice
    assert sink.stats()["status"] == "ok" and sink.stats()["dropped"] == 0


def test_failing_writes_keep_lines_up_to_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filemod, "MAX_CARRY_BYTES", 10_000)
    sink = FileSink("/dev/full")
    for i in range(200):
        sink.write(line(i))
        sink.flush()
    stats = sink.stats()
    assert stats["errors"] == 200 and stats["delivered"] == 0
    assert stats["dropped"] > 0 and stats["backlog_bytes"] <= 10_000
    assert stats["dropped"] + stats["backlog_alerts"] == 200
    sink.close()


_WRITER = textwrap.dedent(
    """
    import sys, orjson
    from sentinel.sinks.file import FileSink
    sink = FileSink(sys.argv[1], rotate_bytes=1 << 20, keep_files=1000)
    i = 0
    while True:
        for _ in range(40):
            pad = "z" * (300_000 if i % 97 == 0 else i % 500)  # some lines span many pages
            sink.write(orjson.dumps({"event": {"id": i}, "pad": pad}))
            i += 1
        sink.flush()
        print(i, flush=True)
    """
)


def test_sigkill_leaves_no_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, env=env, cwd=REPO
    )
    assert proc.stdout is not None
    flushed = 0
    while flushed < 6000:
        out = proc.stdout.readline()
        assert out, "writer died"
        flushed = int(out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for out in proc.stdout.read().split():
        flushed = max(flushed, int(out))
    files = all_files(path)
    assert len(files) > 3
    read_ids(files[:-1])  # rotated files: complete lines only
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    for x in complete.splitlines():
        orjson.loads(x)  # every newline-terminated line is a whole document
    FileSink(str(path)).close()  # the restart: a partial tail (if the kill tore a write) is cut
    ids = read_ids(all_files(path))
    counts = Counter(ids)
    assert max(counts.values()) == 1
    assert set(range(flushed)) <= set(counts)  # whatever was flushed before the kill is there


def test_missing_parent_directories_are_created_0750(tmp_path: Path) -> None:
    """`--output file:/var/log/sentinel/alerts.json` on a fresh host: nothing else creates the directory."""
    old = os.umask(0o077)
    try:
        sink = FileSink(str(tmp_path / "log" / "sentinel" / "alerts.json"))
    finally:
        os.umask(old)
    sink.close()
    for d in (tmp_path / "log", tmp_path / "log" / "sentinel"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o750, d
    assert stat.S_IMODE((tmp_path / "log" / "sentinel" / "alerts.json").stat().st_mode) == 0o600
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    FileSink(str(existing / "a.json")).close()
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755  # an operator's directory is left as it is


def test_a_parent_that_is_a_file_is_an_error_at_open(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(OSError):
        FileSink(str(tmp_path / "afile" / "sub" / "alerts.json"))
