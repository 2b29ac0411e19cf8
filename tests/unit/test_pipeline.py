"""``parse_types`` and ``EventStream``: which events become documents, and how they are written."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest

from sentinel import cli
from sentinel.alerts.ecs import EcsRenderer
from sentinel.events import AF_INET, SYSCALL_TYPES, Event, EventType
from sentinel.filters import compile_filters
from sentinel.host import HostInfo
from sentinel.pipeline import DEFAULT_TYPES, TYPE_BY_NAME, EventStream, parse_types
from sentinel.process.facts import ProcFacts, ReplayFacts
from sentinel.process.table import ProcessTable

HOST = HostInfo(
    hostname="h", machine_id="m", boot_id="b", kernel="6.18", boot_time_ns=1_700_000_000_000_000_000
)
S = 1_000_000_000


def ev(etype: EventType, ts: int, pid: int, **kw: Any) -> Event:
    kw.setdefault("tid", pid)
    kw.setdefault("uid", 0)
    kw.setdefault("gid", 0)
    kw.setdefault("comm", "sh")
    return Event(type=etype, ts_ns=ts, pid=pid, **kw)


def make_stream(
    types: frozenset[EventType] = DEFAULT_TYPES, keep: Any = None
) -> tuple[EventStream, io.BytesIO]:
    facts = ReplayFacts()
    facts.feed(ProcFacts(pid=1, start_ticks=1, ppid=0, comm="init", exe="/sbin/init", cwd="/", args=["init"]))
    facts.feed(ProcFacts(pid=100, start_ticks=50, ppid=1, comm="sh", exe="/bin/sh", cwd="/root", args=["sh"]))
    table = ProcessTable("b", facts, clk_tck=100, user_lookup=lambda _: None, group_lookup=lambda _: None)
    table.bootstrap()
    out = io.BytesIO()
    return EventStream(table, EcsRenderer(HOST), out, types, keep), out


def lines(out: io.BytesIO) -> list[dict[str, Any]]:
    data = out.getvalue()
    assert data == b"" or data.endswith(b"\n")
    return [orjson.loads(line) for line in data.split(b"\n")[:-1]]


def mixed_events() -> list[Event]:
    return [
        ev(EventType.FORK, 1 * S, 100, child_pid=200),
        ev(EventType.EXEC, 2 * S, 200, filename="/bin/cat", argv=["cat", "x"]),
        ev(EventType.OPEN, 3 * S, 200, path="x", ret=3),
        ev(EventType.CONNECT, 4 * S, 200, family=AF_INET, address="10.1.1.1", port=80, sock_type=1),
        ev(EventType.CHDIR, 5 * S, 200, path="/tmp"),
        ev(EventType.EXIT, 6 * S, 200),
    ]


# ----------------------------------------------------------------------------------------- parse_types


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("exec", {EventType.EXEC}),
        ("execve", {EventType.EXEC}),
        ("exec,execve", {EventType.EXEC}),
        ("exec,open,connect", {EventType.EXEC, EventType.OPEN, EventType.CONNECT}),
        ("fork,exit,chdir", {EventType.FORK, EventType.EXIT, EventType.CHDIR}),
        (" exec , open ", {EventType.EXEC, EventType.OPEN}),
        ("EXEC,Open", {EventType.EXEC, EventType.OPEN}),
        ("exec,,open,", {EventType.EXEC, EventType.OPEN}),
        ("all", set(EventType)),
        ("  all  ", set(EventType)),
    ],
)
def test_parse_types(spec: str, expected: set[EventType]) -> None:
    assert parse_types(spec) == frozenset(expected)


def test_every_type_has_a_name() -> None:
    named = {t for t in TYPE_BY_NAME.values() if not isinstance(t, frozenset)}
    assert named == set(EventType)


def test_families_and_security_select_the_syscalls() -> None:
    from sentinel.file_changes import FILE_TYPES
    from sentinel.sockets import SOCKET_TYPES

    assert parse_types("security") == {EventType.TAMPER, *(SYSCALL_TYPES - FILE_TYPES - SOCKET_TYPES)}
    assert parse_types("listening,datagram,fd") == SOCKET_TYPES
    assert parse_types("listen") == {EventType.LISTEN}
    assert parse_types("file") == FILE_TYPES and EventType.RENAMEAT2 in FILE_TYPES
    assert parse_types("privilege,ptrace") == {
        EventType.SETUID, EventType.SETGID, EventType.SETREUID, EventType.SETREGID, EventType.SETRESUID,
        EventType.SETRESGID, EventType.SETFSUID, EventType.SETFSGID, EventType.CAPSET, EventType.PTRACE,
    }  # fmt: skip
    assert parse_types("umount2") == {EventType.UMOUNT2} and parse_types("signal") >= {EventType.KILL}


def test_default_types_match_the_cli_default() -> None:
    """What `sentinel events`/`replay` print without --types is what EventStream defaults to."""
    parser = cli.build_parser()
    for argv in (["events"], ["replay", "capture.bin"]):
        assert parse_types(parser.parse_args(argv).types) == DEFAULT_TYPES


@pytest.mark.parametrize("spec", ["bogus", "exec,bogus", "exec;open", "opens", "all,fork"])
def test_parse_types_unknown_raises(spec: str) -> None:
    with pytest.raises(ValueError, match="unknown event type") as info:
        parse_types(spec)
    message = str(info.value)
    for name in ("exec", "open", "connect", "fork", "exit", "chdir", "all"):
        assert name in message


def test_parse_types_all_is_case_insensitive() -> None:
    assert parse_types("ALL") == frozenset(EventType)


# ----------------------------------------------------------------------------------------- EventStream


def test_default_types_write_exec_open_connect() -> None:
    stream, out = make_stream()
    for e in mixed_events():
        stream.handle(e)
    docs = lines(out)
    assert [d["event"]["action"] for d in docs] == ["exec", "open", "connect"]
    assert stream.written == 3
    assert stream.filtered == 0


def test_all_types_write_everything_in_order() -> None:
    stream, out = make_stream(parse_types("all"))
    for e in mixed_events():
        stream.handle(e)
    docs = lines(out)
    assert [d["event"]["action"] for d in docs] == ["fork", "exec", "open", "connect", "chdir", "exit"]
    assert [d["event"]["sequence"] for d in docs] == list(range(1, 7))
    assert stream.written == 6


def test_unselected_events_still_update_the_table() -> None:
    """Forks are not printed by default, yet the exec after one has the right lineage."""
    stream, out = make_stream(frozenset({EventType.EXEC}))
    for e in mixed_events():
        stream.handle(e)
    (doc,) = lines(out)
    assert doc["process"]["pid"] == 200
    assert doc["process"]["parent"]["pid"] == 100
    assert [a["pid"] for a in doc["sentinel"]["ancestors"]] == [100, 1]
    assert stream.table.get(200) is not None


def test_exec_generation_bumped_even_when_exec_not_written() -> None:
    stream, _ = make_stream(frozenset({EventType.OPEN}))
    stream.handle(ev(EventType.EXEC, S, 100, filename="/bin/ls", argv=["ls"]))
    stream.handle(ev(EventType.EXEC, 2 * S, 100, filename="/bin/ls", argv=["ls"], ret=-2))
    assert stream.renderer.exec_generation == 1


def test_open_paths_are_resolved() -> None:
    stream, out = make_stream()
    stream.handle(ev(EventType.OPEN, S, 100, path="../etc//hosts", ret=3))
    (doc,) = lines(out)
    assert doc["file"]["path"] == "/etc/hosts"
    assert doc["sentinel"]["event"]["raw_path"] == "../etc//hosts"


def test_event_without_a_process() -> None:
    """pid 0 has no table entry: the document is built from the event alone."""
    stream, out = make_stream(parse_types("all"))
    stream.handle(ev(EventType.OPEN, S, 0, path="rel", ret=3, comm="swapper/0"))
    (doc,) = lines(out)
    assert doc["process"]["pid"] == 0
    assert doc["file"]["path"] == "rel"
    assert doc["sentinel"]["ancestors"] == []


def test_keep_filters_documents() -> None:
    keep = compile_filters(["file.path^=/etc/"])
    stream, out = make_stream(parse_types("open"), keep)
    for path in ("/etc/passwd", "/tmp/x", "/etc/hosts", "relative"):
        stream.handle(ev(EventType.OPEN, S, 100, path=path, ret=3))
    docs = lines(out)
    assert [d["file"]["path"] for d in docs] == ["/etc/passwd", "/etc/hosts"]
    assert stream.written == 2
    assert stream.filtered == 2


def test_keep_not_consulted_for_unselected_types() -> None:
    seen: list[str] = []

    def keep(doc: dict[str, Any]) -> bool:
        seen.append(doc["event"]["action"])
        return False

    stream, out = make_stream(frozenset({EventType.OPEN}), keep)
    for e in mixed_events():
        stream.handle(e)
    assert seen == ["open"]
    assert out.getvalue() == b""
    assert stream.filtered == 1


def test_one_line_per_document_with_hostile_strings() -> None:
    stream, out = make_stream(parse_types("all"))
    nasty = [
        "a\nb",
        "\x00",
        "\r\n",
        b"\xff\xfe".decode("utf-8", "surrogateescape"),
        "\\x41",
        "\u2028",
    ]
    for i, text in enumerate(nasty):
        stream.handle(ev(EventType.EXEC, (i + 1) * S, 100, comm=text, filename=text, argv=[text, "x"]))
        stream.handle(ev(EventType.OPEN, (i + 1) * S + 1, 100, comm=text, path="/" + text, ret=3))
    data = out.getvalue()
    assert data.count(b"\n") == 2 * len(nasty) == stream.written
    docs = lines(out)
    assert len(docs) == 2 * len(nasty)
    hostile = [d for d in docs if "escaped_fields" in d.get("sentinel", {})]
    assert len(hostile) == 2
