"""What a detection produces before it is rendered: the rule, the event it fired on, and its output.

An alert keeps the evaluation context rather than a rendered document, so rendering (ECS or Falco) happens
once, when the alert is written, and aggregation can count repeats without rendering them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentinel.rules.context import EvalContext
    from sentinel.rules.model import Rule

RULESET = "sentinel"
INTERNAL_RULESET = "sentinel-internal"
ML_RULESET = "sentinel-ml"


@dataclass(slots=True)
class Alert:
    """One alert, or the summary of a rule's repeats for one process lineage (``count`` > 0, ``aggregated``).

    ``ts_ns`` is the kernel (CLOCK_BOOTTIME) time of the event it fired on: the last repeat for a summary.
    ``ctx`` is None for internal alerts, which are about the agent rather than a monitored process.
    """

    rule: Rule
    ctx: EvalContext | None
    output: str
    output_fields: dict[str, Any]
    ts_ns: int
    ruleset: str = RULESET
    ruleset_version: str = ""
    lineage: tuple[Any, ...] = ()  # aggregation key beside the rule name (sentinel.alerts.behaviour)
    aggregated: bool = False
    count: int = 1  # for a summary: the repeats it stands for
    first_ns: int = 0  # for a summary: kernel times of the first and last repeat
    last_ns: int = 0
    # For a summary: a capped sample of the repeats' distinct values per field (executables, command lines),
    # the repeats not in the sample per field, and whether it is the per-rule rate limit's summary.
    distinct: dict[str, list[str]] = field(default_factory=dict)
    distinct_more: dict[str, int] = field(default_factory=dict)
    rate_limited: bool = False
    sum_fields: tuple[str, ...] = ()  # numeric output fields that add up across repeats (internal alerts)
    extra: dict[str, Any] = field(default_factory=dict)  # rendered under sentinel.* as is
    # Called once just before the alert is rendered, to fill output/extra that cost too much to build for
    # alerts aggregation folds away (the anomaly model's explanations).
    finalize: Callable[[Alert], None] | None = field(default=None, repr=False, compare=False)

    @property
    def internal(self) -> bool:
        return self.ruleset == INTERNAL_RULESET
