"""The correlation engine on its own: built rules and contexts, no parser, no kernel.

Windows are exact and keyed on the event time; one burst gives one alert (the group resets when it fires);
groups are capped with counted evictions; hostile group-by values are bounded.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sentinel.rules.correlate import (
    ALL,
    MAX_KEY_CHARS,
    CorrelationSpec,
    Correlator,
    Firing,
    describe,
    value_key,
)
from sentinel.rules.model import Rule

S = 1_000_000_000


def base(name: str, index: int) -> Rule:
    r = Rule(name, "", "", "", "warning", meta={"format": "sigma"})
    r.index = index
    return r


A, B, C = base("A", 0), base("B", 1), base("C", 2)


def corr(kind: str = "event_count", bases: tuple[Rule, ...] = (A,), **kw: Any) -> Rule:
    group_by = kw.pop("group_by", ("User",))
    fields = tuple(tuple("user.name" for _ in group_by) for _ in bases)
    spec = CorrelationSpec(kind, bases, group_by, fields, **kw)
    r = Rule(f"corr-{kind}", "", "", "", "error", meta={"format": "sigma", "id": "c"}, correlation=spec)
    r.index = 10
    return r


def ctx(pid: int = 1, user: str | None = "alice", cmd: str = "x") -> Any:
    return SimpleNamespace(ev=SimpleNamespace(pid=pid), fields={"user.name": user, "cmd": cmd})


def value(field: str, c: Any) -> Any:
    return c.fields.get(field)


class Run:
    """Feeds (rule, ts, ctx) to a Correlator and keeps what fired."""

    def __init__(self, *rules: Rule, **kw: Any) -> None:
        self.c = Correlator([A, B, C, *rules], **kw)
        self.fired: list[Firing] = []

    def __call__(self, rule: Rule, ts: float, c: Any = None) -> list[Firing]:
        c = c if c is not None else ctx()
        got = self.c.advance(int(ts * S)) + self.c.observe(rule, c, int(ts * S), value)
        self.fired += got
        return got


def test_event_count_fires_once_when_the_threshold_is_crossed_then_resets() -> None:
    run = Run(corr(count=3, timespan_s=10))
    assert not run(A, 1) and not run(A, 2)
    got = run(A, 3, ctx(pid=7))
    assert len(got) == 1 and got[0].count == 3 and got[0].group == {"User": "alice"}
    assert got[0].pids == [1, 7] and got[0].first_ns == 1 * S and got[0].ts_ns == 3 * S
    assert not run(A, 4) and not run(A, 5)  # the burst's window was reset: counting starts again
    assert len(run(A, 6)) == 1


def test_the_window_is_exact_and_inclusive_on_event_time() -> None:
    run = Run(corr(count=2, timespan_s=10))
    run(A, 0)
    assert len(run(A, 10)) == 1  # exactly the timespan apart: still inside
    run2 = Run(corr(count=2, timespan_s=10))
    run2.c.observe(A, ctx(), 0, value)
    assert not run2.c.observe(A, ctx(), 10 * S + 1, value)  # one ns later: the first left the window


def test_gt_needs_one_more_and_groups_are_apart() -> None:
    run = Run(corr(op="gt", count=2, timespan_s=60))
    run(A, 1, ctx(user="alice"))
    run(A, 2, ctx(user="bob"))
    run(A, 3, ctx(user="alice"))
    assert not run(A, 4, ctx(user="bob"))
    assert [f.group for f in run(A, 5, ctx(user="alice"))] == [{"User": "alice"}]


def test_a_disabled_or_refused_correlation_is_not_evaluated_and_silences_nothing() -> None:
    off = corr(count=1)
    off.enabled = False
    c = Correlator([A, off])
    assert not c and not c.silent and not c.observe(A, ctx(), 1, value)


def test_generate_decides_whether_base_rules_alert() -> None:
    assert Correlator([A, corr()]).silent == {0}
    assert Correlator([A, corr(generate=True)]).silent == frozenset()


def test_value_count_counts_distinct_values_in_a_sliding_window() -> None:
    spec = dict(value_name="CommandLine", value_fields=("cmd",), count=3, timespan_s=10)
    run = Run(corr("value_count", **spec))
    run(A, 0, ctx(cmd="a"))
    run(A, 1, ctx(cmd="a"))
    run(A, 2, ctx(cmd="b"))
    assert not run(A, 11.5, ctx(cmd="c"))  # "a" last seen at 1: out of the window
    got = run(A, 12, ctx(cmd="a"))
    assert len(got) == 1 and got[0].count == 3 and sorted(got[0].values) == ["a", "b", "c"]
    assert not run(A, 13, ctx(cmd=None))  # no value: nothing to count


def test_temporal_any_order_within_the_timespan() -> None:
    run = Run(corr("temporal", (A, B, C), op=ALL, count=3, timespan_s=10))
    run(C, 0)
    run(A, 5)
    assert not run(B, 11)  # C left the window
    got = run(C, 12)
    assert len(got) == 1 and got[0].matched == ["A", "B", "C"] and got[0].first_ns == 5 * S


def test_temporal_ordered_needs_the_order() -> None:
    run = Run(corr("temporal_ordered", (A, B, C), op=ALL, count=3, timespan_s=10))
    run(C, 0)
    run(B, 1)
    assert not run(A, 2)  # wrong order: only A starts a chain
    run(C, 3)
    assert not run(B, 4)
    got = run(C, 5, ctx(pid=9))
    assert len(got) == 1 and got[0].first_ns == 2 * S and got[0].pids == [1, 9]
    run(A, 20)
    run(B, 25)
    assert not run(C, 31)  # the chain started at 20: 11 s is too long


def test_temporal_ordered_one_event_fills_one_step() -> None:
    run = Run(corr("temporal_ordered", (A, A), op=ALL, count=2, timespan_s=10))
    assert not run(A, 1)
    assert len(run(A, 2)) == 1


def test_windowed_conditions_are_judged_when_the_window_ends() -> None:
    run = Run(corr(op="lt", count=3, timespan_s=10), corr(op="eq", count=2, timespan_s=10, group_by=()))
    run(A, 0)
    run(A, 5)
    assert not run.fired
    got = run(A, 10.5)  # both windows (opened at 0) ended
    assert sorted(f.count for f in got) == [2, 2]
    run(A, 30)  # the window opened at 10.5 held one event: lt 3 yes, eq 2 no
    assert [f.rule.correlation.op for f in run.fired[2:]] == ["lt"]


def test_groups_are_capped_with_counted_logged_evictions() -> None:
    logged: list[dict[str, Any]] = []
    log = SimpleNamespace(warning=lambda event, **kw: logged.append({"event": event, **kw}))
    run = Run(corr(count=2, timespan_s=3600), max_groups=16, log=log)
    for i in range(40):
        run(A, i, ctx(user=f"u{i}"))
    snap = run.c.snapshot()
    assert snap["groups"] == 16 and snap["evicted"] == 24
    assert logged[0]["event"] == "sentinel.correlation_evicted" and logged[0]["evicted"] == 1
    assert not run(A, 41, ctx(user="u0"))  # u0 was evicted: its first match is forgotten
    assert len(run(A, 42, ctx(user="u39"))) == 1


def test_expired_groups_are_pruned() -> None:
    run = Run(corr(count=5, timespan_s=10))
    for i in range(100):
        run(A, i * 0.01, ctx(user=f"u{i}"))
    run(A, 30, ctx(user="late"))
    assert run.c.snapshot()["groups"] == 1


def test_hostile_group_values_are_bounded_and_distinct() -> None:
    huge = "x" * 100_000
    odd = "a\udcff\x00\n\u202e"
    assert len(value_key(huge)) <= MAX_KEY_CHARS and value_key(huge) != value_key(huge + "y")
    assert value_key(odd) == odd and value_key(["a", None]) == ("a", None)
    run = Run(corr(count=2, timespan_s=10))
    run(A, 1, ctx(user=huge))
    run(A, 1, ctx(user=odd))
    got = run(A, 2, ctx(user=huge))
    assert len(got) == 1 and len(got[0].group["User"]) <= MAX_KEY_CHARS
    text, fields, extra = describe(got[0])
    assert "chars sha256:" in text and fields["correlation.count"] == 2
    assert extra["correlation"]["group_by"]["user.name"] == got[0].group["User"]


def test_the_same_events_give_the_same_firings() -> None:
    def once() -> list[tuple[Any, ...]]:
        run = Run(corr(count=3, timespan_s=5), corr("temporal", (A, B), op=ALL, count=2, timespan_s=5))
        for i in range(200):
            rule = A if i % 3 else B
            run(rule, i * 0.7, ctx(pid=i, user=f"u{i % 4}"))
        return [(f.rule.name, f.ts_ns, f.count, tuple(f.pids), tuple(f.group.items())) for f in run.fired]

    first = once()
    assert first and first == once()


def test_describe_says_what_was_counted() -> None:
    run = Run(corr(count=2, timespan_s=30))
    run(A, 1, ctx(pid=11))
    (f,) = run(A, 2, ctx(pid=12))
    text, fields, extra = describe(f)
    assert text.startswith("Sigma correlation: corr-event_count | 2 matches of A (>= 2)")
    assert "30s window" in text and "user.name=alice" in text and "pids=11,12" in text
    assert fields["user.name"] == "alice" and fields["correlation.pids"] == [11, 12]
    block = extra["correlation"]
    assert block["count"] == 2 and block["timespan_s"] == 30 and block["rules"] == ["A"]
    assert (block["first_ns"], block["last_ns"]) == (1 * S, 2 * S)
