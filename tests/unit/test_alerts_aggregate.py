"""Aggregation: the first alert at once, repeats counted (never dropped) into one summary per window, closed
by event time, at flush, or on eviction when too many windows are open.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.alerts import internal
from sentinel.alerts.aggregate import DISTINCT_MAX, Aggregator
from sentinel.alerts.model import Alert
from tests.unit.detect_fixtures import S, rule

R1, R2 = rule("R1"), rule("R2")


def alert(ts: int, r: Any = R1, lineage: tuple[Any, ...] = ("/usr/bin/sh", "P1"), text: str = "") -> Alert:
    return Alert(r, None, text or f"at {ts}", {"n": ts}, ts, lineage=lineage)


def test_first_alert_is_emitted_at_once_and_repeats_are_counted() -> None:
    agg = Aggregator(window_s=60)
    first = alert(1 * S)
    assert agg.offer(first) == [first]
    for t in (2, 3, 10):
        assert agg.offer(alert(t * S)) == []
    assert agg.advance(60 * S) == []  # the window is [1 s, 61 s)
    (summary,) = agg.advance(61 * S)
    assert summary.aggregated
    assert summary.count == 3
    assert (summary.first_ns, summary.last_ns, summary.ts_ns) == (2 * S, 10 * S, 10 * S)
    assert summary.output == f"at {10 * S}"  # the latest repeat's output
    assert summary.output_fields == {"n": 10 * S}
    assert agg.advance(180 * S) == [] and len(agg.windows) == 1  # the streak's next window: [61 s, 181 s)
    assert agg.advance(181 * S) == [] and agg.windows == {}  # it closed without repeats: the streak is over
    stats = agg.snapshot()
    assert stats == {"alerts": 4, "emitted_first": 1, "repeats": 3, "summaries": 1, "evicted": 0,
                     "open_windows": 0, "rate_limited": 0, "rate_summaries": 0}  # fmt: skip


def test_a_window_without_repeats_closes_silently() -> None:
    agg = Aggregator(window_s=5)
    agg.offer(alert(1 * S))
    assert agg.advance(100 * S) == []
    assert agg.windows == {}


def test_keys_are_rule_and_lineage() -> None:
    agg = Aggregator(window_s=60)
    assert len(agg.offer(alert(1 * S, R1, ("/bin/sh", "P1")))) == 1
    assert len(agg.offer(alert(2 * S, R2, ("/bin/sh", "P1")))) == 1  # another rule
    assert len(agg.offer(alert(3 * S, R1, ("/bin/sh", "P2")))) == 1  # another parent
    assert len(agg.offer(alert(4 * S, R1, ("/bin/bash", "P1")))) == 1  # another image
    assert agg.offer(alert(5 * S, R1, ("/bin/sh", "P1"))) == []
    (summary,) = agg.flush()
    assert (summary.rule.name, summary.lineage, summary.count) == ("R1", ("/bin/sh", "P1"), 1)


def test_a_streak_is_summarised_at_growing_intervals_until_it_stops() -> None:
    agg = Aggregator(window_s=10)
    assert agg.offer(alert(0)) == [alert(0)]
    agg.offer(alert(1 * S))
    # No advance() between: the late alert itself closes the old window (summary first) and is a repeat of
    # the streak, folded into the next window, twice as long: [10 s, 30 s).
    (summary,) = agg.offer(alert(10 * S))
    assert summary.aggregated and summary.count == 1
    assert agg.offer(alert(29 * S)) == []
    (summary,) = agg.advance(30 * S)
    assert (summary.count, summary.first_ns, summary.last_ns) == (2, 10 * S, 29 * S)
    assert agg.advance(70 * S) == []  # [30 s, 70 s) without repeats: the streak is over
    out = agg.offer(alert(71 * S))
    assert [a.aggregated for a in out] == [False]  # a first alert again, at once


def test_a_streak_writes_a_handful_of_lines_an_hour() -> None:
    """One occurrence every 15 s for an hour (a build loop): the first alert, then summaries at 1, 3, 7,
    15 and 31 minutes, and the sixth window's at 63 minutes — windows grow to 32 x 60 s."""
    agg = Aggregator(window_s=60)
    written: list[Alert] = []
    for t in range(0, 3600, 15):
        written += agg.advance(t * S)
        written += agg.offer(alert(t * S))
    written += agg.flush()  # the sixth window, [31 min, 63 min), is still open at the hour
    assert [a.aggregated for a in written] == [False] + [True] * 6
    assert sum(a.count for a in written) == 240
    assert [a.last_ns // S for a in written[1:]] == [45, 165, 405, 885, 1845, 3585]


def test_flush_at_shutdown_writes_every_pending_summary() -> None:
    agg = Aggregator(window_s=60)
    for r in (R1, R2):
        agg.offer(alert(1 * S, r))
        agg.offer(alert(2 * S, r))
        agg.offer(alert(3 * S, r))
    agg.offer(alert(4 * S, rule("R3")))  # no repeats: nothing to summarise
    out = agg.flush()
    assert [(a.rule.name, a.count) for a in out] == [("R1", 2), ("R2", 2)]
    assert agg.flush() == []


def test_eviction_flushes_the_oldest_summary_first() -> None:
    agg = Aggregator(window_s=60, max_keys=2)
    agg.offer(alert(1 * S, lineage=("a",)))
    agg.offer(alert(2 * S, lineage=("a",)))  # a repeat of "a"
    agg.offer(alert(3 * S, lineage=("b",)))
    out = agg.offer(alert(4 * S, lineage=("c",)))  # a third key: "a" is evicted, its summary written first
    assert [(a.lineage, a.aggregated, a.count) for a in out] == [(("a",), True, 1), (("c",), False, 1)]
    assert list(agg.windows) == [("sentinel", "R1", "b"), ("sentinel", "R1", "c")]
    assert agg.stats.evicted == 1
    assert len(agg.windows) <= 2


def test_window_zero_disables_aggregation() -> None:
    agg = Aggregator(window_s=0)
    alerts = [alert(t) for t in range(5)]
    assert [agg.offer(a) for a in alerts] == [[a] for a in alerts]
    assert agg.flush() == []


def test_internal_loss_alerts_add_up() -> None:
    agg = Aggregator(window_s=10)
    assert len(agg.offer(internal.events_lost(1 * S, "open", 5))) == 1
    agg.offer(internal.events_lost(2 * S, "open", 7))
    agg.offer(internal.events_lost(3 * S, "exec", 1))  # another buffer: its own key
    agg.offer(internal.events_lost(4 * S, "open", 9))
    (summary,) = agg.advance(11 * S)
    assert summary.output_fields == {"buffer": "open", "lost": 16}  # the repeats' total
    assert summary.count == 2
    assert summary.output == "Kernel events lost (buffer=open lost=16)"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.sampled_from("abc"), st.sampled_from(["R1", "R2"])), max_size=60
    ),
    st.integers(0, 30),
    st.integers(1, 4),
)
def test_nothing_is_lost(events: list[tuple[int, str, str]], window: int, max_keys: int) -> None:
    """Every offered alert is either written or counted in exactly one written summary."""
    agg = Aggregator(window_s=window, max_keys=max_keys)
    rules = {"R1": R1, "R2": R2}
    written: list[Alert] = []
    for t, lin, name in sorted(events):
        written += agg.advance(t * S)
        written += agg.offer(alert(t * S, rules[name], (lin,)))
        assert len(agg.windows) <= max_keys
    written += agg.flush()
    assert sum(a.count for a in written) == len(events)
    assert agg.windows == {}


# ---- behaviour keys, samples, severity, rate limit (issue 18) ----------------------------------------------


def proc_alert(ts: int, exe: str, args: list[str], r: Any = R1, key: tuple[Any, ...] | None = None) -> Alert:
    """A rule alert whose context has a process (what the summary samples), keyed by behaviour."""
    from types import SimpleNamespace

    from sentinel.alerts.behaviour import program

    proc = SimpleNamespace(exe=exe, comm=exe.rsplit("/", 1)[-1], args=args)
    lineage = key if key is not None else ("behaviour", program(exe), "/usr/bin/bash", 1000, "host")
    return Alert(r, SimpleNamespace(proc=proc), f"ran {exe}", {}, ts, lineage=lineage)  # type: ignore[arg-type]


def test_programs_in_writable_places_count_by_the_place() -> None:
    from sentinel.alerts.behaviour import program

    assert program("/tmp/tmp.Ab12/build/a.out") == "/tmp/"
    assert program("/var/tmp/x") == "/var/tmp/"
    assert program("/dev/shm/.x/y") == "/dev/shm/"
    assert program("/home/alice/src/proj/target/debug/app") == "/home/alice/"
    assert program("/root/go/bin/tool") == "/root/"
    assert program("/run/user/1000/app/x") == "/run/user/1000/"
    assert program("/usr/bin/curl") == "/usr/bin/curl"
    assert program("/home") == "/home"


def test_thirty_runs_from_fresh_tmp_dirs_fold_into_one_summary_with_a_capped_sample() -> None:
    agg = Aggregator(window_s=60)
    written: list[Alert] = []
    for i in range(30):
        prog = f"/tmp/tmp.{i:04d}/prog"
        written += agg.offer(proc_alert((i + 1) * S, prog, [prog, "-v"]))
    written += agg.flush()
    assert [a.aggregated for a in written] == [False, True]
    summary = written[1]
    assert summary.count == 29
    exes = summary.distinct["process.executable"]
    assert len(exes) == DISTINCT_MAX and exes[0] == "/tmp/tmp.0001/prog"
    assert summary.distinct_more == {"process.executable": 19, "process.command_line": 19}


def test_a_summary_never_lowers_severity() -> None:
    low, high = rule("R1", priority="notice"), rule("R1", priority="critical")
    agg = Aggregator(window_s=60)
    agg.offer(proc_alert(1 * S, "/usr/bin/x", ["x"], low))
    agg.offer(proc_alert(2 * S, "/usr/bin/x", ["x"], high))  # the same rule, reloaded with a higher priority
    agg.offer(proc_alert(3 * S, "/usr/bin/x", ["x"], low))
    (summary,) = agg.flush()
    assert summary.rule.priority == "critical" and summary.count == 2


def test_the_rate_limit_holds_back_first_occurrences_into_one_summary() -> None:
    agg = Aggregator(window_s=60, rate_per_min=5)
    written: list[Alert] = []
    for i in range(12):  # twelve distinct behaviours of one rule within a minute
        written += agg.advance((i + 1) * S)
        written += agg.offer(proc_alert((i + 1) * S, f"/usr/bin/p{i}", [f"p{i}"], key=("b", i)))
    written += agg.offer(proc_alert(13 * S, "/usr/bin/q", ["q"], R2, key=("b", 0)))  # another rule: its own
    assert [a.rule.name for a in written] == ["R1"] * 5 + ["R2"]
    assert agg.stats.rate_limited == 7
    (held,) = agg.advance(61 * S)  # the rule's minute [1 s, 61 s) has ended
    assert held.rate_limited and held.aggregated and held.count == 7
    assert held.distinct["process.executable"] == [f"/usr/bin/p{i}" for i in range(5, 12)]
    assert agg.stats.rate_summaries == 1
    assert agg.offer(proc_alert(62 * S, "/usr/bin/p11", ["p11"], key=("b", 11)))  # a new minute: written


def test_internal_alerts_are_never_rate_limited() -> None:
    agg = Aggregator(window_s=60, rate_per_min=1)
    written = []
    for i in range(5):
        written += agg.offer(internal.events_lost((i + 1) * S, f"buffer{i}", 1))
    assert len(written) == 5 and agg.stats.rate_limited == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.sampled_from("abcdef"), st.sampled_from(["R1", "R2"])), max_size=80
    ),
    st.integers(0, 30),
    st.integers(1, 4),
    st.integers(1, 3),
)
def test_nothing_is_lost_with_the_rate_limit(
    events: list[tuple[int, str, str]], window: int, max_keys: int, rate: int
) -> None:
    agg = Aggregator(window_s=window, max_keys=max_keys, rate_per_min=rate)
    rules = {"R1": R1, "R2": R2}
    written: list[Alert] = []
    for t, lin, name in sorted(events):
        written += agg.advance(t * S)
        written += agg.offer(alert(t * S, rules[name], (lin,)))
    written += agg.flush()
    assert sum(a.count for a in written) == len(events)


def test_a_writable_place_streak_reports_what_folded_into_it_within_minutes() -> None:
    """A build loop runs fresh /tmp binaries every 15 s all hour; an intruder's /tmp/x run the same way (same
    parent, user) shares the key. The place's windows stop growing at 4 min, so the intruder's run is in a
    summary written at most 4 minutes later, named among the window's executables — not 30 minutes on."""
    agg = Aggregator(window_s=60)
    written: list[Alert] = []
    for t in range(0, 3600, 15):
        written += agg.advance(t * S)
        exe = "/tmp/x" if t == 2400 else f"/tmp/go-build{t}/exe/main"
        written += agg.offer(proc_alert(t * S, exe, [exe]))
    written += agg.flush()
    summaries = [a for a in written if a.aggregated]
    assert sum(a.count for a in summaries) == 239
    gaps = [b.ts_ns - a.ts_ns for a, b in itertools.pairwise(summaries)]
    assert max(gaps) <= 4 * 60 * S
    (reported,) = [a for a in summaries if "/tmp/x" in a.distinct["process.executable"]]
    assert reported.ts_ns - 2400 * S <= 4 * 60 * S


def test_a_program_streak_still_grows_to_half_an_hour() -> None:
    from sentinel.alerts.behaviour import is_place

    assert is_place(("behaviour", "/tmp/", "/usr/bin/bash", 1000, "host"))
    assert not is_place(("behaviour", "/usr/bin/curl", "/usr/bin/bash", 1000, "host"))
    assert not is_place(("fields", ("fd.name", "/tmp/")))
    agg = Aggregator(window_s=60)
    lineage = ("behaviour", "/usr/bin/curl", "/usr/bin/bash", 1000, "host")
    written: list[Alert] = []
    for t in range(0, 3600, 15):
        written += agg.advance(t * S)
        written += agg.offer(alert(t * S, lineage=lineage))
    assert [a.last_ns // S for a in written if a.aggregated] == [45, 165, 405, 885, 1845]
