"""Per-host rarity tables: how often this host has seen a key (an exe, a parent→child pair, …) before.

The model never sees raw strings; it sees ``-log((count + a) / (N + a * K))`` per key kind, where counts decay
over event time so a host's habits can change, and the table keeps at most ``max_keys`` keys (the least
counted are evicted first) so memory is bounded. Callers score a key *before* counting it, so a training
row's rarity comes only from the data before it. State is plain JSON-able data: no pickle anywhere.

Keys are process strings (executables, directories, command-line derived), so they may hold bytes that are
not UTF-8. ``to_dict(json_safe=True)``, the form written to files, escapes them by the project's one rule
(:func:`sentinel.text.escape_keys`: escaped keys are listed under ``escaped_keys``) and ``from_dict`` gives
the same keys back, so a reloaded baseline still knows the hostile path it counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sentinel.text import escape_keys, unescape_keys

NS_PER_DAY = 86_400 * 1_000_000_000
STATE_VERSION = 1


@dataclass(slots=True)
class RarityTable:
    """Decayed counts for one key kind; ``half_life_days`` is event time, ``alpha`` the smoothing ``a``."""

    max_keys: int = 50_000
    alpha: float = 1.0
    half_life_days: float = 30.0
    counts: dict[str, float] = field(default_factory=dict)
    total: float = 0.0
    last_decay_ns: int = 0  # event time of the last decay step; 0 before the first update

    def count(self, key: str) -> float:
        return self.counts.get(key, 0.0)

    def rarity(self, key: str) -> float:
        """``-log((count + a) / (N + a * K))`` with K = distinct keys + 1 (room for the unseen key).

        Rounded to 1/64 (exact in float32): finer steps carry no meaning for the model, and equal values let
        the agent score a recurring pattern once (its score cache) instead of on every event.
        """
        k = len(self.counts) + 1
        p = (self.counts.get(key, 0.0) + self.alpha) / (self.total + self.alpha * k)
        return int(-math.log(p) * 64.0 + 0.5) / 64.0  # never negative (p <= 1): rounds half up

    def rarity_and_count(self, key: str) -> tuple[float, float]:
        """``(rarity(key), count(key))`` with one lookup: the feature hot path wants both."""
        c = self.counts.get(key, 0.0)
        p = (c + self.alpha) / (self.total + self.alpha * (len(self.counts) + 1))
        return int(-math.log(p) * 64.0 + 0.5) / 64.0, c

    def update(self, key: str, ts_ns: int = 0, weight: float = 1.0) -> None:
        """Count ``key`` at event time ``ts_ns`` (decaying first if a day or more has passed)."""
        if ts_ns - self.last_decay_ns >= NS_PER_DAY or self.last_decay_ns <= 0:
            self._decay_to(ts_ns)
        self.counts[key] = self.counts.get(key, 0.0) + weight
        self.total += weight
        if len(self.counts) > self.max_keys:
            self._evict()

    def _decay_to(self, ts_ns: int) -> None:
        """Decay in whole-day steps so the cost is per day, not per event."""
        if ts_ns <= 0:
            return
        if self.last_decay_ns <= 0:
            self.last_decay_ns = ts_ns
            return
        days = (ts_ns - self.last_decay_ns) // NS_PER_DAY
        if days <= 0 or self.half_life_days <= 0:
            return
        factor = 0.5 ** (days / self.half_life_days)
        self.counts = {k: v * factor for k, v in self.counts.items() if v * factor >= 1e-3}
        self.total = sum(self.counts.values())
        self.last_decay_ns += days * NS_PER_DAY

    def _evict(self) -> None:
        """Drop the least-counted tenth, so eviction runs rarely rather than on every new key."""
        keep = max(1, self.max_keys - self.max_keys // 10)
        ranked = sorted(self.counts.items(), key=lambda kv: kv[1], reverse=True)[:keep]
        self.counts = dict(ranked)
        self.total = sum(self.counts.values())

    def to_dict(self, json_safe: bool = False) -> dict[str, Any]:
        """The table as plain data; ``json_safe`` (files): keys that are not UTF-8 (or hold a backslash)
        escaped and listed in ``escaped_keys``, so any JSON encoder takes it and ``from_dict`` reverses it."""
        counts, escaped = escape_keys(self.counts) if json_safe else (dict(self.counts), [])
        out: dict[str, Any] = {
            "max_keys": self.max_keys,
            "alpha": self.alpha,
            "half_life_days": self.half_life_days,
            "total": self.total,
            "last_decay_ns": self.last_decay_ns,
            "counts": counts,
        }
        if escaped:
            out["escaped_keys"] = escaped
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RarityTable:
        if not isinstance(data, dict):
            raise ValueError("a rarity table must be an object")
        counts = data.get("counts", {})
        if not isinstance(counts, dict):
            raise ValueError("rarity counts must be an object")
        escaped = data.get("escaped_keys", [])
        if not isinstance(escaped, list) or not all(isinstance(k, str) for k in escaped):
            raise ValueError("escaped_keys must be a list of keys")
        clean: dict[str, float] = {}
        for k, v in counts.items():
            if not isinstance(k, str) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ValueError(f"bad rarity count for key {k!r}")
            clean[k] = float(v)
        clean = unescape_keys(clean, escaped)
        table = cls(
            max_keys=int(data.get("max_keys", 50_000)),
            alpha=float(data.get("alpha", 1.0)),
            half_life_days=float(data.get("half_life_days", 30.0)),
            counts=clean,
            total=float(data.get("total", sum(clean.values()))),
            last_decay_ns=int(data.get("last_decay_ns", 0)),
        )
        if table.alpha <= 0 or table.max_keys <= 0 or not math.isfinite(table.total):
            raise ValueError("bad rarity table parameters")
        return table


# Key kinds the feature extractor counts.
KINDS = ("exe", "parent_exe", "user_exe", "exe_port", "exe_dir", "dest_net")


@dataclass(slots=True)
class RarityState:
    """One table per key kind; the whole host baseline the features are computed against."""

    tables: dict[str, RarityTable] = field(default_factory=lambda: {k: RarityTable() for k in KINDS})

    def to_dict(self, json_safe: bool = False) -> dict[str, Any]:
        """Plain data; ``json_safe`` for what is written to a file (see :meth:`RarityTable.to_dict`)."""
        tables = {k: t.to_dict(json_safe) for k, t in self.tables.items()}
        return {"version": STATE_VERSION, "tables": tables}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RarityState:
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("unknown rarity state version")
        tables = data.get("tables")
        if not isinstance(tables, dict) or set(tables) != set(KINDS):
            raise ValueError(f"rarity state must have tables {', '.join(KINDS)}")
        return cls(tables={k: RarityTable.from_dict(tables[k]) for k in KINDS})
