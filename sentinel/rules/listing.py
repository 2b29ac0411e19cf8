"""``sentinel rules list``: every rule a ruleset loaded, with its format (falco or sigma), whether it runs,
its priority and where it is defined; for a Sigma rule also its id and level.

Status, one of: ``enabled`` (evaluated), ``disabled`` (``enabled: false`` or tuned off), ``refused`` (it could
not be compiled; a ``rule-refused`` warning says why), ``never-fires`` (enabled, but it needs what sentinel
does not capture), ``skipped`` (another ``source``, or a reason in ``skipped``).
"""

from __future__ import annotations

from typing import Any

from sentinel.rules.model import Rule, rule_format
from sentinel.rules.ruleset import RuleSet
from sentinel.rules.validate import safe

FALCO = "falco"


def rule_status(rule: Rule, never_fire: set[int]) -> str:
    if not rule.enabled:
        return "disabled"
    if rule.refused:
        return "refused"
    if rule.skipped:
        return "skipped"
    if rule.index in never_fire:
        return "never-fires"
    return "enabled"


def rule_entries(rs: RuleSet) -> list[dict[str, Any]]:
    """One dict per rule, in load order (what ``rules list --json`` prints under ``rules``)."""
    never = {r.index for r in rs.never_fire}
    out: list[dict[str, Any]] = []
    for r in rs.rules:
        entry: dict[str, Any] = {
            "name": r.name,
            "format": rule_format(r),
            "status": rule_status(r, never),
            "enabled": r.enabled,
            "priority": r.priority,
            "source": r.source,
            "file": r.file,
            "line": r.line,
            "tags": list(r.tags),
            "skipped": r.skipped,
            "meta": dict(r.meta),
        }
        out.append(entry)
    return out


def list_doc(rs: RuleSet) -> dict[str, Any]:
    entries = rule_entries(rs)
    formats: dict[str, int] = {}
    for e in entries:
        formats[e["format"]] = formats.get(e["format"], 0) + 1
    return {
        "rules": entries,
        "count": len(entries),
        "enabled": len(rs.enabled_rules),
        "formats": formats,
        "sha256": rs.sha256,
    }


def _detail(entry: dict[str, Any]) -> str:
    """``sigma id …, level …`` for a rule of another format; "" for Falco rules."""
    if entry["format"] == FALCO:
        return ""
    meta = entry["meta"]
    parts = [f"{entry['format']} id {meta.get('id') or '?'}"]
    if meta.get("level"):
        parts.append(f"level {meta['level']}")
    return "  (" + ", ".join(safe(str(p)) for p in parts) + ")"


def _name(entry: dict[str, Any]) -> str:
    return safe(entry["name"]) + _detail(entry)


def format_list(doc: dict[str, Any]) -> str:
    """One line per rule: format, status, priority, file:line, name (last, so the columns line up), and for a
    Sigma rule its id and level; then a summary line."""
    rows = [
        (e["format"], e["status"], e["priority"], f"{safe(e['file'])}:{e['line']}", _name(e))
        for e in doc["rules"]
    ]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows]
    by_format = ", ".join(f"{n} {fmt}" for fmt, n in sorted(doc["formats"].items()))
    lines.append(
        f"{doc['count']} rules ({doc['enabled']} enabled{'; ' + by_format if by_format else ''}); "
        f"sha256 {doc['sha256']}"
    )
    return "\n".join(lines)
