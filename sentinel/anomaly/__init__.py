"""Host anomaly detection: rarity features, an isolation forest stored as plain arrays, a numpy scorer."""
