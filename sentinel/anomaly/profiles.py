"""Per-host behaviour profiles: what each program has done on this host, and how often it does new things.

A profile kind maps a *subject* (a program, or the host as a whole) to the *items* it was seen with: the
programs a parent started, the users a program ran as, the directories it read or wrote, the ports and address
ranges it connected to. Counts decay over event time, so habits can change, and memory is bounded.

What the model is told is not "how rare is this item" but "how unexpected is it that *this* subject does
something new": per subject the table keeps its total ``N``, its distinct items ``K`` and the items seen
about once ``n1``. Two estimates of the chance that the subject's next event is new are taken, and the
*higher* one is believed: Good–Turing's ``n1 / N`` (a compiler opens new directories all the time: a new one
means little) and Witten–Bell's ``K / (N + K)`` (an admin's shell has started thirty different programs:
even once each has recurred, a thirty-first is no news). Good–Turing alone called an admin shell's first
`stat` news once its thirty usual commands had each come back (measured on the lab: N = 139, n1 = 2, novelty
4.0 against 1.7 with both). A database daemon that touched the same three directories for an hour has both
near 0: a new one is news. The novelty of an unseen item is ``-log(p)``; a seen item's novelty is 0.

Training rows are measured against the profiles as they stand at the end of learning with the row itself
left out (:meth:`ProfileTable.novelty` with ``minus``): the row then looks exactly as it would have looked at
detection time had it happened after learning. Items are process strings (paths may hold bytes that are not
UTF-8): ``to_dict(json_safe=True)`` escapes them by the project's one rule (:mod:`sentinel.text`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sentinel.text import escape_keys, unescape_keys

NS_PER_DAY = 86_400 * 1_000_000_000
STATE_VERSION = 2
SEEN = 0.5  # a decayed count below this is forgotten: the item reads as new again
SINGLE = 1.5  # an item counted below this (and at least SEEN) was seen about once
SMOOTHING = 0.5  # ``a`` in the novelty: a subject with n1 = 0 still has some chance of something new
# A habit is what recurs over time, not what one burst repeats: an item counts at most once per slot of this
# length for its subject. By raw event count, a young program that read one directory a thousand times in
# its first seconds looked like a creature of habit, and every new directory it then read looked like news
# (measured on the lab's held-out capture: 210 events above the thresholds in 3 minutes, 16 with 10 s slots,
# every lab attack still caught). Ten seconds keeps the evidence of a service that works every few seconds.
SLOT_NS = 10 * 1_000_000_000
HOST = ""  # the subject of host-wide kinds (a program new on the host, a destination new to the host)
# The pseudo-item a program's per-program profiles count in every time slot it is active, whatever it did: a
# daemon that ran for an hour and never started a child (or wrote, or connected) has an hour of evidence that
# it does not, and its first child is news; counted by its children alone it had no evidence at all
# (measured live: a database's first child scored as unexpected as a brand-new program's, and was missed).
# No path, port, uid or address holds a NUL.
ACTIVE = "\x00active"
ACTIVITY_KINDS = ("parent_exe", "read_dir", "write_dir", "exe_port", "exe_net")

# Kinds of profile, and what their subject and item are.
KINDS: dict[str, str] = {
    "exe": "the host → programs it ran",
    "parent_exe": "a program → programs it started",
    "user_exe": "a program → users it ran as",
    "read_dir": "a program → directories it read from",
    "write_dir": "a program → directories it wrote to",
    "exe_port": "a program → ports it connected to",
    "exe_net": "a program → address ranges it connected to",
    "dest_net": "the host → address ranges any program connected to",
}


@dataclass(slots=True)
class Profile:
    """One subject's items; ``singles`` counts items in [SEEN, SINGLE), ``forgotten`` singles evicted."""

    items: dict[str, float] = field(default_factory=dict)
    total: float = 0.0
    singles: int = 0
    forgotten: float = 0.0
    slots: dict[str, int] = field(default_factory=dict)  # item → the time slot it was last counted in

    def recount(self) -> None:
        """Singles from the items (after eviction or decay); the total keeps forgotten items' events."""
        self.singles = sum(1 for c in self.items.values() if SEEN <= c < SINGLE)
        if len(self.slots) > len(self.items):
            self.slots = {i: s for i, s in self.slots.items() if i in self.items}


def _distinct_besides(prof: Profile, item: str) -> float:
    """``K`` for measuring ``item``: the subject's distinct items other than it and the activity marker,
    forgotten singles included."""
    items = prof.items
    return len(items) - (ACTIVE in items) + prof.forgotten - (item in items)


def _is_single(count: float) -> bool:
    return SEEN <= count < SINGLE


def novelty_value(n1: float, total: float, distinct: float = 0.0) -> float:
    """``-log(p)``, ``p`` the higher of ``(n1 + a) / (N + 1)`` and ``max(K, a) / (N + K + 1)``, rounded to
    1/16: equal values let the agent's score cache work."""
    p = max((n1 + SMOOTHING) / (total + 1.0), max(distinct, SMOOTHING) / (total + distinct + 1.0))
    return int(-math.log(min(1.0, p)) * 16.0 + 0.5) / 16.0


@dataclass(slots=True)
class ProfileTable:
    """Decayed counts per (subject, item) for one kind; ``max_items`` bounds the items of all subjects."""

    max_items: int = 50_000
    max_per_subject: int = 4_096
    half_life_days: float = 30.0
    subjects: dict[str, Profile] = field(default_factory=dict)
    size: int = 0
    last_decay_ns: int = 0
    generation: int = 0  # bumped whenever counts go down (eviction, decay): memos of "already known" expire

    def count(self, subject: str, item: str) -> float:
        prof = self.subjects.get(subject)
        return prof.items.get(item, 0.0) if prof is not None else 0.0

    def novelty(self, subject: str, item: str, minus: float = 0.0) -> tuple[float, float]:
        """``(novelty, count)``; ``minus`` leaves a row's own weight out (training rows, leave-one-out)."""
        prof = self.subjects.get(subject)
        if prof is None:
            return novelty_value(0.0, 0.0), 0.0
        count = prof.items.get(item, 0.0)
        if not minus:
            if count >= SEEN:
                return 0.0, count
            distinct = _distinct_besides(prof, item)
            return novelty_value(prof.singles + prof.forgotten, prof.total, distinct), count
        left = count - minus
        if left >= SEEN:
            return 0.0, left
        # Left out, the item is unseen: it leaves the singles and the distinct items it was counted in.
        singles = prof.singles + prof.forgotten - (1 if _is_single(count) else 0)
        distinct = _distinct_besides(prof, item)
        value = novelty_value(max(0.0, singles), max(0.0, prof.total - minus), max(0.0, distinct))
        return value, max(0.0, left)

    def subject_stats(self, subject: str) -> tuple[int, float, float]:
        """(items, total, about-once items) of a subject: the explanation's "in N events of baseline"."""
        prof = self.subjects.get(subject)
        if prof is None:
            return 0, 0.0, 0.0
        return len(prof.items) - (ACTIVE in prof.items), prof.total, prof.singles + prof.forgotten

    def update(self, subject: str, item: str, ts_ns: int = 0, weight: float = 1.0, span: int = 1) -> None:
        """Count ``item`` for ``subject`` at event time ``ts_ns`` (decaying first once a day has passed);
        ``span`` > 1: in each of the ``span`` slots up to ``ts_ns``'s not counted yet for the item."""
        if ts_ns - self.last_decay_ns >= NS_PER_DAY or self.last_decay_ns <= 0:
            self._decay_to(ts_ns)
        prof = self.subjects.get(subject)
        if prof is None:
            prof = self.subjects[subject] = Profile()
        if ts_ns > 0:  # (0: no event time, as in direct calls: every call counts)
            slot = ts_ns // SLOT_NS
            last = prof.slots.get(item)
            if last == slot:
                return  # counted in this slot already: a habit is what recurs over time
            prof.slots[item] = slot
            weight = min(weight, 1.0)
            if span > 1:
                weight *= span if last is None else max(1, min(span, slot - last))
        items = prof.items
        old = items.get(item)
        if old is None:
            self.size += 1
            old = 0.0
        new = old + weight
        items[item] = new
        prof.total += weight
        if _is_single(old) != _is_single(new):
            prof.singles += 1 if _is_single(new) else -1
        if len(items) > self.max_per_subject:
            self._evict_subject(prof)
        if self.size > self.max_items:
            self._evict()

    def _evict_subject(self, prof: Profile) -> None:
        """Drop a subject's least-counted tenth; the singles among them stay counted in ``forgotten``, or a
        broad program that forgets would look as if it never did anything new."""
        self.generation += 1
        keep = max(1, self.max_per_subject - self.max_per_subject // 10)
        ranked = sorted(prof.items.items(), key=lambda kv: kv[1], reverse=True)
        dropped = ranked[keep:]
        prof.forgotten += sum(1 for _, c in dropped if _is_single(c))
        self.size -= len(dropped)
        prof.items = dict(ranked[:keep])
        prof.recount()  # the total stays: the events happened

    def _evict(self) -> None:
        """Over the table's bound: drop the least-counted tenth of all items (rare: bounded cost)."""
        self.generation += 1
        keep = max(1, self.max_items - self.max_items // 10)
        everything = sorted(
            ((c, s, i) for s, p in self.subjects.items() for i, c in p.items.items()), reverse=True
        )
        kept: dict[str, dict[str, float]] = {}
        for c, s, i in everything[:keep]:
            kept.setdefault(s, {})[i] = c
        for s, prof in list(self.subjects.items()):
            before = prof.items
            prof.items = kept.get(s, {})
            prof.forgotten += sum(1 for i, c in before.items() if i not in prof.items and _is_single(c))
            prof.recount()
        self.size = min(keep, len(everything))

    def _decay_to(self, ts_ns: int) -> None:
        """Decay in whole-day steps, so the cost is per day, not per event."""
        if ts_ns <= 0:
            return
        if self.last_decay_ns <= 0:
            self.last_decay_ns = ts_ns
            return
        days = (ts_ns - self.last_decay_ns) // NS_PER_DAY
        if days <= 0 or self.half_life_days <= 0:
            return
        self.generation += 1
        factor = 0.5 ** (days / self.half_life_days)
        size = 0
        for s, prof in list(self.subjects.items()):
            prof.items = {i: c * factor for i, c in prof.items.items() if c * factor >= 1e-3}
            prof.forgotten *= factor
            prof.total *= factor
            prof.recount()
            if not prof.items and prof.forgotten < 1e-3:
                del self.subjects[s]
            size += len(prof.items)
        self.size = size
        self.last_decay_ns += days * NS_PER_DAY

    def to_dict(self, json_safe: bool = False) -> dict[str, Any]:
        subjects: dict[str, Any] = {}
        for s, prof in self.subjects.items():
            items, escaped = escape_keys(prof.items) if json_safe else (dict(prof.items), [])
            entry: dict[str, Any] = {"items": items, "total": prof.total, "forgotten": prof.forgotten}
            if escaped:
                entry["escaped_keys"] = escaped
            subjects[s] = entry
        escaped_subjects: list[str] = []
        if json_safe:
            subjects, escaped_subjects = escape_keys(subjects)
        out: dict[str, Any] = {
            "max_items": self.max_items,
            "max_per_subject": self.max_per_subject,
            "half_life_days": self.half_life_days,
            "last_decay_ns": self.last_decay_ns,
            "subjects": subjects,
        }
        if escaped_subjects:
            out["escaped_subjects"] = escaped_subjects
        return out

    @classmethod
    def from_dict(cls, data: Any) -> ProfileTable:
        if not isinstance(data, dict):
            raise ValueError("a profile table must be an object")
        raw = data.get("subjects", {})
        escaped_subjects = data.get("escaped_subjects", [])
        if not isinstance(raw, dict) or not isinstance(escaped_subjects, list):
            raise ValueError("subjects must be an object (escaped_subjects a list)")
        table = cls(
            max_items=int(data.get("max_items", 50_000)),
            max_per_subject=int(data.get("max_per_subject", 4_096)),
            half_life_days=float(data.get("half_life_days", 30.0)),
            last_decay_ns=int(data.get("last_decay_ns", 0)),
        )
        if table.max_items <= 0 or table.max_per_subject <= 0 or not math.isfinite(table.half_life_days):
            raise ValueError("bad profile table parameters")
        for s, entry in unescape_keys(raw, [k for k in escaped_subjects if isinstance(k, str)]).items():
            if not isinstance(entry, dict) or not isinstance(entry.get("items"), dict):
                raise ValueError(f"profile {s!r} must be an object with items")
            escaped = entry.get("escaped_keys", [])
            if not isinstance(escaped, list) or not all(isinstance(k, str) for k in escaped):
                raise ValueError(f"profile {s!r}: escaped_keys must be a list of keys")
            items: dict[str, float] = {}
            for i, c in entry["items"].items():
                if not isinstance(c, int | float) or isinstance(c, bool) or not math.isfinite(c) or c < 0:
                    raise ValueError(f"profile {s!r}: bad count for item {i!r}")
                items[i] = float(c)
            forgotten = entry.get("forgotten", 0.0)
            if not isinstance(forgotten, int | float) or not math.isfinite(forgotten) or forgotten < 0:
                raise ValueError(f"profile {s!r}: bad forgotten count")
            prof = Profile(unescape_keys(items, escaped), forgotten=float(forgotten))
            prof.recount()
            least = sum(prof.items.values())
            total = entry.get("total", least)
            if not isinstance(total, int | float) or not math.isfinite(total) or total < least - 1e-6:
                raise ValueError(f"profile {s!r}: the total is below the sum of its items")
            prof.total = float(total)
            table.subjects[s] = prof
            table.size += len(prof.items)
        return table


@dataclass(slots=True)
class ProfileState:
    """One table per kind: the host's whole behavioural baseline, plus when it started (for the words
    "in 5 h of baseline" an alert says)."""

    tables: dict[str, ProfileTable] = field(default_factory=lambda: {k: ProfileTable() for k in KINDS})
    first_ns: int = 0  # wall time of the first event counted
    last_ns: int = 0

    def update(self, kind: str, subject: str, item: str, wall_ns: int, weight: float = 1.0) -> None:
        self.tables[kind].update(subject, item, wall_ns, weight)
        self.saw(wall_ns)

    def saw(self, wall_ns: int) -> None:
        """Extend the baseline's span to an event counted at ``wall_ns``."""
        if wall_ns > self.last_ns:
            self.last_ns = wall_ns
        if wall_ns > 0 and (self.first_ns <= 0 or wall_ns < self.first_ns):
            self.first_ns = wall_ns

    def span_s(self) -> float:
        return max(0.0, (self.last_ns - self.first_ns) / 1e9) if self.first_ns > 0 else 0.0

    def to_dict(self, json_safe: bool = False) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "tables": {k: t.to_dict(json_safe) for k, t in self.tables.items()},
        }

    @classmethod
    def from_dict(cls, data: Any) -> ProfileState:
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError(
                f"unknown baseline version {data.get('version') if isinstance(data, dict) else None!r} "
                f"(this agent keeps version {STATE_VERSION})"
            )
        tables = data.get("tables")
        if not isinstance(tables, dict) or set(tables) != set(KINDS):
            raise ValueError(f"the baseline must have tables {', '.join(KINDS)}")
        first, last = data.get("first_ns", 0), data.get("last_ns", 0)
        if not isinstance(first, int) or not isinstance(last, int):
            raise ValueError("first_ns and last_ns must be integers")
        return cls({k: ProfileTable.from_dict(tables[k]) for k in KINDS}, first, last)

    def copy(self) -> ProfileState:
        return ProfileState.from_dict(self.to_dict())
