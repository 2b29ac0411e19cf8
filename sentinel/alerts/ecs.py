"""Render events (and, later, alerts) as ECS 9.x documents: nested objects, one JSON line each.

Field choices follow ../shared/notes/alerts.md: ``@timestamp`` is the kernel's event time, the parent is under
``process.parent`` (``process.ppid`` is gone from ECS), product-specific data lives under ``sentinel.*``.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sentinel.events import (
    AF_INET,
    AF_INET6,
    AF_UNIX,
    FLAG_ARGV_TRUNCATED,
    FLAG_PATH_TRUNCATED,
    Event,
    EventType,
    errno_name,
    open_flag_names,
)
from sentinel.host import HostInfo

if TYPE_CHECKING:
    from sentinel.process.table import Process

ECS_VERSION = "9.1.0"
MAX_ANCESTORS_RENDERED = 32

O_WRITE_MASK = 0o3
O_CREAT = 0o100
O_TRUNC = 0o1000
EINPROGRESS = errno.EINPROGRESS


def error_code(ret: int) -> str | None:
    """The errno name of a failed syscall, None for a success."""
    return errno_name(ret) if ret < 0 else None


class EcsRenderer:
    """Builds ECS documents; the parts that never change per host are built once.

    The process block (with parent and ancestry) is the costly part of a document and is the same for every
    event of a process until something about it changes, so it is cached on the process, keyed by what can
    change it: any exec on the host (ancestors' images), the process's own image, cwd, ids and parent.
    """

    def __init__(self, host: HostInfo, dataset: str = "sentinel.events") -> None:
        self.host = host
        self.dataset = dataset
        self._seq = itertools.count(1)
        self._id_prefix = os.urandom(8).hex()
        self._ts_cache: dict[int, str] = {}
        self.exec_generation = 0  # bumped by the pipeline on every successful exec
        self.host_block = {
            "name": host.hostname,
            "hostname": host.hostname,
            "id": host.machine_id,
            "boot": {"id": host.boot_id},
            "os": {"type": "linux", "kernel": host.kernel},
        }
        self.agent_block = {
            "type": "sentinel",
            "name": host.hostname,
            "id": host.agent_id,
            "version": host.agent_version,
        }

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
        block, _ = self._cached(proc)
        block = dict(block)
        block["thread"] = {"id": ev.tid, "name": ev.comm}  # the comm at the event (threads rename themselves)
        return block

    def ancestry(self, proc: Process | None) -> list[dict[str, Any]]:
        if proc is None:
            return []
        return self._cached(proc)[1]

    def _cached(self, proc: Process) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        key = (self.exec_generation, proc.exec_count, proc.exe, proc.cwd, proc.uid, proc.gid, proc.parent)
        cache = proc.render_cache
        if cache is not None and cache[0] == key:
            return cache[1], cache[2]
        block = self._build_process_block(proc)
        ancestors = [
            {
                "pid": a.pid,
                "entity_id": a.entity_id,
                "executable": a.exe or None,
                "command_line": a.command_line,
            }
            for a in proc.ancestors(MAX_ANCESTORS_RENDERED)
        ]
        proc.render_cache = (key, block, ancestors)
        return block, ancestors

    def _build_process_block(self, proc: Process) -> dict[str, Any]:
        block: dict[str, Any] = {
            "pid": proc.pid,
            "entity_id": proc.entity_id,
            "name": proc.comm,
            "executable": proc.exe or None,
            "args": proc.args,
            "args_count": len(proc.args),
            "command_line": proc.command_line,
            "working_directory": proc.cwd or None,
            "start": self.timestamp(proc.start_ns),
            "user": {"id": str(proc.uid), "name": proc.user_name},
            "group": {"id": str(proc.gid), "name": proc.group_name},
        }
        if proc.tty_nr:
            major = (proc.tty_nr >> 8) & 0xFFF
            minor = (proc.tty_nr & 0xFF) | ((proc.tty_nr >> 12) & 0xFFF00)
            block["tty"] = {"char_device": {"major": major, "minor": minor}}
        parent = proc.parent
        if parent is not None:
            block["parent"] = {
                "pid": parent.pid,
                "entity_id": parent.entity_id,
                "name": parent.comm,
                "executable": parent.exe or None,
                "args": parent.args,
                "command_line": parent.command_line,
                "start": self.timestamp(parent.start_ns),
            }
        elif proc.ppid:
            block["parent"] = {"pid": proc.ppid}
        return block

    def event_doc(self, ev: Event, proc: Process | None, resolved_path: str | None = None) -> dict[str, Any]:
        """An ``event.kind: event`` document for ``sentinel events`` and captures."""
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
            "process": self.process_block(proc, ev),
        }
        detail: dict[str, Any] = {"type": ev.type_name, "ret": ev.ret, "cgroup_id": ev.cgroup_id}
        sentinel: dict[str, Any] = {"event": detail, "ancestors": self.ancestry(proc)}
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
            if ev.ret != 0:
                # A failed exec did not replace the image: show what was attempted.
                detail["args"] = ev.argv
            doc["message"] = f"exec {ev.filename} {' '.join(ev.argv)}"[:1024]
            if ev.ret != 0:
                doc["message"] += f" failed: {err}"
        elif kind is EventType.OPEN:
            path = resolved_path or ev.path
            writes = ev.open_flags & O_WRITE_MASK
            types = ["access"]
            if writes or ev.open_flags & O_TRUNC:
                types = ["change"]
            if ev.open_flags & O_CREAT:
                types.append("creation")
            event.update(category=["file"], type=types, action="open")
            directory, _, name = path.rpartition("/")
            # An unresolved relative path (cwd unknown) has no directory we can name.
            absolute = path[:1] == "/"
            doc["file"] = {"path": path, "name": name, "directory": (directory or "/") if absolute else None}
            if ev.open_flags & O_CREAT:
                doc["file"]["mode"] = f"{stat.S_IMODE(ev.mode):04o}"
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
        return doc
