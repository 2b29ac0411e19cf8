"""The container of an ECS document, and of a Falco alert's output fields.

ECS: ``container.id`` is the runtime's whole id (ECS: "unique container id"; what ``docker inspect`` and the
CRI show), ``container.runtime`` the runtime (``docker``, ``containerd``, ``cri-o``, ``podman``, ``lxc``,
``libvirt-lxc``, ``systemd-nspawn``). ECS has no value meaning "the host": a process in no container has no
``container`` block at all, as Elastic's own agents write it. What ECS has no field for goes under
``sentinel.container``: ``short_id`` (Falco's ``container.id``, the 12 characters ``docker ps`` shows) and
``rootless`` (the container's cgroup sits below a user's systemd manager: that user named it).

Falco: with its default ``append_output: suggested_output: true`` every alert's ``output_fields`` carry the
container plugin's suggested fields; sentinel's Falco alerts do too (:func:`falco_suggested_fields`), with
``host`` on the host. Name, image and pod come from the runtimes' APIs, not asked yet: null, as Falco has
them until its lookup answers. Those are the fields a later part fills here and in the ECS blocks.
"""

from __future__ import annotations

from typing import Any

from sentinel.containers.cgroup_path import HOST, ContainerRef

_CACHE_MAX = 4096
_blocks: dict[ContainerRef, tuple[dict[str, Any], dict[str, Any]]] = {}


def container_blocks(ref: ContainerRef) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(container, sentinel.container)`` for a document; built once per container (shared: never mutate)."""
    hit = _blocks.get(ref)
    if hit is None:
        if len(_blocks) >= _CACHE_MAX:
            _blocks.clear()
        hit = _blocks[ref] = (
            {"id": ref.full_id, "runtime": ref.runtime},
            {"short_id": ref.id, "rootless": ref.rootless},
        )
    return hit


def falco_suggested_fields(ref: ContainerRef | None) -> dict[str, Any]:
    """The container plugin's suggested output fields, as Falco's JSON ``output_fields`` carry them."""
    return {
        "container.id": ref.id if ref is not None else HOST,
        "container.name": None if ref is not None else HOST,
        "container.image.repository": None,
        "container.image.tag": None,
        "k8s.pod.name": None,
        "k8s.ns.name": None,
    }
