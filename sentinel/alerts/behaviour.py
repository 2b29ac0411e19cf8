"""The aggregation key of a rule alert: what a person would call "the same thing happening again".

Default: the acting program, its parent program, the user and the container image (the container id when
no image is known; ``host`` outside containers). A program in a writable or temporary place (``/tmp``,
``/var/tmp``, ``/dev/shm``, a home directory, ``/run/user/UID``) counts by that place rather than by its
exact path: build jobs and test runs make a fresh directory and binary every time, and keying on the exact
path (or on the process lineage, as before) wrote one alert per run. A rule can name its own key with
``aggregate_by:`` (rule fields); see docs/rule-writing.md.
"""

from __future__ import annotations

from typing import Any

from sentinel.containers.meta_view import FieldsLookup

BEHAVIOUR = "behaviour"  # first item of a default key (the renderers name its parts: KEY_NAMES)
FIELDS = "fields"  # first item of an aggregate_by key, then (field, value) pairs
KEY_NAMES = ("program", "parent", "user", "container")
_TEMP_ROOTS = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/shm/")
_PER_USER_ROOTS = ("/home/", "/run/user/")  # the first component below is the user's own place


def program(path: str) -> str:
    """``path``, or the writable place it lies in (``/tmp/``, ``/home/alice/``): see the module doc."""
    for root in _TEMP_ROOTS:
        if path.startswith(root):
            return root
    for root in _PER_USER_ROOTS:
        if path.startswith(root):
            user, sep, _ = path[len(root) :].partition("/")
            return f"{root}{user}/" if sep else path
    if path.startswith("/root/"):
        return "/root/"
    return path


def is_place(lineage: tuple[Any, ...]) -> bool:
    """Whether a default key stands for a writable place (``/tmp/``) rather than one program's path: many
    different executables share such a key, an intruder's among a build's, so its streaks stay short."""
    if len(lineage) < 2 or lineage[0] != BEHAVIOUR:
        return False
    program_or_place = lineage[1]
    return isinstance(program_or_place, str) and program_or_place.endswith("/")


def behaviour_key(proc: Any, comm: str, containers: FieldsLookup) -> tuple[Any, ...]:
    """The default key beside the rule: (program, parent program, uid, image or container id or host)."""
    if proc is None:
        return (BEHAVIOUR, comm, None, None, None)
    parent = proc.parent
    parent_program = program(parent.exe or parent.comm) if parent is not None else None
    ref = proc.container
    if ref is None:
        where = "host"
    else:
        meta = containers.get(ref.full_id, None)  # type: ignore[arg-type]
        where = (getattr(meta, "image", None) or ref.id) if meta is not None else ref.id
    return (BEHAVIOUR, program(proc.exe or proc.comm), parent_program, proc.uid, where)


def fields_key(names: tuple[str, ...], value: Any, ctx: Any) -> tuple[Any, ...]:
    """A rule's own key: its ``aggregate_by`` fields' values (``value(name, ctx)``), hashable."""
    return (FIELDS, *((name, _hashable(value(name, ctx))) for name in names))


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def describe(lineage: tuple[Any, ...]) -> dict[str, Any] | None:
    """A summary's key as the analyst reads it (``sentinel.aggregation.key``); None for other keys."""
    if not lineage:
        return None
    if lineage[0] == BEHAVIOUR and len(lineage) == 1 + len(KEY_NAMES):
        return dict(zip(KEY_NAMES, lineage[1:], strict=True))
    if lineage[0] == FIELDS:
        return {name: list(v) if isinstance(v, tuple) else v for name, v in lineage[1:]}
    return None
