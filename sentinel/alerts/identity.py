"""Who a process is, in ECS terms: real, effective and saved users and groups, capabilities, terminal, login.

ECS gives ``process.user`` the *effective* user (what the kernel checks permissions against),
``process.real_user`` the real one and ``process.saved_user`` the saved one. The top-level ``user`` and
``group`` mirror ``process.user`` and ``process.group`` (the effective ids), as Elastic Defend writes them:
Elastic's prebuilt Linux rules test ``user.id``/``user.name`` and mean who the process acts as (``sudo``'s
child is root). Credentials beyond the real ids come from
the probes (kernel offsets from BTF); without them those fields are absent, never zero, and
``process.user`` falls back to the real user, the only one known.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from sentinel.events import LOGINUID_UNSET, SESSION_UNSET
from sentinel.process.table import cached_name, group_db_name, user_db_name

if TYPE_CHECKING:
    from sentinel.process.table import Process

# capability(7) numbers, as /proc/PID/status's CapEff bits count them.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip
_CACHE_MAX = 4096

_cap_names: dict[int, list[str]] = {}
_user_names: dict[int, str | None] = {}
_group_names: dict[int, str | None] = {}


def capability_names(mask: int) -> list[str]:
    """``0x2001`` → ``["CAP_CHOWN", "CAP_NET_RAW"]``; bits newer than this list are shown as numbers (ECS
    allows ``^\\d+$``). Cached: a host has few distinct sets."""
    names = _cap_names.get(mask)
    if names is None:
        names = [CAPABILITIES[b] if b < len(CAPABILITIES) else str(b) for b in range(64) if mask >> b & 1]
        if len(_cap_names) >= _CACHE_MAX:
            _cap_names.clear()
        _cap_names[mask] = names
    return names


def user_name(uid: int) -> str | None:
    return cached_name(_user_names, user_db_name, uid)


def group_name(gid: int) -> str | None:
    return cached_name(_group_names, group_db_name, gid)


def _user(uid: int, name: str | None = None) -> dict[str, Any]:
    return {"id": str(uid), "name": name if name is not None else user_name(uid)}


def _group(gid: int, name: str | None = None) -> dict[str, Any]:
    return {"id": str(gid), "name": name if name is not None else group_name(gid)}


def process_identity(proc: Process) -> dict[str, Any]:
    """The ``process.*`` user, group, terminal members for ``proc`` (cached by the renderer per process)."""
    real_user, real_group = _user(proc.uid, proc.user_name), _group(proc.gid, proc.group_name)
    out: dict[str, Any] = {"real_user": real_user, "real_group": real_group}
    creds = proc.creds
    if creds is None:
        out["user"], out["group"] = real_user, real_group
    else:
        out["user"], out["group"] = _user(creds.euid), _group(creds.egid)
        out["saved_user"], out["saved_group"] = _user(creds.suid), _group(creds.sgid)
    if proc.tty_nr > 0:
        major = (proc.tty_nr >> 8) & 0xFFF
        minor = (proc.tty_nr & 0xFF) | ((proc.tty_nr >> 12) & 0xFFF00)
        out["tty"] = {"char_device": {"major": major, "minor": minor}}
    out["interactive"] = proc.tty_nr > 0
    return out


@functools.cache
def all_capabilities(path: str = "/proc/sys/kernel/cap_last_cap") -> int:
    """Every capability this kernel has: what an unrestricted root thread holds."""
    try:
        with open(path) as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = len(CAPABILITIES) - 1
    return (1 << (last + 1)) - 1


def ordinary_capabilities(euid: int, effective: int, permitted: int) -> bool:
    """Root holding every capability, or another user holding none: what the user already says."""
    if euid == 0:
        full = all_capabilities()
        return effective & full == full and permitted & full == full
    return effective == 0 and permitted == 0


def thread_capabilities(proc: Process) -> dict[str, Any] | None:
    """``process.thread.capabilities`` (the credentials the event's thread acted with) when they say more than
    the user does: root with some dropped (a container, a hardened service) or a non-root thread holding any
    (file capabilities, ambient ones). The ordinary case is left out: 41 names twice would double the size of
    every root document. Rules always have them (``thread.cap_effective``)."""
    creds = proc.creds
    if creds is None or ordinary_capabilities(creds.euid, creds.cap_effective, creds.cap_permitted):
        return None
    return {
        "effective": capability_names(creds.cap_effective),
        "permitted": capability_names(creds.cap_permitted),
    }


def identity_parts(proc: Process) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``sentinel.process`` and ``process.thread.capabilities`` for ``proc``, rebuilt only when its
    credentials, executable flags or namespaces change (the table keeps the same credentials object while
    they hold)."""
    cache = proc.identity_cache
    if (
        cache is not None
        and cache[0] is proc.creds
        and cache[1] == proc.uid
        and cache[2] == proc.gid
        and cache[3] == (proc.exe_memfd, proc.exe_deleted, proc.pid_ns, proc.mnt_ns, proc.host_pid_ns)
    ):
        return cache[4]
    parts = (sentinel_process(proc), thread_capabilities(proc))
    state = (proc.exe_memfd, proc.exe_deleted, proc.pid_ns, proc.mnt_ns, proc.host_pid_ns)
    proc.identity_cache = (proc.creds, proc.uid, proc.gid, state, parts)
    return parts


def sentinel_process(proc: Process) -> dict[str, Any] | None:
    """What ECS has no field for: who logged in (kept across sudo/su), the session, filesystem ids, how the
    executable exists (memfd, deleted), and the process's pid and mount namespaces (inode numbers, as
    /proc/PID/ns/ shows them) with whether the pid namespace is the host's."""
    out: dict[str, Any] = {}
    if proc.pid_ns:
        out["pid_ns"] = proc.pid_ns
        if proc.host_pid_ns is not None:
            out["host_pid_ns"] = proc.host_pid_ns
    if proc.mnt_ns:
        out["mnt_ns"] = proc.mnt_ns
    if proc.exe_memfd:
        out["exe_from_memfd"] = True
    if proc.exe_deleted:
        out["exe_deleted"] = True
    creds = proc.creds
    if creds is not None:
        if creds.loginuid is not None and creds.loginuid != LOGINUID_UNSET:  # unset: never logged in
            out["login_user"] = _user(creds.loginuid)
        if creds.sessionid is not None and creds.sessionid != SESSION_UNSET:
            out["session_id"] = creds.sessionid
        out["fs_user"] = {"id": str(creds.fsuid)}
        out["fs_group"] = {"id": str(creds.fsgid)}
    return out or None
