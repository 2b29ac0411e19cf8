"""A loaded ruleset: ``match`` on the hot path, ``output`` and ``field_value`` for alerts."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable
from typing import Any

from sentinel.events import EventType
from sentinel.rules import runtime
from sentinel.rules.codegen import (
    INDEX_MIN_RULES,
    Pool,
    TypeMatcher,
    build_matcher,
    build_single,
    build_values,
    namespace,
)
from sentinel.rules.compiler import CondCompiler, FieldX, OutputTemplate, parse_output
from sentinel.rules.context import EvalContext
from sentinel.rules.model import Rule
from sentinel.rules.source import MarkLoc, SourceText

NA = "<NA>"


class RuleMatcher:
    """``Rule.matcher``: whether one rule matches a context (compiled per event type on first use)."""

    __slots__ = ("_fns", "_pool", "rule")

    def __init__(self, rule: Rule, pool: Pool) -> None:
        self.rule = rule
        self._pool = pool
        self._fns: dict[tuple[int, bool], Callable[[Any], bool]] = {}

    def __call__(self, ctx: EvalContext) -> bool:
        key = (int(ctx.ev.type), ctx.proc is not None)
        fn = self._fns.get(key)
        if fn is None:
            fn = self._fns[key] = build_single(self.rule, key[0], key[1], self._pool)
        return bool(fn(ctx))


class RuleSet:
    """Compiled rules. ``match`` returns every enabled rule that matches, in load order."""

    def __init__(self, rules: list[Rule], sha256: str = "", *, index_min: int = INDEX_MIN_RULES) -> None:
        self.rules = rules
        self.sha256 = sha256
        self.index_min = index_min
        for i, r in enumerate(rules):
            r.index = i
        self._pool = Pool(namespace())
        for r in rules:
            if r.ir is not None:
                r.matcher = RuleMatcher(r, self._pool)
        self.matchers: dict[int, TypeMatcher] = {
            int(t): build_matcher(rules, t, True, self._pool, index_min) for t in EventType
        }
        reached = {i for m in self.matchers.values() for i in (*m.sequential, *m.indexed)}
        # Rules no event type's matcher checks: what they read is never captured (container.image ...), or
        # sentinel captures none of their event types. Named at load (Falco users expect to hear of them).
        # A correlation has no condition: it fires when its base rules do (the Correlator counts them).
        self.never_fire: list[Rule] = [
            r for r in self.enabled_rules if r.index not in reached and r.correlation is None
        ]
        self._with_proc: dict[int, Callable[[Any], list[Rule]]] = {t: m.fn for t, m in self.matchers.items()}
        # Event types no enabled rule looks at (forks and exits, with the shipped rules): the detection
        # stream keeps the process table current from them and skips matching.
        self.silent_types: frozenset[EventType] = frozenset(
            t for t in EventType if not (self.matchers[int(t)].sequential or self.matchers[int(t)].indexed)
        )
        self._no_proc: dict[int, Callable[[Any], list[Rule]]] = {}
        self._values: dict[tuple[Any, ...], Callable[[Any], tuple]] = {}
        self._fields: dict[str, FieldX] = {}
        self._by_name = {r.name: r for r in rules}

    def match(self, ctx: EvalContext) -> list[Rule]:
        """Every enabled rule whose condition holds for ``ctx``, in load order."""
        if ctx.proc is not None:
            fn = self._with_proc.get(ctx.ev.type)
        else:
            fn = self._no_proc.get(ctx.ev.type)
            if fn is None:
                fn = self._build_no_proc(ctx.ev.type)
        return fn(ctx) if fn is not None else []

    def _build_no_proc(self, etype: int) -> Callable[[Any], list[Rule]] | None:
        try:
            t = EventType(etype)
        except ValueError:
            return None
        fn = self._no_proc[etype] = build_matcher(self.rules, t, False, self._pool, self.index_min).fn
        return fn

    def get(self, name: str) -> Rule | None:
        return self._by_name.get(name)

    def with_enabled(self, enable: Iterable[str] = (), disable: Iterable[str] = ()) -> RuleSet:
        """A copy with rules switched on or off by name or by ``tag:NAME`` (config-driven tuning without
        editing files); ``disable`` is applied after ``enable``. Unknown names raise KeyError. When the
        tuning switches any rule, the copy's sha256 (the ``rule.version`` of its alerts) covers it too."""
        enable, disable = list(enable), list(disable)
        rules = [dataclasses.replace(r, matcher=None) for r in self.rules]
        for selectors, value in ((enable, True), (disable, False)):
            for sel in selectors:
                hits = [
                    r for r in rules if (r.name == sel if not sel.startswith("tag:") else sel[4:] in r.tags)
                ]
                if not hits:
                    raise KeyError(f"no rule {'tagged ' + sel[4:] if sel.startswith('tag:') else sel!r}")
                for r in hits:
                    r.enabled = value
        # The version names the rules that run: the files' digest, and which rules the tuning switched.
        switched = sorted(f"{r.name}={int(r.enabled)}" for r, o in zip(rules, self.rules, strict=True)
                          if r.enabled != o.enabled)  # fmt: skip
        sha = self.sha256
        if switched and sha:
            sha = hashlib.sha256("\n".join([sha, *switched]).encode()).hexdigest()
        return RuleSet(rules, sha, index_min=self.index_min)

    @property
    def enabled_rules(self) -> list[Rule]:
        return [r for r in self.rules if r.enabled and r.skipped is None]

    @property
    def refused(self) -> list[Rule]:
        """Enabled rules that could not be compiled (each named by a ``rule-refused`` warning)."""
        return [r for r in self.rules if r.enabled and r.refused]

    # -- outputs --------------------------------------------------------------------------------------

    def output(self, rule: Rule, ctx: EvalContext) -> tuple[str, dict[str, Any]]:
        """The rule's output with %fields filled in (``<NA>`` when missing), and {field: value or None}."""
        tpl: OutputTemplate | None = rule.template
        if tpl is None:
            return rule.output, {}
        fields = tpl.fields
        values = self._value_fn(("out", rule.index), [fx for _, fx in fields], ctx)(ctx)
        by_key = {key: values[i] for i, (key, _) in enumerate(fields)}
        text: list[str] = []
        for part in tpl.parts:
            if isinstance(part, str):
                text.append(part)
            else:
                key, fx = part
                text.append(render(by_key[key], fx))
        return "".join(text), by_key

    def field_value(self, name: str, ctx: EvalContext) -> Any:
        """The value of a field (``proc.name``, ``proc.aname[2]``, ``tolower(fd.name)``) for ``ctx``; None
        when missing. Raises ValueError for a name that is not a field."""
        fx = self._fields.get(name)
        if fx is None:
            fx = self._fields[name] = parse_field(name)
        return self._value_fn(("field", name), [fx], ctx)(ctx)[0]

    def field_text(self, name: str, ctx: EvalContext) -> str:
        """A field's value as output text shows it."""
        fx = self._fields.get(name) or parse_field(name)
        return render(self.field_value(name, ctx), fx)

    def _value_fn(
        self, key: tuple[Any, ...], fields: list[FieldX], ctx: EvalContext
    ) -> Callable[[Any], tuple]:
        full = (*key, int(ctx.ev.type), ctx.proc is not None)
        fn = self._values.get(full)
        if fn is None:
            name = f"_values{len(self._values)}"
            fn = self._values[full] = build_values(fields, full[-2], full[-1], self._pool, name)
        return fn


def render(value: Any, fx: FieldX) -> str:
    """Output text of one value: ``<NA>`` when missing, true/false, lists comma-separated."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(render(v, fx) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    helper = fx.fdef.text if not fx.transforms else None
    if helper is not None and isinstance(value, int):
        fn: Callable[[int], str] = getattr(runtime, helper)
        return fn(value)
    return str(value)


class _FieldScope:
    def macro(self, name: str, seq: int, loc: Any, pos: int) -> None:
        return None

    def list_items(self, name: str, seq: int, loc: Any, pos: int) -> None:
        return None


def parse_field(name: str) -> FieldX:
    """A field expression given as text (API use); ValueError describes why it is not one."""
    problems: list[str] = []
    src = SourceText("<field>", name)

    def report(loc: Any, pos: int, severity: str, code: str, message: str) -> None:
        if severity == "error" or code == "unknown-field":  # an output prints an unknown field as <NA>
            problems.append(message)

    comp = CondCompiler(_FieldScope(), report)
    tpl = parse_output("%" + name if not name.startswith("%") else name, MarkLoc(src, 0), comp)
    if tpl is None or problems:
        raise ValueError(problems[0] if problems else f"not a field: {name!r}")
    fields = tpl.fields
    if len(fields) != 1 or len(tpl.parts) != 1:
        raise ValueError(f"not a field: {name!r}")
    return fields[0][1]
