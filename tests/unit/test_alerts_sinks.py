"""Alert outputs: ``--output`` parsing, stdout, the NDJSON file sink (append, 0600, flush per batch, failures
counted without stopping detection), and fan-out to several outputs.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sentinel import log as logmod
from sentinel.sinks import FileSink, MultiSink, OutputSpecError, StdoutSink, open_sinks, parse_output


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("stdout", ("stdout", None)), ("-", ("stdout", None)),
     ("file:/var/log/a.json", ("file", "/var/log/a.json")), ("file:rel.json", ("file", "rel.json"))],
)  # fmt: skip
def test_parse_output(spec: str, expected: tuple[str, str | None]) -> None:
    assert parse_output(spec) == expected


@pytest.mark.parametrize("spec", ["file:", "udp:1.2.3.4", "", "syslog"])
def test_parse_output_rejects(spec: str) -> None:
    with pytest.raises(OutputSpecError):
        parse_output(spec)


def test_stdout_sink_writes_lines() -> None:
    out = io.BytesIO()
    sink = StdoutSink(out)
    sink.write(b'{"a":1}')
    sink.write(b'{"b":2}')
    sink.flush()
    assert out.getvalue() == b'{"a":1}\n{"b":2}\n'
    assert sink.written == 2


def test_file_sink_creates_0600_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    old = os.umask(0)
    try:
        sink = FileSink(str(path))
    finally:
        os.umask(old)
    sink.write(b'{"n":1}')
    assert path.read_bytes() == b""  # buffered until the batch is flushed
    sink.flush()
    assert path.read_bytes() == b'{"n":1}\n'
    sink.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = FileSink(str(path))
    again.write(b'{"n":2}')
    again.close()  # close flushes
    assert path.read_bytes() == b'{"n":1}\n{"n":2}\n'
    again.close()  # idempotent


def test_file_sink_keeps_an_existing_files_mode(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    path.write_bytes(b"{}\n")
    path.chmod(0o640)
    FileSink(str(path)).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_file_sink_failures_are_counted_and_reported_once() -> None:
    logmod.configure("info")
    sink = FileSink("/dev/full")
    with capture_logs() as logs:
        for _ in range(3):
            sink.write(b"x" * 70_000)  # larger than the buffer: written (and failing) at once
            sink.flush()
        sink.close()
    assert sink.errors >= 3
    failed = [e for e in logs if e["event"] == "sentinel.sink_failed"]
    assert len(failed) == 1
    assert failed[0]["sink"] == "file:/dev/full"


def test_open_sinks(tmp_path: Path) -> None:
    out = io.BytesIO()
    single = open_sinks(["stdout"], stdout=out)
    assert isinstance(single, StdoutSink)
    path = tmp_path / "a.json"
    both = open_sinks(["stdout", f"file:{path}"], stdout=out)
    assert isinstance(both, MultiSink)
    both.write(b"{}")
    both.close()
    assert out.getvalue() == b"{}\n"
    assert path.read_bytes() == b"{}\n"
    assert both.written == 1
    assert isinstance(open_sinks([], stdout=out), StdoutSink)  # default


def test_open_sinks_fails_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        open_sinks([f"file:{tmp_path}/missing-dir/a.json"], stdout=io.BytesIO())
