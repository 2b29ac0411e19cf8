"""The Docker Engine API over a unix socket, for one question: what is container ``<id>``.

Docker and podman (its Docker-compatible service, ``podman system service``) answer
``GET /containers/<id>/json`` in the same shape, and ``GET /images/<id>/json`` for the image's repository
digests. Paths carry no API version: each daemon serves unversioned paths at its own version, while a pinned
one breaks as daemons raise their minimum (Docker 29 refuses anything below 1.44).

The exchange is written for a runtime that may be hung or hostile (a container's creator controls much of
what it says): one deadline covers connecting, sending and reading, however slowly the bytes come; the
response is read whole, up to a size cap, before anything parses it (stdlib ``http.client`` then parses
the bytes in memory, chunked encoding included); JSON of the wrong shape gives empty fields, never an
exception other than :class:`~sentinel.containers.metadata.MetadataError`.

Kubernetes under cri-dockerd: kubelet's ``io.kubernetes.pod.*`` labels on the container name its pod.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sentinel.containers.image_ref import ImageRef, image_id_hex, parse_image_ref
from sentinel.containers.metadata import (
    ContainerMeta,
    LookupTimeout,
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

__all__ = ["MAX_RESPONSE", "DockerClient", "ImageFacts", "http_get", "meta_from_inspect"]

MAX_RESPONSE = 1 << 20  # a container's inspect is 5-30 KiB; 1 MiB leaves room and refuses a flood
IMAGE_CACHE = 256
_RECV = 65536
_TAGS_MAX = 64  # RepoTags/RepoDigests entries looked at


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What the image inspect adds: its tags and repository digests (bounded, cleaned)."""

    repo_tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()


class _Canned:
    """A socket stand-in whose ``makefile`` gives bytes already read: ``http.client`` parses them."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, *_args: Any, **_kwargs: Any) -> io.BytesIO:
        return io.BytesIO(self._data)


def http_get(
    socket_path: str, target: str, deadline: float, max_bytes: int = MAX_RESPONSE
) -> tuple[int, bytes]:
    """``GET target`` on the unix socket; (status, body). Raises :class:`RuntimeUnavailable` (no socket,
    refused), :class:`LookupTimeout` (``deadline``, a ``time.monotonic`` value, passed) or
    :class:`RefusedAnswer` (more than ``max_bytes``, not HTTP)."""
    request = (
        f"GET {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: sentinel\r\n"
        "Accept: application/json\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    raw = _exchange(socket_path, request, deadline, max_bytes + 16384)  # headers on top of the body
    response = http.client.HTTPResponse(_Canned(raw))  # type: ignore[arg-type]
    try:
        response.begin()
        body = response.read()
    except (http.client.HTTPException, ValueError) as exc:
        raise RefusedAnswer(f"not an HTTP response: {type(exc).__name__}") from None
    if len(body) > max_bytes:
        raise RefusedAnswer(f"response over {max_bytes} bytes")
    return response.status, body


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise LookupTimeout("no answer before the deadline")
    return left


def _exchange(socket_path: str, request: bytes, deadline: float, cap: int) -> bytes:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.settimeout(_remaining(deadline))
            sock.connect(socket_path)
        except TimeoutError:
            raise LookupTimeout("connect timed out") from None
        except FileNotFoundError:
            raise SocketMissing(f"no socket at {socket_path}") from None
        except OSError as exc:  # absent, refused, not a socket, permission
            raise RuntimeUnavailable(f"cannot connect: {exc.strerror or exc}") from None
        chunks: list[bytes] = []
        size = 0
        try:
            sock.settimeout(_remaining(deadline))
            sock.sendall(request)
            while True:
                sock.settimeout(_remaining(deadline))
                data = sock.recv(_RECV)
                if not data:
                    break
                size += len(data)
                if size > cap:
                    raise RefusedAnswer(f"response over {cap} bytes")
                chunks.append(data)
        except TimeoutError:
            raise LookupTimeout("no answer before the deadline") from None
        except OSError as exc:  # reset, broken pipe: the runtime went away mid-answer
            raise RefusedAnswer(f"connection failed: {exc.strerror or exc}") from None
        return b"".join(chunks)
    finally:
        sock.close()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, huge integers, nesting
        raise RefusedAnswer(f"malformed JSON: {type(exc).__name__}") from None


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(clean_text(v) for v in value[:_TAGS_MAX] if isinstance(v, str))


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _mode_is_host(value: object) -> bool | None:
    """HostConfig's NetworkMode, PidMode, IpcMode: ``host`` shares the host's namespace."""
    return value == "host" if isinstance(value, str) else None


def _mounts(value: object) -> tuple[tuple[Mount, ...] | None, bool]:
    """Inspect's ``Mounts`` (``Source``, ``Destination``, ``Mode``, ``RW``, ``Propagation``); None when the
    answer has no list (then nothing is known, not "no mounts"). Entries of the wrong shape are skipped."""
    if not isinstance(value, list):
        return None, False
    entries = (
        Mount(
            source=clean_path(m.get("Source")),
            destination=clean_path(m.get("Destination")),
            mode=clean_text(m.get("Mode")),
            rw=m.get("RW") is not False,
            propagation=clean_text(m.get("Propagation")),
        )
        for m in value
        if isinstance(m, Mapping)
    )
    return bounded_mounts(entries)


def _section(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, Mapping) else {}


def _from_tags(facts: ImageFacts | None) -> ImageRef | None:
    for tag in facts.repo_tags if facts else ():
        ref = parse_image_ref(tag)
        if ref is not None and ref.repository:
            return ref
    return None


def _digest(repository: str, facts: ImageFacts | None) -> str:
    """The repository digest for ``repository`` (``RepoDigests`` are ``<repository>@<digest>``); else the
    only one there is: an image pulled once by one name."""
    found: list[str] = []
    for entry in facts.repo_digests if facts else ():
        ref = parse_image_ref(entry)
        if ref is None or not ref.digest:
            continue
        if ref.repository == repository:
            return ref.digest
        found.append(ref.digest)
    return found[0] if len(set(found)) == 1 else ""


def meta_from_inspect(
    doc: Mapping[str, Any], full_id: str, source: str, facts: ImageFacts | None = None
) -> ContainerMeta:
    """A container inspect (Docker or podman shape) as :class:`ContainerMeta`; wrong types: empty fields."""
    config = _section(doc, "Config")
    host = _section(doc, "HostConfig")
    image = clean_text(config.get("Image"))
    image_id = image_id_hex(clean_text(doc.get("Image")))
    ref = parse_image_ref(image)
    # Started by image id (whole, or a prefix: `docker run 6f7e2741`), or an unparsable name: the image's
    # own tags say which repository it is.
    if ref is None or ref.id or (image and image_id.startswith(image)):
        ref = _from_tags(facts) or (ref if ref is None or ref.id else ImageRef(id=image_id))
    repository = ref.repository if ref else ""
    raw_labels = config.get("Labels")
    labels, truncated = bounded_labels(raw_labels)
    mounts, mounts_truncated = _mounts(doc.get("Mounts"))
    return ContainerMeta(
        full_id=full_id,
        source=source,
        name=clean_text(doc.get("Name")).removeprefix("/"),
        image=image,
        image_repository=repository,
        image_tag=ref.tag if ref else "",
        image_digest=(ref.digest if ref and ref.digest else _digest(repository, facts)) if repository else "",
        image_id=image_id,
        labels=labels,
        labels_truncated=truncated,
        privileged=_flag(host.get("Privileged")),
        host_network=_mode_is_host(host.get("NetworkMode")),
        host_pid=_mode_is_host(host.get("PidMode")),
        host_ipc=_mode_is_host(host.get("IpcMode")),
        pod=k8s_from_labels(raw_labels),
        mounts=mounts,
        mounts_truncated=mounts_truncated,
    )


class DockerClient:
    """One Docker-API socket (docker's, or podman's compatible one). Image facts are cached per image id:
    an image's digests do not change while its id stays."""

    def __init__(self, socket_path: str, kind: str = "docker", *, max_bytes: int = MAX_RESPONSE) -> None:
        self.socket_path = socket_path
        self.kind = kind
        self.source = f"{kind}:{socket_path}"
        self.max_bytes = max_bytes
        self._images: OrderedDict[str, ImageFacts] = OrderedDict()

    def inspect(self, full_id: str, timeout: float) -> ContainerMeta | None:
        deadline = time.monotonic() + timeout
        status, body = http_get(self.socket_path, f"/containers/{quote(full_id, safe='')}/json", deadline,
                                self.max_bytes)  # fmt: skip
        if status == 404:
            return None
        if status != 200:
            raise RefusedAnswer(f"HTTP {status}")
        doc = _json(body)
        if not isinstance(doc, dict):
            raise RefusedAnswer("the inspect is not a JSON object")
        answered = doc.get("Id")
        if isinstance(answered, str) and answered != full_id:
            raise RefusedAnswer("the runtime answered for another container")
        image_id = image_id_hex(clean_text(doc.get("Image")))
        facts = self._image_facts(image_id, deadline) if image_id else None
        return meta_from_inspect(doc, full_id, self.source, facts)

    def _image_facts(self, image_id: str, deadline: float) -> ImageFacts | None:
        """The image's tags and digests; None when they cannot be had now (the container's answer stands)."""
        cached = self._images.get(image_id)
        if cached is not None:
            self._images.move_to_end(image_id)
            return cached
        try:
            status, body = http_get(
                self.socket_path, f"/images/sha256:{image_id}/json", deadline, self.max_bytes
            )
            doc = _json(body) if status == 200 else None
        except (LookupTimeout, RefusedAnswer, RuntimeUnavailable):
            return None
        if status not in (200, 404):
            return None
        facts = ImageFacts()
        if isinstance(doc, dict):
            facts = ImageFacts(_strings(doc.get("RepoTags")), _strings(doc.get("RepoDigests")))
        self._images[image_id] = facts
        if len(self._images) > IMAGE_CACHE:
            self._images.popitem(last=False)
        return facts

    def close(self) -> None:
        self._images.clear()
