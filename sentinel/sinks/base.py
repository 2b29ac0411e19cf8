"""What every sink shares: the Falco priority scale, the shape of ``stats()`` and once-per-episode logging.

One stats shape for every sink, so the metrics endpoint and the "spool dropping" internal alert read the same
keys whatever the sink is (zeros where a field does not apply).
"""

from __future__ import annotations

from typing import Any

from sentinel.log import get_logger
from sentinel.sinks.spec import PRIORITIES

# Falco priority → rank (0 = emergency … 7 = debug); also the RFC 5424 severity, which uses the same names.
PRIORITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(PRIORITIES)}
PRIORITY_RANK.update({"info": 6, "warn": 4, "err": 3, "crit": 2, "emerg": 0})
DEFAULT_PRIORITY = "warning"

STATS_KEYS = (
    "written", "delivered", "errors", "dropped", "rejected", "filtered", "corrupt",
    "backlog_alerts", "backlog_bytes", "spool_bytes", "last_success", "status",
)  # fmt: skip


def priority_rank(priority: str, unknown: int = 0) -> int:
    """Rank of a Falco priority, case-insensitive; ``unknown`` for names outside the scale."""
    rank = PRIORITY_RANK.get(priority)
    if rank is None:
        rank = PRIORITY_RANK.get(priority.strip().lower(), unknown)
    return rank


def base_stats(**values: Any) -> dict[str, Any]:
    """A stats dict with every key present; ``status`` is ok unless told."""
    stats: dict[str, Any] = dict.fromkeys(STATS_KEYS, 0)
    stats["last_success"] = None
    stats["status"] = "ok"
    stats["spool_dropped"] = 0
    stats.update(values)
    return with_metric_names(stats)


def with_metric_names(stats: dict[str, Any]) -> dict[str, Any]:
    """Add the names :func:`sentinel.metrics.sink_stats` feeds to Prometheus and /healthz, derived from
    ours: ``ok`` (delivered), ``failed`` (errors), ``backlog`` (backlog_alerts), ``healthy`` (1.0 unless
    failing); dropped, filtered, spool_bytes, spool_dropped and last_success are shared as they are."""
    stats["ok"] = stats["delivered"]
    stats["failed"] = stats["errors"]
    stats["backlog"] = stats["backlog_alerts"]
    stats["healthy"] = 0.0 if stats["status"] == "failing" else 1.0
    return stats


class Episode:
    """Logs the first failure of an episode and the recovery, not every failure: a SIEM down for an hour
    must not flood the agent's own log."""

    def __init__(self, sink: str, failed: str = "sentinel.sink_failed") -> None:
        self.sink = sink
        self.failed_event = failed
        self.failing = False

    def fail(self, problem: str, **fields: Any) -> None:
        if not self.failing:
            self.failing = True
            get_logger().error(self.failed_event, sink=self.sink, problem=problem, **fields)

    def ok(self, **fields: Any) -> None:
        if self.failing:
            self.failing = False
            get_logger().info("sentinel.sink_recovered", sink=self.sink, **fields)


def client_tls_context(cfg: Any) -> Any:
    """TLS client context from a SinkConfig: system CAs or ``tls_ca_file``, optional client certificate;
    ``tls_verify: false`` turns off both the chain and the host name check (labs only). Built when the sink
    opens, so a missing CA or key file stops the agent at start, not at the first alert."""
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg.tls_ca_file or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not cfg.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.tls_cert_file:
        ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file or None)
    return ctx
