"""Container identity from one cgroup path: which runtime made the cgroup a process lives in, and its id.

Every container runtime names the cgroup it creates after the container, in one of a few layouts (the
table is in docs/containers.md). A path is read one component at a time, so a process in a sub-cgroup of a
container (``libpod-<id>.scope/container``, nspawn's ``payload``, a systemd running inside the container)
still belongs to it; Falco only looks at the end of the path and calls such a process the host.

Strict on purpose: a runtime that names containers by a 64-hex id is recognised only by exactly 64
lower-case hex digits in exactly its layout (``docker-<id>.scope.evil``, 63 or 65 digits, upper-case hex:
no container; no runtime writes those, and an id that is not the runtime's own could never be looked up).
Names (LXC, systemd-nspawn) must be names those tools accept. The name ``host`` is refused: ``container.id``
``host`` means the host in every Falco rule, so a container called that is reported as nothing rather than
as a second host.

Nesting: the OUTERMOST container wins in :func:`container_from_cgroup`. A process can create cgroups below
its own (delegation, a privileged container) and so can forge anything deeper than its container, never the
part of the path the host chose. :func:`containers_in_cgroup` gives the whole chain (docker-in-docker, kind)
outermost first. A container below a user's systemd manager (``user@UID.service``) is ``rootless``: that
user, not a root daemon, named its cgroup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

__all__ = [
    "CONTAINERD",
    "CRIO",
    "DOCKER",
    "HOST",
    "LIBVIRT_LXC",
    "LXC",
    "NSPAWN",
    "PODMAN",
    "ContainerRef",
    "container_from_cgroup",
    "containers_in_cgroup",
    "falco_fields",
    "k8s_pod_uid",
]

HOST = "host"  # Falco's container.id, container.full_id, container.name and container.type of a host process
# Runtime names: Falco's container.type values where Falco has one (systemd-nspawn it does not recognise).
DOCKER, CONTAINERD, CRIO, PODMAN = "docker", "containerd", "cri-o", "podman"
LXC, LIBVIRT_LXC, NSPAWN = "lxc", "libvirt-lxc", "systemd-nspawn"
SHORT_ID_LEN = 12  # Falco's container.id: the first 12 characters of a hex id
NAME_MAX = 255  # longest cgroup directory name the kernel allows (bytes; a longer name cannot be real)


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """One container as its cgroup names it.

    ``id`` is Falco's ``container.id``: the first 12 characters of a 64-hex id, or the whole name for the
    runtimes that name containers (LXC, systemd-nspawn, libvirt-lxc). ``full_id`` is the whole id or name.
    ``rootless``: the cgroup sits below a user's systemd manager, so an unprivileged user could have made it.
    ``pod_uid``: the Kubernetes pod uid kubelet wrote in the cgroup path above the container (with dashes), or
    ``""``; known at once, before any runtime is asked (the pod's name and labels are the runtime's answer).
    """

    runtime: str
    full_id: str
    id: str
    rootless: bool = False
    pod_uid: str = ""


_HEX64 = "[0-9a-f]{64}"
_RUNTIME_OF_PREFIX = {
    "docker": DOCKER,
    "cri-containerd": CONTAINERD,
    "nerdctl": CONTAINERD,
    "crio": CRIO,
    "libpod": PODMAN,
    "libpod-payload": PODMAN,  # podman's cgroup "split" mode
}
# Every hex-id layout, in one expression (one match per path component):
# - systemd driver: <prefix>-<id>.scope (conmon's scopes, libpod-conmon-<id>, crio-conmon-<id>, never match);
# - cgroupfs driver with a prefix: CRI-O (crio-<id>), podman (libpod-<id> below libpod_parent);
# - containerd given a systemd-style cgroup path without SystemdCgroup = true: one directory named
#   "<slice>:cri-containerd:<id>", usually below system.slice/containerd.service;
# - cgroupfs driver, the bare id: /docker/<id>, /kubepods/<qos>/pod<uid>/<id>, /<namespace>/<id> (ctr).
_HEX_FORMS = re.compile(
    rf"(?P<scope>docker|cri-containerd|nerdctl|crio|libpod|libpod-payload)-(?P<scope_id>{_HEX64})\.scope"
    rf"|(?P<prefixed>crio|libpod|libpod-payload)-(?P<prefixed_id>{_HEX64})"
    rf"|[A-Za-z0-9_.\\-]+\.slice:cri-containerd:(?P<flat_id>{_HEX64})"
    rf"|(?P<bare_id>{_HEX64})"
)
_USER_MANAGER = re.compile(r"user@[0-9]+\.service")
_MACHINE_SCOPE = re.compile(r"machine-(.+)\.scope")  # machined's scope: nspawn, libvirt (lxc and qemu)
_NSPAWN_SERVICE = re.compile(r"systemd-nspawn@(.+)\.service")  # machinectl start: nspawn --keep-unit
_UNIT_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_MACHINE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # machined's rule for machine names (hostname-like)
_LIBVIRT_LXC_NAME = re.compile(r"lxc-(?:[0-9]+-)?(.+)")  # libvirt's machine name: lxc-<pid>-<domain>
_NO_SPACE = re.compile(r"\S+")
_LXC_PAYLOAD = "lxc.payload."  # LXC 4+: lxc.payload.<name> (the monitor is lxc.monitor.<name>)
_LIBVIRT_LXC_SUFFIX = ".libvirt-lxc"  # libvirt-lxc without systemd: <name>.libvirt-lxc

_UUID_DASH = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UUID_UNDERSCORE = "[0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12}"
# Pod uids are UUIDs; a static pod's is an md5 in hex (32 digits, no dashes). kubelet's systemd driver writes
# the uid with "_" (systemd reads "-" in a slice name as nesting); --cgroup-root prefixes the slice names.
_POD_SLICE = re.compile(
    rf"(?:[a-z0-9_.]+-)*kubepods(?:-besteffort|-burstable)?-pod({_UUID_UNDERSCORE}|[0-9a-f]{{32}})\.slice"
    rf"(?::cri-containerd:{_HEX64})?"
)
_POD_DIR = re.compile(rf"pod({_UUID_DASH}|[0-9a-f]{{32}})")


def container_from_cgroup(path: str) -> ContainerRef | None:
    """The container a cgroup path belongs to (the outermost one when nested); None for the host.

    ``path`` is one cgroup path as ``/proc/PID/cgroup`` shows it or a directory below a cgroup mount.
    """
    found = _scan(path, first_only=True)
    return found[0] if found else None


def containers_in_cgroup(path: str) -> tuple[ContainerRef, ...]:
    """Every container a cgroup path passes through, outermost first (kind: the node, then the pod's)."""
    return tuple(_scan(path, first_only=False))


def falco_fields(ref: ContainerRef | None) -> dict[str, str]:
    """``container.id``, ``container.full_id`` and ``container.type`` as Falco writes them (``host`` x3)."""
    if ref is None:
        return {"container.id": HOST, "container.full_id": HOST, "container.type": HOST}
    return {"container.id": ref.id, "container.full_id": ref.full_id, "container.type": ref.runtime}


def k8s_pod_uid(path: str) -> str | None:
    """The Kubernetes pod uid in a cgroup path (with dashes, as the API shows it), or None.

    systemd driver: ``kubepods-<qos>-pod<uid with _>.slice``; cgroupfs: ``pod<uid>`` below ``kubepods``.
    """
    under_kubepods = False
    for part in path.split("/"):
        if len(part) > NAME_MAX:
            continue
        m = _POD_SLICE.fullmatch(part)
        if m:
            return m[1].replace("_", "-")
        if part == "kubepods":
            under_kubepods = True
        elif under_kubepods and (m := _POD_DIR.fullmatch(part)):
            return m[1]
    return None


def _scan(path: str, first_only: bool) -> list[ContainerRef]:
    parts = path.split("/")
    found: list[ContainerRef] = []
    rootless = False
    under_kubepods, pod = False, ""  # the pod of the next container: only what lies between it and the last
    i, n = 0, len(parts)
    while i < n:
        part = parts[i]
        nxt = parts[i + 1] if i + 1 < n else None
        if "pod" in part and len(part) <= NAME_MAX:  # kubelet's pod slice or directory (cheap test first)
            if m := _POD_SLICE.fullmatch(part):
                pod = m[1].replace("_", "-")
            elif part == "kubepods":
                under_kubepods = True
            elif under_kubepods and (m := _POD_DIR.fullmatch(part)):
                pod = m[1]
        ref, used = _match(parts[i - 1] if i else "", part, nxt)
        if ref is not None:
            if rootless or pod:
                ref = replace(ref, rootless=rootless, pod_uid=pod)
            found.append(ref)
            if first_only:
                break
            under_kubepods, pod = False, ""
        elif part.startswith("user@") and _USER_MANAGER.fullmatch(part):
            rootless = True
        i += used
    return found


def _match(prev: str, part: str, nxt: str | None) -> tuple[ContainerRef | None, int]:
    """The container ``part`` names (with its neighbours as context) and how many components it used."""
    if not part or len(part) > NAME_MAX:
        return None, 1
    if m := _HEX_FORMS.fullmatch(part):
        if m["scope_id"]:
            return _hex_ref(_RUNTIME_OF_PREFIX[m["scope"]], m["scope_id"]), 1
        if m["prefixed_id"]:
            return _hex_ref(_RUNTIME_OF_PREFIX[m["prefixed"]], m["prefixed_id"]), 1
        if m["flat_id"]:
            return _hex_ref(CONTAINERD, m["flat_id"]), 1
        if prev == "libpod_parent":  # podman's pod directory (its containers are libpod-<id> below)
            return None, 1
        return _hex_ref({"docker": DOCKER, "crio": CRIO}.get(prev, CONTAINERD), part), 1
    if part.startswith(_LXC_PAYLOAD):
        return _named_ref(LXC, _lxc_name(part[len(_LXC_PAYLOAD) :])), 1
    if part in ("lxc", "lxc.payload") and nxt is not None:  # /lxc/<name> (legacy), /lxc.payload/<name>
        runtime = LIBVIRT_LXC if part == "lxc" and prev == "libvirt" else LXC
        ref = _named_ref(runtime, _lxc_name(nxt))
        return ref, 2 if ref else 1
    if part.endswith(_LIBVIRT_LXC_SUFFIX):
        return _named_ref(LIBVIRT_LXC, _lxc_name(part[: -len(_LIBVIRT_LXC_SUFFIX)])), 1
    if not part.startswith(("machine-", "systemd-nspawn@")):
        return None, 1
    if (m := _MACHINE_SCOPE.fullmatch(part)) and nxt != "supervisor":  # supervisor: nspawn itself
        return _machine_ref(_machine_name(m[1])), 1
    if (m := _NSPAWN_SERVICE.fullmatch(part)) and nxt == "payload":  # the service's root holds nspawn too
        return _named_ref(NSPAWN, _machine_name(m[1])), 1
    return None, 1


def _hex_ref(runtime: str, full_id: str) -> ContainerRef:
    return ContainerRef(runtime, full_id, full_id[:SHORT_ID_LEN])


def _named_ref(runtime: str, name: str | None) -> ContainerRef | None:
    return ContainerRef(runtime, name, name) if name else None


def _machine_ref(name: str | None) -> ContainerRef | None:
    """machined names VMs ``qemu-N-<domain>`` (a host process: qemu) and libvirt's containers ``lxc-...``."""
    if name is None or name.startswith("qemu-"):
        return None
    if m := _LIBVIRT_LXC_NAME.fullmatch(name):
        return _named_ref(LIBVIRT_LXC, _valid_machine_name(m[1]))
    return _named_ref(NSPAWN, name)


def _machine_name(escaped: str) -> str | None:
    """A machine name from a unit name: systemd writes every byte outside [A-Za-z0-9:_.] as ``\\xNN``."""
    if "\\" in _UNIT_ESCAPE.sub("", escaped):  # a backslash that is not an escape: not systemd's writing
        return None
    return _valid_machine_name(_UNIT_ESCAPE.sub(lambda m: chr(int(m[1], 16)), escaped))


def _valid_machine_name(name: str) -> str | None:
    if not _MACHINE_NAME.fullmatch(name) or name in (".", "..", HOST):
        return None
    return name


def _lxc_name(name: str) -> str | None:
    """An LXC container name: printable, no whitespace (LXC and LXD refuse both), never ``host``."""
    if not name or len(name) > NAME_MAX or name in (".", "..", HOST):
        return None
    if not name.isprintable() or not _NO_SPACE.fullmatch(name):
        return None
    return name
