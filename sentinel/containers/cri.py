"""A CRI client (containerd, CRI-O, cri-dockerd) for one question: what is container ``<id>``, and its pod.

gRPC over the runtime's unix socket, service ``runtime.v1.RuntimeService``, with messages from
:mod:`.cri_messages`. Per container: ``ContainerStatus`` (verbose) for name, image, labels and the verbose
``info`` JSON; the pod sandbox's id from that JSON (``sandboxID``, both runtimes write it) or else from
``ListContainers``; then ``PodSandboxStatus`` for the pod's name, namespace, uid, labels and its namespace
options (NODE: the pod shares the host's network, PID or IPC namespace). All calls share one deadline; the
sandbox is a bonus: when it cannot be had, the container's own labels still name the pod. A process in a
sandbox's own cgroup (the pause container) is answered from ``PodSandboxStatus`` alone.

Privileged: the CRI status has no such field; the verbose info has it where each runtime puts it
(containerd: the container's CRI config, ``config.linux.security_context.privileged``; CRI-O: a top-level
``privileged``), else it is unknown (None).

Images: ``image.image`` is the reference (containerd and CRI-O write it normalised:
``docker.io/library/nginx:1.25``); when it is an image id, the user's reference or the runtimes' image-name
annotations stand in. ``image_ref`` is the repository digest (``<repository>@sha256:…``), or on older runtimes
the image id. Everything a runtime says is bounded like the Docker client's answers (:mod:`.metadata`).

Without grpcio and protobuf (the ``cri`` extra) every lookup raises
:class:`~sentinel.containers.metadata.RuntimeUnavailable` with the fix; nothing else breaks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from sentinel.containers.cri_messages import NAMESPACE_NODE, SERVICE, CriMessages, messages
from sentinel.containers.image_ref import ImageRef, image_id_hex, parse_image_ref
from sentinel.containers.metadata import (
    ContainerMeta,
    K8sPod,
    LookupTimeout,
    MetadataError,
    Mount,
    RefusedAnswer,
    RuntimeUnavailable,
    SocketMissing,
    bounded_labels,
    bounded_mounts,
    clean_path,
    clean_text,
    k8s_from_labels,
)

__all__ = ["MAX_MESSAGE", "CriClient", "cri_available", "meta_from_sandbox", "meta_from_status"]

MAX_MESSAGE = 4 << 20  # gRPC's own default; a verbose status carries the OCI spec (tens of KiB)
INFO_MAX = 1 << 20  # the verbose info JSON parsed at most this long
_IMAGE_NAME_ANNOTATIONS = (  # where runtimes keep the reference when image.image is an id
    "io.kubernetes.cri.image-name",  # containerd
    "io.kubernetes.cri-o.ImageName",  # CRI-O
    "io.kubernetes.cri-o.Image",
)


_grpc: Any = None
_problem: str | None = None  # None: not tried yet; "": grpc and protobuf are there


def _load_grpc() -> Any:
    """grpc, imported at the first CRI socket that exists (it costs ~50 ms; most hosts have no CRI)."""
    global _grpc, _problem
    if _problem is None:
        try:
            import google.protobuf  # noqa: F401
            import grpc
        except ImportError as exc:
            _problem = f"grpcio and protobuf are not installed ({exc.name}): pip install 'sentinel[cri]'"
        else:
            _grpc, _problem = grpc, ""
    return _grpc


def cri_available() -> str:
    """``""`` when CRI lookups can work here, else why not (the fix included)."""
    _load_grpc()
    return _problem or ""


def _info(info: Mapping[str, str]) -> Mapping[str, Any]:
    """The verbose ``info`` JSON (a map entry ``info``); empty when absent, oversized or malformed."""
    text = info.get("info", "")
    if not text or len(text) > INFO_MAX:
        return {}
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, Mapping) else {}


def _path(doc: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(key)
    return doc


def _privileged(info: Mapping[str, Any]) -> bool | None:
    for value in (
        _path(info, "config", "linux", "security_context", "privileged"),  # containerd
        _path(info, "runtimeSpec", "linux", "security_context", "privileged"),
        info.get("privileged"),  # CRI-O
    ):
        if isinstance(value, bool):
            return value
    return None


def _host_namespaces(options: object) -> dict[str, bool | None]:
    """The CRI config's ``namespace_options`` as JSON (containerd): Go omits zero values, so a missing mode
    in options that are there is POD (0), not unknown; options that are not there say nothing."""
    if not isinstance(options, Mapping):
        return {"network": None, "pid": None, "ipc": None}
    out: dict[str, bool | None] = {}
    for key in ("network", "pid", "ipc"):
        value = options.get(key, 0)
        out[key] = value == NAMESPACE_NODE if type(value) is int else None
    return out


def _image(status: Any, annotations: tuple[Mapping[str, Any], ...]) -> tuple[str, ImageRef | None]:
    """The reference a container runs (its text and its parse): ``image.image``, or when that is an id, the
    reference the user gave or a runtime's annotation."""
    candidates: list[object] = [status.image.image, status.image.user_specified_image]
    candidates += [notes.get(key) for notes in annotations for key in _IMAGE_NAME_ANNOTATIONS]
    for candidate in candidates:
        text = clean_text(candidate)
        ref = parse_image_ref(text)
        if ref is not None and ref.repository:
            return text, ref
    first = clean_text(status.image.image)
    return first, parse_image_ref(first)


def meta_from_status(response: Any, source: str, full_id: str, sandbox: Any | None = None) -> ContainerMeta:
    """A ``ContainerStatusResponse`` (and its pod's ``PodSandboxStatus``, if had) as ContainerMeta."""
    status = response.status
    info = _info(response.info)
    spec_notes = _path(info, "runtimeSpec", "annotations")
    notes = (spec_notes,) if isinstance(spec_notes, Mapping) else ()
    image, ref = _image(status, (*notes, status.annotations))
    repository = ref.repository if ref else ""
    image_ref = parse_image_ref(clean_text(status.image_ref))  # the digest of the image in use, any name
    digest = (image_ref.digest if image_ref else "") or (ref.digest if ref else "")
    image_id = (
        image_id_hex(clean_text(status.image_id))
        or (image_ref.id if image_ref else "")
        or (ref.id if ref else "")
        or image_id_hex(clean_text(status.image.image))
        or image_id_hex(clean_text(_path(info, "config", "image", "image")))
    )
    labels, truncated = bounded_labels(status.labels)
    mounts, mounts_truncated = _mounts(status)
    host = _host_namespaces(_path(info, "config", "linux", "security_context", "namespace_options"))
    sandbox_id = clean_text(info.get("sandboxID"))
    pod = k8s_from_labels(status.labels, sandbox_id)
    if sandbox is not None:
        pod = _pod_of(sandbox)
        host = _sandbox_namespaces(sandbox) or host
    return ContainerMeta(
        full_id=full_id,
        source=source,
        name=clean_text(status.metadata.name),
        image=image,
        image_repository=repository,
        image_tag=ref.tag if ref else "",
        image_digest=digest,
        image_id=image_id,
        labels=labels,
        labels_truncated=truncated,
        privileged=_privileged(info),
        host_network=host["network"],
        host_pid=host["pid"],
        host_ipc=host["ipc"],
        pod=pod,
        mounts=mounts,
        mounts_truncated=mounts_truncated,
    )


# CRI's MountPropagation, as the OCI spec (and Docker's inspect) names the same propagation.
_PROPAGATION = {0: "rprivate", 1: "rslave", 2: "rshared"}


def _mounts(status: Any) -> tuple[tuple[Mount, ...], bool]:
    """The status's mounts (kubelet's volumes: host path, container path, read-only, propagation)."""
    return bounded_mounts(
        Mount(
            source=clean_path(m.host_path),
            destination=clean_path(m.container_path),
            rw=not m.readonly,
            propagation=_PROPAGATION.get(m.propagation, ""),
        )
        for m in status.mounts
    )


def _pod_of(sandbox: Any) -> K8sPod:
    labels, _ = bounded_labels(sandbox.labels)
    meta = sandbox.metadata
    by_label = k8s_from_labels(sandbox.labels) or K8sPod()
    return K8sPod(
        name=clean_text(meta.name) or by_label.name,
        namespace=clean_text(meta.namespace) or by_label.namespace,
        uid=clean_text(meta.uid) or by_label.uid,
        sandbox_id=clean_text(sandbox.id),
        labels=labels,
    )


def _sandbox_namespaces(sandbox: Any) -> dict[str, bool | None] | None:
    """The pod's namespace modes (what Falco reads for host_network/pid/ipc); None when it has none."""
    if not sandbox.HasField("linux") or not sandbox.linux.HasField("namespaces"):
        return None
    ns = sandbox.linux.namespaces.options
    return {"network": ns.network == NAMESPACE_NODE, "pid": ns.pid == NAMESPACE_NODE,
            "ipc": ns.ipc == NAMESPACE_NODE}  # fmt: skip


def meta_from_sandbox(sandbox: Any, source: str, full_id: str) -> ContainerMeta:
    """A pod sandbox itself (its pause process) as :class:`ContainerMeta`: named after its pod."""
    pod = _pod_of(sandbox)
    host = _sandbox_namespaces(sandbox) or {}
    return ContainerMeta(
        full_id=full_id,
        source=source,
        name=pod.name,
        labels=pod.labels,
        host_network=host.get("network"),
        host_pid=host.get("pid"),
        host_ipc=host.get("ipc"),
        pod=pod,
    )


class CriClient:
    """One CRI socket. The gRPC channel is made at the first lookup and kept (it reconnects by itself)."""

    def __init__(self, socket_path: str, kind: str = "containerd", *, max_bytes: int = MAX_MESSAGE) -> None:
        self.socket_path = socket_path
        self.kind = kind
        self.source = f"{kind}:{socket_path}"
        self.max_bytes = max_bytes
        self._channel: Any = None
        self._grpc: Any = None
        self._calls: dict[str, Any] = {}

    def _call(self, method: str, request: Any, response_type: Any, deadline: float) -> Any | None:
        """One unary call; None when the runtime says NOT_FOUND."""
        call = self._calls.get(method)
        if call is None:
            call = self._calls[method] = self._channel.unary_unary(
                f"/{SERVICE}/{method}",
                request_serializer=lambda msg: msg.SerializeToString(),
                response_deserializer=response_type.FromString,
            )
        left = deadline - time.monotonic()
        if left <= 0:
            raise LookupTimeout("no answer before the deadline")
        grpc = self._grpc
        try:
            return call(request, timeout=left)
        except grpc.RpcError as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            if code == grpc.StatusCode.NOT_FOUND:
                return None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise LookupTimeout(f"{method}: no answer before the deadline") from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
                raise RuntimeUnavailable(f"{method}: {code.name}") from None
            name = code.name if code is not None else "unknown"
            raise RefusedAnswer(f"{method}: {name}") from None  # RESOURCE_EXHAUSTED: over max_bytes

    def _open(self) -> CriMessages:
        if not os.path.exists(self.socket_path):  # gRPC would say UNAVAILABLE; this says why, and quietly
            raise SocketMissing(f"no socket at {self.socket_path}")
        grpc = _load_grpc()
        if grpc is None:
            raise RuntimeUnavailable(_problem or "grpc is not available")
        self._grpc = grpc
        if self._channel is None:
            self._channel = grpc.insecure_channel(
                f"unix:{self.socket_path}",
                options=[
                    ("grpc.max_receive_message_length", self.max_bytes),
                    ("grpc.enable_retries", 0),
                    ("grpc.default_authority", "localhost"),
                ],
            )
        return messages()

    def inspect(self, full_id: str, timeout: float) -> ContainerMeta | None:
        deadline = time.monotonic() + timeout
        m = self._open()
        response = self._call(
            "ContainerStatus", m.ContainerStatusRequest(container_id=full_id, verbose=True),
            m.ContainerStatusResponse, deadline,
        )  # fmt: skip
        if response is None or not response.HasField("status"):
            sandbox = self._sandbox(m, full_id, deadline)  # a pause container: its id is the sandbox's
            return meta_from_sandbox(sandbox, self.source, full_id) if sandbox is not None else None
        if response.status.id and response.status.id != full_id:
            raise RefusedAnswer("the runtime answered for another container")
        sandbox_id = clean_text(_info(response.info).get("sandboxID"))
        sandbox = None
        try:
            if not sandbox_id:
                sandbox_id = self._sandbox_id(m, full_id, deadline)
            if sandbox_id:
                sandbox = self._sandbox(m, sandbox_id, deadline)
        except MetadataError:
            sandbox = None  # the container's answer stands; its labels still name the pod
        return meta_from_status(response, self.source, full_id, sandbox)

    def _sandbox(self, m: CriMessages, sandbox_id: str, deadline: float) -> Any | None:
        response = self._call(
            "PodSandboxStatus", m.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=False),
            m.PodSandboxStatusResponse, deadline,
        )  # fmt: skip
        if response is None or not response.HasField("status"):
            return None
        if response.status.id and response.status.id != sandbox_id:
            return None
        return response.status

    def _sandbox_id(self, m: CriMessages, full_id: str, deadline: float) -> str:
        request = m.ListContainersRequest()
        request.filter.id = full_id
        response = self._call("ListContainers", request, m.ListContainersResponse, deadline)
        for container in response.containers if response is not None else ():
            if container.id == full_id:
                return clean_text(container.pod_sandbox_id)
        return ""

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._calls.clear()
