"""Sigma documents to rules: pySigma parses, :mod:`.translate` builds the typed tree, and the result is an
ordinary :class:`Rule` (event types, priority, output, tags) with the Sigma metadata in ``Rule.meta``.

As for Falco rules, a Sigma rule that cannot be evaluated is refused alone: its problems become warnings
located in the Sigma file (``refuses`` names it) plus one ``rule-refused`` warning, and the other rules
load. pySigma is an optional extra (``sentinel[sigma]``); without it every Sigma rule of a file is refused
with one warning saying how to install it.
"""

from __future__ import annotations

from typing import Any

from sentinel.rules.compiler import CondCompiler, IAnd, IOr, event_names, event_types, parse_output
from sentinel.rules.model import Rule
from sentinel.rules.reader import Reporter
from sentinel.rules.sigma import correlation as corr
from sentinel.rules.sigma.detect import sigma_kind
from sentinel.rules.sigma.locate import SigmaDoc
from sentinel.rules.sigma.mapping import LOGSOURCES, Logsource, logsource_for
from sentinel.rules.sigma.meta import PRIORITY, sigma_meta
from sentinel.rules.sigma.meta import text as enum_text
from sentinel.rules.sigma.translate import Translator
from sentinel.rules.source import SourceText, diag_at

INSTALL_HINT = "pip install 'sentinel[sigma]' (or pip install 'pysigma==2.0.1')"


def pysigma() -> bool:
    try:
        import sigma.rule  # noqa: F401
    except ImportError:
        return False
    return True


class SigmaFrontEnd:
    """Sigma documents of every file, as rules in load order; ``rules`` holds (load position, rule)."""

    def __init__(self, rep: Reporter, comp: CondCompiler) -> None:
        self.rep = rep
        self.comp = comp
        self.rules: list[tuple[int, Rule]] = []
        self.shapes: dict[str, Any] = {}
        self.available: bool | None = None  # imported on the first Sigma document: Falco-only loads skip it
        self.warned: set[str] = set()
        self.parsed: list[tuple[Any, Rule]] = []  # (pySigma rule, its Rule): what correlations refer to
        self.pending: list[corr.Pending] = []  # correlations, resolved once every file is read

    def add(self, src: SourceText, node: Any, seq: int) -> None:
        doc = SigmaDoc(src, node)
        name = doc.scalar("title") or f"Sigma rule at {src.file}:{src.position(node.start_mark.index)[0]}"
        self.rep.current = name
        mark = len(self.rep.diags)
        try:
            if sigma_kind(node) == "correlation" and self.ready(doc, name):
                rule = self.correlation(doc, name)
            else:
                rule = self.rule(doc, name)
        except Exception as exc:  # a pySigma surprise refuses this rule, not the whole load
            self.comp.error(doc.start(), 0, "sigma-error", f"Sigma: cannot translate this rule: {exc!r}")
            rule = self.refuse(doc, name, mark, None)
        finally:
            self.rep.current = None
        self.rules.append((seq, rule))

    def ready(self, doc: SigmaDoc, name: str) -> bool:
        """Whether pySigma is there (imported on the first Sigma document); one warning per file if not."""
        if self.available is None:
            self.available = pysigma()
        if not self.available and doc.src.file not in self.warned:
            self.warned.add(doc.src.file)
            self.comp.error(
                doc.start(),
                0,
                "sigma-unavailable",
                f"Sigma rules need pySigma, which is not installed: {INSTALL_HINT}",
            )
        return bool(self.available)

    def correlation(self, doc: SigmaDoc, name: str) -> Rule:
        """Parsed now, resolved by :meth:`finish` (its base rules may be in files read later)."""
        mark = len(self.rep.diags)
        parsed, errors = corr.parse(doc)
        rule = corr.correlation_rule(doc, name, parsed)
        for loc, text in errors:
            self.comp.error(loc, 0, "sigma-error", f"Sigma correlation: {text}")
        if parsed is None:
            return self.refuse(doc, name, mark, None, rule)
        self.pending.append(corr.Pending(doc, name, rule, parsed))
        return rule

    def finish(self) -> None:
        """Resolve every correlation against every Sigma rule loaded; one that cannot be evaluated is
        refused alone, located in its file."""
        if not self.pending:
            return
        resolver = corr.Resolver(self, self.parsed, self.pending)
        for item in self.pending:
            self.rep.current = item.name
            mark = len(self.rep.diags)
            try:
                item.rule.correlation = resolver.spec(item)
            except corr.Refused as exc:
                self.comp.error(exc.loc, 0, "sigma-correlation", str(exc))
                self.refuse(item.doc, item.name, mark, None, item.rule)
            except Exception as exc:  # a pySigma surprise refuses this correlation, not the load
                self.comp.error(item.doc.start(), 0, "sigma-error", f"Sigma: cannot resolve: {exc!r}")
                self.refuse(item.doc, item.name, mark, None, item.rule)
            finally:
                self.rep.current = None
        self.pending = []

    def rule(self, doc: SigmaDoc, name: str) -> Rule:
        mark = len(self.rep.diags)
        if not self.ready(doc, name):
            return self.refuse(doc, name, mark, "pySigma is not installed")
        from sigma.rule import SigmaRule

        try:
            parsed = SigmaRule.from_yaml(doc.text, collect_errors=True)
            errors = list(parsed.errors)
        except Exception as exc:  # pySigma raises its own errors and sometimes plain ones
            parsed, errors = None, [exc]
        for err in errors:
            text = str(getattr(err, "args", [err])[0] if getattr(err, "args", None) else err)
            self.comp.error(doc.guess(text), 0, "sigma-error", f"Sigma: {text}")
        if parsed is None or errors:
            return self.refuse(doc, name, mark, None)
        ls = parsed.logsource
        source = logsource_for(ls.category, ls.product, ls.service)
        base = self.base(doc, name, parsed)
        self.parsed.append((parsed, base))
        if source is None:
            what = ", ".join(f"{k}: {v}" for k, v in _logsource(parsed).items()) or "empty"
            self.rep.diags.append(
                diag_at(
                    doc.key("logsource"),
                    0,
                    "warning",
                    "unsupported-logsource",
                    f"unsupported logsource ({what}) in Sigma rule '{name}': sentinel evaluates "
                    f"product linux with category {', '.join(LOGSOURCES)}; the rule is skipped",
                    name,
                )
            )
            base.skipped = "unsupported logsource"
            return base
        errors0 = self.comp.errors
        ir = self.translate(doc, source, parsed)
        template = parse_output(template_text(name, source), doc.start(), self.comp)
        if self.comp.errors != errors0 or ir is None:
            return self.refuse(doc, name, mark, None, base)
        base.ir = ir
        base.template = template
        base.output = template_text(name, source)
        base.output_fields = template.keys if template is not None else ()
        base.event_types = event_types(event_names(ir))
        return base

    def translate(self, doc: SigmaDoc, source: Logsource, parsed: Any) -> Any:
        tr = Translator(self.comp, doc, source, parsed)
        conds = []
        for cond in parsed.detection.parsed_condition:
            try:
                tree = cond.parsed  # re-parsed on every access: take it once
            except Exception as exc:
                self.comp.error(doc.guess(f"'condition' {exc}"), 0, "sigma-error", f"Sigma condition: {exc}")
                return None
            conds.append(tr.condition(tree))
        if not conds:
            return None
        body = conds[0] if len(conds) == 1 else IOr(conds)  # a list of conditions: any of them
        return IAnd([self.shape(source, doc), body])

    def shape(self, source: Logsource, doc: SigmaDoc) -> Any:
        """The logsource's event shape, compiled once and shared (matchers then compute it once)."""
        ir = self.shapes.get(source.category)
        if ir is None:
            ir = self.comp.condition(source.shape, doc.key("logsource"), lambda _pos: 0)
            self.shapes[source.category] = ir
        return ir

    def base(self, doc: SigmaDoc, name: str, parsed: Any) -> Rule:
        line, column = doc.src.position(doc.start().at)
        level = enum_text(parsed.level)
        return Rule(
            name=name,
            desc=(parsed.description or name).strip(),
            condition=" or ".join(parsed.detection.condition),
            output="",
            priority=PRIORITY.get(level or "", "warning"),
            tags=[str(t) for t in parsed.tags],
            file=doc.src.file,
            line=line,
            column=column,
            meta=sigma_meta(doc, parsed, logsource=_logsource(parsed)),
        )

    def refuse(
        self, doc: SigmaDoc, name: str, mark: int, reason: str | None, rule: Rule | None = None
    ) -> Rule:
        """The rule as loaded but never evaluated: its errors become warnings, one more says why."""
        causes = [d for d in self.rep.diags[mark:] if d.severity == "error"]
        for d in causes:
            d.severity, d.refuses = "warning", name
        if reason is None:
            reason = causes[0].message if causes else "it cannot be translated"
            if len(causes) > 1:
                reason += f" (and {len(causes) - 1} more problem{'s' if len(causes) > 2 else ''})"
        self.rep.diags.append(
            diag_at(
                doc.start(),
                0,
                "warning",
                "rule-refused",
                f"rule '{name}' is not loaded: {reason}; the other rules load",
                name,
            )
        )
        if rule is None:
            line, column = doc.src.position(doc.start().at)
            rule = Rule(name, "", "", "", "warning", file=doc.src.file, line=line, column=column,
                        meta={"format": "sigma", "id": doc.scalar("id")})  # fmt: skip
        rule.ir = rule.template = None
        rule.refuse(reason)
        return rule


def template_text(name: str, source: Logsource) -> str:
    return f"Sigma: {name.replace('%', '%%')} | {source.output}"


def _logsource(parsed: Any) -> dict[str, str]:
    ls = parsed.logsource
    keys = ("category", "product", "service", "definition")
    return {k: getattr(ls, k) for k in keys if getattr(ls, k, None) is not None}
