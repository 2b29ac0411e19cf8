"""Render events (and, later, alerts) as ECS 9.x documents: nested objects, one JSON line each.

Field choices follow ../shared/notes/alerts.md: ``@timestamp`` is the kernel's event time, the parent is under
``process.parent`` (``process.ppid`` is gone from ECS), product-specific data lives under ``sentinel.*``.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import shlex
import stat
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sentinel.alerts.ecs_container import container_blocks
from sentinel.alerts.ecs_files import file_doc
from sentinel.alerts.ecs_security import security_doc
from sentinel.alerts.ecs_sockets import socket_doc
from sentinel.alerts.identity import identity_parts, process_identity
from sentinel.events import (
    AF_INET,
    AF_INET6,
    AF_UNIX,
    FLAG_ARGV_TRUNCATED,
    FLAG_CREAT,
    FLAG_CREATED,
    FLAG_CREATED_KNOWN,
    FLAG_PATH_TRUNCATED,
    Event,
    EventType,
    errno_name,
    open_flag_names,
)
from sentinel.file_changes import FILE_TYPES, file_paths
from sentinel.host import HostInfo
from sentinel.redact import REDACTED, Span, apply_spans, merge_spans
from sentinel.sockets import SOCKET_TYPES, connect_source

if TYPE_CHECKING:
    from sentinel.containers.cgroup_path import ContainerRef
    from sentinel.containers.meta_view import MetadataView
    from sentinel.file_changes import FilePaths
    from sentinel.process.table import Process
    from sentinel.redact import Redactor

ECS_VERSION = "9.1.0"
MAX_ANCESTORS_RENDERED = 32
_REDACTED_MEMO_MAX = 8192  # processes whose redacted argv is remembered (cleared whole when full)

# Each argument redaction changed, as the process gave it, with the (start, end) spans redaction hid in it.
KnownSecrets = tuple[tuple[str, tuple[tuple[int, int], ...]], ...]
_MARKER = re.compile(r"\[REDACTED(?:: \d+ characters not scanned)?\]")

O_WRITE_MASK = 0o3
O_CREAT = 0o100
O_TRUNC = 0o1000
O_TMPFILE = 0o20000000  # __O_TMPFILE (O_TMPFILE is it with O_DIRECTORY)
EINPROGRESS = errno.EINPROGRESS


def process_name(proc: Process) -> str:
    """ECS ``process.name``: the executable's file name (``basename(process.executable)``), not the kernel's
    15-character comm (``pyenv-version-f``, an interpreter's script name); the comm while the executable is
    not known. Falco's ``proc.name`` (the comm) stays in rule fields and Falco's format;
    ``process.thread.name`` is the comm of the event's thread."""
    exe = proc.exe
    return exe.rpartition("/")[2] or proc.comm if exe else proc.comm


def open_event_types(ev: Event) -> list[str]:
    """ECS ``event.type`` of an open: ``creation`` only when the kernel says the open created the file
    (``Event.created``), ``change`` when it truncated an existing file or opened it for writing, else
    ``access``. Not knowing whether it created (no kernel offsets, an older capture) claims no creation."""
    if ev.created:
        return ["creation"]
    if ev.open_flags & (O_WRITE_MASK | O_TRUNC) or ev.flags & FLAG_CREAT:
        return ["change"]
    return ["access"]


def error_code(ret: int) -> str | None:
    """The errno name of a failed syscall, None for a success."""
    return errno_name(ret) if ret < 0 else None


def hidden_spans(original: str, redacted: str) -> tuple[tuple[int, int], ...]:
    """Where in ``original`` redaction put the markers found in ``redacted``.

    The redactor gives text, not spans; the kept pieces between markers locate them. When that is ambiguous
    (a kept piece that fits in two places) the answer errs wide: everything between the first and the last
    kept piece, or the whole argument, never less than was hidden.
    """
    whole = ((0, len(original)),)
    pieces = _MARKER.split(redacted)
    first, last = pieces[0], pieces[-1]
    limit = len(original) - len(last)
    if len(pieces) < 2 or limit <= len(first):
        return whole
    if not (original.startswith(first) and original.endswith(last)):
        return whole
    if len(pieces) == 2:
        return ((len(first), limit),)
    spans: list[tuple[int, int]] = []
    pos = len(first)
    for piece in pieces[1:-1]:
        at = original.find(piece, pos + 1) if piece else -1
        if at < 0 or at + len(piece) >= limit or 0 <= original.find(piece, at + 1) < limit - len(piece):
            return ((len(first), limit),)
        spans.append((pos, at))
        pos = at + len(piece)
    spans.append((pos, limit))
    return tuple(spans)


def hide_known(text: str, known: KnownSecrets) -> str:
    """``text`` with what redaction hid in each ``known`` argument hidden wherever that argument appears.

    An occurrence counts where the argument stands as a whole (not inside a longer word), so a one-letter
    password does not take every such letter of the text with it. Overlapping occurrences (a ``sh -c``
    argument that holds its child's command line) hide the union of their parts.
    """
    spans: list[Span] = []
    for original, hidden in known:
        start = text.find(original)
        while start >= 0:
            end = start + len(original)
            if _stands_alone(text, start, end):
                spans.extend((start + s, start + e, REDACTED) for s, e in hidden if s < e)
            start = text.find(original, start + 1)
    return apply_spans(text, merge_spans(spans)) if spans else text


def _stands_alone(text: str, start: int, end: int) -> bool:
    """``text[start:end]`` is not the middle of a longer word (``x`` in ``nginx``)."""
    if start > 0 and _is_word(text[start]) and _is_word(text[start - 1]):
        return False
    return not (end < len(text) and _is_word(text[end - 1]) and _is_word(text[end]))


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


class _Lineage:
    """What redaction hid across a process's lineage, gathered while its block is built."""

    __slots__ = ("found", "secrets")

    def __init__(self) -> None:
        self.found: dict[str, tuple[tuple[int, int], ...]] = {}
        self.secrets: KnownSecrets = ()


class EcsRenderer:
    """Builds ECS documents; the parts that never change per host are built once.

    The process block (with parent and ancestry) is the costly part of a document and is the same for every
    event of a process until something about it changes, so it is cached on the process, keyed by what can
    change it: any exec on the host (ancestors' images), the process's own image, cwd, ids and parent.

    With an active :class:`~sentinel.redact.Redactor`, argv and command lines (the process, its parent, its
    ancestors, an exec's message) are redacted before they enter a document. The cached block is stored
    redacted, so the cost is once per process, not per document; without one nothing changes.
    """

    def __init__(
        self, host: HostInfo, dataset: str = "sentinel.events", *, redactor: Redactor | None = None
    ) -> None:
        self.host = host
        self.dataset = dataset
        self._seq = itertools.count(1)
        self._id_prefix = os.urandom(8).hex()
        self._ts_cache: dict[int, str] = {}
        # Part of the process-block cache key: bumped by the pipeline on every successful exec (ancestors'
        # images changed) and by set_redactor (cached blocks were redacted by the previous redactor).
        self.exec_generation = 0
        # The containers' runtime metadata (the streams set it; None: no metadata). Not in the process
        # block's cache: the container blocks are looked up per document, keyed by the metadata's state.
        self.containers: MetadataView | None = None
        self._redactor: Redactor | None = redactor
        self._active: Redactor | None = redactor if redactor is not None and redactor.active else None
        # (entity id, exec count) → (argv it was computed from, redacted argv, command line, what was hidden)
        self._redacted: dict[tuple[str, int], tuple[list[str], list[str], str, KnownSecrets]] = {}
        self.host_block = {
            "name": host.hostname,
            "hostname": host.hostname,
            "id": host.machine_id,
            "boot": {"id": host.boot_id},
            "os": {"type": "linux", "kernel": host.kernel},
        }
        if host.host_pid_ns:  # pid 1's pid namespace: compare with sentinel.process.pid_ns
            self.host_block["pid_ns_ino"] = str(host.host_pid_ns)
        self.agent_block = {
            "type": "sentinel",
            "name": host.hostname,
            "id": host.agent_id,
            "version": host.agent_version,
        }

    @property
    def redactor(self) -> Redactor | None:
        """The redactor applied to argv and command lines (None: none)."""
        return self._redactor

    @redactor.setter
    def redactor(self, redactor: Redactor | None) -> None:
        self.set_redactor(redactor)

    @property
    def active_redactor(self) -> Redactor | None:
        """The redactor when it would change anything, else None (the common, free case)."""
        return self._active

    def set_redactor(self, redactor: Redactor | None) -> None:
        """Swap the redactor (a config reload); cached process blocks are invalidated, since they were
        built with the old one and must neither keep a secret it missed nor hide what it no longer hides."""
        self._redactor = redactor
        self._active = redactor if redactor is not None and redactor.active else None
        self._redacted = {}
        self.exec_generation += 1

    def _args_cmdline(self, proc: Process, lineage: _Lineage | None = None) -> tuple[list[str], str]:
        """A process's argv and command line as documents show them (redacted when a redactor is active).

        ``lineage`` collects the arguments redaction changed (first pass) or, once it knows them, hides
        them in this argv before it is redacted (second pass). The first-pass result is memoised per process
        image: a parent's or ancestor's argv is redacted once, not once per child that renders it.
        """
        r = self._active
        if r is None:
            return proc.args, proc.command_line
        source, command_line = proc.args, proc.command_line
        key = (proc.entity_id, proc.exec_count)
        memo = self._redacted.get(key)
        if memo is None or memo[0] is not source:
            args = r.redact_args(source)
            found: list[tuple[str, tuple[tuple[int, int], ...]]] = []
            if args is not source:
                for original, redacted in zip(source, args, strict=False):
                    if original and original != redacted:
                        found.append((original, hidden_spans(original, redacted)))
            if len(self._redacted) >= _REDACTED_MEMO_MAX:
                self._redacted.clear()
            memo = (source, args, shlex.join(args) if args else r.redact(command_line), tuple(found))
            self._redacted[key] = memo
        if lineage is None:
            return memo[1], memo[2]
        if not lineage.secrets:
            for original, spans in memo[3]:
                lineage.found.setdefault(original, spans)
            return memo[1], memo[2]
        # Second pass: only secrets found in *other* argv of the lineage can change this one.
        own = {original for original, _ in memo[3]}
        foreign = tuple(item for item in lineage.secrets if item[0] not in own)
        if foreign:
            hidden = [hide_known(a, foreign) for a in source]
            hidden_line = hide_known(command_line, foreign)
            if hidden != source or hidden_line != command_line:
                args = r.redact_args(hidden)
                return args, shlex.join(args) if args else r.redact(hidden_line)
        return memo[1], memo[2]

    def known_secrets(self, proc: Process | None) -> KnownSecrets:
        """The arguments redaction changed in the process's, its parent's and its ancestors' argv, with what
        it hid in each (empty without an active redactor); cached with the process block.

        A rule's output quotes argv in forms that lost the context the redactor needs (``proc.args`` drops
        the program name that makes ``-pX`` a mysql password; a joined ``--password two words`` looks like a
        one-word secret): the alert renderers hide the same parts wherever these arguments appear.
        """
        if proc is None or self._active is None:
            return ()
        return self._cached(proc)[2]

    def timestamp(self, boot_ns: int) -> str:
        """RFC 3339 UTC with nanoseconds of a CLOCK_BOOTTIME instant."""
        return self.wall_timestamp(self.host.boot_time_ns + boot_ns)

    def wall_timestamp(self, wall_ns: int) -> str:
        secs, ns = divmod(wall_ns, 1_000_000_000)
        prefix = self._ts_cache.get(secs)
        if prefix is None:
            if len(self._ts_cache) > 64:  # event times and "now" interleave: keep a few seconds of each
                self._ts_cache.clear()
            prefix = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            self._ts_cache[secs] = prefix
        return f"{prefix}{ns:09d}Z"

    def new_id(self) -> tuple[str, int]:
        """Unique per document: a random per-run prefix and a counter, in UUID form (cheaper than uuid4)."""
        n = next(self._seq)
        p = self._id_prefix
        return f"{p[:8]}-{p[8:12]}-{p[12:16]}-{n >> 48 & 0xFFFF:04x}-{n & 0xFFFFFFFFFFFF:012x}", n

    def process_block(self, proc: Process | None, ev: Event) -> dict[str, Any]:
        if proc is None:
            return {
                "pid": ev.pid,
                "name": ev.comm,
                "thread": {"id": ev.tid, "name": ev.comm},
                "user": {"id": str(ev.uid)},
                "group": {"id": str(ev.gid)},
            }
        return self._with_thread(self._cached(proc)[0], ev, identity_parts(proc)[1])

    @staticmethod
    def _with_thread(block: dict[str, Any], ev: Event, caps: dict[str, Any] | None) -> dict[str, Any]:
        """The cached process block with this event's thread: its comm (threads rename) and capabilities."""
        thread: dict[str, Any] = {"id": ev.tid, "name": ev.comm}
        if caps is not None:
            thread["capabilities"] = caps
        return {**block, "thread": thread}

    def ancestry(self, proc: Process | None) -> list[dict[str, Any]]:
        if proc is None:
            return []
        return self._cached(proc)[1]

    def _cached(self, proc: Process) -> tuple[dict[str, Any], list[dict[str, Any]], KnownSecrets]:
        key = (
            self.exec_generation, proc.exec_count, proc.exe, proc.cwd, proc.uid, proc.gid, proc.parent,
            proc.creds, proc.tty_nr, proc.exe_deleted, proc.vpid,
        )  # fmt: skip
        cache = proc.render_cache
        if cache is not None and cache[0] == key:
            return cache[1], cache[2], cache[3]
        lineage = _Lineage() if self._active is not None else None
        block, ancestors = self._build(proc, lineage)
        if lineage is not None and lineage.found:
            # What redaction hid in one argv of the lineage is hidden in the others too: a secret handed
            # down as a bare argument (``app --db-password X`` runs ``helper X``), a child's argument
            # quoted in its parent's ``sh -c`` line. Rare, so paid only then: the block is built again.
            lineage.secrets = tuple(lineage.found.items())
            block, ancestors = self._build(proc, lineage)
        secrets = lineage.secrets if lineage is not None else ()
        proc.render_cache = (key, block, ancestors, secrets)
        return block, ancestors, secrets

    def _build(self, proc: Process, lineage: _Lineage | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        block = self._build_process_block(proc, lineage)
        ancestors = [
            {
                "pid": a.pid,
                "entity_id": a.entity_id,
                "executable": a.exe or None,
                "command_line": self._args_cmdline(a, lineage)[1],
            }
            for a in proc.ancestors(MAX_ANCESTORS_RENDERED)
        ]
        return block, ancestors

    def _build_process_block(self, proc: Process, lineage: _Lineage | None = None) -> dict[str, Any]:
        args, command_line = self._args_cmdline(proc, lineage)
        block: dict[str, Any] = {
            "pid": proc.pid,
            "entity_id": proc.entity_id,
            "name": process_name(proc),
            "executable": proc.exe or None,
            "args": args,
            "args_count": len(proc.args),
            "command_line": command_line,
            "working_directory": proc.cwd or None,
            "start": self.timestamp(proc.start_ns),
            **process_identity(proc),
        }
        if proc.vpid is not None:  # ECS: the pid in its own pid namespace (a container's first process: 1)
            block["vpid"] = proc.vpid
        parent = proc.parent
        if parent is not None:
            parent_args, parent_command_line = self._args_cmdline(parent, lineage)
            block["parent"] = {
                "pid": parent.pid,
                "entity_id": parent.entity_id,
                "name": process_name(parent),
                "executable": parent.exe or None,
                "args": parent_args,
                "command_line": parent_command_line,
                "start": self.timestamp(parent.start_ns),
            }
            if parent.vpid is not None:
                block["parent"]["vpid"] = parent.vpid
        elif proc.ppid:
            block["parent"] = {"pid": proc.ppid}
        return block

    def _container(self, doc: dict[str, Any], sentinel: dict[str, Any], ref: ContainerRef) -> None:
        view = self.containers
        if view is None:
            doc["container"], sentinel["container"], orchestrator = container_blocks(ref)
        else:
            fields = view.fields.get(ref.full_id)
            mark = view.mark(ref.full_id) if fields is None else None
            doc["container"], sentinel["container"], orchestrator = container_blocks(ref, fields, mark)
        if orchestrator is not None:
            doc["orchestrator"] = orchestrator

    def _container_started(
        self, doc: dict[str, Any], event: dict[str, Any], sentinel: dict[str, Any], proc: Process | None
    ) -> None:
        """A container's runtime metadata arrived (Falco's `container` event): its mounts go with it."""
        event.update(category=["process"], type=["info"], action="container")
        ref = proc.container if proc is not None else None
        view = self.containers
        fields = view.fields.get(ref.full_id) if view is not None and ref is not None else None
        meta = fields.meta if fields is not None else None
        if meta is not None and meta.mounts is not None and "container" in sentinel:
            mounts = [{"source": m.source, "destination": m.destination, "mode": m.mode, "rw": m.rw,
                       "propagation": m.propagation} for m in meta.mounts]  # fmt: skip
            sentinel["container"] = {**sentinel["container"], "mounts": mounts}  # (the shared block: copied)
            if meta.mounts_truncated:
                sentinel["container"]["mounts_truncated"] = True
        name = meta.name if meta is not None and meta.name else (ref.id if ref is not None else "")
        doc["message"] = f"container {name} started" + (f" ({meta.image})" if meta is not None and meta.image
                                                        else "")  # fmt: skip

    def event_doc(
        self,
        ev: Event,
        proc: Process | None,
        resolved_path: str | None = None,
        target: tuple[int | None, Process | None, str | None] | None = None,
        files: FilePaths | None = None,
    ) -> dict[str, Any]:
        """An ``event.kind: event`` document for ``sentinel events`` and captures; ``target`` (security
        syscalls): the pid aimed at, its process, and the path behind the call's fd; ``files`` (file changes):
        the call's paths, resolved."""
        kind = ev.type
        doc_id, seq = self.new_id()
        event: dict[str, Any] = {
            "kind": "event",
            "module": "sentinel",
            "dataset": self.dataset,
            "id": doc_id,
            "sequence": seq,
            "created": self.wall_timestamp(time.time_ns()),
            "outcome": "success" if ev.ret >= 0 else "failure",
        }
        doc: dict[str, Any] = {
            "@timestamp": self.timestamp(ev.ts_ns),
            "ecs": {"version": ECS_VERSION},
            "event": event,
            "agent": self.agent_block,
            "host": self.host_block,
        }
        detail: dict[str, Any] = {"type": ev.type_name, "ret": ev.ret, "cgroup_id": ev.cgroup_id}
        sentinel: dict[str, Any] = {"event": detail}
        if proc is None:
            doc["process"] = block = self.process_block(None, ev)
            doc["user"], doc["group"] = block["user"], block["group"]
            sentinel["ancestors"] = []
        else:  # one cache lookup each for the lineage and the identity (process_block would repeat both)
            block, sentinel["ancestors"], _ = self._cached(proc)
            extra, caps = identity_parts(proc)
            # ECS top-level user and group mirror process.user/group (the effective ids), as Elastic
            # Defend writes them; the same (cached, never mutated) objects.
            doc["user"], doc["group"] = block["user"], block["group"]
            doc["process"] = self._with_thread(block, ev, caps)
            if extra is not None:
                sentinel["process"] = extra
            if proc.container is not None:  # the host has no container block (ECS has no "host" value)
                self._container(doc, sentinel, proc.container)
        doc["sentinel"] = sentinel
        err = error_code(ev.ret)
        if err:
            doc["error"] = {"code": err, "message": os.strerror(-ev.ret)}
            detail["errno"] = err

        if kind is EventType.EXEC:
            event.update(category=["process"], type=["start"] if ev.ret == 0 else ["info"], action="exec")
            detail["filename"] = ev.filename
            if ev.flags & FLAG_ARGV_TRUNCATED:
                sentinel["truncated"] = {"args": True, "args_total": ev.argc_total}
            argv = ev.argv
            if self._active is not None:
                known = self.known_secrets(proc)
                if known:  # an argument the lineage's redaction hid, given again to this exec
                    argv = [hide_known(a, known) for a in argv]
                argv = self._active.redact_args(argv)
            if ev.ret != 0:
                # A failed exec did not replace the image: show what was attempted.
                detail["args"] = argv
            doc["message"] = f"exec {ev.filename} {' '.join(argv)}"[:1024]
            if ev.ret != 0:
                doc["message"] += f" failed: {err}"
        elif kind is EventType.OPEN:
            path = resolved_path or ev.path
            event.update(category=["file"], type=open_event_types(ev), action="open")
            directory, _, name = path.rpartition("/")
            # An unresolved relative path (cwd unknown) has no directory we can name.
            absolute = path[:1] == "/"
            doc["file"] = {"path": path, "name": name, "directory": (directory or "/") if absolute else None}
            if ev.open_flags & (O_CREAT | O_TMPFILE) or ev.flags & FLAG_CREAT:
                # The mode open(2) was given, before the umask: not the file's mode (ECS file.mode).
                detail["requested_mode"] = f"{stat.S_IMODE(ev.mode):04o}"
            if ev.flags & FLAG_CREATED_KNOWN:  # a successful O_CREAT open the kernel told about
                detail["created"] = bool(ev.flags & FLAG_CREATED)
            detail.update(raw_path=ev.path, flags=open_flag_names(ev.open_flags), dirfd=ev.dirfd)
            if ev.repeat_count:
                detail["repeat_count"] = ev.repeat_count
            if ev.flags & FLAG_PATH_TRUNCATED:
                sentinel["truncated"] = {"path": True}
            doc["message"] = f"open {path} [{'|'.join(detail['flags'])}]" + (f" failed: {err}" if err else "")
        elif kind is EventType.CONNECT:
            event.update(category=["network"], type=["connection", "start"], action="connect")
            if ev.ret == -EINPROGRESS:
                event["outcome"] = "unknown"
            network: dict[str, Any] = {"direction": "egress"}
            if ev.family in (AF_INET, AF_INET6):
                doc["destination"] = {"ip": ev.address, "port": ev.port, "address": ev.address}
                local = connect_source(ev)
                if local is not None:  # the local end the kernel gave the socket (BTF offsets)
                    doc["source"] = {"ip": local[0], "port": local[1], "address": local[0]}
                network["type"] = "ipv4" if ev.family == AF_INET else "ipv6"
                network["transport"] = {1: "tcp", 2: "udp"}.get(ev.sock_type)
                target = f"[{ev.address}]:{ev.port}" if ev.family == AF_INET6 else f"{ev.address}:{ev.port}"
            else:
                doc["destination"] = {"address": ev.address}
                target = ev.address
            doc["network"] = network
            detail.update(
                family={AF_INET: "AF_INET", AF_INET6: "AF_INET6", AF_UNIX: "AF_UNIX"}.get(ev.family), fd=ev.fd
            )
            doc["message"] = f"connect {target}" + (f" result {err}" if err else "")
        elif kind is EventType.FORK:
            event.update(category=["process"], type=["start"], action="fork")
            detail["child_pid"] = ev.child_pid
            detail["clone_flags"] = ev.clone_flags
            doc["message"] = f"fork {ev.pid} -> {ev.child_pid}"
        elif kind is EventType.EXIT:
            event.update(category=["process"], type=["end"], action="exit")
            doc["message"] = f"exit {ev.pid}"
        elif kind is EventType.CHDIR:
            event.update(category=["process"], type=["change"], action="chdir")
            doc["message"] = f"chdir {resolved_path or ev.path}"
        elif kind is EventType.CONTAINER:
            self._container_started(doc, event, sentinel, proc)
        elif kind in SOCKET_TYPES:
            socket_doc(doc, event, detail, ev)
        elif kind in FILE_TYPES:
            file_doc(doc, event, detail, ev, files if files is not None else file_paths(ev, None))
        elif kind >= EventType.TAMPER:
            pid, target_proc, fd_path = target or (None, None, None)
            security_doc(doc, event, detail, ev, target_proc, pid, fd_path)
        return doc
