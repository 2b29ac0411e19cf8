"""ECS documents of file changes made without an open (``sentinel.file_changes``): ``file.*`` as ECS means it.

``file.path`` is where the change lands (the removed, created, renamed-to or re-moded path), resolved like an
open's; a rename's or hard link's old path is ``sentinel.event.source_path``, a symlink's target
``file.target_path`` (where it points, resolved against the link's directory; as written in
``sentinel.event.rawarg.target``). A chmod's new mode is ``file.mode``, a chown's new owner ``file.uid`` /
``file.gid`` (absent when the call leaves it unchanged), utimensat's explicit new times ``file.mtime`` /
``file.accessed``, truncate's new length ``file.size``. fchmod, fchown and ftruncate name their file by
``file.inode`` and ``file.device`` (major:minor) from the kernel, and by path when ``/proc`` still showed
the fd.
"""

from __future__ import annotations

from typing import Any

from sentinel.alerts.ecs_security import argument_blocks
from sentinel.events import Event
from sentinel.file_changes import (
    CHMODS,
    CHOWNS,
    CREATIONS,
    DELETIONS,
    FD_CALLS,
    SYMLINKS,
    TWO_PATHS,
    FilePaths,
)
from sentinel.syscalls import SYSCALLS, UNCHANGED

_TRUNCATES = frozenset(t for t in SYSCALLS if SYSCALLS[t].name in ("truncate", "ftruncate"))
_UTIMENSAT = next(t for t in SYSCALLS if SYSCALLS[t].name == "utimensat")


def file_doc(
    doc: dict[str, Any], event: dict[str, Any], detail: dict[str, Any], ev: Event, files: FilePaths
) -> None:
    """Fill ``doc`` (already holding the common blocks) for a file change."""
    etype = ev.type
    spec = SYSCALLS[etype]
    name = spec.name
    raw, shown = argument_blocks(detail, ev, files.args)
    if files.fd_path is not None:
        detail["fd_path"] = files.fd_path
    kind = "deletion" if etype in DELETIONS else "creation" if etype in CREATIONS else "change"
    event.update(category=["file"], type=[kind], action=name)
    path = files.primary
    block: dict[str, Any] = {}
    if path is not None:
        directory, _, base = path.rpartition("/")
        block.update(path=path, name=base)
        if path.startswith("/"):
            block["directory"] = directory or "/"
    words = path or ""
    if etype in TWO_PATHS:
        if etype in SYMLINKS:
            if files.source is not None:
                block["target_path"] = files.source
            words = f"{path} -> {files.raw_source}"
        else:
            detail["source_path"] = files.source
            words = f"{files.source} -> {path}"
    if etype in CHMODS and isinstance(raw.get("mode"), int):
        block["mode"] = f"{raw['mode'] & 0o7777:04o}"
        words += f" {block['mode']}"
    elif etype in CHOWNS:
        for key, ecs_key in (("uid", "uid"), ("gid", "gid")):
            value = raw.get(key)
            if isinstance(value, int) and value != UNCHANGED:
                block[ecs_key] = str(value)
        words += f" {shown.get('uid')}:{shown.get('gid')}"
    elif etype in _TRUNCATES and isinstance(raw.get("length"), int):
        block["size"] = raw["length"]
        words += f" to {raw['length']} bytes"
    elif etype is _UTIMENSAT:
        for key, ecs_key in (("atime", "accessed"), ("mtime", "mtime")):
            value = shown.get(key)
            if isinstance(value, str) and value.endswith("Z"):  # an explicit time, not now or omit
                block[ecs_key] = value
        words += f" atime={shown.get('atime', 'UTIME_NOW')} mtime={shown.get('mtime', 'UTIME_NOW')}"
    if etype in FD_CALLS and len(ev.sys_extra) >= 2 and ev.sys_extra[0]:
        dev = ev.sys_extra[1]
        block.update(inode=str(ev.sys_extra[0]), device=f"{dev >> 20}:{dev & 0xFFFFF}")
    if block:
        doc["file"] = block
    doc["message"] = f"{name} {words}".rstrip()
    if ev.ret < 0:
        doc["message"] += f" failed: {doc.get('error', {}).get('code', ev.ret)}"
