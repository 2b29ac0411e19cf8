"""sentinel: a Linux host security agent (eBPF sensor, YAML rules, anomaly model, JSON alerts)."""

__version__ = "0.1.0"
