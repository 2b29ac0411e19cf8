"""What one configured sink is: the contract between the config file, ``--output`` and the sink classes.

A :class:`SinkConfig` says where alerts go (``kind`` + ``target``), in which rendering (``format``), from
which priority up (``min_priority``) and, for network sinks, how they are delivered (spool, batching, retry,
TLS). The config file fills every field; ``--output`` specs fill ``kind``/``target`` and leave the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

KINDS = ("stdout", "file", "http", "syslog")
NETWORK_KINDS = ("http", "syslog")
# Falco priorities, most severe first; ``min_priority`` names one of them.
PRIORITIES = ("emergency", "alert", "critical", "error", "warning", "notice", "informational", "debug")
HTTP_PRESETS = ("webhook", "splunk_hec", "falcosidekick")


@dataclass(slots=True)
class SinkConfig:
    """One sink. ``target``: a path (file), a URL (http), ``tcp://H:P``, ``tls://H:P`` or ``unix:PATH``."""

    kind: str
    target: str = ""
    name: str = ""  # unique label for metrics/spool directory; defaults to kind:target
    format: str = "ecs"  # ecs | falco
    min_priority: str = "debug"  # lowest priority delivered (debug = everything)
    # file
    rotate_bytes: int = 100 * 1024 * 1024  # 0 = never rotate
    keep_files: int = 5  # rotated files kept (alerts.json.1 … .N)
    # http
    preset: str = "webhook"
    headers: dict[str, str] = field(default_factory=dict)  # e.g. Authorization: Bearer …
    batch_max: int = 500  # alerts per request
    batch_wait_s: float = 0.02  # send a partial batch after this long (alert-to-SIEM p99 ≤ 100 ms)
    gzip: bool = True
    timeout_s: float = 10.0
    # tls (http with https://, syslog with tls://)
    tls_verify: bool = True
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # syslog
    app_name: str = "sentinel"
    facility: int = 13  # log audit (RFC 5424 facility 13)
    # retry and spool (network sinks)
    retry_initial_s: float = 0.5
    retry_max_s: float = 60.0
    spool_max_bytes: int = 256 * 1024 * 1024  # on-disk bound; past it the oldest alerts are dropped, counted
    close_timeout_s: float = 5.0  # at shutdown, keep delivering this long; the rest stays in the spool

    def label(self) -> str:
        """The sink's name in logs, metrics and its spool directory; a URL's user:password@ and ?query are
        left out (they may hold credentials)."""
        if self.name:
            return self.name
        if not self.target:
            return self.kind
        target = self.target
        if self.kind == "http" and ("@" in target or "?" in target):
            parts = urlsplit(target)
            netloc = parts.netloc.rpartition("@")[2]
            target = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        return f"{self.kind}:{target}"
