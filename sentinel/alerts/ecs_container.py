"""The container of an ECS document, and of a Falco alert's output fields.

ECS: ``container.id`` is the runtime's whole id (ECS: "unique container id"; what ``docker inspect`` and the
CRI show), ``container.runtime`` the runtime (``docker``, ``containerd``, ``cri-o``, ``podman``, ``lxc``,
``libvirt-lxc``, ``systemd-nspawn``). ECS has no value meaning "the host": a process in no container has no
``container`` block at all, as Elastic's own agents write it. What ECS has no field for goes under
``sentinel.container``: ``short_id`` (Falco's ``container.id``, the 12 characters ``docker ps`` shows) and
``rootless`` (the container's cgroup sits below a user's systemd manager: that user named it).

Once the runtime answered (:mod:`sentinel.containers.meta_view`): ``container.name``, ``container.image.name``
(the repository), ``container.image.tag`` and ``container.image.hash.all`` (arrays in ECS),
``container.labels`` (an object; dots in keys become ``_``, as Elastic's agents write them, so that
``a.b`` and ``a.b.c`` cannot collide in a mapping), ``container.security_context.privileged``, and for a pod
``orchestrator.*`` (type ``kubernetes``, the namespace, the pod as the resource with its uid and labels).
The image reference as given, the image id, the host namespaces shared and which socket answered go under
``sentinel.container``. Before the answer, ``sentinel.container.metadata`` says ``pending``; when no runtime
can answer, ``unavailable``. A pod's uid is known from the cgroup path before any answer.

Falco: with its default ``append_output: suggested_output: true`` every alert's ``output_fields`` carry the
container plugin's suggested fields; sentinel's Falco alerts do too (:func:`falco_suggested_fields`), with
``host`` on the host and null where the runtime has not answered, as Falco has them.
"""

from __future__ import annotations

from typing import Any

from sentinel.containers.cgroup_path import HOST, ContainerRef
from sentinel.containers.meta_view import HOST_FIELDS, NO_FIELDS, FieldsLookup, MetaFields

_CACHE_MAX = 4096
Blocks = tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]
_blocks: dict[tuple[ContainerRef, MetaFields | None, str | None], Blocks] = {}


def container_blocks(ref: ContainerRef, fields: MetaFields | None = None, mark: str | None = None) -> Blocks:
    """``(container, sentinel.container, orchestrator or None)`` for a document: the cgroup's identity, the
    runtime's answer (``fields``) and what to say when there is none (``mark``). Built once per container and
    state, so a document written after the answer never keeps a pending mark (shared: never mutate)."""
    key = (ref, fields, mark)
    hit = _blocks.get(key)
    if hit is None:
        if len(_blocks) >= _CACHE_MAX:
            _blocks.clear()
        hit = _blocks[key] = _build(ref, fields, mark)
    return hit


def _build(ref: ContainerRef, fields: MetaFields | None, mark: str | None) -> Blocks:
    container: dict[str, Any] = {"id": ref.full_id, "runtime": ref.runtime}
    extra: dict[str, Any] = {"short_id": ref.id, "rootless": ref.rootless}
    if mark is not None:
        extra["metadata"] = mark
    meta = fields.meta if fields is not None else None
    pod_uid = ref.pod_uid
    orchestrator: dict[str, Any] | None = None
    if meta is not None:
        if meta.name:
            container["name"] = meta.name
        image: dict[str, Any] = {}
        if meta.image_repository:
            image["name"] = meta.image_repository
        if meta.image_tag:
            image["tag"] = [meta.image_tag]
        if meta.image_digest:
            image["hash"] = {"all": [meta.image_digest]}
        if image:
            container["image"] = image
        if meta.labels:
            container["labels"] = dedotted(meta.labels)
        if meta.privileged is not None:
            container["security_context"] = {"privileged": meta.privileged}
        extra.update(_sentinel_meta(meta))
        pod = meta.pod
        if pod is not None:
            resource: dict[str, Any] = {"type": "pod"}
            if pod.name:
                resource["name"] = pod.name
            if pod_uid or pod.uid:
                resource["id"] = pod_uid or pod.uid
            if pod.labels:
                resource["label"] = [f"{k}:{v}" for k, v in pod.labels]
            orchestrator = {"type": "kubernetes", "resource": resource}
            if pod.namespace:
                orchestrator["namespace"] = pod.namespace
    if orchestrator is None and pod_uid:  # kubelet's cgroup: a pod, before (or without) any answer
        orchestrator = {"type": "kubernetes", "resource": {"type": "pod", "id": pod_uid}}
    return container, extra, orchestrator


def _sentinel_meta(meta: Any) -> dict[str, Any]:
    """What the runtime said that ECS has no field for."""
    out: dict[str, Any] = {"source": meta.source}
    if meta.image:
        out["image"] = meta.image  # the reference as given (a tag, a digest, an image id)
    if meta.image_id:
        out["image_id"] = meta.image_id
    for name in ("host_network", "host_pid", "host_ipc"):
        value = getattr(meta, name)
        if value is not None:
            out[name] = value
    if meta.labels_truncated:
        out["labels_truncated"] = True
    return out


def dedotted(labels: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Labels as an ECS object: ``.`` in a key becomes ``_`` (Elastic's agents' "dedot"), so that keys like
    ``app`` and ``app.kubernetes.io/name`` cannot make a field both a value and an object; the first of two
    keys that become the same wins (labels come sorted)."""
    out: dict[str, str] = {}
    for key, value in labels:
        out.setdefault(key.replace(".", "_"), value)
    return out


def falco_suggested_fields(
    ref: ContainerRef | None, containers: FieldsLookup | None = None
) -> dict[str, Any]:
    """The container plugin's suggested output fields, as Falco's JSON ``output_fields`` carry them: the
    runtime's answer from ``containers`` (an alert's rule context), null until there is one."""
    if ref is None:
        fields = HOST_FIELDS
    else:
        fields = containers.get(ref.full_id, NO_FIELDS) if containers is not None else NO_FIELDS
    return {
        "container.id": ref.id if ref is not None else HOST,
        "container.name": fields.name,
        "container.image.repository": fields.image_repository,
        "container.image.tag": fields.image_tag,
        "k8s.pod.name": fields.pod_name,
        "k8s.ns.name": fields.pod_namespace,
    }
