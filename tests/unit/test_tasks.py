"""Periodic and background work survives any failure: counted, logged, reported as a rate-limited ``Agent task
failed`` internal alert, and the agent goes on (and still exits 0 on SIGTERM).

Issue 10: a non-UTF-8 file name became a baseline key, saving the baseline raised TypeError (only OSError was
caught), the agent died 5 minutes later and exited 1 on every SIGTERM after. The end-to-end tests below run
`sentinel run` on the fake sensor of test_detect.py with the real rules engine, state directory and sinks.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from sentinel import cli, tasks
from sentinel.anomaly.live import AnomalyEngine, AnomalySettings, open_engine
from sentinel.anomaly.state import HostState
from sentinel.detect import DetectionStream
from sentinel.events import EventType
from sentinel.pipeline import run_live
from sentinel.sensor.loader import boottime_ns
from sentinel.sinks import MultiSink, SinkConfig
from sentinel.sinks.delivery import DELIVERED, Outcome, SpooledSink
from sentinel.text import unescape
from tests.unit.detect_fixtures import (  # noqa: F401
    HOST,
    FakeRuleSet,
    ListSink,
    S,
    diagnostics_to_the_current_stderr,
    ev,
    make_table,
)
from tests.unit.test_anomaly_live import Log, open_ctx, proc
from tests.unit.test_detect import FakeSensor, diagnostics, fake_live, read_docs, restore_signals  # noqa: F401
from tests.unit.test_detect_rules import RULES

HOSTILE = b"/tmp/x-\xff/f\xfe".decode("utf-8", "surrogateescape")


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def failures() -> Any:
    """A fresh process-wide registry for the test (the agent makes its own at start)."""
    yield tasks.reset()
    tasks.reset()


def format_sinks() -> tuple[MultiSink, ListSink, ListSink]:
    """One sink per alert format, so every alert is rendered as ECS and as Falco."""
    ecs, falco = ListSink(), ListSink()
    ecs.format, falco.format = "ecs", "falco"  # type: ignore[attr-defined]
    return MultiSink([ecs, falco]), ecs, falco  # type: ignore[list-item]


# ---- the registry ------------------------------------------------------------------------------------------


def test_every_failure_is_counted_and_reported_at_most_once_per_interval() -> None:
    clock = Clock()
    reg = tasks.TaskFailures(interval_s=300.0, clock=clock)
    log = Log()
    assert reg.snapshot()["state_save"] == 0  # every known task is exported from the start
    for _ in range(50):  # a task failing on every tick
        reg.record("state_save", TypeError("str is not valid UTF-8: surrogates not allowed"), log)
    assert reg.snapshot()["state_save"] == 50
    (report,) = reg.take_reports()
    assert (report.task, report.failures, report.total) == ("state_save", 1, 1)
    assert report.problem == "TypeError: str is not valid UTF-8: surrogates not allowed"
    assert log.events() == ["sentinel.task_failed"]  # the diagnostic is rate-limited with the alert
    clock.now += 301
    reg.record("state_save", RuntimeError("again"), log)
    reg.record("training", ValueError("other task"), log)
    reports = reg.take_reports()
    assert [(r.task, r.failures, r.total) for r in reports] == [("state_save", 50, 51), ("training", 1, 1)]
    assert reg.take_reports() == []
    level, event, fields = log.records[1]
    assert (level, event) == ("error", "sentinel.task_failed")
    assert (fields["task"], fields["failures"]) == ("state_save", 50)
    assert isinstance(fields["exc_info"], RuntimeError)  # the traceback goes to the diagnostic


def test_guard_records_any_exception_but_lets_a_closed_stdout_end_the_command(failures: Any) -> None:
    def boom() -> None:
        raise KeyError("bug")

    assert tasks.guard("metrics", boom, log=Log()) is None
    assert tasks.guard("metrics", lambda x: x + 1, 1) == 2
    assert failures.snapshot()["metrics"] == 1

    def closed_pipe() -> None:
        raise BrokenPipeError

    with pytest.raises(BrokenPipeError):
        tasks.guard("flush", closed_pipe)


def test_reports_become_agent_task_failed_alerts_in_both_formats(failures: Any) -> None:
    sink, ecs, falco = format_sinks()
    stream = DetectionStream(make_table(), FakeRuleSet([]), HOST, sink, "ecs", window_s=60)
    stream.task_failures = failures
    failures.record("state_save", TypeError(f"cannot write {HOSTILE}"), Log())
    stream.report_task_failures(5 * S)
    stream.report_task_failures(6 * S)  # nothing new: nothing written
    stream.close()
    (doc,) = ecs.docs()
    assert doc["rule"]["name"] == "Agent task failed" and doc["rule"]["ruleset"] == "sentinel-internal"
    fields = doc["sentinel"]["output_fields"]
    assert (fields["task"], fields["failures"], fields["total"]) == ("state_save", 1, 1)
    assert doc["sentinel"]["task"]["name"] == "state_save"
    assert "sentinel.output_fields.problem" in doc["sentinel"]["escaped_fields"]
    assert unescape(fields["problem"]) == b"TypeError: cannot write /tmp/x-\xff/f\xfe"
    (fdoc,) = falco.docs()
    assert (fdoc["rule"], fdoc["source"], fdoc["priority"]) == ("Agent task failed", "internal", "Error")
    assert fdoc["output_fields"]["task"] == "state_save"


# ---- the anomaly engine ------------------------------------------------------------------------------------


def learning_engine(tmp_path: Path, log: Log, **kw: Any) -> AnomalyEngine:
    engine, _ = open_engine(AnomalySettings(state_dir=str(tmp_path), save_interval_s=0.0, **kw), log)
    assert engine is not None
    return engine


def test_a_save_failing_with_any_exception_is_counted_and_the_engine_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: Any
) -> None:
    log = Log()
    engine = learning_engine(tmp_path, log)
    assert engine.state is not None

    def refuse(_state: Any) -> None:
        raise TypeError("str is not valid UTF-8: surrogates not allowed")

    monkeypatch.setattr(engine.state, "save_profiles", refuse)
    engine.observe(open_ctx(proc(5, "/usr/bin/cat"), 10, HOSTILE))
    for _ in range(3):
        engine.tick(log)  # the periodic save, due on every tick here
    assert engine.stats.save_errors == 3 and engine.stats.saves == 0
    assert failures.snapshot()["state_save"] == 3
    assert log.events().count("sentinel.state_save_failed") == 3
    assert log.events().count("sentinel.task_failed") == 1
    assert engine.close(log) == []  # stopping: never raises either
    assert failures.snapshot()["state_save"] == 4


def test_a_failed_training_is_reported_and_tried_again_later(tmp_path: Path, failures: Any) -> None:
    log = Log()
    engine = learning_engine(tmp_path, log, learn_period_s=1.0, min_events=2)
    assert engine.progress is not None and engine.sample is not None
    for i in range(5):
        engine.observe(open_ctx(proc(5, "/usr/bin/cat"), 10 + i, "/etc/hostname"))
    engine.progress.learned_s = 10.0
    for row in engine.sample.rows:
        row[0][0] = float("nan")  # a fitting that fails inside the training thread
    engine.tick(log)  # starts the training thread (which may fail before the tick ends: then it is handled)
    if engine.job is not None:
        assert engine.job.done.wait(60)
        engine.tick(log)
    assert engine.stats.trainings == 1
    assert engine.job is None and engine.stats.training_errors == 1 and engine.phase == "learning"
    assert failures.snapshot()["training"] == 1
    assert "sentinel.training_failed" in log.events()
    engine.tick(log)
    assert engine.job is None  # an hour of learning before the next attempt


# ---- sinks -------------------------------------------------------------------------------------------------


class FlakyTransport:
    """Raises what no transport is supposed to raise, then delivers."""

    batch_max = 10

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[bytes] = []
        self.lock = threading.Lock()

    def send(self, lines: list[bytes]) -> Outcome:
        with self.lock:
            if self.failures:
                self.failures -= 1
                raise TypeError("a bug in the transport")
            self.sent.extend(lines)
        return Outcome(DELIVERED)

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_delivery_thread_survives_any_exception(tmp_path: Path, failures: Any) -> None:
    cfg = SinkConfig(kind="http", target="http://127.0.0.1:9/", batch_wait_s=0.0, retry_initial_s=0.01,
                     retry_max_s=0.02, close_timeout_s=5.0)  # fmt: skip
    transport = FlakyTransport(failures=3)
    sink = SpooledSink(cfg, str(tmp_path), transport)
    try:
        for i in range(5):
            sink.write(b'{"n":%d}' % i)
        sink.flush()
        deadline = time.monotonic() + 10
        while len(transport.sent) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sink.close()
    assert transport.sent == [b'{"n":%d}' % i for i in range(5)]
    assert failures.snapshot()["sink_delivery"] == 3
    stats = sink.stats()
    assert stats["errors"] == 3 and stats["delivered"] == 5 and stats["status"] == "ok"


# ---- the loop --------------------------------------------------------------------------------------------


def test_run_live_goes_on_after_a_failing_event_tick_flush_and_loss_report(
    restore_signals: Any,  # noqa: F811
    failures: Any,
) -> None:
    table = make_table()
    handled: list[int] = []

    def handle(e: Any) -> None:
        if e.pid == 666:
            raise RecursionError("a hostile lineage")
        handled.append(e.pid)

    def tick() -> None:
        raise ValueError("tick bug")

    def flush() -> None:
        raise UnicodeEncodeError("utf-8", HOSTILE, 7, 8, "surrogates not allowed")

    def on_loss(_ts: int, _buffer: str, _lost: int) -> None:
        raise KeyError("loss bug")

    def lose(s: FakeSensor) -> None:
        s.pending_losses.append(("open", 3))

    batch = [ev(EventType.OPEN, S, 100, path="a", ret=3), ev(EventType.OPEN, S, 666, path="b", ret=3),
             ev(EventType.OPEN, S, 100, path="c", ret=3)]  # fmt: skip
    sensor = FakeSensor([batch, lose, batch])
    count = run_live(sensor, table, handle, Log(), None, flush, on_loss=on_loss, on_tick=tick)
    assert count == 6 and handled == [100, 100, 100, 100]
    snap = failures.snapshot()
    assert (snap["handle_event"], snap["tick"], snap["loss_report"]) == (2, 4, 1)
    assert snap["flush"] == 5  # each poll and the final one
    assert sensor.closed


def test_run_live_services_the_sensor_in_the_middle_of_a_long_batch(restore_signals: Any) -> None:  # noqa: F811
    """Every SERVICE_EVERY events of one batch the sensor empties its exec rings (Sensor.service): a batch of
    a storm's opens takes over a second to handle, longer than the exec rings hold."""
    from sentinel.pipeline import SERVICE_EVERY

    table = make_table()
    seen: list[int] = []
    calls: list[int] = []
    batch = [ev(EventType.OPEN, S, 100, path="a", ret=3)] * (2 * SERVICE_EVERY + 10)
    sensor = FakeSensor([batch])
    sensor.service = lambda: calls.append(len(seen))  # type: ignore[attr-defined]
    run_live(sensor, table, lambda e: seen.append(e.pid), Log(), None, lambda: None)
    assert calls == [SERVICE_EVERY, 2 * SERVICE_EVERY]


# ---- `sentinel run` end to end ----------------------------------------------------------------------------


@pytest.fixture
def quick_saves(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent saves its anomaly state on every tick (300 s in production)."""
    import sentinel.agent

    real = sentinel.agent.anomaly_settings

    def settings(cfg: Any, live: bool) -> Any:
        out = real(cfg, live)
        out.save_interval_s = 0.0
        return out

    monkeypatch.setattr(sentinel.agent, "anomaly_settings", settings)


def run_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: list[Any]
) -> tuple[int, list[dict[str, Any]], Path]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    out = tmp_path / "alerts.json"
    fake_live(monkeypatch, FakeSensor(script))
    code = cli.main(["run", "--rules", str(rules), "--output", f"file:{out}", "--aggregation-window", "0",
                     "--state-dir", str(tmp_path / "state"), "--model", "auto"])  # fmt: skip
    return code, read_docs(out), tmp_path / "state"


def hostile_opens(n: int) -> list[Any]:
    now = boottime_ns()
    return [[ev(EventType.OPEN, now + i * S, 100, comm="cat", path=f"{HOSTILE}{i}", ret=3)] for i in range(n)]


def test_run_with_a_non_utf8_open_saves_its_baseline_and_exits_0_on_sigterm(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    quick_saves: None,
    restore_signals: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The reported bug end to end: the open, periodic saves, SIGTERM; exit 0, the key reloads."""
    code, docs, state_dir = run_agent(tmp_path, monkeypatch, hostile_opens(3))
    logs = diagnostics(capsys)
    assert code == 0
    events = [e["event"] for e in logs]
    assert "sentinel.state_save_failed" not in events and "sentinel.task_failed" not in events
    stopped = next(e for e in logs if e["event"] == "sentinel.stopped")
    assert set(stopped["task_failures"].values()) == {0}
    assert docs and all(d["rule"]["name"] == "Cat Reads Anything" for d in docs)
    assert unescape(docs[0]["file"]["path"]).startswith(b"/tmp/x-\xff/f\xfe")
    orjson.loads((state_dir / "anomaly" / "profiles.json").read_bytes())  # strict JSON
    profiles, problem = HostState(state_dir).load_profiles()
    assert problem is None and profiles is not None
    assert profiles.tables["read_dir"].count("/usr/bin/cat", HOSTILE.rpartition("/")[0]) >= 1.0  # per slot


def test_run_survives_a_save_failing_on_every_tick_and_reports_it_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    quick_saves: None,
    restore_signals: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    def refuse(_self: Any, _state: Any) -> None:
        raise TypeError("str is not valid UTF-8: surrogates not allowed")

    monkeypatch.setattr(HostState, "save_profiles", refuse)
    code, docs, _ = run_agent(tmp_path, monkeypatch, hostile_opens(5))
    logs = diagnostics(capsys)
    assert code == 0  # SIGTERM after the failures: a clean stop
    names = [d["rule"]["name"] for d in docs]
    assert names.count("Cat Reads Anything") == 5  # detection went on
    (failed,) = [d for d in docs if d["rule"]["name"] == "Agent task failed"]  # once, not per tick
    fields = failed["sentinel"]["output_fields"]
    assert fields["task"] == "state_save"
    assert fields["problem"].startswith("TypeError: str is not valid UTF-8")
    assert failed["event"]["kind"] == "alert" and failed["rule"]["ruleset"] == "sentinel-internal"
    assert [e["event"] for e in logs].count("sentinel.task_failed") == 1
    stopped = next(e for e in logs if e["event"] == "sentinel.stopped")
    assert stopped["task_failures"]["state_save"] >= 5
