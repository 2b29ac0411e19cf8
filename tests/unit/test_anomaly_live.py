"""The anomaly engine inside the agent: learning that survives restarts, training, switching and
retraining, refusal of bad models, lazy ml.* values, alerts grouped per process tree, novelty alerting
once."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from sentinel.alerts.model import ML_RULESET
from sentinel.anomaly.features import FEATURES, INDEX
from sentinel.anomaly.live import PHASE_DETECTION, PHASE_LEARNING, AnomalyEngine, AnomalySettings, open_engine
from sentinel.anomaly.model import load_model
from sentinel.anomaly.profiles import HOST as HOST_SUBJECT
from sentinel.anomaly.state import HostState
from sentinel.anomaly.train import train
from sentinel.cli import main
from sentinel.detect import DetectionStream
from sentinel.events import AF_INET, Event, EventType
from sentinel.process.facts import ReplayFacts
from sentinel.process.table import Process, ProcessTable
from sentinel.rules.context import EvalContext
from sentinel.sinks import StdoutSink

from .anomaly_support import HOST, write_baseline

T0 = HOST.boot_time_ns


class Log:
    """Records what the engine logs (structlog-like calls)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def _rec(self, level: str) -> Any:
        return lambda event, **kw: self.records.append((level, event, kw))

    def __getattr__(self, level: str) -> Any:
        return self._rec(level)

    def events(self) -> list[str]:
        return [e for _, e, _ in self.records]


def proc(pid: int, exe: str, parent: Process | None = None, uid: int = 1000) -> Process:
    return Process(pid=pid, ppid=parent.pid if parent else 0, start_ns=0, entity_id=f"e{pid}", comm=exe[-15:],
                   exe=exe, uid=uid, parent=parent, args=[exe])  # fmt: skip


def exec_ctx(p: Process, ts: int, argv: list[str] | None = None) -> EvalContext:
    argv = argv or [p.exe]
    ev = Event(type=EventType.EXEC, ts_ns=ts, pid=p.pid, tid=p.pid, uid=p.uid, gid=p.uid, comm=p.comm,
               filename=p.exe, argv=argv, argc_total=len(argv))  # fmt: skip
    return EvalContext(ev, p, None, T0 + ts)


def open_ctx(p: Process, ts: int, path: str) -> EvalContext:
    ev = Event(type=EventType.OPEN, ts_ns=ts, pid=p.pid, tid=p.pid, uid=p.uid, gid=p.uid, comm=p.comm,
               path=path, ret=3)  # fmt: skip
    return EvalContext(ev, p, path, T0 + ts)


def connect_ctx(p: Process, ts: int, addr: str, port: int) -> EvalContext:
    ev = Event(type=EventType.CONNECT, ts_ns=ts, pid=p.pid, tid=p.pid, uid=p.uid, gid=p.uid, comm=p.comm,
               family=AF_INET, address=addr, port=port, ret=0)  # fmt: skip
    return EvalContext(ev, p, None, T0 + ts)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("model")
    train([write_baseline(d / "base.cap")], d / "m", alerts_per_day=2.0)
    return d / "m"


def benign_stream(engine: AnomalyEngine, n: int, start_ts: int = 1) -> None:
    init = proc(1, "/usr/lib/systemd/systemd", uid=0)
    shell = proc(100, "/usr/bin/bash", init)
    for i in range(n):
        p = proc(1000 + i, ["/usr/bin/ls", "/usr/bin/cat", "/usr/bin/grep"][i % 3], shell)
        engine.observe(exec_ctx(p, start_ts + i * 1_000_000_000))
        engine.observe(open_ctx(p, start_ts + i * 1_000_000_000 + 1, "/etc/hostname"))


def test_learning_survives_restart_then_trains_and_switches(tmp_path: Path) -> None:
    settings = AnomalySettings(
        state_dir=str(tmp_path), learn_period_s=3600, min_events=100, save_interval_s=1e9
    )
    log = Log()
    engine, notices = open_engine(settings, log)
    assert engine is not None and not notices and engine.phase == PHASE_LEARNING
    benign_stream(engine, 150)
    assert engine.sample is not None and engine.sample.size == 300
    ctx = open_ctx(proc(5, "/usr/bin/ls"), 10**12, "/etc/hostname")
    engine.observe(ctx)
    assert ctx.ml.value("score") is None  # no model while learning: ml.score is missing
    assert ctx.ml.value("novelty.read_dir") is not None  # novelties are there for rules already
    assert engine.progress is not None
    engine.progress.learned_s = 1000.0
    ls_count = engine.extractor.state.tables["exe"].count(HOST_SUBJECT, "/usr/bin/ls")
    assert ls_count == 16.0  # 50 runs over 150 s: once per 10 s slot, plus pid 5 (an open, later)
    engine.close(log)  # the agent stops: state saved

    again, _ = open_engine(settings, log)
    assert again is not None and again.phase == PHASE_LEARNING
    assert again.progress is not None and again.progress.learned_s == 1000.0  # resumed, not restarted
    assert again.sample is not None and again.sample.size == 301
    assert again.extractor.state.tables["exe"].count(HOST_SUBJECT, "/usr/bin/ls") == ls_count
    benign_stream(again, 100, start_ts=200 * 10**9)
    again.progress.learned_s = 3600.0
    again.tick(log)
    assert again.job is not None
    again.job.done.wait(60)
    again.tick(log)
    assert again.phase == PHASE_DETECTION and again.model_name == "host", log.records[-3:]
    assert "sentinel.model_trained" in log.events()
    manifest = load_model(tmp_path / "anomaly" / "model").manifest
    assert manifest["features"] == list(FEATURES) and manifest["events_seen"] == 501
    assert again.progress.trainings == 1  # next: at twice the learned time
    assert again.progress.next_train_s == pytest.approx(7200.0, abs=30)
    # the next start uses the host model directly, and goes on learning towards the next training
    third, _ = open_engine(settings, log)
    assert third is not None and third.phase == PHASE_DETECTION and third.model_name == "host"
    assert third.progress is not None and third.progress.next_train_s == pytest.approx(7200.0, abs=30)
    assert third.sample is not None and third.sample.size == 501
    benign_stream(third, 10, start_ts=400 * 10**9)
    third.score_pending()
    assert third.sample.size == 521  # detection keeps sampling rows for the next training
    third.progress.learned_s = 7300.0
    third.tick(log)
    assert third.job is not None and third.phase == PHASE_DETECTION  # retrains without stopping detection
    third.job.done.wait(60)
    third.tick(log)
    assert third.progress.trainings == 2 and third.progress.next_train_s == pytest.approx(14_600.0, abs=30)
    assert log.records[-1][2]["retrained"] is True


def test_too_few_events_extends_learning(tmp_path: Path) -> None:
    settings = AnomalySettings(state_dir=str(tmp_path), learn_period_s=1, min_events=10_000)
    log = Log()
    engine, _ = open_engine(settings, log)
    assert engine is not None
    benign_stream(engine, 10)
    assert engine.progress is not None
    engine.progress.learned_s = 5.0
    engine.tick(log)
    assert engine.job is None and engine.phase == PHASE_LEARNING
    assert "sentinel.learning_extended" in log.events()


def test_tampered_model_is_refused_and_rules_run_alone(tmp_path: Path, model_dir: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in model_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    data = bytearray((bad / "forest.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "forest.npz").write_bytes(bytes(data))
    log = Log()
    engine, notices = open_engine(AnomalySettings(model=str(bad), state_dir=str(tmp_path / "s")), log)
    assert engine is None
    assert [a.rule.name for a in notices] == ["Anomaly model refused"]
    assert "sha256" in notices[0].output
    assert ("error", "sentinel.model_refused") in [(lv, e) for lv, e, _ in log.records]
    missing, notices = open_engine(AnomalySettings(model=str(tmp_path / "nope"), state_dir=""), log)
    assert missing is None and "not a directory" in notices[0].output


def test_state_corruption_is_quarantined_not_fatal(tmp_path: Path) -> None:
    d = tmp_path / "anomaly"
    d.mkdir()
    (d / "profiles.json").write_text("{not json")
    (d / "learning.json").write_text(json.dumps({"version": 2, "learned_s": 5, "events": 3, "started": 0}))
    (d / "sample.msgpack").write_bytes(b"\xc1garbage")
    log = Log()
    engine, _ = open_engine(AnomalySettings(state_dir=str(tmp_path)), log)
    assert engine is not None and engine.phase == PHASE_LEARNING
    assert engine.progress is not None and engine.progress.learned_s == 0.0  # started over, and said so
    assert (d / "profiles.json.corrupt").exists() and (d / "sample.msgpack.corrupt").exists()
    assert log.events().count("sentinel.state_corrupt") == 2


def test_state_an_older_agent_wrote_starts_learning_over_and_says_so(tmp_path: Path) -> None:
    d = tmp_path / "anomaly"
    d.mkdir()
    (d / "learning.json").write_text(json.dumps({"version": 1, "learned_s": 5, "events": 3, "started": 0}))
    (d / "sample.npz").write_bytes(b"PK\x03\x04old")
    log = Log()
    engine, _ = open_engine(AnomalySettings(state_dir=str(tmp_path)), log)
    assert engine is not None and engine.phase == PHASE_LEARNING and engine.progress is not None
    assert engine.progress.learned_s == 0.0
    (problem,) = [kw["problem"] for _, e, kw in log.records if e == "sentinel.state_corrupt"]
    assert "an older agent wrote it: learning starts over" in problem


def test_lazy_view_values(model_dir: Path, tmp_path: Path) -> None:
    engine, _ = open_engine(AnomalySettings(model=str(model_dir), state_dir=""), Log())
    assert engine is not None
    p = proc(9, "/tmp/.x", proc(100, "/usr/bin/bash"))
    op = open_ctx(p, 5, "/etc/shadow")
    engine.observe(op)
    v = op.ml
    # a program never seen reads: new (the field says how unexpected), below the news level (0 in the row)
    assert v.value("novelty.read_dir") > 0 and v.x[INDEX["new_read_dir"]] == 0.0
    # no news: the forest would score it as the familiar row, so that score is set at once, nothing queued
    assert v.score_value is not None and not engine.pending and v.value("anomalous") is False
    assert v.score_value == float(engine.compiled["open"].scores(np.array([v.x]))[0])
    assert v.value("novelty.write_dir") is None  # a reading open
    assert v.value("novelty.port") is None and v.value("seen.port") is None  # connect only
    assert v.value("seen.read_dir") == 0
    assert v.value("new_dest") is None
    co = connect_ctx(p, 6, "203.0.113.9", 4444)
    engine.observe(co)
    c = co.ml
    assert c.score_value is None and engine.pending  # news: nothing scored until asked or batched
    assert c.value("new_dest") is True and c.value("seen.port") == 0
    assert c.value("novelty.host_dest") == c.x[INDEX["new_host_dest"]] > 0
    assert c.value("nonsense") is None
    score = c.value("score")
    assert isinstance(score, float) and 0 < score <= 1
    threshold = engine.thresholds["connect"]
    assert c.value("threshold") == threshold
    assert c.value("anomalous") == (score > threshold)
    assert engine.stats.lazy_scores == 1


def test_batch_alerts_grouped_per_tree_and_novelty_alerts_once(model_dir: Path) -> None:
    engine, _ = open_engine(AnomalySettings(model=str(model_dir), state_dir=""), Log())
    assert engine is not None
    shell = proc(100, "/usr/bin/bash", proc(1, "/usr/lib/systemd/systemd", uid=0))
    dropper = proc(9, "/tmp/.x", shell)
    child = proc(10, "/dev/shm/.y", dropper)
    engine.observe(
        exec_ctx(dropper, 10, ["/tmp/.x", "-e", "ZWNobyBoZWxsbzsgY3VybCBodHRwOi8vMjAzLjAuMTEzLjkv"])
    )
    engine.observe(connect_ctx(dropper, 11, "203.0.113.9", 4444))
    engine.observe(exec_ctx(child, 12, ["/dev/shm/.y", "203.0.113.9"]))
    engine.observe(connect_ctx(child, 13, "198.51.100.7", 443))  # a range this host never reached
    ls = proc(11, "/usr/bin/ls", shell)
    engine.observe(exec_ctx(ls, 14, ["ls"]))
    alerts = engine.score_pending()
    assert alerts and all(a.ruleset == ML_RULESET for a in alerts)
    assert {a.ctx.proc.pid for a in alerts} >= {9, 10}  # type: ignore[union-attr]
    assert len({a.lineage[1] for a in alerts}) == 1  # one incident: the child joined its parent's
    assert len({a.lineage for a in alerts}) == 2  # aggregated per process inside it
    assert 11 not in {a.ctx.proc.pid for a in alerts}  # type: ignore[union-attr]
    tables = engine.extractor.state.tables
    assert tables["exe"].count(HOST_SUBJECT, "/tmp/.x") == 1.0  # learned: the same novelty alerts once
    assert tables["exe"].count(HOST_SUBJECT, "/usr/bin/ls") > 0
    first = alerts[0]
    assert first.finalize is not None
    first.finalize(first)
    ml = first.extra["ml"]
    assert ml["score"] > ml["threshold"] and ml["model"]["phase"] == PHASE_DETECTION
    assert 1 <= len(ml["explanation"]) <= 3
    assert all("type_" not in e["feature"] for e in ml["explanation"])
    assert ml["new"] and "in the baseline" not in first.output  # the baseline's length is said
    assert any(n["text"] in first.output for n in ml["new"])
    again = proc(12, "/tmp/.x", shell)
    second = exec_ctx(again, 20, ["/tmp/.x", "-e", "ZWNobyBoZWxsbzsgY3VybCBodHRwOi8vMjAzLjAuMTEzLjkv"])
    engine.observe(second)
    assert second.ml.x[INDEX["new_exe"]] == 0.0  # its second run is not new


def test_exec_scores_queued_rows_first_so_alerts_show_the_old_image(model_dir: Path) -> None:
    """A process with queued rows that execs: its alert must still name what it was when it acted."""
    engine, _ = open_engine(AnomalySettings(model=str(model_dir), state_dir=""), Log())
    table = ProcessTable(boot_id=HOST.boot_id, facts=ReplayFacts())
    out = io.BytesIO()
    stream = DetectionStream(table, _empty_ruleset(), HOST, StdoutSink(out), anomaly=engine)
    stream.handle(
        Event(type=EventType.FORK, ts_ns=1, pid=1, tid=1, uid=0, gid=0, comm="systemd", child_pid=50)
    )
    stream.handle(
        Event(
            type=EventType.EXEC,
            ts_ns=2,
            pid=50,
            tid=50,
            uid=0,
            gid=0,
            comm=".x",
            filename="/tmp/.x",
            argv=["/tmp/.x", "ZWNobyBoZWxsbzsgY3VybCBodHRwOi8vMjAzLjAuMTEzLjkv"],
            argc_total=2,
        )
    )
    stream.handle(Event(type=EventType.CONNECT, ts_ns=3, pid=50, tid=50, uid=0, gid=0, comm=".x",
                        family=AF_INET, address="203.0.113.9", port=4444, ret=0))  # fmt: skip
    assert engine is not None and engine.pending
    stream.handle(Event(type=EventType.EXEC, ts_ns=4, pid=50, tid=50, uid=0, gid=0, comm="ls",
                        filename="/usr/bin/ls", argv=["ls"], argc_total=1))  # fmt: skip
    assert not engine.pending or all(c.ev.ts_ns == 4 for c in engine.pending)
    stream.close()
    docs = [orjson.loads(line) for line in out.getvalue().splitlines()]
    ml = [d for d in docs if d["rule"]["ruleset"] == ML_RULESET]
    assert ml, docs
    assert ml[0]["process"]["executable"] == "/tmp/.x"


def _empty_ruleset() -> Any:
    from sentinel.rules import load_rules  # type: ignore[attr-defined]

    return load_rules([]).ruleset


def test_replay_with_model_cli(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    attack = write_baseline(tmp_path / "att.cap", runs=60, span_s=3600, attack=True)
    rules = tmp_path / "none.yaml"
    rules.write_text("[]\n")
    assert main(["replay", str(attack), "--rules", str(rules), "--model", str(model_dir)]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ml = [d for d in docs if d["rule"]["ruleset"] == ML_RULESET and d["process"]["executable"] == "/tmp/.x"]
    assert ml and ml[0]["sentinel"]["ml"]["incident"]["root"]["executable"] == "/tmp/.x"
    assert ml[0]["event"]["kind"] == "alert" and ml[0]["rule"]["name"] == "Anomalous behaviour for this host"
    assert len({d["sentinel"]["ml"]["incident"]["id"] for d in ml}) == 1
    # a bad model: rules only, and an internal alert says so
    assert main(["replay", str(attack), "--rules", str(rules), "--model", str(tmp_path / "missing")]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["rule"]["name"] for d in docs] == ["Anomaly model refused"]
    assert docs[0]["rule"]["ruleset"] == "sentinel-internal"
    assert main(["replay", str(attack), "--rules", str(rules), "--model", "auto"]) == 2
    assert HostState  # imported for the layout it documents


def test_a_non_utf8_path_survives_the_periodic_save_and_reloads_to_the_same_key(tmp_path: Path) -> None:
    """Issue 10: a local user opened ``/tmp/x-\\xff/f\\xfe``; its directory became a rarity key, and the
    periodic save raised TypeError (orjson refuses lone surrogates), killing the agent. The save must succeed,
    write strict JSON, and reload to the same key, so the baseline still knows that path."""
    settings = AnomalySettings(state_dir=str(tmp_path), save_interval_s=0.0)
    log = Log()
    engine, _ = open_engine(settings, log)
    assert engine is not None and engine.phase == PHASE_LEARNING
    hostile = b"/tmp/x-\xff/f\xfe".decode("utf-8", "surrogateescape")
    engine.observe(open_ctx(proc(5, "/usr/bin/cat"), 10, hostile))
    state = engine.extractor.state

    def items(s: Any) -> dict[str, dict[str, dict[str, float]]]:
        return {kind: {sub: dict(p.items) for sub, p in t.subjects.items()} for kind, t in s.tables.items()}

    before = items(state)
    (key,) = [k for k in before["read_dir"]["/usr/bin/cat"] if "\udcff" in k]
    assert state.tables["read_dir"].novelty("/usr/bin/cat", key)[0] == 0.0
    engine.tick(log)  # the periodic save (due at every tick here)
    assert engine.stats.saves == 1 and engine.stats.save_errors == 0
    assert "sentinel.state_save_failed" not in log.events()
    data = orjson.loads((tmp_path / "anomaly" / "profiles.json").read_bytes())  # strict JSON parses it
    assert data["tables"]["read_dir"]["subjects"]["/usr/bin/cat"]["escaped_keys"] == ["/tmp/x-\\xff"]
    reloaded, problem = HostState(tmp_path).load_profiles()
    assert problem is None and reloaded is not None
    assert items(reloaded) == before
    again, _ = open_engine(settings, log)  # a restart: the same hostile path is as familiar as before
    assert again is not None and again.extractor.state.tables["read_dir"].count("/usr/bin/cat", key) == 1.0
    assert (tmp_path / "anomaly" / "sample.msgpack").exists()  # the sample keeps the raw bytes too
    assert again.sample is not None
    assert [k[3] for k in again.sample.rows[0][3] if k[1] == "read_dir" and k[0] >= 0] == [key]
