"""MetadataService: lookups off the caller's thread, the caches and their bounds, routing to endpoints, and
runtimes that are absent, hung or broken. Fake clients make it deterministic; the last tests use the fake
Docker daemon end to end."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from sentinel.containers import metadata_service
from sentinel.containers.cgroup_path import ContainerRef
from sentinel.containers.endpoints import (
    DEFAULT_ENDPOINTS,
    Endpoint,
    EndpointError,
    parse_endpoint,
    parse_endpoints,
    rootless_endpoints,
)
from sentinel.containers.metadata import (
    ContainerMeta,
    LookupTimeout,
    RefusedAnswer,
    RuntimeUnavailable,
    SocketMissing,
)
from sentinel.containers.metadata_service import FAILED, FOUND, NOT_FOUND, PENDING, Answer, MetadataService
from tests.unit.container_meta_support import (
    CID,
    CID2,
    container_path,
    docker_inspect,
    fake_docker,
    short_dir,
)


def ref(n: int = 0, runtime: str = "docker", rootless: bool = False) -> ContainerRef:
    full_id = f"{n:064x}"
    return ContainerRef(runtime, full_id, full_id[:12], rootless)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeClient:
    """Answers from ``known`` (id -> meta), else None; ``raises`` makes every lookup raise; ``gate`` blocks
    lookups until set."""

    endpoint: Endpoint
    known: dict[str, ContainerMeta] = field(default_factory=dict)
    raises: BaseException | None = None
    gate: threading.Event | None = None
    asked: list[str] = field(default_factory=list)
    closed: bool = False

    @property
    def source(self) -> str:
        return f"{self.endpoint.kind}:{self.endpoint.path}"

    @property
    def kind(self) -> str:
        return self.endpoint.kind

    def inspect(self, full_id: str, timeout: float) -> ContainerMeta | None:
        self.asked.append(full_id)
        if self.gate is not None:
            self.gate.wait(10)
        if self.raises is not None:
            raise self.raises
        return self.known.get(full_id)

    def close(self) -> None:
        self.closed = True


class Fakes:
    def __init__(self) -> None:
        self.clients: dict[str, FakeClient] = {}

    def __call__(self, endpoint: Endpoint) -> FakeClient:
        client = FakeClient(endpoint)
        self.clients[endpoint.kind + ":" + endpoint.path] = client
        return client

    def __getitem__(self, source: str) -> FakeClient:
        return self.clients[source]


def meta(r: ContainerRef, source: str = "docker:/d.sock", name: str = "c") -> ContainerMeta:
    return ContainerMeta(full_id=r.full_id, source=source, name=name)


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(fakes: Fakes, clock: Clock) -> Iterator[MetadataService]:
    svc = MetadataService(
        ["docker:/d.sock", "podman:/p.sock"], client_factory=fakes, clock=clock, rootless=False, timeout=0.5
    )
    yield svc
    svc.close(2)


class Log:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.records.append((level, event, kw))


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> Log:
    recorder = Log()
    monkeypatch.setattr(metadata_service, "get_logger", lambda: recorder)
    return recorder


# ---- asynchronous answers -------------------------------------------------------------------------------


def test_request_never_waits_and_the_answer_completes_later(service: MetadataService, fakes: Fakes) -> None:
    docker = fakes["docker:/d.sock"]
    r = ref(1)
    docker.known[r.full_id] = meta(r)
    docker.gate = threading.Event()  # the runtime is slow
    start = time.perf_counter()
    assert service.request(r) is True
    assert time.perf_counter() - start < 0.05
    assert service.get(r.full_id) is None and service.state(r.full_id) == PENDING
    assert service.request(r) is False  # already pending: not queued twice
    docker.gate.set()
    assert service.wait_idle(5)
    assert service.get(r.full_id) == meta(r)
    assert service.state(r.full_id) == FOUND
    assert service.take_completed() == [Answer(r.full_id, meta(r), FOUND)]
    assert service.take_completed() == []
    assert service.request(r) is False  # cached
    stats = service.stats()
    assert (stats.requests, stats.queued, stats.pending_hits, stats.cache_hits, stats.found) == (
        3,
        1,
        1,
        1,
        1,
    )
    assert stats.sources["docker:/d.sock"].found == 1 and stats.sources["docker:/d.sock"].state == "up"


def test_not_found_is_remembered_and_asked_again_later(
    service: MetadataService, fakes: Fakes, clock: Clock
) -> None:
    r = ref(2)
    assert service.request(r)
    assert service.wait_idle(5)
    assert service.state(r.full_id) == NOT_FOUND
    assert service.take_completed() == [Answer(r.full_id, None, NOT_FOUND)]
    asked = len(fakes["docker:/d.sock"].asked)
    assert service.request(r) is False  # negative cache
    clock.now += service.retry_first
    assert service.request(r) is True  # the delay passed
    assert service.wait_idle(5)
    clock.now += service.retry_first
    assert service.request(r) is False  # the second delay is twice the first
    clock.now += service.retry_first
    assert service.request(r) is True
    assert service.wait_idle(5)
    assert len(fakes["docker:/d.sock"].asked) == asked + 2
    fakes["docker:/d.sock"].known[r.full_id] = meta(r)
    clock.now += service.retry_max
    assert service.request(r)
    assert service.wait_idle(5)
    assert service.state(r.full_id) == FOUND
    assert [a.reason for a in service.take_completed()] == [NOT_FOUND, NOT_FOUND, FOUND]
    assert service.stats().negative_hits == 2


def test_the_cache_is_an_lru_bounded_in_size(fakes: Fakes, clock: Clock) -> None:
    svc = MetadataService(["docker:/d.sock"], client_factory=fakes, clock=clock, cache_size=3, rootless=False)
    try:
        refs = [ref(i) for i in range(5)]
        for r in refs:
            fakes["docker:/d.sock"].known[r.full_id] = meta(r)
        for r in refs[:3]:
            svc.request(r)
        assert svc.wait_idle(5)
        assert svc.get(refs[0].full_id) is not None  # recently used: kept
        for r in refs[3:]:
            svc.request(r)
        assert svc.wait_idle(5)
        assert [svc.get(r.full_id) is not None for r in refs] == [True, False, False, True, True]
        assert svc.stats().evicted == 2
    finally:
        svc.close(2)


def test_the_queue_is_bounded(fakes: Fakes, clock: Clock) -> None:
    svc = MetadataService(["docker:/d.sock"], client_factory=fakes, clock=clock, queue_size=2, rootless=False)
    gate = fakes["docker:/d.sock"].gate = threading.Event()
    try:
        assert svc.request(ref(1)) and svc.request(ref(2))
        assert svc.request(ref(3)) is False  # dropped: the next event of that container asks again
        assert svc.stats().dropped == 1
        gate.set()
        assert svc.wait_idle(5)
        assert svc.request(ref(3)) is True
    finally:
        gate.set()
        svc.close(2)


def test_completed_answers_are_bounded(fakes: Fakes, clock: Clock) -> None:
    svc = MetadataService(
        ["docker:/d.sock"], client_factory=fakes, clock=clock, completed_size=3, rootless=False
    )
    try:
        for i in range(5):
            svc.request(ref(i))
        assert svc.wait_idle(5)
        assert [a.full_id for a in svc.take_completed()] == [ref(i).full_id for i in (2, 3, 4)]
        assert svc.stats().completed_dropped == 2
    finally:
        svc.close(2)


def test_forget(service: MetadataService, fakes: Fakes) -> None:
    r = ref(7)
    fakes["docker:/d.sock"].known[r.full_id] = meta(r, name="old")
    service.request(r)
    assert service.wait_idle(5)
    fakes["docker:/d.sock"].known[r.full_id] = meta(r, name="renamed")
    service.forget(r.full_id)
    assert service.state(r.full_id) is None
    service.request(r)
    assert service.wait_idle(5)
    assert service.get(r.full_id) == meta(r, name="renamed")


# ---- routing ------------------------------------------------------------------------------------------


def test_a_runtimes_own_endpoint_is_asked_first(service: MetadataService, fakes: Fakes) -> None:
    r = ref(3, "podman")
    fakes["docker:/d.sock"].known[r.full_id] = meta(r, "docker:/d.sock")  # podman-docker: both know it
    fakes["podman:/p.sock"].known[r.full_id] = meta(r, "podman:/p.sock")
    service.request(r)
    assert service.wait_idle(5)
    got = service.get(r.full_id)
    assert got is not None and got.source == "podman:/p.sock"
    assert fakes["docker:/d.sock"].asked == []


def test_the_other_endpoints_are_asked_next(service: MetadataService, fakes: Fakes) -> None:
    r = ref(4, "containerd")  # a cgroupfs /kubepods/…/<id> may be cri-dockerd's docker container
    fakes["podman:/p.sock"].known[r.full_id] = meta(r, "podman:/p.sock")
    service.request(r)
    assert service.wait_idle(5)
    assert fakes["docker:/d.sock"].asked == [r.full_id] and fakes["podman:/p.sock"].asked == [r.full_id]
    assert service.state(r.full_id) == FOUND


def test_runtimes_without_an_api_are_not_asked(service: MetadataService, fakes: Fakes) -> None:
    lxc = ContainerRef("lxc", "web", "web")
    assert service.request(lxc) is False
    assert service.stats().unsupported == 1 and service.state("web") is None
    assert fakes["docker:/d.sock"].asked == []


def test_users_sockets_answer_only_for_rootless_containers(fakes: Fakes, clock: Clock) -> None:
    user = Endpoint("podman", "/run/user/1000/podman/podman.sock", uid=1000)
    svc = MetadataService(["docker:/d.sock", user], client_factory=fakes, clock=clock, rootless=False)
    try:
        root_ref, user_ref = ref(5, "podman"), ref(6, "podman", rootless=True)
        svc.request(root_ref)
        svc.request(user_ref)
        assert svc.wait_idle(5)
        assert fakes[f"podman:{user.path}"].asked == [user_ref.full_id]  # never asked about a root container
        assert fakes["docker:/d.sock"].asked == [
            root_ref.full_id,
            user_ref.full_id,
        ]  # the user's socket first
    finally:
        svc.close(2)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="gives sockets to another uid (chown)")


@needs_root
def test_rootless_sockets_are_discovered(fakes: Fakes, clock: Clock) -> None:
    with short_dir() as root:
        sock_dir = root / "run/user/1000/podman"
        sock_dir.mkdir(parents=True)
        path = sock_dir / "podman.sock"
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        os.chown(path, 1000, 1000)
        svc = MetadataService(["docker:/d.sock"], client_factory=fakes, clock=clock, rootless_root=str(root))
        try:
            svc.request(ref(8, "podman", rootless=True))
            assert svc.wait_idle(5)
            assert fakes[f"podman:{path}"].asked == [ref(8).full_id]
            assert Endpoint("podman", str(path), uid=1000) in svc.endpoints
        finally:
            svc.close(2)
            listener.close()


# ---- absent, hung and broken runtimes ------------------------------------------------------------------


def test_a_hung_endpoint_is_left_alone_for_a_while(
    service: MetadataService, fakes: Fakes, clock: Clock, log: Log
) -> None:
    docker = fakes["docker:/d.sock"]
    docker.raises = LookupTimeout("no answer before the deadline")
    for i in range(3):
        service.request(ref(10 + i))
    assert service.wait_idle(5)
    assert docker.asked == [ref(10).full_id]  # one timeout; the next lookups skip it
    stats = service.stats().sources["docker:/d.sock"]
    assert (stats.timeouts, stats.skipped, stats.state) == (1, 2, "down")
    warnings = [r for r in log.records if r[1] == "sentinel.container_runtime_unavailable"]
    assert len(warnings) == 1 and warnings[0][2]["source"] == "docker:/d.sock"
    # podman, asked next, answered each: "not found" (that endpoint could say; docker could not)
    assert len(fakes["podman:/p.sock"].asked) == 3
    assert [a.reason for a in service.take_completed()] == [NOT_FOUND] * 3
    clock.now += service.retry_first  # the delay passed: docker is asked again, and its delay doubles
    service.request(ref(13))
    assert service.wait_idle(5)
    assert len(docker.asked) == 2
    assert len([r for r in log.records if r[1] == "sentinel.container_runtime_unavailable"]) == 1


def test_failed_and_not_found_are_told_apart(fakes: Fakes, clock: Clock, log: Log) -> None:
    svc = MetadataService(["docker:/d.sock"], client_factory=fakes, clock=clock, rootless=False)
    try:
        fakes["docker:/d.sock"].raises = RuntimeUnavailable("cannot connect: Permission denied")
        svc.request(ref(20))
        assert svc.wait_idle(5)
        assert svc.take_completed() == [Answer(ref(20).full_id, None, FAILED)]
        assert svc.state(ref(20).full_id) == FAILED
        # It recovers: after its delay the endpoint is asked again, and the recovery is logged.
        fakes["docker:/d.sock"].raises = None
        fakes["docker:/d.sock"].known[ref(20).full_id] = meta(ref(20))
        clock.now += svc.retry_first
        assert svc.request(ref(20))
        assert svc.wait_idle(5)
        assert svc.state(ref(20).full_id) == FOUND
        events = [r[1] for r in log.records]
        assert events == ["sentinel.container_runtime_unavailable", "sentinel.container_runtime_recovered"]
    finally:
        svc.close(2)


def test_an_absent_socket_is_quiet(fakes: Fakes, clock: Clock, log: Log) -> None:
    svc = MetadataService(["docker:/d.sock"], client_factory=fakes, clock=clock, rootless=False)
    try:
        fakes["docker:/d.sock"].raises = SocketMissing("no socket at /d.sock")
        svc.request(ref(21))
        assert svc.wait_idle(5)
        assert svc.stats().sources["docker:/d.sock"].state == "missing"
        assert log.records == []
    finally:
        svc.close(2)


def test_a_refused_answer_moves_to_the_next_endpoint(
    service: MetadataService, fakes: Fakes, log: Log
) -> None:
    r = ref(22)
    fakes["docker:/d.sock"].raises = RefusedAnswer("response over 1048576 bytes")
    fakes["podman:/p.sock"].known[r.full_id] = meta(r, "podman:/p.sock")
    service.request(r)
    assert service.wait_idle(5)
    assert service.state(r.full_id) == FOUND
    stats = service.stats().sources["docker:/d.sock"]
    assert stats.refused == 1 and stats.state != "down"  # the container's answer, not the endpoint, was bad
    assert log.records[0][1] == "sentinel.container_metadata_refused"


def test_a_client_bug_never_kills_the_worker(service: MetadataService, fakes: Fakes, log: Log) -> None:
    fakes["docker:/d.sock"].raises = ZeroDivisionError("bug")
    service.request(ref(23))
    assert service.wait_idle(5)
    assert service.stats().sources["docker:/d.sock"].failures == 1
    fakes["docker:/d.sock"].raises = None
    fakes["docker:/d.sock"].known[ref(24).full_id] = meta(ref(24))
    service.request(ref(24))
    assert service.wait_idle(5)
    assert service.state(ref(24).full_id) == FOUND


def test_close_is_bounded_and_closes_clients(fakes: Fakes, clock: Clock) -> None:
    svc = MetadataService(["docker:/d.sock"], client_factory=fakes, clock=clock, rootless=False, timeout=0.2)
    gate = fakes["docker:/d.sock"].gate = threading.Event()
    svc.request(ref(30))
    time.sleep(0.05)
    start = time.monotonic()
    svc.close(0.3)
    assert time.monotonic() - start < 1.0
    assert fakes["docker:/d.sock"].closed
    assert svc.request(ref(31)) is False  # closed: nothing more is queued
    gate.set()


# ---- end to end with the fake daemon -----------------------------------------------------------------


def test_end_to_end_with_a_docker_daemon() -> None:
    with fake_docker() as daemon:
        daemon.routes[container_path()] = (200, docker_inspect())
        svc = MetadataService([f"docker:{daemon.path}"], rootless=False)
        try:
            r = ContainerRef("docker", CID, CID[:12])
            assert svc.request(r)
            assert svc.wait_idle(5)
            got = svc.get(CID)
            assert got is not None and got.name == "shop-web-1" and got.image_tag == "1.25"
            assert svc.take_completed()[0].reason == FOUND
        finally:
            svc.close(2)


def test_a_hung_daemon_does_not_stall_the_lookups(log: Log) -> None:
    """Ten containers of a hung daemon: one lookup waits for the deadline, the rest are answered at once."""
    with fake_docker() as daemon:
        daemon.routes[container_path()] = lambda h: daemon.stop.wait(10)
        svc = MetadataService([f"docker:{daemon.path}"], rootless=False, timeout=0.3)
        try:
            start = time.monotonic()
            refs = [ContainerRef("docker", CID, CID[:12]), *(ref(40 + i) for i in range(9))]
            for r in refs:
                assert svc.request(r)
            assert time.monotonic() - start < 0.1  # the caller never waited
            assert svc.wait_idle(5)
            assert time.monotonic() - start < 1.5
            assert [a.reason for a in svc.take_completed()] == [FAILED] * 10
            stats = svc.stats().sources[f"docker:{daemon.path}"]
            assert (stats.timeouts, stats.skipped) == (1, 9)
        finally:
            svc.close(2)


def test_unknown_to_the_daemon() -> None:
    with fake_docker() as daemon:
        svc = MetadataService([f"docker:{daemon.path}"], rootless=False)
        try:
            svc.request(ContainerRef("docker", CID2, CID2[:12]))
            assert svc.wait_idle(5)
            assert svc.state(CID2) == NOT_FOUND
        finally:
            svc.close(2)


# ---- endpoints -----------------------------------------------------------------------------------------


def test_parse_endpoints() -> None:
    assert parse_endpoint("docker:/var/run/docker.sock") == Endpoint("docker", "/var/run/docker.sock")
    assert parse_endpoint("podman:unix:///run/podman//podman.sock") == Endpoint(
        "podman", "/run/podman/podman.sock"
    )
    assert parse_endpoint(" cri-o:/var/run/crio/crio.sock ").kind == "cri-o"
    assert parse_endpoints(["docker:/a.sock", "docker:/a.sock", "containerd:/b.sock"]) == (
        Endpoint("docker", "/a.sock"),
        Endpoint("containerd", "/b.sock"),
    )
    assert len(parse_endpoints(DEFAULT_ENDPOINTS)) == len(DEFAULT_ENDPOINTS)


@pytest.mark.parametrize(
    "text",
    ["", "docker", "rkt:/x.sock", "docker:relative.sock", "docker:/" + "x" * 200, "docker:/a\0b", ":/x"],
)
def test_bad_endpoints(text: str) -> None:
    with pytest.raises(EndpointError):
        parse_endpoint(text)


@needs_root
def test_rootless_endpoints_belong_to_their_user() -> None:
    with short_dir() as root:
        made = []
        for uid in (1000, 1001):
            d = root / f"run/user/{uid}/podman"
            d.mkdir(parents=True)
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(d / "podman.sock"))
            made.append(s)
        os.chown(root / "run/user/1000/podman/podman.sock", 1000, 1000)  # 1001's is root's: not trusted
        (root / "run/user/1002").mkdir(parents=True)
        (root / "run/user/1002/docker.sock").write_text("")  # not a socket
        os.chown(root / "run/user/1002/docker.sock", 1002, 1002)
        try:
            found = rootless_endpoints(str(root))
            assert found == (Endpoint("podman", str(root / "run/user/1000/podman/podman.sock"), uid=1000),)
        finally:
            for s in made:
                s.close()


def test_default_service_has_the_usual_sockets() -> None:
    svc = MetadataService(start=False, rootless=False)
    kinds = [(e.kind, e.path) for e in svc.endpoints]
    assert ("docker", "/var/run/docker.sock") in kinds and (
        "containerd",
        "/run/containerd/containerd.sock",
    ) in kinds
    assert ("cri-o", "/var/run/crio/crio.sock") in kinds and ("podman", "/run/podman/podman.sock") in kinds
    svc.close(0)
