"""Which runtime sockets to ask about a container: the configured list, or the usual places.

An endpoint is written ``<kind>:<socket path>``: ``docker`` and ``podman`` speak the Docker Engine API
(:mod:`.docker_api`), ``containerd``, ``cri-o`` and ``cri-dockerd`` the CRI (:mod:`.cri`). A socket that
is not there costs one failed connect, after which the service leaves it alone for a while.

Rootless runtimes keep their sockets in each user's runtime directory (``/run/user/<uid>/``). Such a socket
is as trustworthy as that user: it is asked only about rootless containers (their cgroup sits below a user's
systemd manager), and only if the socket belongs to the uid its directory names. Which user's container a
rootless id is, the cgroup knows but the reference does not carry yet, so every user's socket may be asked;
the answer's ``source`` names the one that answered.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from sentinel.containers.cgroup_path import CONTAINERD, CRIO, DOCKER, PODMAN

__all__ = [
    "API_DOCKER",
    "CRI",
    "CRI_DOCKERD",
    "DEFAULT_ENDPOINTS",
    "KINDS",
    "Endpoint",
    "EndpointError",
    "parse_endpoint",
    "parse_endpoints",
    "rootless_endpoints",
]

CRI_DOCKERD = "cri-dockerd"
API_DOCKER, CRI = "docker-api", "cri"
KINDS = {DOCKER: API_DOCKER, PODMAN: API_DOCKER, CONTAINERD: CRI, CRIO: CRI, CRI_DOCKERD: CRI}
# kind -> the runtimes (ContainerRef.runtime) it is asked about first; every root endpoint is tried after.
SERVES = {DOCKER: {DOCKER}, PODMAN: {PODMAN}, CONTAINERD: {CONTAINERD}, CRIO: {CRIO}, CRI_DOCKERD: {DOCKER}}

DEFAULT_ENDPOINTS = (
    f"{DOCKER}:/var/run/docker.sock",
    f"{PODMAN}:/run/podman/podman.sock",
    f"{CONTAINERD}:/run/containerd/containerd.sock",
    f"{CONTAINERD}:/run/k3s/containerd/containerd.sock",
    f"{CRIO}:/var/run/crio/crio.sock",
    f"{CRI_DOCKERD}:/run/cri-dockerd.sock",
)
_ROOTLESS_GLOBS = ((PODMAN, "/run/user/*/podman/podman.sock"), (DOCKER, "/run/user/*/docker.sock"))
_PATH_MAX = 107  # sun_path: a longer unix socket path cannot be connected to


class EndpointError(ValueError):
    """A configured endpoint that is not ``<kind>:<absolute socket path>``."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One socket. ``uid`` is set for a rootless runtime's socket (whose user it is)."""

    kind: str
    path: str
    uid: int | None = None

    @property
    def protocol(self) -> str:
        return KINDS[self.kind]

    def serves(self, runtime: str) -> bool:
        return runtime in SERVES[self.kind]


def parse_endpoint(text: str) -> Endpoint:
    """``docker:/var/run/docker.sock``; ``unix://`` before the path is accepted (``podman:unix:///run/…``)."""
    kind, colon, path = text.strip().partition(":")
    if not colon or kind not in KINDS:
        kinds = ", ".join(sorted(KINDS))
        raise EndpointError(f"{text!r}: expected <kind>:<socket path>, kind one of {kinds}")
    path = path.removeprefix("unix://")
    if not path.startswith("/") or "\0" in path or len(path.encode("utf-8", "surrogateescape")) > _PATH_MAX:
        raise EndpointError(f"{text!r}: the socket path must be absolute and at most {_PATH_MAX} bytes")
    return Endpoint(kind, os.path.normpath(path))


def parse_endpoints(texts: Iterable[str]) -> tuple[Endpoint, ...]:
    """A configured list (duplicates dropped, order kept)."""
    seen: dict[tuple[str, str], Endpoint] = {}
    for text in texts:
        endpoint = parse_endpoint(text)
        seen.setdefault((endpoint.kind, endpoint.path), endpoint)
    return tuple(seen.values())


def rootless_endpoints(root: str = "/") -> tuple[Endpoint, ...]:
    """The rootless sockets present now (``/run/user/<uid>/…``), each owned by the uid its directory names."""
    found: list[Endpoint] = []
    for kind, pattern in _ROOTLESS_GLOBS:
        for path in sorted(glob.glob(os.path.join(root, pattern.lstrip("/")))):
            uid_text = path[len(os.path.join(root, "run/user/")) :].split("/", 1)[0]
            if not uid_text.isdigit() or not uid_text.isascii():
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISSOCK(st.st_mode) and st.st_uid == int(uid_text):
                found.append(Endpoint(kind, path, uid=st.st_uid))
    return tuple(found)
