"""Compiling rules: each rule's condition, exceptions and output into typed trees, after every file is
collected (so rules see the final definition of what they use).

A rule that cannot be compiled is refused alone: its problems become warnings (``refuses`` names it), one
more warning at the rule says why, and the other rules load. A disabled rule's own problems are not reported.
"""

from __future__ import annotations

from sentinel.rules.collector import Collector, Item
from sentinel.rules.compiler import (
    MAX_IR_DEPTH,
    CondCompiler,
    IAnd,
    depth,
    event_names,
    event_types,
    on_demand_first,
    parse_output,
)
from sentinel.rules.exceptions import compile_exception
from sentinel.rules.model import Rule
from sentinel.rules.reader import Reporter
from sentinel.rules.resolver import Resolver, joined
from sentinel.rules.source import Locator, diag_at

MAX_AGGREGATE_BY = 8


class RuleCompiler:
    """Rules of a collection compiled against its resolver (a refused rule is kept, ``skipped`` says why)."""

    def __init__(self, rep: Reporter, col: Collector, res: Resolver, comp: CondCompiler) -> None:
        self.rep = rep
        self.col = col
        self.res = res
        self.comp = comp

    def finish(self) -> list[Rule]:
        """Compile every rule (and every macro, used or not), then report unused macros and lists.

        A rule that cannot be compiled is refused alone (its problems become warnings, one more names it and
        why) and the others load; a disabled rule's own problems are not reported, and it is compiled only so
        that configuration can switch it on. A macro that cannot be compiled refuses the rules that use it."""
        rules: list[Rule] = []
        for item in self.col.rule_order:
            self.rep.current = item.name
            mark = len(self.rep.diags)
            self.res.broken_used = []
            rule = self.compile_rule(item)
            if rule is None and item.valid and item.cond:
                rule = self.refuse(item, mark)
            if not item.enabled:  # quiet, but a macro's own problems are still the macro's
                self.rep.diags[mark:] = [d for d in self.rep.diags[mark:] if d.item != item.name]
            if rule is not None:
                rules.append(rule)
        self.rep.current = None
        for (kind, _), item in self.col.items.items():
            if kind == "macro":
                self.rep.current = item.name
                mark = len(self.rep.diags)
                self.res.macro_ir(item, item.loc, 0)
                for d in self.rep.diags[mark:]:
                    d.severity = "warning" if d.severity == "error" else d.severity
            elif kind == "list":
                self.res.list_values(item)
        for (kind, name), item in self.col.items.items():
            if kind in ("macro", "list") and not item.used:
                self.rep.diags.append(
                    diag_at(
                        item.loc,
                        0,
                        "warning",
                        f"unused-{kind}",
                        f"{kind} '{name}' is not used by any rule, macro or list",
                        name,
                    )
                )
        self.rep.current = None
        return rules

    def refuse(self, item: Item, mark: int) -> Rule:
        """The rule as loaded but never evaluated: its errors (and those of macros it compiled) turned into
        warnings, and one more warning at the rule that names it and the first reason."""
        causes = [d for d in self.rep.diags[mark:] if d.severity == "error"]
        for d in causes:
            d.severity, d.refuses = "warning", item.name
        if causes:
            first = causes[0]
            reason = (
                first.message
                if first.item in (None, item.name)
                else f"in macro '{first.item}': {first.message}"
            )
            if len(causes) > 1:
                reason += f" (and {len(causes) - 1} more problem{'s' if len(causes) > 2 else ''})"
        elif self.res.broken_used:
            broken = self.res.broken_used[0]
            reason = f"it uses macro '{broken.name}' ({broken.where}), which cannot be compiled"
        else:
            reason = "its condition cannot be compiled"
        if item.enabled:
            self.rep.diags.append(
                diag_at(
                    item.loc,
                    0,
                    "warning",
                    "rule-refused",
                    f"rule '{item.name}' is not loaded: {reason}; the other rules load",
                    item.name,
                )
            )
        rule = self.base_rule(item)
        rule.refuse(reason)
        return rule

    def base_rule(self, item: Item) -> Rule:
        text = joined(item.cond)[0] if item.cond else ""
        return Rule(
            name=item.name,
            desc=" ".join(f.text for f in item.desc).strip(),
            condition=text,
            output=" ".join(f.text for f in item.output).strip(),
            priority=item.priority,
            tags=list(item.tags),
            enabled=item.enabled,
            source=item.source,
            file=item.src.file,
            line=item.line,
            column=item.column,
        )

    def compile_rule(self, item: Item) -> Rule | None:
        """The compiled rule; None when it has errors (its other parts are still checked and reported)."""
        if not item.cond:
            return None
        text, jloc, seq_of = joined(item.cond)
        rule = self.base_rule(item)
        if item.source != "syscall":
            self.rep.diags.append(
                diag_at(
                    item.loc,
                    0,
                    "warning",
                    "unsupported-source",
                    f"rule '{item.name}' is for source '{item.source}': sentinel only evaluates "
                    "syscall rules, so it is skipped",
                    item.name,
                )
            )
            rule.skipped = f"source {item.source}"
            return rule
        mark = len(self.rep.diags)
        errors0, unknown0 = self.comp.errors, self.comp.unknown_fields
        ir = self.comp.condition(text, jloc, seq_of)
        exc_irs = [x for exc in item.exceptions if (x := compile_exception(self.comp, exc)) is not None]
        tpl_loc, tpl_text = self.output_loc(item)
        template = parse_output(tpl_text.rstrip(), tpl_loc, self.comp) if tpl_loc is not None else None
        if template is not None and template.parts and isinstance(template.parts[0], str):
            template.parts[0] = template.parts[0].lstrip()
        errors = self.comp.errors - errors0
        if errors:
            if item.skip_unknown and errors == self.comp.unknown_fields - unknown0:
                for d in self.rep.diags[mark:]:
                    if d.code == "unknown-field":
                        d.severity = "warning"
                        d.message += " (rule skipped: skip-if-unknown-filter is true)"
                rule.skipped = "unknown filter"
                return rule
            return None
        if ir is None or not item.valid:
            return None
        if depth(ir) > MAX_IR_DEPTH:
            self.comp.error(
                jloc,
                0,
                "syntax-error",
                f"condition nested more than {MAX_IR_DEPTH} levels deep once its macros are expanded",
            )
            return None
        costly = on_demand_first(text, ir)
        if costly is not None:
            self.rep.diags.append(
                diag_at(
                    jloc,
                    costly[0],
                    "warning",
                    "costly-check-first",
                    f"{costly[1]} is checked before cheaper checks: it may run the anomaly model on every "
                    "event that reaches it; put it after them",
                    item.name,
                )
            )
        if exc_irs:
            ir = IAnd([ir, *exc_irs])
        rule.ir = ir
        rule.template = template
        rule.output_fields = template.keys if template is not None else ()
        if item.aggregate_by and not self.aggregate_by(item, rule):
            return None
        names = event_names(ir)
        rule.event_types = event_types(names)
        if item.warn_evttypes:
            if rule.event_types is None:
                self.rep.diags.append(
                    diag_at(
                        jloc,
                        0,
                        "warning",
                        "no-event-type",
                        f"rule '{item.name}' does not restrict evt.type, so it is checked on "
                        "every event; start it with evt.type = ... or a macro such as "
                        "spawned_process",
                        item.name,
                    )
                )
            elif not rule.event_types:
                self.rep.diags.append(
                    diag_at(
                        jloc,
                        0,
                        "warning",
                        "event-type-not-captured",
                        f"rule '{item.name}' can never match: sentinel captures none of its "
                        "event types (exec, open, connect are captured)",
                        item.name,
                    )
                )
        return rule

    def aggregate_by(self, item: Item, rule: Rule) -> bool:
        """``aggregate_by:`` names fields (``proc.name``, ``fd.name``, ``container.image``): each must be one,
        at most once, and not too many (a key of every field would fold nothing)."""
        from sentinel.rules.ruleset import parse_field

        ok = True
        names: list[str] = []
        for text, loc in item.aggregate_by:
            name = text.strip()
            problem = None
            if name in names:
                problem = f"aggregate_by names {name!r} twice"
            else:
                try:
                    parse_field(name)
                except ValueError as exc:
                    problem = f"aggregate_by: {exc}".replace(" in the output prints <NA>", "")
            if problem is not None:
                self.rep.diags.append(diag_at(loc, 0, "error", "bad-aggregate-by", problem, item.name))
                ok = False
            names.append(name)
        if len(names) > MAX_AGGREGATE_BY:
            loc = item.aggregate_by[MAX_AGGREGATE_BY][1]
            message = f"aggregate_by names {len(names)} fields; at most {MAX_AGGREGATE_BY}"
            self.rep.diags.append(diag_at(loc, 0, "error", "bad-aggregate-by", message, item.name))
            ok = False
        rule.aggregate_by = tuple(names)
        return ok

    def output_loc(self, item: Item) -> tuple[Locator | None, str]:
        if not item.output:
            return None, ""
        text, loc, _ = joined(item.output)
        return loc, text
