"""What a Sigma rule or correlation says about itself, as sentinel keeps it: the priority its ``level`` maps
to and ``Rule.meta`` (id, title, author, references, licence, level, status, false positives), one builder
for both kinds so their alerts carry the same fields (DRL 1.1 wants the author in every alert)."""

from __future__ import annotations

from typing import Any

from sentinel.rules.sigma.locate import SigmaDoc

PRIORITY = {
    "informational": "informational",
    "low": "notice",
    "medium": "warning",
    "high": "error",
    "critical": "critical",
}
DEFAULT_LICENSE = "DRL-1.1"  # SigmaHQ's Detection Rule License, unless a rule names its own


def text(value: Any) -> str | None:
    """A pySigma enum (level, status) or plain value as lower-case text; None stays None."""
    if value is None:
        return None
    return str(getattr(value, "name", value)).lower()


def sigma_meta(doc: SigmaDoc, parsed: Any, **extra: Any) -> dict[str, Any]:
    """``Rule.meta`` of a parsed Sigma document (``parsed`` None: only what the YAML itself says)."""
    meta: dict[str, Any] = {"format": "sigma", "id": doc.scalar("id")}
    if parsed is not None:
        meta.update({
            "id": str(parsed.id) if parsed.id is not None else None,
            "title": parsed.title,
            "author": parsed.author,
            "references": list(parsed.references or []),
            "license": doc.scalar("license") or DEFAULT_LICENSE,
            "level": text(parsed.level),
            "status": text(parsed.status),
            "falsepositives": list(parsed.falsepositives or []),
        })  # fmt: skip
    meta.update(extra)
    return meta
