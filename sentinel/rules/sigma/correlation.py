"""Sigma correlation documents to rules: parsed by pySigma when read, resolved once every file is loaded
(a base rule may come later or from another file), then checked against what sentinel can count.

A correlation that cannot be evaluated is refused alone, located in its file: an unknown or refused base
rule, a group-by or value_count field with no sentinel equivalent in a base rule's logsource, a type or
condition the engine does not evaluate. Its :class:`~sentinel.rules.correlate.CorrelationSpec` names the
base :class:`Rule` objects and, per base rule, the sentinel fields its group-by reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from sentinel.rules.correlate import (
    ALL,
    MAX_THRESHOLD,
    OPS,
    TEMPORAL,
    TEMPORAL_ORDERED,
    THRESHOLD_OPS,
    VALUE_COUNT,
    CorrelationSpec,
)
from sentinel.rules.model import Rule
from sentinel.rules.sigma.locate import SigmaDoc
from sentinel.rules.sigma.mapping import LOGSOURCES, UNMAPPED_WHY
from sentinel.rules.sigma.meta import PRIORITY, sigma_meta, text
from sentinel.rules.source import MarkLoc

if TYPE_CHECKING:
    from sentinel.rules.sigma.frontend import SigmaFrontEnd

TYPES = ("event_count", "value_count", TEMPORAL, TEMPORAL_ORDERED)


class Refused(Exception):
    """Why a correlation cannot be evaluated, and where."""

    def __init__(self, loc: MarkLoc, message: str) -> None:
        super().__init__(message)
        self.loc = loc


@dataclass(slots=True)
class Pending:
    """A correlation read but not yet resolved (its rule is already in load order, to be filled in)."""

    doc: SigmaDoc
    name: str
    rule: Rule
    parsed: Any  # SigmaCorrelationRule, None when pySigma refused it (its errors are reported already)


def sub_key(doc: SigmaDoc, *path: str) -> MarkLoc:
    """A key inside ``correlation`` (``rules``, ``group-by``, ``condition`` ...) or a value in a list under
    it; the deepest one found, else the ``correlation`` key."""
    pair = doc.keys.get("correlation")
    if pair is None:
        return doc.start()
    found, node = pair[0], pair[1]
    for step in path:
        nxt = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == step:
                    nxt = (k, v)
                    break
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                if isinstance(item, yaml.ScalarNode) and item.value == step:
                    nxt = (item, item)
                    break
        if nxt is None:
            break
        found, node = nxt
    return doc.at(found)


def has_key(doc: SigmaDoc, name: str) -> bool:
    pair = doc.keys.get("correlation")
    return (
        pair is not None
        and isinstance(pair[1], yaml.MappingNode)
        and any(isinstance(k, yaml.ScalarNode) and k.value == name for k, _ in pair[1].value)
    )


def parse(doc: SigmaDoc) -> tuple[Any, list[tuple[MarkLoc, str]]]:
    """pySigma's SigmaCorrelationRule for the document, and its errors located in the correlation."""
    from sigma.correlations import SigmaCorrelationRule

    try:
        parsed = SigmaCorrelationRule.from_yaml(doc.text, collect_errors=True)
        errors: list[Any] = list(parsed.errors)
    except Exception as exc:  # pySigma raises its own errors and sometimes plain ones
        parsed, errors = None, [exc]
    located = []
    for err in errors:
        text = str(err.args[0]) if getattr(err, "args", None) else str(err)
        located.append((_guess(doc, text), text))
    return (None if errors else parsed), located


def _guess(doc: SigmaDoc, text: str) -> MarkLoc:
    low = text.lower()
    for key in ("group-by", "timespan", "condition", "generate", "aliases", "rules", "type"):
        if key in low or key.replace("-", " ") in low or key.replace("-", "_") in low:
            return sub_key(doc, key)
    return sub_key(doc)


class Resolver:
    """Resolves every pending correlation against every Sigma rule of the load, with pySigma's lookup (a
    UUID first, else a ``name``)."""

    def __init__(self, fe: SigmaFrontEnd, parsed: list[tuple[Any, Rule]], pending: list[Pending]) -> None:
        from sigma.collection import SigmaCollection

        self.fe = fe
        self.rule_of = {id(p): r for p, r in parsed}
        self.corr_of = {id(p.parsed): p.rule for p in pending if p.parsed is not None}
        everything = [p for p, _ in parsed] + [p.parsed for p in pending if p.parsed is not None]
        self.collection = SigmaCollection(everything, resolve_references=False)

    def spec(self, item: Pending) -> CorrelationSpec:
        """The correlation's spec; raises :class:`Refused`."""
        from sigma.exceptions import SigmaRuleNotFoundError

        doc, corr = item.doc, item.parsed
        kind = str(getattr(corr.type, "name", corr.type)).lower()
        if kind not in TYPES:
            raise Refused(sub_key(doc, "type"), f"correlation type '{kind}' is not evaluated (sentinel "
                          f"evaluates {', '.join(TYPES)})")  # fmt: skip
        if corr.rules is None:
            raise Refused(sub_key(doc, "condition"), "a correlation without a rules list (an extended "
                          "condition) is not evaluated")  # fmt: skip
        try:
            corr.resolve_rule_references(self.collection)
            corr.aliases.resolve_rule_references(self.collection)
        except SigmaRuleNotFoundError as exc:
            ref = _quoted(str(exc))
            raise Refused(sub_key(doc, "rules", ref) if ref else sub_key(doc, "rules"),
                          f"correlation refers to an unknown rule{f' {ref!r}' if ref else ''} (by id or "
                          "name, in none of the files loaded)") from None  # fmt: skip
        bases: list[tuple[Any, Rule]] = []
        for ref in corr.rules:
            base = self.rule_of.get(id(ref.rule))
            where = sub_key(doc, "rules", ref.reference)
            if base is None:
                why = "another correlation (correlations of correlations are not evaluated)"
                raise Refused(where, f"base rule {ref.reference!r} is {why}")
            if base.skipped is not None or base.ir is None:
                raise Refused(where, f"base rule {ref.reference!r} ('{base.name}') is not evaluated: "
                              f"{base.skipped or 'it did not load'}")  # fmt: skip
            bases.append((ref.rule, base))
        aliases = {a.alias: {id(r.rule): f for r, f in a.mapping.items()} for a in corr.aliases}
        group_by = tuple(corr.group_by or ())
        group_fields = tuple(
            tuple(self._field(doc, aliases, g, p, b, ("group-by", g)) for g in group_by) for p, b in bases
        )
        op, count, value_name = self._condition(doc, kind, corr, len(bases))
        value_fields: tuple[str, ...] = ()
        if value_name is not None:
            value_fields = tuple(
                self._field(doc, aliases, value_name, p, b, ("condition", "field")) for p, b in bases
            )
        return CorrelationSpec(
            kind=kind, bases=tuple(b for _, b in bases), group_by=group_by, group_fields=group_fields,
            value_name=value_name, value_fields=value_fields, timespan_s=int(corr.timespan.seconds), op=op,
            count=count, generate=bool(corr.generate),
        )  # fmt: skip

    def _field(
        self, doc: SigmaDoc, aliases: dict[str, dict[int, str]], name: str, parsed: Any, base: Rule,
        where: tuple[str, ...],
    ) -> str:  # fmt: skip
        """The sentinel field a Sigma field (or alias) means in ``base``'s logsource."""
        sigma_name = aliases.get(name, {}).get(id(parsed), name)
        category = (base.meta.get("logsource") or {}).get("category")
        source = LOGSOURCES.get(str(category))
        fields = source.fields if source is not None else {}
        mapped = fields.get(sigma_name)
        if mapped:
            return mapped[0]  # Image: the resolved path
        if any(sigma_name in m for m in fields.values()):
            return sigma_name  # already a sentinel field (user.name)
        why = UNMAPPED_WHY.get(sigma_name, f"no sentinel field for it in logsource {category}")
        raise Refused(sub_key(doc, *where), f"field '{sigma_name}' of base rule '{base.name}' cannot be "
                      f"grouped or counted: {why}")  # fmt: skip

    def _condition(self, doc: SigmaDoc, kind: str, corr: Any, n_rules: int) -> tuple[str, int, str | None]:
        from sigma.correlations import SigmaCorrelationCondition

        cond = corr.condition
        where = sub_key(doc, "condition")
        if not isinstance(cond, SigmaCorrelationCondition):
            raise Refused(where, "an extended (boolean) correlation condition is not evaluated")
        op = cond.op.name.lower()
        count = cond.count
        if op not in OPS:
            raise Refused(where, f"condition operator '{op}' is not evaluated")
        if not float(count).is_integer() or count < 0 or count > MAX_THRESHOLD:
            raise Refused(where, f"condition count {count} is not evaluated: a whole number from 0 to "
                          f"{MAX_THRESHOLD} (each group keeps that many entries)")  # fmt: skip
        explicit = has_key(doc, "condition")
        value_name = None
        if kind == VALUE_COUNT:
            ref = cond.fieldref
            if isinstance(ref, list):
                if len(ref) != 1:
                    raise Refused(sub_key(doc, "condition", "field"), "value_count counts one field")
                ref = ref[0]
            value_name = str(ref)
        elif kind == TEMPORAL:
            if not explicit:
                return ALL, n_rules, None
            if op not in THRESHOLD_OPS:
                raise Refused(where, "a temporal condition counts the rules seen in the window: only gte/gt")
        elif kind == TEMPORAL_ORDERED:
            if explicit and not (op == "gte" and int(count) == n_rules):
                raise Refused(where, "temporal_ordered needs every rule, in order: no other condition")
            return ALL, n_rules, None
        return op, int(count), value_name


def _quoted(text: str) -> str | None:
    start = text.find("'")
    end = text.find("'", start + 1)
    return text[start + 1 : end] if start >= 0 and end > start else None


def correlation_rule(doc: SigmaDoc, name: str, parsed: Any) -> Rule:
    """The correlation as a rule: title, level → priority, tags and Sigma meta as any Sigma rule."""
    line, column = doc.src.position(doc.start().at)
    level = text(parsed.level) if parsed is not None else None
    kind = {"type": str(getattr(parsed.type, "name", parsed.type)).lower()} if parsed is not None else None
    meta = sigma_meta(doc, parsed, **({"correlation": kind} if kind else {}))
    return Rule(
        name=name,
        desc=((parsed.description if parsed is not None else None) or name).strip(),
        condition="",
        output=f"Sigma correlation: {name}",
        priority=PRIORITY.get(level or "", "warning"),
        tags=[str(t) for t in parsed.tags] if parsed is not None else [],
        file=doc.src.file,
        line=line,
        column=column,
        meta=meta,
    )
