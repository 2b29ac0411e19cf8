"""Per-event feature rows for the anomaly model: a short dense float vector, never raw strings.

Measured on these machines (see ``notes/anomaly.md``), a forest over raw counts scores at chance while one
over host-relative rarity scores well, so most features are rarities from :mod:`sentinel.anomaly.rarity`, plus
a few intrinsic facts about the event. Each row is scored against the tables *before* the event is counted, so
training rows never see themselves. ``details`` keep the raw values only to explain alerts in words.
"""

from __future__ import annotations

import functools
import itertools
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
N_FEATURES = len(FEATURES)
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
_PATH_SEP = re.compile(r"[/-]")
_IP = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
# A scheme before "://", matched from the start of its run only: linear on hostile argv (the plain form
# backtracked quadratically, ~12 s for a 100 KB argument of letters); it matches exactly the same strings.
_URL = re.compile(r"(?<![a-zA-Z0-9+.-])[0-9+.-]*[a-zA-Z][a-zA-Z0-9+.-]*://")
MEMFD_PREFIXES = ("memfd:", "/memfd:")  # as the table names it, and as /proc showed it


def shannon_entropy(text: str) -> float:
    """Bits per character; encoded or packed payloads in argv score high."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def longest_b64_token(text: str) -> int:
    """Longest base64-looking run: upper and lower case letters and digits mixed, not a path.

    Paths (``/srv/app-2024/x``), hex hashes and dashed names are long runs of the same alphabet, but
    single-case or split by ``/`` and ``-``; an encoded payload mixes all three character classes in one
    unbroken run.
    """
    best = 0
    for m in _B64.finditer(text):
        tok = m.group(0)
        if len(tok) <= best:
            continue
        longest_part = max(len(p) for p in _PATH_SEP.split(tok))
        if (
            longest_part >= 16
            and not tok.startswith("/")
            and any(c.isupper() for c in tok)
            and any(c.islower() for c in tok)
            and any(c.isdigit() for c in tok)
        ):
            best = len(tok)
    return best


@functools.lru_cache(maxsize=4096)
def is_net_service(exe: str) -> bool:
    base = posixpath.basename(exe)
    return base in NET_SERVICES or base.startswith("php-fpm")


def _exe_of(proc: Process | None) -> str:
    if proc is None:
        return "?"
    return proc.exe or proc.filename or f"[{proc.comm}]"


CMD_FEATURES = ("argc", "argv_len", "argv_entropy", "b64_token_len", "argv_ip_url")
_CMD_SLICE = slice(INDEX["argc"], INDEX["argv_ip_url"] + 1)
COUNTED_MAX = 65_536


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
class RowFacts:
    """The raw values behind one row: enough to explain it in words later, and the keys it will count.

    Built on the hot path instead of the explanation strings, which only alerts need (``details()``).
    """

    etype: int
    type_name: str
    exe: str
    pexe: str
    uid: int
    counts: tuple[float, float, float] | None  # exe, parent→child, user→exe seen before (None: not computed)
    port: int = 0
    port_count: float = 0.0
    net: str = ""
    net_count: float = 0.0
    directory: str = ""
    dir_count: float = 0.0
    exe_path: str = ""
    cmd_short: str = ""
    depth: int = 0
    service: str = ""
    tty: bool = False
    ret: int = 0
    keys: list[tuple[str, str]] = field(default_factory=list)  # (kind, key) to count once learned
    repeats: float = 1.0  # occurrences the event stands for (an open with the kernel's suppressed repeats)
    # A short key that determines the whole row (a per-process template token and the values that vary),
    # so the agent's score cache hashes 3 values instead of 21; None: the row itself is the key.
    row_key: tuple[int, float, float] | None = None

    def details(self) -> dict[str, str]:
        """Each feature's raw value in words ("parent→child php-fpm→sh seen 0 times on this host")."""
        exe = self.exe
        d: dict[str, str] = {}
        if self.counts is not None:
            c_exe, c_pair, c_user = self.counts
            pair = f"parent→child {posixpath.basename(self.pexe)}→{posixpath.basename(exe)}"
            d["rare_exe"] = f"executable {exe} seen {c_exe:g} times on this host"
            d["rare_parent_exe"] = f"{pair} seen {c_pair:g} times on this host"
            d["rare_user_exe"] = f"user {self.uid} running {exe} seen {c_user:g} times on this host"
        if self.etype == EventType.CONNECT:
            d["rare_exe_port"] = (
                f"{exe} connecting to port {self.port} seen {self.port_count:g} times on this host"
            )
            if self.net:
                d["new_dest_net"] = f"destination {self.net} seen {self.net_count:g} times on this host"
        elif self.etype == EventType.OPEN:
            d["rare_exe_dir"] = (
                f"{exe} opening files in {self.directory} seen {self.dir_count:g} times on this host"
            )
        if self.exe_path.startswith(WRITABLE_DIRS):
            d["exe_writable_dir"] = f"executable {self.exe_path} is in a user-writable directory"
        if self.exe_path.startswith(MEMFD_PREFIXES) or self.exe_path.endswith(" (deleted)"):
            d["exe_memfd_deleted"] = f"executable {self.exe_path} is in memory or deleted"
        for name in CMD_FEATURES:
            d[name] = f"command line {self.cmd_short!r}"
        d["lineage_depth"] = f"{self.depth} ancestors"
        if self.service:
            d["net_service_ancestor"] = f"descends from network service {self.service}"
        d["uid_root"] = f"uid {self.uid}"
        d["has_tty"] = "has a terminal" if self.tty else "no terminal"
        tname = _TYPE_FEATURE.get(self.etype)
        if tname is not None:
            article = "an" if self.type_name[:1] in ("a", "e", "i", "o", "u") else "a"
            d[tname] = f"{article} {self.type_name} event"
        if _failed(self.etype, self.ret):
            d["failed"] = f"{self.type_name} failed with {self.ret}"
        return d


_OPEN_TYPE = EventType.OPEN
_TEMPLATE_TOKENS = itertools.count(1)
_TYPE_FEATURE = {EventType.EXEC: "type_exec", EventType.OPEN: "type_open", EventType.CONNECT: "type_connect"}
_EMPTY_CMD = command_line_features([], 0)


def _open_dir(path: str) -> str:
    """``posixpath.dirname`` for the table's normalised paths, without its generality's cost."""
    i = path.rfind("/")
    return path[:i] if i > 0 else ("/" if i == 0 else ".")


def _fill_process(x: list[float], static: tuple, lineage: tuple[int, int, str], uid: int) -> None:
    """The row's process columns (image, argv, lineage, user, terminal), for every event type alike."""
    _, _, writable, memfd, cmd_values, _, tty = static
    _, depth, service = lineage
    x[6] = writable
    x[7] = memfd
    x[8], x[9], x[10], x[11], x[12] = cmd_values
    x[13] = float(depth)
    x[14] = 1.0 if service else 0.0
    x[15] = 1.0 if uid == 0 else 0.0
    x[16] = 1.0 if tty else 0.0


def _failed(etype: int, ret: int) -> bool:
    return ret < 0 and not (etype == EventType.CONNECT and ret == EINPROGRESS)


@dataclass(slots=True)
class FeatureExtractor:
    """Turns (event, process) into rows, scoring against the rarity state and then (``learn``) updating it."""

    state: RarityState = field(default_factory=RarityState)
    learn: bool = True
    # Processes whose image has been counted: a process first met by an open or connect (a daemon started
    # before the agent, a forked worker) counts its executable once, or it would look never-seen forever.
    _counted: dict[str, None] = field(default_factory=dict, repr=False)
    _static: dict[str, tuple] = field(default_factory=dict, repr=False)  # per process, see _image_part
    _lineage: dict[str, tuple[int, int, str]] = field(default_factory=dict, repr=False)
    _open_rows: dict[str, tuple] = field(default_factory=dict, repr=False)  # per process, see _known_open
    _tokens: dict[tuple[float, ...], int] = field(default_factory=dict, repr=False)  # base row → its token

    def row(self, ev: Event, proc: Process | None, path: str | None = None, wall_ns: int = 0) -> FeatureRow:
        """Row of one exec/open/connect; ``path`` is the resolved open path, ``wall_ns`` the event time."""
        values, facts = self.compute(ev, proc, path, wall_ns)
        return FeatureRow(np.array(values, dtype=np.float64), facts.details())

    def compute(
        self,
        ev: Event,
        proc: Process | None,
        path: str | None = None,
        wall_ns: int = 0,
        learn: bool | None = None,
    ) -> tuple[list[float], RowFacts]:
        """The hot path: the row as a list in ``FEATURES`` order and its raw facts, no strings formatted.

        With ``learn`` (default: the extractor's setting) the row's keys are counted right after scoring;
        without, the caller may count them later with :meth:`commit` (the agent skips rows that alerted).
        """
        etype = ev.type
        is_open = etype == EventType.OPEN
        first_met = proc is not None and proc.entity_id not in self._counted
        if is_open and proc is not None and not first_met:
            return self._known_open(ev, proc, path, wall_ns, self.learn if learn is None else learn)
        t = self.state.tables
        exe = _exe_of(proc)
        parent = proc.parent if proc is not None else None
        pexe = _exe_of(parent)
        uid = ev.uid
        is_exec = etype == EventType.EXEC
        x = [0.0] * N_FEATURES
        if is_open and not first_met:
            # Opens are judged by what they open: the executable rarities (exec counts) are left out of the
            # row, which saves most of the cost of the most frequent event (ml.* fields compute them lazily).
            facts = RowFacts(etype, ev.type_name, exe, pexe, uid, None)
        else:
            pair = f"{pexe}\x00{exe}"
            user_key = f"{uid}\x00{exe}"
            t_exe, t_pair, t_user = t["exe"], t["parent_exe"], t["user_exe"]
            if not is_open:
                x[0] = t_exe.rarity(exe)
                x[1] = t_pair.rarity(pair)
                x[2] = t_user.rarity(user_key)
            facts = RowFacts(
                etype,
                ev.type_name,
                exe,
                pexe,
                uid,
                (t_exe.count(exe), t_pair.count(pair), t_user.count(user_key)),
            )
            if is_exec or first_met:
                keys = facts.keys
                keys.append(("exe", exe))
                keys.append(("parent_exe", pair))
                keys.append(("user_exe", user_key))
                if proc is not None:
                    if len(self._counted) >= COUNTED_MAX:
                        self._counted.clear()
                    self._counted[proc.entity_id] = None
        keys = facts.keys
        if etype == EventType.CONNECT:
            port_key = f"{exe}\x00{ev.port}"
            t_port = t["exe_port"]
            x[3] = t_port.rarity(port_key)
            facts.port, facts.port_count = ev.port, t_port.count(port_key)
            keys.append(("exe_port", port_key))
            if ev.family == AF_INET and ev.address:
                net = ev.address.rsplit(".", 1)[0] + ".0/24"
                seen = t["dest_net"].count(net)
                x[5] = 1.0 if seen == 0 else 0.0
                facts.net, facts.net_count = net, seen
                keys.append(("dest_net", net))
        elif etype == EventType.OPEN:
            d = _open_dir(path or ev.path)
            dir_key = f"{exe}\x00{d}"
            t_dir = t["exe_dir"]
            x[4] = t_dir.rarity(dir_key)
            facts.directory, facts.dir_count = d, t_dir.count(dir_key)
            keys.append(("exe_dir", dir_key))
            facts.repeats = 1.0 + ev.repeat_count  # what the kernel de-duplicated still happened

        static, lineage = self._process_parts(ev, proc, parent, is_exec)
        _fill_process(x, static, lineage, uid)
        _, exe_path, _, _, _, cmd_short, tty = static
        _, depth, service = lineage
        facts.exe_path = exe_path
        facts.cmd_short = cmd_short
        facts.depth = depth
        facts.service = service
        facts.tty = tty
        if etype == EventType.EXEC:
            x[17] = 1.0
        elif etype == EventType.OPEN:
            x[18] = 1.0
        elif etype == EventType.CONNECT:
            x[19] = 1.0
        facts.ret = ev.ret
        if _failed(etype, ev.ret):
            x[20] = 1.0
        if self.learn if learn is None else learn:  # score then update: rarities come only from earlier data
            self.commit(facts, wall_ns)
        return x, facts

    def _known_open(
        self, ev: Event, proc: Process, path: str | None, wall_ns: int, learn: bool
    ) -> tuple[list[float], RowFacts]:
        """The most frequent row, an open by a process already counted: everything but the directory's
        rarity and the result comes from a per-process template (the same values ``compute`` derives)."""
        parent = proc.parent
        exe = _exe_of(proc)
        pexe = _exe_of(parent)
        uid = ev.uid
        tmpl = self._open_rows.get(proc.entity_id)
        if (
            tmpl is None
            or tmpl[0] != proc.exec_count
            or tmpl[1] != (parent.exec_count if parent is not None else -1)
            or tmpl[2] != uid
            or tmpl[3] != exe
            or tmpl[4] != pexe
        ):
            tmpl = self._open_template(ev, proc, parent, exe, pexe)
        base, prefix, exe_path, cmd_short, depth, service, tty, token = tmpl[5]
        x = base.copy()
        d = _open_dir(path or ev.path)
        dir_key = prefix + d
        x[4], dir_count = self.state.tables["exe_dir"].rarity_and_count(dir_key)
        ret = ev.ret
        if ret < 0:
            x[20] = 1.0
        facts = RowFacts(
            _OPEN_TYPE, ev.type_name, exe, pexe, uid, None, 0, 0.0, "", 0.0, d, dir_count, exe_path,
            cmd_short, depth, service, tty, ret, [("exe_dir", dir_key)], 1.0 + ev.repeat_count,
            (token, x[4], x[20]),
        )  # fmt: skip
        if learn:
            self.commit(facts, wall_ns)
        return x, facts

    def _open_template(self, ev: Event, proc: Process, parent: Process | None, exe: str, pexe: str) -> tuple:
        pexec = parent.exec_count if parent is not None else -1
        static, lineage = self._process_parts(ev, proc, parent, False)
        _, exe_path, _, _, _, cmd_short, tty = static
        _, depth, service = lineage
        base = [0.0] * N_FEATURES
        _fill_process(base, static, lineage, ev.uid)
        base[18] = 1.0
        # One token per distinct base row (processes with the same image, arguments and lineage share it,
        # and so share cached scores); a token is never reused for another base row.
        tokens = self._tokens
        token = tokens.get(tuple(base))
        if token is None:
            if len(tokens) >= COUNTED_MAX:
                tokens.clear()
            token = tokens[tuple(base)] = next(_TEMPLATE_TOKENS)
        tmpl = (proc.exec_count, pexec, ev.uid, exe, pexe,
                (base, f"{exe}\x00", exe_path, cmd_short, depth, service, tty, token))  # fmt: skip
        if len(self._open_rows) >= COUNTED_MAX:
            self._open_rows.clear()
        self._open_rows[proc.entity_id] = tmpl
        return tmpl

    def _process_parts(
        self, ev: Event, proc: Process | None, parent: Process | None, is_exec: bool
    ) -> tuple[tuple, tuple[int, int, str]]:
        """What depends only on the process image (until it execs) and on its ancestry (until its parent
        execs: the rarer exec of a grandparent is not worth a walk per event), cached per process."""
        static = lineage = None
        if not is_exec and proc is not None:
            static = self._static.get(proc.entity_id)
            if static is not None and static[0] != proc.exec_count:
                static = None
            lineage = self._lineage.get(proc.entity_id)
            if lineage is not None and lineage[0] != (parent.exec_count if parent is not None else -1):
                lineage = None
        if static is None:
            static = self._image_part(ev, proc, is_exec)
            if proc is not None and not is_exec:
                if len(self._static) >= COUNTED_MAX:
                    self._static.clear()
                self._static[proc.entity_id] = static
        if lineage is None:
            lineage = self._lineage_part(parent)
            if proc is not None:
                if len(self._lineage) >= COUNTED_MAX:
                    self._lineage.clear()
                self._lineage[proc.entity_id] = lineage
        return static, lineage

    def _image_part(self, ev: Event, proc: Process | None, is_exec: bool) -> tuple:
        """(exec count, exe path, writable, memfd, argv figures, short command line, tty) of the process."""
        exe_path = proc.exe if proc is not None else ""
        writable = 1.0 if exe_path.startswith(WRITABLE_DIRS) else 0.0
        # The process table names a memfd "memfd:NAME" and flags deleted files; captures recorded before it
        # did carry /proc's "/memfd:NAME (deleted)" and "PATH (deleted)".
        in_memory = proc is not None and (proc.exe_memfd or proc.exe_deleted)
        in_memory = in_memory or exe_path.startswith(MEMFD_PREFIXES) or exe_path.endswith(" (deleted)")
        memfd = 1.0 if in_memory else 0.0
        if is_exec:
            cmd_values, cmd_short = command_line_features(ev.argv, ev.argc_total)
        elif proc is not None:
            cmd_values, cmd_short = command_line_features(proc.args, 0)
        else:
            cmd_values, cmd_short = _EMPTY_CMD
        tty = proc is not None and proc.tty_nr != 0
        exec_count = proc.exec_count if proc is not None else 0
        return exec_count, exe_path, writable, memfd, cmd_values, cmd_short, tty

    def _lineage_part(self, parent: Process | None) -> tuple[int, int, str]:
        """(parent's exec count, depth, first network-service ancestor) walking up from ``parent``."""
        depth = 0
        service = ""
        cur = parent
        while cur is not None and depth < 64:  # Process.ancestors() without building the list
            depth += 1
            if not service and is_net_service(cur.exe):
                service = cur.exe
            cur = cur.parent
        return (parent.exec_count if parent is not None else -1), depth, service

    def commit(self, facts: RowFacts, wall_ns: int, weight: float = 1.0) -> None:
        """Count a row's keys (once); ``weight`` < 1 for rows that alerted, so repeating an anomaly makes it
        normal only slowly, yet a false positive does not alert forever."""
        t = self.state.tables
        repeats = facts.repeats
        for kind, key in facts.keys:
            t[kind].update(key, wall_ns, weight * repeats if kind == "exe_dir" else weight)
        facts.keys = []
