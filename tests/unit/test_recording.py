"""``replay_events``: a capture written with ``CaptureWriter`` replays into the exact documents the live
agent would have printed, and a capture cut short still replays up to the cut and says where it stopped.
"""

from __future__ import annotations

import grp
import io
import os
import pwd
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from sentinel import log as logmod
from sentinel.alerts.ecs import ECS_VERSION, EcsRenderer
from sentinel.capture import CaptureError, CaptureWriter, capture_header
from sentinel.events import AF_INET, Event, EventType
from sentinel.host import HostInfo
from sentinel.pipeline import EventStream, parse_types
from sentinel.process.facts import ProcFacts
from sentinel.process.table import ProcessTable, entity_id
from sentinel.recording import replay_events

HOST = HostInfo(
    hostname="h", machine_id="m", boot_id="b", kernel="6.18", boot_time_ns=1_700_000_000_000_000_000
)
S = 1_000_000_000
CLK = os.sysconf("SC_CLK_TCK")  # replay builds its table with the running host's tick rate
TTY = 136 << 8 | 3  # /dev/pts/3


def rfc3339(boot_ns: int, boot_time_ns: int = HOST.boot_time_ns) -> str:
    secs, ns = divmod(boot_time_ns + boot_ns, S)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns:09d}Z"


def user(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def group(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def ev(etype: EventType, ts: int, pid: int, **kw: Any) -> Event:
    kw.setdefault("tid", pid)
    kw.setdefault("uid", 0)
    kw.setdefault("gid", 0)
    kw.setdefault("comm", "bash")
    return Event(type=etype, ts_ns=ts, pid=pid, **kw)


INIT = ProcFacts(
    pid=1, start_ticks=1, ppid=0, comm="systemd", exe="/usr/lib/systemd/systemd", cwd="/",
    args=["/sbin/init"], uid=0, gid=0,
)  # fmt: skip
SHELL = ProcFacts(
    pid=100, start_ticks=10 * CLK, ppid=1, comm="bash", exe="/usr/bin/bash", cwd="/root", args=["-bash"],
    uid=0, gid=0, tty_nr=TTY,
)  # fmt: skip
# What /proc showed for the child right after its exec: the new image, in the directory it changed into.
CHILD = ProcFacts(
    pid=200, start_ticks=30 * CLK, ppid=100, comm="cat", exe="/usr/bin/cat", cwd="/srv", args=["cat"],
    uid=0, gid=0, tty_nr=TTY,
)  # fmt: skip


@dataclass
class Capture:
    path: Path
    last_record: int  # byte offset where the final record starts
    size: int


def write_capture(path: Path) -> Capture:
    """A bootstrap snapshot, a fork and exec (with the facts read for them), an open, a loss, a second fork
    whose child is gone from /proc when it execs a symlink, and a final connect."""
    header = capture_header("test", host=HOST.to_dict())
    with CaptureWriter(path, header) as w:
        w.write_facts(INIT)
        w.write_facts(SHELL)
        w.write_snapshot_end(20 * S)
        w.write_event(ev(EventType.FORK, 30 * S, 100, child_pid=200))
        w.write_facts(CHILD)
        w.write_event(
            ev(EventType.EXEC, 31 * S, 200, comm="cat", filename="/bin/cat", argv=["cat", "notes.txt"])
        )
        w.write_realpath("/bin/sh", "/usr/bin/dash")
        w.write_event(ev(EventType.OPEN, 32 * S, 200, comm="cat", path="notes.txt", ret=3))
        w.write_loss(33 * S, "open", 5)
        w.write_event(ev(EventType.FORK, 34 * S, 200, comm="cat", child_pid=300))
        w.write_facts_miss(300)
        w.write_event(
            ev(EventType.EXEC, 35 * S, 300, comm="sh", filename="/bin/sh", argv=["sh", "-c", "true"])
        )
        w.flush()
        last = path.stat().st_size
        w.write_event(
            ev(EventType.CONNECT, 36 * S, 300, comm="sh", fd=3, family=AF_INET, address="10.9.8.7", port=443,
               sock_type=1, ret=-115)
        )  # fmt: skip
    return Capture(path, last, path.stat().st_size)


class Collector:
    """``make_stream`` for replay_events: one EventStream per segment, all writing into one buffer."""

    def __init__(self, types: str = "all") -> None:
        self.out = io.BytesIO()
        self.types = parse_types(types)
        self.hosts: list[HostInfo] = []
        self.tables: list[ProcessTable] = []

    def __call__(self, host: HostInfo, table: ProcessTable) -> EventStream:
        self.hosts.append(host)
        self.tables.append(table)
        return EventStream(table, EcsRenderer(host), self.out, self.types)

    def docs(self) -> list[dict[str, Any]]:
        data = self.out.getvalue()
        assert data == b"" or data.endswith(b"\n")
        return [orjson.loads(line) for line in data.splitlines()]


def stable(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without what differs between runs (random id, wall-clock creation time)."""
    doc = orjson.loads(orjson.dumps(doc))
    del doc["event"]["id"]
    del doc["event"]["created"]
    return doc


def take_thread(doc: dict[str, Any], tid: int, comm: str) -> dict[str, Any]:
    """``process.thread`` is per event; checks and removes it so the rest compares whole."""
    thread = doc["process"].pop("thread")
    assert thread["id"] == tid
    assert thread.get("name", comm) == comm
    return doc


def replay(path: Path, types: str = "all") -> tuple[list[dict[str, Any]], Any, Collector]:
    collector = Collector(types)
    problem = replay_events(str(path), collector)
    return collector.docs(), problem, collector


@pytest.fixture
def capture(tmp_path: Path) -> Capture:
    return write_capture(tmp_path / "cap.msgpack")


# ----------------------------------------------------------------------------------------- full replay


COMMON = {
    "ecs": {"version": ECS_VERSION},
    "agent": {"type": "sentinel", "name": "h", "id": HOST.agent_id, "version": HOST.agent_version},
    "host": {
        "name": "h",
        "hostname": "h",
        "id": "m",
        "boot": {"id": "b"},
        "os": {"type": "linux", "kernel": "6.18"},
    },
}
EVENT = {"kind": "event", "module": "sentinel", "dataset": "sentinel.events"}
INIT_ID = entity_id("b", 1, 1)
SHELL_ID = entity_id("b", 100, 10 * CLK)
CHILD_ID = entity_id("b", 200, 30 * CLK)
ANCESTORS_OF_CHILD = [
    {"pid": 100, "entity_id": SHELL_ID, "executable": "/usr/bin/bash", "command_line": "-bash"},
    {"pid": 1, "entity_id": INIT_ID, "executable": "/usr/lib/systemd/systemd", "command_line": "/sbin/init"},
]
SHELL_AS_PARENT = {
    "pid": 100,
    "entity_id": SHELL_ID,
    "name": "bash",
    "executable": "/usr/bin/bash",
    "args": ["-bash"],
    "command_line": "-bash",
    "start": rfc3339(10 * S),
}


def child_block() -> dict[str, Any]:
    return {
        "pid": 200,
        "entity_id": CHILD_ID,
        "name": "cat",
        "executable": "/usr/bin/cat",  # from the facts, not the filename /bin/cat
        "args": ["cat", "notes.txt"],  # from the event
        "args_count": 2,
        "command_line": "cat notes.txt",
        "working_directory": "/srv",
        "start": rfc3339(30 * S),
        "user": {"id": "0", "name": user(0)},
        "group": {"id": "0", "name": group(0)},
        "real_user": {"id": "0", "name": user(0)},
        "real_group": {"id": "0", "name": group(0)},
        "tty": {"char_device": {"major": 136, "minor": 3}},
        "interactive": True,
        "parent": SHELL_AS_PARENT,
    }


def test_replay_whole_capture(capture: Capture) -> None:
    docs, problem, collector = replay(capture.path)
    assert problem is None
    assert collector.hosts == [HOST]
    assert [d["event"]["action"] for d in docs] == ["fork", "exec", "open", "fork", "exec", "connect"]
    assert [d["event"]["sequence"] for d in docs] == [1, 2, 3, 4, 5, 6]
    assert len({d["event"]["id"] for d in docs}) == 6


def test_replay_exact_exec_document(capture: Capture) -> None:
    docs, _, _ = replay(capture.path)
    doc = take_thread(stable(docs[1]), 200, "cat")
    assert doc == {
        "@timestamp": rfc3339(31 * S),
        **COMMON,
        "event": {
            **EVENT,
            "sequence": 2,
            "outcome": "success",
            "category": ["process"],
            "type": ["start"],
            "action": "exec",
        },
        "process": child_block(),
        "user": {"id": "0", "name": user(0)},  # process.user (effective), as Elastic Defend writes it
        "group": {"id": "0", "name": group(0)},
        "sentinel": {
            "event": {"type": "execve", "ret": 0, "cgroup_id": 0, "filename": "/bin/cat"},
            "ancestors": ANCESTORS_OF_CHILD,
        },
        "message": "exec /bin/cat cat notes.txt",
    }


def test_replay_exact_open_document(capture: Capture) -> None:
    docs, _, _ = replay(capture.path)
    doc = take_thread(stable(docs[2]), 200, "cat")
    assert doc == {
        "@timestamp": rfc3339(32 * S),
        **COMMON,
        "event": {
            **EVENT,
            "sequence": 3,
            "outcome": "success",
            "category": ["file"],
            "type": ["access"],
            "action": "open",
        },
        "process": child_block(),
        "user": {"id": "0", "name": user(0)},  # process.user (effective), as Elastic Defend writes it
        "group": {"id": "0", "name": group(0)},
        "sentinel": {
            "event": {
                "type": "open",
                "ret": 3,
                "cgroup_id": 0,
                "raw_path": "notes.txt",
                "flags": ["O_RDONLY"],
                "dirfd": -100,
            },
            "ancestors": ANCESTORS_OF_CHILD,
        },
        "file": {"path": "/srv/notes.txt", "name": "notes.txt", "directory": "/srv"},  # against the cwd
        "message": "open /srv/notes.txt [O_RDONLY]",
    }


def test_replay_fork_document(capture: Capture) -> None:
    docs, _, _ = replay(capture.path)
    doc = stable(docs[0])
    assert doc["@timestamp"] == rfc3339(30 * S)
    assert doc["process"]["pid"] == 100
    assert doc["process"]["entity_id"] == SHELL_ID
    assert doc["process"]["executable"] == "/usr/bin/bash"
    assert doc["process"]["working_directory"] == "/root"
    assert doc["process"]["parent"]["pid"] == 1
    assert doc["sentinel"]["event"]["child_pid"] == 200
    assert [a["pid"] for a in doc["sentinel"]["ancestors"]] == [1]


def test_replay_exec_of_vanished_process_uses_recorded_realpath(capture: Capture) -> None:
    """The grandchild was gone from /proc (a miss record): its exe is the recorded resolution of /bin/sh."""
    docs, _, _ = replay(capture.path)
    exec_doc, connect_doc = docs[4], docs[5]
    for doc in (exec_doc, connect_doc):
        assert doc["process"]["pid"] == 300
        assert doc["process"]["executable"] == "/usr/bin/dash"
        assert doc["process"]["args"] == ["sh", "-c", "true"]
        assert doc["process"]["working_directory"] == "/srv"  # inherited at fork
        assert doc["process"]["parent"]["pid"] == 200
        assert doc["process"]["parent"]["executable"] == "/usr/bin/cat"
        assert [a["pid"] for a in doc["sentinel"]["ancestors"]] == [200, 100, 1]
    assert connect_doc["event"]["outcome"] == "unknown"
    assert connect_doc["destination"] == {"ip": "10.9.8.7", "port": 443, "address": "10.9.8.7"}


def test_replay_logs_the_loss(capture: Capture) -> None:
    logmod.configure("info")
    with capture_logs() as logs:
        replay(capture.path)
    losses = [e for e in logs if e["event"] == "sentinel.events_lost"]
    assert losses == [
        {
            "event": "sentinel.events_lost",
            "log_level": "warning",
            "buffer": "open",
            "lost": 5,
            "ts_ns": 33 * S,
            "source": "capture",
        }
    ]


def test_replay_type_selection(capture: Capture) -> None:
    docs, problem, _ = replay(capture.path, "exec")
    assert problem is None
    assert [d["process"]["pid"] for d in docs] == [200, 300]
    assert docs[0]["process"]["parent"]["pid"] == 100  # the unprinted fork still built the lineage


def test_replay_twice_gives_the_same_documents(capture: Capture) -> None:
    first, _, _ = replay(capture.path)
    second, _, _ = replay(capture.path)
    assert [stable(d) for d in first] == [stable(d) for d in second]


def test_replay_without_snapshot_end(tmp_path: Path) -> None:
    """An older or interrupted recording without the snapshot marker bootstraps at the first event."""
    path = tmp_path / "nosnap.msgpack"
    with CaptureWriter(path, capture_header("test", host=HOST.to_dict())) as w:
        w.write_facts(INIT)
        w.write_facts(SHELL)
        w.write_event(ev(EventType.OPEN, 40 * S, 100, path="x", ret=3))
    docs, problem, _ = replay(path)
    assert problem is None
    (doc,) = docs
    assert doc["process"]["parent"]["pid"] == 1
    assert doc["file"]["path"] == "/root/x"


def test_replay_second_segment_has_its_own_host_and_table(tmp_path: Path, capture: Capture) -> None:
    other = HostInfo(
        hostname="h2", machine_id="m", boot_id="b2", kernel="6.19", boot_time_ns=1_800_000_000 * S
    )
    with CaptureWriter(capture.path, capture_header("test", host=other.to_dict()), append=True) as w:
        w.write_event(ev(EventType.OPEN, 5 * S, 200, comm="cat", path="rel", ret=3))
    docs, problem, collector = replay(capture.path)
    assert problem is None
    assert collector.hosts == [HOST, other]
    last = docs[-1]
    assert last["host"]["hostname"] == "h2"
    assert last["host"]["boot"]["id"] == "b2"
    assert last["@timestamp"] == rfc3339(5 * S, other.boot_time_ns)
    assert last["event"]["sequence"] == 1  # a fresh stream
    # pid 200 of the first boot is unknown in the second: no lineage, no cwd.
    assert "parent" not in last["process"]
    assert last["process"]["entity_id"] == entity_id("b2", 200, 5 * CLK)
    assert last["file"]["path"] == "rel"


# ------------------------------------------------------------------------------------------ truncation


def cut_points(capture: Capture) -> list[int]:
    start, end = capture.last_record, capture.size
    assert end - start > 4
    return sorted({start + 1, start + 2, (start + end) // 2, end - 2, end - 1})


def test_truncated_capture_replays_up_to_the_cut(tmp_path: Path, capture: Capture) -> None:
    full, _, _ = replay(capture.path)
    expected = [stable(d) for d in full[:-1]]
    for cut in cut_points(capture):
        path = tmp_path / f"cut-{cut}.msgpack"
        shutil.copyfile(capture.path, path)
        os.truncate(path, cut)
        docs, problem, _ = replay(path)
        assert problem is not None, cut
        assert problem.kind == "truncated"
        assert problem.offset == capture.last_record
        assert problem.path == str(path)
        assert f"byte {capture.last_record}" in str(problem)
        assert [stable(d) for d in docs] == expected


def test_cut_at_a_record_boundary_is_clean(tmp_path: Path, capture: Capture) -> None:
    path = tmp_path / "boundary.msgpack"
    shutil.copyfile(capture.path, path)
    os.truncate(path, capture.last_record)
    docs, problem, _ = replay(path)
    assert problem is None
    assert len(docs) == 5


def test_not_a_capture_raises(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, I am text\n")
    with pytest.raises(CaptureError) as info:
        replay_events(str(path), Collector())
    assert info.value.problem.kind == "not-a-capture"
    assert str(path) in str(info.value)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(CaptureError) as info:
        replay_events(str(tmp_path / "absent"), Collector())
    assert info.value.problem.kind == "io"
