"""The rule engine: Falco-compatible YAML rules compiled into fast per-event-type matchers.

``load_rules(paths)`` loads files and directories in order and returns a :class:`LoadResult` with a
:class:`RuleSet` (``match``, ``output``, ``field_value``) when no file has an error, and located diagnostics.
"""

from sentinel.rules.context import EvalContext
from sentinel.rules.loader import LoadResult, load_rules, load_text
from sentinel.rules.model import PRIORITIES, Diagnostic, Rule
from sentinel.rules.ruleset import RuleSet

__all__ = [
    "PRIORITIES",
    "Diagnostic",
    "EvalContext",
    "LoadResult",
    "Rule",
    "RuleSet",
    "load_rules",
    "load_text",
]
