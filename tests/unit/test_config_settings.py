"""The configuration's newer settings: sinks, rule selectors, state and model, learning, ml, redaction,
metrics, internal alerts and reload — values, defaults, and a located error for every kind of mistake."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from sentinel.config import (
    SINK_KEYS,
    TOP_KEYS,
    Config,
    ConfigError,
    load_config,
    parse_config,
)
from sentinel.sinks import DEFAULT_STATE_DIR, SinkConfig

PATH = "/etc/sentinel/sentinel.yaml"
EXAMPLE = Path(__file__).resolve().parents[2] / "packaging" / "sentinel.yaml"


def parse(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, PATH, env=env or {})


def test_defaults_are_the_agents() -> None:
    cfg = Config()
    assert cfg.sinks == [] and cfg.output == ["stdout"]
    assert (cfg.rules_enable, cfg.rules_disable) == ([], [])
    assert cfg.state_dir == DEFAULT_STATE_DIR == "/var/lib/sentinel"
    assert (cfg.model, cfg.learn_period_s, cfg.learn_min_events) == ("auto", 3600.0, 1000)
    assert (cfg.ml_alerts_enabled, cfg.ml_batch_ms) == (True, 50.0)
    assert (cfg.redact, cfg.redact_builtin) == ([], True)
    assert cfg.metrics_address is None
    assert cfg.sink_backlog_threshold == 10_000
    assert (cfg.reload_watch, cfg.reload_interval_s) == (False, 5.0)
    assert parse("") == Config(source=PATH)


def test_every_setting() -> None:
    cfg = parse(
        "rules_enable: [tag:mitre_execution, Some Rule]\n"
        "rules_disable: Other Rule\n"
        "state_dir: state\n"
        "model: models/host\n"
        "learning: {period: 12h, min_events: 50}\n"
        "ml: {alerts_enabled: false, batch_ms: 20}\n"
        "redact: ['corp_[a-z]+']\n"
        "redact_builtin: no\n"
        "metrics: {address: '127.0.0.1:9464'}\n"
        "internal_alerts: {sink_backlog: 500}\n"
        "reload: {watch: true, interval_s: 2.5}\n"
    )
    assert cfg.rules_enable == ["tag:mitre_execution", "Some Rule"]
    assert cfg.rules_disable == ["Other Rule"]
    assert cfg.state_dir == "/etc/sentinel/state"  # relative to the file
    assert cfg.model == "/etc/sentinel/models/host"
    assert (cfg.learn_period_s, cfg.learn_min_events) == (43200.0, 50)
    assert (cfg.ml_alerts_enabled, cfg.ml_batch_ms) == (False, 20.0)
    assert [p.pattern for p in cfg.redact] == ["corp_[a-z]+"] and cfg.redact_builtin is False
    assert cfg.metrics_address == "127.0.0.1:9464"
    assert cfg.sink_backlog_threshold == 500
    assert (cfg.reload_watch, cfg.reload_interval_s) == (True, 2.5)
    assert cfg.location("rules_enable[1]") == (PATH, 1, 37)
    red = cfg.redactor()
    assert red.redact("x corp_abc y PASSWORD=p") == "x [REDACTED] y PASSWORD=p"  # builtin off


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 604800.0), ("12h", 43200.0), ("30m", 1800.0), ("45s", 45.0), ("1.5h", 5400.0), ("90", 90.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse(f"learning: {{period: {text}}}\n").learn_period_s == seconds


@pytest.mark.parametrize(
    ("text", "model"),
    [("auto", "auto"), ("default", "default"), ("off", "off"), ("'off'", "off"), ("/opt/m", "/opt/m")],
)
def test_model_choices(text: str, model: str) -> None:
    assert parse(f"model: {text}\n").model == model  # a bare `off` is YAML false: still off


@pytest.mark.parametrize("text", ["''", "off", "false", "~"])
def test_metrics_off(text: str) -> None:
    assert parse(f"metrics: {{address: {text}}}\n").metrics_address is None


def test_sinks_build_sink_configs() -> None:
    cfg = parse(
        "format: falco\n"
        "sinks:\n"
        "  - {kind: file, target: alerts.json, rotate_bytes: 1MiB, keep_files: 2}\n"
        "  - kind: http\n"
        "    name: siem\n"
        "    target: https://siem.example:8443/in\n"
        "    format: ecs\n"
        "    min_priority: WARNING\n"
        "    preset: splunk_hec\n"
        "    headers: {Authorization: 'Splunk ${TOKEN}'}\n"
        "    batch_max: 10\n"
        "    gzip: false\n"
        "    tls_ca_file: ca.pem\n"
        "    retry_initial_s: 1\n"
        "    retry_max_s: 30\n"
        "    spool_max_bytes: 1GiB\n"
        "  - {kind: syslog, target: 'tcp://logs.example:514', facility: 4, app_name: edge}\n"
        "  - {kind: syslog, target: local}\n"
        "  - {kind: stdout}\n",
        env={"TOKEN": "t0k"},
    )
    file, http, tcp, local, out = cfg.sinks
    assert file == SinkConfig(
        kind="file", target="/etc/sentinel/alerts.json", format="falco", rotate_bytes=1 << 20, keep_files=2
    )
    assert (http.name, http.target, http.format, http.min_priority) == (
        "siem", "https://siem.example:8443/in", "ecs", "warning"
    )  # fmt: skip
    assert (http.preset, http.headers, http.batch_max, http.gzip) == (
        "splunk_hec", {"Authorization": "Splunk t0k"}, 10, False
    )  # fmt: skip
    assert (http.tls_ca_file, http.retry_initial_s, http.retry_max_s) == ("/etc/sentinel/ca.pem", 1.0, 30.0)
    assert http.spool_max_bytes == 1 << 30
    assert (tcp.target, tcp.facility, tcp.app_name) == ("tcp://logs.example:514", 4, "edge")
    assert local.target == "unix:/dev/log"
    assert out.kind == "stdout"
    assert cfg.output == []  # sinks given, output not: no implicit stdout
    assert cfg.warnings == []


def test_sink_format_follows_the_top_level_format_unless_given() -> None:
    cfg = parse(
        "output: [stdout]\nsinks: [{kind: file, target: /a}, {kind: file, target: /b, format: ecs}]\n"
    )
    assert [s.format for s in cfg.sink_configs()] == ["ecs", "ecs", "ecs"]
    cfg.format = "falco"  # as --format on the command line does
    assert [(s.kind, s.format) for s in cfg.sink_configs()] == [
        ("stdout", "falco"), ("file", "falco"), ("file", "ecs")
    ]  # fmt: skip


def test_output_and_sinks_together_and_command_line_replaces_both() -> None:
    cfg = parse("output: [stdout]\nsinks: [{kind: file, target: /var/log/a.json}]\n")
    assert [s.label() for s in cfg.sink_configs()] == ["stdout", "file:/var/log/a.json"]
    cfg.set_outputs(["file:/tmp/x.json"])
    assert [s.label() for s in cfg.sink_configs()] == ["file:/tmp/x.json"]


def test_every_sink_config_field_is_configurable() -> None:
    assert set(SINK_KEYS) == {f.name for f in dataclasses.fields(SinkConfig)}


def test_sink_settings_without_effect_are_warnings() -> None:
    cfg = parse(
        "sinks:\n"
        "  - {kind: file, target: /a, gzip: false}\n"
        "  - {kind: http, target: 'http://h/', tls_ca_file: /ca.pem, rotate_bytes: 5}\n"
        "  - {kind: http, target: 'http://h2/', preset: falcosidekick, format: ecs}\n"
    )
    text = [str(w) for w in cfg.warnings]
    assert text[0] == f"{PATH}:2:30: warning: sinks[0]: gzip has no effect on this sink (file file:/a)"
    assert "tls_ca_file has no effect" in text[1] and "rotate_bytes has no effect" in text[2]
    assert "always sends the falco format" in text[3]


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        # rules_enable / rules_disable
        ("rules_enable: {a: b}\n", 1, 15, "must be a single value"),
        ("rules_enable: [3]\n", 1, 16, "must be a non-empty string"),
        ("rules_disable: ['tag:']\n", 1, 17, "'tag:' needs a tag name"),
        ("rules_append: []\nrules: []\n", 2, 8, "at least one"),
        # state_dir and model
        ("state_dir: ''\n", 1, 12, "state_dir must be a non-empty string"),
        ("state_dir: [a]\n", 1, 12, "must be a single value"),
        ("model: 7\n", 1, 8, "model must be auto, default, off or a model directory"),
        ("model: true\n", 1, 8, "model must be"),
        # learning
        ("learning: {period: 7x}\n", 1, 20, "period must be a duration like 7d"),
        ("learning: {period: 0}\n", 1, 20, "above 0"),
        ("learning: {period: -5s}\n", 1, 20, "must be a duration"),
        ("learning: {min_events: 1.5}\n", 1, 24, "min_events must be an integer"),
        ("learning: {min_events: 0}\n", 1, 24, "at least 1"),
        ("learning: {periods: 1}\n", 1, 12, "unknown key 'periods' in learning"),
        ("learning: 7d\n", 1, 11, "learning must be a mapping"),
        # ml
        ("ml: {alerts_enabled: maybe}\n", 1, 22, "alerts_enabled must be true or false"),
        ("ml: {batch_ms: 0}\n", 1, 16, "above 0"),
        ("ml: {batch: 5}\n", 1, 6, "unknown key 'batch' in ml"),
        # redact
        ("redact: ['(']\n", 1, 11, "bad regular expression: missing )"),
        ("redact: [ab(c]\n", 1, 12, "bad regular expression"),
        ("redact: ['x|']\n", 1, 10, "matches the empty string"),
        ("redact: [{a: 1}]\n", 1, 10, "must be a single value"),
        ("redact_builtin: 1\n", 1, 17, "must be true or false"),
        # metrics, internal_alerts, reload
        ("metrics: {address: 'localhost'}\n", 1, 20, "has no port"),
        ("metrics: {address: 'example.com:9464'}\n", 1, 20, "not an IP address"),
        ("metrics: {address: '127.0.0.1:99999'}\n", 1, 20, "port"),
        ("metrics: {address: 9464}\n", 1, 20, "HOST:PORT"),
        ("metrics: {listen: x}\n", 1, 11, "unknown key 'listen' in metrics"),
        ("internal_alerts: {sink_backlog: -1}\n", 1, 33, "at least 1"),
        ("internal_alerts: {backlog: 5}\n", 1, 19, "unknown key 'backlog'"),
        ("reload: {watch: sometimes}\n", 1, 17, "watch must be true or false"),
        ("reload: {interval_s: 0}\n", 1, 22, "above 0"),
        # sinks
        ("sinks: {kind: file}\n", 1, 8, "sinks must be a list"),
        ("sinks: [stdout]\n", 1, 9, "must be a mapping"),
        ("sinks: [{target: /a}]\n", 1, 9, "needs kind"),
        ("sinks: [{kind: udp}]\n", 1, 16, "kind must be one of stdout, file, http, syslog, not 'udp'"),
        ("sinks: [{kind: file, path: /a}]\n", 1, 22, "unknown key 'path' in sinks[0]"),
        ("sinks: [{kind: file}]\n", 1, 9, "a file sink needs target"),
        ("sinks: [{kind: stdout, target: x}]\n", 1, 32, "stdout sink takes no target"),
        ("sinks: [{kind: http, target: 'ftp://h/'}]\n", 1, 30, "an http sink's target is a URL"),
        ("sinks: [{kind: http, target: 'http://'}]\n", 1, 30, "needs a full URL with a host"),
        ("sinks: [{kind: http, target: 'http://h:0/'}]\n", 1, 30, "port is not a number"),
        ("sinks: [{kind: syslog, target: 'udp://h:514'}]\n", 1, 32, "UDP syslog is not supported"),
        ("sinks: [{kind: syslog, target: 'tcp://h:70000'}]\n", 1, 32, "port must be a number 1..65535"),
        ("sinks: [{kind: syslog, target: 'tls://:6514'}]\n", 1, 32, "needs a host"),
        ("sinks: [{kind: syslog}]\n", 1, 9, "a syslog sink needs target"),
        ("sinks: [{kind: file, target: /a, format: xml}]\n", 1, 42, "format must be one of ecs, falco"),
        ("sinks: [{kind: file, target: /a, min_priority: loud}]\n", 1, 48, "min_priority must be one of"),
        ("sinks: [{kind: file, target: /a, rotate_bytes: -1}]\n", 1, 48, "at least 0"),
        ("sinks: [{kind: file, target: /a, rotate_bytes: 5MB}]\n", 1, 48, "a size like 64MiB"),
        ("sinks: [{kind: http, target: 'http://h/', batch_max: 0}]\n", 1, 54, "at least 1"),
        ("sinks: [{kind: http, target: 'http://h/', timeout_s: 0}]\n", 1, 54, "above 0"),
        ("sinks: [{kind: http, target: 'http://h/', preset: splunk}]\n", 1, 51, "preset must be one of"),
        ("sinks: [{kind: http, target: 'http://h/', preset: splunk_hec}]\n", 1, 9, "needs headers"),
        ("sinks: [{kind: http, target: 'http://h/', headers: [a]}]\n", 1, 52, "mapping of header names"),
        (
            "sinks: [{kind: http, target: 'http://h/', headers: {'a b': x}}]\n",
            1,
            53,
            "not a valid HTTP header",
        ),
        ("sinks: [{kind: http, target: 'http://h/', gzip: 'yes please'}]\n", 1, 49, "true or false"),
        ("sinks: [{kind: http, target: 'http://h/', spool_max_bytes: 100}]\n", 1, 60, "at least 4096"),
        (
            "sinks: [{kind: http, target: 'http://h/', retry_initial_s: 5, retry_max_s: 1}]\n",
            1,
            76,
            "retry_max_s",
        ),
        ("sinks: [{kind: syslog, target: local, facility: 24}]\n", 1, 49, "facility must be 0..23"),
        ("sinks: [{kind: syslog, target: 'tls://h', tls_key_file: /k}]\n", 1, 57, "needs tls_cert_file"),
        ("sinks: [{kind: file, target: /a}, {kind: file, target: /a}]\n", 1, 35, "given twice"),
        ("output: [file:/a]\nsinks: [{kind: file, target: /a, name: x}]\n", 2, 9, "written by output"),
    ],
)
def test_new_keys_errors_are_located(text: str, line: int, column: int, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text)
    err = info.value
    assert (err.file, err.line, err.column) == (PATH, line, column), str(err)
    assert words in err.message, err.message


def test_header_values_are_never_shown_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse("sinks: [{kind: http, target: 'http://h/', headers: {X-Token: \"s3cr3t\\nInjected: 1\"}}]\n")
    assert "line break" in str(info.value) and "s3cr3t" not in str(info.value)


def test_example_config_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIEM_TOKEN", "tok-123")
    cfg = load_config(str(EXAMPLE), dropins=False)
    assert cfg.warnings == []
    assert cfg.rules == ["/usr/share/sentinel/rules", "/etc/sentinel/rules.local.yaml"]
    assert cfg.output == []  # sinks only: no implicit stdout
    labels = [s.label() for s in cfg.sink_configs()]
    assert labels == ["local-file", "siem"]
    siem = cfg.sinks[1]
    assert siem.headers == {"Authorization": "Bearer tok-123"} and siem.target.startswith("https://")
    assert cfg.sinks[0].rotate_bytes == 100 * 1024 * 1024
    assert cfg.metrics_address == "127.0.0.1:9464" and cfg.reload_watch is True
    assert cfg.redact_builtin is True and len(cfg.redact) == 2
    assert cfg.redactor().redact("vault --vault-unseal-key=abc") == "vault --vault-unseal-key=[REDACTED]"


def test_example_config_shows_every_key() -> None:
    text = EXAMPLE.read_text()
    keys = set(TOP_KEYS) | set(SINK_KEYS)
    keys |= {"wakeup_events", "pages", "open_dedup_s", "loader_opens", "period", "min_events"}
    keys |= {"alerts_enabled", "batch_ms"}
    keys |= {"address", "sink_backlog", "watch", "interval_s", "metadata", "endpoints"}
    keys |= {"time_format_iso_8601"}
    missing = [k for k in sorted(keys) if not re.search(rf"^\s*#?\s*-?\s*{k}:", text, re.MULTILINE)]
    assert missing == []


def test_example_config_without_the_token_is_a_located_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIEM_TOKEN", raising=False)
    with pytest.raises(ConfigError) as info:
        load_config(str(EXAMPLE), dropins=False)
    assert info.value.file == str(EXAMPLE) and info.value.line > 0
    assert "SIEM_TOKEN is not set" in info.value.message
