"""Rule fixtures: events (as ``sentinel events`` prints them) with the rules that must fire on them.

A rules file ``x.yaml`` may have a sibling ``x.fixtures.yaml``, a list of
``{name, event: <ECS document>, expect: [rule names]}``; ``expect`` is exactly the set of rules (of the whole
ruleset under test) that must fire. :func:`from_ecs` rebuilds the matcher's input from such a document — an
Event and a Process chain from ``process``, ``process.parent`` and ``sentinel.ancestors`` — so fixtures can be
written by hand (fields that do not matter left out) or pasted from real output.

A rule counts a *positive* fixture when one expects it, and a *negative* one when a fixture of its own file
reaches it (an event type it looks at) without expecting it: an event it examined and must reject.
"""

from __future__ import annotations

import difflib
import errno
import itertools
import math
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from sentinel.alerts.identity import CAPABILITIES
from sentinel.events import (
    AF_INET,
    AF_INET6,
    AF_UNIX,
    AT_FDCWD,
    FLAG_CREAT,
    FLAG_EXECVEAT,
    FLAG_OPENAT2,
    LOGINUID_UNSET,
    OPEN_FLAG_VALUES,
    SESSION_UNSET,
    Credentials,
    Event,
    EventType,
)
from sentinel.file_changes import FILE_TYPES, FilePaths, file_paths
from sentinel.process.table import Process, normalize_path
from sentinel.rules.context import EvalContext
from sentinel.rules.fields import BOOL, FIELDS, INT
from sentinel.rules.loader import LoadResult, expand_paths, load_rules
from sentinel.rules.model import Diagnostic
from sentinel.rules.source import SourceText
from sentinel.syscalls import (
    NS_KINDS,
    SYSCALLS,
    TARGETED_TYPES,
    USERNS_KNOWN,
    UTIME_NOW,
    UTIME_OMIT,
    init_ns_mask,
)

DEFAULT_TIME_NS = 1_700_000_000_000_000_000
DEFAULT_PID = 4242
COMM_LEN = 15
FIXTURE_SUFFIXES = (".fixtures.yaml", ".fixtures.yml")

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
    **{spec.name: t for t, spec in SYSCALLS.items()},
    "umount": EventType.UMOUNT2,
}
_FLAG_BITS = OPEN_FLAG_VALUES
_FAMILIES = {"AF_INET": AF_INET, "AF_INET6": AF_INET6, "AF_UNIX": AF_UNIX, "ipv4": AF_INET, "ipv6": AF_INET6}
_TRANSPORTS = {"tcp": 1, "udp": 2}


class FixtureError(ValueError):
    """A fixture document that cannot be turned into an event."""


def _map(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise FixtureError(f"{what} must be a mapping")
    return value


def _int(value: Any, what: str, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise FixtureError(f"{what} must be a number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FixtureError(f"{what} must be a number, not {value!r}") from None


def _str(value: Any, what: str, default: str = "") -> str:
    if value is None:
        return default
    if isinstance(value, (Mapping, list)):
        raise FixtureError(f"{what} must be a string")
    return str(value)


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


def _process(block: Mapping[str, Any], what: str, default_pid: int, ts: int) -> Process:
    exe = _str(block.get("executable"), f"{what}.executable")
    args = _args(block.get("args"), f"{what}.args")
    if args is None:
        cmd = block.get("command_line")
        args = _str(cmd, f"{what}.command_line").split(" ") if cmd else ([exe] if exe else [])
    # ECS: process.user is the effective user; the real one is process.real_user when the document has it.
    user = _map(block.get("real_user") or block.get("user"), f"{what}.user")
    group = _map(block.get("real_group") or block.get("group"), f"{what}.group")
    tty = _map(_map(block.get("tty"), f"{what}.tty").get("char_device"), f"{what}.tty.char_device")
    major, minor = _int(tty.get("major"), "tty major", 0), _int(tty.get("minor"), "tty minor", 0)
    pid = _int(block.get("pid"), f"{what}.pid", default_pid)
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
    )


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
        ev.mode = _mode(fblock.get("mode"))
        ev.dirfd = _int(detail.get("dirfd"), "sentinel.event.dirfd", AT_FDCWD)
        ev.repeat_count = _int(detail.get("repeat_count"), "sentinel.event.repeat_count", 0)
        ev.ret = _ret_from(doc, detail, 3)
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
        ev.sock_type = _TRANSPORTS.get(_str(net.get("transport"), "network.transport"), 0)
        ev.fd = _int(detail.get("fd"), "sentinel.event.fd", 3)
        success = -errno.EINPROGRESS if event.get("outcome") == "unknown" else 0
        ev.ret = _ret_from(doc, detail, success)
    elif etype is EventType.CHDIR:
        ev.path = _str(detail.get("raw_path") or detail.get("path"), "sentinel.event.raw_path")
        path = ev.path or None
        ev.ret = _ret_from(doc, detail, 0)
    elif etype is EventType.FORK:
        ev.child_pid = _int(detail.get("child_pid"), "sentinel.event.child_pid", proc.pid + 1)
    target = None
    if etype in SYSCALLS:
        _syscall(ev, etype, detail)
        ev.ret = _ret_from(doc, detail, 0)
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
    if etype in FILE_TYPES:
        ctx.files = _file_paths(ev, proc, detail)
        ctx.path = ctx.files.primary
    return ctx


def _syscall(ev: Event, etype: EventType, detail: Mapping[str, Any]) -> None:
    """A security syscall's arguments from ``sentinel.event.rawarg`` (as the live documents carry them; a
    string argument may be given under ``sentinel.event.arg`` alone)."""
    raw = _map(detail.get("rawarg"), "sentinel.event.rawarg")
    shown = _map(detail.get("arg"), "sentinel.event.arg")
    args, extra, strs = [0] * 6, [0] * 3, ["", "", ""]
    used_strs = 0
    for arg in SYSCALLS[etype].args:
        where, i = arg.source[0], int(arg.source[1])
        value = raw.get(arg.name, shown.get(arg.name) if arg.kind in ("str", "path") else None)
        what = f"sentinel.event.rawarg.{arg.name}"
        if arg.kind == "time":  # utimensat: tv_sec in rawarg, or the time as shown (ISO, UTIME_NOW/OMIT)
            sec, nsec = _utime(value, shown.get(arg.name), what)
            if sec is not None:
                extra[i] = sec & 0xFFFFFFFFFFFFFFFF
                extra[2] |= nsec << (32 * i)
                args[2] = args[2] or 1  # a times pointer
            continue
        if where == "s":
            strs[i] = _str(value, what)
            used_strs = max(used_strs, i + 1)
        elif value is not None:
            (args if where == "a" else extra)[i] = _int(value, what, 0) & 0xFFFFFFFFFFFFFFFF
    setns = _map(detail.get("setns"), "sentinel.event.setns")
    if setns:  # what the kernel resolved the fd to (without either, a namespace inode of 1 stands in)
        extra[1] = _int(setns.get("pid"), "sentinel.event.setns.pid", 0)
        extra[0] = _int(setns.get("ns_inode"), "sentinel.event.setns.ns_inode", 0 if extra[1] else 1)
        kinds = setns.get("init_ns") or []
        if not isinstance(kinds, list) or not all(isinstance(k, str) and k in NS_KINDS for k in kinds):
            raise FixtureError(f"sentinel.event.setns.init_ns must be a list of {', '.join(NS_KINDS)}")
        extra[1] |= init_ns_mask(kinds) << 32
    userns = _map(detail.get("userns"), "sentinel.event.userns")
    if userns:
        level = _int(userns.get("level"), "sentinel.event.userns.level", 0)
        extra[2] = _int(userns.get("inode"), "sentinel.event.userns.inode", 1) | level << 32 | USERNS_KNOWN
    ev.sys_args, ev.sys_extra, ev.sys_strs = tuple(args), tuple(extra), tuple(strs[:used_strs])


def _utime(raw: Any, shown: Any, what: str) -> tuple[int | None, int]:
    """(tv_sec, tv_nsec) of a fixture's utimensat time; (None, 0) when none is given."""
    if shown in ("UTIME_NOW", "UTIME_OMIT"):
        return _int(raw, what, 0), UTIME_NOW if shown == "UTIME_NOW" else UTIME_OMIT
    if raw is not None:
        return _int(raw, what, 0), 0
    if shown is None:
        return None, 0
    try:
        when = datetime.fromisoformat(str(shown).replace("Z", "+00:00"))
    except ValueError:
        raise FixtureError(f"{what}: a time like 2020-01-01T00:00:00Z, UTIME_NOW or UTIME_OMIT") from None
    return int(when.timestamp()), when.microsecond * 1000


def _file_paths(ev: Event, proc: Process, detail: Mapping[str, Any]) -> FilePaths:
    """A fixture's file-change paths: relative ones against the process's working directory, an fd's path
    from ``sentinel.event.fd_path``."""
    fd_path = _str(detail.get("fd_path"), "sentinel.event.fd_path") or None

    def resolve(dirfd: int, path: str) -> str:
        if path.startswith("/"):
            return normalize_path(path)
        if not path:
            return fd_path or ""
        return normalize_path(f"{proc.cwd}/{path}") if dirfd == AT_FDCWD and proc.cwd else path

    return file_paths(ev, resolve)


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


@dataclass
class Fixture:
    name: str
    file: str
    line: int
    expect: list[str]
    doc: Any


@dataclass
class FixtureResult:
    fixture: Fixture
    fired: list[str]
    ok: bool
    error: str | None = None
    event_type: int | None = None

    def to_dict(self) -> dict[str, Any]:
        f = self.fixture
        missing = [r for r in f.expect if r not in self.fired]
        unexpected = [r for r in self.fired if r not in f.expect]
        return {
            "name": f.name, "file": f.file, "line": f.line, "ok": self.ok, "expected": f.expect,
            "fired": self.fired, "missing": missing, "unexpected": unexpected, "error": self.error,
        }  # fmt: skip


@dataclass
class RuleCoverage:
    rule: str
    file: str
    line: int
    positive: int = 0
    negative: int = 0
    failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "file": self.file, "line": self.line, "positive": self.positive,
                "negative": self.negative, "failed": self.failed}  # fmt: skip


@dataclass
class TestReport:
    load: LoadResult
    results: list[FixtureResult] = field(default_factory=list)
    coverage: dict[str, RuleCoverage] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)  # fixture files' problems, coverage gaps

    @property
    def ok(self) -> bool:
        return (
            self.load.ruleset is not None
            and all(r.ok for r in self.results)
            and not any(d.severity == "error" for d in self.diagnostics)
        )

    @property
    def failed(self) -> list[FixtureResult]:
        return [r for r in self.results if not r.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "load_diagnostics": [d.to_dict() for d in self.load.diagnostics],
            "diagnostics": [d.to_dict() for d in self.diagnostics],
            "fixtures": [r.to_dict() for r in self.results],
            "rules": [c.to_dict() for c in self.coverage.values()],
            "passed": sum(1 for r in self.results if r.ok),
            "failed": len(self.failed),
        }


def fixtures_path(rules_file: str) -> str | None:
    base = rules_file
    for ext in (".yaml", ".yml"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    for suffix in FIXTURE_SUFFIXES:
        cand = base + suffix
        if Path(cand).is_file():
            return cand
    return None


def read_fixtures(path: str) -> tuple[list[Fixture], list[Diagnostic]]:
    """Fixtures of one file with their lines; problems as located diagnostics."""
    diags: list[Diagnostic] = []
    empty = SourceText(path, "")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [empty.diagnostic("error", "unreadable-file", f"cannot read fixtures {path}: {exc}", 1, 1)]
    src = SourceText(path, text)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = src.position(mark.index) if mark is not None else (1, 1)
        return [], [src.diagnostic("error", "yaml-error", f"YAML: {exc.problem}", line, col)]
    except (yaml.YAMLError, RecursionError) as exc:
        return [], [src.diagnostic("error", "yaml-error", f"YAML: {exc}", 1, 1)]
    if data is None:
        return [], []
    if not isinstance(data, list) or not isinstance(node, yaml.SequenceNode):
        return [], [
            src.diagnostic("error", "not-a-list", "a fixtures file is a list of {name, event, expect}", 1, 1)
        ]
    out: list[Fixture] = []
    seen: dict[str, int] = {}
    for item, inode in zip(data, node.value, strict=False):
        line, col = src.position(inode.start_mark.index)
        if not isinstance(item, dict):
            diags.append(
                src.diagnostic("error", "bad-type", "a fixture is a mapping {name, event, expect}", line, col)
            )
            continue
        missing = [k for k in ("name", "event", "expect") if k not in item]
        if missing:
            diags.append(
                src.diagnostic("error", "missing-key", f"fixture is missing: {', '.join(missing)}", line, col)
            )
            continue
        for key in item:
            if key not in ("name", "event", "expect", "description", "note"):
                diags.append(
                    src.diagnostic("warning", "unknown-key", f"unknown key {key!r} in a fixture", line, col)
                )
        name = str(item["name"])
        if name in seen:
            diags.append(
                src.diagnostic(
                    "error",
                    "duplicate-item",
                    f"fixture name {name!r} is used twice (first on line {seen[name]})",
                    line,
                    col,
                )
            )
        seen[name] = line
        expect = item["expect"]
        if expect is None:
            expect = []
        if isinstance(expect, str):
            expect = [expect]
        if not isinstance(expect, list) or not all(isinstance(e, str) for e in expect):
            diags.append(src.diagnostic("error", "bad-type", "expect is a list of rule names", line, col))
            continue
        out.append(Fixture(name, path, line, list(expect), item["event"]))
    return out, diags


def run_fixtures(paths: Iterable[str | Path]) -> TestReport:
    """Load the rules at ``paths`` and run every rules file's sibling fixtures against the whole ruleset."""
    rule_paths: list[str] = []
    explicit: list[str] = []
    for p in paths:
        s = str(p)
        if s.endswith(FIXTURE_SUFFIXES):
            explicit.append(s)
            base = s[: -len(".fixtures.yaml")] if s.endswith(".fixtures.yaml") else s[: -len(".fixtures.yml")]
            rule_paths.append(base + (".yaml" if Path(base + ".yaml").exists() else ".yml"))
        else:
            rule_paths.append(s)
    load = load_rules(rule_paths)
    report = TestReport(load)
    rs = load.ruleset
    fixture_files: list[str] = []
    for f, _ in expand_paths(rule_paths):
        fx = fixtures_path(f)
        if fx is not None and fx not in fixture_files:
            fixture_files.append(fx)
    for fx in explicit:
        if fx not in fixture_files:
            fixture_files.append(fx)
    if rs is None:
        return report
    for r in rs.rules:
        if r.enabled and r.skipped is None:
            report.coverage[r.name] = RuleCoverage(r.name, r.file, r.line)
    rules_by_file: dict[str, list[str]] = {}
    for r in rs.rules:
        rules_by_file.setdefault(r.file, []).append(r.name)
    for fx_file in fixture_files:
        fixtures, diags = read_fixtures(fx_file)
        report.diagnostics.extend(diags)
        src = SourceText(fx_file, _read_or_empty(fx_file))
        own_rules = set(rules_by_file.get(_rules_sibling(fx_file), []))
        for fixture in fixtures:
            for name in fixture.expect:
                rule = rs.get(name)
                problem = None
                if rule is None:
                    problem = f"fixture {fixture.name!r} expects rule {name!r}, which is not in the ruleset"
                elif not rule.enabled or rule.skipped is not None:
                    problem = f"fixture {fixture.name!r} expects rule {name!r}, which is disabled"
                if problem:
                    report.diagnostics.append(
                        src.diagnostic("error", "unknown-rule", problem, fixture.line, 1)
                    )
            try:
                ctx = from_ecs(fixture.doc)
            except FixtureError as exc:
                report.results.append(FixtureResult(fixture, [], False, f"bad event: {exc}"))
                continue
            fired = [r.name for r in rs.match(ctx)]
            ok = sorted(set(fired)) == sorted(set(fixture.expect))
            report.results.append(FixtureResult(fixture, fired, ok, None, int(ctx.ev.type)))
            for name in fixture.expect:
                cov = report.coverage.get(name)
                if cov is not None:
                    cov.positive += 1
                    if not ok:
                        cov.failed += 1
            for name in own_rules - set(fixture.expect):
                cov = report.coverage.get(name)
                rule = rs.get(name)
                if cov is None or rule is None:
                    continue
                if rule.event_types is None or int(ctx.ev.type) in rule.event_types:
                    cov.negative += 1
                    if name in fired:
                        cov.failed += 1
    for cov in report.coverage.values():
        lacking = [k for k, n in (("positive", cov.positive), ("negative", cov.negative)) if n == 0]
        if lacking:
            src = SourceText(cov.file, _read_or_empty(cov.file))
            report.diagnostics.append(
                src.diagnostic("warning", "missing-fixture",
                               f"rule {cov.rule!r} has no {' and no '.join(lacking)} fixture", cov.line, 1,
                               cov.rule)
            )  # fmt: skip
    return report


def _rules_sibling(fixtures_file: str) -> str:
    for suffix in FIXTURE_SUFFIXES:
        if fixtures_file.endswith(suffix):
            base = fixtures_file[: -len(suffix)]
            for ext in (".yaml", ".yml"):
                if Path(base + ext).exists():
                    return base + ext
            return base + ".yaml"
    return fixtures_file


def _read_or_empty(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def format_report(report: TestReport) -> str:
    from sentinel.rules.validate import format_diagnostic

    out: list[str] = []
    for d in report.load.diagnostics:
        if d.severity == "error":
            out.append(format_diagnostic(d))
    for d in report.diagnostics:
        out.append(format_diagnostic(d))
    for r in report.failed:
        f = r.fixture
        out.append(f"{f.file}:{f.line}: FAIL {f.name}")
        if r.error:
            out.append(f"    {r.error}")
            continue
        out.append(f"    expected: {', '.join(f.expect) or '(none)'}")
        out.append(f"    fired:    {', '.join(r.fired) or '(none)'}")
    if report.coverage:
        width = max(len(c.rule) for c in report.coverage.values())
        out.append(f"{'rule':<{width}}  pos  neg  result")
        for c in report.coverage.values():
            status = "FAIL" if c.failed else "missing fixtures" if not (c.positive and c.negative) else "ok"
            out.append(f"{c.rule:<{width}}  {c.positive:>3}  {c.negative:>3}  {status}")
    passed = sum(1 for r in report.results if r.ok)
    out.append(
        f"{len(report.results)} fixture(s): {passed} passed, {len(report.failed)} failed"
        + ("" if report.load.ruleset is not None else "; the rules did not load")
    )
    return "\n".join(out)
