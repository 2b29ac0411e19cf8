"""Alert floods: repeats of one behaviour within a window become one summary; a rule's storm is rate-limited.

The first alert for a key is written at once, so nothing waits on aggregation; repeats within the window are
counted, never dropped, and when the window closes one summary alert carries the count, the first and last
repeat times and a capped sample of the distinct executables and command lines behind them. A behaviour
that keeps repeating is summarised at growing intervals — the next window is twice as long (60 s, 2 min,
4 min … up to ``MAX_SPAN_FACTOR`` times the window) and its repeats are not written as a first alert again —
so a build loop running all day writes a handful of lines an hour, not one a minute. A streak keyed by a
writable place (``/tmp/``: many different executables share that key, an intruder's among a build's) grows
only up to ``PLACE_SPAN_FACTOR`` windows (4 min), so what folded into it is reported within minutes, not
half an hour. A window that closes
without repeats ends the streak: the next occurrence is a first alert again, written at once. The key is the
rule and what :mod:`sentinel.alerts.behaviour` computes for it (the acting program, its parent, user and
container image by default; a rule's ``aggregate_by`` fields otherwise). A summary carries the most severe
priority it folded, so folding never lowers severity.

A per-rule rate limit bounds what a storm of *distinct* behaviours can send: past ``rate_per_min`` first
occurrences of one rule within a minute (event time), further ones are held back and counted into one
rate-limit summary for that rule, written when its minute ends. Internal alerts (about the agent) are never
rate-limited.

Windows are measured in event time, so replaying a capture aggregates exactly as the live agent did. Memory
is bounded: past ``max_keys`` open windows the oldest is closed early (its summary written first) and the
eviction counted.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sentinel.alerts.behaviour import is_place
from sentinel.alerts.model import Alert
from sentinel.rules.model import PRIORITIES

NS = 1_000_000_000
DEFAULT_WINDOW_S = 60.0
DEFAULT_MAX_KEYS = 10_000
DEFAULT_RATE_PER_MIN = 20  # first occurrences per rule per minute before the rate limit holds alerts back
RATE_WINDOW_NS = 60 * NS
MAX_SPAN_FACTOR = 32  # a streak's windows grow up to 32 x the window (60 s → 32 min)
PLACE_SPAN_FACTOR = 4  # … and a writable place's (behaviour.is_place) up to 4 x (60 s → 4 min)
DISTINCT_MAX = 10  # distinct values a summary lists per field; the other repeats are counted as "more"
DISTINCT_FIELDS = ("process.executable", "process.command_line")
_RANK = {p: i for i, p in enumerate(PRIORITIES)}  # lower is more severe


@dataclass(slots=True)
class _Window:
    start_ns: int  # time of the alert that opened it (the one written at once), or of the previous end
    end_ns: int = 0
    top: Any = None  # the most severe rule seen (the summary carries its priority)
    last: Alert | None = None  # the latest repeat: what the summary shows
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    distinct: dict[str, dict[str, None]] = field(default_factory=dict)  # field → values, in order seen
    more: dict[str, int] = field(default_factory=dict)  # field → repeats whose value is not listed

    def fold(self, alert: Alert) -> None:
        ts = alert.ts_ns
        previous = self.last
        if previous is None:
            self.first_ns = ts
        elif alert.sum_fields:
            _add_up(alert, previous)
        self.last = alert
        self.count += 1
        self.last_ns = max(self.last_ns, ts)
        if self.top is None or _RANK.get(alert.rule.priority, 99) < _RANK.get(self.top.priority, 99):
            self.top = alert.rule
        for name, value in distinct_values(alert):
            seen = self.distinct.setdefault(name, {})
            if value in seen:
                continue
            if len(seen) < DISTINCT_MAX:
                seen[value] = None
            else:
                self.more[name] = self.more.get(name, 0) + 1


@dataclass(slots=True)
class _Rate:
    """One rule's current minute: first occurrences written, and what was held back."""

    start_ns: int
    written: int = 0
    held: _Window | None = None


@dataclass(slots=True)
class AggregationStats:
    alerts: int = 0  # offered
    emitted_first: int = 0  # written at once
    repeats: int = 0  # counted into a summary
    summaries: int = 0
    evicted: int = 0  # windows closed early to respect max_keys
    open_windows: int = 0
    rate_limited: int = 0  # first occurrences held back by the per-rule rate limit (counted in a summary)
    rate_summaries: int = 0


NEVER = 1 << 62  # an event time no window reaches


class Aggregator:
    """``offer`` an alert, ``advance`` event time, ``flush`` at the end; each returns the alerts to write."""

    def __init__(
        self, window_s: float = DEFAULT_WINDOW_S, max_keys: int = DEFAULT_MAX_KEYS, rate_per_min: int = 0
    ) -> None:
        self.window_ns = int(window_s * NS)
        self.max_keys = max(1, max_keys)
        self.rate_per_min = rate_per_min  # 0: no rate limit
        self.windows: OrderedDict[tuple[Any, ...], _Window] = OrderedDict()  # oldest streak first
        self._ends: list[tuple[int, int, tuple[Any, ...], _Window]] = []  # heap by end; stale ones skipped
        self._seq = itertools.count()
        self.rates: dict[tuple[str, str], _Rate] = {}  # (ruleset, rule name) → its current minute
        self.stats = AggregationStats()
        # No window ends before this event time: the stream asks advance() only from then (one comparison
        # per event instead of a call).
        self.next_due_ns = NEVER

    @staticmethod
    def key(alert: Alert) -> tuple[Any, ...]:
        return (alert.ruleset, alert.rule.name, *alert.lineage)

    def offer(self, alert: Alert) -> list[Alert]:
        stats = self.stats
        stats.alerts += 1
        if self.window_ns <= 0:
            stats.emitted_first += 1
            return [alert]
        key = self.key(alert)
        win = self.windows.get(key)
        ts = alert.ts_ns
        out: list[Alert] = []
        while win is not None and ts >= win.end_ns:  # its window passed, advance() has not closed it yet
            win = self._close(key, win, out)
        if win is not None:
            win.fold(alert)
            stats.repeats += 1
            return out
        if self.rate_per_min > 0 and not alert.internal and self._held_back(alert, out):
            return out
        if len(self.windows) >= self.max_keys:
            _, oldest = self.windows.popitem(last=False)
            stats.evicted += 1
            out.extend(self._summary(oldest))
        self._open(key, _Window(start_ns=ts, end_ns=ts + self.window_ns, top=alert.rule))
        stats.emitted_first += 1
        out.append(alert)
        return out

    def _open(self, key: tuple[Any, ...], win: _Window) -> None:
        self.windows[key] = win
        heapq.heappush(self._ends, (win.end_ns, next(self._seq), key, win))
        self.next_due_ns = min(self.next_due_ns, win.end_ns)

    def _close(self, key: tuple[Any, ...], win: _Window, out: list[Alert]) -> _Window | None:
        """Write ``win``'s summary; with repeats the streak goes on in a window twice as long (returned),
        without them the key is done (None)."""
        del self.windows[key]
        if win.last is None:
            return None
        out.extend(self._summary(win))
        factor = PLACE_SPAN_FACTOR if is_place(key[2:]) else MAX_SPAN_FACTOR  # key: ruleset, rule, lineage
        span = min(2 * (win.end_ns - win.start_ns), factor * max(self.window_ns, 1))
        nxt = _Window(start_ns=win.end_ns, end_ns=win.end_ns + span, top=win.top)
        self._open(key, nxt)
        return nxt

    def _held_back(self, alert: Alert, out: list[Alert]) -> bool:
        """Count a first occurrence against its rule's minute; True when it is held back (folded into the
        rule's rate-limit summary). A minute that has ended writes its summary into ``out`` first."""
        rkey = (alert.ruleset, alert.rule.name)
        ts = alert.ts_ns
        rate = self.rates.get(rkey)
        if rate is None or ts >= rate.start_ns + RATE_WINDOW_NS:
            if rate is not None and rate.held is not None:
                out.extend(self._rate_summary(rate.held))
            rate = self.rates[rkey] = _Rate(start_ns=ts)
        if rate.written < self.rate_per_min:
            rate.written += 1
            return False
        if rate.held is None:
            rate.held = _Window(start_ns=rate.start_ns, top=alert.rule)
            self.next_due_ns = min(self.next_due_ns, rate.start_ns + RATE_WINDOW_NS)
        rate.held.fold(alert)
        self.stats.rate_limited += 1
        return True

    def advance(self, now_ns: int) -> list[Alert]:
        """Close the windows that ended by ``now_ns`` (event time); cheap when none has: one comparison."""
        if now_ns < self.next_due_ns:
            return []
        out: list[Alert] = []
        ends = self._ends
        opened = self.windows
        self.next_due_ns = NEVER
        while ends and ends[0][0] <= now_ns:
            _, _, key, win = heapq.heappop(ends)
            if opened.get(key) is win:  # not evicted, flushed or continued since
                self._close(key, win, out)
        while ends and opened.get(ends[0][2]) is not ends[0][3]:
            heapq.heappop(ends)  # stale: drop, so the next due time is a live window's
        if ends:
            self.next_due_ns = ends[0][0]
        for rate in self.rates.values():
            if rate.held is None:
                continue
            due = rate.start_ns + RATE_WINDOW_NS
            if due <= now_ns:
                out.extend(self._rate_summary(rate.held))
                rate.held = None
            else:
                self.next_due_ns = min(self.next_due_ns, due)
        return out

    def flush(self) -> list[Alert]:
        """Every pending summary (at shutdown, or before the stream ends)."""
        out: list[Alert] = []
        for win in self.windows.values():
            out.extend(self._summary(win))
        self.windows.clear()
        self._ends.clear()
        for rate in self.rates.values():
            if rate.held is not None:
                out.extend(self._rate_summary(rate.held))
        self.rates.clear()
        self.next_due_ns = NEVER
        return out

    def _summary(self, win: _Window, rate_limited: bool = False) -> list[Alert]:
        last = win.last
        if last is None:
            return []
        self.stats.summaries += 1
        distinct = {name: list(values) for name, values in win.distinct.items()}
        return [
            dataclasses.replace(
                last,
                rule=win.top if win.top is not None else last.rule,
                aggregated=True,
                count=win.count,
                first_ns=win.first_ns,
                last_ns=win.last_ns,
                ts_ns=win.last_ns,
                distinct=distinct,
                distinct_more=dict(win.more),
                rate_limited=rate_limited,
            )
        ]

    def _rate_summary(self, held: _Window) -> list[Alert]:
        self.stats.rate_summaries += 1
        return self._summary(held, rate_limited=True)

    def snapshot(self) -> dict[str, int]:
        self.stats.open_windows = len(self.windows)
        return dataclasses.asdict(self.stats)


def distinct_values(alert: Alert) -> list[tuple[str, str]]:
    """What a summary samples of each repeat: its executable and command line (rule alerts only)."""
    ctx = alert.ctx
    proc = ctx.proc if ctx is not None else None
    if proc is None:
        return []
    return [(DISTINCT_FIELDS[0], proc.exe or proc.comm), (DISTINCT_FIELDS[1], " ".join(proc.args))]


def _add_up(alert: Alert, previous: Alert) -> None:
    """Carry the running totals of ``sum_fields`` into the newest repeat (internal alerts: events lost)."""
    fields = alert.output_fields
    for name in alert.sum_fields:
        fields[name] = (fields.get(name) or 0) + (previous.output_fields.get(name) or 0)
    if alert.internal:
        alert.output = alert.rule.output.format_map(fields)
