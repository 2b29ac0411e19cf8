"""The data model of a loaded ruleset: rules, and located diagnostics for rule authors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REFUSED = "refused: "  # how Rule.skipped starts for a rule that could not be compiled
PRIORITIES = ("emergency", "alert", "critical", "error", "warning", "notice", "informational", "debug")


@dataclass(slots=True)
class Diagnostic:
    """One error or warning about a rules file, located for the author (1-based line and column)."""

    severity: str  # "error" | "warning"
    code: str  # stable machine-readable code, e.g. "unknown-field"
    message: str
    file: str
    line: int = 0
    column: int = 0
    snippet: str = ""
    item: str | None = None  # rule/macro/list name when known
    refuses: str | None = None  # the rule this problem kept from loading (it is then a warning)

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "snippet": self.snippet,
            "item": self.item,
            "refuses": self.refuses,
        }


@dataclass(slots=True)
class Rule:
    """A compiled rule. ``event_types`` is None when the condition does not restrict them (matches all)."""

    name: str
    desc: str
    condition: str
    output: str
    priority: str  # lower-case, one of PRIORITIES ("info" normalised to "informational")
    tags: list[str] = field(default_factory=list)
    enabled: bool = True
    source: str = "syscall"
    file: str = ""
    line: int = 0
    event_types: frozenset[int] | None = None
    matcher: Any = None  # Callable[[EvalContext], bool], set by the compiler
    output_fields: tuple[str, ...] = ()  # the %fields of the output template, in order
    column: int = 0
    index: int = -1  # position in RuleSet.rules (load order)
    skipped: str | None = None  # why a rule that loaded is never evaluated (another source, unknown filter,
    # "refused: <why>" when it could not be compiled: see ``refused`` and ``refuse``)
    ir: Any = field(default=None, repr=False, compare=False)  # typed condition tree (compiler.py)
    template: Any = field(default=None, repr=False, compare=False)  # parsed output (compiler.OutputTemplate)
    # What a rule's own format says about it beyond Falco's keys; a Sigma rule: {"format": "sigma", "id",
    # "author", "references" [...], "license", "level", "status", "falsepositives" [...], "logsource" {...}}.
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    # A Sigma correlation (sentinel.rules.correlate.CorrelationSpec): no condition of its own, it counts its
    # base rules' matches; evaluated by the Correlator beside the matcher.
    correlation: Any = field(default=None, repr=False, compare=False)
    # ``aggregate_by:``: the rule fields whose values key its alerts' aggregation (empty: the default key,
    # program, parent, user and image; sentinel.alerts.behaviour).
    aggregate_by: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        """It could not be compiled (loaded only to be named, never evaluated)."""
        return (self.skipped or "").startswith(REFUSED)

    def refuse(self, reason: str) -> None:
        self.skipped = f"{REFUSED}{reason}"


def rule_format(rule: Rule) -> str:
    """The language a rule was written in: ``meta["format"]`` (``"sigma"``), else ``"falco"``."""
    fmt = rule.meta.get("format") if rule.meta else None
    return str(fmt) if fmt else "falco"
