"""The memo of repeated opens and execs: answering a slot's repeats from it changes nothing anyone can
observe.

An attacker's view of every shortcut: two opens that differ in program, user, write access or directory,
two execs that differ in program, parent, user or result, must never share an answer, and what the profiles
forget must never be answered as known.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from sentinel.anomaly.features import FeatureExtractor
from sentinel.anomaly.live import AnomalyEngine, AnomalySettings, open_engine
from sentinel.anomaly.profiles import SLOT_NS
from sentinel.anomaly.train import train
from sentinel.events import Event, EventType
from sentinel.process.table import Process
from sentinel.rules.context import EvalContext

from .anomaly_support import HOST, write_baseline

T0 = HOST.boot_time_ns
O_WRONLY, O_CREAT = 0o1, 0o100
FIELDS = [f"{g}.{k}" for g in ("novelty", "seen") for k in ("read_dir", "write_dir", "exe", "child", "user")]


class Quiet:
    def __getattr__(self, _: str) -> Any:
        return lambda *a, **k: None


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("memo")
    train([write_baseline(d / "base.cap")], d / "m", alerts_per_day=2.0)
    return d / "m"


def _proc(pid: int, exe: str, uid: int, parent: Process | None = None) -> Process:
    return Process(pid=pid, ppid=parent.pid if parent else 1, start_ns=0, entity_id=f"e{pid}", comm=exe[-15:],
                   exe=exe, uid=uid, parent=parent, args=[exe])  # fmt: skip


def _events(seed: int, exec_share: float = 0.03) -> list[EvalContext]:
    """Four slots of opens by programs sharing names, users and directories, with execs among them: new
    processes from two parents, and processes already active in the slot replacing their image."""
    rnd = random.Random(seed)
    shell = _proc(100, "/usr/bin/bash", 1000)
    procs = [_proc(200, "/usr/bin/cat", 1000, shell), _proc(201, "/usr/bin/cat", 0, shell),
             _proc(202, "/usr/bin/cp", 1000, shell)]  # fmt: skip
    dirs = ["/etc", "/home/u", "/home/u/p1", "/var/log", "/tmp/tmp.Ab3dEf9x", "/tmp/tmp.Zz9yXw8v", "/"]
    out: list[EvalContext] = []
    next_pid = 300
    for i in range(1200):
        ts = 11 * SLOT_NS + i * (4 * SLOT_NS // 1200)
        if rnd.random() < exec_share:
            exe = rnd.choice(["/usr/bin/cat", "/usr/bin/cp", "/usr/bin/tail"])
            if rnd.random() < 0.2 and len(procs) > 3:  # an active process runs another program
                p = rnd.choice(procs[3:])
                p.exe, p.args, p.comm = exe, [exe], exe[-15:]
                p.exec_count += 1
            else:
                p = _proc(next_pid, exe, rnd.choice([0, 1000]), rnd.choice([shell, procs[0]]))
                next_pid += 1
                procs.append(p)
            ev = Event(type=EventType.EXEC, ts_ns=ts, pid=p.pid, tid=p.pid, uid=p.uid, gid=p.uid, comm=p.comm,
                       filename=p.exe, argv=[p.exe], argc_total=1, ret=rnd.choice([0, 0, 0, -2]))  # fmt: skip
            out.append(EvalContext(ev, p, None, T0 + ts))
            continue
        p = rnd.choice(procs)
        d = rnd.choice(dirs)
        path = f"{d.rstrip('/')}/f{rnd.randrange(3)}"
        flags = rnd.choice([0, 0, 0, O_WRONLY | O_CREAT])
        ev = Event(type=EventType.OPEN, ts_ns=ts, pid=p.pid, tid=p.pid, uid=p.uid, gid=p.uid, comm=p.comm,
                   path=path, open_flags=flags, ret=3, repeat_count=rnd.choice([0, 0, 0, 4]))  # fmt: skip
        out.append(EvalContext(ev, p, path, T0 + ts))
    return out


def _run(engine: AnomalyEngine, contexts: list[EvalContext]) -> list[tuple[Any, ...]]:
    seen = []
    for ctx in contexts:
        engine.observe(ctx)
        view = ctx.ml
        seen.append((list(view.x), view.score_value, [view.value(f) for f in FIELDS]))
        if len(engine.pending) >= 16:
            engine.score_pending()
    engine.score_pending()
    return seen


def _without_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FeatureExtractor, "familiar_open", lambda *a: None)
    monkeypatch.setattr(FeatureExtractor, "familiar_exec", lambda *a: None)


@pytest.mark.parametrize("exec_share", [0.03, 0.3])
@pytest.mark.parametrize("phase", ["learning", "detection"])
def test_answers_from_the_memo_equal_measuring_every_open_and_exec(
    phase: str, exec_share: float, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def engine() -> AnomalyEngine:
        if phase == "learning":
            e = AnomalyEngine(AnomalySettings(model="auto", state_dir=""))
        else:
            e, _ = open_engine(AnomalySettings(model=str(model_dir), state_dir=""), Quiet())  # type: ignore[assignment]
        e.start_learning(None, None)  # continued learning: the sample too
        return e

    exec_hits: list[str | None] = []
    familiar_exec = FeatureExtractor.familiar_exec

    def counting(self: FeatureExtractor, *a: Any) -> Any:
        answer = familiar_exec(self, *a)
        exec_hits.append(None if answer is None else ("new" if answer[1] else "active"))
        return answer

    with_memo = engine()
    with monkeypatch.context() as m:
        m.setattr(FeatureExtractor, "familiar_exec", counting)
        a = _run(with_memo, _events(1, exec_share))
    assert with_memo.stats.memo_hits > 300, "the memo answered too little: the test proves little"
    if exec_share > 0.1:  # repeats by new processes and by processes already active in the slot
        assert exec_hits.count("new") > 20 and exec_hits.count("active") > 5, exec_hits
    else:
        assert exec_hits.count("new") >= 1
    with monkeypatch.context() as m:
        _without_memo(m)
        plain = engine()
        b = _run(plain, _events(1, exec_share))
    assert a == b
    assert with_memo.extractor.state.to_dict() == plain.extractor.state.to_dict()
    assert with_memo.sample.seen == plain.sample.seen  # type: ignore[union-attr]
    assert [r[1:] for r in with_memo.sample.rows] == [r[1:] for r in plain.sample.rows]  # type: ignore[union-attr]
    assert [list(r[0]) for r in with_memo.sample.rows] == [list(r[0]) for r in plain.sample.rows]  # type: ignore[union-attr]
    assert with_memo.progress.events == plain.progress.events  # type: ignore[union-attr]


def _open(p: Process, ts: int, path: str, flags: int = 0, uid: int | None = None) -> EvalContext:
    uid = p.uid if uid is None else uid
    ev = Event(type=EventType.OPEN, ts_ns=ts, pid=p.pid, tid=p.pid, uid=uid, gid=uid, comm=p.comm, path=path,
               open_flags=flags, ret=3)  # fmt: skip
    return EvalContext(ev, p, path, T0 + ts)


def test_opens_that_differ_in_what_the_row_depends_on_never_share_an_answer() -> None:
    engine = AnomalyEngine(AnomalySettings(model="auto", state_dir=""))
    engine.start_learning(None, None)
    cat = _proc(200, "/usr/bin/cat", 1000)
    ts = 20 * SLOT_NS
    for i in range(3):
        engine.observe(_open(cat, ts + i, "/etc/hosts"))
    assert engine.stats.memo_hits == 1  # the third: a repeat of the second, answered by the memo
    tac = _proc(201, "/usr/bin/tac", 1000)
    engine.observe(_open(tac, ts, "/etc/motd"))  # tac is met (and active in the slot)
    for ctx in (
        _open(cat, ts + 12, "/etc/ssl/x"),  # another directory
        _open(cat, ts + 13, "/etc/hosts", O_WRONLY),  # writing, not reading
        _open(cat, ts + 14, "/etc/hosts", uid=0),  # as another user
        _open(tac, ts + 15, "/etc/hosts"),  # another program
        _open(cat, ts + 16, "etc/hosts"),  # relative: "etc", not "/etc"
    ):
        engine.observe(ctx)
        assert engine.stats.memo_hits == 1, ctx.ev
        assert ctx.ml.facts.path == ctx.path  # measured: its own facts
    engine.observe(_open(cat, ts + 17, "/etc/hosts"))
    assert engine.stats.memo_hits == 2


def _forget(engine: AnomalyEngine, kind: str, subject: str, item: str) -> None:
    """What an eviction does to one item (its table's generation moves on)."""
    table = engine.extractor.state.tables[kind]
    prof = table.subjects[subject]
    prof.items.pop(item)
    prof.recount()
    table.size -= 1
    table.generation += 1


def test_a_repeat_after_the_profiles_forgot_it_is_measured_again() -> None:
    engine = AnomalyEngine(AnomalySettings(model="auto", state_dir=""))
    engine.start_learning(None, None)
    cat = _proc(200, "/usr/bin/cat", 1000)
    ts = 20 * SLOT_NS
    for i in range(3):  # the process is met, its first known open measured, the next answered by the memo
        engine.observe(_open(cat, ts + i, "/etc/hosts"))
    assert engine.stats.memo_hits == 1
    _forget(engine, "read_dir", "/usr/bin/cat", "/etc")
    again = _open(cat, ts + 3, "/etc/hosts")
    engine.observe(again)
    assert again.ml.value("novelty.read_dir") > 0  # new again: measured, not answered from the memo
    assert engine.stats.memo_hits == 1
    later = _open(cat, ts + SLOT_NS, "/etc/hosts")  # the next slot: the memo starts empty
    engine.observe(later)
    assert later.ml.value("seen.read_dir") == 1 and engine.stats.memo_hits == 1


def _exec(p: Process, ts: int, uid: int | None = None, ret: int = 0) -> EvalContext:
    uid = p.uid if uid is None else uid
    ev = Event(type=EventType.EXEC, ts_ns=ts, pid=p.pid, tid=p.pid, uid=uid, gid=uid, comm=p.comm,
               filename=p.exe, argv=[p.exe], argc_total=1, ret=ret)  # fmt: skip
    return EvalContext(ev, p, None, T0 + ts)


def test_execs_that_differ_in_what_the_row_depends_on_never_share_an_answer() -> None:
    engine = AnomalyEngine(AnomalySettings(model="auto", state_dir=""))
    engine.start_learning(None, None)
    bash = _proc(100, "/usr/bin/bash", 1000)
    cron = _proc(101, "/usr/sbin/cron", 0)
    ts = 20 * SLOT_NS
    pid = iter(range(300, 400))
    engine.observe(_exec(_proc(next(pid), "/usr/bin/id", 1000, bash), ts))  # measured and counted
    engine.observe(_exec(_proc(next(pid), "/usr/bin/id", 1000, bash), ts + 1))  # answered
    assert engine.stats.memo_hits == 1
    engine.observe(_exec(_proc(next(pid), "/usr/bin/ls", 1000, cron), ts + 2))  # cron and ls are met
    for ctx in (
        _exec(_proc(next(pid), "/usr/bin/id", 1000, cron), ts + 3),  # another parent
        _exec(_proc(next(pid), "/usr/bin/ls", 1000, bash), ts + 4),  # another program
        _exec(_proc(next(pid), "/usr/bin/id", 0, bash), ts + 5),  # as another user
        _exec(_proc(next(pid), "/usr/bin/id", 1000, bash), ts + 6, ret=-13),  # failed
    ):
        engine.observe(ctx)
        assert engine.stats.memo_hits == 1, ctx.ev
        assert ctx.ml.facts.exe == ctx.proc.exe  # measured: its own facts
    engine.observe(_exec(_proc(next(pid), "/usr/bin/id", 1000, bash), ts + 7))
    assert engine.stats.memo_hits == 2


def test_an_exec_after_the_profiles_forgot_it_is_measured_again() -> None:
    engine = AnomalyEngine(AnomalySettings(model="auto", state_dir=""))
    engine.start_learning(None, None)
    bash = _proc(100, "/usr/bin/bash", 1000)
    ts = 20 * SLOT_NS
    for i in range(2):
        engine.observe(_exec(_proc(300 + i, "/usr/bin/id", 1000, bash), ts + i))
    assert engine.stats.memo_hits == 1
    _forget(engine, "parent_exe", "/usr/bin/bash", "/usr/bin/id")
    again = _exec(_proc(302, "/usr/bin/id", 1000, bash), ts + 2)
    engine.observe(again)
    assert again.ml.value("novelty.child") > 0  # new again: measured, not answered from the memo
    assert engine.stats.memo_hits == 1
