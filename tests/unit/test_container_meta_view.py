"""MetadataView: the pipeline thread's view of runtime metadata. States change only at note() and poll(),
every change is handed to on_change in order, a replay applying those changes ends in the same state, and
the rule fields follow Falco's container plugin (its labels text, the host's values, missing when unknown).
A fake client answers through the real MetadataService."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from sentinel.containers.cgroup_path import ContainerRef
from sentinel.containers.identity import ContainerIdentity
from sentinel.containers.meta_view import (
    HOST_FIELDS,
    NO_FIELDS,
    NO_METADATA,
    MetaChange,
    MetadataView,
    falco_labels,
    fields_of,
)
from sentinel.containers.metadata import ContainerMeta, K8sPod, Mount
from sentinel.containers.metadata_service import MetadataService
from tests.unit.test_container_identity import FakeResolver
from tests.unit.test_container_metadata import Clock, Fakes, ref

POD = K8sPod("web-0", "shop", "2f1e8c9a-1b2c-4d3e-9f8a-0123456789ab", "ab" * 32, (("app", "web"),))


def answer(r: ContainerRef, **over: object) -> ContainerMeta:
    values: dict[str, object] = {
        "full_id": r.full_id, "source": "docker:/d.sock", "name": "shop-web-1", "image": "nginx:1.25",
        "image_repository": "nginx", "image_tag": "1.25", "image_digest": "sha256:" + "cd" * 32,
        "image_id": "ef" * 32, "privileged": False,
        "labels": (("com.docker.compose.service", "web"), ("io.kubernetes.pod.name", "web-0"), ("tier", "")),
    }  # fmt: skip
    values.update(over)
    return ContainerMeta(**values)  # type: ignore[arg-type]


class Setup:
    def __init__(self, clock: Clock) -> None:
        self.fakes = Fakes()
        self.service = MetadataService(
            ["docker:/d.sock"], client_factory=self.fakes, clock=clock, rootless=False, timeout=0.5
        )
        self.changes: list[MetaChange] = []
        self.view = MetadataView(self.service, on_change=self.changes.append)

    @property
    def docker(self):  # type: ignore[no-untyped-def]
        return self.fakes["docker:/d.sock"]

    def settle(self) -> int:
        assert self.service.wait_idle(5)
        return self.view.poll()


@pytest.fixture
def setup() -> Iterator[Setup]:
    s = Setup(Clock())
    yield s
    s.service.close(2)


def test_a_container_is_pending_until_poll_takes_the_answer(setup: Setup) -> None:
    r = ref(1)
    setup.docker.known[r.full_id] = answer(r)
    setup.view.note(r)
    assert setup.view.mark(r.full_id) == "pending" and r.full_id not in setup.view.fields
    assert setup.service.wait_idle(5)
    assert setup.view.mark(r.full_id) == "pending"  # answered, but not before the pipeline takes it
    assert setup.view.poll() == 1
    assert setup.view.mark(r.full_id) is None and setup.view.state(r.full_id) == "found"
    fields = setup.view.fields[r.full_id]
    assert (fields.name, fields.image_repository, fields.image_tag, fields.privileged) == (
        "shop-web-1", "nginx", "1.25", False,
    )  # fmt: skip
    assert [c.state for c in setup.changes] == ["pending", "found"]
    assert setup.changes[1].meta is fields.meta


def test_a_container_is_asked_once_however_often_it_is_noted(setup: Setup) -> None:
    r = ref(2)
    setup.docker.known[r.full_id] = answer(r)
    for _ in range(5):
        setup.view.note(r)
    setup.settle()
    for _ in range(5):
        setup.view.note(r)
    assert setup.docker.asked == [r.full_id]
    assert [c.state for c in setup.changes] == ["pending", "found"]


def test_runtimes_without_an_api_are_unavailable_at_once(setup: Setup) -> None:
    lxc = ContainerRef("lxc", "web01", "web01")
    setup.view.note(lxc)
    assert setup.view.mark("web01") == "unavailable" and setup.view.state("web01") == "unsupported"
    setup.view.note(lxc)
    assert setup.docker.asked == [] and len(setup.changes) == 1


def test_not_found_is_unavailable_and_asked_again_after_the_back_off(setup: Setup) -> None:
    r = ref(3)
    setup.view.note(r)
    setup.settle()
    assert setup.view.state(r.full_id) == "not_found" and setup.view.mark(r.full_id) == "unavailable"
    setup.view.note(r)  # backing off: nothing asked, nothing changes
    assert setup.docker.asked == [r.full_id] and len(setup.changes) == 2
    setup.docker.known[r.full_id] = answer(r)
    setup.service._clock.now += 6  # type: ignore[attr-defined]
    setup.view.note(r)
    assert setup.view.mark(r.full_id) == "pending"
    setup.settle()
    assert setup.view.state(r.full_id) == "found"
    assert [c.state for c in setup.changes] == ["pending", "not_found", "pending", "found"]


def test_an_answer_taken_by_note_is_not_applied_twice(setup: Setup) -> None:
    """The worker may answer between request() and state(): note() takes it; poll() hands it over again."""
    r = ref(4)
    setup.docker.known[r.full_id] = answer(r)
    gate = threading.Event()
    setup.docker.gate = gate
    setup.view.note(r)
    gate.set()
    assert setup.service.wait_idle(5)
    setup.view.note(r)  # pending in the view, found in the service: taken now
    assert setup.view.state(r.full_id) == "found"
    setup.view.poll()
    assert [c.state for c in setup.changes] == ["pending", "found"]


def test_the_view_is_bounded_the_same_way_live_and_in_replay(setup: Setup) -> None:
    view = MetadataView(setup.service, on_change=setup.changes.append, max_containers=3)
    refs = [ref(10 + i) for i in range(5)]
    for r in refs:
        setup.docker.known[r.full_id] = answer(r)
        view.note(r)
    assert setup.service.wait_idle(5)
    view.poll()
    assert len(view.fields) <= 3 and len(view._state) == 3
    replayed = MetadataView()
    replayed.max_containers = 3
    for change in setup.changes:
        replayed.apply(change)
    assert replayed._state == view._state
    assert {k: v.meta for k, v in replayed.fields.items()} == {k: v.meta for k, v in view.fields.items()}


def test_a_replay_of_the_changes_gives_the_same_fields_and_marks(setup: Setup) -> None:
    found, missing, lxc = ref(20), ref(21), ContainerRef("lxc", "box", "box")
    setup.docker.known[found.full_id] = answer(found, pod=POD)
    for r in (found, missing, lxc):
        setup.view.note(r)
    pending = {r.full_id: setup.view.mark(r.full_id) for r in (found, missing, lxc)}
    setup.settle()
    replayed = MetadataView()  # no service: asks nothing, ever
    replayed.note(found)
    assert replayed.state(found.full_id) is None
    for change in setup.changes:
        replayed.apply(change)
    for r in (found, missing, lxc):
        assert replayed.mark(r.full_id) == setup.view.mark(r.full_id)
    assert pending == {found.full_id: "pending", missing.full_id: "pending", lxc.full_id: "unavailable"}
    assert replayed.fields[found.full_id].meta == setup.view.fields[found.full_id].meta
    assert replayed.fields[found.full_id].pod_name == "web-0"


def test_the_identity_notes_each_answer_that_names_a_container(setup: Setup) -> None:
    """Not the host, and not per event: each lookup the process table makes."""
    a = "3ad7b26ded6d8e7b23da7d48fe889434573036c27ae5a74837233de441c3601e"
    resolver = FakeResolver({5: f"/system.slice/docker-{a}.scope", 6: "/user.slice"})
    noted: list[ContainerRef] = []
    ident = ContainerIdentity(resolver, v1=False, metadata=setup.view)
    setup.view.note = noted.append  # type: ignore[method-assign]
    ident.lookup(5, 100, None)
    ident.lookup(6, 101, None)
    assert noted == [ContainerRef("docker", a, a[:12])]
    info = ident.describe()
    assert info["metadata"] is True and info["endpoints"] == [{"endpoint": "docker:/d.sock", "socket": False}]


def test_counters_and_description(setup: Setup) -> None:
    r = ref(30)
    setup.docker.known[r.full_id] = answer(r)
    setup.view.note(r)
    setup.view.note(ref(31))
    setup.settle()
    counters = setup.view.counters()
    assert counters["known"] == 1 and counters["unavailable"] == 1 and counters["pending"] == 0
    assert counters["noted"] == 2 and counters["changes"] == 4 and counters["answers"] == 2
    service = counters["service"]
    assert service["found"] == 1 and service["sources"]["docker:/d.sock"]["lookups"] == 2
    assert MetadataView().describe() == {"metadata": "replay"}


# ---- the fields rules read ------------------------------------------------------------------------------


def test_fields_follow_falcos_container_plugin() -> None:
    r = ref(40)
    fields = fields_of(answer(r, pod=POD, privileged=None, host_network=True))
    assert fields.labels == "com.docker.compose.service:web, tier"  # kubelet's labels left out, as Falco does
    assert fields.label["io.kubernetes.pod.name"] == "web-0" and fields.label.get("nope") is None
    assert fields.privileged is None and fields.host_network is True  # unknown is not false
    assert (fields.pod_name, fields.pod_namespace, fields.pod_uid) == ("web-0", "shop", POD.uid)
    assert (fields.pod_sandbox_id, fields.pod_full_sandbox_id) == ("ab" * 6, "ab" * 32)
    assert fields.pod_labels == "app:web" and fields.pod_label == {"app": "web"}
    no_pod = fields_of(answer(r))
    assert (no_pod.pod_name, no_pod.pod_uid, no_pod.pod_labels, no_pod.pod_sandbox_id) == (None, None, "", "")


def test_the_host_and_the_unknown() -> None:
    assert (HOST_FIELDS.name, HOST_FIELDS.image_repository, HOST_FIELDS.privileged) == ("host", "", False)
    assert HOST_FIELDS.pod_name is None and HOST_FIELDS.pod_labels == ""
    assert all(getattr(NO_FIELDS, f) is None for f in ("name", "image", "image_tag", "privileged", "labels"))
    assert NO_METADATA.get("x", NO_FIELDS) is NO_FIELDS


def test_falco_labels_text() -> None:
    labels = (("a", "1"), ("annotation.x", "y"), ("b", ""), ("io.kubernetes.pod.uid", "u"))
    assert falco_labels(labels) == "a:1, b"
    assert falco_labels(()) == ""


def test_mount_fields_answer_as_falco() -> None:
    """By number or by a glob on the source (on the destination for the source itself); `none`/`N/A` for a
    mount the container does not have; missing while nothing is known."""
    meta = ContainerMeta(
        full_id="c" * 64, source="docker:/s",
        mounts=(Mount("/proc", "/host/proc", "", False, "rslave"),
                Mount("/var/run/docker.sock", "/d.sock", "z")),
    )  # fmt: skip
    f = fields_of(meta)
    assert f.mounts_text == "/proc:/host/proc::false:rslave,/var/run/docker.sock:/d.sock:z:true:"
    assert f.mount_value("/proc*", "destination") == "/host/proc"
    assert f.mount_value("/var/*", "destination") == "/d.sock"  # `*` crosses `/`
    assert f.mount_value("/host/proc", "source") == "/proc"
    assert f.mount_value("1", "text") == "/var/run/docker.sock:/d.sock:z:true:"
    assert f.mount_value("0", "rw") == "false" and f.mount_value("0", "propagation") == "rslave"
    assert f.mount_value("/etc", "destination") == "N/A" and f.mount_value("/etc", "text") == "none"
    assert f.mount_value("7", "mode") == "N/A"
    unknown = fields_of(ContainerMeta(full_id="c" * 64, source="cri:/s"))
    assert unknown.mounts_text is None and unknown.mount_value("/proc*", "destination") is None
    assert NO_FIELDS.mount_value("0", "text") is None and HOST_FIELDS.mount_value("/", "destination") is None
