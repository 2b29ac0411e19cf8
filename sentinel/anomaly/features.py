"""Per-event feature rows for the anomaly model: a short dense float vector, never raw strings.

Measured on these machines (see ``notes/anomaly.md``), a forest over raw counts scores at chance while one
over host-relative rarity scores well, so most features are rarities from :mod:`sentinel.anomaly.rarity`, plus
a few intrinsic facts about the event. Each row is scored against the tables *before* the event is counted, so
training rows never see themselves. ``details`` keep the raw values only to explain alerts in words.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from sentinel.anomaly.rarity import RarityState
from sentinel.events import AF_INET, Event, EventType
from sentinel.process.table import Process

FEATURES: tuple[str, ...] = (
    "rare_exe",
    "rare_parent_exe",
    "rare_user_exe",
    "rare_exe_port",
    "rare_exe_dir",
    "new_dest_net",
    "exe_writable_dir",
    "exe_memfd_deleted",
    "argc",
    "argv_len",
    "argv_entropy",
    "b64_token_len",
    "argv_ip_url",
    "lineage_depth",
    "net_service_ancestor",
    "uid_root",
    "has_tty",
    "type_exec",
    "type_open",
    "type_connect",
    "failed",
)
INDEX = {name: i for i, name in enumerate(FEATURES)}
SCORED_TYPES = (EventType.EXEC, EventType.OPEN, EventType.CONNECT)

WRITABLE_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/", "/home/", "/run/user/")
# Basenames of long-running network services: a shell below one of these is the classic web-shell shape.
NET_SERVICES = frozenset(
    {"nginx", "apache2", "httpd", "lighttpd", "caddy", "sshd", "node", "java", "tomcat", "postgres",
     "mysqld", "mariadbd", "redis-server", "named", "vsftpd", "proftpd", "dovecot", "exim4", "smbd",
     "uwsgi", "gunicorn", "php-fpm"}
)  # fmt: skip
EINPROGRESS = -115
_B64 = re.compile(r"[A-Za-z0-9+/=_-]{16,}")
_IP = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://")


def shannon_entropy(text: str) -> float:
    """Bits per character; encoded or packed payloads in argv score high."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def longest_b64_token(text: str) -> int:
    """Longest base64-looking run that mixes letter cases or has digits (so not a plain word)."""
    best = 0
    for m in _B64.finditer(text):
        tok = m.group(0)
        if len(tok) > best and ((tok != tok.lower() and tok != tok.upper()) or any(c.isdigit() for c in tok)):
            best = len(tok)
    return best


def is_net_service(exe: str) -> bool:
    base = posixpath.basename(exe)
    return base in NET_SERVICES or base.startswith("php-fpm")


def _exe_of(proc: Process | None) -> str:
    if proc is None:
        return "?"
    return proc.exe or proc.filename or f"[{proc.comm}]"


CMD_FEATURES = ("argc", "argv_len", "argv_entropy", "b64_token_len", "argv_ip_url")
_CMD_SLICE = slice(INDEX["argc"], INDEX["argv_ip_url"] + 1)
CMD_CACHE_MAX = 4096


def command_line_features(args: list[str], argc_total: int) -> tuple[tuple[float, ...], str]:
    """The argv features in ``CMD_FEATURES`` order, and the command line shortened for explanations."""
    cmd = " ".join(args)
    values = (
        float(max(len(args), argc_total)),
        float(len(cmd)),
        shannon_entropy(cmd),
        float(longest_b64_token(cmd)),
        1.0 if _IP.search(cmd) or _URL.search(cmd) else 0.0,
    )
    return values, cmd if len(cmd) <= 80 else cmd[:77] + "..."


@dataclass(slots=True)
class FeatureRow:
    """One event's row, with the raw values behind it (key and count) for explanations."""

    values: np.ndarray
    details: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class FeatureExtractor:
    """Turns (event, process) into rows, scoring against the rarity state and then (``learn``) updating it."""

    state: RarityState = field(default_factory=RarityState)
    learn: bool = True
    _cmd_cache: dict[tuple[str, int], tuple[tuple[float, ...], str]] = field(default_factory=dict, repr=False)

    def row(self, ev: Event, proc: Process | None, path: str | None = None, wall_ns: int = 0) -> FeatureRow:
        """Row of one exec/open/connect; ``path`` is the resolved open path, ``wall_ns`` the event time."""
        x = np.zeros(len(FEATURES), dtype=np.float64)
        details: dict[str, str] = {}
        t = self.state.tables
        exe = _exe_of(proc)
        parent = proc.parent if proc is not None else None
        pexe = _exe_of(parent)
        uid = ev.uid
        keys: list[tuple[str, str]] = []

        def rare(feature: str, kind: str, key: str, words: str, update: bool) -> None:
            table = t[kind]
            x[INDEX[feature]] = table.rarity(key)
            details[feature] = f"{words} seen {table.count(key):g} times on this host"
            if update:
                keys.append((kind, key))

        is_exec = ev.type == EventType.EXEC
        rare("rare_exe", "exe", exe, f"executable {exe}", is_exec)
        pair = f"{pexe}\x00{exe}"
        pwords = f"parent→child {posixpath.basename(pexe)}→{posixpath.basename(exe)}"
        rare("rare_parent_exe", "parent_exe", pair, pwords, is_exec)
        rare("rare_user_exe", "user_exe", f"{uid}\x00{exe}", f"user {uid} running {exe}", is_exec)
        if ev.type == EventType.CONNECT:
            rare(
                "rare_exe_port",
                "exe_port",
                f"{exe}\x00{ev.port}",
                f"{exe} connecting to port {ev.port}",
                True,
            )
            if ev.family == AF_INET and ev.address:
                net = ev.address.rsplit(".", 1)[0] + ".0/24"
                table = t["dest_net"]
                seen = table.count(net)
                x[INDEX["new_dest_net"]] = 1.0 if seen == 0 else 0.0
                details["new_dest_net"] = f"destination {net} seen {seen:g} times on this host"
                keys.append(("dest_net", net))
        elif ev.type == EventType.OPEN:
            d = posixpath.dirname(path or ev.path) or "."
            rare("rare_exe_dir", "exe_dir", f"{exe}\x00{d}", f"{exe} opening files in {d}", True)

        exe_path = proc.exe if proc is not None else ""
        if exe_path.startswith(WRITABLE_DIRS):
            x[INDEX["exe_writable_dir"]] = 1.0
            details["exe_writable_dir"] = f"executable {exe_path} is in a user-writable directory"
        if exe_path.startswith("/memfd:") or exe_path.endswith(" (deleted)"):
            x[INDEX["exe_memfd_deleted"]] = 1.0
            details["exe_memfd_deleted"] = f"executable {exe_path} is in memory or deleted"
        if is_exec:
            cmd_feats = command_line_features(ev.argv, ev.argc_total)
        elif proc is not None:  # opens and connects reuse their process's figures until it execs again
            ck = (proc.entity_id, proc.exec_count)
            cmd_feats = self._cmd_cache.get(ck)
            if cmd_feats is None:
                if len(self._cmd_cache) >= CMD_CACHE_MAX:
                    self._cmd_cache.clear()
                cmd_feats = self._cmd_cache[ck] = command_line_features(proc.args, 0)
        else:
            cmd_feats = command_line_features([], 0)
        values, short = cmd_feats
        x[_CMD_SLICE] = values
        for name in CMD_FEATURES:
            details[name] = f"command line {short!r}"
        ancestors = proc.ancestors() if proc is not None else []
        x[INDEX["lineage_depth"]] = float(len(ancestors))
        details["lineage_depth"] = f"{len(ancestors)} ancestors"
        service = next((a for a in ancestors if is_net_service(a.exe)), None)
        if service is not None:
            x[INDEX["net_service_ancestor"]] = 1.0
            details["net_service_ancestor"] = f"descends from network service {service.exe}"
        x[INDEX["uid_root"]] = 1.0 if uid == 0 else 0.0
        details["uid_root"] = f"uid {uid}"
        tty = proc is not None and proc.tty_nr != 0
        x[INDEX["has_tty"]] = 1.0 if tty else 0.0
        details["has_tty"] = "has a terminal" if tty else "no terminal"
        tname = {EventType.EXEC: "type_exec", EventType.OPEN: "type_open", EventType.CONNECT: "type_connect"}
        if ev.type in tname:
            x[INDEX[tname[ev.type]]] = 1.0
            details[tname[ev.type]] = f"a {ev.type_name} event"
        if ev.ret < 0 and not (ev.type == EventType.CONNECT and ev.ret == EINPROGRESS):
            x[INDEX["failed"]] = 1.0
            details["failed"] = f"{ev.type_name} failed with {ev.ret}"

        if self.learn:  # score then update: this row's rarities came only from data before it
            for kind, key in keys:
                t[kind].update(key, wall_ns)
        return FeatureRow(x, details)
