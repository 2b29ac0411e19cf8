"""A rule fixture's container metadata: what the runtime said, read back from the ECS blocks ``sentinel
events`` prints (``container.name``, ``container.image``, ``container.labels``,
``container.security_context``, ``orchestrator.*`` and ``sentinel.container``), so a fixture can test rules
on ``container.image.repository``, ``container.privileged`` or ``k8s.ns.name``.

A document with only the container's id (or marked ``pending``/``unavailable``) has no metadata: the rule
fields are missing, as live before the answer. Label keys are taken as written (documents write them with
``.`` made ``_``; a fixture may give the runtime's own keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sentinel.containers.cgroup_path import ContainerRef
from sentinel.containers.meta_view import MetaFields, fields_of
from sentinel.containers.metadata import ContainerMeta, K8sPod, Mount
from sentinel.rules.fixture_values import FixtureError, as_map, as_str

__all__ = ["fixture_metadata"]


def fixture_metadata(
    doc: Mapping[str, Any], sent: Mapping[str, Any], ref: ContainerRef | None
) -> tuple[ContainerRef | None, dict[str, MetaFields]]:
    """The container with the pod uid ``orchestrator.resource.id`` gives, and the rule fields of its
    metadata by full id (empty: none in the document)."""
    if ref is None:
        return None, {}
    block = as_map(doc.get("container"), "container")
    extra = as_map(sent.get("container"), "sentinel.container")
    orchestrator = as_map(doc.get("orchestrator"), "orchestrator")
    resource = as_map(orchestrator.get("resource"), "orchestrator.resource")
    pod_uid = as_str(resource.get("id"), "orchestrator.resource.id")
    if pod_uid and not ref.pod_uid:
        ref = ContainerRef(ref.runtime, ref.full_id, ref.id, ref.rootless, pod_uid)
    answered = ("name", "image", "labels", "security_context")
    if (not any(k in block for k in answered) and not resource.get("name") and "source" not in extra
            and "mounts" not in extra):  # fmt: skip
        return ref, {}
    image = as_map(block.get("image"), "container.image")
    digests = as_map(image.get("hash"), "container.image.hash").get("all")
    repository = as_str(image.get("name"), "container.image.name")
    tag = _first(image.get("tag"), "container.image.tag")
    security = as_map(block.get("security_context"), "container.security_context")
    pod = None
    if resource.get("name") or orchestrator.get("namespace"):
        pod = K8sPod(
            name=as_str(resource.get("name"), "orchestrator.resource.name"),
            namespace=as_str(orchestrator.get("namespace"), "orchestrator.namespace"),
            uid=pod_uid,
            labels=_pod_labels(resource.get("label")),
        )
    meta = ContainerMeta(
        full_id=ref.full_id,
        source=as_str(extra.get("source"), "sentinel.container.source", "fixture"),
        name=as_str(block.get("name"), "container.name"),
        image=as_str(extra.get("image"), "sentinel.container.image")
        or (f"{repository}:{tag}" if repository and tag else repository),
        image_repository=repository,
        image_tag=tag,
        image_digest=_first(digests, "container.image.hash.all"),
        image_id=as_str(extra.get("image_id"), "sentinel.container.image_id"),
        labels=_labels(block.get("labels")),
        privileged=_flag(security.get("privileged"), "container.security_context.privileged"),
        host_network=_flag(extra.get("host_network"), "sentinel.container.host_network"),
        host_pid=_flag(extra.get("host_pid"), "sentinel.container.host_pid"),
        host_ipc=_flag(extra.get("host_ipc"), "sentinel.container.host_ipc"),
        pod=pod,
        mounts=_mounts(extra.get("mounts")),
    )
    return ref, {ref.full_id: fields_of(meta)}


_MOUNT_TEXT = ("source", "destination", "mode", "propagation")


def _mounts(value: Any) -> tuple[Mount, ...] | None:
    """``sentinel.container.mounts`` (a `container` event's): source, destination, mode, rw, propagation."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise FixtureError(f"sentinel.container.mounts must be a list, not {type(value).__name__}")
    out = []
    for i, entry in enumerate(value):
        m = as_map(entry, f"sentinel.container.mounts[{i}]")
        rw = m.get("rw", True)
        if not isinstance(rw, bool):
            raise FixtureError(f"sentinel.container.mounts[{i}].rw must be true or false")
        text = {k: as_str(m.get(k), f"sentinel.container.mounts[{i}].{k}") for k in _MOUNT_TEXT}
        out.append(Mount(text["source"], text["destination"], text["mode"], rw, text["propagation"]))
    return tuple(out)


def _first(value: Any, what: str) -> str:
    """ECS arrays (image tags, digests) of which sentinel writes one; a single value is taken too."""
    if isinstance(value, list):
        return as_str(value[0], what) if value else ""
    return as_str(value, what)


def _flag(value: Any, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise FixtureError(f"{what} must be true or false")


def _labels(value: Any) -> tuple[tuple[str, str], ...]:
    labels = as_map(value, "container.labels")
    return tuple(sorted((str(k), as_str(v, f"container.labels.{k}")) for k, v in labels.items()))


def _pod_labels(value: Any) -> tuple[tuple[str, str], ...]:
    """``["key:value", ...]``, as ECS's orchestrator.resource.label."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FixtureError("orchestrator.resource.label must be a list of key:value")
    pairs = (as_str(item, "orchestrator.resource.label").partition(":") for item in value)
    return tuple(sorted((k, v) for k, _, v in pairs))
