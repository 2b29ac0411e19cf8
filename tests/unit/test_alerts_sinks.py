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
from sentinel.sinks import (
    FileSink,
    MultiSink,
    OutputSpecError,
    PriorityFilter,
    SinkConfig,
    StdoutSink,
    check_sink_config,
    leaf_sinks,
    open_sink,
    open_sinks,
    parse_output,
    sink_config_from_spec,
)
from sentinel.sinks.base import STATS_KEYS


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("stdout", ("stdout", None)), ("-", ("stdout", None)),
     ("file:/var/log/a.json", ("file", "/var/log/a.json")), ("file:rel.json", ("file", "rel.json")),
     ("http:http://127.0.0.1:8080/alerts", ("http", "http://127.0.0.1:8080/alerts")),
     ("https:https://siem.example/hook", ("http", "https://siem.example/hook")),
     ("http:https://siem.example/hook", ("http", "https://siem.example/hook")),
     ("http://127.0.0.1:8080/alerts", ("http", "http://127.0.0.1:8080/alerts")),
     ("https://[::1]:8443/x?y=1", ("http", "https://[::1]:8443/x?y=1")),
     ("syslog:tcp://127.0.0.1:1514", ("syslog", "tcp://127.0.0.1:1514")),
     ("syslog:tls://logs.example:6514", ("syslog", "tls://logs.example:6514")),
     ("syslog:local", ("syslog", "unix:/dev/log")),
     ("syslog:unix:/run/x.sock", ("syslog", "unix:/run/x.sock"))],
)  # fmt: skip
def test_parse_output(spec: str, expected: tuple[str, str | None]) -> None:
    assert parse_output(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [("file:", "needs a path"), ("udp:1.2.3.4", "unknown output"), ("", "unknown output"),
     ("syslog", "needs a target"), ("syslog:", "needs a target"), ("syslog:udp://h:514", "UDP"),
     ("syslog:tcp://h:99999", "port"), ("syslog:h:514", "tcp://HOST:PORT"),
     ("http:127.0.0.1:8080/alerts", "full URL"), ("http:", "full URL"),
     ("https:http://h/", "https: with an http"), ("http://", "full URL"), ("http://h:port/", "port"),
     ("http://h:0/", "port"), ("http://h/a b", "white space"),
     ("ftp://h/", "unknown output")],
)  # fmt: skip
def test_parse_output_rejects(spec: str, message: str) -> None:
    with pytest.raises(OutputSpecError, match=message):
        parse_output(spec)


def test_sink_config_from_spec() -> None:
    cfg = sink_config_from_spec("http:http://127.0.0.1:8080/alerts")
    assert (cfg.kind, cfg.target, cfg.preset) == ("http", "http://127.0.0.1:8080/alerts", "webhook")
    assert cfg.label() == "http:http://127.0.0.1:8080/alerts"
    assert sink_config_from_spec("syslog:local").target == "unix:/dev/log"
    assert sink_config_from_spec("stdout") == SinkConfig(kind="stdout")


def test_label_leaves_credentials_out() -> None:
    cfg = SinkConfig(kind="http", target="https://user:pw@siem.example:8088/in?token=abc")
    assert cfg.label() == "http:https://siem.example:8088/in"
    assert SinkConfig(kind="http", target="https://x/", name="siem").label() == "siem"


@pytest.mark.parametrize(
    ("over", "message"),
    [({"kind": "kafka"}, "kind"), ({"format": "ocsf"}, "format"), ({"min_priority": "high"}, "min_priority"),
     ({"preset": "elastic"}, "preset"), ({"batch_max": 0}, "batch_max"), ({"timeout_s": 0}, "timeout_s"),
     ({"retry_initial_s": 5, "retry_max_s": 1}, "retry_max_s"), ({"spool_max_bytes": 10}, "spool_max_bytes"),
     ({"tls_key_file": "k.pem"}, "tls_key_file"), ({"target": "ftp://x/"}, "full URL")],
)  # fmt: skip
def test_check_sink_config(over: dict[str, object], message: str) -> None:
    cfg = SinkConfig(kind="http", target="http://127.0.0.1:9/")
    for key, value in over.items():
        setattr(cfg, key, value)
    with pytest.raises(OutputSpecError, match=message):
        check_sink_config(cfg)
    with pytest.raises(OutputSpecError, match="facility"):
        check_sink_config(SinkConfig(kind="syslog", target="tcp://h:514", facility=30))
    with pytest.raises(OutputSpecError, match="rotate_bytes"):
        check_sink_config(SinkConfig(kind="file", target="/x", rotate_bytes=-1))


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
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OSError):  # (a missing directory is created: its parent here is a file)
        open_sinks([f"file:{tmp_path}/a-file/sub/a.json"], stdout=io.BytesIO())
    with pytest.raises(OutputSpecError, match="twice"):
        open_sinks(["stdout", "-"], stdout=io.BytesIO())


def test_open_sinks_with_configs_and_a_state_dir(tmp_path: Path) -> None:
    out = io.BytesIO()
    path = tmp_path / "a.json"
    configs = [
        SinkConfig(kind="stdout", format="falco"),
        SinkConfig(kind="file", target=str(path), min_priority="error", rotate_bytes=1 << 20),
        SinkConfig(kind="http", target="http://127.0.0.1:9/x", close_timeout_s=0.0),  # nobody listens
    ]
    sink = open_sinks(configs, stdout=out, state_dir=str(tmp_path / "state"))
    assert isinstance(sink, MultiSink)
    assert sink.formats == {"ecs", "falco"} and sink.format == "mixed"
    members = leaf_sinks(sink)
    assert [m.format for m in members] == ["falco", "ecs", "ecs"]
    assert isinstance(members[1], PriorityFilter) and members[1].name == f"file:{path}"
    sink.write_formats({"ecs": b'{"ecs":1}', "falco": b'{"falco":1}'}, "warning")
    sink.write_formats({"ecs": b'{"ecs":2}', "falco": b'{"falco":2}'}, "critical")
    sink.flush()
    assert out.getvalue() == b'{"falco":1}\n{"falco":2}\n'
    assert path.read_bytes() == b'{"ecs":2}\n'  # warning is below the file's min_priority
    assert (tmp_path / "state" / "spool").is_dir()
    stats = sink.stats()
    assert set(STATS_KEYS) <= set(stats)
    assert stats["written"] == 2 and stats["filtered"] == 1
    assert members[2].stats()["backlog_alerts"] == 2
    sink.close()


def test_priority_filter_counts_and_passes_unknown(tmp_path: Path) -> None:
    sink = open_sink(SinkConfig(kind="file", target=str(tmp_path / "a.json"), min_priority="warning"), "")
    for prio in ["debug", "informational", "notice", "warning", "error", "emergency", "Critical", "novel"]:
        sink.write(prio.encode(), prio)
    sink.close()
    kept = (tmp_path / "a.json").read_bytes().split()
    assert kept == [b"warning", b"error", b"emergency", b"Critical", b"novel"]
    assert sink.stats()["filtered"] == 3 and sink.written == 5


def test_every_sink_has_the_same_stats_shape(tmp_path: Path) -> None:
    for sink in (StdoutSink(io.BytesIO()), FileSink(str(tmp_path / "a.json"))):
        sink.write(b"{}")
        sink.flush()
        stats = sink.stats()
        assert set(STATS_KEYS) <= set(stats)
        assert stats["written"] == 1 and stats["delivered"] == 1 and stats["status"] == "ok"
        # the names sentinel.metrics.sink_stats feeds to Prometheus and /healthz
        assert (stats["ok"], stats["failed"], stats["backlog"], stats["healthy"]) == (1, 0, 0, 1.0)
        assert stats["last_success"] is not None
        sink.reopen()
        sink.close()
