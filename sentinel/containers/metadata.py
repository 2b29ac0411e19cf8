"""What a container runtime says about a container: :class:`ContainerMeta`, and how its text is bounded.

Everything here came from a runtime's API, and most of it was written by whoever created the container
(names, labels, image names, a pod's labels): it is hostile data. Every string is cut to a bound and made
JSON-safe (a lone surrogate, which a JSON ``\\ud800`` escape produces and no UTF-8 writer takes, becomes
U+FFFD); control characters stay, JSON escapes them. Labels are bounded in number and size; when the runtime
had more, ``labels_truncated`` says so. A field the runtime did not give is ``""`` (text) or None (flags).

The clients (:mod:`.docker_api`, :mod:`.cri`) answer :class:`MetadataClient`'s question;
:class:`~sentinel.containers.metadata_service.MetadataService` asks them off the pipeline thread.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "LABELS_MAX",
    "LABEL_KEY_MAX",
    "LABEL_VALUE_MAX",
    "MOUNTS_MAX",
    "TEXT_MAX",
    "ContainerMeta",
    "K8sPod",
    "LookupTimeout",
    "MetadataClient",
    "MetadataError",
    "Mount",
    "RefusedAnswer",
    "RuntimeUnavailable",
    "SocketMissing",
    "bounded_labels",
    "bounded_mounts",
    "clean_path",
    "clean_text",
    "k8s_from_labels",
]

TEXT_MAX = 1024  # names, images, ids: real ones are far shorter (an image reference is at most ~500)
LABELS_MAX = 128  # per container and per pod; compose sets ~10, Kubernetes a handful
LABEL_KEY_MAX = 320  # a Kubernetes label key: 253-character prefix, "/", 63-character name
LABEL_VALUE_MAX = 1024  # longer values are dropped (a cut value would compare equal to nothing real)
MOUNTS_MAX = 512  # per container; a pod spec's volumes are tens. Past it the list is marked truncated
PATH_MAX = 4096  # a mount's source or destination (the kernel's PATH_MAX)

# kubelet writes these labels on every container it makes (CRI and cri-dockerd alike).
K8S_POD_NAME = "io.kubernetes.pod.name"
K8S_POD_NAMESPACE = "io.kubernetes.pod.namespace"
K8S_POD_UID = "io.kubernetes.pod.uid"
K8S_CONTAINER_NAME = "io.kubernetes.container.name"
K8S_SANDBOX_ID = "io.kubernetes.sandbox.id"

_SURROGATE = re.compile("[\ud800-\udfff]")

Labels = tuple[tuple[str, str], ...]


class MetadataError(Exception):
    """A lookup that gave no answer (not the same as "no such container", which is None)."""


class RuntimeUnavailable(MetadataError):
    """The runtime cannot be asked at all: no socket, connection refused, a client library missing."""


class SocketMissing(RuntimeUnavailable):
    """No socket at the endpoint's path: that runtime is not installed or not running (no warning)."""


class LookupTimeout(MetadataError):
    """The runtime did not answer within the request's deadline."""


class RefusedAnswer(MetadataError):
    """The runtime answered something we do not take: too large, malformed, an unexpected status."""


@dataclass(frozen=True, slots=True)
class K8sPod:
    """The pod a container belongs to, from the runtime's labels (no API server is asked)."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    sandbox_id: str = ""
    labels: Labels = ()


@dataclass(frozen=True, slots=True)
class Mount:
    """One mount the runtime made for the container: ``source`` on the host (a volume's directory for named
    volumes), ``destination`` inside; ``mode`` as the runtime wrote it (Docker's ``z``, ``ro``...; empty for
    CRI), ``rw`` writable, ``propagation`` (``rprivate``, ``rslave``, ``rshared``; empty when not said)."""

    source: str
    destination: str
    mode: str = ""
    rw: bool = True
    propagation: str = ""

    def falco_text(self) -> str:
        """``source:dest:mode:rdwr:propagation``, as Falco writes one mount (``container.mount``)."""
        rdwr = "true" if self.rw else "false"
        return f"{self.source}:{self.destination}:{self.mode}:{rdwr}:{self.propagation}"


@dataclass(frozen=True, slots=True)
class ContainerMeta:
    """One container as a runtime describes it. ``source`` names the endpoint that answered
    (``docker:/var/run/docker.sock``); ``image_id`` is the 64 hex digits without ``sha256:``."""

    full_id: str
    source: str
    name: str = ""
    image: str = ""
    image_repository: str = ""
    image_tag: str = ""
    image_digest: str = ""
    image_id: str = ""
    labels: Labels = ()
    labels_truncated: bool = False
    privileged: bool | None = None
    host_network: bool | None = None
    host_pid: bool | None = None
    host_ipc: bool | None = None
    pod: K8sPod | None = None
    mounts: tuple[Mount, ...] | None = None  # None: the runtime did not say (not: no mounts)
    mounts_truncated: bool = False

    def label(self, key: str) -> str | None:
        """One label's value (None: not set, or dropped as too large)."""
        for k, v in self.labels:
            if k == key:
                return v
        return None

    def falco_fields(self) -> dict[str, Any]:
        """The container plugin's fields this answer fills, by Falco's names (``container.labels`` and
        ``k8s.pod.labels`` as Falco writes them: ``k1:v1,k2:v2``)."""
        pod = self.pod
        return {
            "container.name": self.name,
            "container.image": self.image,
            "container.image.repository": self.image_repository,
            "container.image.tag": self.image_tag,
            "container.image.digest": self.image_digest,
            "container.image.id": self.image_id,
            "container.privileged": self.privileged,
            "container.host_network": self.host_network,
            "container.host_pid": self.host_pid,
            "container.host_ipc": self.host_ipc,
            "container.labels": ",".join(f"{k}:{v}" for k, v in self.labels),
            "k8s.pod.name": pod.name if pod else None,
            "k8s.ns.name": pod.namespace if pod else None,
            "k8s.pod.uid": pod.uid if pod else None,
            "k8s.pod.sandbox_id": pod.sandbox_id[:12] if pod else None,
            "k8s.pod.full_sandbox_id": pod.sandbox_id if pod else None,
            "k8s.pod.labels": ",".join(f"{k}:{v}" for k, v in pod.labels) if pod else None,
        }


class MetadataClient(Protocol):
    """One runtime endpoint. ``inspect`` returns None when the runtime does not know the container and
    raises :class:`MetadataError` when it could not say; it must return within ``timeout`` seconds."""

    source: str  # "<kind>:<socket path>", for stats and ContainerMeta.source
    kind: str  # docker, podman, containerd, cri-o

    def inspect(self, full_id: str, timeout: float) -> ContainerMeta | None: ...

    def close(self) -> None: ...


def clean_text(value: object, limit: int = TEXT_MAX) -> str:
    """``value`` as bounded, JSON-safe text; ``""`` when it is not a string (a runtime's wrong type)."""
    if not isinstance(value, str):
        return ""
    if len(value) > limit:
        value = value[:limit]
    if not value.isascii() and _SURROGATE.search(value):
        value = _SURROGATE.sub("\ufffd", value)
    return value


def bounded_mounts(mounts: Iterable[Mount]) -> tuple[tuple[Mount, ...], bool]:
    """At most :data:`MOUNTS_MAX` mounts, in the runtime's order; True when more were given."""
    kept: list[Mount] = []
    for mount in mounts:
        if len(kept) == MOUNTS_MAX:
            return tuple(kept), True
        kept.append(mount)
    return tuple(kept), False


def clean_path(value: object) -> str:
    """A mount path from a runtime: text or empty, bounded like every runtime string."""
    return clean_text(value, PATH_MAX)


def bounded_labels(raw: object) -> tuple[Labels, bool]:
    """Labels from a runtime's mapping: sorted by key, at most :data:`LABELS_MAX`, oversized or non-string
    entries dropped. The flag is True when anything was dropped."""
    if not isinstance(raw, Mapping):
        return (), raw is not None  # a wrong type: whatever it held is not kept
    items: Iterable[tuple[object, object]] = raw.items()
    kept: list[tuple[str, str]] = []
    dropped = False
    for key, value in items:
        if (
            not isinstance(key, str)
            or not isinstance(value, str)
            or not key
            or len(key) > LABEL_KEY_MAX
            or len(value) > LABEL_VALUE_MAX
        ):
            dropped = True
            continue
        kept.append((clean_text(key, LABEL_KEY_MAX), clean_text(value, LABEL_VALUE_MAX)))
    kept.sort()
    if len(kept) > LABELS_MAX:
        del kept[LABELS_MAX:]
        dropped = True
    return tuple(kept), dropped


def k8s_from_labels(raw: object, sandbox_id: str = "", pod_labels: Labels = ()) -> K8sPod | None:
    """The pod named by kubelet's labels on a container, or None when they name no pod."""
    if not isinstance(raw, Mapping):
        return None
    name = clean_text(raw.get(K8S_POD_NAME))
    namespace = clean_text(raw.get(K8S_POD_NAMESPACE))
    uid = clean_text(raw.get(K8S_POD_UID))
    if not (name or namespace or uid):
        return None
    return K8sPod(
        name=name,
        namespace=namespace,
        uid=uid,
        sandbox_id=sandbox_id or clean_text(raw.get(K8S_SANDBOX_ID)),
        labels=pod_labels,
    )
