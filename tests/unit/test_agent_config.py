"""`sentinel run` configured by its file: settings merged with the flags, rules tuned by rules_enable/disable,
redaction in the written alerts, reload on SIGHUP and on a changed file (validated first, old state kept on
failure), settings that need a restart, and `sentinel config check` as a user runs it.

The kernel side is the fake sensor of test_detect.py (the kernel end to end is in tests/integration); the
rules engine, the config loader, the sinks and the redactor are the real ones.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from sentinel import cli, live
from sentinel.agent import FileWatcher, effective_settings, load_tuned_rules, restart_needed
from sentinel.capture import CaptureWriter, capture_header
from sentinel.config import load_config
from sentinel.events import AF_INET, EventType
from sentinel.process.facts import ProcFacts, ReplayFacts
from sentinel.process.table import ProcessTable
from sentinel.sensor.loader import boottime_ns
from tests.unit.detect_fixtures import HOST, S, ev
from tests.unit.test_cli import run
from tests.unit.test_detect import FakeSensor, diagnostics, read_docs, restore_signals  # noqa: F401
from tests.unit.test_detect_rules import RULES

SECRET = "S3cretPw"


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


NGINX_INIT = ProcFacts(pid=1, start_ticks=1, ppid=0, comm="init", exe="/sbin/init", cwd="/", args=["init"])
NGINX = ProcFacts(
    pid=100, start_ticks=50, ppid=1, comm="nginx", exe="/usr/sbin/nginx", cwd="/", args=["nginx"]
)


def nginx_live(monkeypatch: pytest.MonkeyPatch, sensor: FakeSensor) -> None:
    facts = ReplayFacts()
    facts.feed(NGINX_INIT)
    facts.feed(NGINX)
    table = ProcessTable("b", facts, clk_tck=100, user_lookup=lambda _: "root", group_lookup=lambda _: "root")
    monkeypatch.setattr(live, "live_setup", lambda *_a, **_kw: (HOST, table, sensor))
    monkeypatch.setattr(live, "check_root", lambda _log: True)
    monkeypatch.setattr(live, "mode_fields", lambda: {"headers_mode": "test"})


def shell_with_secret(t_ns: int, pid: int) -> list[Any]:
    """nginx forks a shell that runs mysql with a password on its command line."""
    argv = ["sh", "-c", f"mysql -uroot -p{SECRET} --db-key=K3yK3y shop"]
    return [
        ev(EventType.FORK, t_ns, 100, comm="nginx", child_pid=pid),
        ev(EventType.EXEC, t_ns + 1000, pid, filename="/bin/sh", argv=argv),
    ]


def connect_443(t_ns: int, pid: int) -> list[Any]:
    return [ev(EventType.CONNECT, t_ns, pid, fd=3, family=AF_INET, address="10.1.2.3", port=443, sock_type=1)]


def write_config(path: Path, text: str) -> None:
    """Replace the file the way editors and config management do (a rename over it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---- settings ---------------------------------------------------------------------------------------------


def test_flags_override_every_config_setting(tmp_path: Path, rules_file: Path) -> None:
    config = tmp_path / "sentinel.yaml"
    config.write_text(
        f"rules: [{rules_file}]\nformat: falco\nstate_dir: {tmp_path}/state\nmodel: 'off'\n"
        "learning: {period: 1d, min_events: 50}\nml: {alerts_enabled: true}\n"
        "metrics: {address: '127.0.0.1:9464'}\n"
        f"sinks:\n  - {{kind: file, target: {tmp_path}/a.json}}\n"
    )
    parse = cli.build_parser().parse_args
    cfg = effective_settings(parse(["run", "--config", str(config)]), live=True)
    state = f"{tmp_path}/state"
    assert (cfg.format, cfg.state_dir, cfg.model, cfg.learn_period_s) == ("falco", state, "off", 86400)
    assert (cfg.learn_min_events, cfg.ml_alerts_enabled, cfg.metrics_address) == (50, True, "127.0.0.1:9464")
    assert [sc.label() for sc in cfg.sink_configs()] == [f"file:{tmp_path}/a.json"]
    cfg = effective_settings(
        parse(["run", "--config", str(config), "--format", "ecs", "--state-dir", "/x", "--model", "default",
               "--learn-period", "2h", "--no-ml-alerts", "--metrics-address", "", "--output", "stdout"]),
        live=True,
    )  # fmt: skip
    assert (cfg.format, cfg.state_dir, cfg.model, cfg.learn_period_s) == ("ecs", "/x", "default", 7200)
    assert (cfg.ml_alerts_enabled, cfg.metrics_address) == (False, None)
    # --output replaces the file's sinks
    assert [(sc.kind, sc.format) for sc in cfg.sink_configs()] == [("stdout", "ecs")]


def test_run_reads_the_default_file_and_replay_only_an_explicit_one(
    tmp_path: Path, rules_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "sentinel.yaml"
    config.write_text(f"rules: [{rules_file}]\noutput: file:{tmp_path}/siem.json\nmodel: default\n")
    monkeypatch.setenv("SENTINEL_CONFIG", str(config))
    parse = cli.build_parser().parse_args
    live = effective_settings(parse(["run"]), live=True)
    assert (live.source, live.model, live.output) == (str(config), "default", [f"file:{tmp_path}/siem.json"])
    replay = effective_settings(parse(["replay", "x.cap"]), live=False)
    assert (replay.source, replay.model, replay.output) == (None, "off", ["stdout"])
    explicit = effective_settings(parse(["replay", "x.cap", "--config", str(config)]), live=False)
    # the file's outputs, but scoring only when --model asks for it
    assert (explicit.model, explicit.output) == ("off", [f"file:{tmp_path}/siem.json"])


def test_rules_enable_and_disable_tune_the_loaded_rules(tmp_path: Path, rules_file: Path) -> None:
    config = tmp_path / "sentinel.yaml"
    config.write_text(f"rules: [{rules_file}]\nrules_disable: [Outbound 443, 'tag:mitre_collection']\n")
    outcome = load_tuned_rules(load_config(str(config)))
    enabled = {r.name for r in outcome.ruleset.rules if r.enabled}
    assert enabled == {"Shell Spawned By Web Server", "Read Shadow"}
    config.write_text(f"rules: [{rules_file}]\nrules_disable:\n  - Outbound 444\n  - tag:nothing\n")
    outcome = load_tuned_rules(load_config(str(config)))
    assert outcome.ruleset is None
    assert outcome.errors == [
        f"{config}:3:5: error: rules_disable: no rule named 'Outbound 444'; did you mean 'Outbound 443'?"
    ]
    assert any("no rule is tagged 'nothing'" in w and f"{config}:4:5" in w for w in outcome.warnings)


def test_restart_needed_names_what_a_reload_cannot_apply(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("output: stdout\nmodel: 'off'\naggregation_window_s: 5\n")
    old = load_config(str(config))
    config.write_text(f"output: file:{tmp_path}/x.json\nmodel: default\naggregation_window_s: 9\n")
    assert restart_needed(old, load_config(str(config))) == ["output", "model"]


# ---- watching ---------------------------------------------------------------------------------------------


def test_file_watcher_sees_edits_renames_and_new_files_once(tmp_path: Path) -> None:
    clock = [0.0]
    conf = tmp_path / "sentinel.yaml"
    conf.write_text("a: 1\n")
    dropins = tmp_path / "sentinel.d"
    watcher = FileWatcher([str(conf), str(dropins)], 5.0, lambda: clock[0])
    assert not watcher.changed()
    write_config(conf, "a: 2\n")
    assert not watcher.changed()  # not time to look yet
    clock[0] = 5.0
    assert watcher.changed()
    clock[0] = 10.0
    assert not watcher.changed()  # once per change
    dropins.mkdir()
    (dropins / "10-x.yaml").write_text("b: 1\n")
    clock[0] = 15.0
    assert watcher.changed()
    (dropins / "10-x.yaml").unlink()
    clock[0] = 20.0
    assert watcher.changed()


# ---- the agent --------------------------------------------------------------------------------------------


def test_run_from_config_redacts_tunes_and_reloads_on_change(
    tmp_path: Path,
    rules_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_signals: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "alerts.json"
    config = tmp_path / "sentinel.yaml"
    base = (
        f"rules: [{rules_file}]\naggregation_window_s: 0\nstate_dir: {tmp_path}/state\nmodel: 'off'\n"
        f"sinks:\n  - {{kind: file, target: {out}, format: falco}}\n"
        "redact: ['--db-key[= ](?P<secret>\\S+)']\nreload: {watch: true, interval_s: 0.01}\n"
    )
    config.write_text(base + "rules_disable: [Outbound 443]\n")
    monkeypatch.setenv("SENTINEL_CONFIG", str(config))
    now = boottime_ns()

    def enable_443(_s: FakeSensor) -> None:
        write_config(config, base)
        time.sleep(0.03)  # past the watch interval: the next poll's tick reloads

    sensor = FakeSensor([
        shell_with_secret(now, 200),
        connect_443(now + 1 * S, 200),  # disabled by the config: no alert
        enable_443,
        [],
        connect_443(now + 2 * S, 200),
    ])  # fmt: skip
    nginx_live(monkeypatch, sensor)
    assert cli.main(["run"]) == 0
    logs = diagnostics(capsys)
    raw = out.read_bytes()
    assert SECRET.encode() not in raw and b"K3yK3y" not in raw
    docs = read_docs(out)
    assert [d["rule"] for d in docs] == ["Shell Spawned By Web Server", "Outbound 443"]
    shell = docs[0]
    assert "[REDACTED]" in shell["output"] and "[REDACTED]" in shell["output_fields"]["proc.cmdline"]
    assert "-p[REDACTED]" in shell["output_fields"]["proc.cmdline"]
    events = [e["event"] for e in logs]
    assert "sentinel.config_loaded" in events
    (reloaded,) = [e for e in logs if e["event"] == "sentinel.rules_reloaded"]
    assert reloaded["config"] == str(config)
    assert not [e for e in logs if e["event"] == "sentinel.restart_needed"]


def test_reload_failure_keeps_the_running_state_then_a_fix_applies(
    tmp_path: Path,
    rules_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_signals: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "alerts.json"
    config = tmp_path / "sentinel.yaml"
    base = f"rules: [{rules_file}]\naggregation_window_s: 0\nmodel: 'off'\nstate_dir: {tmp_path}/state\n"
    config.write_text(base + "rules_disable: [Outbound 443]\n")
    now = boottime_ns()

    def break_it(_s: FakeSensor) -> None:
        write_config(config, base + "rules_disable: [Outbound 443]\nmetrics: {adress: x}\n")
        os.kill(os.getpid(), signal.SIGHUP)

    def fix_it(_s: FakeSensor) -> None:
        write_config(config, base + f"output: file:{tmp_path}/other.json\n")
        os.kill(os.getpid(), signal.SIGHUP)

    sensor = FakeSensor([
        break_it,
        [],
        connect_443(now + 1 * S, 200),  # still disabled: the broken file changed nothing
        fix_it,
        [],
        connect_443(now + 2 * S, 200),
    ])  # fmt: skip
    nginx_live(monkeypatch, sensor)
    assert cli.main(["run", "--config", str(config), "--output", f"file:{out}"]) == 0
    logs = diagnostics(capsys)
    docs = read_docs(out)
    assert [d["rule"]["name"] for d in docs] == ["Rules reload failed", "Outbound 443"]
    failed = docs[0]["sentinel"]["reload"]
    assert f"{config}:6:" in failed["errors"][0] and "adress" in failed["errors"][0]
    (reloaded,) = [e for e in logs if e["event"] == "sentinel.rules_reloaded"]
    assert reloaded["rules"] == 4
    # --output still overrides the file's output, so nothing needs a restart; the file sink is not opened.
    assert not [e for e in logs if e["event"] == "sentinel.restart_needed"]
    assert not (tmp_path / "other.json").exists()


def test_reload_says_which_settings_need_a_restart(
    tmp_path: Path,
    rules_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_signals: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "alerts.json"
    config = tmp_path / "sentinel.yaml"
    base = f"rules: [{rules_file}]\nmodel: 'off'\nstate_dir: {tmp_path}/state\n"
    config.write_text(base + f"output: file:{out}\n")

    def change_sink(_s: FakeSensor) -> None:
        write_config(config, base + f"output: file:{tmp_path}/new.json\nformat: falco\n")
        os.kill(os.getpid(), signal.SIGHUP)

    sensor = FakeSensor([change_sink, [], connect_443(boottime_ns(), 200)])
    nginx_live(monkeypatch, sensor)
    assert cli.main(["run", "--config", str(config)]) == 0
    logs = diagnostics(capsys)
    (pending,) = [e for e in logs if e["event"] == "sentinel.restart_needed"]
    assert pending["settings"] == ["format", "output"]
    docs = read_docs(out)  # the running sink and format stay until a restart
    assert [d["rule"]["name"] for d in docs] == ["Outbound 443"]
    assert not (tmp_path / "new.json").exists()


def test_replay_applies_config_redaction_and_tuning(tmp_path: Path, rules_file: Path) -> None:
    cap = tmp_path / "c.cap"
    with CaptureWriter(cap, capture_header("test", host=HOST.to_dict())) as w:
        w.write_facts(NGINX_INIT)
        w.write_facts(NGINX)
        w.write_snapshot_end(1 * S)
        fork, exec_ = shell_with_secret(2 * S, 200)
        w.write_event(fork)
        w.write_facts_miss(200)  # gone from /proc by the time it was looked at: the event's argv tells
        w.write_event(exec_)
        for e in connect_443(3 * S, 200):
            w.write_event(e)
    config = tmp_path / "c.yaml"
    config.write_text(f"rules: [{rules_file}]\nrules_disable: [Outbound 443]\n")
    result = run("replay", str(cap), "--config", str(config))
    assert result.returncode == 0, result.stderr
    docs = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [d["rule"]["name"] for d in docs] == ["Shell Spawned By Web Server"]
    assert SECRET not in result.stdout
    assert docs[0]["process"]["args"][2] == "mysql -uroot -p[REDACTED] --db-key=K3yK3y shop"


# ---- sentinel config check --------------------------------------------------------------------------------


def test_config_check_command(tmp_path: Path, rules_file: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(f"rules: [{rules_file}]\nmodel: 'off'\nstate_dir: {tmp_path}/state\n")
    ok = run("config", "check", "--config", str(good))
    assert ok.returncode == 0 and f"OK: {good}: 4 rules" in ok.stdout, ok.stdout + ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"rules: [{rules_file}]\nrules_enable: [Read Shadw]\nsinks:\n  - {{kind: htp}}\n")
    res = run("config", "check", "--config", str(bad))
    assert res.returncode == 1
    assert f"{bad}:4:" in res.stdout and "htp" in res.stdout and "INVALID" in res.stdout
    as_json = run("config", "check", "--config", str(good), "--json")
    assert as_json.returncode == 0 and orjson.loads(as_json.stdout)["ok"] is True
    missing = run("config", "check", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr
    helped = run("config", "check", "--help")
    assert helped.returncode == 0 and "--json" in helped.stdout


def test_reloader_applies_live_settings_and_keeps_restart_bound_ones(
    tmp_path: Path, rules_file: Path
) -> None:
    from types import SimpleNamespace

    from sentinel.agent import Reloader
    from sentinel.detect import DetectionStream
    from tests.unit.detect_fixtures import ListSink, make_table

    config = tmp_path / "sentinel.yaml"
    config.write_text(f"rules: [{rules_file}]\nmodel: 'off'\naggregation_window_s: 60\n")
    args = cli.build_parser().parse_args(["run", "--config", str(config)])
    cfg = effective_settings(args, live=True)
    outcome = load_tuned_rules(cfg)
    stream = DetectionStream(make_table(), outcome.ruleset, HOST, ListSink(), "ecs", 60.0)
    engine = SimpleNamespace(settings=SimpleNamespace(alerts=True))
    swapped: list[Any] = []
    clock = [0.0]
    reloader = Reloader(args, cfg, stream, engine, _NullLog(), lambda: clock[0], on_swapped=swapped.append)
    assert reloader.watcher is None and not reloader.files_changed()
    config.write_text(
        f"rules: [{rules_file}]\nmodel: default\naggregation_window_s: 0\nml: {{alerts_enabled: false}}\n"
        "internal_alerts: {sink_backlog: 7}\nreload: {watch: true, interval_s: 1}\nredact_builtin: false\n"
    )
    assert reloader.reload("SIGHUP", 5 * S)
    assert (stream.aggregator.window_ns, engine.settings.alerts, stream.reloads) == (0, False, 1)
    assert swapped[0].sink_backlog_threshold == 7
    assert reloader.cfg.model == "off"  # bound to the engine opened at start
    assert reloader.watcher is not None  # watching starts with the reload that turned it on
    assert not stream.ecs.redactor.active
    clock[0] = 2.0
    config.write_text(config.read_text() + "# touched\n")
    assert reloader.files_changed()


class _NullLog:
    def __getattr__(self, _name: str) -> Any:
        return lambda *_a, **_k: None


def test_a_vanished_default_config_is_a_failed_reload_not_a_return_to_defaults(
    tmp_path: Path, rules_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentinel.agent import Reloader
    from sentinel.detect import DetectionStream
    from tests.unit.detect_fixtures import ListSink, make_table

    config = tmp_path / "sentinel.yaml"
    config.write_text(f"rules: [{rules_file}]\nmodel: 'off'\nrules_disable: [Outbound 443]\n")
    monkeypatch.setenv("SENTINEL_CONFIG", str(config))
    args = cli.build_parser().parse_args(["run"])
    cfg = effective_settings(args, live=True)
    outcome = load_tuned_rules(cfg)
    sink = ListSink()
    stream = DetectionStream(make_table(), outcome.ruleset, HOST, sink, "ecs", 0.0)
    reloader = Reloader(args, cfg, stream, None, _NullLog(), time.monotonic)
    config.unlink()
    assert not reloader.reload("SIGHUP", 5 * S)
    assert stream.ruleset is outcome.ruleset
    (doc,) = sink.docs()
    assert doc["rule"]["name"] == "Rules reload failed"
    assert "is gone" in doc["sentinel"]["reload"]["errors"][0]


def test_enabling_a_refused_rule_is_an_error(tmp_path: Path, rules_file: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("- rule: Typo\n  desc: d\n  condition: evt.type = execve and proc.nme = x\n"
                      "  output: o\n  priority: warning\n  enabled: false\n")  # fmt: skip
    config = tmp_path / "sentinel.yaml"
    config.write_text(f"rules: [{rules_file}, {broken}]\nrules_enable: [Typo]\n")
    outcome = load_tuned_rules(load_config(str(config)))
    assert outcome.ruleset is None
    assert "rule 'Typo' cannot run, it was refused: unknown field 'proc.nme'" in outcome.errors[0]
    config.write_text(f"rules: [{rules_file}, {broken}]\n")
    quiet = load_tuned_rules(load_config(str(config)))  # disabled: its problems are not reported
    assert quiet.ruleset is not None and not any("proc.nme" in w for w in quiet.warnings)


def test_a_failed_reload_lists_every_configuration_problem(tmp_path: Path, rules_file: Path) -> None:
    from sentinel.agent import Reloader
    from sentinel.detect import DetectionStream
    from tests.unit.detect_fixtures import ListSink, make_table

    config = tmp_path / "sentinel.yaml"
    config.write_text(f"rules: [{rules_file}]\nmodel: 'off'\n")
    args = cli.build_parser().parse_args(["run", "--config", str(config)])
    cfg = effective_settings(args, live=True)
    outcome = load_tuned_rules(cfg)
    sink = ListSink()
    stream = DetectionStream(make_table(), outcome.ruleset, HOST, sink, "ecs", 0.0)
    reloader = Reloader(args, cfg, stream, None, _NullLog(), time.monotonic)
    config.write_text(f"rules: [{rules_file}]\nmodel: 'off'\nformat: xml\naggregation_window_s: -1\n")
    assert not reloader.reload("SIGHUP", 5 * S)
    assert stream.ruleset is outcome.ruleset  # the last good state runs on
    (doc,) = sink.docs()
    errors = doc["sentinel"]["reload"]["errors"]
    assert [e.split(": ")[0] for e in errors] == [f"{config}:3:9", f"{config}:4:23"]


def test_a_reload_applies_the_rule_rate_limit(tmp_path: Path, rules_file: Path) -> None:
    from sentinel.agent import Reloader
    from sentinel.detect import DetectionStream
    from tests.unit.detect_fixtures import ListSink, make_table

    config = tmp_path / "sentinel.yaml"
    config.write_text(f"rules: [{rules_file}]\nmodel: 'off'\n")
    args = cli.build_parser().parse_args(["run", "--config", str(config)])
    cfg = effective_settings(args, live=True)
    assert cfg.rule_rate_limit == 20  # the default
    stream = DetectionStream(make_table(), load_tuned_rules(cfg).ruleset, HOST, ListSink(), "ecs", 60.0,
                             rate_per_min=cfg.rule_rate_limit)  # fmt: skip
    reloader = Reloader(args, cfg, stream, None, _NullLog(), time.monotonic)
    config.write_text(f"rules: [{rules_file}]\nmodel: 'off'\nrule_rate_limit: 3\n")
    assert reloader.reload("SIGHUP", 5 * S)
    assert stream.aggregator.rate_per_min == 3


def test_start_up_refuses_with_every_problem_check_finds(tmp_path: Path) -> None:
    """The issue's five problems: `sentinel run` lists all five, located, as `config check` does."""
    from sentinel.agent import SettingsError

    config = tmp_path / "sentinel.yaml"
    config.write_text(
        f"rules: [{tmp_path / 'no-such-rules'}]\nmodel: 'off'\nformat: xml\n"
        "sinks: [{kind: http, target: 'ftp://siem.example/x'}]\naggregation_window_s: -5\nredact: ['([a-z']\n"
    )
    args = cli.build_parser().parse_args(["run", "--config", str(config)])
    with pytest.raises(SettingsError) as info:
        effective_settings(args, live=True)
    lines = str(info.value).splitlines()
    assert [line.split(": ")[0] for line in lines[:5]] == [
        f"{config}:{n}" for n in ("1:9", "3:9", "4:30", "5:23", "6:12")
    ]
    assert lines[-1] == "5 errors in the configuration" and len(info.value.problems) == 5
