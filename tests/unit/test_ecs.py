"""ECS documents from built events and a replayed process table: fields, times, ids, and the render cache."""

from __future__ import annotations

import io
import re
import shlex
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.alerts.ecs import (
    ECS_VERSION,
    MAX_ANCESTORS_RENDERED,
    EcsRenderer,
    error_code,
    open_flag_names,
)
from sentinel.events import (
    AF_INET,
    AF_INET6,
    AF_UNIX,
    AT_FDCWD,
    FLAG_ARGV_TRUNCATED,
    FLAG_CREAT,
    FLAG_CREATED,
    FLAG_CREATED_KNOWN,
    FLAG_PATH_TRUNCATED,
    Credentials,
    Event,
    EventType,
)
from sentinel.host import HostInfo
from sentinel.pipeline import EventStream, parse_types
from sentinel.process.facts import ProcFacts, ReplayFacts
from sentinel.process.table import Process, ProcessTable, entity_id
from sentinel.sockets import SOCK_KNOWN
from sentinel.text import dumps, unescape_text

HOST = HostInfo(
    hostname="h", machine_id="m", boot_id="b", kernel="6.18", boot_time_ns=1_700_000_000_000_000_000
)
BOOT = HOST.boot_id
CLK = 100
S = 1_000_000_000
USERS = {0: "root", 1000: "alice"}
GROUPS = {0: "root", 1000: "users"}
RFC3339_NS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")

O_WRONLY, O_RDWR = 0o1, 0o2
O_CREAT, O_EXCL, O_TRUNC, O_APPEND = 0o100, 0o200, 0o1000, 0o2000
O_DIRECTORY, O_CLOEXEC, O_PATH, O_TMPFILE = 0o200000, 0o2000000, 0o10000000, 0o20200000
EINPROGRESS, ECONNREFUSED, ENOENT, EACCES = 115, 111, 2, 13


def ev(etype: EventType, ts: int, pid: int, **kw: Any) -> Event:
    kw.setdefault("tid", pid)
    kw.setdefault("uid", 1000)
    kw.setdefault("gid", 1000)
    kw.setdefault("comm", "bash")
    return Event(type=etype, ts_ns=ts, pid=pid, **kw)


def pf(pid: int, ppid: int, start_ticks: int, **kw: Any) -> ProcFacts:
    kw.setdefault("comm", f"p{pid}")
    kw.setdefault("exe", f"/usr/bin/p{pid}")
    kw.setdefault("cwd", "/")
    kw.setdefault("args", [f"p{pid}"])
    kw.setdefault("uid", 1000)
    kw.setdefault("gid", 1000)
    return ProcFacts(pid=pid, start_ticks=start_ticks, ppid=ppid, **kw)


def make_table(*facts: ProcFacts) -> tuple[ProcessTable, ReplayFacts]:
    source = ReplayFacts()
    for f in facts:
        source.feed(f)
    table = ProcessTable(BOOT, source, clk_tck=CLK, user_lookup=USERS.get, group_lookup=GROUPS.get)
    table.bootstrap()
    return table, source


def standard_table() -> tuple[ProcessTable, ReplayFacts]:
    """init (1) → login shell (100, in /home/alice, on pts/3) → nothing else yet."""
    return make_table(
        pf(1, 0, 1, comm="systemd", exe="/usr/lib/systemd/systemd", args=["/sbin/init"], uid=0, gid=0),
        pf(
            100,
            1,
            500,
            comm="bash",
            exe="/usr/bin/bash",
            args=["-bash"],
            cwd="/home/alice",
            tty_nr=136 << 8 | 3,
        ),
    )


def stream_for(table: ProcessTable, types: str = "all") -> tuple[EventStream, io.BytesIO]:
    out = io.BytesIO()
    return EventStream(table, EcsRenderer(HOST), out, parse_types(types)), out


def docs_of(out: io.BytesIO) -> list[dict[str, Any]]:
    data = out.getvalue()
    assert data == b"" or data.endswith(b"\n")
    return [orjson.loads(line) for line in data.splitlines()]


def assert_thread(doc: dict[str, Any], tid: int, comm: str) -> None:
    """``process.thread`` is per event; pops it so the rest of the process block can be compared whole."""
    thread = doc["process"].pop("thread")
    assert thread["id"] == tid
    assert thread.get("name", comm) == comm


def render(ev_: Event, proc: Process | None = None, resolved: str | None = None) -> dict[str, Any]:
    return EcsRenderer(HOST).event_doc(ev_, proc, resolved)


# --------------------------------------------------------------------------------------- common fields


def test_common_fields() -> None:
    doc = render(ev(EventType.EXIT, 5 * S, 42))
    assert doc["ecs"] == {"version": ECS_VERSION}
    assert doc["agent"] == {
        "type": "sentinel",
        "name": "h",
        "id": HOST.agent_id,
        "version": HOST.agent_version,
    }
    assert doc["host"] == {
        "name": "h",
        "hostname": "h",
        "id": "m",
        "boot": {"id": "b"},
        "os": {"type": "linux", "kernel": "6.18"},
    }
    event = doc["event"]
    assert event["kind"] == "event"
    assert event["module"] == "sentinel"
    assert event["dataset"] == "sentinel.events"
    assert event["outcome"] == "success"
    assert RFC3339_NS.match(event["created"])
    assert doc["sentinel"]["event"] == {"type": "exit", "ret": 0, "cgroup_id": 0}


def test_dataset_is_configurable() -> None:
    doc = EcsRenderer(HOST, dataset="sentinel.replay").event_doc(ev(EventType.EXIT, 1, 1), None)
    assert doc["event"]["dataset"] == "sentinel.replay"


@pytest.mark.parametrize(
    ("ts_ns", "expected"),
    [
        (0, "2023-11-14T22:13:20.000000000Z"),
        (1, "2023-11-14T22:13:20.000000001Z"),
        (1_234_567_891, "2023-11-14T22:13:21.234567891Z"),
        (999_999_999, "2023-11-14T22:13:20.999999999Z"),
        (86_400 * S + 500_000_000, "2023-11-15T22:13:20.500000000Z"),
    ],
)
def test_timestamp_is_boot_time_plus_event_time(ts_ns: int, expected: str) -> None:
    doc = render(ev(EventType.EXIT, ts_ns, 7))
    assert doc["@timestamp"] == expected


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**9 * 86_400 * 3650))
def test_timestamp_format_and_value(ts_ns: int) -> None:
    renderer = EcsRenderer(HOST)
    text = renderer.timestamp(ts_ns)
    assert RFC3339_NS.match(text)
    wall = HOST.boot_time_ns + ts_ns
    whole = datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    assert int(whole.timestamp()) * S + int(text[20:29]) == wall


def test_timestamp_cache_survives_many_seconds() -> None:
    """More distinct seconds than the cache holds, interleaved: every answer stays right."""
    renderer = EcsRenderer(HOST)
    for i in range(200):
        for ts in (i * S + 7, (199 - i) * S + 9):
            secs, ns = divmod(HOST.boot_time_ns + ts, S)
            want = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns:09d}Z"
            assert renderer.timestamp(ts) == want


def test_created_is_now() -> None:
    before = time.time_ns()
    doc = render(ev(EventType.EXIT, 1, 1))
    after = time.time_ns()
    created = doc["event"]["created"]
    whole = datetime.strptime(created[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    ns = int(whole.timestamp()) * S + int(created[20:29])
    assert before - S <= ns <= after + S


def test_event_ids_unique_and_sequence_increasing() -> None:
    renderer = EcsRenderer(HOST)
    docs = [renderer.event_doc(ev(EventType.OPEN, i, 9, path="/x"), None) for i in range(2000)]
    ids = [d["event"]["id"] for d in docs]
    assert len(set(ids)) == len(ids)
    for i in ids[:5]:
        uuid.UUID(i)  # UUID-shaped
    seqs = [d["event"]["sequence"] for d in docs]
    assert seqs == list(range(1, len(docs) + 1))


def test_event_ids_differ_between_renderers() -> None:
    a = EcsRenderer(HOST).event_doc(ev(EventType.EXIT, 1, 1), None)
    b = EcsRenderer(HOST).event_doc(ev(EventType.EXIT, 1, 1), None)
    assert a["event"]["id"] != b["event"]["id"]
    assert a["event"]["sequence"] == b["event"]["sequence"] == 1


# --------------------------------------------------------------------------------------- process block


def test_without_process() -> None:
    doc = render(ev(EventType.OPEN, S, 321, tid=322, uid=33, gid=44, comm="nginx", path="/etc/x"))
    assert_thread(doc, 322, "nginx")
    assert doc["process"] == {
        "pid": 321,
        "name": "nginx",
        "user": {"id": "33"},
        "group": {"id": "44"},
    }
    assert doc["sentinel"]["ancestors"] == []


def test_process_block_from_table() -> None:
    table, _ = standard_table()
    proc = table.apply(ev(EventType.OPEN, 10 * S, 100, tid=101, path="/etc/hosts"))
    assert proc is not None
    doc = render(ev(EventType.OPEN, 10 * S, 100, tid=101, path="/etc/hosts"), proc)
    assert_thread(doc, 101, "bash")
    p = doc["process"]
    assert p == {
        "pid": 100,
        "entity_id": entity_id(BOOT, 100, 500),
        "name": "bash",
        "executable": "/usr/bin/bash",
        "args": ["-bash"],
        "args_count": 1,
        "command_line": "-bash",
        "working_directory": "/home/alice",
        "start": "2023-11-14T22:13:25.000000000Z",  # 500 ticks at 100 Hz after boot
        "user": {"id": "1000", "name": "alice"},
        "group": {"id": "1000", "name": "users"},
        "real_user": {"id": "1000", "name": "alice"},
        "real_group": {"id": "1000", "name": "users"},
        "tty": {"char_device": {"major": 136, "minor": 3}},
        "interactive": True,
        "parent": {
            "pid": 1,
            "entity_id": entity_id(BOOT, 1, 1),
            "name": "systemd",
            "executable": "/usr/lib/systemd/systemd",
            "args": ["/sbin/init"],
            "command_line": "/sbin/init",
            "start": "2023-11-14T22:13:20.010000000Z",
        },
    }
    assert doc["sentinel"]["ancestors"] == [
        {
            "pid": 1,
            "entity_id": entity_id(BOOT, 1, 1),
            "executable": "/usr/lib/systemd/systemd",
            "command_line": "/sbin/init",
        }
    ]


def test_credentials_follow_ecs_meanings() -> None:
    """process.user is the effective user (ECS), the top-level user and group mirror it (as Elastic Defend
    writes them, what Elastic's prebuilt rules test); real and saved ids, capabilities, login."""
    table, _ = standard_table()
    creds = Credentials(0, 0, 0, 0, 0, 0, 1000, 3, (1 << 21) | 1, (1 << 21) | (1 << 39) | 1)
    event = ev(EventType.OPEN, 10 * S, 100, tid=101, uid=65534, gid=65534, path="/etc/shadow", creds=creds)
    proc = table.apply(event)
    assert proc is not None
    doc = render(event, proc)
    p = doc["process"]
    assert p["user"]["id"] == "0" and p["real_user"]["id"] == "65534" and p["saved_user"]["id"] == "0"
    assert p["group"]["id"] == "0" and p["real_group"]["id"] == "65534" and p["saved_group"]["id"] == "0"
    assert p["thread"]["capabilities"] == {
        "effective": ["CAP_CHOWN", "CAP_SYS_ADMIN"],
        "permitted": ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_BPF"],
    }
    assert doc["user"] == p["user"] == {"id": "0", "name": "root"} and "effective" not in doc["user"]
    assert doc["group"] == p["group"] and doc["group"]["id"] == "0"
    assert doc["sentinel"]["process"]["login_user"]["id"] == "1000"
    assert doc["sentinel"]["process"]["session_id"] == 3


def test_without_credentials_the_fields_are_absent_not_zero() -> None:
    table, _ = standard_table()
    event = ev(EventType.OPEN, 10 * S, 100, tid=101, path="/etc/hosts")
    doc = render(event, table.apply(event))
    p = doc["process"]
    assert "saved_user" not in p and "capabilities" not in p["thread"] and "effective" not in doc["user"]
    assert "login_user" not in doc["sentinel"].get("process", {})
    assert p["user"] == p["real_user"]  # the real user is the only one known


def test_memfd_executable_is_marked() -> None:
    table, _ = standard_table()
    event = ev(EventType.EXEC, 10 * S, 100, tid=100, filename="/proc/self/fd/3", exe_name="memfd:payload",
               exe_nlink=0, exe_dev=1)  # fmt: skip
    proc = table.apply(event)
    assert proc is not None and proc.exe == "memfd:payload" and proc.exe_memfd
    doc = render(event, proc)
    assert doc["process"]["executable"] == "memfd:payload"
    assert doc["sentinel"]["process"]["exe_from_memfd"] is True


def test_tty_with_large_minor() -> None:
    major, minor = 136, 300
    tty_nr = (minor & 0xFF) | (major << 8) | ((minor >> 8) << 20)
    proc = Process(pid=5, ppid=0, start_ns=0, entity_id="e", comm="x", tty_nr=tty_nr)
    doc = render(ev(EventType.EXIT, 1, 5), proc)
    assert doc["process"]["tty"] == {"char_device": {"major": major, "minor": minor}}


def test_no_tty_block_without_tty() -> None:
    proc = Process(pid=5, ppid=0, start_ns=0, entity_id="e", comm="x")
    assert "tty" not in render(ev(EventType.EXIT, 1, 5), proc)["process"]


def test_constructed_process_with_unknown_fields() -> None:
    """A process seen only through its events: empty exe/cwd render as null, not as ""."""
    proc = Process(pid=5, ppid=0, start_ns=2 * S, entity_id="e5", comm="x")
    p = render(ev(EventType.EXIT, 3 * S, 5), proc)["process"]
    assert p["executable"] is None
    assert p["working_directory"] is None
    assert p["args"] == []
    assert p["args_count"] == 0
    assert p["command_line"] == ""
    assert p["start"] == "2023-11-14T22:13:22.000000000Z"
    assert "parent" not in p


def test_parent_not_in_table_still_gives_its_pid() -> None:
    proc = Process(pid=5, ppid=4, start_ns=0, entity_id="e", comm="x")
    doc = render(ev(EventType.EXIT, 1, 5), proc)
    assert doc["process"]["parent"] == {"pid": 4}
    assert doc["sentinel"]["ancestors"] == []


def test_ancestors_parent_first() -> None:
    table, _ = standard_table()
    table.apply(ev(EventType.FORK, 10 * S, 100, child_pid=200))
    table.apply(ev(EventType.FORK, 11 * S, 200, child_pid=300))
    proc = table.get(300)
    assert proc is not None
    doc = render(ev(EventType.EXIT, 12 * S, 300), proc)
    assert [a["pid"] for a in doc["sentinel"]["ancestors"]] == [200, 100, 1]
    assert doc["process"]["parent"]["pid"] == 200
    assert doc["sentinel"]["ancestors"][0]["entity_id"] == doc["process"]["parent"]["entity_id"]
    assert doc["sentinel"]["ancestors"][1]["entity_id"] == entity_id(BOOT, 100, 500)


def test_ancestors_are_bounded() -> None:
    root = Process(pid=1, ppid=0, start_ns=0, entity_id="e1", comm="init")
    cur = root
    for pid in range(2, 60):
        cur = Process(pid=pid, ppid=cur.pid, start_ns=0, entity_id=f"e{pid}", comm="x", parent=cur)
    doc = render(ev(EventType.EXIT, 1, cur.pid), cur)
    ancestors = doc["sentinel"]["ancestors"]
    assert len(ancestors) == MAX_ANCESTORS_RENDERED
    assert [a["pid"] for a in ancestors] == list(range(58, 58 - MAX_ANCESTORS_RENDERED, -1))


def test_thread_id_not_shared_between_documents() -> None:
    """The cached process block is copied per document: a later thread id must not leak into earlier docs."""
    table, _ = standard_table()
    proc = table.get(100)
    renderer = EcsRenderer(HOST)
    d1 = renderer.event_doc(ev(EventType.OPEN, S, 100, tid=101, comm="worker-1", path="/a"), proc)
    d2 = renderer.event_doc(ev(EventType.OPEN, S, 100, tid=102, comm="worker-2", path="/b"), proc)
    assert_thread(d1, 101, "worker-1")
    assert_thread(d2, 102, "worker-2")


# ------------------------------------------------------------------------------------------------ exec


def test_exec_success() -> None:
    table, source = standard_table()
    source.feed(pf(100, 1, 500, comm="ls", exe="/usr/bin/ls", args=["ls", "-l"], cwd="/home/alice"))
    e = ev(
        EventType.EXEC, 20 * S, 100, comm="ls", filename="/bin/ls", argv=["ls", "-l", "/tmp"], argc_total=3
    )
    proc = table.apply(e)
    doc = render(e, proc)
    assert doc["event"]["category"] == ["process"]
    assert doc["event"]["type"] == ["start"]
    assert doc["event"]["action"] == "exec"
    assert doc["event"]["outcome"] == "success"
    assert "error" not in doc
    assert doc["process"]["args"] == ["ls", "-l", "/tmp"]
    assert doc["process"]["args_count"] == 3
    assert doc["process"]["command_line"] == "ls -l /tmp"
    assert doc["process"]["executable"] == "/usr/bin/ls"
    assert doc["process"]["name"] == "ls"
    assert doc["sentinel"]["event"] == {"type": "execve", "ret": 0, "cgroup_id": 0, "filename": "/bin/ls"}
    assert "truncated" not in doc["sentinel"]
    assert doc["message"] == "exec /bin/ls ls -l /tmp"


HOSTILE_ARGV = [
    "sh", "-c", "echo 'a b' \"c\" $HOME `id`; rm -rf /", "", "two words", "it's", 'say "hi"', "new\nline",
    "tab\tcr\r\x1b[31m?", "back\\slash", "\udcff\udcfe-not-utf8", "*.glob", "~user", "#hash", "--x=1",
]  # fmt: skip


def command_line_of(argv: list[str]) -> tuple[dict[str, Any], str]:
    table, source = standard_table()
    e = ev(EventType.EXEC, 20 * S, 100, comm="sh", filename="/bin/sh", argv=argv, argc_total=len(argv))
    source.feed(pf(100, 1, 500, comm="sh", exe="/usr/bin/sh", args=argv))
    doc = orjson.loads(dumps(render(e, table.apply(e))))
    line = doc["process"]["command_line"]
    if "process.command_line" in doc["sentinel"].get("escaped_fields", []):
        line = unescape_text(line)
    return doc, line


def test_command_line_splits_back_into_the_args_exactly() -> None:
    """ECS process.command_line quotes as a shell would need (shlex.join): argument boundaries, quotes,
    newlines, control characters and bytes that are not UTF-8 all survive, and the document stays JSON."""
    doc, line = command_line_of(HOSTILE_ARGV)
    assert shlex.split(line) == HOSTILE_ARGV
    assert doc["process"]["args"][:3] == HOSTILE_ARGV[:3]
    _, plain = command_line_of(["ls", "-l", "/tmp"])
    assert plain == "ls -l /tmp"  # nothing to quote: as before


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                        max_size=12), min_size=1, max_size=6))  # fmt: skip
def test_any_argv_round_trips_through_the_command_line(argv: list[str]) -> None:
    assert shlex.split(command_line_of(argv)[1]) == argv


def test_process_name_is_the_executables_file_name_and_the_comm_stays_for_falco() -> None:
    """ECS process.name is basename(process.executable); the 15-character comm is process.thread.name (the
    event's thread) and Falco's proc.name in rules and Falco's format."""
    table, source = standard_table()
    comm = "pyenv-version-f"  # the kernel cut "pyenv-version-file-read" to 15 characters
    source.feed(pf(100, 1, 500, comm=comm, exe="/opt/pyenv/libexec/pyenv-version-file-read", args=["x"]))
    e = ev(EventType.EXEC, 20 * S, 100, comm=comm, filename="/opt/pyenv/libexec/pyenv-version-file-read")
    proc = table.apply(e)
    assert proc is not None
    doc = render(e, proc)
    assert doc["process"]["name"] == "pyenv-version-file-read"
    assert doc["process"]["thread"]["name"] == comm and doc["process"]["parent"]["name"] == "systemd"
    from sentinel.rules import EvalContext
    from tests.unit.rules_support import ruleset

    rs = ruleset("- rule: any\n  desc: d\n  condition: evt.type = execve\n  output: o\n  priority: debug\n")
    assert rs.field_value("proc.name", EvalContext(e, proc, None, 0)) == comm
    unknown = render(ev(EventType.EXIT, 20 * S, 999, comm="ghost"))  # no process known: the comm
    assert unknown["process"]["name"] == "ghost"


def test_exec_failed_enoent() -> None:
    table, _ = standard_table()
    e = ev(
        EventType.EXEC, 20 * S, 100, ret=-ENOENT, filename="./nope", argv=["./nope", "--flag"], argc_total=2
    )
    proc = table.apply(e)
    doc = render(e, proc)
    assert doc["event"]["outcome"] == "failure"
    assert doc["event"]["type"] == ["info"]
    assert doc["event"]["action"] == "exec"
    assert doc["error"] == {"code": "ENOENT", "message": "No such file or directory"}
    assert doc["sentinel"]["event"]["errno"] == "ENOENT"
    assert doc["sentinel"]["event"]["ret"] == -ENOENT
    assert doc["sentinel"]["event"]["args"] == ["./nope", "--flag"]  # what was attempted
    assert doc["process"]["args"] == ["-bash"]  # the image was not replaced
    assert doc["process"]["executable"] == "/usr/bin/bash"
    assert doc["message"] == "exec ./nope ./nope --flag failed: ENOENT"


def test_exec_truncated_argv() -> None:
    e = ev(
        EventType.EXEC, S, 5, flags=FLAG_ARGV_TRUNCATED, filename="/bin/x", argv=["x"] * 3, argc_total=9000
    )
    doc = render(e)
    assert doc["sentinel"]["truncated"] == {"args": True, "args_total": 9000}


def test_exec_message_is_bounded() -> None:
    e = ev(EventType.EXEC, S, 5, filename="/bin/x", argv=["a" * 1000, "b" * 1000])
    assert len(render(e)["message"]) == 1024


# ------------------------------------------------------------------------------------------------ open


@pytest.mark.parametrize(
    ("flags", "names", "types"),
    [
        (0, ["O_RDONLY"], ["access"]),
        (O_WRONLY, ["O_WRONLY"], ["change"]),
        (O_RDWR, ["O_RDWR"], ["change"]),
        (O_TRUNC, ["O_RDONLY", "O_TRUNC"], ["change"]),
        # Whether an O_CREAT open created the file is not known (no FLAG_CREATED_KNOWN): no creation claimed
        (O_WRONLY | O_CREAT | O_TRUNC, ["O_WRONLY", "O_CREAT", "O_TRUNC"], ["change"]),
        (O_CREAT, ["O_RDONLY", "O_CREAT"], ["access"]),
        (O_WRONLY | O_CREAT | O_EXCL, ["O_WRONLY", "O_CREAT", "O_EXCL"], ["change"]),
        (O_WRONLY | O_APPEND, ["O_WRONLY", "O_APPEND"], ["change"]),
        (O_DIRECTORY | O_CLOEXEC, ["O_RDONLY", "O_DIRECTORY", "O_CLOEXEC"], ["access"]),
        (O_PATH | O_CLOEXEC, ["O_RDONLY", "O_CLOEXEC", "O_PATH"], ["access"]),
        (O_TMPFILE | O_RDWR, ["O_RDWR", "O_TMPFILE"], ["change"]),
    ],
)
def test_open_flags_and_types(flags: int, names: list[str], types: list[str]) -> None:
    assert open_flag_names(flags) == names
    e = ev(EventType.OPEN, S, 5, path="/etc/passwd", open_flags=flags, ret=3)
    doc = render(e)
    assert doc["event"]["category"] == ["file"]
    assert doc["event"]["action"] == "open"
    assert doc["event"]["type"] == types
    assert doc["sentinel"]["event"]["flags"] == names
    assert doc["message"] == f"open /etc/passwd [{'|'.join(names)}]"


def test_open_file_fields() -> None:
    e = ev(EventType.OPEN, S, 5, path="etc/passwd", dirfd=AT_FDCWD, ret=3)
    doc = render(e, resolved="/etc/passwd")
    assert doc["file"] == {"path": "/etc/passwd", "name": "passwd", "directory": "/etc"}
    assert doc["sentinel"]["event"]["raw_path"] == "etc/passwd"
    assert doc["sentinel"]["event"]["dirfd"] == AT_FDCWD
    assert "repeat_count" not in doc["sentinel"]["event"]
    assert "truncated" not in doc["sentinel"]


def test_open_file_at_root() -> None:
    doc = render(ev(EventType.OPEN, S, 5, path="/vmlinuz", ret=3))
    assert doc["file"] == {"path": "/vmlinuz", "name": "vmlinuz", "directory": "/"}


def test_requested_mode_only_with_creat_and_never_as_file_mode() -> None:
    """open(2)'s mode is what the caller asked for, before the umask, and only when the call may create:
    sentinel.event.requested_mode. ECS file.mode is the file's own mode, which an open does not tell."""
    with_creat = render(ev(EventType.OPEN, S, 5, path="/tmp/f", open_flags=O_WRONLY | O_CREAT, mode=0o100644))
    assert with_creat["sentinel"]["event"]["requested_mode"] == "0644" and "mode" not in with_creat["file"]
    setuid = render(ev(EventType.OPEN, S, 5, path="/tmp/f", open_flags=O_CREAT, mode=0o4755))
    assert setuid["sentinel"]["event"]["requested_mode"] == "4755"
    creat = render(ev(EventType.OPEN, S, 5, path="/tmp/f", open_flags=O_WRONLY, flags=FLAG_CREAT, mode=0o600))
    assert creat["sentinel"]["event"]["requested_mode"] == "0600"
    without = render(ev(EventType.OPEN, S, 5, path="/tmp/f", open_flags=O_WRONLY, mode=0o644))
    assert "mode" not in without["file"] and "requested_mode" not in without["sentinel"]["event"]


KNOWN = FLAG_CREATED_KNOWN


@pytest.mark.parametrize(
    ("flags", "evflags", "ret", "types", "created"),
    [
        (O_WRONLY | O_CREAT | O_TRUNC, KNOWN | FLAG_CREATED, 3, ["creation"], True),  # `>` to a new file
        (O_WRONLY | O_CREAT | O_TRUNC, KNOWN, 3, ["change"], False),  # `>` to an existing file: truncated
        (O_CREAT, KNOWN, 3, ["access"], False),  # existed, opened to read
        (O_WRONLY | O_CREAT | O_EXCL, KNOWN | FLAG_CREATED, 3, ["creation"], True),
        (O_WRONLY | O_CREAT | O_EXCL, 0, -17, ["change"], None),  # EEXIST: nothing created, nothing read
        (O_WRONLY | O_TRUNC, 0, 3, ["change"], None),  # O_TRUNC of an existing file (no O_CREAT)
        (O_WRONLY, FLAG_CREAT | KNOWN | FLAG_CREATED, 3, ["creation"], True),  # creat(2) making a file
        (0, 0, 3, ["access"], None),
    ],
)
def test_creation_only_when_the_kernel_says_the_open_created(
    flags: int, evflags: int, ret: int, types: list[str], created: bool | None
) -> None:
    e = ev(EventType.OPEN, S, 5, path="/tmp/f", open_flags=flags, flags=evflags, ret=ret, mode=0o644)
    doc = render(e)
    assert doc["event"]["type"] == types
    assert doc["sentinel"]["event"].get("created") is created


def test_event_created_is_unknown_only_for_a_successful_create_the_probe_did_not_read() -> None:
    def created(flags: int, evflags: int = 0, ret: int = 3) -> bool | None:
        return ev(EventType.OPEN, S, 5, open_flags=flags, flags=evflags, ret=ret).created

    assert created(O_WRONLY | O_CREAT) is None  # no kernel offsets, or a capture from before they were read
    assert created(O_WRONLY | O_CREAT, ret=-13) is False  # a failed open created nothing
    assert created(O_WRONLY) is False  # without O_CREAT nothing is created
    assert created(O_WRONLY, FLAG_CREAT) is None  # creat(2)
    assert created(O_WRONLY | O_CREAT, FLAG_CREATED_KNOWN) is False
    assert created(O_WRONLY | O_CREAT, FLAG_CREATED_KNOWN | FLAG_CREATED) is True


def test_open_repeat_count_and_truncated_path() -> None:
    e = ev(EventType.OPEN, S, 5, path="/very/long", repeat_count=17, flags=FLAG_PATH_TRUNCATED, ret=3)
    doc = render(e)
    assert doc["sentinel"]["event"]["repeat_count"] == 17
    assert doc["sentinel"]["truncated"] == {"path": True}


def test_open_failed() -> None:
    doc = render(ev(EventType.OPEN, S, 5, path="/etc/shadow", ret=-EACCES))
    assert doc["event"]["outcome"] == "failure"
    assert doc["error"] == {"code": "EACCES", "message": "Permission denied"}
    assert doc["message"] == "open /etc/shadow [O_RDONLY] failed: EACCES"


def test_open_without_resolution_shows_path_as_given() -> None:
    doc = render(ev(EventType.OPEN, S, 5, path="/etc/../etc/hosts", ret=3))
    assert doc["file"]["path"] == "/etc/../etc/hosts"


# --------------------------------------------------------------------------------------------- connect


def test_connect_ipv4_tcp() -> None:
    e = ev(EventType.CONNECT, S, 5, fd=4, family=AF_INET, address="10.0.0.1", port=443, sock_type=1)
    doc = render(e)
    assert doc["event"]["category"] == ["network"]
    assert doc["event"]["type"] == ["connection", "start"]
    assert doc["event"]["action"] == "connect"
    assert doc["event"]["outcome"] == "success"
    assert doc["destination"] == {"ip": "10.0.0.1", "port": 443, "address": "10.0.0.1"}
    assert doc["network"] == {"direction": "egress", "type": "ipv4", "transport": "tcp"}
    assert doc["sentinel"]["event"]["family"] == "AF_INET"
    assert doc["sentinel"]["event"]["fd"] == 4
    assert doc["message"] == "connect 10.0.0.1:443"


def test_connect_ipv6_udp() -> None:
    e = ev(EventType.CONNECT, S, 5, fd=4, family=AF_INET6, address="2001:db8::1", port=53, sock_type=2)
    doc = render(e)
    assert doc["destination"] == {"ip": "2001:db8::1", "port": 53, "address": "2001:db8::1"}
    assert doc["network"] == {"direction": "egress", "type": "ipv6", "transport": "udp"}
    assert doc["sentinel"]["event"]["family"] == "AF_INET6"
    assert doc["message"] == "connect [2001:db8::1]:53"


def test_connect_unknown_socket_type_has_no_transport() -> None:
    doc = render(ev(EventType.CONNECT, S, 5, family=AF_INET, address="1.2.3.4", port=80, sock_type=0))
    assert doc["network"]["transport"] is None


@pytest.mark.parametrize("address", ["/run/dbus/system_bus_socket", "@abstract-name"])
def test_connect_unix(address: str) -> None:
    doc = render(ev(EventType.CONNECT, S, 5, fd=3, family=AF_UNIX, address=address, sock_type=1))
    assert doc["destination"] == {"address": address}
    assert doc["network"] == {"direction": "egress"}
    assert doc["sentinel"]["event"]["family"] == "AF_UNIX"
    assert doc["message"] == f"connect {address}"


def test_connect_einprogress_outcome_unknown() -> None:
    e = ev(
        EventType.CONNECT, S, 5, family=AF_INET, address="10.0.0.1", port=443, sock_type=1, ret=-EINPROGRESS
    )
    doc = render(e)
    assert doc["event"]["outcome"] == "unknown"
    assert doc["error"]["code"] == "EINPROGRESS"
    assert doc["message"] == "connect 10.0.0.1:443 result EINPROGRESS"


def local_end(family: int, address: str, port: int) -> tuple[int, int, int]:
    """The probe's encoding of a connect's local end (a bind's sys_extra)."""
    raw = socket.inet_pton(socket.AF_INET if family == AF_INET else socket.AF_INET6, address).ljust(16, b"\0")
    word = port | (port << 16) | (family << 32) | (1 << 48) | SOCK_KNOWN
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little"), word


@pytest.mark.parametrize(
    ("family", "local", "remote"),
    [(AF_INET, "192.0.2.7", "10.0.0.1"), (AF_INET6, "2001:db8::7", "2001:db8::1")],
)
def test_connect_source_is_the_local_end_the_kernel_gave(family: int, local: str, remote: str) -> None:
    extra = local_end(family, local, 40001)
    e = ev(EventType.CONNECT, S, 5, family=family, address=remote, port=443, sock_type=1, sys_extra=extra)
    doc = render(e)
    assert doc["source"] == {"ip": local, "port": 40001, "address": local}
    assert doc["destination"]["port"] == 443
    assert "source" not in render(ev(EventType.CONNECT, S, 5, family=family, address=remote, port=443))


def test_connect_refused_is_a_failure() -> None:
    e = ev(EventType.CONNECT, S, 5, family=AF_INET, address="127.0.0.1", port=1, ret=-ECONNREFUSED)
    doc = render(e)
    assert doc["event"]["outcome"] == "failure"
    assert doc["error"]["code"] == "ECONNREFUSED"


def test_error_code() -> None:
    assert error_code(0) is None
    assert error_code(3) is None
    assert error_code(-2) == "ENOENT"
    assert error_code(-9999) == "E9999"


# --------------------------------------------------------------------------------- fork / exit / chdir


def test_fork() -> None:
    doc = render(ev(EventType.FORK, S, 100, child_pid=200, clone_flags=0x11))
    assert doc["event"]["category"] == ["process"]
    assert doc["event"]["type"] == ["start"]
    assert doc["event"]["action"] == "fork"
    assert doc["sentinel"]["event"]["child_pid"] == 200
    assert doc["sentinel"]["event"]["clone_flags"] == 0x11
    assert doc["message"] == "fork 100 -> 200"


def test_exit() -> None:
    doc = render(ev(EventType.EXIT, S, 100))
    assert doc["event"]["type"] == ["end"]
    assert doc["event"]["action"] == "exit"
    assert doc["message"] == "exit 100"


def test_chdir() -> None:
    doc = render(ev(EventType.CHDIR, S, 100, path="src"), resolved="/home/alice/src")
    assert doc["event"]["type"] == ["change"]
    assert doc["event"]["action"] == "chdir"
    assert doc["message"] == "chdir /home/alice/src"


# -------------------------------------------------------------------------------- through the pipeline


def test_stream_every_type_with_process() -> None:
    table, _ = standard_table()
    stream, out = stream_for(table)
    stream.handle(ev(EventType.FORK, 10 * S, 100, child_pid=200))
    stream.handle(ev(EventType.OPEN, 11 * S, 200, path="notes.txt", ret=3))
    stream.handle(ev(EventType.CONNECT, 12 * S, 200, family=AF_INET, address="1.1.1.1", port=53, sock_type=2))
    stream.handle(ev(EventType.EXIT, 13 * S, 200))
    docs = docs_of(out)
    assert [d["event"]["action"] for d in docs] == ["fork", "open", "connect", "exit"]
    assert [d["event"]["sequence"] for d in docs] == [1, 2, 3, 4]
    assert len({d["event"]["id"] for d in docs}) == 4
    assert docs[0]["process"]["pid"] == 100
    for d in docs[1:]:
        assert d["process"]["pid"] == 200
        assert d["process"]["parent"]["pid"] == 100
        assert [a["pid"] for a in d["sentinel"]["ancestors"]] == [100, 1]
        assert d["process"]["entity_id"] == entity_id(BOOT, 200, 10 * CLK)
    assert docs[1]["file"]["path"] == "/home/alice/notes.txt"
    assert docs[1]["@timestamp"] == "2023-11-14T22:13:31.000000000Z"


def test_cache_follows_own_exec() -> None:
    table, source = standard_table()
    stream, out = stream_for(table)
    stream.handle(ev(EventType.OPEN, 10 * S, 100, path="/a", ret=3))
    source.feed(pf(100, 1, 500, comm="vim", exe="/usr/bin/vim.basic", args=["vim", "x"], cwd="/home/alice"))
    generation = stream.renderer.exec_generation
    stream.handle(ev(EventType.EXEC, 11 * S, 100, comm="vim", filename="/usr/bin/vim", argv=["vim", "x"]))
    assert stream.renderer.exec_generation == generation + 1
    stream.handle(ev(EventType.OPEN, 12 * S, 100, comm="vim", path="/b", ret=3))
    before, at_exec, after = docs_of(out)
    assert before["process"]["args"] == ["-bash"]
    assert before["process"]["executable"] == "/usr/bin/bash"
    for d in (at_exec, after):
        assert d["process"]["args"] == ["vim", "x"]
        assert d["process"]["command_line"] == "vim x"
        assert d["process"]["executable"] == "/usr/bin/vim.basic"
        assert d["process"]["name"] == "vim.basic"  # ECS: the executable's file name, not the comm
        assert d["process"]["entity_id"] == before["process"]["entity_id"]  # same process, new image


def test_cache_follows_exec_without_facts() -> None:
    """The process is gone from /proc by the time we look: exe comes from the filename (and realpath)."""
    table, source = standard_table()
    source.forget(100)
    source.feed_realpath("/bin/sh", "/usr/bin/dash")
    stream, out = stream_for(table)
    stream.handle(ev(EventType.OPEN, 10 * S, 100, path="/a", ret=3))
    stream.handle(ev(EventType.EXEC, 11 * S, 100, comm="sh", filename="/bin/sh", argv=["sh", "-c", "id"]))
    stream.handle(ev(EventType.OPEN, 12 * S, 100, comm="sh", path="/b", ret=3))
    docs = docs_of(out)
    assert docs[2]["process"]["executable"] == "/usr/bin/dash"
    assert docs[2]["process"]["args"] == ["sh", "-c", "id"]


def test_failed_exec_does_not_bump_generation() -> None:
    table, _ = standard_table()
    stream, out = stream_for(table)
    stream.handle(ev(EventType.EXEC, 11 * S, 100, ret=-ENOENT, filename="nope", argv=["nope"]))
    assert stream.renderer.exec_generation == 0
    stream.handle(ev(EventType.OPEN, 12 * S, 100, path="/b", ret=3))
    assert docs_of(out)[1]["process"]["args"] == ["-bash"]


def test_cache_follows_parent_exec() -> None:
    """A child's cached block embeds its parent and ancestors: the parent's exec must show in the child."""
    table, source = standard_table()
    stream, out = stream_for(table)
    stream.handle(ev(EventType.FORK, 10 * S, 100, child_pid=200))
    stream.handle(ev(EventType.OPEN, 11 * S, 200, path="/a", ret=3))
    source.feed(pf(100, 1, 500, comm="python3", exe="/usr/bin/python3.12", args=["python3", "app.py"]))
    stream.handle(
        ev(EventType.EXEC, 12 * S, 100, comm="python3", filename="/usr/bin/python3", argv=["python3"])
    )
    stream.handle(ev(EventType.OPEN, 13 * S, 200, path="/b", ret=3))
    docs = docs_of(out)
    early, late = docs[1], docs[3]
    assert early["process"]["parent"]["args"] == ["-bash"]
    assert late["process"]["parent"]["args"] == ["python3"]
    assert late["process"]["parent"]["executable"] == "/usr/bin/python3.12"
    assert late["process"]["parent"]["name"] == "python3.12"  # the executable's file name
    assert late["sentinel"]["ancestors"][0]["command_line"] == "python3"
    assert late["process"]["args"] == ["-bash"]  # the child itself did not exec


def test_cache_follows_grandparent_exec() -> None:
    table, source = standard_table()
    stream, out = stream_for(table)
    stream.handle(ev(EventType.FORK, 10 * S, 100, child_pid=200))
    stream.handle(ev(EventType.FORK, 10 * S + 1, 200, child_pid=300))
    stream.handle(ev(EventType.OPEN, 11 * S, 300, path="/a", ret=3))
    source.feed(pf(100, 1, 500, exe="/usr/bin/zsh", args=["zsh"]))
    stream.handle(ev(EventType.EXEC, 12 * S, 100, comm="zsh", filename="/bin/zsh", argv=["zsh"]))
    stream.handle(ev(EventType.OPEN, 13 * S, 300, path="/b", ret=3))
    docs = docs_of(out)
    assert docs[2]["sentinel"]["ancestors"][1]["command_line"] == "-bash"
    assert docs[4]["sentinel"]["ancestors"][1]["command_line"] == "zsh"
    assert docs[4]["sentinel"]["ancestors"][1]["executable"] == "/usr/bin/zsh"


def test_cache_follows_chdir() -> None:
    table, _ = standard_table()
    stream, out = stream_for(table)
    stream.handle(ev(EventType.OPEN, 10 * S, 100, path="a.txt", ret=3))
    stream.handle(ev(EventType.CHDIR, 11 * S, 100, path="/var/tmp"))
    stream.handle(ev(EventType.OPEN, 12 * S, 100, path="b.txt", ret=3))
    docs = docs_of(out)
    assert docs[0]["process"]["working_directory"] == "/home/alice"
    assert docs[0]["file"]["path"] == "/home/alice/a.txt"
    assert docs[1]["message"] == "chdir /var/tmp"
    assert docs[2]["process"]["working_directory"] == "/var/tmp"
    assert docs[2]["file"]["path"] == "/var/tmp/b.txt"


def test_cache_follows_fchdir() -> None:
    table, _ = standard_table()
    stream, out = stream_for(table)
    stream.handle(ev(EventType.OPEN, 10 * S, 100, path="/var/log", open_flags=O_DIRECTORY, ret=7))
    stream.handle(ev(EventType.CHDIR, 11 * S, 100, path="", fd=7, dirfd=7))
    stream.handle(ev(EventType.OPEN, 12 * S, 100, path="syslog", ret=3))
    docs = docs_of(out)
    assert docs[1]["message"] == "chdir /var/log"
    assert docs[2]["process"]["working_directory"] == "/var/log"
    assert docs[2]["file"]["path"] == "/var/log/syslog"


def test_failed_chdir_changes_nothing() -> None:
    table, _ = standard_table()
    stream, out = stream_for(table)
    stream.handle(ev(EventType.CHDIR, 11 * S, 100, path="/root", ret=-EACCES))
    stream.handle(ev(EventType.OPEN, 12 * S, 100, path="x", ret=3))
    docs = docs_of(out)
    assert docs[0]["event"]["outcome"] == "failure"
    assert docs[0]["message"] == "chdir /root"
    assert docs[1]["process"]["working_directory"] == "/home/alice"


def test_relative_chdir_message_resolves_against_old_cwd() -> None:
    """Regression: the path used to be resolved after apply() had moved the cwd (``/home/alice/src/src``)."""
    table, _ = standard_table()
    stream, out = stream_for(table)
    stream.handle(ev(EventType.CHDIR, 11 * S, 100, path="src"))
    stream.handle(ev(EventType.OPEN, 12 * S, 100, path="main.c", ret=3))
    chdir_doc, open_doc = docs_of(out)
    assert open_doc["process"]["working_directory"] == "/home/alice/src"  # the table is right
    assert chdir_doc["message"] == "chdir /home/alice/src"


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ("..", "/home"),
        ("../../tmp/", "/tmp"),
        ("/x/../y/", "/y"),
        (".", "/home/alice"),
        ("a/b", "/home/alice/a/b"),
    ],
)
def test_chdir_message_and_cwd(path: str, where: str) -> None:
    table, _ = standard_table()
    stream, out = stream_for(table)
    stream.handle(ev(EventType.CHDIR, 11 * S, 100, path=path))
    stream.handle(ev(EventType.OPEN, 12 * S, 100, path="f", ret=3))
    chdir_doc, open_doc = docs_of(out)
    assert chdir_doc["message"] == f"chdir {where}"
    assert open_doc["process"]["working_directory"] == where


def test_fchdir_to_unknown_fd_does_not_claim_the_old_cwd() -> None:
    table, source = standard_table()
    source.forget(100)  # gone from /proc by the time we look
    stream, out = stream_for(table)
    stream.handle(ev(EventType.CHDIR, 11 * S, 100, path="", fd=9, dirfd=9))
    (chdir_doc,) = docs_of(out)
    assert chdir_doc["message"] != "chdir /home/alice"


def test_cache_follows_uid_change() -> None:
    table, _ = standard_table()
    stream, out = stream_for(table)
    stream.handle(ev(EventType.OPEN, 10 * S, 100, path="/a", ret=3))
    stream.handle(ev(EventType.OPEN, 11 * S, 100, uid=0, gid=0, path="/b", ret=3))
    a, b = docs_of(out)
    assert a["process"]["user"] == {"id": "1000", "name": "alice"}
    assert b["process"]["user"] == {"id": "0", "name": "root"}
    assert b["process"]["group"] == {"id": "0", "name": "root"}


def test_cached_block_reused_when_nothing_changes() -> None:
    table, _ = standard_table()
    proc = table.get(100)
    renderer = EcsRenderer(HOST)
    d1 = renderer.event_doc(ev(EventType.OPEN, S, 100, path="/a"), proc)
    d2 = renderer.event_doc(ev(EventType.OPEN, 2 * S, 100, path="/b"), proc)
    assert d1["process"] == d2["process"]
    assert d1["sentinel"]["ancestors"] is d2["sentinel"]["ancestors"]  # the cache was hit
