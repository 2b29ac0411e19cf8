"""Host anomaly detection: behaviour profiles, novelty features, isolation forests as plain arrays."""
