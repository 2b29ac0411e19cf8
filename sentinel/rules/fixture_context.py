"""Rule fixtures' events: an ECS document (as ``sentinel events`` prints it) turned back into what the
matcher sees: an Event, a Process chain from ``process``, ``process.parent`` and ``sentinel.ancestors``, its
container from ``container`` (and ``sentinel.container``; its runtime metadata: ``fixture_containers``), and
the model's values. Written by hand (fields
that do not matter left out) or pasted from real output."""

from __future__ import annotations

import difflib
import errno
import itertools
import math
import posixpath
import shlex
import socket
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sentinel.alerts.identity import CAPABILITIES
from sentinel.containers.cgroup_path import DOCKER, HOST, SHORT_ID_LEN, ContainerRef
from sentinel.events import (
    AF_INET,
    AF_INET6,
    AF_UNIX,
    AT_FDCWD,
    FLAG_CREAT,
    FLAG_CREATED,
    FLAG_CREATED_KNOWN,
    FLAG_EXECVEAT,
    FLAG_OPENAT2,
    LOGINUID_UNSET,
    OPEN_FLAG_VALUES,
    SESSION_UNSET,
    Credentials,
    Event,
    EventType,
)
from sentinel.file_changes import FILE_TYPES
from sentinel.process.table import Process
from sentinel.rules.context import EvalContext
from sentinel.rules.fields import BOOL, FIELDS, INT
from sentinel.rules.fixture_containers import fixture_metadata
from sentinel.rules.fixture_syscalls import fixture_file_paths, socket_end, syscall_args
from sentinel.rules.fixture_values import TRANSPORTS, FixtureError
from sentinel.rules.fixture_values import as_int as _int
from sentinel.rules.fixture_values import as_map as _map
from sentinel.rules.fixture_values import as_str as _str
from sentinel.sockets import SOCK_KNOWN, SOCKET_TYPES
from sentinel.syscalls import (
    SYSCALLS,
    TARGETED_TYPES,
)

DEFAULT_TIME_NS = 1_700_000_000_000_000_000
DEFAULT_PID = 4242
COMM_LEN = 15

_ACTIONS = {
    "exec": EventType.EXEC,
    "execve": EventType.EXEC,
    "execveat": EventType.EXEC,
    "open": EventType.OPEN,
    "openat": EventType.OPEN,
    "openat2": EventType.OPEN,
    "creat": EventType.OPEN,
    "connect": EventType.CONNECT,
    "fork": EventType.FORK,
    "clone": EventType.FORK,
    "exit": EventType.EXIT,
    "procexit": EventType.EXIT,
    "chdir": EventType.CHDIR,
    "fchdir": EventType.CHDIR,
    "container": EventType.CONTAINER,
    **{spec.name: t for t, spec in SYSCALLS.items()},
    "umount": EventType.UMOUNT2,
}
_FLAG_BITS = OPEN_FLAG_VALUES
_FAMILIES = {"AF_INET": AF_INET, "AF_INET6": AF_INET6, "AF_UNIX": AF_UNIX, "ipv4": AF_INET, "ipv6": AF_INET6}


def _args(value: Any, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.split()
    if not isinstance(value, list):
        raise FixtureError(f"{what} must be a list of strings")
    return [str(a) for a in value]


def parse_time(value: Any, default: int = DEFAULT_TIME_NS) -> int:
    """RFC 3339 (with up to nanoseconds) or epoch ns as an int → epoch ns."""
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    frac_ns = 0
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        for ch in rest:
            if not ch.isdigit():
                break
            digits += ch
        tz = rest[len(digits) :]
        frac_ns = int((digits + "000000000")[:9]) if digits else 0
        text = head + tz
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise FixtureError(f"bad timestamp {value!r}") from None
    if dt.tzinfo is None:
        raise FixtureError(f"timestamp {value!r} needs a time zone (Z)")
    return int(dt.timestamp()) * 1_000_000_000 + frac_ns


def _comm(name: Any, exe: str, args: list[str] | None) -> str:
    if name:
        return str(name)[:COMM_LEN]
    base = posixpath.basename(exe) if exe else (posixpath.basename(args[0]) if args else "")
    return base[:COMM_LEN]


def _ret_from(doc: Mapping[str, Any], detail: Mapping[str, Any], success: int) -> int:
    if "ret" in detail:
        return _int(detail.get("ret"), "sentinel.event.ret", success)
    err = _map(doc.get("error"), "error").get("code") or detail.get("errno")
    if err:
        code = getattr(errno, str(err), None)
        if not isinstance(code, int):
            raise FixtureError(f"unknown errno name {err!r}")
        return -code
    outcome = _map(doc.get("event"), "event").get("outcome")
    if outcome == "failure":
        return -errno.EACCES if success >= 0 else success
    return success


def local_end(family: int, ip: str, port: int) -> tuple[int, int, int]:
    """A connect's local end in the probe's encoding (a bind's ``sys_extra``, ``sentinel.sockets``)."""
    try:
        raw = socket.inet_pton(socket.AF_INET6 if family == AF_INET6 else socket.AF_INET, ip)
    except OSError:
        raise FixtureError(f"source.ip {ip!r} is not an IP address of the connect's family") from None
    raw = raw.ljust(16, b"\0")
    word = port | (port << 16) | (family << 32) | SOCK_KNOWN
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little"), word


def _split_command_line(line: str) -> list[str]:
    """``process.command_line`` back into arguments: shell quoting (as documents write it); a line that is
    not valid shell syntax (an unmatched quote in a hand-written fixture) is split on spaces."""
    try:
        return shlex.split(line)
    except ValueError:
        return line.split(" ")


def _process(block: Mapping[str, Any], what: str, default_pid: int, ts: int) -> Process:
    exe = _str(block.get("executable"), f"{what}.executable")
    args = _args(block.get("args"), f"{what}.args")
    if args is None:
        cmd = block.get("command_line")
        args = _split_command_line(_str(cmd, f"{what}.command_line")) if cmd else ([exe] if exe else [])
    # ECS: process.user is the effective user; the real one is process.real_user when the document has it.
    user = _map(block.get("real_user") or block.get("user"), f"{what}.user")
    group = _map(block.get("real_group") or block.get("group"), f"{what}.group")
    tty = _map(_map(block.get("tty"), f"{what}.tty").get("char_device"), f"{what}.tty.char_device")
    major, minor = _int(tty.get("major"), "tty major", 0), _int(tty.get("minor"), "tty minor", 0)
    pid = _int(block.get("pid"), f"{what}.pid", default_pid)
    vpid = block.get("vpid")
    return Process(
        pid=pid,
        ppid=0,
        start_ns=parse_time(block.get("start"), ts) if block.get("start") is not None else ts,
        entity_id=_str(block.get("entity_id"), f"{what}.entity_id", f"fixture-{pid}"),
        comm=_comm(block.get("name"), exe, args),
        exe=exe,
        filename=exe,
        args=args,
        cwd=_str(block.get("working_directory"), f"{what}.working_directory", "/"),
        uid=_int(user.get("id"), f"{what}.user.id", 0),
        gid=_int(group.get("id"), f"{what}.group.id", _int(user.get("id"), f"{what}.user.id", 0)),
        user_name=_str(user.get("name"), f"{what}.user.name") or None,
        group_name=_str(group.get("name"), f"{what}.group.name") or None,
        tty_nr=(minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12),
        vpid=None if vpid is None else _int(vpid, f"{what}.vpid", 0),
    )


def _container(doc: Mapping[str, Any], sent: Mapping[str, Any]) -> ContainerRef | None:
    """``container.id`` (the whole id, as ECS has it; a 12-character one or a name is taken as it is),
    ``container.runtime`` (default docker) and ``sentinel.container.short_id``/``rootless``. No block, or
    Falco's ``host``: the host."""
    block = _map(doc.get("container"), "container")
    extra = _map(sent.get("container"), "sentinel.container")
    full_id = _str(block.get("id"), "container.id")
    if not full_id or full_id == HOST:
        return None
    runtime = _str(block.get("runtime"), "container.runtime") or DOCKER
    hex_id = len(full_id) == 64 and all(c in "0123456789abcdef" for c in full_id)
    short = _str(extra.get("short_id"), "sentinel.container.short_id") or (
        full_id[:SHORT_ID_LEN] if hex_id else full_id
    )
    return ContainerRef(runtime, full_id, short, extra.get("rootless") is True)


def _cap_mask(names: Any, what: str) -> int:
    if names is None:
        return 0
    if not isinstance(names, list):
        raise FixtureError(f"{what} must be a list of capability names")
    mask = 0
    for name in names:
        text = _str(name, what)
        if text.isdigit():
            mask |= 1 << int(text)
        elif text in CAPABILITIES:
            mask |= 1 << CAPABILITIES.index(text)
        else:
            raise FixtureError(f"{what}: unknown capability {text!r}")
    return mask


def _credentials(
    block: Mapping[str, Any], thread: Mapping[str, Any], extra: Mapping[str, Any]
) -> Credentials | None:
    """What the probes' credentials gave this document, when it shows more than the real ids."""
    caps = _map(thread.get("capabilities"), "process.thread.capabilities")
    if not ("real_user" in block or "saved_user" in block or caps or "login_user" in extra):
        return None

    def uid_of(key: str, default: int) -> int:
        return _int(_map(block.get(key), f"process.{key}").get("id"), f"process.{key}.id", default)

    euid, egid = uid_of("user", 0), uid_of("group", 0)
    login = _map(extra.get("login_user"), "sentinel.process.login_user")
    return Credentials(
        euid=euid,
        suid=uid_of("saved_user", euid),
        fsuid=_int(_map(extra.get("fs_user"), "sentinel.process.fs_user").get("id"), "fs_user.id", euid),
        egid=egid,
        sgid=uid_of("saved_group", egid),
        fsgid=_int(_map(extra.get("fs_group"), "sentinel.process.fs_group").get("id"), "fs_group.id", egid),
        loginuid=_int(login.get("id"), "sentinel.process.login_user.id", LOGINUID_UNSET),
        sessionid=_int(extra.get("session_id"), "sentinel.process.session_id", SESSION_UNSET),
        cap_effective=_cap_mask(caps.get("effective"), "process.thread.capabilities.effective"),
        cap_permitted=_cap_mask(caps.get("permitted"), "process.thread.capabilities.permitted"),
    )


def _chain(doc: Mapping[str, Any], proc_block: Mapping[str, Any], ts: int) -> Process | None:
    """Parent first: process.parent merged with sentinel.ancestors[0], then the other ancestors."""
    sent = _map(doc.get("sentinel"), "sentinel")
    raw = sent.get("ancestors") or []
    if not isinstance(raw, list):
        raise FixtureError("sentinel.ancestors must be a list")
    ancestors = [dict(_map(a, "sentinel.ancestors[]")) for a in raw]
    parent_block = dict(_map(proc_block.get("parent"), "process.parent"))
    if parent_block:
        if ancestors and (
            ancestors[0].get("pid") in (None, parent_block.get("pid")) or "pid" not in parent_block
        ):
            ancestors[0] = {**ancestors[0], **parent_block}
        elif len(parent_block) > 1:  # a lone pid is all ECS says of a parent the table did not know
            ancestors.insert(0, parent_block)
    procs = [_process(a, "ancestor", 1000 - i, ts) for i, a in enumerate(ancestors)]
    for child, parent in itertools.pairwise(procs):
        child.parent = parent
        child.ppid = parent.pid
    for depth, p in enumerate(reversed(procs)):
        p.depth = depth
    return procs[0] if procs else None


# What an ml alert holds under sentinel.ml besides field values: skipped, so pasted alerts load as fixtures.
_ML_ALERT_KEYS = frozenset({"model", "explanation", "incident", "new", "baseline_s"})
_ML_DEFS = {name[3:]: fdef for name, fdef in FIELDS.items() if name.startswith("ml.")}


class StaticMlView:
    """``ml.*`` values given in a fixture (``sentinel.ml: {score: 0.9, novelty: {child: 7}}``), so rules that
    read the anomaly model can be tested without one. Same contract as the agent's view: ``value(name)`` with
    the field name without ``ml.``, None when not given."""

    __slots__ = ("values",)

    def __init__(self, values: Mapping[str, float | int | bool | None]) -> None:
        self.values = dict(values)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> StaticMlView:
        """From the ``sentinel.ml`` mapping (nested or dotted keys); raises FixtureError for unknown names
        (a typo would otherwise leave the field missing and the fixture failing for no visible reason) and
        for values of the wrong type."""
        values: dict[str, float | int | bool | None] = {}
        _ml_values(doc, "", values)
        return cls(values)

    def value(self, name: str) -> float | int | bool | None:
        return self.values.get(name)


def _ml_values(doc: Mapping[str, Any], prefix: str, out: dict[str, float | int | bool | None]) -> None:
    for key, value in doc.items():
        name = f"{prefix}{key}"
        fdef = _ML_DEFS.get(name)
        if fdef is not None:
            out[name] = _ml_value(name, fdef.type, value)
        elif isinstance(value, Mapping) and any(n.startswith(name + ".") for n in _ML_DEFS):
            _ml_values(value, name + ".", out)
        elif not prefix and name in _ML_ALERT_KEYS:
            continue
        else:
            close = difflib.get_close_matches(name, _ML_DEFS, n=1)
            hint = f"; did you mean {close[0]}?" if close else f" (fields: {', '.join(_ML_DEFS)})"
            raise FixtureError(f"sentinel.ml.{name} is not an ml field{hint}")


def _ml_value(name: str, ftype: str, value: Any) -> float | int | bool | None:
    """One given value, checked against its field's type (an int field takes 3 or 3.0, not 2.5)."""
    if value is None:
        return None
    if ftype == BOOL:
        if isinstance(value, bool):
            return value
        raise FixtureError(f"sentinel.ml.{name} must be true or false, not {value!r}")
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise FixtureError(f"sentinel.ml.{name} must be a finite number, not {value!r}")
    if ftype == INT:
        if isinstance(value, float) and not value.is_integer():
            raise FixtureError(f"sentinel.ml.{name} must be an integer, not {value!r}")
        return int(value)
    return value


def from_ecs(doc: Mapping[str, Any]) -> EvalContext:
    """The matcher's input for an ECS event document; raises FixtureError for malformed documents."""
    doc = _map(doc, "the event")
    event = _map(doc.get("event"), "event")
    sent = _map(doc.get("sentinel"), "sentinel")
    detail = _map(sent.get("event"), "sentinel.event")
    pblock = _map(doc.get("process"), "process")
    type_name = _str(detail.get("type"), "sentinel.event.type") or None
    action = _str(event.get("action"), "event.action") or type_name
    if action is None:
        action = "open" if "file" in doc else "connect" if "destination" in doc else "exec"
    etype = _ACTIONS.get(action.lower())
    if etype is None:
        raise FixtureError(
            f"unknown event action {action!r} (exec, open, connect, fork, exit, chdir or a security syscall: "
            "setuid, ptrace, mount...)"
        )
    ts = parse_time(doc.get("@timestamp"))
    proc = _process(pblock, "process", DEFAULT_PID, ts)
    parent = _chain(doc, pblock, ts)
    proc.parent = parent
    if parent is not None:
        proc.ppid = parent.pid
        proc.depth = parent.depth + 1
    elif isinstance(pblock.get("parent"), Mapping):
        proc.ppid = _int(pblock["parent"].get("pid"), "process.parent.pid", 0)
    thread = _map(pblock.get("thread"), "process.thread")
    extra = _map(sent.get("process"), "sentinel.process")
    proc.creds = _credentials(pblock, thread, extra)
    proc.exe_memfd = extra.get("exe_from_memfd") is True
    proc.exe_deleted = extra.get("exe_deleted") is True
    proc.pid_ns = _int(extra.get("pid_ns"), "sentinel.process.pid_ns", 0)
    proc.mnt_ns = _int(extra.get("mnt_ns"), "sentinel.process.mnt_ns", 0)
    host_pid_ns = extra.get("host_pid_ns")
    if host_pid_ns is not None and not isinstance(host_pid_ns, bool):
        raise FixtureError("sentinel.process.host_pid_ns must be true or false")
    proc.host_pid_ns = host_pid_ns
    proc.container, containers = fixture_metadata(doc, sent, _container(doc, sent))
    ev = Event(
        type=etype,
        ts_ns=ts,
        pid=proc.pid,
        tid=_int(thread.get("id"), "process.thread.id", proc.pid),
        uid=proc.uid,
        gid=proc.gid,
        comm=_str(thread.get("name"), "process.thread.name", proc.comm)[:COMM_LEN],
        cgroup_id=_int(detail.get("cgroup_id"), "sentinel.event.cgroup_id", 0),
    )
    path: str | None = None
    names = {type_name or "", action}
    if etype is EventType.EXEC:
        ev.filename = _str(detail.get("filename"), "sentinel.event.filename") or proc.exe
        ev.ret = _ret_from(doc, detail, 0)
        attempted = _args(detail.get("args"), "sentinel.event.args")
        ev.argv = attempted if attempted is not None else list(proc.args)
        ev.argc_total = len(ev.argv)
        if "execveat" in names:
            ev.flags |= FLAG_EXECVEAT
        proc.filename = ev.filename
    elif etype is EventType.OPEN:
        fblock = _map(doc.get("file"), "file")
        path = _str(fblock.get("path"), "file.path") or None
        ev.path = _str(detail.get("raw_path"), "sentinel.event.raw_path", path or "")
        ev.open_flags = _open_flags(detail.get("flags"), event.get("type"))
        # The requested mode: sentinel.event.requested_mode (file.mode in fixtures written before it).
        ev.mode = _mode(detail.get("requested_mode", fblock.get("mode")))
        ev.dirfd = _int(detail.get("dirfd"), "sentinel.event.dirfd", AT_FDCWD)
        ev.repeat_count = _int(detail.get("repeat_count"), "sentinel.event.repeat_count", 0)
        ev.ret = _ret_from(doc, detail, 3)
        # Created: sentinel.event.created, else event.type creation; neither leaves it unknown, as the
        # renderer leaves it without kernel offsets.
        created = detail.get("created")
        kinds = event.get("type")
        if created is None and "creation" in (kinds if isinstance(kinds, list) else [kinds]):
            created = True
        if isinstance(created, bool) and ev.ret >= 0:
            ev.flags |= FLAG_CREATED_KNOWN | (FLAG_CREATED if created else 0)
        if "openat2" in names:
            ev.flags |= FLAG_OPENAT2
        if "creat" in names:
            ev.flags |= FLAG_CREAT
        if path is None:
            path = ev.path
    elif etype is EventType.CONNECT:
        dest = _map(doc.get("destination"), "destination")
        net = _map(doc.get("network"), "network")
        fam_name = _str(detail.get("family"), "sentinel.event.family") or _str(
            net.get("type"), "network.type"
        )
        ev.family = _FAMILIES.get(fam_name, 0)
        ip = _str(dest.get("ip"), "destination.ip")
        ev.address = ip or _str(dest.get("address"), "destination.address")
        if not ev.family:
            ev.family = (AF_INET6 if ":" in ip else AF_INET) if ip else AF_UNIX if ev.address else 0
        ev.port = _int(dest.get("port"), "destination.port", 0)
        ev.sock_type = TRANSPORTS.get(_str(net.get("transport"), "network.transport"), 0)
        ev.fd = _int(detail.get("fd"), "sentinel.event.fd", 3)
        success = -errno.EINPROGRESS if event.get("outcome") == "unknown" else 0
        ev.ret = _ret_from(doc, detail, success)
        source = _map(doc.get("source"), "source")
        local_ip = _str(source.get("ip"), "source.ip")
        if local_ip and ev.family in (AF_INET, AF_INET6):  # the local end, as the probe encodes it
            ev.sys_extra = local_end(ev.family, local_ip, _int(source.get("port"), "source.port", 0))
    elif etype is EventType.CHDIR:
        ev.path = _str(detail.get("raw_path") or detail.get("path"), "sentinel.event.raw_path")
        path = ev.path or None
        ev.ret = _ret_from(doc, detail, 0)
    elif etype is EventType.FORK:
        ev.child_pid = _int(detail.get("child_pid"), "sentinel.event.child_pid", proc.pid + 1)
    target = None
    if etype in SYSCALLS:
        syscall_args(ev, etype, detail)
        ev.ret = _ret_from(doc, detail, 0)
        if etype in SOCKET_TYPES:
            socket_end(ev, doc, detail)
        block = _map(detail.get("target"), "sentinel.event.target")
        if etype in TARGETED_TYPES and block:
            target = _process(block, "sentinel.event.target", 0, ts)
            if etype in (EventType.PIDFD_SEND_SIGNAL, EventType.PIDFD_GETFD):
                ev.sys_extra = (ev.sys_extra[0], target.pid, ev.sys_extra[2])  # the pidfd's process
            if len(block) == 1:
                target = None  # only a pid: the table did not know the process
    ml = sent.get("ml")
    ctx = EvalContext(ev, proc, path, ts, StaticMlView.from_doc(_map(ml, "sentinel.ml")) if ml else None)
    ctx.target = target
    if containers:
        ctx.containers = containers
    if etype in FILE_TYPES:
        ctx.files = fixture_file_paths(ev, proc, detail)
        ctx.path = ctx.files.primary
    return ctx


def _mode(value: Any) -> int:
    """file.mode as ECS prints it ("0644"); a YAML number is taken as already converted."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value), 8)
    except ValueError:
        raise FixtureError(f'file.mode must be octal like "0644", not {value!r}') from None


def _open_flags(flags: Any, types: Any) -> int:
    if flags is None:
        kinds = types if isinstance(types, list) else [types]
        value = 0
        if "change" in kinds:
            value |= _FLAG_BITS["O_WRONLY"]
        if "creation" in kinds:
            value |= _FLAG_BITS["O_CREAT"] | _FLAG_BITS["O_WRONLY"]
        return value
    if isinstance(flags, int) and not isinstance(flags, bool):
        return flags
    names = flags.split("|") if isinstance(flags, str) else flags
    if not isinstance(names, list):
        raise FixtureError("sentinel.event.flags must be a list of O_* names")
    value = 0
    for n in names:
        bit = _FLAG_BITS.get(str(n).strip())
        if bit is None:
            raise FixtureError(f"unknown open flag {n!r}")
        value |= bit
    return value


# --------------------------------------------------------------------------------------------- runner
