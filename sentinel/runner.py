"""`sentinel run`: the agent's orchestration, from settings to a clean stop.

The CLI parses the command line and calls :func:`run_agent`. Here: the configuration with the flags over it,
the rules validated before anything touches the kernel, the outputs opened, the sensor and the anomaly
engine set up, metrics and health served, SIGHUP/SIGUSR1 handled, systemd told READY/WATCHDOG/STOPPING
(:mod:`sentinel.notify`), and every step of the loop's tick guarded so that one failing never stops
detection. The detection helpers (settings, rules, outputs) serve `sentinel replay` too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sentinel import live
from sentinel.outstream import claim_stdout

EXIT_OK = 0
EXIT_FAIL = 1


def detection_settings(args: argparse.Namespace, command: str) -> Any:
    """The configuration with the command-line flags over it; None after printing a located error."""
    from sentinel.agent import SettingsError, effective_settings

    try:
        return effective_settings(args, live=command == "run")
    except SettingsError as exc:
        print(f"sentinel {command}: {exc}", file=sys.stderr)
        return None


def load_rules_or_report(cfg: Any, command: str) -> Any:
    """Load and validate the rules with their rules_enable/rules_disable tuning; None after printing every
    located error (nothing else is touched)."""
    from sentinel.agent import load_tuned_rules
    from sentinel.detect import refusals

    outcome = load_tuned_rules(cfg)
    if outcome.ruleset is None:
        print(f"sentinel {command}: invalid rules, nothing started:", file=sys.stderr)
        for text in outcome.errors:
            print(text, file=sys.stderr)
        return None
    refused = refusals(outcome)
    if refused and not outcome.ruleset.enabled_rules:  # the others load; but here none would run
        print(f"sentinel {command}: no rule can run (every enabled rule is refused), nothing started:",
              file=sys.stderr)  # fmt: skip
        for text in refused:
            print(text, file=sys.stderr)
        return None
    for text in refused:
        print(f"sentinel {command}: {text}", file=sys.stderr)
    return outcome


def rules_loaded_fields(outcome: Any, cfg: Any) -> dict[str, Any]:
    rules = outcome.ruleset.rules
    return {
        "rules": len(rules),
        "enabled": sum(1 for r in rules if r.enabled),
        "refused": [r.name for r in getattr(outcome.ruleset, "refused", ())],
        "never_fire": [r.name for r in getattr(outcome.ruleset, "never_fire", ())],
        "sha256": outcome.ruleset.sha256,
        "files": outcome.files,
        "warnings": outcome.warnings[:20],
        "warning_count": len(outcome.warnings),
        "format": cfg.format,
        "outputs": [sc.label() for sc in cfg.sink_configs()],
        "aggregation_window_s": cfg.aggregation_window_s,
    }


def open_outputs(cfg: Any, command: str, stdout: Any = None) -> Any:
    """Every configured output (``output`` specs and ``sinks``, formats resolved); None after printing why
    one cannot open. Network sinks spool under the state directory; ``stdout`` replaces the process's."""
    from sentinel.sinks import OutputSpecError, open_sinks

    try:
        return open_sinks(cfg.sink_configs(), state_dir=cfg.state_dir, stdout=stdout)
    except OutputSpecError as exc:
        print(f"sentinel {command}: {exc}", file=sys.stderr)
    except OSError as exc:
        print(
            f"sentinel {command}: cannot open output {exc.filename or ''}: {exc.strerror or exc}",
            file=sys.stderr,
        )
    return None


def log_config(log: Any, cfg: Any) -> None:
    """Which files configured this run, and what in them does nothing (warnings do not stop the agent)."""
    log.info("sentinel.config_loaded", config=cfg.source, files=cfg.files, reload_watch=cfg.reload_watch)
    for w in cfg.warnings:
        log.warning("sentinel.config_warning", warning=str(w))


def run_agent(args: argparse.Namespace) -> int:
    """`sentinel run`: exit 0 after a clean stop, 1 when the settings, rules, outputs or probes fail.

    ``args`` are the command line's flags, read and never written: the configuration is read under them at
    start and again at each reload (:class:`~sentinel.agent.Reloader`)."""
    import signal
    import time

    from sentinel import log as logmod
    from sentinel import tasks
    from sentinel.agent import Reloader, anomaly_settings
    from sentinel.detect import DetectionStream
    from sentinel.sensor.loader import boottime_ns

    failures = tasks.reset()  # this agent's task failures: counted, logged, raised as internal alerts
    cfg = detection_settings(args, "run")
    if cfg is None:
        return EXIT_FAIL
    outcome = load_rules_or_report(cfg, "run")
    if outcome is None:
        return EXIT_FAIL
    log = logmod.get_logger()
    log_config(log, cfg)
    # JSON on stdout: claimed before bcc loads, so its native warnings go to stderr, never into a JSON line
    to_stdout = any(sc.kind == "stdout" for sc in cfg.sink_configs())
    sink = open_outputs(cfg, "run", claim_stdout() if to_stdout else None)
    if sink is None:
        return EXIT_FAIL
    fmt = cfg.format if sink.format == "mixed" else sink.format
    sensor_cfg = live.sensor_config(
        cfg.wakeup_events, cfg.open_dedup_s, cfg.loader_opens, cfg.pages,
        getattr(args, "scheduling", "batch"), getattr(args, "perf_reader", "auto"),
        poll_ms=max(1, min(50, int(cfg.ml_batch_ms))),  # the engine scores queued rows at every poll
    )  # fmt: skip
    host, table, sensor = live.live_setup(sensor_cfg, (cfg.container_metadata, cfg.container_endpoints))
    poll_metadata = live.poll_metadata(table)
    from sentinel.anomaly.live import open_engine

    engine, notices = open_engine(anomaly_settings(cfg, live=True), log, boottime_ns())
    stream = DetectionStream(
        table, outcome.ruleset, host, sink, fmt, cfg.aggregation_window_s, anomaly=engine,
        redactor=cfg.redactor(), falco_iso8601=cfg.falco_time_iso8601, rate_per_min=cfg.rule_rate_limit,
    )  # fmt: skip
    stream.task_failures = failures
    log.info("sentinel.rules_loaded", **rules_loaded_fields(outcome, cfg))
    # after logrotate; a signal handler's exception would surface wherever the loop happens to be
    previous_usr1 = signal.signal(signal.SIGUSR1, lambda _s, _f: tasks.guard("reopen", sink.reopen))
    ops = start_operations(cfg, stream, sensor, table, host)
    if ops is None:
        stream.close()
        table.containers.close()
        return EXIT_FAIL
    for alert in notices:
        stream.raise_internal(alert)
    from sentinel.notify import Notifier

    notifier = Notifier()  # systemd's Type=notify and WatchdogSec (inert elsewhere)
    notifier.status("starting: compiling and attaching the probes")

    def running_status() -> str:
        enabled = sum(1 for r in stream.ruleset.rules if r.enabled)
        outputs = ", ".join(sc.label() for sc in cfg.sink_configs())
        return f"running: {enabled} rules, {len(sensor.attached)} tracepoints, alerts to {outputs}"

    def on_ready() -> None:
        ops.on_ready()
        notifier.ready(running_status())

    def on_swapped(new_cfg: Any) -> None:
        ops.settings_changed(new_cfg)
        notifier.status(running_status() + f" (reloaded {time.strftime('%H:%M:%S')})")

    reloader = Reloader(args, cfg, stream, engine, log, time.monotonic, on_swapped=on_swapped)

    hup: list[int] = []
    previous = signal.signal(signal.SIGHUP, lambda signum, _frame: hup.append(signum))
    guard = tasks.guard

    def on_tick() -> None:
        """Each step is a task of its own: one failing (any exception) is counted and reported as an
        ``Agent task failed`` internal alert, and the others, and the agent, go on."""
        now = boottime_ns()
        if poll_metadata is not None:  # runtimes' answers: the next events' rules and documents see them
            guard("containers", poll_metadata, log=log)
        if hup:
            hup.clear()
            guard("reload", reloader.reload, "SIGHUP", now, log=log)
        elif guard("reload", reloader.files_changed, log=log):
            guard("reload", reloader.reload, "files changed", now, log=log)
        # Close aggregation windows on an idle host too; a second of margin for events still in the buffers.
        guard("aggregation", stream.advance, now - 1_000_000_000, log=log)
        if engine is not None:
            guard("anomaly", engine.tick, log, log=log)
        guard("metrics", ops.tick, log=log)
        guard("alerts", stream.report_task_failures, now, log=log)
        notifier.tick()  # the watchdog: pinged only while this loop goes round

    try:
        code = live.run_sensor(
            args.duration,
            stream.handle,
            stream.flush,
            host,
            table,
            sensor,
            on_loss=ops.on_loss,
            on_ready=on_ready,
            on_tick=on_tick,
        )
    finally:
        notifier.stopping()
        signal.signal(signal.SIGHUP, previous)
        signal.signal(signal.SIGUSR1, previous_usr1)
        stream.close()  # never raises for a failed step (recorded), so SIGTERM still exits 0
        guard("shutdown", ops.close, log=log)
        guard("shutdown", lambda: log.info("sentinel.detection_stopped", **stream.stats()), log=log)
        notifier.close()
    return code


class Operations:
    """Metrics and health for `sentinel run`: fed from the loop, served on --metrics-address (if given)."""

    def __init__(
        self, stream: Any, sensor: Any, table: Any, host: Any, address: str | None, backlog_threshold: int
    ) -> None:
        import time

        from sentinel.health import Health
        from sentinel.metrics import AgentMetrics, default_build_info

        self.stream, self.sensor, self.table, self.host = stream, sensor, table, host
        self.time = time
        self.metrics = AgentMetrics(build=default_build_info(live.mode_fields()["headers_mode"]))
        self.health = Health()
        self.server: Any = None
        self.address = address
        self.next_feed = 0.0
        self.backlog_threshold = backlog_threshold
        self.backlogged: set[str] = set()
        self.dropped_seen: dict[str, int] = {}
        self.ruleset_changed()
        boot_s = host.boot_time_ns / 1e9
        observe = self.metrics.observe_latency
        wall = time.time

        def on_alert(alert: Any) -> None:
            if not alert.aggregated and alert.ctx is not None:
                observe(wall() - boot_s - alert.ts_ns / 1e9)

        stream.on_alert = on_alert

    def start(self) -> None:
        from sentinel.metrics import serve

        if self.address:
            self.server = serve(self.metrics, self.address, self.health)
            from sentinel import log as logmod

            logmod.get_logger().info(
                "sentinel.metrics_listening", url=self.server.url, metrics=f"{self.server.url}/metrics",
                healthz=f"{self.server.url}/healthz",
            )  # fmt: skip

    def settings_changed(self, cfg: Any) -> None:
        """After a reload: the new ruleset's figures and internal-alert threshold."""
        self.backlog_threshold = cfg.sink_backlog_threshold
        self.ruleset_changed()

    def ruleset_changed(self) -> None:
        rs = self.stream.ruleset
        self.metrics.set_ruleset(rs.sha256, len(rs.rules), sum(1 for r in rs.rules if r.enabled))

    def on_ready(self) -> None:
        self.health.set_probes(True)
        from sentinel.alerts import internal

        for ev in getattr(self.sensor, "previous_tamper", ()):
            self.stream.raise_internal(internal.tamper(ev, previous=True))

    def on_loss(self, ts_ns: int, buffer: str, lost: int) -> None:
        self.health.record_loss(lost)
        self.stream.report_loss(ts_ns, buffer, lost)

    def tick(self) -> None:
        """Every poll: the loop is alive; once a second: fold the counters into the metrics."""
        self.health.loop_tick()
        now = self.time.monotonic()
        if now < self.next_feed:
            return
        from sentinel.metrics import sink_stats
        from sentinel.pipeline import live_stats

        self.next_feed = now + 1.0
        stats = self.stream.stats()
        sinks = sink_stats(self.stream.writer.sink)
        self.metrics.update_from_stats(live_stats(self.sensor, self.table, self.stream.events), stats, sinks)
        self.health.set_sinks_from_stats(sinks)
        self._sink_alerts(sinks)
        anomaly = stats.get("anomaly", {})
        self.health.set_model(anomaly.get("phase", "off"))
        self.metrics.set_model(
            version=anomaly.get("model_version") or None, source=anomaly.get("model") or None,
            phase=anomaly.get("phase"),
        )  # fmt: skip
        if anomaly.get("learn_period_s"):
            self.metrics.set_learning_progress(min(1.0, anomaly["learned_s"] / anomaly["learn_period_s"]))

    def _sink_alerts(self, sinks: dict[str, dict[str, Any]]) -> None:
        """Internal alerts: a sink whose backlog passed the threshold (once per episode), a spool dropping."""
        from sentinel.alerts import internal
        from sentinel.sensor.loader import boottime_ns

        now = boottime_ns()
        for name, st in sinks.items():
            backlog = int(st.get("backlog", st.get("backlog_alerts", 0)) or 0)
            over = backlog > self.backlog_threshold
            if over and name not in self.backlogged:
                status = str(st.get("status", "failing"))
                alert = internal.sink_backlog(now, name, backlog, self.backlog_threshold, status)
                self.stream.raise_internal(alert)
            if over:
                self.backlogged.add(name)
            elif backlog < self.backlog_threshold // 2:
                self.backlogged.discard(name)  # recovered: the next episode alerts again
            dropped = int(st.get("spool_dropped", 0) or 0)
            delta = dropped - self.dropped_seen.get(name, 0)
            if delta > 0:
                self.stream.raise_internal(internal.spool_dropping(now, name, delta))
            self.dropped_seen[name] = dropped

    def close(self) -> None:
        self.health.set_probes(False, "stopping")
        if self.server is not None:
            self.server.close()


def start_operations(cfg: Any, stream: Any, sensor: Any, table: Any, host: Any) -> Any:
    """Metrics and health; None after printing why the endpoint cannot listen."""
    from sentinel.metrics import MetricsEndpointError

    ops = Operations(stream, sensor, table, host, cfg.metrics_address, cfg.sink_backlog_threshold)
    try:
        ops.start()
    except (ValueError, MetricsEndpointError) as exc:
        print(f"sentinel run: metrics address {cfg.metrics_address!r}: {exc}", file=sys.stderr)
        return None
    return ops
