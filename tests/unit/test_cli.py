"""The command line: parsing, help, usage errors before any kernel work, and replay's exit codes/messages.

Commands run in a subprocess (``python -m sentinel.cli``) so exit codes, stdout and stderr are the real ones.
Nothing here needs root or loads probes: every ``events`` call fails at argument checking.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from sentinel import __version__, cli
from tests.unit.test_recording import write_capture

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sentinel.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines()]


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout


# ---------------------------------------------------------------------------------------------- parser


def test_parser_events_defaults() -> None:
    args = cli.build_parser().parse_args(["events"])
    assert args.command == "events"
    assert args.types == "exec,open,connect,security,file,listening,datagram,fd"
    assert args.filter == []
    assert args.duration is None
    assert args.wakeup_events == 64
    assert args.pages is None
    assert args.open_dedup == 30.0
    assert args.loader_opens == "filter"
    assert args.log_level == "info"


def test_parser_events_options() -> None:
    args = cli.build_parser().parse_args(
        ["--log-level", "debug", "events", "--types", "all", "--filter", "a=b", "--filter", "c~d",
         "--duration", "2.5", "--wakeup-events", "1", "--pages", "256", "--open-dedup", "0",
         "--loader-opens", "report"]
    )  # fmt: skip
    assert args.log_level == "debug"
    assert args.types == "all"
    assert args.filter == ["a=b", "c~d"]
    assert args.duration == 2.5
    assert args.wakeup_events == 1
    assert args.pages == 256
    assert args.open_dedup == 0.0
    assert args.loader_opens == "report"
    assert cli._sensor_config(args).loader_opens == "report"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["events", "--loader-opens", "hide"])


def test_parser_record_replay_doctor() -> None:
    parser = cli.build_parser()
    rec = parser.parse_args(["record", "-o", "cap.bin", "--append"])
    assert (rec.command, rec.output, rec.append) == ("record", "cap.bin", True)
    rep = parser.parse_args(["replay", "cap.bin", "--events", "--types", "exec", "--filter", "x=y"])
    assert (rep.command, rep.file, rep.events, rep.types, rep.filter) == (
        "replay",
        "cap.bin",
        True,
        "exec",
        ["x=y"],
    )
    rep = parser.parse_args(["replay", "cap.bin"])
    assert rep.events is False
    doc = parser.parse_args(["doctor", "--json", "--no-compile"])
    assert (doc.command, doc.json, doc.no_compile) == ("doctor", True, True)


@pytest.mark.parametrize(
    "argv",
    [
        ["events", "--duration", "0"],
        ["events", "--duration", "-1"],
        ["events", "--duration", "soon"],
        ["events", "--wakeup-events", "many"],
        ["record"],  # --output is required
        ["replay"],  # FILE is required
        ["--log-level", "loud", "events"],
        ["bogus"],
    ],
)
def test_parser_rejects(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_missing_command_returns_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == cli.EXIT_USAGE == 2
    assert "COMMAND" in capsys.readouterr().err


def test_events_checks_filters_before_any_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad --filter is a usage error found before host facts, /proc or the sensor are touched."""

    def forbidden(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("live setup reached before the filter was checked")

    monkeypatch.setattr(cli, "_live_setup", forbidden)
    assert cli.main(["events", "--filter", "bad"]) == cli.EXIT_USAGE
    assert cli.main(["events", "--types", "nope"]) == cli.EXIT_USAGE


# ------------------------------------------------------------------------------------------------ help


def test_help() -> None:
    result = run("--help")
    assert result.returncode == 0
    for word in ("run", "events", "record", "replay", "doctor", "--log-level", "--version"):
        assert word in result.stdout
    assert result.stderr == ""


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    # A checkout asks git for its build (a wheel or package reads the stamp setup.py wrote).
    assert result.stdout.startswith(f"sentinel {__version__}, build "), result.stdout


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("events", ["--types", "--filter", "--duration", "--wakeup-events", "--pages", "--open-dedup"]),
        (
            "record",
            ["--output", "-o", "--append", "--duration", "--wakeup-events", "--pages", "--open-dedup"],
        ),
        (
            "replay",
            ["FILE", "--events", "--types", "--filter", "--rules", "--format", "--output", "--config"],
        ),
        (
            "run",
            ["--rules", "--format", "--output", "--config", "--aggregation-window", "--duration", "--pages"],
        ),
        ("doctor", ["--json", "--no-compile"]),
    ],
)
def test_subcommand_help(command: str, options: list[str]) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    assert f"usage: sentinel {command}" in result.stdout
    for option in options:
        assert option in result.stdout
    assert result.stderr == ""


def test_missing_command_exits_2() -> None:
    result = run()
    assert result.returncode == 2
    no_traceback(result)


def test_unknown_command_exits_2() -> None:
    result = run("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
    no_traceback(result)


# ---------------------------------------------------------------------------------------------- events


def test_events_bad_filter_exits_2_before_needing_root() -> None:
    result = run("events", "--filter", "bad", timeout=30)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("sentinel events: bad filter 'bad'")
    assert "FIELD OP VALUE" in result.stderr
    assert "sentinel.starting" not in result.stderr
    no_traceback(result)


def test_events_bad_types_exits_2() -> None:
    result = run("events", "--types", "exec,bogus", timeout=30)
    assert result.returncode == 2
    assert "sentinel events: unknown event type 'bogus'" in result.stderr
    no_traceback(result)


# ---------------------------------------------------------------------------------------------- replay


def test_replay_text_file_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not a capture\n")
    result = run("replay", str(path), "--events")
    assert result.returncode == 1
    assert result.stdout == ""
    assert str(path) in result.stderr
    assert "not a sentinel capture" in result.stderr
    no_traceback(result)


@pytest.mark.parametrize(
    "content",
    [b"", b"\xc1\xc1\xc1", b'{"format": "sentinel-capture"}\n', b"\x81\xa1a\x01", b"\xdd\xff\xff\xff\xff"],
)
def test_replay_other_non_captures_exit_1(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.bin"
    path.write_bytes(content)
    result = run("replay", str(path), "--events")
    assert result.returncode == 1
    assert str(path) in result.stderr
    no_traceback(result)


def test_replay_missing_file_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "absent.msgpack"
    result = run("replay", str(path), "--events")
    assert result.returncode == 1
    assert str(path) in result.stderr
    assert "cannot open" in result.stderr
    no_traceback(result)


def test_replay_directory_exits_1(tmp_path: Path) -> None:
    result = run("replay", str(tmp_path), "--events")
    assert result.returncode == 1
    assert str(tmp_path) in result.stderr
    no_traceback(result)


def test_replay_without_events_detects(tmp_path: Path) -> None:
    """Without --events, replay runs detection (the shipped rules by default): alerts, not events."""
    cap = write_capture(tmp_path / "cap.msgpack")
    result = run("replay", str(cap.path))
    assert result.returncode == 0, result.stderr
    assert all(doc["event"]["kind"] == "alert" for doc in json_lines(result.stdout))
    assert "sentinel.rules_loaded" in result.stderr
    no_traceback(result)


@pytest.mark.parametrize("bad", [["--filter", "nonsense"], ["--types", "bogus"]])
def test_replay_bad_arguments_exit_2(tmp_path: Path, bad: list[str]) -> None:
    cap = write_capture(tmp_path / "cap.msgpack")
    result = run("replay", str(cap.path), "--events", *bad)
    assert result.returncode == 2
    assert result.stderr.startswith("sentinel replay: ")
    assert result.stdout == ""
    no_traceback(result)


def test_replay_capture(tmp_path: Path) -> None:
    cap = write_capture(tmp_path / "cap.msgpack")
    result = run("replay", str(cap.path), "--events", "--types", "all")
    assert result.returncode == 0, result.stderr
    docs = json_lines(result.stdout)
    assert [d["event"]["action"] for d in docs] == ["fork", "exec", "open", "fork", "exec", "connect"]
    assert docs[2]["file"]["path"] == "/srv/notes.txt"
    assert docs[1]["process"]["parent"]["pid"] == 100
    # The loss record is reported on stderr as a diagnostic, not mixed into the events.
    lost = [orjson.loads(line) for line in result.stderr.splitlines() if "events_lost" in line]
    assert [(e["buffer"], e["lost"]) for e in lost] == [("open", 5)]


def test_replay_default_types_and_filter(tmp_path: Path) -> None:
    cap = write_capture(tmp_path / "cap.msgpack")
    result = run("replay", str(cap.path), "--events")
    assert result.returncode == 0
    assert [d["event"]["action"] for d in json_lines(result.stdout)] == ["exec", "open", "exec", "connect"]
    result = run(
        "replay", str(cap.path), "--events", "--filter", "process.pid=300", "--filter", "process.args=-c"
    )
    assert result.returncode == 0
    assert [d["event"]["action"] for d in json_lines(result.stdout)] == ["exec", "connect"]


def test_replay_truncated_capture_exits_1_after_printing_what_it_read(tmp_path: Path) -> None:
    cap = write_capture(tmp_path / "cap.msgpack")
    full = run("replay", str(cap.path), "--events", "--types", "all")
    cut = tmp_path / "cut.msgpack"
    shutil.copyfile(cap.path, cut)
    os.truncate(cut, (cap.last_record + cap.size) // 2)
    result = run("replay", str(cut), "--events", "--types", "all")
    assert result.returncode == 1
    docs = json_lines(result.stdout)
    assert [d["event"]["action"] for d in docs] == ["fork", "exec", "open", "fork", "exec"]
    expected = json_lines(full.stdout)[:-1]
    for got, want in zip(docs, expected, strict=True):
        for doc in (got, want):
            del doc["event"]["id"], doc["event"]["created"]
        assert got == want
    problem_lines = [line for line in result.stderr.splitlines() if line.startswith("sentinel replay:")]
    assert len(problem_lines) == 1
    assert f"{cut}: at byte {cap.last_record}:" in problem_lines[0]
    assert "file ends inside a record" in problem_lines[0]
    no_traceback(result)
