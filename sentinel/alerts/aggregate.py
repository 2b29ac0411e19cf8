"""Alert floods: repeats of a rule for one process lineage within a window become one summary alert.

The first alert for a key (rule, process executable, parent entity id) is written at once, so nothing waits
on aggregation; repeats within the window are counted, never dropped, and when the window closes one
summary alert carries the count and the first and last repeat times. Windows are measured in event time, so
replaying a capture aggregates exactly as the live agent did. Memory is bounded: past ``max_keys`` open
windows the oldest is closed early (its summary written first) and the eviction counted.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sentinel.alerts.model import Alert

NS = 1_000_000_000
DEFAULT_WINDOW_S = 60.0
DEFAULT_MAX_KEYS = 10_000


@dataclass(slots=True)
class _Window:
    start_ns: int  # time of the alert that opened it (the one written at once)
    last: Alert | None = None  # the latest repeat: what the summary shows
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0


@dataclass(slots=True)
class AggregationStats:
    alerts: int = 0  # offered
    emitted_first: int = 0  # written at once
    repeats: int = 0  # counted into a summary
    summaries: int = 0
    evicted: int = 0  # windows closed early to respect max_keys
    open_windows: int = 0


NEVER = 1 << 62  # an event time no window reaches


class Aggregator:
    """``offer`` an alert, ``advance`` event time, ``flush`` at the end; each returns the alerts to write."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.window_ns = int(window_s * NS)
        self.max_keys = max(1, max_keys)
        self.windows: OrderedDict[tuple[Any, ...], _Window] = OrderedDict()  # in window start order
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
        if win is not None and ts < win.start_ns + self.window_ns:
            previous = win.last
            if previous is None:
                win.first_ns = ts
            elif alert.sum_fields:
                _add_up(alert, previous)
            win.last = alert
            win.count += 1
            win.last_ns = max(win.last_ns, ts)
            stats.repeats += 1
            return []
        out: list[Alert] = []
        if win is not None:  # this key's window has passed but advance() has not closed it yet
            del self.windows[key]
            out.extend(self._summary(win))
        elif len(self.windows) >= self.max_keys:
            _, oldest = self.windows.popitem(last=False)
            stats.evicted += 1
            out.extend(self._summary(oldest))
        self.windows[key] = _Window(start_ns=ts)
        self.next_due_ns = min(self.next_due_ns, ts + self.window_ns)
        stats.emitted_first += 1
        out.append(alert)
        return out

    def advance(self, now_ns: int) -> list[Alert]:
        """Close the windows that ended by ``now_ns`` (event time); cheap when none has: one comparison."""
        if now_ns < self.next_due_ns:
            return []
        out: list[Alert] = []
        window = self.window_ns
        opened = self.windows
        self.next_due_ns = NEVER
        while opened:
            key, win = next(iter(opened.items()))
            if win.start_ns + window > now_ns:
                self.next_due_ns = win.start_ns + window
                break
            del opened[key]
            out.extend(self._summary(win))
        return out

    def flush(self) -> list[Alert]:
        """Every pending summary (at shutdown, or before the stream ends)."""
        out: list[Alert] = []
        for win in self.windows.values():
            out.extend(self._summary(win))
        self.windows.clear()
        self.next_due_ns = NEVER
        return out

    def _summary(self, win: _Window) -> list[Alert]:
        if win.last is None:
            return []
        self.stats.summaries += 1
        return [
            dataclasses.replace(
                win.last,
                aggregated=True,
                count=win.count,
                first_ns=win.first_ns,
                last_ns=win.last_ns,
                ts_ns=win.last_ns,
            )
        ]

    def snapshot(self) -> dict[str, int]:
        self.stats.open_windows = len(self.windows)
        return dataclasses.asdict(self.stats)


def _add_up(alert: Alert, previous: Alert) -> None:
    """Carry the running totals of ``sum_fields`` into the newest repeat (internal alerts: events lost)."""
    fields = alert.output_fields
    for name in alert.sum_fields:
        fields[name] = (fields.get(name) or 0) + (previous.output_fields.get(name) or 0)
    if alert.internal:
        alert.output = alert.rule.output.format_map(fields)
