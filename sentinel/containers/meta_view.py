"""What the pipeline thread knows of containers' runtime metadata: :class:`MetadataView`.

:class:`~sentinel.containers.metadata_service.MetadataService` answers on its own thread, at any moment.
Rules and documents must see one state per event, and a replay must see the same one; so the pipeline thread
takes the service's answers at one point of its loop (:meth:`MetadataView.poll`, once per poll of the
sensor) and only then changes what rules and documents read. Each change is a :class:`MetaChange` handed to
``on_change`` (the recorder writes it to the capture); a replay applies those in capture order
(:meth:`MetadataView.apply`) and never asks a runtime.

A container's state (by ``full_id``):

- ``pending``: asked, not answered yet. Its events carry the id only; documents say
  ``sentinel.container.metadata: pending``.
- ``found``: rules read its :class:`MetaFields`, documents carry name, image, labels, pod.
- ``not_found``, ``failed``, ``unsupported``: no runtime knows it, none could say, or its runtime has no API
  (LXC, nspawn, libvirt). Documents say ``unavailable``. The first two are asked again (after the service's
  back-off) when the identity names the container again: a new process in it.

:meth:`MetadataView.note` is called by the container identity when it answers with a container (a new
process, a moved one), never per event. Both maps are bounded (oldest dropped first), identically live and in
replay.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Protocol

from sentinel.containers.cgroup_path import HOST, ContainerRef
from sentinel.containers.metadata import ContainerMeta, Mount
from sentinel.containers.metadata_service import (
    FAILED,
    FOUND,
    NOT_FOUND,
    PENDING,
    SUPPORTED_RUNTIMES,
    MetadataService,
)

__all__ = [
    "FAILED",
    "FOUND",
    "HOST_FIELDS",
    "MARK_PENDING",
    "MARK_UNAVAILABLE",
    "NOT_FOUND",
    "NO_FIELDS",
    "NO_METADATA",
    "PENDING",
    "STATES",
    "UNSUPPORTED",
    "FieldsLookup",
    "MetaChange",
    "MetaFields",
    "MetadataView",
    "falco_labels",
    "fields_of",
    "metadata_view",
]

UNSUPPORTED = "unsupported"  # a runtime without an API to ask (LXC, systemd-nspawn, libvirt-lxc)
STATES = frozenset({FOUND, PENDING, NOT_FOUND, FAILED, UNSUPPORTED})
MARK_PENDING, MARK_UNAVAILABLE = "pending", "unavailable"
_MARKS = {PENDING: MARK_PENDING, **dict.fromkeys((NOT_FOUND, FAILED, UNSUPPORTED), MARK_UNAVAILABLE)}
# Labels Falco's container plugin leaves out of container.labels and k8s.pod.labels (kubelet's bookkeeping).
_HIDDEN_LABEL_PREFIXES = ("annotation.", "io.kubernetes.")


@dataclass(frozen=True, slots=True, eq=False)
class MetaFields:
    """One container's metadata as rules read it: an attribute per Falco field, None where the field is
    missing. Built once per answer, so a rule's accessor is one dictionary lookup and an attribute read.
    Compared and hashed by identity (the renderers key their caches on it)."""

    name: str | None = None
    image: str | None = None
    image_repository: str | None = None
    image_tag: str | None = None
    image_digest: str | None = None
    image_id: str | None = None
    privileged: bool | None = None
    host_network: bool | None = None
    host_pid: bool | None = None
    host_ipc: bool | None = None
    labels: str | None = None  # Falco's container.labels text
    label: Mapping[str, str] = field(default_factory=dict)  # container.label[key]
    pod_name: str | None = None
    pod_namespace: str | None = None
    pod_uid: str | None = None
    pod_sandbox_id: str | None = None
    pod_full_sandbox_id: str | None = None
    pod_labels: str | None = None
    pod_label: Mapping[str, str] = field(default_factory=dict)
    meta: ContainerMeta | None = None  # the runtime's answer (the ECS blocks), None for the two constants
    mounts: tuple[Mount, ...] | None = None  # None: not known (the runtime did not say, or the host)
    mounts_text: str | None = None  # Falco's container.mounts

    def mount_value(self, key: str, attr: str) -> str | None:
        """``container.mount*[key]`` as Falco's container plugin answers: ``key`` a number (the mount's
        position) or a glob on the mount's source (on its destination for ``source``); ``attr`` the part
        (``text`` for the whole ``source:dest:mode:rdwr:propagation``). No such mount: ``none`` for the
        whole, ``N/A`` for a part (what Falco's rules compare with); missing while the mounts are unknown."""
        mounts = self.mounts
        if mounts is None:
            return None
        found = _find_mount(mounts, key, "destination" if attr == "source" else "source")
        if found is None:
            return "none" if attr == "text" else "N/A"
        if attr == "text":
            return found.falco_text()
        if attr == "rw":
            return "true" if found.rw else "false"
        value: str = getattr(found, attr)
        return value


def _find_mount(mounts: tuple[Mount, ...], key: str, by: str) -> Mount | None:
    if key.isdigit():
        index = int(key)
        return mounts[index] if index < len(mounts) else None
    for mount in mounts:
        if fnmatchcase(getattr(mount, by), key):  # (Falco's glob: `*` crosses `/`)
            return mount
    return None


# Not answered (or no view at all): every field missing, so `x in (...)` is false and `not x in (...)` true.
NO_FIELDS = MetaFields()
# The host, as Falco's container plugin has it: `host` for the name, empty image fields, false flags, no pod.
HOST_FIELDS = MetaFields(
    name=HOST, image="", image_repository="", image_tag="", image_digest="", image_id="", privileged=False,
    host_network=False, host_pid=False, host_ipc=False, labels="", pod_sandbox_id="", pod_full_sandbox_id="",
    pod_labels="",
)  # fmt: skip


def falco_labels(labels: Iterable[tuple[str, str]]) -> str:
    """Labels as Falco's container plugin writes ``container.labels``: ``k1:v1, k2:v2`` (``k`` alone for an
    empty value), without kubelet's ``io.kubernetes.*`` and ``annotation.*`` entries."""
    return ", ".join(f"{k}:{v}" if v else k for k, v in labels if not k.startswith(_HIDDEN_LABEL_PREFIXES))


def fields_of(meta: ContainerMeta) -> MetaFields:
    """The rule fields of an answer. A field the runtime did not give is ``""`` (text) or None (a flag it
    could not tell: unknown is not false); without a pod the pod's name, namespace and uid are missing and
    its labels and sandbox ids empty, as Falco has them."""
    pod = meta.pod
    return MetaFields(
        name=meta.name,
        image=meta.image,
        image_repository=meta.image_repository,
        image_tag=meta.image_tag,
        image_digest=meta.image_digest,
        image_id=meta.image_id,
        privileged=meta.privileged,
        host_network=meta.host_network,
        host_pid=meta.host_pid,
        host_ipc=meta.host_ipc,
        labels=falco_labels(meta.labels),
        label=dict(meta.labels),
        pod_name=pod.name if pod is not None else None,
        pod_namespace=pod.namespace if pod is not None else None,
        pod_uid=(pod.uid or None) if pod is not None else None,
        pod_sandbox_id=pod.sandbox_id[:12] if pod is not None else "",
        pod_full_sandbox_id=pod.sandbox_id if pod is not None else "",
        pod_labels=falco_labels(pod.labels) if pod is not None else "",
        pod_label=dict(pod.labels) if pod is not None else {},
        meta=meta,
        mounts=meta.mounts,
        mounts_text=",".join(m.falco_text() for m in meta.mounts) if meta.mounts is not None else None,
    )


class FieldsLookup(Protocol):
    """What a rule's accessor reads: ``full_id`` -> :class:`MetaFields` (a dict, or :data:`NO_METADATA`)."""

    def get(self, key: str, default: MetaFields, /) -> MetaFields: ...


class _NoMetadata:
    """The lookup of an agent without runtime metadata (and of contexts built without one): nothing known."""

    __slots__ = ()

    def get(self, key: str, default: MetaFields, /) -> MetaFields:
        return default

    def __repr__(self) -> str:
        return "NO_METADATA"


NO_METADATA: FieldsLookup = _NoMetadata()


@dataclass(frozen=True, slots=True)
class MetaChange:
    """A container's metadata state changed (``meta`` set exactly when ``state`` is ``found``): what the
    recorder writes and a replay applies."""

    full_id: str
    state: str
    meta: ContainerMeta | None = None


def metadata_view(table: Any) -> MetadataView | None:
    """The view a process table's container source carries (None: no metadata, or no container source)."""
    return getattr(table.containers, "metadata", None)


@dataclass(slots=True)
class ViewStats:
    """Counters for the agent's stats records."""

    noted: int = 0  # the identity named a container
    changes: int = 0  # states changed (each one recorded in a capture)
    answers: int = 0  # service answers taken by poll()
    evicted: int = 0  # containers dropped to respect the bound


class MetadataView:
    """See the module docstring. Not thread-safe: the pipeline thread owns it.

    ``fields`` is what rules read (``full_id`` -> :class:`MetaFields`, found containers only); :meth:`mark`
    what documents say of the others. ``service`` is None in a replay (states come from the capture).
    """

    def __init__(
        self,
        service: MetadataService | None = None,
        *,
        on_change: Callable[[MetaChange], None] | None = None,
        max_containers: int = 4096,
    ) -> None:
        self.service = service
        self.on_change = on_change
        # Called with a container's full id when its answer first arrives (found after any other state), in
        # the same order live and in replay: the detection stream's `container` event.
        self.on_found: Callable[[str], None] | None = None
        self.max_containers = max(1, max_containers)
        self.fields: dict[str, MetaFields] = {}
        self.stats = ViewStats()
        self._state: dict[str, str] = {}  # insertion order: least recently changed first

    # ---- the pipeline thread ------------------------------------------------------------------------

    def note(self, ref: ContainerRef) -> None:
        """The identity answered with ``ref``: ask its runtime unless known, pending or never answerable.
        Never blocks (the service queues the lookup); a replay asks nothing."""
        service = self.service
        if service is None:
            return
        self.stats.noted += 1
        full_id = ref.full_id
        state = self._state.get(full_id)
        if state == PENDING and service.state(full_id) == PENDING:
            return  # (an answer the service had to drop from its bounded list is asked for again below)
        if state in (FOUND, UNSUPPORTED):
            return
        if ref.runtime not in SUPPORTED_RUNTIMES:
            self._change(full_id, UNSUPPORTED, None)
            return
        service.request(ref)  # False when negative and still backing off: the state below says so
        now = service.state(full_id)
        meta = service.get(full_id) if now == FOUND else None
        if meta is None and now == FOUND:
            now = FAILED  # evicted in between: asked again at the next note
        if now is None:
            now = FAILED  # the queue was full: asked again at the next note
        if now != state:
            self._change(full_id, now, meta)

    def poll(self) -> int:
        """Take the service's answers since the last call (once per sensor poll); how many there were."""
        service = self.service
        if service is None:
            return 0
        answers = service.take_completed()
        for answer in answers:
            self._change(answer.full_id, FOUND if answer.meta is not None else answer.reason, answer.meta)
        self.stats.answers += len(answers)
        return len(answers)

    def apply(self, change: MetaChange) -> None:
        """A recorded change, in capture order (replay)."""
        self._change(change.full_id, change.state, change.meta)

    def state(self, full_id: str) -> str | None:
        """``found``, ``pending``, ``not_found``, ``failed``, ``unsupported``, or None (never named)."""
        return self._state.get(full_id)

    def mark(self, full_id: str) -> str | None:
        """What a document says of a container's metadata: ``pending``, ``unavailable``, or None (found, or
        never asked: metadata off, a capture without metadata records)."""
        return _MARKS.get(self._state.get(full_id))  # type: ignore[arg-type]

    def _change(self, full_id: str, state: str, meta: ContainerMeta | None) -> None:
        before = self._state.get(full_id)
        if before == state and (state != FOUND or self._same_answer(full_id, meta)):
            return  # (an answer note() already took from the service, handed over again by poll())
        if state == FOUND and meta is not None:
            self.fields[full_id] = fields_of(meta)
        else:
            self.fields.pop(full_id, None)
            if state == FOUND:
                state = FAILED  # a found state without its answer cannot be read: no runtime could say
        states = self._state
        states.pop(full_id, None)
        states[full_id] = state
        if len(states) > self.max_containers:
            oldest = next(iter(states))
            del states[oldest]
            self.fields.pop(oldest, None)
            self.stats.evicted += 1
        self.stats.changes += 1
        if self.on_change is not None:
            self.on_change(MetaChange(full_id, state, meta if state == FOUND else None))
        if state == FOUND and before != FOUND and self.on_found is not None:
            self.on_found(full_id)

    def _same_answer(self, full_id: str, meta: ContainerMeta | None) -> bool:
        known = self.fields.get(full_id)
        return known is not None and known.meta is meta

    # ---- the agent's records ------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """For the ready record: whether runtimes are asked, and which of their sockets exist now."""
        service = self.service
        if service is None:
            return {"metadata": "replay"}
        endpoints = [
            {"endpoint": f"{e.kind}:{e.path}", "socket": os.path.exists(e.path)} for e in service.endpoints
        ]
        return {"metadata": True, "endpoints": endpoints}

    def counters(self) -> dict[str, Any]:
        """The view's and the service's counters (per endpoint too), for the stats records."""
        states = list(self._state.values())
        out: dict[str, Any] = {
            **asdict(self.stats),
            "known": len(self.fields),
            "pending": states.count(PENDING),
            "unavailable": len(states) - states.count(PENDING) - states.count(FOUND),
        }
        if self.service is not None:
            out["service"] = asdict(self.service.stats())
        return out

    def close(self) -> None:
        """Stop the service's worker (bounded: at most one lookup's timeout)."""
        if self.service is not None:
            self.service.close()
