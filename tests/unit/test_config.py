"""The agent's YAML configuration: values, defaults, paths relative to the file, and located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.config import Config, ConfigError, load_config, parse_config


def test_full_config(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.yaml"
    path.write_text(
        "rules: [rules/, /etc/sentinel/local.yaml]\n"
        "format: falco\n"
        "falco: {time_format_iso_8601: true}\n"
        "output: [stdout, file:alerts.json]\n"
        "aggregation_window_s: 30\n"
        "sensor:\n"
        "  wakeup_events: 8\n"
        "  pages: 256\n"
        "  open_dedup_s: 0\n"
        "  loader_opens: report\n"
    )
    cfg = load_config(str(path))
    assert cfg.rules == [str(tmp_path / "rules"), "/etc/sentinel/local.yaml"]  # relative to the file
    assert cfg.format == "falco" and cfg.falco_time_iso8601 is True
    assert cfg.output == ["stdout", f"file:{tmp_path / 'alerts.json'}"]
    assert cfg.aggregation_window_s == 30.0
    assert (cfg.wakeup_events, cfg.pages, cfg.open_dedup_s, cfg.loader_opens) == (8, 256, 0.0, "report")
    assert cfg.source == str(path)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_config_is_the_defaults(text: str) -> None:
    cfg = parse_config(text, "c.yaml")
    assert cfg == Config(source="c.yaml")
    assert (cfg.rules, cfg.format, cfg.output, cfg.aggregation_window_s) == (None, "ecs", ["stdout"], 60.0)


def test_single_values_for_lists() -> None:
    cfg = parse_config("rules: /r\noutput: file:/x.json\n", "/etc/c.yaml")
    assert cfg.rules == ["/r"]
    assert cfg.output == ["file:/x.json"]


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("format: xml\n", 1, 9, "format must be one of ecs, falco"),
        ("format: ecs\nbogus: 1\n", 2, 1, "unknown key 'bogus'"),
        ("rules: [a, 3]\n", 1, 12, "rules must be a non-empty string"),
        ("rules: {a: b}\n", 1, 8, "rules must be a single value"),
        ("output: [stdout, 'udp:x']\n", 1, 18, "unknown output 'udp:x'"),
        ("output: []\n", 1, 9, "at least one"),
        ("aggregation_window_s: -1\n", 1, 23, "at least 0"),
        ("aggregation_window_s: soon\n", 1, 23, "must be a number"),
        ("aggregation_window_s: .nan\n", 1, 23, "at least 0"),
        ("sensor:\n  pages: 3\n", 2, 10, "power of two"),
        ("sensor:\n  loader_opens: hide\n", 2, 17, "loader_opens must be one of filter, report"),
        ("sensor:\n  wakeup_events: 0\n", 2, 18, "at least 1"),
        ("sensor:\n  wakeup_events: 1.5\n", 2, 18, "must be an integer"),
        ("sensor:\n  wakeup_events: true\n", 2, 18, "must be an integer"),
        ("sensor:\n  page: 4\n", 2, 3, "unknown key 'page' in sensor"),
        ("sensor: 4\n", 1, 9, "sensor must be a mapping"),
        ("falco:\n  time_format_iso_8601: maybe\n", 2, 25, "time_format_iso_8601"),
        ("falco:\n  time_format: true\n", 2, 3, "unknown key 'time_format' in falco"),
        ("- rules\n", 1, 1, "must be a mapping"),
        ("format: ecs\nformat: falco\n", 2, 1, "duplicate key 'format'"),
        ("format: [ecs\n", 2, 1, "YAML syntax"),
        ("format: !!python/object:os.system x\n", 1, 9, "could not determine a constructor"),
        ("\tformat: ecs\n", 1, 1, "YAML syntax"),
    ],
)
def test_errors_are_located(text: str, line: int, column: int, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/sentinel/c.yaml")
    err = info.value
    assert (err.file, err.line, err.column) == ("/etc/sentinel/c.yaml", line, column), str(err)
    assert words in err.message
    assert str(err).startswith(f"/etc/sentinel/c.yaml:{line}:{column}: ")


def test_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "absent.yaml"))
    assert str(tmp_path / "absent.yaml") in str(info.value)
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError):
        load_config(str(bad))
