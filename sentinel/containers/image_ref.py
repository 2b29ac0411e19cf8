"""Image references (``registry:port/path/name:tag@digest``) split into repository, tag and digest.

A runtime reports the image a container runs as the reference its creator typed (docker's
``Config.Image``), or normalised (containerd and CRI-O: ``docker.io/library/nginx:latest``), or as an image id
(``sha256:<hex>``, or a bare id when the container was started by id). The reference grammar is Docker's
(the distribution project's): ``name[:tag][@digest]``, where ``name`` is ``[domain/]path`` (a domain may
have a port and upper case, a path may not), so ``localhost:5000/a/b:tag`` is repository
``localhost:5000/a/b``, tag ``tag``: a ``:`` before the last ``/`` is a port's, never a tag's. The repository
is the name as written (``nginx`` stays ``nginx``: no ``docker.io/library/`` is added).

Parsing is strict: a reference the grammar does not allow gives None rather than a guess. The runtimes check
references when they pull, so a real one always parses; anything else came from somewhere hostile, and a
repository half-parsed out of it could make a rule match what it should not.

The tag: ``latest`` when the reference has neither tag nor digest (``nginx``). That is what the runtime
pulled (Docker and containerd normalise a bare name to ``:latest``) and what Falco shows: its Docker lookup
takes the tag from the image's ``RepoTags``, which always carry one, and containerd reports the normalised
reference. A reference pinned by digest only (``nginx@sha256:…``) has no tag: ``""``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULT_TAG", "ImageRef", "image_id_hex", "parse_image_ref"]

DEFAULT_TAG = "latest"
NAME_MAX = 255  # the grammar's limit on a name (domain and path)
REF_MAX = 1024  # name, tag (128) and a long digest fit easily; anything longer is refused before a regex
_ALNUM = "[a-z0-9]+"
_SEPARATOR = "(?:[_.]|__|-+)"
_PATH = re.compile(rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*(?:/{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*)*", re.ASCII)
_DOMAIN_PART = "(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?",  # host or [IPv6], port
    re.ASCII,
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}", re.ASCII)
_IMAGE_ID = re.compile(r"(?:sha256:)?([0-9a-f]{64})", re.ASCII)


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One parsed reference. ``repository`` includes the domain when the reference has one (as written:
    ``nginx`` stays ``nginx``, not ``docker.io/library/nginx``). ``id`` is set (64 hex digits, no
    ``sha256:``) only when the reference is an image id, and then the other fields are empty."""

    repository: str = ""
    tag: str = ""
    digest: str = ""
    id: str = ""


def image_id_hex(text: str) -> str:
    """The 64 hex digits of an image id written ``sha256:<hex>`` or bare; ``""`` when it is not one."""
    m = _IMAGE_ID.fullmatch(text) if len(text) <= 71 else None
    return m[1] if m else ""


def parse_image_ref(text: str) -> ImageRef | None:
    """``text`` as an image reference or an image id; None when the grammar does not allow it."""
    if not text or len(text) > REF_MAX:
        return None
    hex_id = image_id_hex(text)
    if hex_id:  # Docker refuses 64-hex repository names, so this is an id, never "sha256" tagged "<hex>"
        return ImageRef(id=hex_id)
    name_tag, at, digest = text.partition("@")
    if at and _DIGEST.fullmatch(digest) is None:
        return None
    name, tag = name_tag, ""
    colon = name_tag.rfind(":")
    if colon > name_tag.rfind("/"):  # a colon after the last slash is the tag's; before it, a port's
        name, tag = name_tag[:colon], name_tag[colon + 1 :]
        if _TAG.fullmatch(tag) is None:
            return None
    if not _valid_name(name):
        return None
    if not tag and not digest:
        tag = DEFAULT_TAG
    return ImageRef(repository=name, tag=tag, digest=digest)


def _valid_name(name: str) -> bool:
    """``[domain/]path``: as a path alone, or with its first component as a domain (the grammar's regex;
    which one it is only matters when normalising, which we do not)."""
    if not name or len(name) > NAME_MAX:
        return False
    if _PATH.fullmatch(name) is not None:
        return True
    first, slash, rest = name.partition("/")
    return bool(slash) and _DOMAIN.fullmatch(first) is not None and _PATH.fullmatch(rest) is not None
