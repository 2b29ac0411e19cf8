"""A parsed Sigma detection as sentinel's typed condition tree (``IAnd/IOr/INot/ICheck``), with no condition
text in between, so Sigma's own semantics hold exactly:

- strings are case-insensitive (``cased`` makes them exact); ``*``/``?`` wildcards (``\\*``, ``\\?``, ``\\\\``
  escape them, already resolved by pySigma) become contains/startswith/endswith/equality, or an anchored glob
  when a wildcard sits inside the value;
- ``re`` is an unanchored search with its ``i``/``m``/``s`` flags, case-sensitive otherwise;
- ``cidr`` is a network test on an IP field; ``lt``/``lte``/``gt``/``gte`` numeric comparisons;
- ``exists``, a null value (the field is missing), ``fieldref`` (two fields compared, case-insensitively);
- ``windash``/``base64offset`` expansions are ORed; ``all`` ANDs the values (pySigma builds both);
- keywords (values with no field) search the logsource's text fields (the command line, the file name) for
  the value anywhere in them.

Every problem is reported at the Sigma file's detection and field key and the leaf becomes ``false``; the
front end refuses the rule when any was reported.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from sentinel.rules.compiler import CondCompiler, FieldX, IAnd, ICheck, IConst, INot, IOr
from sentinel.rules.fields import BOOL, FIELDS, FLOAT, INT, IP, IPNET, STRING
from sentinel.rules.sigma.locate import SigmaDoc
from sentinel.rules.sigma.mapping import INITIATED, INITIATED_EVENTS, UNMAPPED_WHY, Logsource
from sentinel.rules.source import MarkLoc

_COMPARE = {"LT": "<", "LTE": "<=", "GT": ">", "GTE": ">="}


def _or(items: list[Any]) -> Any:
    return items[0] if len(items) == 1 else IOr(items)


class Translator:
    """One rule's detection, translated against one logsource's field table."""

    def __init__(self, comp: CondCompiler, doc: SigmaDoc, source: Logsource, rule: Any) -> None:
        self.comp = comp
        self.doc = doc
        self.source = source
        self.names: dict[int, str] = {}  # id(SigmaDetection) -> its search identifier
        for name, det in rule.detection.detections.items():
            stack = [det]
            while stack:
                d = stack.pop()
                self.names[id(d)] = name
                stack.extend(i for i in getattr(d, "detection_items", ()) if hasattr(i, "detection_items"))
        self.fields: dict[str, FieldX] = {}
        self.reported: set[tuple[str, int]] = set()  # (field, key position): one message per key

    # -- tree ------------------------------------------------------------------------------------------

    def condition(self, node: Any) -> Any:
        """A pySigma condition node (after ``1 of``/``all of``/``them`` expansion) as a typed tree."""
        from sigma.conditions import (
            ConditionAND,
            ConditionFieldEqualsValueExpression,
            ConditionNOT,
            ConditionOR,
            ConditionValueExpression,
        )

        if isinstance(node, ConditionAND):
            return IAnd([self.condition(a) for a in node.args])
        if isinstance(node, ConditionOR):
            return IOr([self.condition(a) for a in node.args])
        if isinstance(node, ConditionNOT):
            return INot(self.condition(node.args[0]))
        if isinstance(node, ConditionFieldEqualsValueExpression):
            return self.field_leaf(node.field, node.value, self.where(node, node.field))
        if isinstance(node, ConditionValueExpression):
            return self.keyword(node.value, self.where(node, None))
        return self.fail(self.doc.detection(None), "sigma-unsupported", f"unsupported condition {node!r}")

    def where(self, node: Any, field: str | None) -> MarkLoc:
        """The detection key of a leaf: up its parent chain to the detection it came from."""
        p = node
        for _ in range(64):
            p = getattr(p, "parent", None)
            if p is None:
                break
            name = self.names.get(id(p))
            if name is not None:
                return self.doc.field(name, field)
        return self.doc.field(None, field)

    def fail(self, at: MarkLoc, code: str, message: str) -> IConst:
        self.comp.error(at, 0, code, message)
        return IConst(False)

    # -- fields ----------------------------------------------------------------------------------------

    def fx(self, name: str, lower: bool = False) -> FieldX:
        fdef = FIELDS[name]
        if lower:
            return FieldX(fdef, None, ("tolower",), STRING, f"tolower({name})")
        fx = self.fields.get(name)
        if fx is None:
            fx = self.fields[name] = FieldX(fdef, None, (), fdef.type, name)
        return fx

    def targets(self, field: str, at: MarkLoc) -> tuple[str, ...] | None:
        got = self.source.fields.get(field)
        if got is None and (field, at.at) not in self.reported:
            self.reported.add((field, at.at))
            known = sorted(self.source.fields)
            close = difflib.get_close_matches(field, known, n=1, cutoff=0.8)
            why = UNMAPPED_WHY.get(field)
            hint = (
                f": {why}"
                if why
                else f"; did you mean {close[0]}?"
                if close
                else f" (it knows: {', '.join(known)})"
            )
            self.fail(
                at,
                "sigma-unmapped-field",
                f"Sigma field '{field}' has no sentinel equivalent for logsource "
                f"{self.source.category}{hint}",
            )
        return got

    def field_leaf(self, field: str, value: Any, at: MarkLoc) -> Any:
        if field == INITIATED and self.source.category == "network_connection":
            return self.initiated(value, at)
        names = self.targets(field, at)
        if names is None:
            return IConst(False)
        from sigma.types import SigmaFieldReference

        if isinstance(value, SigmaFieldReference):
            return self.fieldref(names, value, at)
        return _or([self.value(n, value, at, field) for n in names])

    def initiated(self, value: Any, at: MarkLoc) -> Any:
        text = str(getattr(value, "boolean", value)).strip().lower()
        events = INITIATED_EVENTS.get(text)
        if events is None:
            return self.fail(at, "sigma-bad-value", f"Initiated is 'true' or 'false', not {text!r}")
        evt = self.fx("evt.type")
        check = self.comp.typed_check(
            evt, "in", (at, 0), [(e, True, at, 0) for e in events], None, 0, (at, 0)
        )
        return check if check is not None else IConst(False)

    def fieldref(self, names: tuple[str, ...], ref: Any, at: MarkLoc) -> Any:
        others = self.targets(ref.field, at)
        if others is None:
            return IConst(False)
        op = "startswith" if ref.starts_with else "endswith" if ref.ends_with else "="
        out = []
        for a in names:
            for b in others:
                fa, fb = FIELDS[a], FIELDS[b]
                if fa.type == STRING and fb.type == STRING:
                    out.append(ICheck(self.fx(a, True), op, rhs=self.fx(b, True)))
                elif fa.type == fb.type and op == "=":
                    out.append(ICheck(self.fx(a), op, rhs=self.fx(b)))
                else:
                    return self.fail(
                        at, "sigma-bad-value", f"cannot compare {a} ({fa.type}) with {b} ({fb.type})"
                    )
        return _or(out)

    def keyword(self, value: Any, at: MarkLoc) -> Any:
        from sigma.types import SigmaString, SpecialChars

        if not self.source.keywords:
            return self.fail(
                at,
                "sigma-keywords",
                "keywords (values without a field) have no text to search on logsource "
                f"{self.source.category}",
            )
        if isinstance(value, SigmaString):  # anywhere in the text: *value*
            parts = list(value.s)
            if not parts or parts[0] != SpecialChars.WILDCARD_MULTI:
                parts.insert(0, SpecialChars.WILDCARD_MULTI)
            if parts[-1] != SpecialChars.WILDCARD_MULTI:
                parts.append(SpecialChars.WILDCARD_MULTI)
            wrapped = type(value)()
            wrapped.s = parts
            value = wrapped
        return _or([self.value(n, value, at, "keyword") for n in self.source.keywords])

    # -- values ----------------------------------------------------------------------------------------

    def value(self, name: str, v: Any, at: MarkLoc, field: str) -> Any:
        """One value of one field: the check it means, by the value's Sigma type."""
        from sigma import types as st

        ftype = FIELDS[name].type
        if isinstance(v, st.SigmaExpansion):
            return _or([self.value(name, x, at, field) for x in v.values])
        if isinstance(v, st.SigmaNull):
            return INot(ICheck(self.fx(name), "exists"))
        if isinstance(v, st.SigmaExists):
            check = ICheck(self.fx(name), "exists")
            return check if v.exists else INot(check)
        if isinstance(v, st.SigmaRegularExpression):
            return self.regex(name, v, at, field)
        if isinstance(v, st.SigmaCIDRExpression):
            if ftype not in (IP, IPNET):
                return self.fail(
                    at, "sigma-bad-value", f"cidr needs an IP field; {field} is {name} ({ftype})"
                )
            return ICheck(self.fx(name), "in", (v.network,))
        if isinstance(v, st.SigmaCompareExpression):
            op = _COMPARE.get(v.op.name)
            if op is None or ftype not in (INT, FLOAT):
                return self.fail(
                    at, "sigma-bad-value", f"{field}: comparison needs a number field ({name} is {ftype})"
                )
            return ICheck(self.fx(name), op, v.number.number)
        if isinstance(v, st.SigmaBool):
            if ftype == BOOL:
                return ICheck(self.fx(name), "=", bool(v.boolean))
            return self.text(name, str(bool(v.boolean)).lower(), at, field)
        if isinstance(v, st.SigmaNumber):
            if ftype in (INT, FLOAT):
                return ICheck(self.fx(name), "=", v.number)
            return self.text(name, str(v.number), at, field)
        if isinstance(v, st.SigmaString):
            return self.string(name, v, at, field)
        return self.fail(at, "sigma-unsupported", f"{field}: {type(v).__name__} values are not supported")

    def text(self, name: str, text: str, at: MarkLoc, field: str) -> Any:
        from sigma.types import SigmaString

        return self.string(name, SigmaString.from_str(text), at, field)

    def regex(self, name: str, v: Any, at: MarkLoc, field: str) -> Any:
        if FIELDS[name].type != STRING:
            return self.fail(
                at, "sigma-bad-value", f"{field}: re needs a text field ({name} is {FIELDS[name].type})"
            )
        flags = 0
        for f in v.flags:
            flags |= {"IGNORECASE": re.IGNORECASE, "MULTILINE": re.MULTILINE, "DOTALL": re.DOTALL}[f.name]
        pattern = str(v.regexp)
        try:
            search = re.compile(pattern, flags).search
        except (re.error, OverflowError, RecursionError) as exc:
            return self.fail(at, "sigma-bad-value", f"{field}: bad regular expression {pattern!r}: {exc}")
        return ICheck(self.fx(name), "regex", search)

    def string(self, name: str, v: Any, at: MarkLoc, field: str) -> Any:
        """A string with wildcards: the cheapest check that means the same."""
        from sigma.types import SigmaCasedString, SpecialChars

        multi = SpecialChars.WILDCARD_MULTI
        parts = list(v.s)
        if any(not isinstance(p, (str, SpecialChars)) for p in parts):
            return self.fail(at, "sigma-unsupported", f"{field}: placeholders (%name%) are not supported")
        ftype = FIELDS[name].type
        wild = any(isinstance(p, SpecialChars) for p in parts)
        if ftype != STRING:
            if wild:
                return self.fail(
                    at, "sigma-bad-value", f"{field}: wildcards need a text field ({name} is {ftype})"
                )
            check = self.comp.typed_check(
                self.fx(name), "=", (at, 0), [("".join(parts), True, at, 0)], None, 0, (at, 0)
            )
            return check if check is not None else IConst(False)
        cased = isinstance(v, SigmaCasedString)
        low = (lambda t: t) if cased else str.lower
        shape = tuple("s" if isinstance(p, str) else "*" if p == multi else "?" for p in parts)
        strs = [p for p in parts if isinstance(p, str)]
        if not wild:
            return ICheck(self.fx(name, not cased), "=", low("".join(strs)))
        if shape == ("*",):
            return ICheck(self.fx(name), "exists")
        if shape == ("*", "s", "*"):
            return ICheck(self.fx(name), "contains" if cased else "icontains", low(strs[0]))
        if shape == ("s", "*"):
            return ICheck(self.fx(name, not cased), "startswith", low(strs[0]))
        if shape == ("*", "s"):
            return ICheck(self.fx(name, not cased), "endswith", low(strs[0]))
        rx = "".join(re.escape(p) if isinstance(p, str) else ".*" if p == multi else "." for p in parts)
        matcher = re.compile(rx, re.DOTALL | (0 if cased else re.IGNORECASE)).fullmatch
        return ICheck(self.fx(name), "iglob" if not cased else "glob", matcher)
