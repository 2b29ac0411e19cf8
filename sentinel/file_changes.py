"""File changes made without opening the file (unlink, rename, link, symlink, chmod, chown, mkdir, truncate,
utimensat): which paths an event names, resolved the way the process saw them.

The probe carries each path as the call spelled it. Like an open's, a relative path is resolved here against
the process's cwd or the dirfd the call names (``evt.arg.NAME`` shows the resolved path, ``evt.rawarg.NAME``
the spelling), and the paths take Falco's roles: ``fs.path.name`` for a call on one path, ``fs.path.source``
and ``fs.path.target`` for rename, link and symlink. A symlink's target is resolved against the link's own
directory (what the link will point at: ``ln -s ../../etc/shadow x`` points at /etc/shadow), never against
the cwd. Calls on an fd (fchmod, fchown, ftruncate) name the fd's path, asked of the process table.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

from sentinel.events import AT_FDCWD, Event, EventType
from sentinel.process.table import normalize_path
from sentinel.syscalls import SYSCALLS, Arg, raw_value

T = EventType
FILE_TYPES = frozenset(t for t, spec in SYSCALLS.items() if spec.family == "file")
FD_CALLS = frozenset((T.FCHMOD, T.FCHOWN, T.FTRUNCATE))
# (source argument, target argument) of the calls on two paths.
TWO_PATHS: dict[EventType, tuple[str, str]] = {
    **dict.fromkeys((T.RENAME, T.RENAMEAT, T.RENAMEAT2, T.LINK, T.LINKAT), ("oldpath", "newpath")),
    **dict.fromkeys((T.SYMLINK, T.SYMLINKAT), ("target", "linkpath")),
}
SYMLINKS = frozenset((T.SYMLINK, T.SYMLINKAT))
# The ECS event.type of each call.
DELETIONS = frozenset((T.UNLINK, T.UNLINKAT, T.RMDIR))
CREATIONS = frozenset((T.LINK, T.LINKAT, T.SYMLINK, T.SYMLINKAT, T.MKDIR, T.MKDIRAT))
CHMODS = frozenset((T.CHMOD, T.FCHMOD, T.FCHMODAT, T.FCHMODAT2))
CHOWNS = frozenset((T.CHOWN, T.FCHOWN, T.FCHOWNAT, T.LCHOWN))

# A resolver: (dirfd, path as spelled) -> absolute path, or the spelling when the base is unknown.
Resolve = Callable[[int, str], str]


def _path_args(etype: EventType) -> tuple[tuple[Arg, Arg | None], ...]:
    spec = SYSCALLS[etype]
    by_name = {a.name: a for a in spec.args}
    return tuple((a, by_name.get(a.base)) for a in spec.args if a.kind == "path")


_PATH_ARGS = {t: _path_args(t) for t in FILE_TYPES}


@dataclass(slots=True)
class FilePaths:
    """The paths of one file-change event: by argument name (resolved), and in Falco's fs.path roles."""

    args: dict[str, str] = field(default_factory=dict)  # evt.arg.NAME of each path argument, resolved
    name: str | None = None  # fs.path.name: the one path a call works on
    source: str | None = None  # fs.path.source: rename/link's old path, the symlink's target (resolved)
    target: str | None = None  # fs.path.target: rename/link's new path, the symlink itself
    raw_name: str | None = None
    raw_source: str | None = None
    raw_target: str | None = None
    fd_path: str | None = None  # fchmod, fchown, ftruncate: the path of the fd, as the process table finds it

    @property
    def primary(self) -> str | None:
        """The path the change lands on: what a rule on ``fd.name``-like paths should see."""
        return self.name if self.name is not None else self.target


def file_paths(ev: Event, resolve: Resolve | None) -> FilePaths:
    """Resolve a file-change event's paths with ``resolve`` (None: no process known, paths as spelled)."""
    out = FilePaths()
    etype = ev.type
    raws: dict[str, str] = {}
    for arg, base in _PATH_ARGS.get(etype, ()):
        raw = raw_value(ev, arg)
        if not isinstance(raw, str):
            continue
        raws[arg.name] = raw
        dirfd = AT_FDCWD
        if base is not None:
            value = raw_value(ev, base)
            dirfd = value if isinstance(value, int) else AT_FDCWD
        out.args[arg.name] = resolve(dirfd, raw) if resolve is not None else raw
    if etype in FD_CALLS and ev.sys_args and resolve is not None:
        fd = ev.sys_args[0] & 0xFFFFFFFF
        if fd < 0x80000000:
            out.fd_path = resolve(fd, "") or None
    roles = TWO_PATHS.get(etype)
    if roles is None:
        if out.args:
            first = next(iter(out.args))
            out.name, out.raw_name = out.args[first], raws[first]
        elif out.fd_path is not None:
            out.name = out.raw_name = out.fd_path
        return out
    src_name, dst_name = roles
    out.target, out.raw_target = out.args.get(dst_name), raws.get(dst_name)
    if etype in SYMLINKS:
        link_target = raw_value(ev, next(a for a in SYSCALLS[etype].args if a.name == "target"))
        if isinstance(link_target, str):
            out.raw_source = link_target
            out.source = _symlink_target(link_target, out.target)
    else:
        out.source, out.raw_source = out.args.get(src_name), raws.get(src_name)
    return out


def _symlink_target(target: str, link: str | None) -> str:
    """Where a symlink points, from its directory; the target as written when that directory is unknown."""
    if target.startswith("/"):
        return normalize_path(target)
    if link is None or not link.startswith("/"):
        return target
    return normalize_path(posixpath.dirname(link) + "/" + target)
