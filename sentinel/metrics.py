"""Prometheus metrics for the agent, and the small HTTP endpoint that serves them with ``/healthz``.

The hot loop must not pay for metrics: the agent already keeps cumulative counters (``live_stats()``,
``DetectionStream.stats()``, the sinks' own counts), so :class:`AgentMetrics` reads those snapshots about once
a second (:meth:`AgentMetrics.update_from_stats`) and turns cumulative totals into counters by their deltas.
The only per-alert call is :meth:`AgentMetrics.observe_latency` (a bisect and two additions, no lock).

Values live in plain dicts exported by one custom collector on a private ``CollectorRegistry``: several
instances (tests, replays) never collide, no ``_created`` series double the cardinality, and a scrape copies
the values under a lock the loop takes once a second. Label values come from bounded sets (event types, perf
buffers, configured sinks, the ruleset's rule names, task names); each metric is still capped at
:data:`MAX_SERIES_PER_METRIC` series, past which new label values are counted under ``_other``. Label and
info values are written by the project's escaping rule (:func:`sentinel.text.printable`): a name that is not
UTF-8 (a model directory given on the command line, a rules file's bytes) must not make every scrape fail.
"""

from __future__ import annotations

import errno
import ipaddress
import platform
import socket
import socketserver
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from sentinel.health import FAILING, Health
from sentinel.text import dumps, printable

# Alerts normally leave within a poll (50 ms) and the 5 ms hold-back; seconds mean a stall.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
MAX_SERIES_PER_METRIC = 1000
OVERFLOW = "_other"
SINK_STATUSES = ("ok", "failed", "dropped", "filtered")
ML_PHASES = ("off", "learning", "detection")
# The classic text format: what every Prometheus version parses (our names are all legacy-valid).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_ADDRESS = "127.0.0.1:9464"
TEXT = "text/plain; charset=utf-8"
ALWAYS_PRESENT = (  # label-free counters exported as 0 from the start
    "sentinel_metrics_update_errors_total",
    "sentinel_events_handled_total",
    "sentinel_decode_errors_total",
    "sentinel_detection_matches_total",
    "sentinel_alerts_written_total",
    "sentinel_match_errors_total",
    "sentinel_reloads_total",
    "sentinel_reload_failures_total",
    "sentinel_ml_events_scored_total",
    "sentinel_ml_alerts_total",
)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric family: the single list the collector, the docs and the tests agree on."""

    name: str  # the sample name as scraped (counters end in _total, info metrics in _info)
    kind: str  # counter | gauge | info | histogram
    labels: tuple[str, ...]
    doc: str


def _spec(name: str, kind: str, doc: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, kind, labels, doc)


SPECS: tuple[MetricSpec, ...] = (
    # agent
    _spec("sentinel_up", "gauge", "Always 1: alert on absent(sentinel_up)"),
    _spec("sentinel_start_time_seconds", "gauge", "When the agent started, unix time"),
    _spec("sentinel_build_info", "info", "Agent build: version, Python, bcc and the kernel headers mode"),
    _spec("sentinel_metrics_update_errors_total", "counter", "Stats snapshots the metrics could not read"),
    _spec("sentinel_task_failures_total", "counter", "Periodic or background task runs that failed", "task"),
    # sensor
    _spec("sentinel_events_received_total", "counter", "Kernel events decoded, per event type", "type"),
    _spec("sentinel_events_lost_total", "counter", "Kernel events lost, per perf buffer", "buffer"),
    _spec("sentinel_events_handled_total", "counter", "Events through the process table and the rules"),
    _spec("sentinel_decode_errors_total", "counter", "Perf samples that did not decode"),
    _spec("sentinel_queue_dropped_total", "counter", "Events dropped by an internal queue or ring", "queue"),
    _spec("sentinel_kernel_counter_total", "counter", "The probes' own counters", "counter"),
    _spec("sentinel_event_batch_seconds", "histogram", "Time to handle one poll's batch of events"),
    # process table
    _spec("sentinel_process_table_entries", "gauge", "Processes in the process table"),
    _spec("sentinel_process_table_evictions_total", "counter", "Entries evicted to respect the table's cap"),
    _spec("sentinel_process_table_expired_total", "counter", "Exited processes removed after 10 s"),
    _spec("sentinel_process_table_late_total", "counter", "Processes first seen after their fork"),
    _spec("sentinel_process_table_depth_truncated_total", "counter", "Ancestry chains cut at the depth cap"),
    # detection
    _spec("sentinel_rule_matches_total", "counter", "Rule matches, per rule (before aggregation)", "rule"),
    _spec("sentinel_rule_alerts_total", "counter", "Alerts written, per rule (after aggregation)", "rule"),
    _spec("sentinel_detection_matches_total", "counter", "Rule and model matches, all rules"),
    _spec("sentinel_alerts_written_total", "counter", "Alerts rendered and handed to the sinks"),
    _spec("sentinel_match_errors_total", "counter", "Events a rule or the engine failed on"),
    _spec("sentinel_aggregation_repeats_total", "counter", "Alerts folded into an aggregation summary"),
    _spec("sentinel_aggregation_summaries_total", "counter", "Aggregation summaries written"),
    _spec("sentinel_aggregation_evictions_total", "counter", "Aggregation windows closed early"),
    _spec(
        "sentinel_aggregation_rate_limited_total",
        "counter",
        "First alerts held back by the per-rule rate limit (counted in its summary)",
    ),
    _spec("sentinel_aggregation_open_windows", "gauge", "Aggregation windows open"),
    _spec("sentinel_correlation_evictions_total", "counter", "Sigma correlation groups evicted (group cap)"),
    _spec("sentinel_correlation_groups", "gauge", "Sigma correlation groups open"),
    _spec("sentinel_alert_latency_seconds", "histogram", "Kernel event to alert written"),
    # rules
    _spec("sentinel_ruleset_info", "info", "The running ruleset: sha256, rules loaded and enabled"),
    _spec("sentinel_reloads_total", "counter", "Successful reloads of configuration and rules"),
    _spec("sentinel_reload_failures_total", "counter", "Reloads refused (invalid; the running state kept)"),
    _spec("sentinel_last_reload_timestamp_seconds", "gauge", "When the agent last reloaded, unix time"),
    _spec("sentinel_last_reload_successful", "gauge", "1 unless the last reload failed"),
    # sinks
    _spec("sentinel_sink_alerts_total", "counter", "Alerts per sink and outcome", "sink", "status"),
    _spec("sentinel_sink_last_success_timestamp_seconds", "gauge", "Last delivery, unix time", "sink"),
    _spec("sentinel_sink_backlog_alerts", "gauge", "Alerts waiting to be delivered", "sink"),
    _spec("sentinel_sink_spool_bytes", "gauge", "Bytes in the sink's on-disk spool", "sink"),
    _spec("sentinel_sink_spool_dropped_total", "counter", "Alerts dropped from a full spool", "sink"),
    _spec("sentinel_sink_healthy", "gauge", "1 when the sink's last writes succeeded", "sink"),
    # anomaly model
    _spec("sentinel_model_info", "info", "The anomaly model: version, sha256, source and phase"),
    _spec("sentinel_ml_phase", "gauge", "1 for the model's current phase", "phase"),
    _spec("sentinel_ml_learning_progress", "gauge", "Learning period done, 0..1"),
    _spec("sentinel_ml_events_scored_total", "counter", "Events the model scored"),
    _spec("sentinel_ml_alerts_total", "counter", "Events above the model's threshold"),
    _spec("sentinel_ml_incidents_total", "counter", "Anomalous process trees (ML alerts group into these)"),
    _spec("sentinel_ml_trainings_total", "counter", "Models trained on this host"),
    _spec("sentinel_ml_errors_total", "counter", "Model failures, per kind (engine, training, save)", "kind"),
)
SPEC_BY_NAME = {s.name: s for s in SPECS}

# Counter feeds: stats key → metric, for the flat cumulative totals of each snapshot.
_LIVE_COUNTERS = {
    "events_handled": "sentinel_events_handled_total",
    "decode_errors": "sentinel_decode_errors_total",
}
_TABLE_COUNTERS = {
    "evicted": "sentinel_process_table_evictions_total",
    "expired": "sentinel_process_table_expired_total",
    "late_processes": "sentinel_process_table_late_total",
    "depth_truncated": "sentinel_process_table_depth_truncated_total",
}
_DETECTION_COUNTERS = {
    "matches": "sentinel_detection_matches_total",
    "alerts_written": "sentinel_alerts_written_total",
    "match_errors": "sentinel_match_errors_total",
    "reloads": "sentinel_reloads_total",
    "reload_failures": "sentinel_reload_failures_total",
}
_AGGREGATION_COUNTERS = {
    "repeats": "sentinel_aggregation_repeats_total",
    "summaries": "sentinel_aggregation_summaries_total",
    "evicted": "sentinel_aggregation_evictions_total",
    "rate_limited": "sentinel_aggregation_rate_limited_total",
}
_ML_COUNTERS = {
    "scored": "sentinel_ml_events_scored_total",
    "anomalous": "sentinel_ml_alerts_total",
    "incidents": "sentinel_ml_incidents_total",
    "trainings": "sentinel_ml_trainings_total",
}
_ML_ERRORS = {"training_errors": "training", "save_errors": "save"}


def _num(value: Any) -> float | None:
    """A snapshot value as a number, or None for anything else (a snapshot must never break the agent)."""
    if isinstance(value, int | float):
        return float(value)
    return None


class _Histogram:
    """Cumulative-on-export bucket counts with one writer: ``observe`` is a bisect and two additions.

    No lock: only the agent's loop thread observes, and a scrape copies the list (atomic under the GIL);
    the count is derived from that copy, so ``_count`` always equals the ``+Inf`` bucket.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, spec: MetricSpec) -> HistogramMetricFamily:
        counts, total = self.counts[:], self.total
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self.bounds, counts, strict=False):
            running += n
            buckets.append((floatToGoString(bound), running))
        buckets.append(("+Inf", running + counts[-1]))
        return HistogramMetricFamily(spec.name, spec.doc, buckets=buckets, sum_value=total)


def default_build_info(headers_mode: str = "unknown") -> dict[str, str]:
    """Version, Python and bcc (without importing bcc: unit tests and ``doctor`` run where it is absent)."""
    from sentinel import __version__

    bcc_version = "unknown"
    bcc = sys.modules.get("bcc")
    if bcc is not None and getattr(bcc, "__version__", None):
        bcc_version = str(bcc.__version__)
    else:
        try:
            from importlib.metadata import version

            bcc_version = version("bcc")
        except Exception:  # absent, or an unrelated distribution without metadata
            pass
    return {
        "version": __version__,
        "python": platform.python_version(),
        "bcc": bcc_version,
        "headers_mode": headers_mode,
    }


class AgentMetrics:
    """Every sentinel metric, on a private registry; fed from stats snapshots, exported by ``render``."""

    def __init__(
        self, clock: Callable[[], float] = time.time, build: Mapping[str, str] | None = None
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._series: dict[str, dict[tuple[str, ...], float]] = {
            s.name: {} for s in SPECS if s.kind in ("counter", "gauge")
        }
        self._baseline: dict[tuple[str, tuple[str, ...]], float] = {}
        self._info: dict[str, dict[str, str]] = {
            "sentinel_build_info": default_build_info(),
            "sentinel_model_info": {"version": "", "sha256": "", "source": "", "phase": "off"},
        }
        if build:
            self._info["sentinel_build_info"].update({k: str(v) for k, v in build.items()})
        self._explicit_progress = False
        self.latency = _Histogram(LATENCY_BUCKETS)
        self.batch = _Histogram(BATCH_BUCKETS)
        for name in ALWAYS_PRESENT:
            self._series[name][()] = 0.0  # so rate() and dashboards work before the first event
        self._set("sentinel_up", (), 1.0)
        self._set("sentinel_start_time_seconds", (), clock())
        self._set("sentinel_last_reload_successful", (), 1.0)
        self._set("sentinel_ml_learning_progress", (), 0.0)
        self._set_phase("off")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    # ------------------------------------------------------------------------------ per alert / batch

    def observe_latency(self, seconds: float) -> None:
        """One alert's event-to-alert delay: wall time now minus the event's time (boot epoch + kernel ns).

        Negative or NaN (clocks stepped) counts as 0. Call from the agent's loop thread only.
        """
        if not seconds >= 0.0:
            seconds = 0.0
        self.latency.observe(seconds)

    def observe_batch(self, seconds: float) -> None:
        """Time spent handling one poll's batch (optional; once per poll, loop thread only)."""
        if not seconds >= 0.0:
            seconds = 0.0
        self.batch.observe(seconds)

    # ------------------------------------------------------------------------------ set once / rarely

    def set_build_info(self, **fields: str) -> None:
        """Override build labels, e.g. ``headers_mode="substitute"`` once the sensor knows it."""
        with self._lock:
            self._info["sentinel_build_info"] = {**self._info["sentinel_build_info"],
                                                 **{k: str(v) for k, v in fields.items()}}  # fmt: skip

    def set_ruleset(self, sha256: str, rules: int, enabled: int) -> None:
        """At start and after each successful reload."""
        with self._lock:
            info = {"sha256": sha256, "rules": str(rules), "enabled": str(enabled)}
            self._info["sentinel_ruleset_info"] = info

    def set_model(
        self,
        version: str | None = None,
        sha256: str | None = None,
        source: str | None = None,
        phase: str | None = None,
    ) -> None:
        """Model facts the stats snapshot lacks (sha256…); given fields replace, the others are kept."""
        with self._lock:
            self._merge_model(version=version, sha256=sha256, source=source, phase=phase)

    def set_learning_progress(self, fraction: float) -> None:
        """Learning progress 0..1; once set explicitly, snapshots no longer derive it."""
        with self._lock:
            self._explicit_progress = True
            self._set("sentinel_ml_learning_progress", (), min(1.0, max(0.0, float(fraction))))

    # ------------------------------------------------------------------------------ snapshots (~1/s)

    def update_from_stats(
        self,
        live: Mapping[str, Any] | None = None,
        detection: Mapping[str, Any] | None = None,
        sinks: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Fold one set of snapshots in; never raises (a bad value is counted and skipped).

        ``live``: ``pipeline.live_stats()``; it may also carry ``received_by_type`` ({type: n}, preferred over
        the per-buffer ``received``) and ``queue_dropped`` (n or {queue: n}). ``detection``:
        ``DetectionStream.stats()``; ``matches_by_rule`` ({rule: n}) feeds the per-rule matches when present.
        ``sinks``: {name: {ok, failed, dropped, filtered, spool_dropped (totals), backlog, spool_bytes,
        last_success, healthy}} as :func:`sink_stats` reads them; every key is optional.
        """
        with self._lock:
            parts = ((live, self._feed_live), (detection, self._feed_detection), (sinks, self._feed_sinks))
            for part, feed in parts:
                if part is None:
                    continue
                try:
                    feed(part)  # type: ignore[operator]
                except Exception:  # a malformed snapshot costs its metrics, never the agent
                    self._inc("sentinel_metrics_update_errors_total", (), 1.0)

    def _feed_live(self, live: Mapping[str, Any]) -> None:
        for key, name in _LIVE_COUNTERS.items():
            self._feed(name, (), live.get(key))
        by_type = live.get("received_by_type")
        received = by_type if by_type is not None else live.get("received")
        self._feed_map("sentinel_events_received_total", received)
        self._feed_map("sentinel_events_lost_total", live.get("lost"))
        dropped = live.get("queue_dropped")
        if isinstance(dropped, Mapping):
            self._feed_map("sentinel_queue_dropped_total", dropped)
        else:
            self._feed("sentinel_queue_dropped_total", ("events",), dropped)
        self._feed_map("sentinel_kernel_counter_total", live.get("kernel"))  # {} after close: kept
        self._feed_map("sentinel_task_failures_total", live.get("task_failures"))
        table = live.get("process_table")
        if isinstance(table, Mapping):
            size = _num(table.get("size"))
            if size is not None:
                self._set("sentinel_process_table_entries", (), size)
            for key, name in _TABLE_COUNTERS.items():
                self._feed(name, (), table.get(key))

    def _feed_detection(self, det: Mapping[str, Any]) -> None:
        reloads = self._feed("sentinel_reloads_total", (), det.get("reloads"))
        failures = self._feed("sentinel_reload_failures_total", (), det.get("reload_failures"))
        if reloads or failures:  # both in one second: the failure wins (the conservative reading)
            self._set("sentinel_last_reload_successful", (), 0.0 if failures else 1.0)
        if reloads:
            self._set("sentinel_last_reload_timestamp_seconds", (), self._clock())
        for key, name in _DETECTION_COUNTERS.items():
            if key not in ("reloads", "reload_failures"):
                self._feed(name, (), det.get(key))
        self._feed_map("sentinel_rule_matches_total", det.get("matches_by_rule"))
        self._feed_map("sentinel_rule_alerts_total", det.get("alerts_by_rule"))
        agg = det.get("aggregation")
        if isinstance(agg, Mapping):
            for key, name in _AGGREGATION_COUNTERS.items():
                self._feed(name, (), agg.get(key))
            open_windows = _num(agg.get("open_windows"))
            if open_windows is not None:
                self._set("sentinel_aggregation_open_windows", (), open_windows)
        corr = det.get("correlation")
        if isinstance(corr, Mapping):
            self._feed("sentinel_correlation_evictions_total", (), corr.get("evicted"))
            groups = _num(corr.get("groups"))
            if groups is not None:
                self._set("sentinel_correlation_groups", (), groups)
        self._feed("sentinel_ml_errors_total", ("engine",), det.get("anomaly_errors"))
        ml = det.get("anomaly")
        if isinstance(ml, Mapping):
            self._feed_ml(ml)

    def _feed_ml(self, ml: Mapping[str, Any]) -> None:
        for key, name in _ML_COUNTERS.items():
            self._feed(name, (), ml.get(key))
        for key, kind in _ML_ERRORS.items():
            self._feed("sentinel_ml_errors_total", (kind,), ml.get(key))
        phase = ml.get("phase")
        self._merge_model(
            version=ml.get("model_version"),
            sha256=ml.get("model_sha256"),
            source=ml.get("model"),
            phase=phase,
        )
        if self._explicit_progress:
            return
        if phase == "detection":
            self._set("sentinel_ml_learning_progress", (), 1.0)
        elif phase == "learning":
            learned, period = _num(ml.get("learned_s")), _num(ml.get("learn_period_s"))
            if learned is not None and period:
                self._set("sentinel_ml_learning_progress", (), min(1.0, max(0.0, learned / period)))
        elif phase == "off":
            self._set("sentinel_ml_learning_progress", (), 0.0)

    def _feed_sinks(self, sinks: Mapping[str, Mapping[str, Any]]) -> None:
        for raw_name, st in sinks.items():
            name = str(raw_name)
            delivered = 0.0
            for status in SINK_STATUSES:
                got = self._feed("sentinel_sink_alerts_total", (name, status), st.get(status))
                if status == "ok":
                    delivered = got
                self._series["sentinel_sink_alerts_total"].setdefault(self._key(
                    "sentinel_sink_alerts_total", (name, status)), 0.0)  # fmt: skip
            self._feed("sentinel_sink_spool_dropped_total", (name,), st.get("spool_dropped"))
            for key, metric in (
                ("backlog", "sentinel_sink_backlog_alerts"),
                ("spool_bytes", "sentinel_sink_spool_bytes"),
                ("healthy", "sentinel_sink_healthy"),
            ):
                value = _num(st.get(key))
                if value is not None:
                    self._set(metric, (name,), value)
            last = _num(st.get("last_success"))
            if last is None and delivered > 0:
                last = self._clock()  # not tracked by the sink: it delivered since the last snapshot
            if last is not None and last > 0:
                self._set("sentinel_sink_last_success_timestamp_seconds", (name,), last)

    # ------------------------------------------------------------------------------ internals

    def _key(self, name: str, labels: tuple[str, ...]) -> tuple[str, ...]:
        """``labels``, or the overflow series once the metric holds its cap of series."""
        series = self._series[name]
        if labels in series or len(series) < MAX_SERIES_PER_METRIC or not labels:
            return labels
        return (OVERFLOW, *labels[1:])

    def _set(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self._series[name][self._key(name, labels)] = value

    def _inc(self, name: str, labels: tuple[str, ...], amount: float) -> None:
        series = self._series[name]
        key = self._key(name, labels)
        series[key] = series.get(key, 0.0) + amount

    def _feed(self, name: str, labels: tuple[str, ...], total: Any) -> float:
        """Add what a cumulative ``total`` grew by since the last snapshot; returns that delta.

        The first sighting counts whole (the component counted from zero). A total below the last one means
        the component restarted from zero: its new total is all new, and becomes the baseline — the counter
        never goes down. Missing or non-numeric totals are skipped and keep the baseline.
        """
        value = _num(total)
        if value is None or value < 0:
            return 0.0
        bkey = (name, labels)
        previous = self._baseline.get(bkey)
        self._baseline[bkey] = value
        delta = value if previous is None or value < previous else value - previous
        if delta or labels not in self._series[name]:
            self._inc(name, labels, delta)
        return delta

    def _feed_map(self, name: str, totals: Any) -> None:
        if isinstance(totals, Mapping):
            for label, total in totals.items():
                self._feed(name, (str(label),), total)

    def _merge_model(self, **fields: Any) -> None:
        info = self._info["sentinel_model_info"]
        for key, value in fields.items():
            if value is not None:
                info[key] = str(value)
        if fields.get("phase") is not None:
            self._set_phase(str(fields["phase"]))

    def _set_phase(self, phase: str) -> None:
        for p in {*ML_PHASES, phase}:
            self._set("sentinel_ml_phase", (p,), 1.0 if p == phase else 0.0)

    def families(self) -> Iterator[Metric]:
        """The metric families of one scrape (values copied under the lock, built outside it)."""
        with self._lock:
            series = {name: dict(values) for name, values in self._series.items()}
            info = {name: dict(labels) for name, labels in self._info.items()}
        for spec in SPECS:
            if spec.kind == "histogram":
                latency = spec.name == "sentinel_alert_latency_seconds"
                yield (self.latency if latency else self.batch).family(spec)
            elif spec.kind == "info":
                if spec.name in info:
                    value = {k: printable(v) for k, v in info[spec.name].items()}
                    yield InfoMetricFamily(spec.name[: -len("_info")], spec.doc, value=value)
            else:
                values = series[spec.name]
                if not values:
                    continue
                family_type = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
                family = family_type(spec.name, spec.doc, labels=list(spec.labels))
                for labels, value in sorted(values.items()):
                    family.add_metric([printable(label) for label in labels], value)
                yield family

    def render(self) -> bytes:
        """The Prometheus text exposition of this instance's registry."""
        return generate_latest(self.registry)


class _Collector:
    """Adapts :class:`AgentMetrics` to ``CollectorRegistry.register``."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.families()


def sink_stats(sink: Any) -> dict[str, dict[str, float]]:
    """Per-sink counters read off the sink objects (a ``MultiSink``'s children), for ``update_from_stats``.

    A sink with a ``stats()`` method (network sinks with a spool) reports itself; stdout and file sinks give
    what they count: ``written`` as ok, write ``errors`` as failed, and whether they are failing right now.
    """
    out: dict[str, dict[str, float]] = {}
    for s in getattr(sink, "sinks", None) or [sink]:
        name = str(getattr(s, "name", type(s).__name__))
        stats = getattr(s, "stats", None)
        if callable(stats):
            out[name] = dict(stats())
            continue
        failing = getattr(s, "failing", getattr(s, "_failing", False))
        out[name] = {
            "ok": getattr(s, "written", 0),
            "failed": getattr(s, "errors", 0),
            "healthy": 0.0 if failing else 1.0,
        }
    return out


# ---------------------------------------------------------------------------------------------- HTTP


class MetricsEndpointError(RuntimeError):
    """The endpoint could not listen; the message names the address and why (the agent refuses to start)."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A parsed ``--metrics-address``; ``host`` is empty for every interface."""

    host: str
    port: int

    @property
    def all_interfaces(self) -> bool:
        return self.host == ""


def parse_address(text: str) -> ListenAddress:
    """``127.0.0.1:9464``, ``[::1]:9464``, ``localhost:9464`` or ``:9464`` (every interface, IPv4 and IPv6).

    Only IP literals (and ``localhost``): resolving names at start would make the bind depend on DNS.
    Port 0 picks a free port (tests). Raises ValueError saying what is wrong and what to write instead.
    """
    s = text.strip()
    hint = "use HOST:PORT, e.g. 127.0.0.1:9464, [::1]:9464, or :9464 for every interface"
    if not s:
        raise ValueError(f"metrics address is empty: {hint}")
    if "/" in s:
        raise ValueError(f"metrics address {text!r} looks like a URL: {hint}")
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise ValueError(f"metrics address {text!r}: missing ']' after the IPv6 address")
        host, rest = s[1:end], s[end + 1 :]
        if not rest.startswith(":"):
            raise ValueError(f"metrics address {text!r}: expected :PORT after ']'")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"metrics address {text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = s.rpartition(":")
        if not sep:
            raise ValueError(f"metrics address {text!r} has no port: {hint}")
        if ":" in host:
            raise ValueError(f"metrics address {text!r}: put an IPv6 address in brackets, e.g. [::1]:9464")
        if host == "localhost":
            host = "127.0.0.1"
        elif host:
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(
                    f"metrics address {text!r}: {host!r} is not an IP address (host names are not resolved)"
                ) from None
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"metrics address {text!r}: port {port_text!r} is not a number: {hint}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"metrics address {text!r}: port {port} is out of range (0-65535)")
    return ListenAddress(host, port)


@dataclass(slots=True)
class _App:
    metrics: AgentMetrics
    health: Health | None


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a chosen address family, dual-stack ``::``, and no DNS lookup at bind."""

    daemon_threads = True  # a slow scraper never holds up the agent's exit

    def __init__(
        self, address: tuple[str, int], family: socket.AddressFamily, dual_stack: bool, app: _App
    ) -> None:
        self.address_family = family
        self.dual_stack = dual_stack
        self.app = app
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.dual_stack:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)  # HTTPServer's would call getfqdn(): a DNS query at start
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-response is not worth a traceback on the agent's stderr."""


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "sentinel"
    sys_version = ""  # no Python version in the Server header
    timeout = 10  # a stalled client frees its thread

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, send_body: bool) -> None:
        app = self.server.app
        path = urlsplit(self.path).path
        try:
            if path == "/metrics":
                status, ctype, body = 200, CONTENT_TYPE, app.metrics.render()
            elif path == "/healthz" and app.health is not None:
                report = app.health.report()
                status = 503 if report.get("status") == FAILING else 200
                ctype, body = "application/json", dumps(report, default=str) + b"\n"
            else:
                status, ctype, body = 404, TEXT, b"not found: try /metrics or /healthz\n"
        except Exception as exc:  # never let a bug kill the thread silently: answer 500 and say what
            status, ctype, body = 500, TEXT, f"internal error: {exc!r}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: stderr carries the agent's JSON diagnostics only."""


class Server:
    """A running endpoint: ``host``/``port`` as bound (port 0 resolved), ``close()`` stops it."""

    def __init__(self, httpd: _HTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self._closed = False
        host, port = httpd.server_address[:2]
        self.host: str = str(host)
        self.port: int = int(port)

    @property
    def url(self) -> str:
        """Base URL for a client on this host (loopback when bound to every interface)."""
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving and release the port; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


_BIND_HINTS = {
    errno.EADDRINUSE: "address already in use (another sentinel or exporter on this port?)",
    errno.EACCES: "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)",
    errno.EADDRNOTAVAIL: "this host has no such address",
}


def _bind(addr: ListenAddress, app: _App) -> _HTTPServer:
    if addr.all_interfaces:
        try:
            return _HTTPServer(("::", addr.port), socket.AF_INET6, True, app)
        except OSError as exc:
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT):
                raise
        return _HTTPServer(("0.0.0.0", addr.port), socket.AF_INET, False, app)  # IPv6 disabled on this host
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    return _HTTPServer((addr.host, addr.port), family, False, app)


def serve(metrics: AgentMetrics, address: str, health: Health | None = None) -> Server:
    """Serve ``/metrics`` (and ``/healthz`` when ``health`` is given) from a daemon thread.

    Raises ValueError for a malformed address and :class:`MetricsEndpointError` when it cannot listen
    (port in use, no permission), both before anything is served, so the agent can refuse to start.
    """
    addr = parse_address(address)
    app = _App(metrics, health)
    try:
        httpd = _bind(addr, app)
    except OSError as exc:
        why = _BIND_HINTS.get(exc.errno or 0, exc.strerror or str(exc))
        raise MetricsEndpointError(f"metrics endpoint: cannot listen on {address}: {why}") from exc
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="sentinel-metrics", daemon=True
    )
    thread.start()
    return Server(httpd, thread)
