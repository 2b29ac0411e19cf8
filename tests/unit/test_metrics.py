"""Metrics and /healthz: scraped over loopback and parsed as Prometheus would, fed from stats snapshots."""

from __future__ import annotations

import json
import math
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sentinel.detect import DetectionStream
from sentinel.events import EventType
from sentinel.health import Health
from sentinel.metrics import (
    CONTENT_TYPE,
    MAX_SERIES_PER_METRIC,
    OVERFLOW,
    SPECS,
    AgentMetrics,
    ListenAddress,
    MetricsEndpointError,
    Server,
    parse_address,
    serve,
    sink_stats,
)
from sentinel.pipeline import live_stats
from sentinel.sinks import FileSink, MultiSink, StdoutSink
from tests.unit.detect_fixtures import HOST, FakeRuleSet, ListSink, S, ev, make_table, rule

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "packaging" / "grafana" / "sentinel-dashboard.json"

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def parse(text: str) -> Samples:
    """Sample name → {labels: value}, through the official parser (so the exposition is valid)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name][frozenset(labels.items())]


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def scrape(server: Server) -> Samples:
    status, headers, body = get(server.url + "/metrics")
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE
    return parse(body.decode())


@pytest.fixture
def served() -> Iterator[tuple[AgentMetrics, Health, Clock, Server]]:
    clock = Clock()
    metrics = AgentMetrics(clock=clock)
    health = Health(clock=clock)
    server = serve(metrics, "127.0.0.1:0", health)
    try:
        yield metrics, health, clock, server
    finally:
        server.close()


def live(
    received: dict[str, int], lost: dict[str, int], kernel: dict[str, int] | None = None, **extra: Any
) -> dict[str, Any]:
    """The shape ``pipeline.live_stats`` returns."""
    return {
        "events_handled": sum(received.values()),
        "received": received,
        "lost": lost,
        "perf_lost": dict.fromkeys(lost, 0),
        "decode_errors": extra.pop("decode_errors", 0),
        "kernel": {"open_suppressed": 3, "submit_failed_open": 0, "loader_opens_filtered": 9}
        if kernel is None
        else kernel,
        "process_table": extra.pop(
            "process_table",
            {
                "size": 50,
                "evicted": 0,
                "expired": 2,
                "late_processes": 1,
                "depth_truncated": 0,
                "exited_pending": 0,
            },
        ),
        "task_failures": extra.pop("task_failures", {"state_save": 0, "sink_delivery": 0}),
        **extra,
    }


def detection(by_rule: dict[str, int], reloads: int = 0, failures: int = 0, **anomaly: Any) -> dict[str, Any]:
    """The shape ``DetectionStream.stats()`` returns."""
    return {
        "events": 100,
        "matches": sum(by_rule.values()),
        "alerts_written": sum(by_rule.values()),
        "alerts_by_rule": by_rule,
        "match_errors": 0,
        "reloads": reloads,
        "reload_failures": failures,
        "aggregation": {
            "alerts": 1,
            "emitted_first": 1,
            "repeats": 4,
            "summaries": 1,
            "evicted": 0,
            "open_windows": 2,
            "rate_limited": 3,
        },
        "correlation": {"correlations": 1, "groups": 3, "evicted": 2, "fired": 1},
        "anomaly_errors": 0,
        "anomaly": anomaly or {"phase": "off"},
    }


def fed_metrics() -> AgentMetrics:
    """An instance fed with every kind of snapshot, so every metric has series."""
    m = AgentMetrics(clock=Clock())
    m.update_from_stats(
        live(
            {"exec": 5, "open": 9, "connect": 1, "proc": 7},
            {"exec": 0, "open": 2, "connect": 0, "proc": 0},
            queue_dropped={"events": 1},
        ),
        {
            **detection(
                {"Shell Spawned By Web Server": 2},
                reloads=1,
                failures=1,
                phase="learning",
                model="host",
                learned_s=60.0,
                learn_period_s=600.0,
                scored=10,
                anomalous=1,
                incidents=1,
                trainings=0,
                training_errors=0,
                save_errors=0,
            ),
            "matches_by_rule": {"Shell Spawned By Web Server": 3},
            "anomaly_errors": 1,
        },
        {
            "http:siem": {
                "ok": 10,
                "failed": 1,
                "dropped": 0,
                "filtered": 2,
                "backlog": 5,
                "spool_bytes": 4096,
                "spool_dropped": 0,
                "last_success": 990.0,
                "healthy": 1,
            }
        },
    )
    m.observe_latency(0.02)
    m.observe_batch(0.001)
    m.set_ruleset("ab" * 32, 80, 78)
    m.set_model(sha256="cd" * 32)
    return m


# ------------------------------------------------------------------------------------------- metrics


def test_scrape_counts_deltas_once_and_survives_decreasing_totals(served: Any) -> None:
    metrics, _health, _clock, server = served
    first_live = live(
        {"exec": 10, "open": 100, "connect": 3, "proc": 20}, {"exec": 0, "open": 5, "connect": 0, "proc": 0}
    )
    metrics.update_from_stats(first_live, detection({"A": 2, "B": 1}))
    s = scrape(server)
    assert value(s, "sentinel_events_received_total", type="open") == 100
    assert value(s, "sentinel_events_lost_total", buffer="open") == 5
    assert value(s, "sentinel_events_lost_total", buffer="exec") == 0  # zero series exist for every buffer
    assert value(s, "sentinel_events_handled_total") == 133
    assert value(s, "sentinel_kernel_counter_total", counter="open_suppressed") == 3
    assert value(s, "sentinel_kernel_counter_total", counter="loader_opens_filtered") == 9
    assert value(s, "sentinel_rule_alerts_total", rule="A") == 2
    assert value(s, "sentinel_process_table_entries") == 50
    assert value(s, "sentinel_process_table_expired_total") == 2

    # the same totals again: nothing new happened, nothing is counted twice
    metrics.update_from_stats(first_live, detection({"A": 2, "B": 1}))
    assert scrape(server) == s

    # totals grew: counters grow by the difference; gauges take the new value
    metrics.update_from_stats(
        live(
            {"exec": 15, "open": 130, "connect": 3, "proc": 20},
            {"exec": 1, "open": 5, "connect": 0, "proc": 0},
            process_table={"size": 42, "evicted": 3},
        ),
        detection({"A": 5, "B": 1, "C": 1}),
    )
    s = scrape(server)
    assert value(s, "sentinel_events_received_total", type="exec") == 15
    assert value(s, "sentinel_events_received_total", type="open") == 130
    assert value(s, "sentinel_events_lost_total", buffer="exec") == 1
    assert value(s, "sentinel_rule_alerts_total", rule="A") == 5
    assert value(s, "sentinel_rule_alerts_total", rule="C") == 1
    assert value(s, "sentinel_alerts_written_total") == 7
    assert value(s, "sentinel_process_table_entries") == 42
    assert value(s, "sentinel_process_table_evictions_total") == 3

    # a component restarted from zero: its new total is all new, and the counter never goes down
    metrics.update_from_stats(live({"exec": 4, "open": 130, "connect": 3, "proc": 20}, {}, kernel={}))
    s = scrape(server)
    assert value(s, "sentinel_events_received_total", type="exec") == 19
    assert value(s, "sentinel_kernel_counter_total", counter="open_suppressed") == 3  # {} (probes gone) kept
    metrics.update_from_stats(live({"exec": 6, "open": 130, "connect": 3, "proc": 20}, {}))
    assert value(scrape(server), "sentinel_events_received_total", type="exec") == 21  # new baseline: 4


def test_every_spec_is_exported_with_its_type_and_labels() -> None:
    text = fed_metrics().render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for spec in SPECS:
        base = spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name
        family = families[base]
        assert family.type == ("gauge" if spec.kind == "info" else spec.kind), spec.name
        if spec.kind in ("counter", "gauge"):
            for sample in family.samples:
                assert set(sample.labels) == set(spec.labels), spec.name
    assert all(name.startswith("sentinel_") for name in families)
    assert "_created" not in text  # no duplicate series per counter


def test_task_failures_are_counted_and_hostile_label_values_never_break_a_scrape() -> None:
    """Label and info values are escaped by the project's rule: a non-UTF-8 rule name (a rules file's bytes)
    or model path (a command-line argument) used to make every scrape fail on encoding."""
    m = AgentMetrics(clock=Clock())
    hostile_rule = b"Rule \xff".decode("utf-8", "surrogateescape")
    failures = {"state_save": 2, "sink_delivery": 0}
    m.update_from_stats(live({"exec": 1}, {}, task_failures=failures), detection({hostile_rule: 1}))
    m.set_model(source=b"/models/\xfe".decode("utf-8", "surrogateescape"), phase="detection")
    s = parse(m.render().decode())
    assert value(s, "sentinel_task_failures_total", task="state_save") == 2
    assert value(s, "sentinel_task_failures_total", task="sink_delivery") == 0
    assert value(s, "sentinel_rule_alerts_total", rule="Rule \\xff") == 1
    info = dict(next(iter(s["sentinel_model_info"])))
    assert info["source"] == "/models/\\xfe"
    m.update_from_stats(live({"exec": 1}, {}, task_failures={"state_save": 5}))
    assert value(parse(m.render().decode()), "sentinel_task_failures_total", task="state_save") == 5


def test_gauges_infos_and_model_state() -> None:
    clock = Clock(5000.0)
    m = AgentMetrics(clock=clock, build={"headers_mode": "substitute"})
    s = parse(m.render().decode())
    assert value(s, "sentinel_up") == 1
    assert value(s, "sentinel_start_time_seconds") == 5000.0
    build = next(iter(s["sentinel_build_info"]))
    assert dict(build)["headers_mode"] == "substitute" and dict(build)["python"]
    assert value(s, "sentinel_ml_phase", phase="off") == 1
    assert "sentinel_ruleset_info" not in s  # until the agent says which ruleset runs

    m.set_ruleset("ab" * 32, 80, 78)
    m.set_build_info(bcc="0.26.0")
    m.update_from_stats(
        None, detection({}, phase="learning", model="host", learned_s=150.0, learn_period_s=600.0)
    )
    s = parse(m.render().decode())
    assert value(s, "sentinel_ruleset_info", sha256="ab" * 32, rules="80", enabled="78") == 1
    assert dict(next(iter(s["sentinel_build_info"])))["bcc"] == "0.26.0"
    assert (
        value(s, "sentinel_ml_phase", phase="learning") == 1
        and value(s, "sentinel_ml_phase", phase="off") == 0
    )
    assert value(s, "sentinel_ml_learning_progress") == 0.25
    assert value(s, "sentinel_aggregation_open_windows") == 2

    m.set_model(sha256="cd" * 32)  # facts the snapshot lacks survive the next snapshot
    m.update_from_stats(None, detection({}, phase="detection", model="host", model_version="0123456789ab"))
    s = parse(m.render().decode())
    model = dict(next(iter(s["sentinel_model_info"])))
    assert model == {"version": "0123456789ab", "sha256": "cd" * 32, "source": "host", "phase": "detection"}
    assert value(s, "sentinel_ml_learning_progress") == 1.0
    m.set_learning_progress(1.7)
    assert value(parse(m.render().decode()), "sentinel_ml_learning_progress") == 1.0


def test_reloads_set_time_and_success() -> None:
    clock = Clock(100.0)
    m = AgentMetrics(clock=clock)
    m.update_from_stats(None, detection({}))
    s = parse(m.render().decode())
    assert (
        value(s, "sentinel_last_reload_successful") == 1 and "sentinel_last_reload_timestamp_seconds" not in s
    )
    clock.now = 200.0
    m.update_from_stats(None, detection({}, reloads=1))
    clock.now = 300.0
    m.update_from_stats(None, detection({}, reloads=1, failures=1))
    s = parse(m.render().decode())
    assert value(s, "sentinel_reloads_total") == 1 and value(s, "sentinel_reload_failures_total") == 1
    assert value(s, "sentinel_last_reload_timestamp_seconds") == 200.0
    assert value(s, "sentinel_last_reload_successful") == 0
    m.update_from_stats(None, detection({}, reloads=2, failures=1))
    assert value(parse(m.render().decode()), "sentinel_last_reload_successful") == 1


def test_sinks_statuses_backlog_spool_and_last_success() -> None:
    clock = Clock(100.0)
    m = AgentMetrics(clock=clock)
    m.update_from_stats(
        sinks={
            "stdout": {"ok": 0},
            "http:siem": {"ok": 3, "failed": 2, "backlog": 7, "spool_bytes": 1024, "spool_dropped": 1},
        }
    )
    s = parse(m.render().decode())
    for status in ("ok", "failed", "dropped", "filtered"):  # every status exists, so rate() shows zeros
        assert ("sentinel_sink_alerts_total" in s) and frozenset(
            {("sink", "stdout"), ("status", status)}
        ) in s["sentinel_sink_alerts_total"]
    assert value(s, "sentinel_sink_alerts_total", sink="http:siem", status="failed") == 2
    assert value(s, "sentinel_sink_backlog_alerts", sink="http:siem") == 7
    assert value(s, "sentinel_sink_spool_bytes", sink="http:siem") == 1024
    assert value(s, "sentinel_sink_spool_dropped_total", sink="http:siem") == 1
    # a sink that does not track its last success: "now" whenever it delivered since the last snapshot
    assert value(s, "sentinel_sink_last_success_timestamp_seconds", sink="http:siem") == 100.0
    assert frozenset({("sink", "stdout")}) not in s["sentinel_sink_last_success_timestamp_seconds"]
    clock.now = 160.0
    m.update_from_stats(sinks={"stdout": {"ok": 0}, "http:siem": {"ok": 3, "failed": 9}})
    s = parse(m.render().decode())
    assert value(s, "sentinel_sink_last_success_timestamp_seconds", sink="http:siem") == 100.0  # no new ok
    m.update_from_stats(sinks={"http:siem": {"ok": 4, "last_success": 150.5}})
    assert (
        value(parse(m.render().decode()), "sentinel_sink_last_success_timestamp_seconds", sink="http:siem")
        == 150.5
    )


def test_sink_stats_reads_the_existing_sinks(tmp_path: Path) -> None:
    import io

    out = io.BytesIO()
    file_sink = FileSink(str(tmp_path / "alerts.json"))
    failing = FileSink("/dev/full")  # every write fails: a real failure, not a flag set by hand
    sink = MultiSink([StdoutSink(out), file_sink, failing])
    sink.write(b"{}")
    sink.flush()
    stats = sink_stats(sink)
    keys = ("ok", "failed", "healthy")
    assert {k: stats["stdout"][k] for k in keys} == {"ok": 1, "failed": 0, "healthy": 1.0}
    good = stats[f"file:{tmp_path / 'alerts.json'}"]
    assert {k: good[k] for k in keys} == {"ok": 1, "failed": 0, "healthy": 1.0}
    assert stats["file:/dev/full"]["failed"] >= 1 and stats["file:/dev/full"]["healthy"] == 0.0
    sink.close()

    class Networked:
        name = "http:siem"

        def stats(self) -> dict[str, float]:
            return {"ok": 5, "backlog": 1}

    assert sink_stats(Networked()) == {"http:siem": {"ok": 5, "backlog": 1}}
    health = Health()
    health.set_sinks_from_stats(stats)
    assert health.report()["checks"]["sinks"]["status"] == "degraded"


def test_latency_histogram_buckets() -> None:
    m = AgentMetrics()
    for seconds in (0.0005, 0.001, 0.003, 0.2, 10.0, -1.0, math.nan):
        m.observe_latency(seconds)
    s = parse(m.render().decode())
    bucket = s["sentinel_alert_latency_seconds_bucket"]
    le = {dict(k)["le"]: v for k, v in bucket.items()}
    assert le["0.001"] == 4  # 0.0005, 0.001 (le is inclusive), and the negative and NaN ones as 0
    assert le["0.005"] == 5 and le["0.25"] == 6 and le["5.0"] == 6 and le["+Inf"] == 7
    assert value(s, "sentinel_alert_latency_seconds_count") == 7
    assert value(s, "sentinel_alert_latency_seconds_sum") == pytest.approx(10.2045)
    assert value(s, "sentinel_event_batch_seconds_count") == 0


def test_label_cardinality_is_capped() -> None:
    m = AgentMetrics()
    rules = {f"rule {i}": 1 for i in range(MAX_SERIES_PER_METRIC + 25)}
    m.update_from_stats(None, detection(rules))
    series = parse(m.render().decode())["sentinel_rule_alerts_total"]
    assert len(series) == MAX_SERIES_PER_METRIC + 1
    assert series[frozenset({("rule", OVERFLOW)})] == 25


def test_malformed_snapshots_never_raise() -> None:
    m = AgentMetrics()
    m.update_from_stats({"received": {"exec": "many"}, "process_table": 5, "kernel": None, "lost": [1, 2]})
    m.update_from_stats(None, {"aggregation": "x", "anomaly": 3, "matches": -4}, {"broken": 5})  # type: ignore[dict-item]
    s = parse(m.render().decode())
    assert value(s, "sentinel_metrics_update_errors_total") == 1  # the sinks part could not be read
    assert "sentinel_events_received_total" not in s
    assert value(s, "sentinel_detection_matches_total") == 0


def test_real_snapshot_shapes() -> None:
    """``live_stats`` and ``DetectionStream.stats`` as the agent produces them feed the metrics."""

    class FakeSensor:
        def __init__(self) -> None:
            self.received = {"exec": 2, "open": 0, "connect": 0, "proc": 1}
            self.lost = {"exec": 0, "open": 0, "connect": 0, "proc": 0}
            self.perf_lost = dict(self.lost)
            self.decode_errors = 0

        def kernel_stats(self) -> dict[str, int]:
            return {"open_suppressed": 4}

    stream = DetectionStream(make_table(), FakeRuleSet([rule("Any exec")]), HOST, ListSink(), window_s=0)
    stream.handle(ev(EventType.EXEC, S, 100, filename="/bin/sh", argv=["sh"]))
    m = AgentMetrics()
    m.update_from_stats(
        live_stats(FakeSensor(), stream.table, 3), stream.stats(), sink_stats(stream.writer.sink)
    )
    s = parse(m.render().decode())
    assert value(s, "sentinel_events_received_total", type="exec") == 2
    assert value(s, "sentinel_events_handled_total") == 3
    assert value(s, "sentinel_rule_alerts_total", rule="Any exec") == 1
    assert value(s, "sentinel_sink_alerts_total", sink="list", status="ok") == 1
    assert value(s, "sentinel_process_table_entries") >= 2
    assert value(s, "sentinel_ml_phase", phase="off") == 1
    assert value(s, "sentinel_metrics_update_errors_total") == 0


def test_scrapes_while_the_loop_updates() -> None:
    m = AgentMetrics()
    stop = threading.Event()

    def loop() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            m.update_from_stats(
                live({"exec": n, "open": n, "connect": 0, "proc": 0}, {"open": n // 10}),
                detection({f"r{n % 50}": n}),
            )
            m.observe_latency(0.01)

    t = threading.Thread(target=loop)
    t.start()
    try:
        for _ in range(30):
            s = parse(m.render().decode())
            count = value(s, "sentinel_alert_latency_seconds_count")
            assert value(s, "sentinel_alert_latency_seconds_bucket", le="+Inf") == count
    finally:
        stop.set()
        t.join()


# ------------------------------------------------------------------------------------------- HTTP


def test_healthz_ok_degraded_failing(served: Any) -> None:
    _metrics, health, clock, server = served
    status, _, body = get(server.url + "/healthz")
    report = json.loads(body)
    assert status == 503 and report["status"] == "failing"  # nothing attached, no loop yet
    assert report["checks"]["probes"]["attached"] is False

    health.set_probes(True)
    health.loop_tick()
    health.set_sink("stdout", True)
    health.set_sink("http:siem", True)
    health.set_model("learning")
    status, headers, body = get(server.url + "/healthz")
    report = json.loads(body)
    assert (status, report["status"]) == (200, "ok") and headers["Content-Type"] == "application/json"
    assert set(report["checks"]) == {"probes", "event_loop", "sinks", "model", "losses"}

    health.set_sink("http:siem", False, "connection refused")  # one of two sinks failing
    status, _, body = get(server.url + "/healthz")
    report = json.loads(body)
    assert (status, report["status"]) == (200, "degraded")
    assert report["checks"]["sinks"]["detail"] == {"http:siem": "connection refused"}
    health.set_sink("http:siem", True)

    health.record_loss(12)  # losses within the minute
    status, _, body = get(server.url + "/healthz")
    assert (status, json.loads(body)["checks"]["losses"]) == (
        200,
        {"status": "degraded", "lost": 12, "window_s": 60.0},
    )
    clock.now += 61
    health.loop_tick()
    assert json.loads(get(server.url + "/healthz")[2])["status"] == "ok"  # the loss aged out

    health.set_model("refused", "signature mismatch")
    assert json.loads(get(server.url + "/healthz")[2])["status"] == "degraded"
    health.set_model("detection")

    clock.now += 11  # the loop stopped ticking: stale
    status, _, body = get(server.url + "/healthz")
    report = json.loads(body)
    assert status == 503 and report["checks"]["event_loop"]["status"] == "failing"
    assert report["checks"]["event_loop"]["last_iteration_age_s"] == 11.0
    health.loop_tick()
    assert get(server.url + "/healthz")[0] == 200

    health.set_sink("stdout", False)
    health.set_sink("http:siem", False)  # every sink failing: alerts are not getting out
    assert get(server.url + "/healthz")[0] == 503


def test_health_report_never_raises() -> None:
    def broken() -> float:
        raise RuntimeError("clock gone")

    health = Health(clock=broken)
    health.set_probes(True)
    assert health.report()["status"] == "failing"


def test_not_found_head_and_no_health(served: Any) -> None:
    metrics, _health, _clock, server = served
    for path in ("/", "/metrics/extra", "/health", "/favicon.ico"):
        assert get(server.url + path)[0] == 404
    assert get(server.url + "/metrics?name[]=x")[0] == 200  # query strings are ignored
    req = urllib.request.Request(server.url + "/metrics", method="HEAD")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b"" and int(resp.headers["Content-Length"]) > 0
    with serve(metrics, "127.0.0.1:0") as bare:  # no Health given: only /metrics
        assert get(bare.url + "/healthz")[0] == 404
        assert get(bare.url + "/metrics")[0] == 200


def test_two_instances_side_by_side() -> None:
    a, b = AgentMetrics(), AgentMetrics()
    a.update_from_stats(live({"exec": 1, "open": 0, "connect": 0, "proc": 0}, {}))
    b.update_from_stats(live({"exec": 7, "open": 0, "connect": 0, "proc": 0}, {}))
    with serve(a, "127.0.0.1:0") as sa, serve(b, "localhost:0") as sb:
        assert sa.port != sb.port and sa.port > 0
        assert value(scrape(sa), "sentinel_events_received_total", type="exec") == 1
        assert value(scrape(sb), "sentinel_events_received_total", type="exec") == 7


def test_port_in_use_is_a_clear_error_and_close_releases_the_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(
            MetricsEndpointError, match=f"cannot listen on 127.0.0.1:{port}: address already in use"
        ):
            serve(AgentMetrics(), f"127.0.0.1:{port}")
    server = serve(AgentMetrics(), "127.0.0.1:0")
    port = server.port
    server.close()
    server.close()  # idempotent
    with serve(AgentMetrics(), f"127.0.0.1:{port}") as again:  # the port was released
        assert again.port == port


def test_ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        with pytest.raises(MetricsEndpointError):  # a host without IPv6 says so at start
            serve(AgentMetrics(), "[::1]:0")
        return
    with serve(AgentMetrics(), "[::1]:0") as server:
        assert server.url.startswith("http://[::1]:")
        assert value(scrape(server), "sentinel_up") == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ListenAddress("127.0.0.1", 9464)),
        (" [::1]:9464 ", ListenAddress("::1", 9464)),
        (":9464", ListenAddress("", 9464)),
        ("localhost:0", ListenAddress("127.0.0.1", 0)),
        ("0.0.0.0:80", ListenAddress("0.0.0.0", 80)),
        ("[::]:9464", ListenAddress("::", 9464)),
    ],
)
def test_addresses(text: str, expected: ListenAddress) -> None:
    assert parse_address(text) == expected
    assert parse_address(":9464").all_interfaces and not parse_address("[::]:1").all_interfaces


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("9464", "has no port"),
        ("127.0.0.1", "has no port"),
        ("::1:9464", "in brackets"),
        ("[::1]9464", "expected :PORT"),
        ("[::1:9464", "missing ']'"),
        ("[127.0.0.1]:9464", "not an IPv6 address"),
        ("metrics.example:9464", "not an IP address"),
        ("127.0.0.1:99999", "out of range"),
        ("127.0.0.1:http", "not a number"),
        ("127.0.0.1:-1", "not a number"),
        ("127.0.0.1:", "not a number"),
        ("http://127.0.0.1:9464/metrics", "looks like a URL"),
    ],
)
def test_bad_addresses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_address(text)
    with pytest.raises(ValueError):
        serve(AgentMetrics(), text)


# ------------------------------------------------------------------------------------------- dashboard


def exprs(node: Any) -> Iterator[str]:
    """Every PromQL string in the dashboard: panel targets and template variable queries."""
    if isinstance(node, dict):
        for key, child in node.items():
            if key in ("expr", "query", "definition") and isinstance(child, str):
                yield child
            else:
                yield from exprs(child)
    elif isinstance(node, list):
        for child in node:
            yield from exprs(child)


def test_dashboard_queries_name_exported_metrics() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["schemaVersion"] >= 39
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    assert {v["name"] for v in board["templating"]["list"]} >= {"datasource", "instance"}
    scraped = set(parse(fed_metrics().render().decode()))
    names: set[str] = set()
    queries = list(exprs(board))
    assert len(queries) >= 15
    for q in queries:
        names.update(re.findall(r"\bsentinel_[a-z0-9_]+", q))
    assert names and names <= scraped, sorted(names - scraped)
    panels = [p for p in board["panels"] if p.get("type") != "row"]
    assert all(p.get("targets") for p in panels)
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
