"""Runtime metadata through the whole pipeline: documents before the answer are marked ``pending`` and the
next ones of the same process carry everything (no stale mark from a cache), rules on the runtime's fields
fire only once the answer is in, Falco's suggested output fields get the values, and a recording replays
to the same documents and alerts without asking any runtime (the fake client would notice)."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from sentinel.alerts.ecs import EcsRenderer
from sentinel.capture import CaptureReader, CaptureWriter, capture_header
from sentinel.containers.meta_view import MetaChange, MetadataView
from sentinel.containers.metadata import ContainerMeta, Mount
from sentinel.containers.metadata_service import MetadataService
from sentinel.detect import DetectionStream
from sentinel.events import Event, EventType
from sentinel.host import HostInfo
from sentinel.pipeline import EventStream
from sentinel.process.table import ProcessTable
from sentinel.recording import replay_events
from sentinel.rules import load_text
from tests.unit.detect_fixtures import ListSink
from tests.unit.test_container_identity import A_ID, B_ID, HOST_ID, A, B, identity, table
from tests.unit.test_container_metadata import Clock, Fakes

HOST = HostInfo("h", "m", "boot", "6.18", boot_time_ns=1_700_000_000_000_000_000)
WEB = ContainerMeta(
    full_id=A, source="docker:/d.sock", name="shop-web-1", image="nginx:1.25", image_repository="nginx",
    image_tag="1.25", labels=(("tier", "front"),), privileged=True,
)  # fmt: skip
RULES = """
- rule: Shadow read in a named container
  desc: test
  condition: evt.type = openat and fd.name = /etc/shadow and container.name = shop-web-1
  output: "read (container=%container.name image=%container.image.repository:%container.image.tag)"
  priority: warning
- rule: Shadow read in an unknown image
  desc: test
  condition: evt.type = openat and fd.name = /etc/shadow and not container.image.repository in (nginx)
  output: "read (%container.id)"
  priority: notice
"""


def opens(pid: int, cgroup_id: int, t0: int) -> list[Event]:
    return [
        Event(EventType.OPEN, t0 + i, pid, pid, 0, 0, "cat", cgroup_id=cgroup_id, path="/etc/shadow", ret=3)
        for i in range(2)
    ]


class Live:
    """The live agent's pieces with a fake docker client, recording as `sentinel record` does."""

    def __init__(self, capture: Path | None = None, endpoints: tuple[str, ...] = ("docker:/d.sock",)) -> None:
        self.fakes = Fakes()
        self.service = MetadataService(
            list(endpoints), client_factory=self.fakes, clock=Clock(), rootless=False, timeout=0.5
        )
        self.writer = CaptureWriter(capture, capture_header("test", host=HOST.to_dict())) if capture else None
        on_change = self.writer.write_container_meta if self.writer else None
        on_answer = self.writer.write_container if self.writer else None
        self.view = MetadataView(self.service, on_change=on_change)
        self.table = table(identity(on_answer=on_answer, metadata=self.view))
        self.fakes["docker:/d.sock"].known[A] = WEB
        if self.writer:
            self.writer.write_snapshot_end(1)

    def answer_arrives(self) -> None:
        """The worker answers, and the pipeline takes it at its next poll."""
        assert self.service.wait_idle(5)
        self.view.poll()

    def close(self) -> None:
        self.service.close(2)
        if self.writer:
            self.writer.close()


@pytest.fixture
def live() -> Iterator[Live]:
    agent = Live()
    yield agent
    agent.close()


def docs(out: io.BytesIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_documents_are_marked_until_the_answer_and_complete_after(live: Live) -> None:
    out = io.BytesIO()
    stream = EventStream(live.table, EcsRenderer(HOST), out)
    first, second = opens(20, A_ID, 10_000_000_000)
    stream.handle(first)  # the identity names the container: asked now, answered later
    live.answer_arrives()
    stream.handle(second)  # the same process, its render cache warm: the new state shows
    stream.handle(opens(10, HOST_ID, 11_000_000_000)[0])
    before, after, host = docs(out)
    assert before["container"] == {"id": A, "runtime": "docker"}
    assert before["sentinel"]["container"]["metadata"] == "pending"
    assert after["container"]["name"] == "shop-web-1" and after["container"]["image"]["tag"] == ["1.25"]
    assert after["container"]["security_context"] == {"privileged": True}
    assert "metadata" not in after["sentinel"]["container"]
    assert "container" not in host and "container" not in host["sentinel"]
    assert live.fakes["docker:/d.sock"].asked == [A]  # once, however many events


def test_rules_on_runtime_fields_fire_once_the_answer_is_in(live: Live) -> None:
    rs = load_text(RULES, "r.yaml").ruleset
    sink = ListSink()
    stream = DetectionStream(live.table, rs, HOST, sink, "falco", window_s=0)
    first, second = opens(20, A_ID, 10_000_000_000)
    stream.handle(first)
    live.answer_arrives()
    stream.handle(second)
    stream.flush()
    fired = [(a["rule"], a["output_fields"]) for a in map(orjson.loads, sink.lines)]
    assert [name for name, _ in fired] == [
        "Shadow read in an unknown image",  # before the answer: not ... in (...) holds on a missing value
        "Shadow read in a named container",
    ]
    pending, named = fired[0][1], fired[1][1]
    assert pending["container.id"] == A[:12] and pending["container.name"] is None  # not answered yet
    assert named["container.name"] == "shop-web-1" and named["container.image.repository"] == "nginx"
    assert named["container.image.tag"] == "1.25" and named["k8s.pod.name"] is None


def record_and_replay(tmp_path: Path, make: Any) -> tuple[list[Any], list[Any]]:
    """Run ``make(table, into)``'s stream live while recording (the answer taken after the first event),
    then over the replay of the capture; both outputs."""
    capture = tmp_path / "c"
    agent = Live(capture)
    events = [*opens(20, A_ID, 10_000_000_000), *opens(10, HOST_ID, 11_000_000_000)]
    live_out: list[Any] = []
    try:
        stream = make(agent.table, live_out)
        for i, e in enumerate(events):
            stream.handle(e)  # the table writes what it asked (container, metadata) before the event
            assert agent.writer is not None
            agent.writer.write_event(e)
            if i == 0:
                agent.answer_arrives()
        finish(stream)
    finally:
        agent.close()
    assert agent.fakes["docker:/d.sock"].asked == [A]
    replay_out: list[Any] = []
    streams: list[Any] = []

    def make_replay(_host: HostInfo, t: ProcessTable) -> Any:
        streams.append(make(t, replay_out))
        return streams[-1]

    assert replay_events(str(capture), make_replay) is None
    for s in streams:
        finish(s)
    return live_out, replay_out


def finish(stream: Any) -> None:
    if isinstance(stream, DetectionStream):
        stream.flush()


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """What must be equal between live and replay (ids and creation times are per run)."""
    return {k: doc.get(k) for k in ("container", "orchestrator", "message")} | {
        "sentinel.container": doc.get("sentinel", {}).get("container")
    }


def test_a_recording_replays_to_the_same_documents(tmp_path: Path) -> None:
    def make(t: ProcessTable, into: list[Any]) -> EventStream:
        return EventStream(t, EcsRenderer(HOST), _Collect(into))  # type: ignore[arg-type]

    live, replayed = record_and_replay(tmp_path, make)
    assert len(live) == 4
    assert [comparable(d) for d in replayed] == [comparable(d) for d in live]
    assert live[0]["sentinel"]["container"]["metadata"] == "pending" and live[1]["container"]["name"]


def test_a_recording_replays_to_the_same_alerts(tmp_path: Path) -> None:
    rs = load_text(RULES, "r.yaml").ruleset

    def make(t: ProcessTable, into: list[Any]) -> DetectionStream:
        return DetectionStream(t, rs, HOST, _Sink(into), "ecs", window_s=0)

    live, replayed = record_and_replay(tmp_path, make)
    names = [d["rule"]["name"] for d in live]
    unknown, named = "Shadow read in an unknown image", "Shadow read in a named container"
    assert names == [unknown, named, unknown, unknown]  # the host's image is "": not in (nginx), as Falco
    assert [d["rule"]["name"] for d in replayed] == names
    assert [comparable(d) for d in replayed] == [comparable(d) for d in live]


def test_the_capture_holds_each_change_where_the_pipeline_took_it(tmp_path: Path) -> None:
    capture = tmp_path / "c"
    agent = Live(capture)
    first, second = opens(20, A_ID, 10_000_000_000)
    try:
        agent.table.apply(first)
        assert agent.writer is not None
        agent.writer.write_event(first)
        agent.answer_arrives()
        agent.table.apply(second)
        agent.writer.write_event(second)
    finally:
        agent.close()
    with CaptureReader(capture) as reader:
        kinds = [type(i).__name__ if not isinstance(i, MetaChange) else i.state for i in reader]
    assert kinds == ["SegmentStart", "SnapshotEnd", "ContainerFact", "pending", "Event", "found", "Event"]


class _Collect(io.RawIOBase):
    """An output that parses each JSON line into a list."""

    def __init__(self, into: list[Any]) -> None:
        self.into = into

    def write(self, data: Any) -> int:  # type: ignore[override]
        for line in bytes(data).splitlines():
            self.into.append(orjson.loads(line))
        return len(data)


class _Sink(ListSink):
    """A sink that keeps the rendered alerts, parsed, in a list of the caller's."""

    def __init__(self, into: list[Any]) -> None:
        super().__init__()
        self.into = into

    def write(self, line: bytes, priority: str = "warning") -> None:
        super().write(line, priority)
        self.into.append(orjson.loads(line))


def test_replay_never_asks_a_runtime() -> None:
    view = MetadataView()
    assert view.service is None and view.poll() == 0
    t = table(identity(metadata=view))
    t.apply(opens(20, A_ID, 10_000_000_000)[0])
    assert view.state(A) is None and view.mark(A) is None  # no record, no state: no mark either



CONTAINER_RULES = """
- rule: Container with the docker socket
  desc: test
  condition: evt.type = container and container.mount.dest[/var/run/docker.sock] != N/A
  output: "started %container.name (%container.mounts) pid=%proc.pid vpid=%proc.vpid"
  priority: warning
- rule: Any container started
  desc: test
  condition: evt.type = container
  output: "started %container.id"
  priority: informational
"""
SOCKET = (Mount("/var/run/docker.sock", "/var/run/docker.sock", "", True, "rprivate"),)


class TwoRuntimes(Live):
    """Live, with containerd answering for container B too, and A's answer listing the docker socket."""

    def __init__(self) -> None:
        super().__init__(endpoints=("docker:/d.sock", "containerd:/c.sock"))
        self.fakes["docker:/d.sock"].known[A] = dataclasses.replace(WEB, mounts=SOCKET)
        self.fakes["containerd:/c.sock"].known[B] = ContainerMeta(full_id=B, source="containerd:/c.sock",
                                                                  name="plain", mounts=())  # fmt: skip


def test_each_container_gets_one_container_event_when_its_answer_arrives() -> None:
    """Falco's `container` event: made before the next event once a container's answer is in, once per
    container (the second container's too), naming its process; nothing before the answer."""
    agent = TwoRuntimes()
    try:
        rs = load_text(CONTAINER_RULES, "r.yaml").ruleset
        sink = ListSink()
        stream = DetectionStream(agent.table, rs, HOST, sink, "ecs", window_s=0)
        a1, a2 = opens(20, A_ID, 10_000_000_000)
        stream.handle(a1)
        agent.answer_arrives()
        stream.handle(a2)
        b1, b2 = opens(30, B_ID, 12_000_000_000)
        stream.handle(b1)
        agent.answer_arrives()
        stream.handle(b2)
        stream.handle(opens(30, B_ID, 13_000_000_000)[0])
        stream.flush()
    finally:
        agent.close()
    alerts = list(map(orjson.loads, sink.lines))
    fired = [(a["rule"]["name"], a["process"]["pid"], a["container"]["id"]) for a in alerts]
    assert fired == [
        ("Container with the docker socket", 20, A),
        ("Any container started", 20, A),
        ("Any container started", 30, B),
    ]
    first = alerts[0]
    assert first["event"]["action"] == "container"
    assert first["sentinel"]["container"]["mounts"] == [
        {"source": "/var/run/docker.sock", "destination": "/var/run/docker.sock", "mode": "", "rw": True,
         "propagation": "rprivate"}
    ]  # fmt: skip
    assert "/var/run/docker.sock:/var/run/docker.sock::true:rprivate" in first["message"]


def test_a_recording_replays_to_the_same_container_events(tmp_path: Path) -> None:
    rs = load_text(CONTAINER_RULES, "r.yaml").ruleset

    def make(t: ProcessTable, into: list[Any]) -> DetectionStream:
        return DetectionStream(t, rs, HOST, _Sink(into), "ecs", window_s=0)

    live, replayed = record_and_replay(tmp_path, make)
    assert [d["rule"]["name"] for d in live] == ["Any container started"]  # WEB has no mounts said
    assert [comparable(d) for d in replayed] == [comparable(d) for d in live]
