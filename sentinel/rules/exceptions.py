"""Falco rule exceptions: read from a rule's ``exceptions:`` (names, fields, comps, values, each located),
merged when an override appends to one, and compiled into ``and not ((f1 c1 v1 and f2 c2 v2) or ...)``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from sentinel.rules.compiler import CondCompiler, IAnd, INot, IOr
from sentinel.rules.fields import ALL_OPS, LIST_OPS
from sentinel.rules.reader import NULL_TAG, Reporter, YamlReader, scalar_loc
from sentinel.rules.source import Locator, MarkLoc, SourceText, diag_at

EXCEPTION_KEYS = frozenset({"name", "fields", "comps", "values"})


@dataclass
class ExcDef:
    name: str
    loc: Locator  # the exception's name
    seq: int
    src: SourceText
    fields: list[tuple[str, Locator]] | None = None
    single: bool = False  # fields given as one name, not a list
    comps: list[tuple[str, Locator]] | None = None
    comps_loc: Locator | None = None
    values: list[tuple[Any, SourceText]] = field(default_factory=list)  # (yaml node, its file)


def parse_exceptions(
    read: YamlReader, src: SourceText, node: Any, rule: str, seq: int
) -> list[ExcDef] | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG and node.style is None:
        return []
    if not isinstance(node, yaml.SequenceNode):
        read.rep.at_node(
            src,
            node,
            "error",
            "bad-type",
            "exceptions must be a list of {name, fields, comps, values}",
            rule,
        )
        return None
    out: list[ExcDef] = []
    ok = True
    for enode in node.value:
        if not isinstance(enode, yaml.MappingNode):
            read.rep.at_node(
                src,
                enode,
                "error",
                "bad-type",
                "an exception is a mapping: {name, fields, comps, values}",
                rule,
            )
            ok = False
            continue
        pairs = read.pairs(src, enode, "an exception")
        for key, (kn, _) in pairs.items():
            if key not in EXCEPTION_KEYS:
                read.rep.at_node(
                    src, kn, "warning", "unknown-key", f"unknown key '{key}' in an exception", rule
                )
        if "name" not in pairs:
            read.rep.at_node(src, enode, "error", "missing-key", "an exception needs a name", rule)
            ok = False
            continue
        name = read.text(src, pairs["name"][1], "the exception name")
        if name is None:
            ok = False
            continue
        exc = ExcDef(name, scalar_loc(src, pairs["name"][1]), seq, src)
        if "fields" in pairs:
            fnode = pairs["fields"][1]
            if isinstance(fnode, yaml.ScalarNode) and fnode.tag != NULL_TAG:
                exc.fields, exc.single = [(str(fnode.value), scalar_loc(src, fnode))], True
            else:
                exc.fields = read.scalar_list(src, fnode, "exception fields")
                if exc.fields is None:
                    ok = False
                    continue
        if "comps" in pairs:
            cnode = pairs["comps"][1]
            exc.comps_loc = (
                scalar_loc(src, cnode)
                if isinstance(cnode, yaml.ScalarNode)
                else MarkLoc(src, cnode.start_mark.index)
            )
            if isinstance(cnode, yaml.ScalarNode) and cnode.tag != NULL_TAG:
                exc.comps = [(str(cnode.value), scalar_loc(src, cnode))]
            else:
                exc.comps = read.scalar_list(src, cnode, "exception comps")
                if exc.comps is None:
                    ok = False
                    continue
        if "values" in pairs:
            vnode = pairs["values"][1]
            if isinstance(vnode, yaml.ScalarNode) and vnode.tag == NULL_TAG and vnode.style is None:
                pass
            elif not isinstance(vnode, yaml.SequenceNode):
                read.rep.at_node(src, vnode, "error", "bad-type", "exception values must be a list", rule)
                ok = False
                continue
            else:
                exc.values = [(v, src) for v in vnode.value]
        out.append(exc)
    return out if ok else None


def merge_exception(rep: Reporter, item: Any, exc: ExcDef) -> None:
    """Appending an exception: values join an existing one of that name, or it is added whole."""
    for cur in item.exceptions:
        if cur.name == exc.name:
            if exc.fields is not None or exc.comps is not None:
                loc = exc.loc
                rep.diags.append(
                    diag_at(
                        loc,
                        0,
                        "warning",
                        "bad-override",
                        f"exception '{exc.name}' exists: only its values are appended; "
                        "fields and comps given here are ignored",
                        item.name,
                    )
                )
            cur.values = [*cur.values, *exc.values]
            return
    item.exceptions.append(exc)


def compile_exception(comp: CondCompiler, exc: ExcDef) -> Any | None:
    """``and not ((f1 c1 v1 and f2 c2 v2) or ...)`` for one exception; None when it has no values."""
    if not exc.values:
        return None
    if exc.fields is None:
        comp.error(exc.loc, 0, "missing-key", f"exception '{exc.name}' has values but no fields")
        return None
    fxs = [comp.field_text(text, loc) for text, loc in exc.fields]
    n = len(exc.fields)
    comps = [("in" if exc.single else "=", exc.loc)] * n if exc.comps is None else list(exc.comps)
    if len(comps) != n:
        cloc = exc.comps_loc or exc.loc
        comp.error(
            cloc,
            0,
            "exception-arity",
            f"exception '{exc.name}' has {n} field(s) but {len(comps)} comp(s)",
        )
        return None
    ok = all(fx is not None for fx in fxs)
    for op, loc in comps:
        if op.strip() == "==":
            continue
        if op.strip() not in ALL_OPS:
            comp.error(loc, 0, "bad-operator", f"unknown comparison '{op}' in exception '{exc.name}'")
            ok = False
    if not ok:
        return None
    ops = ["=" if op.strip() == "==" else op.strip() for op, _ in comps]
    alternatives: list[Any] = []
    if exc.single:
        fx, op = fxs[0], ops[0]
        if op in LIST_OPS:
            values = [v for node, src in exc.values if (v := exc_values(comp, exc, node, src, True))]
            flat = [x for v in values for x in v]
            check = comp.typed_check(
                fx, op, (comps[0][1], 0), flat, None, exc.seq, (flat[0][2], 0) if flat else (exc.loc, 0)
            )  # type: ignore[arg-type]
            if check is None:
                return None
            alternatives.append(check)
        else:
            for node, src in exc.values:
                vals = exc_values(comp, exc, node, src, False)
                if vals is None:
                    return None
                check = comp.typed_check(fx, op, (comps[0][1], 0), vals, None, exc.seq, (vals[0][2], 0))
                if check is None:
                    return None
                alternatives.append(check)
    else:
        for node, src in exc.values:
            if not isinstance(node, yaml.SequenceNode):
                comp.error(
                    MarkLoc(src, node.start_mark.index),
                    0,
                    "exception-arity",
                    f"each value of exception '{exc.name}' is a list of {n} value(s), one per "
                    f"field ({', '.join(t for t, _ in exc.fields)})",
                )
                return None
            if len(node.value) != n:
                comp.error(
                    MarkLoc(src, node.start_mark.index),
                    0,
                    "exception-arity",
                    f"exception '{exc.name}' has {n} field(s) but this value has {len(node.value)}",
                )
                return None
            checks = []
            for fx, op, (_, oloc), vnode in zip(fxs, ops, comps, node.value, strict=True):
                vals = exc_values(comp, exc, vnode, src, op in LIST_OPS)
                if vals is None:
                    return None
                check = comp.typed_check(
                    fx, op, (oloc, 0), vals, None, exc.seq, (vals[0][2], 0) if vals else (oloc, 0)
                )  # type: ignore[arg-type]
                if check is None:
                    return None
                checks.append(check)
            alternatives.append(IAnd(checks))
    if not alternatives:
        return None
    return INot(IOr(alternatives) if len(alternatives) > 1 else alternatives[0])


def exc_values(
    comp: CondCompiler, exc: ExcDef, node: Any, src: SourceText, as_list: bool
) -> list[tuple[str, bool, Locator, int]] | None:
    """Values of one exception entry; for list comparisons a YAML list, or a name of a list."""
    if isinstance(node, yaml.ScalarNode):
        return [(str(node.value), not as_list, scalar_loc(src, node), 0)]
    if as_list and isinstance(node, yaml.SequenceNode):
        out = []
        for sub in node.value:
            if not isinstance(sub, yaml.ScalarNode):
                comp.error(
                    MarkLoc(src, sub.start_mark.index),
                    0,
                    "bad-type",
                    f"values of exception '{exc.name}' must be plain values",
                )
                return None
            out.append((str(sub.value), False, scalar_loc(src, sub), 0))
        return out
    comp.error(
        MarkLoc(src, node.start_mark.index),
        0,
        "bad-type",
        f"a value of exception '{exc.name}' must be a plain value here",
    )
    return None
