"""Sigma correlation rules at run time: per-(correlation, group-by values) state over an exact window.

A correlation is evaluated after one of its base rules matched an event, on the event's kernel time
(``ts_ns``), never the wall clock, so replaying a capture gives the alerts the live run gave. Threshold
conditions (``gte``/``gt``) use a sliding window and fire on the match that crosses the threshold;
``lt``/``lte``/``eq``/``neq`` can only be judged once a window is over, so they use a window that opens at
a group's first match and is judged when an event (or the live agent's idle tick) passes its end. After
firing, the group's state is dropped: one burst gives one alert, the next burst starts from zero.

Memory is bounded: a group keeps at most threshold + 1 entries (the newest: exact for a threshold), a
correlation keeps at most ``max_groups`` groups (the least recently updated is evicted and counted), and
expired groups are pruned as time passes. Group-by values are keyed through :func:`value_key`, which bounds
huge strings, so hostile values cost no more than ordinary ones.
"""

from __future__ import annotations

import hashlib
import operator
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sentinel.rules.model import Rule

EVENT_COUNT, VALUE_COUNT, TEMPORAL, TEMPORAL_ORDERED = (
    "event_count",
    "value_count",
    "temporal",
    "temporal_ordered",
)
THRESHOLD_OPS = {"gte": operator.ge, "gt": operator.gt}
WINDOW_OPS = {"lt": operator.lt, "lte": operator.le, "eq": operator.eq, "neq": operator.ne}
OPS = {**THRESHOLD_OPS, **WINDOW_OPS}
ALL = "all"  # temporal without an explicit condition: every referenced rule
MAX_GROUPS = 10_000  # live groups per correlation
MAX_ENTRIES = 1_000_000  # entries (timestamps, values) per correlation: fewer groups for big thresholds
MAX_THRESHOLD = 10_000  # a condition's count above this is refused at load (memory per group)
MAX_KEY_CHARS = 256  # longer group-by values are keyed by a prefix and a digest
MAX_PIDS = 32  # pids listed in an alert


@dataclass(frozen=True, slots=True)
class CorrelationSpec:
    """A correlation as loaded: base rules (in the order written) and, per base rule, the sentinel fields
    its group-by (and value_count's field) read."""

    kind: str
    bases: tuple[Rule, ...]
    group_by: tuple[str, ...]  # as written (Sigma names or aliases)
    group_fields: tuple[tuple[str, ...], ...]  # per base: the sentinel field of each group-by
    value_name: str | None = None  # value_count: the field as written
    value_fields: tuple[str, ...] = ()  # value_count: per base, the sentinel field counted
    timespan_s: int = 60
    op: str = "gte"  # a key of OPS, or ALL
    count: int = 1
    generate: bool = False

    @property
    def windowed(self) -> bool:
        """Judged when a window is over rather than on each match."""
        return self.op in WINDOW_OPS


@dataclass(slots=True)
class Firing:
    """A correlation whose condition held: what its alert reports."""

    rule: Rule
    ctx: Any  # the EvalContext of the last event counted (the alert's document is that event's)
    ts_ns: int
    group: dict[str, Any]  # group-by name → value
    count: int  # events (event_count), distinct values (value_count), rules seen (temporal)
    first_ns: int
    values: list[Any] = field(default_factory=list)  # value_count: the distinct values
    pids: list[int] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)  # base rules that contributed


def value_key(value: Any) -> Any:
    """A hashable, bounded stand-in for a field value (a huge string is a prefix plus its digest)."""
    if isinstance(value, str):
        if len(value) <= MAX_KEY_CHARS:
            return value
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        return f"{value[: MAX_KEY_CHARS - 40]}…[{len(value)} chars sha256:{digest}]"
    if isinstance(value, (list, tuple)):
        return tuple(value_key(v) for v in value[:64])
    if value is None or isinstance(value, (int, float, bool)):
        return value
    return value_key(str(value))


@dataclass(slots=True)
class _Group:
    first_ns: int
    last_ns: int
    ctx: Any = None
    events: deque[tuple[int, int, str]] | None = None  # event_count: (ts, pid, base rule)
    n: int = 0  # windowed event_count: events so far
    values: OrderedDict[Any, tuple[int, int, Any]] | None = None  # value_count: key → (ts, pid, key)
    steps: list[tuple[int, tuple[int, ...]] | None] | None = None  # temporal*: per base (ts|start, pids)
    pids: list[int] = field(default_factory=list)  # windowed: pids so far (capped)


class _Corr:
    """One correlation's groups."""

    def __init__(self, rule: Rule, spec: CorrelationSpec, max_groups: int) -> None:
        self.rule = rule
        self.spec = spec
        self.span_ns = spec.timespan_s * 1_000_000_000
        self.cmp: Callable[[int, int], bool] | None = OPS.get(spec.op)
        self.keep = spec.count + 1 if spec.op in ("gt",) or spec.windowed else max(spec.count, 1)
        per_group = self.keep if spec.kind in (EVENT_COUNT, VALUE_COUNT) else len(spec.bases)
        self.max_groups = max(16, min(max_groups, MAX_ENTRIES // max(per_group, 1)))
        self.groups: OrderedDict[Any, _Group] = OrderedDict()
        self.evicted = 0
        self.fired = 0


class Correlator:
    """Every enabled correlation of a ruleset. ``observe`` after a base rule matched, ``advance`` as event
    time passes (windowed conditions); both return the correlations that fired."""

    def __init__(self, rules: list[Rule], *, max_groups: int = MAX_GROUPS, log: Any = None) -> None:
        self.corrs: list[_Corr] = []
        self.by_base: dict[int, list[tuple[_Corr, tuple[int, ...]]]] = {}
        silent: set[int] = set()
        for rule in rules:
            spec = getattr(rule, "correlation", None)
            if spec is None or not rule.enabled or rule.skipped is not None:
                continue
            corr = _Corr(rule, spec, max_groups)
            self.corrs.append(corr)
            positions: dict[int, list[int]] = {}
            for pos, base in enumerate(spec.bases):
                positions.setdefault(base.index, []).append(pos)
            for index, pos_list in positions.items():
                self.by_base.setdefault(index, []).append((corr, tuple(pos_list)))
                if not spec.generate:
                    silent.add(index)
        self.silent = frozenset(silent)  # base rules whose own alerts an enabled correlation suppresses
        self.windowed = [c for c in self.corrs if c.spec.windowed]
        self.log = log
        self.evicted = 0

    def __bool__(self) -> bool:
        return bool(self.corrs)

    # ------------------------------------------------------------------------------------------ matching

    def observe(self, rule: Rule, ctx: Any, ts: int, value: Callable[[str, Any], Any]) -> list[Firing]:
        """Count ``rule``'s match on ``ctx`` in every correlation that references it; ``value(field, ctx)``
        reads a sentinel field (``RuleSet.field_value``)."""
        out: list[Firing] = []
        for corr, positions in self.by_base.get(rule.index, ()):
            pos = positions[0]
            spec = corr.spec
            key = tuple(value_key(value(f, ctx)) for f in spec.group_fields[pos])
            fired = self._update(corr, key, positions, rule, ctx, ts, value)
            if fired is not None:
                out.append(fired)
            self._prune(corr, ts)
        return out

    def _group(self, corr: _Corr, key: Any, ts: int) -> _Group:
        group = corr.groups.get(key)
        if group is None:
            if len(corr.groups) >= corr.max_groups:
                corr.groups.popitem(last=False)
                corr.evicted += 1
                self.evicted += 1
                if self.log is not None and (corr.evicted in (1, 10, 100) or corr.evicted % 1000 == 0):
                    self.log.warning("sentinel.correlation_evicted", rule=corr.rule.name,
                                     evicted=corr.evicted, max_groups=corr.max_groups)  # fmt: skip
            group = corr.groups[key] = _Group(ts, ts)
        elif not corr.spec.windowed:
            corr.groups.move_to_end(key)  # LRU order (windowed groups stay in opening order)
        return group

    def _update(
        self, corr: _Corr, key: Any, positions: tuple[int, ...], rule: Rule, ctx: Any,
        ts: int, value: Callable[[str, Any], Any],
    ) -> Firing | None:  # fmt: skip
        spec = corr.spec
        group = self._group(corr, key, ts)
        group.last_ns = max(group.last_ns, ts)
        group.ctx = ctx
        pid = int(getattr(ctx.ev, "pid", 0) or 0)
        horizon = ts - corr.span_ns
        if spec.windowed and len(group.pids) < MAX_PIDS and pid not in group.pids:
            group.pids.append(pid)
        if spec.kind == EVENT_COUNT:
            if spec.windowed:
                group.n += 1
                return None
            events = group.events
            if events is None:
                events = group.events = deque(maxlen=corr.keep)
            events.append((ts, pid, rule.name))
            while events and events[0][0] < horizon:
                events.popleft()
            if corr.cmp is not None and corr.cmp(len(events), spec.count):
                group.first_ns = events[0][0]
                return self._fire(corr, key, group, len(events), ts,
                                  pids=[e[1] for e in events], matched=[e[2] for e in events])  # fmt: skip
            return None
        if spec.kind == VALUE_COUNT:
            v = value(spec.value_fields[positions[0]], ctx)
            if v is None:
                return None  # an event without the counted field has no value to count
            vals = group.values
            if vals is None:
                vals = group.values = OrderedDict()
            vk = value_key(v)
            vals.pop(vk, None)
            vals[vk] = (ts, pid, vk)
            while len(vals) > corr.keep:
                vals.popitem(last=False)
            if not spec.windowed:
                while vals and next(iter(vals.values()))[0] < horizon:
                    vals.popitem(last=False)
                if corr.cmp is not None and corr.cmp(len(vals), spec.count):
                    group.first_ns = min(t for t, _, _ in vals.values())
                    kept = list(vals.values())
                    return self._fire(corr, key, group, len(vals), ts, values=[x[2] for x in kept],
                                      pids=[x[1] for x in kept], matched=[rule.name])  # fmt: skip
            return None
        return self._temporal(corr, key, group, positions, ts, pid, horizon)

    def _temporal(
        self, corr: _Corr, key: Any, group: _Group, positions: tuple[int, ...],
        ts: int, pid: int, horizon: int,
    ) -> Firing | None:  # fmt: skip
        spec = corr.spec
        steps = group.steps
        if steps is None:
            steps = group.steps = [None] * len(spec.bases)
        for i, s in enumerate(steps):  # drop what left the window
            if s is not None and s[0] < horizon:
                steps[i] = None
        if spec.kind == TEMPORAL:
            for pos in positions:
                steps[pos] = (ts, (pid,))
            seen = sum(1 for s in steps if s is not None)
            done = seen == len(steps) if spec.op == ALL else bool(corr.cmp and corr.cmp(seen, spec.count))
        else:  # temporal_ordered: steps[i] = the latest start of a chain through step i
            for pos in sorted(positions, reverse=True):  # one event fills one step of a chain
                if pos == 0:
                    cand: tuple[int, tuple[int, ...]] | None = (ts, (pid,))
                else:
                    prev = steps[pos - 1]
                    cand = (prev[0], (*prev[1], pid)) if prev is not None else None
                cur = steps[pos]
                if cand is not None and (cur is None or cand[0] >= cur[0]):
                    steps[pos] = cand
            done = steps[-1] is not None
            seen = len(steps) if done else 0
        if not done:
            return None
        live = [s for s in steps if s is not None]
        group.first_ns = min(s[0] for s in live)
        pids = [p for s in live for p in s[1]]
        matched = [spec.bases[i].name for i, s in enumerate(steps) if s is not None]
        return self._fire(corr, key, group, seen, ts, pids=pids, matched=matched)

    def _fire(
        self, corr: _Corr, key: Any, group: _Group, count: int, ts: int, *,
        values: list[Any] | None = None, pids: list[int], matched: list[str],
    ) -> Firing:  # fmt: skip
        corr.groups.pop(key, None)  # reset: one burst, one alert
        corr.fired += 1
        unique_pids = list(dict.fromkeys(pids))[:MAX_PIDS]
        return Firing(
            corr.rule, group.ctx, ts, dict(zip(corr.spec.group_by, key, strict=True)), count, group.first_ns,
            values or [], unique_pids, list(dict.fromkeys(matched)),
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------ time

    def _prune(self, corr: _Corr, ts: int) -> None:
        """Drop groups whose newest entry left the window (LRU order: the stalest first)."""
        if corr.spec.windowed:
            return
        horizon = ts - corr.span_ns
        groups = corr.groups
        while groups:
            _key, group = next(iter(groups.items()))
            if group.last_ns >= horizon:
                break
            groups.popitem(last=False)

    def advance(self, now_ns: int) -> list[Firing]:
        """Judge the windowed groups whose window ended before ``now_ns`` (event time, or the live idle
        tick); a window still open at the end of a replay is never judged: what followed is unknown."""
        out: list[Firing] = []
        for corr in self.windowed:
            groups = corr.groups
            while groups:
                key, group = next(iter(groups.items()))
                if group.first_ns + corr.span_ns >= now_ns:
                    break
                groups.popitem(last=False)
                got = self._judge(corr, key, group)
                if got is not None:
                    out.append(got)
        return out

    def _judge(self, corr: _Corr, key: Any, group: _Group) -> Firing | None:
        spec = corr.spec
        if spec.kind == EVENT_COUNT:
            n, values = group.n, []
        else:
            vals = group.values or OrderedDict()
            n, values = len(vals), [x[2] for x in vals.values()]
        if corr.cmp is None or not corr.cmp(n, spec.count):
            return None
        corr.fired += 1
        return Firing(corr.rule, group.ctx, group.last_ns, dict(zip(spec.group_by, key, strict=True)), n,
                      group.first_ns, values, group.pids[:], [b.name for b in spec.bases])  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        return {
            "correlations": len(self.corrs),
            "groups": sum(len(c.groups) for c in self.corrs),
            "evicted": self.evicted,
            "fired": sum(c.fired for c in self.corrs),
        }


SYMBOL = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<", "eq": "=", "neq": "!="}


def describe(f: Firing) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The correlation alert's text, output fields and ``sentinel.correlation`` block: what was counted,
    over which window, for which group, from which base rules and processes."""
    spec: CorrelationSpec = f.rule.correlation
    fields = spec.group_fields[0] if spec.group_fields else ()
    group = {field: f.group.get(name) for name, field in zip(spec.group_by, fields, strict=True)}
    by = " ".join(f"{k}={_text(v)}" for k, v in group.items()) or "(no group-by)"
    rules = ", ".join(f.matched)
    if spec.kind == EVENT_COUNT:
        what = f"{f.count} matches of {rules}"
    elif spec.kind == VALUE_COUNT:
        shown = ", ".join(_text(v) for v in f.values[:10]) + (" …" if len(f.values) > 10 else "")
        what = f"{f.count} distinct {spec.value_fields[0]} ({shown}) from {rules}"
    else:
        what = f"{spec.kind} {rules}"
    cond = "all rules" if spec.op == ALL else f"{SYMBOL.get(spec.op, spec.op)} {spec.count}"
    span_s = (f.ts_ns - f.first_ns) / 1e9
    text = (f"Sigma correlation: {f.rule.name} | {what} ({cond}) in {span_s:.3g}s of a {spec.timespan_s}s "
            f"window | {by} | pids={','.join(map(str, f.pids))}")  # fmt: skip
    block = {
        "type": spec.kind,
        "condition": {"op": spec.op, "count": spec.count} if spec.op != ALL else {"op": ALL},
        "count": f.count,
        "timespan_s": spec.timespan_s,
        "first_ns": f.first_ns,
        "last_ns": f.ts_ns,
        "group_by": group,
        "rules": list(f.matched),
        "pids": list(f.pids),
    }
    if spec.kind == VALUE_COUNT:
        block["field"] = spec.value_fields[0]
        block["values"] = [v for v in f.values]
    out = {**group, "correlation.type": spec.kind, "correlation.count": f.count,
           "correlation.timespan_s": spec.timespan_s, "correlation.rules": list(f.matched),
           "correlation.pids": list(f.pids)}  # fmt: skip
    return text, out, {"correlation": block}


def _text(value: Any) -> str:
    if value is None:
        return "<NA>"
    if isinstance(value, tuple):
        return ",".join(_text(v) for v in value)
    return str(value)
