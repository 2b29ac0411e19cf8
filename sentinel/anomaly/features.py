"""Per-event feature rows for the anomaly model: what is *new for this program on this host*, as numbers.

Each exec, open and connect is measured against the host's behaviour profiles
(:mod:`sentinel.anomaly.profiles`): a program its parent never started, a user it never ran as, a directory it
never read from or wrote to, a port or address range it never connected to. A column is 0 when the program
did this before, else how unexpected something new is for that program (one that does new things all the
time scores low, one that never does scores high: :mod:`sentinel.anomaly.profiles`). A live row is measured
*before* it is counted; a training row against the profiles at the end of learning with itself left out
(:func:`loo_row`).

Measured on the lab (see README, *Anomaly detection*): static traits of the event (executable in /tmp,
argv entropy, lineage depth, uid 0, a terminal, failure, write access) made rows that are rare but recur —
a deleted executable writing a file, a root shell five levels deep — the most isolated ones in every
forest, so the threshold that keeps them quiet sat above every novelty (0 of 14 novel behaviours caught).
Those traits are the rules' job; the rows carry the novelties and the event type only. ``RowFacts`` keep the
raw values behind a row to say in words what was new.

A column holds a novelty only from ``NEWS_LEVEL`` up (below it, 0): something new from a program that does new
things about once in 50 of its time slots or more often is the program's ordinary breadth, not news. Without
the floor the forests' scores were not monotone in the novelty and differed per column (measured on a
trained lab model: a new destination alerted from a novelty of 0.5, a new child from 2.0, a new user only
from 4.5), so admins' shells alerted on their rarer commands. The raw value stays in the facts, the
``ml.novelty.*`` fields and the alert.
"""

from __future__ import annotations

import itertools
import posixpath
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sentinel.anomaly.keys import WRITE_FLAGS, dest_range, dir_class, is_write_open, program
from sentinel.anomaly.profiles import ACTIVE, ACTIVITY_KINDS, HOST, SEEN, SLOT_NS, ProfileState, ProfileTable
from sentinel.containers.meta_view import NO_FIELDS as _NO_FIELDS
from sentinel.events import AF_UNIX, Event, EventType
from sentinel.process.table import Process

# A novelty below this (a chance above e^-4, 1.8 %, that the program does something new) is 0 in the row.
NEWS_LEVEL = 4.0


def news(value: float) -> float:
    """The row's value for a novelty: itself from ``NEWS_LEVEL`` up, else 0."""
    return value if value >= NEWS_LEVEL else 0.0


# Each novelty feature and the profile kind it reads.
NOVELTY: dict[str, str] = {
    "new_exe": "exe",
    "new_child": "parent_exe",
    "new_user": "user_exe",
    "new_read_dir": "read_dir",
    "new_write_dir": "write_dir",
    "new_port": "exe_port",
    "new_dest": "exe_net",
    "new_host_dest": "dest_net",
}
FEATURES: tuple[str, ...] = (*NOVELTY, "type_exec", "type_open", "type_connect")
INDEX = {name: i for i, name in enumerate(FEATURES)}
N_FEATURES = len(FEATURES)
SCORED_TYPES = (EventType.EXEC, EventType.OPEN, EventType.CONNECT)
# The novelty columns each event type's forest splits on. ``new_exe`` (a program new to the whole host) is
# measured and shown (ml.novelty.exe, the alert's list of what was new) but does not alert on its own: an
# admin's first `who` on a host is new to the host, not to the shell that ran it, and the shell's children
# are judged by ``new_child`` (a web server's new child is news; an interactive shell's is not).
TYPE_NOVELTY: dict[str, tuple[str, ...]] = {
    "exec": ("new_child", "new_user"),
    "open": ("new_read_dir", "new_write_dir"),
    "connect": ("new_port", "new_dest", "new_host_dest"),
}
COUNTED_MAX = 65_536
MEMO_MAX = 16_384  # repeated opens remembered per time slot
ACTIVE_SPAN_MAX = 3  # slots an open's folded repeats can vouch for beyond its own (the default 30 s window)


def _exe_of(proc: Process | None) -> str:
    if proc is None:
        return "?"
    return proc.exe or proc.filename or f"[{proc.comm}]"


@dataclass(slots=True)
class FeatureRow:
    """One event's row, with the words behind it for explanations."""

    values: np.ndarray
    details: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class NewItem:
    """One thing the row did that its subject never did before, with the subject's baseline at that time."""

    feature: str
    subject: str
    item: str
    total: float  # the subject's events in the baseline
    distinct: int  # distinct items it had
    novelty: float = 0.0  # -log(chance the subject does something new); rows hold it from NEWS_LEVEL


@dataclass(slots=True)
class RowFacts:
    """The raw values behind one row: enough to explain it in words later, and the keys it will count.

    ``keys`` are (feature column or -1, kind, subject, item): what the row counts once learned, and what a
    training row is measured against with itself left out; ``counts`` each key's count when measured.
    """

    etype: int
    type_name: str
    exe: str  # the executable
    pexe: str
    uid: int
    keys: list[tuple[int, str, str, str]] = field(default_factory=list)
    program: str = ""  # the profiles' subject: the executable, with the script for an interpreter
    counts: list[float] = field(default_factory=list)
    new: list[NewItem] | None = None  # what was new (only rows with novelty: rare)
    port: int = 0
    address: str = ""
    path: str = ""
    ret: int = 0
    repeats: float = 1.0  # occurrences the event stands for (an open with the kernel's suppressed repeats)
    # A short key that determines the whole row, so the agent's score cache hashes 3 values, not the row.
    row_key: tuple[int, int, float] | None = None
    committed: bool = False  # the keys are counted (once)
    active_span: int = 1  # time slots up to this one the activity keys vouch for (folded repeats)
    news: bool = False  # a column its type's forest splits on holds a novelty (from NEWS_LEVEL)
    # A known open's (program, write, directory, uid); an exec's (program, parent's program, uid, result).
    memo_key: tuple[str, bool, str, int] | tuple[str, str, int, int] | None = None

    def details(self, baseline: str = "the baseline") -> dict[str, str]:
        """Each novelty in words ("appsrv connected to 127.0.0.1:18999: no connection to this port by this
        program in 5 h of baseline"), and the event type; ``baseline`` says how long the baseline is."""
        d = {n.feature: new_item_text(self, n, baseline) for n in self.new or ()}
        tname = _TYPE_FEATURE.get(self.etype)
        if tname is not None:
            article = "an" if self.type_name[:1] in ("a", "e", "i", "o", "u") else "a"
            d[tname] = f"{article} {self.type_name} event"
        return d


def new_item_text(facts: RowFacts, n: NewItem, baseline: str) -> str:
    """One novelty in words, with the subject's baseline behind it."""
    prog = facts.program or facts.exe
    name = posixpath.basename(prog) or prog
    seen = f"{n.total:.0f} events, {n.distinct} distinct" if n.total else "nothing seen"
    f = n.feature
    if f == "new_exe":
        return f"{prog} ran for the first time: no program ran from there in {baseline} ({seen})"
    if f == "new_child":
        parent = posixpath.basename(n.subject) or n.subject
        return (f"{parent} started {prog}: it had not started this program in {baseline} "
                f"({seen} programs)")  # fmt: skip
    if f == "new_user":
        return f"{name} ran as uid {n.item}: it had not run as this user in {baseline} ({seen} users)"
    if f in ("new_read_dir", "new_write_dir"):
        verb, prep = ("wrote", "to") if f == "new_write_dir" else ("read", "from")
        return (f"{name} {verb} {facts.path or n.item}: nothing {verb} {prep} {n.item} by this program in "
                f"{baseline} ({seen} directories)")  # fmt: skip
    if f == "new_port":
        return (f"{name} connected to {_endpoint(facts)}: no connection to this port by this program in "
                f"{baseline} ({seen} ports)")  # fmt: skip
    if f == "new_dest":
        return (f"{name} connected to {_endpoint(facts)}: no connection to {n.item} by this program in "
                f"{baseline} ({seen} ranges)")  # fmt: skip
    if f == "new_host_dest":
        return f"no program on this host connected to {n.item} in {baseline} (now {name}, {_endpoint(facts)})"
    return f"{f}: {n.item}"


def _endpoint(facts: RowFacts) -> str:
    if not facts.port:
        return facts.address
    return f"[{facts.address}]:{facts.port}" if ":" in facts.address else f"{facts.address}:{facts.port}"


_OPEN_TYPE = EventType.OPEN
_TYPE_FEATURE = {EventType.EXEC: "type_exec", EventType.OPEN: "type_open", EventType.CONNECT: "type_connect"}
_TYPE_COLUMN = {t: INDEX[f] for t, f in _TYPE_FEATURE.items()}
_NEW_EXE, _NEW_CHILD, _NEW_USER = INDEX["new_exe"], INDEX["new_child"], INDEX["new_user"]
_NEW_READ, _NEW_WRITE = INDEX["new_read_dir"], INDEX["new_write_dir"]
_NEW_PORT, _NEW_DEST, _NEW_HOST_DEST = INDEX["new_port"], INDEX["new_dest"], INDEX["new_host_dest"]
_OPEN_BASE = [0.0] * N_FEATURES
_OPEN_BASE[_TYPE_COLUMN[EventType.OPEN]] = 1.0
# The row of an open whose directory the program knows (read or write alike): never changed by its users.
FAMILIAR_OPEN_ROW: list[float] = _OPEN_BASE.copy()
# The row of an exec whose program, parent's child and user are all known: the exec column alone.
FAMILIAR_EXEC_ROW: list[float] = [0.0] * N_FEATURES
FAMILIAR_EXEC_ROW[_TYPE_COLUMN[EventType.EXEC]] = 1.0
_ROW_TOKENS = itertools.count(1)


def _open_dir(path: str) -> str:
    """``posixpath.dirname`` for the table's normalised paths, without its generality's cost."""
    i = path.rfind("/")
    return path[:i] if i > 0 else ("/" if i == 0 else ".")


@dataclass(slots=True)
class MemoEntry:
    """A repeated open's answer for one slot: its shared facts, valid while both tables keep their
    generation; ``view`` is the caller's (the engine keeps its ``ctx.ml`` for the facts there)."""

    facts: RowFacts
    table: ProfileTable
    generation: int
    users: ProfileTable
    user_generation: int
    view: object = None


@dataclass(slots=True)
class ExecMemoEntry:
    """A repeated exec's answer for one slot: its shared facts (the three measured keys, their counts after
    counting), the program's activity keys (counted in this slot too), and every table the row or its
    counting touches with its generation: valid while none forgot anything."""

    facts: RowFacts
    activity: tuple[tuple[int, str, str, str], ...]
    tables: tuple[tuple[ProfileTable, int], ...]
    view: object = None


@dataclass(slots=True)
class FeatureExtractor:
    """Turns (event, process) into rows, measured against the host profiles and then (``learn``) counted."""

    state: ProfileState = field(default_factory=ProfileState)
    learn: bool = True
    # Processes whose image has been counted: a process first met by an open or connect (a daemon started
    # before the agent, a forked worker) counts its executable once, or it would look never-seen forever.
    _counted: dict[str, None] = field(default_factory=dict, repr=False)
    # entity id → (exec count, image, program): recomputed after an exec or once the image is known
    _programs: dict[str, tuple[int, str, str]] = field(default_factory=dict, repr=False)
    # The containers' runtime metadata (``sentinel.containers.meta_view.FieldsLookup``), as the event being
    # measured sees it: set per event by the engine (and per replayed segment by training). None: no view.
    containers: Any = field(default=None, repr=False)
    _active: dict[str, int] = field(default_factory=dict, repr=False)  # entity → last slot counted active
    # This time slot's repeated opens (:meth:`familiar_open`): memo key → MemoEntry.
    _memo: dict[tuple[str, bool, str, int], MemoEntry] = field(default_factory=dict, repr=False)
    # ... and its repeated execs (:meth:`familiar_exec`): (program, parent's program, uid, result) → entry.
    _exec_memo: dict[tuple[str, str, int, int], ExecMemoEntry] = field(default_factory=dict, repr=False)
    _memo_slot: int = -1

    def _activity(self, facts: RowFacts, proc: Process | None, program: str, wall_ns: int) -> None:
        """Once per time slot per process: count the program active in its per-program profiles.

        An open that stands for repeats the kernel folded (``facts.repeats``) also vouches for the slots
        since the process was last seen active, up to ``ACTIVE_SPAN_MAX`` more: a daemon rereading the same
        files is reported once per de-duplication window (30 s by default), and counted by its reports
        alone it showed a third of its evidence (measured: 22 of some 60 slots in ten minutes)."""
        if proc is None or wall_ns <= 0:
            return
        slot = wall_ns // SLOT_NS
        last = self._active.get(proc.entity_id)
        if last == slot:
            return
        if len(self._active) >= COUNTED_MAX:
            self._active.clear()
        self._active[proc.entity_id] = slot
        if last is not None and facts.repeats > 1.0:
            facts.active_span = int(min(slot - last, 1 + min(facts.repeats - 1.0, ACTIVE_SPAN_MAX)))
        for kind in ACTIVITY_KINDS:
            facts.keys.append((-1, kind, program, ACTIVE))
            facts.counts.append(0.0)

    def program_of(self, proc: Process | None) -> str:
        """The profiles' subject for a process (:func:`sentinel.anomaly.keys.program`), cached per image."""
        if proc is None:
            return "?"
        image = self._image_of(proc)
        hit = self._programs.get(proc.entity_id)
        if hit is not None and hit[0] == proc.exec_count and hit[1] == image:
            return hit[2]
        prog = program(_exe_of(proc), proc.args)
        if image:
            prog = f"[{image}] {prog}"
        if len(self._programs) >= COUNTED_MAX:
            self._programs.clear()
        self._programs[proc.entity_id] = (proc.exec_count, image, prog)
        return prog

    def _image_of(self, proc: Process) -> str:
        """The image repository of the container ``proc`` runs in, once its runtime has answered; "" on the
        host and before (or without) an answer. Programs in a container are profiled per image: the same
        program in another image, or on the host, is another subject, and the keys name no host or container
        (an image behaves the same on every host). Before the answer a container's first events are measured
        as the host's are (no new subject that would be new for every container start)."""
        ref = proc.container
        containers = self.containers
        if ref is None or containers is None:
            return ""
        return containers.get(ref.full_id, _NO_FIELDS).image_repository or ""

    def row(self, ev: Event, proc: Process | None, path: str | None = None, wall_ns: int = 0) -> FeatureRow:
        """Row of one exec/open/connect; ``path`` is the resolved open path, ``wall_ns`` the event time."""
        values, facts = self.compute(ev, proc, path, wall_ns)
        return FeatureRow(np.array(values, dtype=np.float64), facts.details())

    def _novel(self, x: list[float], facts: RowFacts, col: int, kind: str, subject: str, item: str) -> None:
        """Measure one profile key into column ``col`` (-1: counted only) and remember it for counting."""
        facts.keys.append((col, kind, subject, item))
        if col < 0:  # counted only: nothing reads its count
            facts.counts.append(0.0)
            return
        table = self.state.tables[kind]
        value, count = table.novelty(subject, item)
        facts.counts.append(count)
        if value >= NEWS_LEVEL:
            x[col] = value
            facts.news = facts.news or col != _NEW_EXE  # a new program on the host alone is no forest's
        if value > 0.0:
            items, total, _ = table.subject_stats(subject)
            new = facts.new if facts.new is not None else []
            new.append(NewItem(FEATURES[col], subject, item, total, items, value))
            facts.new = new

    def compute(
        self,
        ev: Event,
        proc: Process | None,
        path: str | None = None,
        wall_ns: int = 0,
        learn: bool | None = None,
    ) -> tuple[list[float], RowFacts]:
        """The hot path: the row as a list in ``FEATURES`` order and its raw facts, no strings formatted.

        With ``learn`` (default: the extractor's setting) the row's keys are counted right after it is
        measured; without, the caller counts them later with :meth:`commit` (after scoring).
        """
        etype = ev.type
        is_open = etype == _OPEN_TYPE
        first_met = proc is not None and proc.entity_id not in self._counted
        if is_open and not first_met and proc is not None:
            return self._known_open(ev, proc, path, wall_ns, self.learn if learn is None else learn)
        parent = proc.parent if proc is not None else None
        exe = self.program_of(proc)
        is_exec = etype == EventType.EXEC
        x = [0.0] * N_FEATURES
        facts = RowFacts(etype, ev.type_name, _exe_of(proc), _exe_of(parent), ev.uid, ret=ev.ret, program=exe)
        if is_exec or first_met:
            # The process's image: measured on execs; a process first met by an open or connect (a daemon
            # older than the agent) is counted once, so it does not read as never-seen forever.
            pprog = self.program_of(parent)
            self._novel(x, facts, _NEW_EXE if is_exec else -1, "exe", HOST, exe)
            self._novel(x, facts, _NEW_CHILD if is_exec else -1, "parent_exe", pprog, exe)
            self._novel(x, facts, _NEW_USER if is_exec else -1, "user_exe", exe, str(ev.uid))
            if is_exec:
                facts.memo_key = (exe, pprog, ev.uid, ev.ret)
            if proc is not None:
                if len(self._counted) >= COUNTED_MAX:
                    self._counted.clear()
                self._counted[proc.entity_id] = None
        else:  # every event counts for the user it ran as: a daemon is met once, then acts for months
            self._novel(x, facts, -1, "user_exe", exe, str(ev.uid))
        if etype == EventType.CONNECT:
            facts.port, facts.address = ev.port, ev.address
            if ev.port:
                self._novel(x, facts, _NEW_PORT, "exe_port", exe, str(ev.port))
            dest = dest_range(ev.family, ev.address)
            if dest:
                self._novel(x, facts, _NEW_DEST, "exe_net", exe, dest)
                if ev.family != AF_UNIX:
                    self._novel(x, facts, _NEW_HOST_DEST, "dest_net", HOST, dest)
        elif is_open:
            full = path or ev.path
            facts.path = full
            write = is_write_open(ev.open_flags)
            self._novel(x, facts, _NEW_WRITE if write else _NEW_READ, "write_dir" if write else "read_dir",
                        exe, dir_class(_open_dir(full)))  # fmt: skip
            facts.repeats = 1.0 + ev.repeat_count  # what the kernel de-duplicated still happened
        col = _TYPE_COLUMN.get(etype)
        if col is not None:
            x[col] = 1.0
        self._activity(facts, proc, exe, wall_ns)
        if self.learn if learn is None else learn:  # measure, then count: a row never sees itself
            self.commit(facts, wall_ns)
        return x, facts

    def _known_open(
        self, ev: Event, proc: Process, path: str | None, wall_ns: int, learn: bool
    ) -> tuple[list[float], RowFacts]:
        """The most frequent row, an open by a process already counted: only its directory's novelty
        varies, so (column, value) is the whole row and the score cache's key."""
        exe = self.program_of(proc)
        full = path or ev.path
        write = is_write_open(ev.open_flags)
        col, kind = (_NEW_WRITE, "write_dir") if write else (_NEW_READ, "read_dir")
        cut = full.rfind("/") + 1
        directory = dir_class(_open_dir(full))
        table = self.state.tables[kind]
        value, count = table.novelty(exe, directory)
        x = _OPEN_BASE.copy()
        row_value = news(value)
        x[col] = row_value
        parent = proc.parent
        keys = [(col, kind, exe, directory), (-1, "user_exe", exe, str(ev.uid))]  # see compute()
        facts = RowFacts(
            _OPEN_TYPE, ev.type_name, _exe_of(proc), _exe_of(parent), ev.uid, keys, exe, [count, 0.0], None,
            0, "", full, ev.ret, 1.0 + ev.repeat_count, (_OPEN_TYPE, col, row_value),
        )  # fmt: skip
        facts.memo_key = (exe, write, full[:cut], ev.uid)
        if value > 0.0:
            items, total, _ = table.subject_stats(exe)
            facts.new = [NewItem(FEATURES[col], exe, directory, total, items, value)]
            facts.news = row_value > 0.0
        self._activity(facts, proc, exe, wall_ns)
        if learn:
            self.commit(facts, wall_ns)
        return x, facts

    def familiar_open(self, ev: Event, proc: Process, path: str | None, wall_ns: int) -> MemoEntry | None:
        """The memo's answer for an open that changes nothing in this time slot; None: measure it.

        Most opens repeat one a process of the same program made in the same slot, as the same user, in the
        same directory: its row is the familiar one and counting it changes no profile (an item counts once
        per slot). Such an open is answered from the memo :meth:`remember` filled after counting the first,
        without measuring, building facts or counting again (measured: ~8 µs an open in replay). The memo is
        exact: its key is everything the row and its counts depend on (the program, write access, the
        directory as resolved, the uid); it lives for one slot, holds only opens whose directory was known
        after counting, and expires when a table forgets (eviction, decay: ``generation``). The process
        must have been counted active in this slot already (else its activity is still to count).
        The facts are shared: they hold the first open's path and executables, so they serve only rows
        that cannot alert (the caller's rule)."""
        slot = wall_ns // SLOT_NS
        if slot != self._memo_slot:
            self._new_slot(slot)
            return None
        entity = proc.entity_id
        if self._active.get(entity) != slot or entity not in self._counted:
            return None
        full = path or ev.path
        key = (self.program_of(proc), bool(ev.open_flags & WRITE_FLAGS), full[: full.rfind("/") + 1], ev.uid)
        hit = self._memo.get(key)
        if hit is None or hit.table.generation != hit.generation:
            return None
        if hit.users.generation != hit.user_generation:
            return None
        state = self.state
        if wall_ns > state.last_ns:
            state.last_ns = wall_ns
        return hit

    def familiar_exec(self, ev: Event, proc: Process, wall_ns: int) -> tuple[ExecMemoEntry, bool] | None:
        """The memo's answer for an exec that changes nothing in this time slot, and whether the process
        became active in the slot with it (its row then carries the activity keys); None: measure it.

        An exec storm runs the same few programs from the same parents as the same users: once such an exec
        is counted in a slot and all three of its items (the program on the host, the parent's child, the
        user) are known, every repeat in the slot measures the familiar row and counting it changes nothing
        (items count once per slot), as for opens (:meth:`familiar_open`). What :meth:`compute` records about
        the process itself (met, active in the slot, its program) is recorded here too. The key is everything
        the row and its counts depend on; the caller uses the answer only where the row cannot alert."""
        slot = wall_ns // SLOT_NS
        if slot != self._memo_slot:
            self._new_slot(slot)
            return None
        hit = self._exec_memo.get((self.program_of(proc), self.program_of(proc.parent), ev.uid, ev.ret))
        if hit is None:
            return None
        for table, generation in hit.tables:
            if table.generation != generation:
                return None
        entity = proc.entity_id
        counted = self._counted
        if entity not in counted:
            if len(counted) >= COUNTED_MAX:
                counted.clear()
            counted[entity] = None
        active = self._active
        newly_active = active.get(entity) != slot
        if newly_active:
            if len(active) >= COUNTED_MAX:
                active.clear()
            active[entity] = slot
        self.state.saw(wall_ns)
        return hit, newly_active

    def _new_slot(self, slot: int) -> None:
        self._memo.clear()
        self._exec_memo.clear()
        self._memo_slot = slot

    def forget_memo(self) -> None:
        """Drop the slot's answers (the caller's views in them are out of date: a new model)."""
        self._memo.clear()
        self._exec_memo.clear()

    def remember(self, facts: RowFacts, wall_ns: int) -> None:
        """After a known open or exec is counted: keep its facts for the slot's repeats
        (:meth:`familiar_open`, :meth:`familiar_exec`)."""
        key = facts.memo_key
        if key is None or wall_ns <= 0 or wall_ns // SLOT_NS != self._memo_slot or not facts.committed:
            return
        if facts.etype == EventType.EXEC:
            self._remember_exec(facts, key)  # type: ignore[arg-type]
            return
        col, kind, subject, item = facts.keys[0]
        tables = self.state.tables
        table, users = tables[kind], tables["user_exe"]
        count = table.count(subject, item)
        if count < SEEN:
            return
        memo = self._memo
        if len(memo) >= MEMO_MAX:
            memo.clear()
        shared = RowFacts(
            _OPEN_TYPE, facts.type_name, facts.exe, facts.pexe, facts.uid, facts.keys[:2], facts.program,
            [count, 0.0], None, 0, "", facts.path, facts.ret, 1.0, (_OPEN_TYPE, col, 0.0), True,
        )  # fmt: skip
        memo[key] = MemoEntry(shared, table, table.generation, users, users.generation)

    def _remember_exec(self, facts: RowFacts, key: tuple[str, str, int, int]) -> None:
        """Only an exec whose three items are known after counting, and whose process became active in the
        slot with it (so the program's activity keys were counted in this slot too), answers repeats."""
        keys = facts.keys
        if len(keys) != 3 + len(ACTIVITY_KINDS):
            return
        tables = self.state.tables
        counts = []
        for _col, kind, subject, item in keys[:3]:
            count = tables[kind].count(subject, item)
            if count < SEEN:
                return
            counts.append(count)
        memo = self._exec_memo
        if len(memo) >= MEMO_MAX:
            memo.clear()
        shared = RowFacts(
            facts.etype, facts.type_name, facts.exe, facts.pexe, facts.uid, keys[:3], facts.program, counts,
            None, 0, "", "", facts.ret, 1.0, None, True,
        )  # fmt: skip
        touched = {kind for _c, kind, _s, _i in keys}
        memo[key] = ExecMemoEntry(
            shared, tuple(keys[3:]), tuple((tables[k], tables[k].generation) for k in touched)
        )

    def commit(self, facts: RowFacts, wall_ns: int, weight: float = 1.0) -> None:
        """Count a row's keys (once). An open stands for the repeats the kernel folded into it."""
        if facts.committed:
            return
        facts.committed = True
        state = self.state
        tables = state.tables
        w = weight * facts.repeats
        span = facts.active_span
        for _col, kind, subject, item in facts.keys:
            tables[kind].update(subject, item, wall_ns, w, span if span > 1 and item == ACTIVE else 1)
        state.saw(wall_ns)


def loo_row(
    state: ProfileState, x: np.ndarray, keys: list[tuple[int, str, str, str]], weight: float = 1.0
) -> None:
    """Re-measure a training row's novelty columns against the final profiles with the row left out.

    The row then looks as it would at detection time, had it happened after learning: an item seen only in
    this row's time slot reads as new, one seen again later reads as known (``x`` is changed in place).
    Items count once per slot (:data:`sentinel.anomaly.profiles.SLOT_NS`), so a row stands for one count
    (``weight``, 1): the slot it fell in.
    """
    tables = state.tables
    for col, kind, subject, item in keys:
        if col >= 0:
            x[col] = news(tables[kind].novelty(subject, item, minus=weight)[0])
