"""The detection stream (events → rules → alerts), rules reload, `sentinel replay` detection on a capture, and
`sentinel run` end to end against a fake sensor (no kernel): SIGHUP reload, losses, SIGTERM shutdown.

These use a duck-typed ruleset (tests/unit/detect_fixtures.py) injected where the engine's ``load_rules``
would be called, so they test the alert side only; test_detect_rules.py runs the same paths with real rules.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from sentinel import cli, live, runner
from sentinel import log as logmod
from sentinel.alerts.behaviour import behaviour_key
from sentinel.alerts.ecs import EcsRenderer
from sentinel.containers.meta_view import NO_METADATA
from sentinel.detect import DetectionStream, find_rules_dir, load_ruleset, reload_rules
from sentinel.events import AF_INET, EventType
from sentinel.process.facts import ProcFacts, ReplayFacts
from sentinel.process.table import ProcessTable
from sentinel.rules.context import EvalContext
from sentinel.rules.model import Diagnostic
from sentinel.sensor.loader import SensorConfig, boottime_ns
from tests.unit.detect_fixtures import (
    HOST,
    HOST_SUGGESTED,
    SHA,
    FakeRuleSet,
    ListSink,
    S,
    ev,
    make_table,
    rule,
)
from tests.unit.test_recording import write_capture


def is_open(ctx: EvalContext) -> bool:
    return ctx.ev.type is EventType.OPEN


def shell_under_nginx(ctx: EvalContext) -> bool:
    p = ctx.proc
    return (
        ctx.ev.type is EventType.EXEC and p is not None and p.parent is not None and p.parent.comm == "nginx"
    )


def stream_with(rules: list[Any], **kw: Any) -> tuple[DetectionStream, ListSink, FakeRuleSet]:
    sink = ListSink()
    rs = FakeRuleSet(rules)
    return DetectionStream(make_table(), rs, HOST, sink, **kw), sink, rs


# ------------------------------------------------------------------------------------------ the stream


def test_only_matching_events_raise_alerts_and_every_matching_rule_fires() -> None:
    stream, sink, _ = stream_with([
        rule("Shell under nginx", when=shell_under_nginx, output="%proc.name by %proc.pname"),
        rule("Any exec", when=lambda c: c.ev.type is EventType.EXEC, output="%proc.name"),
        rule("Disabled", enabled=False),
    ])  # fmt: skip
    stream.handle(ev(EventType.FORK, 1 * S, 100, comm="nginx", child_pid=200))
    stream.handle(ev(EventType.EXEC, 2 * S, 200, filename="/bin/sh", argv=["sh", "-c", "id"]))
    stream.handle(ev(EventType.OPEN, 3 * S, 200, path="x", ret=3))
    stream.close()
    docs = sink.docs()
    assert [d["rule"]["name"] for d in docs] == ["Shell under nginx", "Any exec"]
    assert docs[0]["message"] == "sh by nginx"
    assert all(d["@timestamp"] == docs[0]["@timestamp"] for d in docs)
    assert [d["event"]["sequence"] for d in docs] == [1, 2]
    assert sink.closed
    stats = stream.stats()
    assert (stats["events"], stats["matches"], stats["alerts_written"]) == (3, 2, 2)
    assert stats["alerts_by_rule"] == {"Shell under nginx": 1, "Any exec": 1}


def test_open_paths_are_resolved_and_chdir_gives_the_new_cwd() -> None:
    seen: list[tuple[str, str | None]] = []

    def record(ctx: EvalContext) -> bool:
        seen.append((ctx.ev.type_name, ctx.path))
        return False

    stream, _, _ = stream_with([rule("rec", when=record)])
    stream.handle(ev(EventType.OPEN, 1 * S, 100, comm="nginx", path="conf/x", ret=3))
    stream.handle(ev(EventType.CHDIR, 2 * S, 100, comm="nginx", path="/tmp"))
    stream.handle(ev(EventType.OPEN, 3 * S, 100, comm="nginx", path="../etc/passwd", ret=3))
    stream.handle(ev(EventType.CHDIR, 4 * S, 100, comm="nginx", path="nope", ret=-2))
    assert seen == [
        ("open", "/srv/www/conf/x"),
        ("chdir", "/tmp"),
        ("open", "/etc/passwd"),
        ("chdir", "/tmp/nope"),
    ]


def test_context_carries_wall_time() -> None:
    walls: list[int] = []
    stream, _, _ = stream_with([rule("w", when=lambda c: walls.append(c.wall_ns) or False)])
    stream.handle(ev(EventType.OPEN, 7 * S, 100, path="/x", ret=3))
    assert walls == [HOST.boot_time_ns + 7 * S]


def test_alert_shows_the_parent_image_after_it_re_execs() -> None:
    """The ECS process-block cache must notice an ancestor's exec (the stream bumps the exec generation)."""
    stream, sink, _ = stream_with([rule("open", when=is_open)], window_s=0)
    stream.handle(ev(EventType.FORK, 1 * S, 100, comm="nginx", child_pid=200))
    stream.handle(ev(EventType.OPEN, 2 * S, 200, comm="nginx", path="/a", ret=3))
    stream.handle(ev(EventType.EXEC, 3 * S, 100, comm="nginx", filename="/usr/bin/python3", argv=["python3"]))
    stream.handle(ev(EventType.OPEN, 4 * S, 200, comm="nginx", path="/b", ret=3))
    first, second = sink.docs()
    assert first["process"]["parent"]["args"] == ["nginx"]
    assert second["process"]["parent"]["args"] == ["python3"]


def test_repeats_are_aggregated_by_event_time() -> None:
    stream, sink, _ = stream_with([rule("open", when=is_open)], window_s=10)
    for t in range(1, 6):
        stream.handle(ev(EventType.OPEN, t * S, 100, comm="nginx", path=f"/f{t}", ret=3))
    assert len(sink.lines) == 1  # the first at once, the rest counted
    stream.handle(ev(EventType.EXIT, 12 * S, 999))  # any later event closes the window
    docs = sink.docs()
    assert len(docs) == 2
    agg = docs[1]["sentinel"]["aggregation"]
    assert agg["count"] == 4
    assert docs[1]["file"]["path"] == "/f5"  # the latest repeat
    assert docs[1]["@timestamp"] == agg["last"]
    stream.close()
    assert len(sink.lines) == 2


def test_pending_summaries_are_written_at_close_and_finish() -> None:
    stream, sink, _ = stream_with([rule("open", when=is_open)])
    for t in range(3):
        stream.handle(ev(EventType.OPEN, t * S, 100, comm="nginx", path="/x", ret=3))
    stream.finish()
    assert [d["sentinel"].get("aggregation", {}).get("count") for d in sink.docs()] == [None, 2]
    assert not sink.closed and sink.flushes >= 1
    stream.close()
    assert sink.closed


def test_behaviour_key() -> None:
    """Program, parent program, user, container: the process lineage itself is not part of it."""
    table = make_table()
    table.apply(ev(EventType.FORK, 1 * S, 100, comm="nginx", child_pid=200))
    proc = table.get(200)
    assert proc is not None and proc.parent is not None
    key = behaviour_key(proc, "nginx", NO_METADATA)
    assert key == ("behaviour", "/usr/sbin/nginx", proc.parent.exe or proc.parent.comm, proc.uid, "host")
    assert behaviour_key(None, "ghost", NO_METADATA) == ("behaviour", "ghost", None, None, None)


def test_a_failing_rule_costs_one_event_not_the_agent() -> None:
    def boom(ctx: EvalContext) -> bool:
        raise ZeroDivisionError("bug")

    stream, sink, _ = stream_with([rule("boom", when=boom)])
    logmod.configure("info")
    with capture_logs() as logs:
        for t in range(15):
            stream.handle(ev(EventType.OPEN, t * S, 100, path="/x", ret=3))
    assert stream.match_errors == 15
    assert len([e for e in logs if e["event"] == "sentinel.match_failed"]) == 10  # bounded
    assert sink.lines == []


def test_losses_raise_internal_alerts() -> None:
    stream, sink, _ = stream_with([])
    stream.report_loss(5 * S, "open", 12)
    stream.close()
    (doc,) = sink.docs()
    assert doc["rule"]["name"] == "Kernel events lost"
    assert doc["rule"]["ruleset"] == "sentinel-internal"
    assert doc["sentinel"]["output_fields"] == {"buffer": "open", "lost": 12}


def test_falco_format_stream() -> None:
    stream, sink, _ = stream_with([rule("open", when=is_open, output="%proc.name %fd.name")], fmt="falco")
    stream.handle(ev(EventType.OPEN, 2 * S, 100, comm="nginx", path="x", ret=3))
    (doc,) = sink.docs()
    assert set(doc) == {"time", "rule", "priority", "source", "hostname", "output", "tags", "output_fields"}
    assert doc["output_fields"] == {
        "proc.name": "nginx",
        "fd.name": "/srv/www/x",
        "evt.time": HOST.boot_time_ns + 2 * S,
        **HOST_SUGGESTED,
    }


# ------------------------------------------------------------------------------------------------ reload


def diag(message: str, line: int = 3) -> Diagnostic:
    return Diagnostic("error", "unknown-field", message, "/r/bad.yaml", line, 7, "  condition: proc.nme = x")


class FakeLoader:
    """``load_rules`` stand-in: a path containing "bad" is invalid; otherwise one rule per path."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, paths: list[Any]) -> Any:
        self.calls.append([str(p) for p in paths])
        if any("bad" in str(p) for p in paths):
            return SimpleNamespace(ruleset=None, diagnostics=[diag("unknown field proc.nme")], files=paths)
        if any("crash" in str(p) for p in paths):
            raise RuntimeError("engine bug")
        rules = [rule(f"from {Path(str(p)).name}", when=is_open) for p in paths]
        warnings = [Diagnostic("warning", "unused-macro", "macro m is unused", str(paths[0]), 1, 1)]
        return SimpleNamespace(
            ruleset=FakeRuleSet(rules, sha256=str(len(self.calls)) * 64), diagnostics=warnings, files=paths
        )


def test_load_ruleset_formats_located_diagnostics() -> None:
    outcome = load_ruleset(["/r/bad.yaml"], FakeLoader())
    assert outcome.ruleset is None
    assert outcome.errors[0].startswith("/r/bad.yaml:3:7: error")
    assert "unknown field proc.nme" in outcome.errors[0]
    assert "proc.nme = x" in outcome.errors[0]
    good = load_ruleset(["/r/good.yaml"], FakeLoader())
    assert good.ruleset is not None and good.errors == []
    assert good.warnings and "macro m is unused" in good.warnings[0]
    crashed = load_ruleset(["/r/crash.yaml"], FakeLoader())
    assert crashed.ruleset is None and "engine bug" in crashed.errors[0]


def test_reload_swaps_a_valid_ruleset() -> None:
    loader = FakeLoader()
    stream, sink, old = stream_with([rule("old", when=is_open)], window_s=0)
    logmod.configure("info")
    with capture_logs() as logs:
        assert reload_rules(stream, ["/r/new.yaml"], ts_ns=5 * S, load=loader)
    assert stream.ruleset is not old
    assert [r.name for r in stream.ruleset.rules] == ["from new.yaml"]
    (rec,) = [e for e in logs if e["event"] == "sentinel.rules_reloaded"]
    assert rec["rules"] == 1 and rec["previous_sha256"] == SHA and rec["sha256"] == "1" * 64
    stream.handle(ev(EventType.OPEN, 6 * S, 100, path="/x", ret=3))
    (doc,) = sink.docs()
    assert doc["rule"]["name"] == "from new.yaml"
    assert doc["rule"]["version"] == "1" * 12
    assert stream.reloads == 1


@pytest.mark.parametrize("bad", ["/r/bad.yaml", "/r/crash.yaml"])
def test_reload_keeps_the_old_set_on_invalid_rules_and_raises_an_internal_alert(bad: str) -> None:
    stream, sink, old = stream_with([rule("old", when=is_open)], window_s=0)
    logmod.configure("info")
    with capture_logs() as logs:
        assert not reload_rules(stream, [bad], ts_ns=5 * S, load=FakeLoader())
    assert stream.ruleset is old
    (rec,) = [e for e in logs if e["event"] == "sentinel.reload_failed"]
    assert rec["log_level"] == "error"
    assert rec["kept_sha256"] == SHA
    assert rec["errors"]
    (alert,) = sink.docs()
    assert alert["rule"]["name"] == "Rules reload failed"
    assert alert["rule"]["ruleset"] == "sentinel-internal"
    assert alert["sentinel"]["rule"]["priority"] == "error"
    assert alert["@timestamp"] == EcsRenderer(HOST).timestamp(5 * S)
    assert alert["sentinel"]["reload"]["kept_sha256"] == SHA
    # The old rules still run.
    stream.handle(ev(EventType.OPEN, 6 * S, 100, path="/x", ret=3))
    assert [d["rule"]["name"] for d in sink.docs()] == ["Rules reload failed", "old"]
    assert stream.reload_failures == 1


def test_find_rules_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SENTINEL_RULES", str(tmp_path))
    assert find_rules_dir() == tmp_path
    monkeypatch.delenv("SENTINEL_RULES")
    found = find_rules_dir()
    assert found is None or found.name == "rules"


# ------------------------------------------------------------------------------------ replay detection


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> FakeLoader:
    """Rules files for the CLI: a path containing "bad" is invalid; any other gives the replay rules."""
    import sentinel.rules

    loader = FakeLoader()

    def load(paths: list[Any]) -> Any:
        result = loader(paths)
        if result.ruleset is not None:
            result.ruleset = FakeRuleSet([
                rule("Cat opens", when=lambda c: is_open(c) and c.proc is not None and c.proc.comm == "cat",
                     tags=["mitre_collection", "T1005"], output="%proc.name read %fd.name"),
                rule("Shell", when=lambda c: c.ev.type is EventType.EXEC and c.ev.filename == "/bin/sh",
                     priority="notice", output="%proc.name %proc.pid"),
                rule("Outbound", when=lambda c: c.ev.type is EventType.CONNECT, priority="error",
                     output="%proc.name"),
            ])  # fmt: skip
        return result

    monkeypatch.setattr(sentinel.rules, "load_rules", load, raising=False)
    return loader


def diagnostics(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The CLI configures structlog itself (capture_logs cannot see it): read its JSON lines on stderr."""
    return [orjson.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]


def read_docs(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def stable(doc: dict[str, Any]) -> dict[str, Any]:
    doc = orjson.loads(orjson.dumps(doc))
    del doc["event"]["id"], doc["event"]["created"]
    return doc


def test_replay_detects_on_a_capture(
    tmp_path: Path, fake_engine: FakeLoader, capsys: pytest.CaptureFixture[str]
) -> None:
    cap = write_capture(tmp_path / "cap.msgpack")
    out = tmp_path / "alerts.json"
    code = cli.main(["replay", str(cap.path), "--rules", "/r/good.yaml", "--output", f"file:{out}"])
    logs = diagnostics(capsys)
    assert code == 0
    assert fake_engine.calls == [["/r/good.yaml"]]
    docs = read_docs(out)
    assert [d["rule"]["name"] for d in docs] == ["Cat opens", "Kernel events lost", "Shell", "Outbound"]
    cat = docs[0]
    assert cat["file"]["path"] == "/srv/notes.txt"  # resolved against the recorded cwd
    assert cat["message"] == "cat read /srv/notes.txt"
    assert cat["process"]["parent"]["pid"] == 100
    assert cat["threat"]["technique"]["id"] == ["T1005"]
    assert docs[1]["sentinel"]["output_fields"] == {"buffer": "open", "lost": 5}
    assert docs[2]["process"]["executable"] == "/usr/bin/dash"
    assert docs[3]["event"]["severity"] == 73
    assert all(d["event"]["kind"] == "alert" for d in docs)
    (loaded,) = [e for e in logs if e["event"] == "sentinel.rules_loaded"]
    assert loaded["rules"] == 3 and loaded["warning_count"] == 1
    # Deterministic apart from ids and creation times.
    again = tmp_path / "again.json"
    assert cli.main(["replay", str(cap.path), "--rules", "/r/good.yaml", "--output", f"file:{again}"]) == 0
    assert [stable(d) for d in read_docs(again)] == [stable(d) for d in docs]


def test_replay_falco_format(tmp_path: Path, fake_engine: FakeLoader) -> None:
    cap = write_capture(tmp_path / "cap.msgpack")
    out = tmp_path / "alerts.json"
    assert cli.main(["replay", str(cap.path), "--rules", "/r/x.yaml", "--format", "falco",
                     "--output", f"file:{out}"]) == 0  # fmt: skip
    docs = read_docs(out)
    assert [(d["rule"], d["priority"]) for d in docs] == [
        ("Cat opens", "Warning"), ("Kernel events lost", "Warning"), ("Shell", "Notice"),
        ("Outbound", "Error"),
    ]  # fmt: skip


def test_replay_with_invalid_rules_exits_1_with_located_errors(
    tmp_path: Path, fake_engine: FakeLoader, capsys: pytest.CaptureFixture[str]
) -> None:
    cap = write_capture(tmp_path / "cap.msgpack")
    out = tmp_path / "alerts.json"
    assert cli.main(["replay", str(cap.path), "--rules", "/r/bad.yaml", "--output", f"file:{out}"]) == 1
    err = capsys.readouterr().err
    assert "invalid rules" in err
    assert "/r/bad.yaml:3:7: error" in err and "unknown field proc.nme" in err
    assert not out.exists()


def test_replay_config_file_and_flag_override(tmp_path: Path, fake_engine: FakeLoader) -> None:
    cap = write_capture(tmp_path / "cap.msgpack")
    config = tmp_path / "sentinel.yaml"
    config.write_text(
        "rules: [local.yaml]\nformat: falco\noutput: file:from-config.json\naggregation_window_s: 0\n"
    )
    assert cli.main(["replay", str(cap.path), "--config", str(config)]) == 0
    assert fake_engine.calls[-1] == [str(tmp_path / "local.yaml")]
    assert read_docs(tmp_path / "from-config.json")[0]["priority"] == "Warning"  # falco from the config
    flag_out = tmp_path / "flag.json"
    assert cli.main(["replay", str(cap.path), "--config", str(config), "--format", "ecs",
                     "--output", f"file:{flag_out}"]) == 0  # fmt: skip
    assert read_docs(flag_out)[0]["event"]["kind"] == "alert"


def test_replay_bad_config_exits_1(
    tmp_path: Path, fake_engine: FakeLoader, capsys: pytest.CaptureFixture[str]
) -> None:
    cap = write_capture(tmp_path / "cap.msgpack")
    config = tmp_path / "c.yaml"
    config.write_text("format: ecs\nfromat: falco\n")
    assert cli.main(["replay", str(cap.path), "--config", str(config)]) == 1
    assert f"{config}:2:1: unknown key 'fromat'" in capsys.readouterr().err
    assert fake_engine.calls == []  # nothing loaded


def test_replay_bad_output_flag(
    tmp_path: Path, fake_engine: FakeLoader, capsys: pytest.CaptureFixture[str]
) -> None:
    cap = write_capture(tmp_path / "cap.msgpack")
    assert cli.main(["replay", str(cap.path), "--output", "udp:1.2.3.4"]) == 1
    assert "unknown output" in capsys.readouterr().err


def test_replay_aggregates_repeats_across_a_capture(tmp_path: Path, fake_engine: FakeLoader) -> None:
    from sentinel.capture import CaptureWriter, capture_header
    from tests.unit.test_recording import CHILD, INIT, SHELL

    path = tmp_path / "flood.msgpack"
    with CaptureWriter(path, capture_header("test", host=HOST.to_dict())) as w:
        for f in (INIT, SHELL, CHILD):
            w.write_facts(f)
        w.write_snapshot_end(40 * S)
        for i in range(50):  # 50 opens by cat within 5 s, then one 2.5 minutes later
            w.write_event(ev(EventType.OPEN, 50 * S + i * S // 10, 200, comm="cat", path=f"f{i}", ret=3))
        w.write_event(ev(EventType.OPEN, 200 * S, 200, comm="cat", path="late", ret=3))
    out = tmp_path / "a.json"
    assert cli.main(["replay", str(path), "--rules", "/r/x.yaml", "--output", f"file:{out}"]) == 0
    docs = read_docs(out)
    assert [(d["file"]["path"], d["sentinel"].get("aggregation", {}).get("count")) for d in docs] == [
        ("/srv/f0", None), ("/srv/f49", 49), ("/srv/late", 1)  # late: within the streak's next window
    ]  # fmt: skip
    out0 = tmp_path / "b.json"
    assert cli.main(["replay", str(path), "--rules", "/r/x.yaml", "--aggregation-window", "0",
                     "--output", f"file:{out0}"]) == 0  # fmt: skip
    assert len(read_docs(out0)) == 51


# ------------------------------------------------------------------------------- `sentinel run`, no kernel


class FakeSensor:
    """What run_live needs from the sensor; ``script`` items are event batches or callables run at a poll."""

    def __init__(self, script: list[Any]) -> None:
        self.config = SensorConfig()
        self.attached = ["t1", "t2"]
        self.stash_mode = "test"
        self.scheduling = "normal"
        self.kernel_offsets_mode = "none (test)"
        self.open_dedup_active = False
        self.optional_absent: list[str] = []
        self.bpf = None
        self.received: dict[str, int] = {}
        self.lost = {"open": 0}
        self.perf_lost: dict[str, int] = {}
        self.decode_errors = 0
        self.script = list(script)
        self.pending_losses: list[tuple[str, int]] = []
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def poll(self) -> list[Any]:
        if not self.script:
            os.kill(os.getpid(), signal.SIGTERM)
            return []
        item = self.script.pop(0)
        if callable(item):
            item(self)
            return []
        return item

    def drain(self) -> list[Any]:
        return []

    def take_losses(self, _read_kernel: bool) -> list[tuple[str, int]]:
        out, self.pending_losses = self.pending_losses, []
        for name, n in out:
            self.lost[name] += n
        return out

    def close(self) -> None:
        self.closed = True

    def kernel_stats(self) -> dict[str, int]:
        return {}


@pytest.fixture
def restore_signals() -> Any:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def fake_live(monkeypatch: pytest.MonkeyPatch, sensor: FakeSensor) -> ProcessTable:
    facts = ReplayFacts()
    facts.feed(ProcFacts(pid=1, start_ticks=1, ppid=0, comm="init", exe="/sbin/init", cwd="/", args=["init"]))
    facts.feed(
        ProcFacts(pid=100, start_ticks=50, ppid=1, comm="cat", exe="/usr/bin/cat", cwd="/srv", args=["cat"])
    )
    table = ProcessTable("b", facts, clk_tck=100)
    monkeypatch.setattr(live, "live_setup", lambda *_a, **_kw: (HOST, table, sensor))
    monkeypatch.setattr(live, "check_root", lambda _log: True)
    monkeypatch.setattr(live, "mode_fields", lambda: {"headers_mode": "test"})
    return table


def test_run_end_to_end_with_reload_losses_and_shutdown(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_engine: FakeLoader,
    restore_signals: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("# fake\n")
    out = tmp_path / "alerts.json"
    now = boottime_ns()

    def opens(t: int) -> list[Any]:
        return [ev(EventType.OPEN, now + t * S // 1000, 100, comm="cat", path=f"f{t}", ret=3)]

    def lose(s: FakeSensor) -> None:
        s.pending_losses.append(("open", 42))

    sensor = FakeSensor([opens(1), opens(2), lose, opens(3), lambda _s: os.kill(os.getpid(), signal.SIGHUP)])
    fake_live(monkeypatch, sensor)
    code = cli.main(["run", "--rules", str(rules), "--output", f"file:{out}", "--aggregation-window", "3600"])
    logs = diagnostics(capsys)
    assert code == 0
    assert sensor.started and sensor.closed
    events = [e["event"] for e in logs]
    assert events.index("sentinel.rules_loaded") < events.index("sentinel.ready")
    assert "sentinel.rules_reloaded" in events
    assert events[-2:] == ["sentinel.stopped", "sentinel.detection_stopped"]
    (loaded,) = [e for e in logs if e["event"] == "sentinel.rules_loaded"]
    assert loaded["rules"] == 3 and len(loaded["sha256"]) == 64
    stopped = next(e for e in logs if e["event"] == "sentinel.stopped")
    assert stopped["signal"] == signal.SIGTERM
    docs = read_docs(out)
    names = [(d["rule"]["name"], d["sentinel"].get("aggregation", {}).get("count")) for d in docs]
    # The first open at once; the loss alert; the two repeats summarised at shutdown.
    assert names == [("Cat opens", None), ("Kernel events lost", None), ("Cat opens", 2)]
    assert fake_engine.calls == [[str(rules)], [str(rules)]]  # startup and the SIGHUP reload
    assert stat_mode(out) == 0o600


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_run_sighup_with_invalid_rules_keeps_running(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_engine: FakeLoader,
    restore_signals: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    out = tmp_path / "alerts.json"
    now = boottime_ns()
    state = {"bad": False}
    real_call = fake_engine.__call__

    def make_bad(_s: FakeSensor) -> None:
        state["bad"] = True
        os.kill(os.getpid(), signal.SIGHUP)

    def loader(paths: list[Any]) -> Any:
        return real_call([f"{p}/bad.yaml" for p in paths] if state["bad"] else paths)

    monkeypatch.setattr(FakeLoader, "__call__", lambda self, paths: loader(paths))
    sensor = FakeSensor([
        [ev(EventType.OPEN, now, 100, comm="cat", path="a", ret=3)],
        make_bad,
        [ev(EventType.OPEN, now + 10 * S, 100, comm="cat", path="b", ret=3)],
    ])  # fmt: skip
    fake_live(monkeypatch, sensor)
    code = cli.main(
        ["run", "--rules", str(rules_dir), "--output", f"file:{out}", "--aggregation-window", "0"]
    )
    logs = diagnostics(capsys)
    assert code == 0
    failed = [e for e in logs if e["event"] == "sentinel.reload_failed"]
    assert len(failed) == 1 and "unknown field proc.nme" in failed[0]["errors"][0]
    docs = read_docs(out)
    assert [d["rule"]["name"] for d in docs] == ["Cat opens", "Rules reload failed", "Cat opens"]
    assert docs[1]["rule"]["ruleset"] == "sentinel-internal"


def test_run_invalid_rules_exit_1_before_touching_the_kernel(
    monkeypatch: pytest.MonkeyPatch, fake_engine: FakeLoader, capsys: pytest.CaptureFixture[str]
) -> None:
    def forbidden(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the kernel side was reached with invalid rules")

    monkeypatch.setattr(live, "live_setup", forbidden)
    monkeypatch.setattr(live, "check_root", forbidden)
    assert cli.main(["run", "--rules", "/r/bad.yaml"]) == 1
    err = capsys.readouterr().err
    assert "/r/bad.yaml:3:7: error" in err and "unknown field proc.nme" in err


def test_run_bad_config_and_output_exit_before_anything(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_engine: FakeLoader,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def forbidden(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("reached live setup")

    monkeypatch.setattr(live, "live_setup", forbidden)
    config = tmp_path / "c.yaml"
    config.write_text("sensor:\n  pages: 3\n")
    assert cli.main(["run", "--config", str(config)]) == 1
    assert f"{config}:2:10: pages must be a power of two" in capsys.readouterr().err
    assert cli.main(["run", "--rules", "/r/x.yaml", "--output", f"file:{config}/not/a/dir.json"]) == 1
    assert "cannot open output" in capsys.readouterr().err
    assert fake_engine.calls == [["/r/x.yaml"]]


def test_run_parser_defaults_leave_room_for_the_config() -> None:
    args = cli.build_parser().parse_args(["run"])
    assert (args.rules, args.format, args.output, args.config, args.aggregation_window) == (None,) * 5
    assert (args.wakeup_events, args.open_dedup, args.pages, args.loader_opens) == (None,) * 4
    args = cli.build_parser().parse_args(
        ["run", "--rules", "a", "--rules", "b", "--format", "falco", "--output", "stdout",
         "--output", "file:x", "--aggregation-window", "0", "--wakeup-events", "4", "--duration", "1"]
    )  # fmt: skip
    assert args.rules == ["a", "b"] and args.output == ["stdout", "file:x"]
    assert (args.format, args.aggregation_window, args.wakeup_events) == ("falco", 0.0, 4)
    for bad in (["run", "--format", "xml"], ["run", "--aggregation-window", "-1"]):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(bad)


def test_run_settings_merge_config_and_flags(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("rules: [r1]\nformat: falco\nsensor: {wakeup_events: 8, open_dedup_s: 0, pages: 256}\n")
    args = cli.build_parser().parse_args(["run", "--config", str(config), "--wakeup-events", "2"])
    cfg = runner.detection_settings(args, "run")
    assert cfg.rules == [str(tmp_path / "r1")]
    assert (cfg.format, cfg.wakeup_events, cfg.open_dedup_s, cfg.pages) == ("falco", 2, 0.0, 256)
    args = cli.build_parser().parse_args(
        ["run", "--config", str(config), "--rules", "mine", "--open-dedup", "5"]
    )
    cfg = runner.detection_settings(args, "run")
    assert (cfg.rules, cfg.open_dedup_s, cfg.wakeup_events) == (["mine"], 5.0, 8)
    assert cfg.loader_opens == "filter"  # the default, neither file nor flag changed it
    config.write_text("rules: [r1]\nsensor: {loader_opens: report}\n")
    args = cli.build_parser().parse_args(["run", "--config", str(config)])
    assert runner.detection_settings(args, "run").loader_opens == "report"
    args = cli.build_parser().parse_args(["run", "--config", str(config), "--loader-opens", "filter"])
    assert runner.detection_settings(args, "run").loader_opens == "filter"


def test_connect_alert_fields() -> None:
    stream, sink, _ = stream_with([rule("c", when=lambda c: c.ev.type is EventType.CONNECT)])
    stream.handle(ev(EventType.CONNECT, 1 * S, 100, comm="nginx", fd=3, family=AF_INET, address="1.2.3.4",
                     port=9, sock_type=1, ret=-115))  # fmt: skip
    (doc,) = sink.docs()
    assert doc["destination"]["port"] == 9
    assert doc["event"]["outcome"] == "unknown"


def test_types_no_rule_reads_only_update_the_table_and_a_rule_on_them_still_fires() -> None:
    """Forks and exits skip matching when no rule looks at them (the shipped rules: none); a rule on exits
    makes them matched again, so the shortcut never hides an event a rule names."""
    from sentinel.anomaly.features import SCORED_TYPES
    from sentinel.detect import _SCORED
    from tests.unit.rules_support import rule_yaml, ruleset

    assert set(SCORED_TYPES) == _SCORED  # the model's scored types are never skipped
    execs_only = ruleset(rule_yaml("evt.type = execve", name="execs"))
    assert EventType.FORK in execs_only.silent_types and EventType.EXIT in execs_only.silent_types
    assert EventType.EXEC not in execs_only.silent_types
    exits = ruleset(rule_yaml("evt.type = procexit", name="exits"))
    assert EventType.EXIT not in exits.silent_types
    for rs, expected in ((execs_only, []), (exits, ["exits"])):
        sink = ListSink()
        table = make_table()
        stream = DetectionStream(table, rs, HOST, sink, window_s=0)
        stream.handle(ev(EventType.FORK, 10 * S, 100, child_pid=200, child_start_ns=10 * S))
        assert table.get(200) is not None and table.get(200).ppid == 100  # the fork still built the child
        stream.handle(ev(EventType.EXIT, 11 * S, 200))
        stream.close()
        assert table.get(200).exited_ns == 11 * S
        assert [orjson.loads(line)["rule"]["name"] for line in sink.lines] == expected
        assert stream.events == 2


def test_run_tells_systemd_ready_watchdog_reloaded_stopping(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_engine: FakeLoader,
    restore_signals: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Type=notify: READY=1 after the probes attach, WATCHDOG=1 from the loop, STATUS after a reload,
    STOPPING=1 at shutdown, over a real datagram socket."""
    import socket

    rules = tmp_path / "rules.yaml"
    rules.write_text("# fake\n")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "2")  # a ping at every poll
    now = boottime_ns()
    opens = [ev(EventType.OPEN, now, 100, comm="cat", path="a", ret=3)]
    sensor = FakeSensor([opens, [], lambda _s: os.kill(os.getpid(), signal.SIGHUP), []])
    fake_live(monkeypatch, sensor)
    try:
        code = cli.main(["run", "--rules", str(rules), "--output", f"file:{tmp_path}/a.json"])
        receiver.setblocking(False)
        got: list[str] = []
        with contextlib.suppress(BlockingIOError):
            while True:
                got += receiver.recv(4096).decode().split("\n")
    finally:
        receiver.close()
    diagnostics(capsys)
    assert code == 0
    assert got[0].startswith("STATUS=starting")
    ready = got.index("READY=1")
    assert got[ready + 1] == "STATUS=running: 3 rules, 2 tracepoints, alerts to file:" + f"{tmp_path}/a.json"
    assert "WATCHDOG=1" not in got[:ready] and got.count("WATCHDOG=1") >= 3
    assert any(line.startswith("STATUS=running: ") and "(reloaded " in line for line in got)
    assert got[-2:][0] == "STOPPING=1"
