"""Where the configuration comes from: the default path, drop-ins in lexical order with the merge rules, and
``${ENV}`` expansion — every error still located in the file (or drop-in) that has it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.config import (
    Config,
    ConfigError,
    default_config_path,
    dropin_dir,
    dropin_files,
    expand_env,
    load_config,
    load_effective_config,
    parse_config,
)
from sentinel.detect import find_rules_dir


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


# ---- default path --------------------------------------------------------------------------------------


def test_default_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENTINEL_CONFIG", raising=False)
    assert default_config_path() == "/etc/sentinel/sentinel.yaml"
    monkeypatch.setenv("SENTINEL_CONFIG", "/srv/conf/agent.yaml")
    assert default_config_path() == "/srv/conf/agent.yaml"
    assert dropin_dir("/etc/sentinel/sentinel.yaml") == Path("/etc/sentinel/sentinel.d")
    assert dropin_dir("/srv/agent.yaml") == Path("/srv/agent.d")


def test_no_file_gives_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_CONFIG", str(tmp_path / "sentinel.yaml"))
    cfg = load_effective_config(None)
    assert cfg == Config() and cfg.source is None and cfg.files == []


def test_default_file_is_used_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    main = write(tmp_path / "sentinel.yaml", "format: falco\n")
    monkeypatch.setenv("SENTINEL_CONFIG", main)
    cfg = load_effective_config(None)
    assert cfg.format == "falco" and cfg.source == main


def test_dropins_apply_without_a_main_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_CONFIG", str(tmp_path / "sentinel.yaml"))
    extra = write(tmp_path / "sentinel.d" / "10-a.yaml", "model: off\n")
    cfg = load_effective_config(None)
    assert cfg.model == "off" and cfg.source is None and cfg.files == [extra]


def test_explicit_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_effective_config(str(tmp_path / "absent.yaml"))
    assert str(tmp_path / "absent.yaml") in str(info.value)


# ---- drop-ins --------------------------------------------------------------------------------------------


def test_dropin_order_is_lexical_and_skips_others(tmp_path: Path) -> None:
    main = write(tmp_path / "sentinel.yaml", "format: ecs\n")
    d = tmp_path / "sentinel.d"
    for name in ("50-b.yaml", "10-a.yaml", "9-c.yaml", ".hidden.yaml", "notes.txt", "20-x.yaml.bak"):
        write(d / name, "format: falco\n")
    (d / "30-dir.yaml").mkdir()
    assert [Path(p).name for p in dropin_files(main)] == ["10-a.yaml", "50-b.yaml", "9-c.yaml"]


def test_later_dropins_override_scalars_and_section_keys(tmp_path: Path) -> None:
    main = write(
        tmp_path / "sentinel.yaml",
        "format: ecs\naggregation_window_s: 60\nsensor: {wakeup_events: 8, pages: 256}\n"
        "learning: {period: 7d, min_events: 10}\nmodel: default\n",
    )
    write(
        tmp_path / "sentinel.d" / "10-a.yaml", "format: falco\nsensor: {pages: 512}\nlearning: {period: 1d}\n"
    )
    write(tmp_path / "sentinel.d" / "20-b.yaml", "format: ecs\nsensor: {open_dedup_s: 5}\nmodel: off\n")
    cfg = load_config(main)
    assert cfg.format == "ecs"  # the last one wins
    assert (cfg.wakeup_events, cfg.pages, cfg.open_dedup_s) == (8, 512, 5.0)  # key by key
    assert (cfg.learn_period_s, cfg.learn_min_events) == (86400.0, 10)
    assert cfg.model == "off" and cfg.aggregation_window_s == 60.0
    assert cfg.files == [
        main,
        str(tmp_path / "sentinel.d" / "10-a.yaml"),
        str(tmp_path / "sentinel.d" / "20-b.yaml"),
    ]
    assert cfg.location("model") == (str(tmp_path / "sentinel.d" / "20-b.yaml"), 3, 1)


def test_lists_append_and_rules_replace(tmp_path: Path) -> None:
    main = write(
        tmp_path / "sentinel.yaml",
        "rules: [r1.yaml, r2.yaml]\nrules_enable: [A]\nrules_disable: [tag:t]\nredact: ['one']\n"
        "output: [stdout]\n",
    )
    d = tmp_path / "sentinel.d"
    write(
        d / "10.yaml", "rules_append: [local.yaml]\nrules_enable: [B]\nrules_disable: [C]\nredact: ['two']\n"
    )
    write(d / "20.yaml", "output: ['file:alerts.json']\n")
    cfg = load_config(main)
    assert cfg.rules == [str(tmp_path / "r1.yaml"), str(tmp_path / "r2.yaml"), str(d / "local.yaml")]
    assert cfg.rules_enable == ["A", "B"] and cfg.rules_disable == ["tag:t", "C"]
    assert [p.pattern for p in cfg.redact] == ["one", "two"]
    assert cfg.output == [f"file:{d / 'alerts.json'}"]  # output replaces; relative to the drop-in
    assert cfg.location("rules_enable[1]") == (str(d / "10.yaml"), 2, 16)
    assert cfg.location("rules[2]")[0] == str(d / "10.yaml")

    write(d / "30.yaml", "rules: [only.yaml]\n")
    assert load_config(main).rules == [str(d / "only.yaml")]  # rules replaces everything before it


def test_rules_append_in_the_same_file_as_rules_in_any_order(tmp_path: Path) -> None:
    path = str(tmp_path / "s.yaml")
    expected = [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]
    assert parse_config("rules: [a.yaml]\nrules_append: [b.yaml]\n", path, env={}).rules == expected
    assert parse_config("rules_append: [b.yaml]\nrules: [a.yaml]\n", path, env={}).rules == expected


def test_rules_append_without_rules_adds_to_the_shipped_set(tmp_path: Path) -> None:
    cfg = parse_config("rules_append: [local.yaml]\n", str(tmp_path / "s.yaml"), env={})
    assert cfg.rules == [str(find_rules_dir()), str(tmp_path / "local.yaml")]


def test_rules_append_without_shipped_rules_is_located(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sentinel.detect.find_rules_dir", lambda: None)
    with pytest.raises(ConfigError) as info:
        parse_config("format: ecs\nrules_append: [x.yaml]\n", "/c.yaml", env={})
    assert (info.value.line, info.value.column) == (2, 1) and "shipped rules" in info.value.message


def test_sinks_append_and_a_same_label_replaces(tmp_path: Path) -> None:
    main = write(
        tmp_path / "sentinel.yaml",
        "sinks:\n  - {kind: file, name: local, target: /var/log/a.json}\n"
        "  - {kind: http, name: siem, target: 'https://siem/in'}\n",
    )
    write(
        tmp_path / "sentinel.d" / "10.yaml",
        "sinks:\n  - {kind: http, name: siem, target: 'https://siem2/in', min_priority: error}\n"
        "  - {kind: syslog, target: 'tcp://logs:514'}\n",
    )
    cfg = load_config(main)
    assert [(s.label(), s.target) for s in cfg.sinks] == [
        ("local", "/var/log/a.json"), ("siem", "https://siem2/in"), ("syslog:tcp://logs:514", "tcp://logs:514")
    ]  # fmt: skip
    assert cfg.sinks[1].min_priority == "error"
    assert cfg.location("sinks[1]") == (str(tmp_path / "sentinel.d" / "10.yaml"), 2, 5)


def test_format_change_in_a_dropin_reaches_inheriting_sinks(tmp_path: Path) -> None:
    main = write(
        tmp_path / "sentinel.yaml",
        "sinks: [{kind: file, target: /a}, {kind: file, target: /b, format: ecs}]\n",
    )
    write(tmp_path / "sentinel.d" / "10.yaml", "format: falco\n")
    cfg = load_config(main)
    assert [s.format for s in cfg.sinks] == ["falco", "ecs"]


def test_a_dropin_may_fix_what_the_main_file_left(tmp_path: Path) -> None:
    # main: file /a as an output; the drop-in moves it to a sink. Checked once, after the last file.
    main = write(tmp_path / "sentinel.yaml", "output: ['file:/a']\n")
    write(tmp_path / "sentinel.d" / "10.yaml", "sinks: [{kind: file, target: /a}]\n")
    with pytest.raises(ConfigError) as info:
        load_config(main)
    assert info.value.file.endswith("10.yaml") and "same output as output 'file:/a'" in info.value.message
    write(tmp_path / "sentinel.d" / "20.yaml", "output: [stdout]\n")
    assert [s.label() for s in load_config(main).sink_configs()] == ["stdout", "file:/a"]


def test_errors_in_a_dropin_name_the_dropin(tmp_path: Path) -> None:
    main = write(tmp_path / "sentinel.yaml", "format: ecs\n")
    bad = write(tmp_path / "sentinel.d" / "10-bad.yaml", "format: ecs\nmodle: off\n")
    with pytest.raises(ConfigError) as info:
        load_config(main)
    assert (info.value.file, info.value.line, info.value.column) == (bad, 2, 1)
    assert str(info.value).startswith(f"{bad}:2:1: unknown key 'modle'")


def test_unreadable_dropin_and_bad_dropin_dir(tmp_path: Path) -> None:
    main = write(tmp_path / "sentinel.yaml", "")
    (tmp_path / "sentinel.d").write_text("not a directory")
    with pytest.raises(ConfigError, match="not a directory"):
        load_config(main)
    (tmp_path / "sentinel.d").unlink()
    bad = tmp_path / "sentinel.d" / "10.yaml"
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xfe bad")
    with pytest.raises(ConfigError) as info:
        load_config(main)
    assert info.value.file == str(bad)


def test_dropins_can_be_left_out(tmp_path: Path) -> None:
    main = write(tmp_path / "sentinel.yaml", "format: ecs\n")
    write(tmp_path / "sentinel.d" / "10.yaml", "format: falco\n")
    assert load_config(main, dropins=False).format == "ecs"


# ---- ${ENV} ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("${A}", "alpha"),
        ("x${A}y${B}z", "xalphaybetaz"),
        ("${UNSET:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),  # :- also covers set-but-empty, as in the shell
        ("${EMPTY}", ""),
        ("${A:-fallback}", "alpha"),
        ("${UNSET:-}", ""),
        ("$$", "$"),
        ("$${A}", "${A}"),
        ("cost: $$5", "cost: $5"),
        ("^end$", "^end$"),  # a lone $ is kept: regex anchors survive
        ("$A", "$A"),
        ("${A:-x:-y}", "alpha"),
    ],
)
def test_expand_env(text: str, expected: str) -> None:
    assert expand_env(text, {"A": "alpha", "B": "beta", "EMPTY": ""}) == expected


@pytest.mark.parametrize(
    ("text", "words", "offset"),
    [
        ("${UNSET}", "environment variable UNSET is not set", 0),
        ("ab${", "without its closing", 2),
        ("${}", "not an environment variable name", 0),
        ("x ${1A}", "not an environment variable name", 2),
        ("${A B}", "not an environment variable name", 0),
    ],
)
def test_expand_env_errors(text: str, words: str, offset: int) -> None:
    with pytest.raises(ValueError) as info:
        expand_env(text, {})
    assert words in info.value.args[0] and info.value.args[1] == offset


def test_env_in_values_of_every_type() -> None:
    env = {"WIN": "30", "WATCH": "yes", "DIR": "/srv/state", "PERIOD": "2h", "TOKEN": "abc", "PORT": "9464"}
    cfg = parse_config(
        "aggregation_window_s: ${WIN}\n"
        "reload: {watch: '${WATCH}'}\n"
        "state_dir: ${DIR}/sentinel\n"
        "learning: {period: '${PERIOD}', min_events: '${MIN:-20}'}\n"
        "metrics: {address: '127.0.0.1:${PORT}'}\n"
        "sinks: [{kind: http, target: 'https://siem/${TOKEN}', headers: {X-Key: '${TOKEN}'}}]\n"
        "redact: ['secret-$$[0-9]+']\n",
        "/c.yaml",
        env=env,
    )
    assert cfg.aggregation_window_s == 30.0 and cfg.reload_watch is True
    assert cfg.state_dir == "/srv/state/sentinel"
    assert (cfg.learn_period_s, cfg.learn_min_events) == (7200.0, 20)
    assert cfg.metrics_address == "127.0.0.1:9464"
    assert cfg.sinks[0].target == "https://siem/abc" and cfg.sinks[0].headers == {"X-Key": "abc"}
    assert cfg.redact[0].pattern == "secret-$[0-9]+"


def test_env_never_changes_keys_or_types_of_plain_values() -> None:
    # Text from the environment that looks like YAML stays text: a value "yes" is not a boolean for a string.
    cfg = parse_config("state_dir: ${D}\nmodel: ${M}\n", "/c.yaml", env={"D": "yes", "M": "off"})
    assert cfg.state_dir == "/yes" and cfg.model == "off"


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("state_dir: ${NOPE}\n", 1, 12, "state_dir: environment variable NOPE is not set"),
        ("state_dir: /x/${NOPE}\n", 1, 15, "NOPE is not set"),
        ("format: 'ecs${NOPE}'\n", 1, 13, "NOPE is not set"),
        ("aggregation_window_s: ${NUM}\n", 1, 23, "must be a number, not 'many'"),
        ("reload: {watch: '${NUM}'}\n", 1, 17, "must be true or false"),
        ("learning: {period: '${NUM}'}\n", 1, 20, "must be a duration"),
        (
            "sinks:\n  - kind: http\n    target: 'https://h/'\n    headers: {A: 'Bearer ${TOK}'}\n",
            4,
            26,
            "header A: environment variable TOK is not set",
        ),
        ("metrics:\n  address: ${BAD:-nope}\n", 2, 12, "has no port"),
    ],
)
def test_env_errors_are_located(text: str, line: int, column: int, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/c.yaml", env={"NUM": "many"})
    assert (info.value.line, info.value.column) == (line, column), str(info.value)
    assert words in info.value.message


def test_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_TEST_DIR", "/from/env")
    assert parse_config("state_dir: ${SENTINEL_TEST_DIR}\n", "/c.yaml").state_dir == "/from/env"
