"""Helpers the generated matcher code calls for values that are more than an attribute read.

Generated code runs with this module's functions as globals. They take the objects the matcher already holds
(the event, the process, the resolved path) and never raise on odd input: a value that cannot be computed is
``None``, which no check matches.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import os
import shlex
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sentinel.alerts.identity import capability_names, user_name
from sentinel.containers.meta_view import HOST_FIELDS, NO_FIELDS
from sentinel.events import AF_INET, AF_INET6, AF_UNIX, LOGINUID_UNSET, EventType, errno_name, open_flag_names
from sentinel.sockets import ACCEPTS as _ACCEPTS
from sentinel.sockets import DATAGRAMS as _DATAGRAMS
from sentinel.sockets import DUPS as _DUPS
from sentinel.sockets import LOCAL_END as _LOCAL_END
from sentinel.sockets import connect_source as _connect_source
from sentinel.sockets import connected as _connected
from sentinel.sockets import host_resolvers as _host_resolvers
from sentinel.sockets import name_changed as _name_changed
from sentinel.sockets import sock_facts as _sock_facts
from sentinel.sockets import sock_name as _sock_name
from sentinel.syscalls import SYSCALLS as _SYSCALLS
from sentinel.syscalls import caller_userns as _caller_userns
from sentinel.syscalls import raw_value as _raw_value
from sentinel.syscalls import setns_target as _setns_target
from sentinel.syscalls import shown_arg as _shown_arg
from sentinel.syscalls import target_pid as _target_pid

__all__ = [
    "U",
    "any_of",
    "ip_in",
    "pmatch",
]


class _Unset:
    """Marks a per-event cached value not computed yet (``None`` is a legitimate value: missing)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unset>"


U = _Unset()

MAX_ANCESTORS = 64

_flags_cache: dict[int, str] = {}


def flags_text(flags: int) -> str:
    """Falco's rendering of open flags: ``O_WRONLY|O_CREAT|O_TRUNC``."""
    text = _flags_cache.get(flags)
    if text is None:
        text = "|".join(open_flag_names(flags))
        if len(_flags_cache) < 4096:
            _flags_cache[flags] = text
    return text


def _arg_spec(ev: Any, name: str) -> Any:
    """The security syscall's argument called ``name`` (sentinel.syscalls), None if the call has none."""
    spec = _SYSCALLS.get(ev.type)
    if spec is not None:
        for arg in spec.args:
            if arg.name == name:
                return arg
    return None


def sysarg(ev: Any, name: str) -> Any:
    """``evt.arg.NAME`` of a security syscall (Falco's printed form: numbers for pids and fds, names for
    uids and gids the host knows)."""
    arg = _arg_spec(ev, name)
    raw = _raw_value(ev, arg) if arg is not None else None
    if raw is None:
        return None
    if arg.kind == "int":
        return raw
    return _shown_arg(ev, arg, raw)


def syspath(ctx: Any, ev: Any, name: str) -> Any:
    """``evt.arg.NAME`` of a path argument of a file change: resolved against the cwd or dirfd (the call's
    spelling when the process is unknown)."""
    files = ctx.files
    if files is not None:
        value = files.args.get(name)
        if value is not None:
            return value
    return sysraw(ev, name)


def fs_path(ctx: Any, role: str, raw: bool = False) -> str | None:
    """Falco's ``fs.path.name/source/target`` (``raw``: the ``...raw`` form, as the call spelled it)."""
    files = ctx.files
    if files is None:
        return None
    return getattr(files, f"raw_{role}" if raw else role)


_CONNECT_TYPE = EventType.CONNECT
_SOCK_FAMILY_TYPE = {AF_INET: "ipv4", AF_INET6: "ipv6", AF_UNIX: "unix"}
_SOCK_TYPECHAR = {AF_INET: "4", AF_INET6: "6", AF_UNIX: "u"}
# Which end of the socket each fd.* end role reads, per kind of call: "end" is the address and port the
# event carries (sentinel.sockets), "local" the local port and IPv4 address beside it; absent: missing.
# eip/eport (fd.ip, fd.port, fd.net: "either end", one value here) read the end carried for every kind.
_CARRIED = {"sip": "end", "sport": "end", "lip": "end", "lport": "end"}  # bind, listen: the local end
_ACCEPTED = {"sip": "local", "sport": "local", "lip": "local", "lport": "local",
             "cip": "end", "cport": "end", "rip": "end", "rport": "end"}  # fmt: skip
_SENT = {"sip": "end", "sport": "end", "rip": "end", "rport": "end", "lip": "local", "lport": "local",
         "cip": "local", "cport": "local"}  # fmt: skip  # a sender is the client, as in Falco's tuple
_MOVED = {"rip": "end", "rport": "end", "lip": "local", "lport": "local"}  # dup: no server or client known
_END_ROLES = {
    **dict.fromkeys(_LOCAL_END, _CARRIED),
    **dict.fromkeys(_ACCEPTS, _ACCEPTED),
    **dict.fromkeys(_DATAGRAMS, _SENT),
    **dict.fromkeys(_DUPS, _MOVED),
}


def sock_field(ev: Any, role: str) -> Any:
    """An ``fd.*`` field of a bind, listen, accept, datagram or dup event (``sentinel.sockets``): ``role`` is
    type, typechar, family, l4proto, name, num, or an end (sip, sport, cip, cport, lip, lport, rip, rport,
    eip, eport) read as ``_END_ROLES`` says."""
    etype = ev.type
    if role == "num":
        if etype in _ACCEPTS or etype in _DUPS:  # the fd made: -1 when the call failed, as for an open
            return ev.ret if ev.ret >= 0 else -1
        return sysraw(ev, "fd")
    facts = _sock_facts(ev)
    if facts is None:
        return None
    if role == "type":
        return _SOCK_FAMILY_TYPE.get(facts.family)
    if role == "typechar":
        return _SOCK_TYPECHAR.get(facts.family, "o")
    if role == "family":
        return "unix" if facts.family == AF_UNIX else "ip" if facts.family in (AF_INET, AF_INET6) else None
    if role == "l4proto":
        return facts.transport
    if role == "name":
        return _sock_name(ev)
    which = "end" if role[0] == "e" else _END_ROLES[etype].get(role)
    if which is None or facts.family not in (AF_INET, AF_INET6):
        return None
    ip = role[1] == "i"
    if which == "end":
        return facts.address if ip else facts.port
    return facts.local_address if ip else facts.local_port


def connect_local(ev: Any, role: str) -> Any:
    """``fd.cip``/``fd.cport``/``fd.lip``/``fd.lport`` of a connect: its local end (the client), as the
    kernel's socket had it when the call returned; missing when the probe could not read it."""
    local = _connect_source(ev)
    if local is None:
        return None
    return local[0] if role[1] == "i" else local[1]


def dest_resolver(ev: Any) -> bool | None:
    """``sentinel.dest.resolver``: a connect or datagram's destination is one of the host's DNS servers."""
    if ev.type == _CONNECT_TYPE:
        address = inet_addr(ev)
    else:
        facts = _sock_facts(ev)
        address = facts.address if facts is not None and ev.type in _DATAGRAMS else None
    return None if address is None else address in _host_resolvers()


def sysraw(ev: Any, name: str) -> Any:
    """``evt.rawarg.NAME``: the number (or string) the call passed."""
    arg = _arg_spec(ev, name)
    return _raw_value(ev, arg) if arg is not None else None


def target_pid(ev: Any) -> int | None:
    """``sentinel.target.pid``: the process a ptrace, memory write, signal or fd theft is aimed at."""
    return _target_pid(ev)


def target_attr(ctx: Any, name: str) -> Any:
    """A field of the target process as the table knows it (``ctx.target``); None when unknown."""
    target = ctx.target
    return (getattr(target, name) or None) if target is not None else None


def userns_level(ev: Any) -> int | None:
    """``sentinel.userns.level``: the caller's user namespace depth after a mount, setns or unshare."""
    userns = _caller_userns(ev)
    return userns.level if userns is not None else None


def setns_init(ev: Any) -> str | None:
    """``sentinel.setns.init_ns``: the kinds of pid 1's namespaces a setns joined, ``|``-joined."""
    joined = _setns_target(ev)
    return "|".join(joined.init) if joined is not None else None


def mode_text(mode: int) -> str:
    return f"{mode & 0o7777:04o}"


def dirname(path: str | None) -> str | None:
    """Falco's ``fd.directory``: the directory part, ``/`` for top-level names; None for relative names."""
    if path is None:
        return None
    head, sep, _ = path.rpartition("/")
    if not sep:
        return None
    return head or "/"


def basename(path: str | None) -> str | None:
    if path is None:
        return None
    return path.rpartition("/")[2]


def argv0(proc: Any) -> str | None:
    args = proc.args
    return args[0] if args else None


def args_text(proc: Any) -> str:
    args = proc.args
    return " ".join(args[1:]) if len(args) > 1 else ""


def cmdline(proc: Any) -> str:
    """Falco's ``proc.cmdline``: the name followed by the arguments (argv[1:])."""
    args = proc.args
    if len(args) > 1:
        return proc.comm + " " + " ".join(args[1:])
    return proc.comm


def cmdline_typed(proc: Any) -> str | None:
    """The command line as typed: argv (argv[0] as passed) with each argument quoted as a shell would need
    (``sh -c 'x | sh'``), so arguments keep their boundaries; None without argv."""
    args = proc.args
    return shlex.join(args) if args else None


def cmdline_joined(proc: Any) -> str | None:
    """argv joined by single spaces with no quoting (``sh -c x | sh``), as Sysmon for Linux and auditd report
    a command line and Sigma's rules are written against (``endswith: '| sh'``); None without argv."""
    args = proc.args
    return " ".join(args) if args else None


def argv(proc: Any, n: int) -> str | None:
    """argv[n] as the caller passed it (auditd's EXECVE ``aN``); None past the last argument."""
    args = proc.args
    return args[n] if 0 <= n < len(args) else None


def pcmdline_typed(proc: Any) -> str | None:
    parent = proc.parent
    return None if parent is None else cmdline_typed(parent)


def pcmdline_joined(proc: Any) -> str | None:
    parent = proc.parent
    return None if parent is None else cmdline_joined(parent)


def cmdlenargs(proc: Any) -> int:
    args = proc.args
    return sum(len(a) for a in args[1:]) + max(0, len(args) - 2)


def euid(proc: Any, ev: Any) -> int:
    """Falco's ``user.uid``: the effective user its drivers report; the real one when credentials are
    unknown."""
    creds = proc.creds
    return ev.uid if creds is None else creds.euid


def loginuid(proc: Any) -> int | None:
    """Falco's ``user.loginuid``: -1 when nobody logged in; missing when the probes cannot read it."""
    creds = proc.creds
    if creds is None or creds.loginuid is None:
        return None
    return -1 if creds.loginuid == LOGINUID_UNSET else creds.loginuid


def loginname(proc: Any) -> str | None:
    uid = loginuid(proc)
    return None if uid is None or uid < 0 else user_name(uid)


def euser_name(proc: Any, ev: Any) -> str | None:
    creds = proc.creds
    return proc.user_name if creds is None or creds.euid == ev.uid else user_name(creds.euid)


def cap_text(mask: int | None) -> str | None:
    """Falco's ``thread.cap_*``: capability names separated by spaces (``contains CAP_SYS_ADMIN`` works)."""
    return None if mask is None else " ".join(capability_names(mask))


def ancestor(proc: Any, n: int) -> Any:
    """The process itself for 0, its parent for 1 ...; None past the known root."""
    cur = proc
    while n > 0 and cur is not None:
        cur = cur.parent
        n -= 1
    return cur


def ancestors(proc: Any) -> list[Any]:
    out = []
    cur = proc.parent
    while cur is not None and len(out) < MAX_ANCESTORS:
        out.append(cur)
        cur = cur.parent
    return out


def aname(proc: Any, n: int) -> str | None:
    a = ancestor(proc, n)
    return None if a is None else a.comm


def aexe(proc: Any, n: int) -> str | None:
    a = ancestor(proc, n)
    return None if a is None else argv0(a)


def aexepath(proc: Any, n: int) -> str | None:
    a = ancestor(proc, n)
    return None if a is None else (a.exe or None)


def apid(proc: Any, n: int) -> int | None:
    a = ancestor(proc, n)
    return None if a is None else a.pid


def acmdline(proc: Any, n: int) -> str | None:
    a = ancestor(proc, n)
    return None if a is None else cmdline(a)


def connect_name(ev: Any) -> str | None:
    """Falco's ``fd.name`` of a connected socket: ``client->server``; the client is the local end the probe
    read from the socket (``0.0.0.0:0`` / ``:::0`` when it could not)."""
    fam = ev.family
    if fam in (AF_INET, AF_INET6):
        local = _connect_source(ev)
        client = f"{local[0]}:{local[1]}" if local else "0.0.0.0:0" if fam == AF_INET else ":::0"
        return f"{client}->{ev.address}:{ev.port}"
    if fam == AF_UNIX:
        return ev.address
    return None


_TYPECHAR = {AF_INET: "4", AF_INET6: "6", AF_UNIX: "u"}
_FDTYPE = {AF_INET: "ipv4", AF_INET6: "ipv6", AF_UNIX: "unix"}
_SOCKFAMILY = {AF_INET: "ip", AF_INET6: "ip", AF_UNIX: "unix"}
_L4 = {1: "tcp", 2: "udp"}


def sock_typechar(ev: Any) -> str:
    return _TYPECHAR.get(ev.family, "o")


def sock_type(ev: Any) -> str | None:
    return _FDTYPE.get(ev.family)


def sock_family(ev: Any) -> str | None:
    return _SOCKFAMILY.get(ev.family)


def l4proto(ev: Any) -> str | None:
    if ev.family not in (AF_INET, AF_INET6):
        return None
    return _L4.get(ev.sock_type)


def inet_addr(ev: Any) -> str | None:
    return ev.address if ev.family in (AF_INET, AF_INET6) else None


def inet_port(ev: Any) -> int | None:
    return ev.port if ev.family in (AF_INET, AF_INET6) else None


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def ip_in(text: str, nets: tuple[Any, ...]) -> bool:
    """Whether an address (text) lies in any of ``nets`` (ip_network objects; a host is a /32 or /128)."""
    ip = parse_ip(text)
    if ip is None:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        mapped = ip.ipv4_mapped
        return any(ip in n or mapped in n for n in nets)
    return any(ip in n for n in nets)


def pmatch(path: str, prefixes: frozenset[str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or lies below one of them (whole path components only)."""
    if path in prefixes:
        return True
    i = path.find("/", 1)
    while i > 0:
        if path[:i] in prefixes:
            return True
        i = path.find("/", i + 1)
    return "/" in prefixes and path.startswith("/")


def any_of(pred: Callable[[Any], bool], values: Iterable[Any] | None) -> bool:
    if values is None:
        return False
    return any(pred(v) for v in values if v is not None)


def fsenc(text: str) -> bytes:
    return os.fsencode(text)


def b64(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=False).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        return None


def lower(text: str | None) -> str | None:
    return None if text is None else text.lower()


def upper(text: str | None) -> str | None:
    return None if text is None else text.upper()


def length(value: Any) -> int | None:
    return None if value is None else len(value)


def time_text(wall_ns: int) -> str:
    """Falco's ``%evt.time`` text: time of day with nanoseconds (UTC here, for output that does not depend on
    the host's time zone)."""
    secs, ns = divmod(wall_ns, 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%H:%M:%S") + f".{ns:09d}"


def iso8601(wall_ns: int) -> str:
    secs, ns = divmod(wall_ns, 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns:09d}Z"


def ml(ctx: Any, name: str) -> Any:
    """An ``ml.*`` field: the anomaly model's lazy view of the event (``ctx.ml``), None when there is none."""
    view = ctx.ml
    return None if view is None else view.value(name)


def namespace() -> dict[str, Any]:
    """Globals for generated code: every helper under a short ``_name``."""
    ns: dict[str, Any] = {"__builtins__": __builtins__}
    for name, value in globals().items():
        if callable(value) and not name.startswith("_") and value.__module__ == __name__:
            ns["_" + name] = value
    ns["_U"] = U
    ns["_errno_name"] = errno_name  # shared with the renderers, defined in sentinel.events
    ns["_fd_connected"] = _connected  # shared with the ECS documents, defined in sentinel.sockets
    ns["_fd_name_changed"] = _name_changed
    ns["_NO_META"] = NO_FIELDS  # a container whose runtime has not answered: every field missing
    ns["_HOST_META"] = HOST_FIELDS  # the host's values of the runtime fields, as Falco gives them
    return ns
