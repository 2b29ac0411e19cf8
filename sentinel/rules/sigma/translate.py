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
from sentinel.rules.sigma.mapping import (
    AUDIT_UNSUPPORTED,
    AUDIT_USER_WHY,
    INITIATED,
    INITIATED_EVENTS,
    UNMAPPED_WHY,
    AuditBranch,
    Logsource,
)
from sentinel.rules.source import MarkLoc

_COMPARE = {"LT": "<", "LTE": "<=", "GT": ">", "GTE": ">="}
_INDEXED = re.compile(r"([a-z0-9_.]+)\[(\d+)\]")
_AUDIT_ARG = re.compile(r"a(\d+)")


def _fdef(name: str) -> Any:
    """The field definition of a sentinel field name, an indexed one (``sentinel.proc.argv[2]``) included."""
    m = _INDEXED.fullmatch(name)
    return FIELDS[m.group(1) if m else name]


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
        self.detections = set(rule.detection.detections)
        self.fields: dict[str, FieldX] = {}
        self.reported: set[tuple[str, int]] = set()  # (field, key position): one message per key
        # auditd: the record types each detection names with ``type`` (upper case), and the rule's.
        self.types: dict[str, list[str]] = {}
        if source.records:
            for name, det in rule.detection.detections.items():
                self.types[name] = _record_types(det)
        self.rule_types = sorted({t for ts in self.types.values() for t in ts})
        self.shapes: dict[str, Any] = {}

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
            if self.source.records:
                return self.audit_leaf(node.field, node.value, node, self.where(node, node.field))
            return self.field_leaf(node.field, node.value, self.where(node, node.field))
        if isinstance(node, ConditionValueExpression):
            if self.source.records:
                return self.audit_keyword(node.value, node, self.where(node, None))
            return self.keyword(node.value, self.where(node, None))
        return self.fail(self.doc.detection(None), "sigma-unsupported", f"unsupported condition {node!r}")

    def detection_of(self, node: Any) -> str | None:
        """The search identifier a leaf came from: up its parent chain."""
        p = node
        for _ in range(64):
            p = getattr(p, "parent", None)
            if p is None:
                break
            name = self.names.get(id(p))
            if name is not None:
                return name
            ident = getattr(p, "identifier", None)  # ConditionIdentifier: the name as the condition said it
            if isinstance(ident, str) and ident in self.detections:
                return ident
        return None

    def where(self, node: Any, field: str | None) -> MarkLoc:
        """The detection key of a leaf."""
        return self.doc.field(self.detection_of(node), field)

    def fail(self, at: MarkLoc, code: str, message: str) -> IConst:
        self.comp.error(at, 0, code, message)
        return IConst(False)

    # -- fields ----------------------------------------------------------------------------------------

    def fx(self, name: str, lower: bool = False) -> FieldX:
        fdef = _fdef(name)
        m = _INDEXED.fullmatch(name)
        arg = int(m.group(2)) if m else None
        if lower:
            return FieldX(fdef, arg, ("tolower",), STRING, f"tolower({name})")
        fx = self.fields.get(name)
        if fx is None:
            fx = self.fields[name] = FieldX(fdef, arg, (), fdef.type, name)
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

    def keyword(self, value: Any, at: MarkLoc, fields: tuple[str, ...] | None = None) -> Any:
        from sigma.types import SigmaString, SpecialChars

        fields = self.source.keywords if fields is None else fields
        if not fields:
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
        return _or([self.value(n, value, at, "keyword") for n in fields])

    # -- values ----------------------------------------------------------------------------------------

    def value(self, name: str, v: Any, at: MarkLoc, field: str) -> Any:
        """One value of one field: the check it means, by the value's Sigma type."""
        from sigma import types as st

        ftype = _fdef(name).type
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
        if _fdef(name).type != STRING:
            return self.fail(
                at, "sigma-bad-value", f"{field}: re needs a text field ({name} is {_fdef(name).type})"
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
        ftype = _fdef(name).type
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

    # -- auditd ----------------------------------------------------------------------------------------

    def audit_shape(self, text: str, at: MarkLoc) -> Any:
        ir = self.shapes.get(text)
        if ir is None:
            ir = self.shapes[text] = self.comp.condition(text, at, lambda _pos: 0)
        return ir

    def audit_type(self, value: Any, at: MarkLoc) -> Any:
        """``type: X``: the events of record type X, or a located refusal when sentinel has none."""
        text = _plain(value).upper()
        record = self.source.records.get(text)
        if record is not None:
            return _or([self.audit_shape(b.shape, at) for b in record.branches])
        why = AUDIT_UNSUPPORTED.get(text)
        if why is None and (text.startswith(("USER_", "ADD_", "DEL_", "GRP_", "CRED_")) or text == "LOGIN"):
            why = AUDIT_USER_WHY
        if why is None:
            why = f"sentinel maps record types {', '.join(self.source.records)}"
        return self.fail(
            at, "sigma-unsupported-record", f"auditd record type '{text}' is not evaluated: {why}"
        )

    def audit_leaf(self, field: str, value: Any, node: Any, at: MarkLoc) -> Any:
        """An auditd field: OR over the record types its selection names (else the rule's, else every
        type that has the field) of (the events of that type and the check on its sentinel field)."""
        if field == "type":
            return self.audit_type(value, at)
        declared = self.types.get(self.detection_of(node) or "", []) or self.rule_types
        records = self.source.records
        names = declared or sorted(records)
        branches: list[tuple[AuditBranch, tuple[str, ...]]] = []
        refusals: list[str] = []
        for t in names:
            record = records.get(t)
            if record is None:
                continue  # its own type leaf refuses it
            if field in record.refused:
                if declared:
                    return self.fail(
                        at, "sigma-unmapped-field", f"auditd {t} field '{field}': {record.refused[field]}"
                    )
                refusals.append(f"auditd {t} field '{field}': {record.refused[field]}")
                continue
            m = _AUDIT_ARG.fullmatch(field)
            for b in record.branches:
                if record.indexed and m:
                    branches.append((b, (f"{record.indexed}[{int(m.group(1))}]",)))
                elif field in b.fields:
                    branches.append((b, b.fields[field]))
        if not branches:
            if (field, at.at) in self.reported:
                return IConst(False)
            self.reported.add((field, at.at))
            message = (
                refusals[0]
                if refusals
                else (
                    f"Sigma field '{field}' has no sentinel equivalent in auditd record type(s) "
                    f"{', '.join(names)}"
                )
            )
            return self.fail(at, "sigma-unmapped-field", message)
        out = []
        for b, targets in branches:
            if targets == ("evt.type",):
                check = self.syscall_name(value, at)
            else:
                check = _or([self.value(n, value, at, field) for n in targets])
            out.append(IAnd([self.audit_shape(b.shape, at), check]))
        return _or(out)

    def syscall_name(self, value: Any, at: MarkLoc) -> Any:
        """SYSCALL's name: an evt.type check (so the rule is indexed by it), refused for a syscall sentinel
        does not report."""
        from sentinel.rules.fields import EVENT_NAMES

        name = _plain(value).lower()
        if name not in EVENT_NAMES:
            return self.fail(
                at,
                "sigma-unsupported-syscall",
                f"sentinel does not report the '{name}' syscall "
                "(`sentinel fields` lists those it does under evt.type)",
            )
        evt = self.fx("evt.type")
        check = self.comp.typed_check(evt, "=", (at, 0), [(name, True, at, 0)], None, 0, (at, 0))
        return check if check is not None else IConst(False)

    def audit_keyword(self, value: Any, node: Any, at: MarkLoc) -> Any:
        """A keyword searches the record's text: for EXECVE the arguments (the command line)."""
        declared = self.types.get(self.detection_of(node) or "", []) or self.rule_types
        records = [self.source.records[t] for t in declared if t in self.source.records]
        if not declared:
            records = [r for r in self.source.records.values() if r.keywords]
        bare = [r.name for r in records if not r.keywords]
        if bare or not records:
            return self.fail(
                at,
                "sigma-keywords",
                "keywords (values without a field) on auditd records "
                f"{', '.join(bare or declared) or '(no type)'} have no text sentinel can search; "
                "only EXECVE's arguments",
            )
        return _or(
            [
                IAnd(
                    [
                        _or([self.audit_shape(b.shape, at) for b in r.branches]),
                        self.keyword(value, at, r.keywords),
                    ]
                )
                for r in records
            ]
        )


def _plain(value: Any) -> str:
    """A Sigma value as plain text (a record type, a syscall name)."""
    to_plain = getattr(value, "to_plain", None)
    return str(to_plain() if to_plain is not None else getattr(value, "number", value))


def _record_types(det: Any) -> list[str]:
    """The values of ``type`` in one detection (and its nested ones), upper case."""
    out: list[str] = []
    stack = [det]
    while stack:
        d = stack.pop()
        for item in getattr(d, "detection_items", ()):
            if hasattr(item, "detection_items"):
                stack.append(item)
            elif getattr(item, "field", None) == "type":
                out.extend(_plain(v).upper() for v in item.value)
    return out
