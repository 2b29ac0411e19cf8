"""The CRI client against a fake runtime (grpc.server on a unix socket): containerd and CRI-O shapes, the pod
sandbox, a pause container, and a runtime that is hung, huge, malformed or lying.

The ``*_RESPONSE`` bytes below were encoded by classes that protoc generated from k8s.io/cri-api's
``pkg/apis/runtime/v1/api.proto`` (every field set, those sentinel does not describe included: mounts,
resources, user, network, the sandbox's container statuses), so the hand-built subset is checked against the
real schema. The verbose ``info`` they carry is containerd's shape.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import pytest

# scripts/setup.sh installs the `cri` extra, so CI always runs these; elsewhere they need it.
if os.environ.get("CI"):
    import google.protobuf  # noqa: F401
    import grpc
else:
    grpc = pytest.importorskip("grpc")
    pytest.importorskip("google.protobuf")

from sentinel.containers import cri
from sentinel.containers.cri import CriClient, meta_from_status
from sentinel.containers.cri_messages import SERVICE, messages
from sentinel.containers.metadata import (
    LABELS_MAX,
    LookupTimeout,
    Mount,
    RefusedAnswer,
    RuntimeUnavailable,
    SocketMissing,
)
from tests.unit.container_meta_support import short_dir

CID = "a" * 64
SID = "b" * 64
POD_UID = "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"

CONTAINER_STATUS_RESPONSE = bytes.fromhex(
    "0ade040a4061616161616161616161616161616161616161616161616161616161616161616161616161616161616161"
    "61616161616161616161616161616161616161616112070a0377656210011801208080a8b1e39fe7cb172880c2ffe0e3"
    "9fe7cb1742330a1c646f636b65722e696f2f6c6962726172792f6e67696e783a312e323512060a017812017992010a6e"
    "67696e783a312e32354a5f646f636b65722e696f2f6c6962726172792f6e67696e78407368613235363a646464646464"
    "646464646464646464646464646464646464646464646464646464646464646464646464646464646464646464646464"
    "6464646464646464646462230a1b696f2e6b756265726e657465732e706f642e6e616d657370616365120473686f7062"
    "3d0a15696f2e6b756265726e657465732e706f642e756964122430663165326433632d346235612d363937382d383639"
    "352d61346233633264316530663962230a1c696f2e6b756265726e657465732e636f6e7461696e65722e6e616d651203"
    "77656262220a16696f2e6b756265726e657465732e706f642e6e616d6512087765622d376439666a240a1c696f2e6b75"
    "6265726e657465732e636f6e7461696e65722e6861736812043132333472140a052f6461746112092f7372762f646174"
    "6118017a192f7661722f6c6f672f706f64732f782f7765622f312e6c6f6782010b0a091880042080808080018a014773"
    "68613235363a636363636363636363636363636363636363636363636363636363636363636363636363636363636363"
    "636363636363636363636363636363636363636363639201080a0608e80710e80712bd030a04696e666f12b4037b2273"
    "616e64626f784944223a2022626262626262626262626262626262626262626262626262626262626262626262626262"
    "62626262626262626262626262626262626262626262626262626262222c2022706964223a20343234322c2022636f6e"
    "666967223a207b226d65746164617461223a207b226e616d65223a2022776562227d2c2022696d616765223a207b2269"
    "6d616765223a20227368613235363a636363636363636363636363636363636363636363636363636363636363636363"
    "63636363636363636363636363636363636363636363636363636363636363227d2c20226c696e7578223a207b227365"
    "6375726974795f636f6e74657874223a207b2270726976696c65676564223a20747275652c20226e616d657370616365"
    "5f6f7074696f6e73223a207b226e6574776f726b223a20322c2022706964223a20327d7d7d7d2c202272756e74696d65"
    "53706563223a207b226f636956657273696f6e223a2022312e302e32222c2022616e6e6f746174696f6e73223a207b22"
    "696f2e6b756265726e657465732e6372692e636f6e7461696e65722d74797065223a2022636f6e7461696e6572227d7d"
    "7d"
)
POD_SANDBOX_STATUS_RESPONSE = bytes.fromhex(
    "0a81020a4062626262626262626262626262626262626262626262626262626262626262626262626262626262626262"
    "62626262626262626262626262626262626262626212360a087765622d37643966122430663165326433632d34623561"
    "2d363937382d383639352d6134623363326431653066391a0473686f70208080a8b1e39fe7cb172a0a0a0831302e312e"
    "322e3332080a061204080210013a0a0a0361707012037765623a220a16696f2e6b756265726e657465732e706f642e6e"
    "616d6512087765622d376439663a0d0a0474696572120566726f6e7442200a196b756265726e657465732e696f2f636f"
    "6e6669672e7365656e12036e6f774a0472756e63120a0a04696e666f12027b7d1ade040a406161616161616161616161"
    "616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161616161"
    "616161616112070a0377656210011801208080a8b1e39fe7cb172880c2ffe0e39fe7cb1742330a1c646f636b65722e69"
    "6f2f6c6962726172792f6e67696e783a312e323512060a017812017992010a6e67696e783a312e32354a5f646f636b65"
    "722e696f2f6c6962726172792f6e67696e78407368613235363a64646464646464646464646464646464646464646464"
    "64646464646464646464646464646464646464646464646464646464646464646464646464646464646462230a1b696f"
    "2e6b756265726e657465732e706f642e6e616d657370616365120473686f70623d0a15696f2e6b756265726e65746573"
    "2e706f642e756964122430663165326433632d346235612d363937382d383639352d6134623363326431653066396223"
    "0a1c696f2e6b756265726e657465732e636f6e7461696e65722e6e616d65120377656262220a16696f2e6b756265726e"
    "657465732e706f642e6e616d6512087765622d376439666a240a1c696f2e6b756265726e657465732e636f6e7461696e"
    "65722e6861736812043132333472140a052f6461746112092f7372762f6461746118017a192f7661722f6c6f672f706f"
    "64732f782f7765622f312e6c6f6782010b0a091880042080808080018a01477368613235363a63636363636363636363"
    "636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363"
    "6363636363639201080a0608e80710e8072005"
)
LIST_CONTAINERS_RESPONSE = bytes.fromhex(
    "0ae1010a4061616161616161616161616161616161616161616161616161616161616161616161616161616161616161"
    "616161616161616161616161616161616161616161124062626262626262626262626262626262626262626262626262"
    "6262626262626262626262626262626262626262626262626262626262626262626262626262621a050a037765622a01"
    "78300142060a016b12017652477368613235363a63636363636363636363636363636363636363636363636363636363"
    "636363636363636363636363636363636363636363636363636363636363636363636363"
)


Answer = Any  # a message, raw bytes, or a callable(request, context) giving either


class FakeCri:
    """ContainerStatus, PodSandboxStatus and ListContainers from dicts keyed by id; NOT_FOUND otherwise."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.containers: dict[str, Answer] = {}
        self.sandboxes: dict[str, Answer] = {}
        self.listed: dict[str, Answer] = {}
        self.calls: list[tuple[str, str]] = []
        self.stop = threading.Event()
        m = messages()

        def rpc(name: str, table: dict[str, Answer], request_type: Any, key: Callable[[Any], str]) -> Any:
            def behaviour(request: Any, context: Any) -> Any:
                ident = key(request)
                self.calls.append((name, ident))
                answer = table.get(ident)
                if answer is None:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"{ident} not found")
                return answer(request, context) if callable(answer) else answer

            return grpc.unary_unary_rpc_method_handler(
                behaviour,
                request_deserializer=request_type.FromString,
                response_serializer=lambda msg: msg if isinstance(msg, bytes) else msg.SerializeToString(),
            )

        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ContainerStatus": rpc("ContainerStatus", self.containers, m.ContainerStatusRequest,
                                       lambda r: r.container_id),
                "PodSandboxStatus": rpc("PodSandboxStatus", self.sandboxes, m.PodSandboxStatusRequest,
                                        lambda r: r.pod_sandbox_id),
                "ListContainers": rpc("ListContainers", self.listed, m.ListContainersRequest,
                                      lambda r: r.filter.id),
            },
        )  # fmt: skip
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_insecure_port(f"unix:{path}")
        self.server.start()

    def close(self) -> None:
        self.stop.set()
        self.server.stop(grace=0).wait(5)


@pytest.fixture
def runtime() -> Iterator[FakeCri]:
    with short_dir() as d:
        fake = FakeCri(str(d / "containerd.sock"))
        try:
            yield fake
        finally:
            fake.close()


def _status(full_id: str = CID, info: dict[str, Any] | str | None = None, **fields: Any) -> Any:
    m = messages()
    response = m.ContainerStatusResponse()
    response.status.id = full_id
    labels = fields.pop("labels", {})
    name = fields.pop("name", "api")
    image = fields.pop("image", "")
    for key, value in fields.items():
        setattr(response.status, key, value)
    response.status.metadata.name = name
    response.status.image.image = image
    response.status.labels.update(labels)
    if info is not None:
        response.info["info"] = info if isinstance(info, str) else json.dumps(info)
    return response


def _sandbox(
    sandbox_id: str = SID, *, network: int = 0, pid: int = 0, labels: dict[str, str] | None = None
) -> Any:
    m = messages()
    response = m.PodSandboxStatusResponse()
    status = response.status
    status.id = sandbox_id
    status.metadata.name, status.metadata.namespace, status.metadata.uid = "api-5c8d", "prod", POD_UID
    status.linux.namespaces.options.network = network
    status.linux.namespaces.options.pid = pid
    status.labels.update(labels or {"app": "api"})
    return response


# ---- the real schema ---------------------------------------------------------------------------------


def test_upstream_encoded_messages_parse() -> None:
    m = messages()
    status = m.ContainerStatusResponse.FromString(CONTAINER_STATUS_RESPONSE)
    assert status.status.id == CID and status.status.metadata.name == "web"
    assert status.status.image.user_specified_image == "nginx:1.25"
    sandbox = m.PodSandboxStatusResponse.FromString(POD_SANDBOX_STATUS_RESPONSE)
    assert sandbox.status.linux.namespaces.options.network == 2
    listed = m.ListContainersResponse.FromString(LIST_CONTAINERS_RESPONSE)
    assert listed.containers[0].pod_sandbox_id == SID


def test_upstream_mounts_are_read() -> None:
    """The status's mounts (kubelet's volumes): host path, container path, read-only, propagation."""
    status = messages().ContainerStatusResponse.FromString(CONTAINER_STATUS_RESPONSE)
    meta = meta_from_status(status, "containerd:/run/containerd/containerd.sock", CID)
    assert meta.mounts == (Mount("/srv/data", "/data", "", False, "rprivate"),)
    assert not meta.mounts_truncated


def test_requests_encode_as_upstream() -> None:
    m = messages()
    assert m.ContainerStatusRequest(container_id=CID, verbose=True).SerializeToString() == (
        b"\n@" + CID.encode() + b"\x10\x01"
    )
    request = m.ListContainersRequest()
    request.filter.id = CID
    assert request.SerializeToString() == b"\nB\n@" + CID.encode()


def test_containerd_container_and_its_pod(runtime: FakeCri) -> None:
    runtime.containers[CID] = CONTAINER_STATUS_RESPONSE
    runtime.sandboxes[SID] = POD_SANDBOX_STATUS_RESPONSE
    meta = CriClient(runtime.path).inspect(CID, 2.0)
    assert meta is not None
    assert meta.source == f"containerd:{runtime.path}"
    assert meta.name == "web"
    assert meta.image == "docker.io/library/nginx:1.25"
    assert (meta.image_repository, meta.image_tag) == ("docker.io/library/nginx", "1.25")
    assert meta.image_digest == "sha256:" + "d" * 64
    assert meta.image_id == "c" * 64
    assert meta.privileged is True  # containerd's verbose info: config.linux.security_context.privileged
    assert (meta.host_network, meta.host_pid, meta.host_ipc) == (True, False, False)  # the sandbox's options
    assert meta.label("io.kubernetes.container.name") == "web"
    pod = meta.pod
    assert pod is not None
    assert (pod.name, pod.namespace, pod.uid, pod.sandbox_id) == ("web-7d9f", "shop", POD_UID, SID)
    assert dict(pod.labels) == {"app": "web", "tier": "front", "io.kubernetes.pod.name": "web-7d9f"}
    assert [c[0] for c in runtime.calls] == ["ContainerStatus", "PodSandboxStatus"]  # sandboxID from the info


def test_crio_shape(runtime: FakeCri) -> None:
    """CRI-O: ``privileged`` at the top of the info; an image id in image.image, the name in an annotation."""
    info = {
        "sandboxID": SID,
        "pid": 99,
        "privileged": False,
        "runtimeSpec": {"annotations": {"io.kubernetes.cri-o.ImageName": "quay.io/team/api:v3"}},
    }
    runtime.containers[CID] = _status(
        info=info,
        image="sha256:" + "e" * 64,
        image_ref="quay.io/team/api@sha256:" + "f" * 64,
        labels={"io.kubernetes.pod.name": "api-5c8d", "io.kubernetes.pod.namespace": "prod"},
    )
    runtime.sandboxes[SID] = _sandbox(pid=2)
    meta = CriClient(runtime.path, "cri-o").inspect(CID, 2.0)
    assert meta is not None
    assert meta.image == "quay.io/team/api:v3"
    assert (meta.image_repository, meta.image_tag) == ("quay.io/team/api", "v3")
    assert meta.image_digest == "sha256:" + "f" * 64 and meta.image_id == "e" * 64
    assert meta.privileged is False
    assert (meta.host_network, meta.host_pid) == (False, True)
    assert meta.pod is not None and meta.pod.labels == (("app", "api"),)


def test_sandbox_id_from_list_containers(runtime: FakeCri) -> None:
    m = messages()
    runtime.containers[CID] = _status(image="nginx")  # not verbose: no info at all
    listed = m.ListContainersResponse()
    listed.containers.add(id=CID, pod_sandbox_id=SID)
    runtime.listed[CID] = listed
    runtime.sandboxes[SID] = _sandbox()
    meta = CriClient(runtime.path).inspect(CID, 2.0)
    assert meta is not None and meta.pod is not None and meta.pod.sandbox_id == SID
    assert meta.privileged is None  # nothing says
    assert [c[0] for c in runtime.calls] == ["ContainerStatus", "ListContainers", "PodSandboxStatus"]


def test_without_the_sandbox_the_labels_name_the_pod(runtime: FakeCri) -> None:
    info = {"sandboxID": SID, "config": {"linux": {"security_context": {"namespace_options": {"pid": 2}}}}}
    labels = {
        "io.kubernetes.pod.name": "p",
        "io.kubernetes.pod.namespace": "ns",
        "io.kubernetes.pod.uid": "u",
    }
    runtime.containers[CID] = _status(info=info, labels=labels)
    runtime.sandboxes[SID] = lambda request, context: context.abort(grpc.StatusCode.INTERNAL, "boom")
    meta = CriClient(runtime.path).inspect(CID, 2.0)
    assert meta is not None and meta.pod is not None
    assert (meta.pod.name, meta.pod.namespace, meta.pod.uid, meta.pod.sandbox_id) == ("p", "ns", "u", SID)
    assert (meta.host_network, meta.host_pid) == (False, True)  # from the container's CRI config


def test_a_pause_container_is_its_sandbox(runtime: FakeCri) -> None:
    runtime.sandboxes[SID] = _sandbox(network=2)
    meta = CriClient(runtime.path).inspect(SID, 2.0)
    assert meta is not None and meta.name == "api-5c8d" and meta.host_network is True
    assert meta.pod is not None and meta.pod.sandbox_id == SID


def test_unknown_container(runtime: FakeCri) -> None:
    assert CriClient(runtime.path).inspect(CID, 2.0) is None


def test_an_answer_for_another_container_is_refused(runtime: FakeCri) -> None:
    runtime.containers[CID] = _status(full_id="9" * 64)
    with pytest.raises(RefusedAnswer, match="another container"):
        CriClient(runtime.path).inspect(CID, 2.0)


# ---- hostile and hung runtimes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "info",
    [
        "{not json",
        "[1, 2]",
        "[" * 50_000 + "]" * 50_000,
        json.dumps({"privileged": "yes", "sandboxID": 5, "config": {"linux": []}}),
        json.dumps({"pad": "x" * (cri.INFO_MAX + 10)}),
    ],
)
def test_hostile_verbose_info_is_ignored(runtime: FakeCri, info: str) -> None:
    runtime.containers[CID] = _status(info=info, image="nginx:1")
    meta = CriClient(runtime.path).inspect(CID, 2.0)
    assert meta is not None and meta.privileged is None and meta.image_tag == "1"


def test_ten_thousand_labels(runtime: FakeCri) -> None:
    labels = {f"k{i:05d}": "v\x00\n\u202e" for i in range(10_000)}
    runtime.containers[CID] = _status(labels=labels)
    meta = CriClient(runtime.path).inspect(CID, 2.0)
    assert meta is not None and len(meta.labels) == LABELS_MAX and meta.labels_truncated
    assert meta.labels[0] == ("k00000", "v\x00\n\u202e")


def test_too_large_is_refused(runtime: FakeCri) -> None:
    runtime.containers[CID] = _status(labels={"pad": "x" * 300_000})
    with pytest.raises(RefusedAnswer, match="RESOURCE_EXHAUSTED"):
        CriClient(runtime.path, max_bytes=100_000).inspect(CID, 2.0)


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xff\xff\xff",  # not protobuf
        b"\n\x08\x62\x06\n\x01k\x12\x01\xff",  # a label value that is not UTF-8
    ],
)
def test_malformed_protobuf_is_refused(runtime: FakeCri, raw: bytes) -> None:
    runtime.containers[CID] = raw
    with pytest.raises(RefusedAnswer):
        CriClient(runtime.path).inspect(CID, 2.0)


def test_hung_runtime_times_out(runtime: FakeCri) -> None:
    runtime.containers[CID] = lambda request, context: runtime.stop.wait(10) and _status()
    start = time.monotonic()
    with pytest.raises(LookupTimeout):
        CriClient(runtime.path).inspect(CID, 0.3)
    assert time.monotonic() - start < 1.5


def test_unimplemented_service_is_unavailable() -> None:
    with short_dir() as d:
        path = str(d / "empty.sock")
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        server.add_insecure_port(f"unix:{path}")
        server.start()
        try:
            with pytest.raises(RuntimeUnavailable, match="UNIMPLEMENTED"):
                CriClient(path).inspect(CID, 2.0)
        finally:
            server.stop(0).wait(5)


def test_absent_socket() -> None:
    with short_dir() as d, pytest.raises(SocketMissing):
        CriClient(str(d / "none.sock")).inspect(CID, 1.0)


def test_without_grpc_the_lookup_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cri, "_grpc", None)
    monkeypatch.setattr(cri, "_problem", "grpcio and protobuf are not installed (grpc): pip install x")
    with short_dir() as d:
        (d / "containerd.sock").write_text("")
        with pytest.raises(RuntimeUnavailable, match="not installed"):
            CriClient(str(d / "containerd.sock")).inspect(CID, 1.0)


def test_meta_from_status_without_anything() -> None:
    meta = meta_from_status(messages().ContainerStatusResponse(), "containerd:/x", CID)
    assert meta.name == "" and meta.image_repository == "" and meta.pod is None and meta.privileged is None


def test_a_sandbox_without_linux_status_says_nothing_of_namespaces(runtime: FakeCri) -> None:
    sandbox = _sandbox()
    sandbox.status.ClearField("linux")
    runtime.sandboxes[SID] = sandbox
    meta = CriClient(runtime.path).inspect(SID, 2.0)
    assert meta is not None and (meta.host_network, meta.host_pid, meta.host_ipc) == (None, None, None)


def test_the_module_loads_without_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh copy of the module, imported while grpc cannot be: it loads and says what is missing."""
    monkeypatch.setitem(sys.modules, "grpc", None)
    spec = importlib.util.spec_from_file_location("sentinel_cri_without_grpc", cri.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "pip install 'sentinel[cri]'" in module.cri_available()
    with short_dir() as d:
        (d / "crio.sock").write_text("")
        with pytest.raises(RuntimeUnavailable, match=r"sentinel\[cri\]"):
            module.CriClient(str(d / "crio.sock"), "cri-o").inspect(CID, 1.0)
    assert cri.cri_available() == ""
