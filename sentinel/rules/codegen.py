"""Typed conditions → Python source → one compiled matcher per event type.

For each event type (and for the rare event without a known process) every applicable rule's condition is
written out as a Python expression specialised for that type: fields that type never fills fold to False,
fields with a known finite set of values there (``evt.type``, ``fd.typechar``) fold to constants, so most
event-type checks disappear. Field reads are inlined attribute reads; computed values (``proc.cmdline``,
``fd.directory`` ...) are computed once per event in a local and reused by later rules.

Rules that have a selective top-level AND term (``proc.name in (...)``, ``fd.name startswith /etc/``,
``fd.sport = 4444``) go into hash indexes: one dict lookup per indexed field finds the candidate rules, so
the cost per event grows with the number of rules that could match, not with the size of the ruleset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sentinel.events import OPEN_FLAG_BITS, EventType
from sentinel.rules import runtime
from sentinel.rules.compiler import (
    FieldX,
    IAnd,
    ICheck,
    IConst,
    INot,
    IOr,
    conjuncts,
)
from sentinel.rules.fields import BOOL, INT, IP, IPNET, STRING, Access
from sentinel.rules.model import Rule

INDEX_MIN_RULES = 4  # below this many rules for an event type, a straight sequence is as cheap
MAX_GUARD_KEYS = 1024
INLINE_SET_MAX = 64
CHEAP_CODE = 48  # generated conditions shorter than this are recomputed rather than cached


class Pool:
    """Non-literal constants (regexes, IP networks, big sets, rules) as globals of the generated code."""

    def __init__(self, ns: dict[str, Any]) -> None:
        self.ns = ns
        self._names: dict[int, str] = {}
        self._n = 0

    def add(self, obj: Any, prefix: str = "K") -> str:
        name = self._names.get(id(obj))
        if name is None:
            self._n += 1
            name = f"{prefix}{self._n}"
            self.ns[name] = obj
            self._names[id(obj)] = name
        return name


def literal(value: Any) -> str:
    """Python source for a str/int/bool/bytes/None constant (repr round-trips surrogate escapes too)."""
    return repr(value)


def prologue(etype: int, has_proc: bool, indent: str = "    ") -> list[str]:
    lines = [f"{indent}ev = ctx.ev", f"{indent}proc = ctx.proc" if has_proc else f"{indent}proc = None"]
    if etype == EventType.OPEN:
        lines += [f"{indent}path = ctx.path", f"{indent}if path is None:", f"{indent}    path = ev.path"]
    elif etype == EventType.CHDIR:
        lines += [
            f"{indent}path = ctx.path",
            f"{indent}if path is None:",
            f"{indent}    path = ev.path or None",
        ]
    else:
        lines.append(f"{indent}path = None")
    return lines


class CodeGen:
    """Expressions for one event type; holds the per-function cache of computed field values."""

    def __init__(self, pool: Pool, etype: int, has_proc: bool, shared: set[int] | None = None) -> None:
        self.pool = pool
        self.etype = etype
        self.has_proc = has_proc
        self.cache: dict[str, str] = {}  # field value expression -> local holding it
        self.shared = shared or set()  # ids of sub-conditions used by several rules: their result is cached
        self._memo: dict[int, str | bool] = {}
        self._memo_code: dict[str, str] = {}
        self._tmp = 0

    def tmp(self) -> str:
        self._tmp += 1
        return f"_t{self._tmp}"

    def cache_init(self, indent: str = "    ") -> list[str]:
        names = [
            *self.cache.values(),
            *self._memo_code,
        ]
        if not names:
            return []
        return [indent + " = ".join(names) + " = _U"]

    def access(self, fx: FieldX) -> Access | None:
        return fx.fdef.access(self.etype, self.has_proc, fx.arg)

    def getter(self, acc: Access) -> tuple[str, str | None]:
        """(expression giving the value, the cache variable holding it afterwards or None)."""
        if not acc.cached:
            return acc.expr, None
        var = self.cache.get(acc.expr)
        if var is None:
            var = self.cache[acc.expr] = f"_c{len(self.cache)}"
        return f"({var} if {var} is not _U else ({var} := {acc.expr}))", var

    # -- conditions -----------------------------------------------------------------------------------

    def gen(self, ir: Any) -> str | bool:
        """Source of a boolean expression, or a constant when it folds. A sub-condition several rules share
        (a macro) is computed once per event: its result is kept in a local."""
        if id(ir) in self.shared and worth_caching(ir):
            var = self._memo.get(id(ir))
            if var is None:
                code = self._gen(ir)
                if isinstance(code, bool) or len(code) < CHEAP_CODE:  # recomputing beats a cache check
                    self._memo[id(ir)] = code
                    return code
                var = f"_m{len(self._memo)}"
                self._memo[id(ir)] = var
                self._memo_code[var] = code
            if isinstance(var, bool) or var not in self._memo_code:
                return var
            return f"({var} if {var} is not _U else ({var} := {self._memo_code[var]}))"
        return self._gen(ir)

    def _gen(self, ir: Any) -> str | bool:
        if isinstance(ir, ICheck):
            return self.check(ir)
        if isinstance(ir, IAnd):
            parts: list[str] = []
            for item in ir.items:
                code = self.gen(item)
                if code is False:
                    return False
                if code is not True:
                    parts.append(code)
            if not parts:
                return True
            return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"
        if isinstance(ir, IOr):
            parts = []
            for item in fold_alternatives(ir.items, self.shared):
                code = self.gen(item)
                if code is True:
                    return True
                if code is not False:
                    parts.append(code)
            if not parts:
                return False
            return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"
        if isinstance(ir, INot):
            code = self.gen(ir.item)
            if isinstance(code, bool):
                return not code
            return f"(not {code})"
        if isinstance(ir, IConst):
            return ir.value
        raise TypeError(f"unexpected node {ir!r}")  # pragma: no cover

    def check(self, c: ICheck) -> str | bool:
        acc = self.access(c.lhs)
        if acc is None:
            return False
        if c.op == "contains" and c.lhs.fdef.name == "evt.arg.flags" and not c.lhs.transforms:
            bits = flag_test(c.value)
            if bits is not None:  # a bit test instead of building the flags text for every open
                return bits
        rhs_acc: Access | None = None
        if c.rhs is not None:
            rhs_acc = self.access(c.rhs)
            if rhs_acc is None:
                return False
            if rhs_acc.multi or acc.multi:
                return self._multi_rhs(c, acc, rhs_acc)
        if acc.domain is not None and c.rhs is None and not acc.multi and not c.lhs.transforms:
            pred = self.pool.ns["_compile_lambda"](self.lambda_source(c))
            outcomes = {bool(pred(v)) for v in acc.domain}
            if len(outcomes) == 1:
                return outcomes.pop()
        if acc.multi:
            fn = self.pool.add(self.pool.ns["_compile_lambda"](self.lambda_source(c)), "P")
            get, _ = self.getter(acc)
            return f"_any_of({fn}, {get})"
        parts: list[str] = []
        transforms = c.lhs.transforms
        lowered = c.lhs.type == STRING and (
            transforms[:1] == ("tolower",) or (c.op == "icontains" and not transforms)
        )
        if lowered:  # a field's lowered text once per event, however many checks read it (Sigma: hundreds)
            x = self._bind_lowered(acc, parts)
            transforms = transforms[1:]
        else:
            x = self._bind(acc, parts)
        x = self._transforms(transforms, x, parts)
        y = None
        if rhs_acc is not None and c.rhs is not None:
            y = self._bind(rhs_acc, parts)
            y = self._transforms(c.rhs.transforms, y, parts)
        if lowered and c.op == "icontains" and not c.lhs.transforms and y is None:
            parts.append(f"({literal(c.value)} in {x})")  # the value is lowered already (compiler)
        else:
            parts.append(self.pred(c, x, y))
        return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"

    def _multi_rhs(self, c: ICheck, acc: Access, rhs_acc: Access) -> str:
        # val() with a list-valued field (rare): compare every pair; transformers are not applied here.
        fn = self.pool.add(self.pool.ns["_compile_lambda"]("lambda x, y: " + self.pred(c, "x", "y")), "P")
        get, _ = self.getter(acc)
        rget, _ = self.getter(rhs_acc)
        return f"_any_pair({fn}, {get}, {rget})"

    def _bind(self, acc: Access, parts: list[str]) -> str:
        get, var = self.getter(acc)
        if not acc.nullable:
            return get
        if var is not None:
            parts.append(f"{get} is not None")
            return var
        t = self.tmp()
        parts.append(f"({t} := {get}) is not None")
        return t

    def _bind_lowered(self, acc: Access, parts: list[str]) -> str:
        """A local holding the field's text lowered (None when missing), computed on first use per event."""
        expr = f"_lower({acc.expr})"
        var = self.cache.get(expr)
        if var is None:
            var = self.cache[expr] = f"_c{len(self.cache)}"
        parts.append(f"({var} if {var} is not _U else ({var} := {expr})) is not None")
        return var

    def _transforms(self, transforms: tuple[str, ...], x: str, parts: list[str]) -> str:
        for fn in transforms:
            if fn == "tolower":
                x = f"{x}.lower()"
            elif fn == "toupper":
                x = f"{x}.upper()"
            elif fn == "basename":
                x = f"_basename({x})"
            elif fn == "len":
                x = f"len({x})"
            elif fn == "b64":
                t = self.tmp()
                parts.append(f"({t} := _b64({x})) is not None")
                x = t
        return x

    def lambda_source(self, c: ICheck) -> str:
        """``lambda x: ...`` testing one value (None-safe): for list-valued fields and constant folding."""
        sub = CodeGen(self.pool, self.etype, self.has_proc)
        parts = ["x is not None"]
        x = sub._transforms(c.lhs.transforms, "x", parts)
        parts.append(sub.pred(c, x, None))
        return "lambda x: " + " and ".join(parts)

    def pred(self, c: ICheck, x: str, y: str | None) -> str:
        op, v, t = c.op, c.value, c.lhs.type
        if y is not None:
            if op in ("contains",):
                return f"({y} in {x})"
            if op in ("startswith", "endswith"):
                return f"{x}.{op}({y})"
            return f"({x} {'==' if op == '=' else op} {y})"
        if op == "exists":
            return "True"
        if t in (IP, IPNET):
            nets = self.pool.add(v)
            if op == "!=":
                return f"(not _ip_in({x}, {nets}))"
            return f"_ip_in({x}, {nets})"
        if op == "=":
            if t == BOOL:
                return x if v else f"(not {x})"
            return f"({x} == {literal(v)})"
        if op == "!=":
            if t == BOOL:
                return f"(not {x})" if v else x
            return f"({x} != {literal(v)})"
        if op in ("<", "<=", ">", ">="):
            return f"({x} {op} {literal(v)})"
        if op == "contains":
            return f"({literal(v)} in {x})"
        if op == "icontains":
            return f"({literal(v)} in {x}.lower())"
        if op in ("startswith", "endswith"):
            return f"{x}.{op}({literal(v)})"
        if op == "bcontains":
            return f"({literal(v)} in _fsenc({x}))"
        if op == "bstartswith":
            return f"_fsenc({x}).startswith({literal(v)})"
        if op in ("glob", "iglob", "regex"):
            return f"({self.pool.add(v, 'M')}({x}) is not None)"
        if op in ("in", "intersects"):
            if not v:
                return "False"
            if len(v) <= INLINE_SET_MAX and all(type(i) in (str, int) for i in v):
                items = ", ".join(literal(i) for i in sorted(v, key=lambda i: (type(i).__name__, i)))
                return f"({x} in {{{items}}})"
            return f"({x} in {self.pool.add(v, 'S')})"
        if op == "pmatch":
            return f"_pmatch({x}, {self.pool.add(v, 'S')})"
        raise ValueError(f"operator {op!r} has no code")  # pragma: no cover - the compiler checked it

    # -- values (outputs, field_value) ---------------------------------------------------------------

    def value(self, fx: FieldX) -> str:
        """Source of a field's value (None when missing), transformers applied None-safely."""
        acc = self.access(fx)
        if acc is None:
            return "None"
        x = acc.expr
        for fn in fx.transforms:
            helper = {
                "tolower": "_lower",
                "toupper": "_upper",
                "basename": "_basename",
                "b64": "_b64",
                "len": "_length",
            }[fn]
            x = f"[{helper}(_v) for _v in {x}]" if acc.multi and fn != "len" else f"{helper}({x})"
        return x


# --------------------------------------------------------------------------------------------- indexes


BANDS = (1, 2, 4, 8, 16, 32)  # prefix lengths an index looks up (a prefix is filed under the longest <= it)


@dataclass(slots=True)
class Guard:
    """Something every match needs: for one of the fields in ``parts`` (value expression → (exact values,
    prefixes)), the event's value is one of the exact values or starts with one of the prefixes."""

    parts: dict[str, tuple[frozenset[Any], frozenset[str]]]

    @property
    def score(self) -> tuple[int, int, int, int]:
        """Lower is more selective: no short prefixes (they share buckets with much), exact values rather
        than prefixes, few keys, long prefixes."""
        prefixes = [p for _, pre in self.parts.values() for p in pre]
        weak = sum(1 for p in prefixes if len(p) < 3)
        keys = sum(len(ex) + len(pre) for ex, pre in self.parts.values())
        return (weak, 1 if prefixes else 0, keys, -min((len(p) for p in prefixes), default=0))


def band(prefix: str) -> int:
    return max(b for b in BANDS if b <= len(prefix))


def check_guard(c: ICheck, gen: CodeGen) -> Guard | None:
    if c.rhs is not None or c.lhs.transforms:
        return None
    f = c.lhs.fdef
    if not f.index or c.lhs.type not in (STRING, INT):
        return None
    acc = gen.access(c.lhs)
    if acc is None or acc.multi or acc.domain is not None:
        return None
    empty: frozenset[Any] = frozenset()
    if c.op == "=":
        return Guard({acc.expr: (frozenset([c.value]), empty)})
    if c.op in ("in", "intersects"):
        return Guard({acc.expr: (c.value, empty)}) if 0 < len(c.value) <= MAX_GUARD_KEYS else None
    if c.lhs.type != STRING:
        return None
    if c.op == "startswith":
        return Guard({acc.expr: (empty, frozenset([c.value]))}) if c.value else None
    if c.op == "pmatch" and f.path_like:
        values = c.value
        if not values or len(values) > MAX_GUARD_KEYS or "/" in values:
            return None
        return Guard({acc.expr: (frozenset(values), frozenset(p + "/" for p in values))})
    return None


def choose_guard(ir: Any, gen: CodeGen) -> Guard | None:
    """The most selective index term of a condition for this event type: a check in its top-level AND, or
    an OR whose every branch has one (``fd.name = X or fd.name startswith Y``, even on different fields)."""
    if isinstance(ir, ICheck):
        return check_guard(ir, gen)
    if isinstance(ir, IAnd):
        best: Guard | None = None
        for item in conjuncts(ir):
            g = choose_guard(item, gen)
            if g is not None and (best is None or g.score < best.score):
                best = g
        return best
    if isinstance(ir, IOr):
        merged: dict[str, tuple[frozenset[Any], frozenset[str]]] = {}
        for item in ir.items:
            g = choose_guard(item, gen)
            if g is None:
                return None
            for expr, (ex, pre) in g.parts.items():
                old_ex, old_pre = merged.get(expr, (frozenset(), frozenset()))
                merged[expr] = (old_ex | ex, old_pre | pre)
        if not merged or sum(len(a) + len(b) for a, b in merged.values()) > MAX_GUARD_KEYS:
            return None
        return Guard(merged)
    return None


# --------------------------------------------------------------------------------------------- matchers


@dataclass(slots=True)
class TypeMatcher:
    """The compiled matcher of one event type, with what went into it (for tests and benchmarks)."""

    fn: Callable[[Any], list[Rule]]
    sequential: list[int] = field(default_factory=list)  # rule indexes checked one after the other
    indexed: list[int] = field(default_factory=list)  # rule indexes reached through an index
    source: str = ""


def _empty(ctx: Any) -> list[Rule]:
    return []


def build_matcher(
    rules: list[Rule],
    etype: int,
    has_proc: bool,
    pool: Pool,
    index_min: int = INDEX_MIN_RULES,
) -> TypeMatcher:
    """One function ``ctx -> [Rule, ...]`` checking every applicable enabled rule for this event type."""
    applicable = [
        r for r in rules
        if r.enabled and r.skipped is None and r.ir is not None
        and (r.event_types is None or etype in r.event_types)
    ]  # fmt: skip
    probe = CodeGen(pool, etype, has_proc)
    use_index = len(applicable) >= index_min
    guards = {r.index: choose_guard(r.ir, probe) if use_index else None for r in applicable}
    seq_rules = [r for r in applicable if guards[r.index] is None]
    seq_gen = CodeGen(pool, etype, has_proc, count_shared([r.ir for r in seq_rules]))
    sequential: list[tuple[int, str | bool]] = []
    rule_fns: list[str] = []
    exact_dims: dict[str, dict[Any, list[tuple[int, str]]]] = {}
    prefix_dims: dict[tuple[str, int], dict[str, list[tuple[int, tuple[str, ...], str]]]] = {}
    indexed: list[int] = []
    for r in applicable:
        guard = guards[r.index]
        if guard is None:
            code = seq_gen.gen(r.ir)
            if code is not False:
                sequential.append((r.index, code))
            continue
        gen = CodeGen(pool, etype, has_proc)
        code = gen.gen(r.ir)
        if code is False:
            continue
        name = f"_r{r.index}"
        rule_fns += [f"def {name}(ctx, ev, proc, path):", *gen.cache_init(), f"    return {code}", ""]
        for expr, (exact, prefixes) in guard.parts.items():
            for key in exact:
                exact_dims.setdefault(expr, {}).setdefault(key, []).append((r.index, name))
            by_key: dict[tuple[int, str], list[str]] = {}
            for p in prefixes:
                b = band(p)
                by_key.setdefault((b, p[:b]), []).append(p)
            for (b, key), group in by_key.items():
                entry = (r.index, tuple(sorted(group)), name)
                prefix_dims.setdefault((expr, b), {}).setdefault(key, []).append(entry)
        indexed.append(r.index)
    dims = bool(exact_dims or prefix_dims)
    if not sequential and not dims:
        return TypeMatcher(_empty)
    rules_name = pool.add(tuple(rules), "RULES")
    body = [*prologue(etype, has_proc), *seq_gen.cache_init(), "    hits = []"]
    for idx, code in sequential:
        body += [f"    if {code}:", f"        hits.append({idx})"]
    tables: dict[str, dict[Any, tuple[Any, ...]]] = {}
    tag = f"{int(etype)}{'p' if has_proc else 'n'}"
    for n, (expr, exact_table) in enumerate(exact_dims.items()):
        dname = f"_E{tag}_{n}"
        tables[dname] = {k: tuple((i, fn) for i, fn in v) for k, v in exact_table.items()}
        body += [
            f"    _g = {dname}.get({expr})",
            "    if _g is not None:",
            "        for _i, _f in _g:",
            "            if _i not in hits and _f(ctx, ev, proc, path):",
            "                hits.append(_i)",
        ]
    by_expr: dict[str, list[tuple[int, dict[str, list[tuple[int, tuple[str, ...], str]]]]]] = {}
    for (expr, b), prefix_table in prefix_dims.items():
        by_expr.setdefault(expr, []).append((b, prefix_table))
    for n, (expr, bands) in enumerate(by_expr.items()):
        body += [f"    _s = {expr}", "    if _s is not None:"]
        for b, prefix_table in sorted(bands, key=lambda x: x[0]):
            dname = f"_P{tag}_{n}_{b}"
            tables[dname] = {k: tuple(v) for k, v in prefix_table.items()}
            body += [
                f"        _g = {dname}.get(_s[:{b}])",
                "        if _g is not None:",
                "            for _i, _p, _f in _g:",
                "                if _s.startswith(_p) and _i not in hits and _f(ctx, ev, proc, path):",
                "                    hits.append(_i)",
            ]
    body += ["    if not hits:", "        return hits"]
    if dims:
        body += ["    if len(hits) > 1:", "        hits.sort()"]
    body.append(f"    return [{rules_name}[_i] for _i in hits]")
    fname = f"_match_{int(etype)}_{'p' if has_proc else 'n'}"
    source = "\n".join([*rule_fns, f"def {fname}(ctx):", *body, ""])
    code_obj = compile(source, f"<sentinel rules: {fname}>", "exec")
    exec(code_obj, pool.ns)
    for dname, table in tables.items():
        pool.ns[dname] = {
            k: tuple((*entry[:-1], pool.ns[entry[-1]]) for entry in entries) for k, entries in table.items()
        }
    return TypeMatcher(pool.ns[fname], [i for i, _ in sequential], indexed, source)


def build_single(rule: Rule, etype: int, has_proc: bool, pool: Pool) -> Callable[[Any], bool]:
    """A matcher for one rule and one event type (Rule.matcher, tests)."""
    if rule.ir is None or (rule.event_types is not None and etype not in rule.event_types):
        return _false
    gen = CodeGen(pool, etype, has_proc)
    code = gen.gen(rule.ir)
    if isinstance(code, bool):
        return _true if code else _false
    name = f"_single_{rule.index}_{int(etype)}_{'p' if has_proc else 'n'}"
    source = "\n".join(
        [f"def {name}(ctx):", *prologue(etype, has_proc), *gen.cache_init(), f"    return bool({code})", ""]
    )
    exec(compile(source, f"<sentinel rule {rule.name!r}>", "exec"), pool.ns)
    fn: Callable[[Any], bool] = pool.ns[name]
    return fn


def build_values(
    fields: list[FieldX], etype: int, has_proc: bool, pool: Pool, name: str
) -> Callable[[Any], tuple]:
    """``ctx -> (value, ...)`` for outputs and field_value."""
    gen = CodeGen(pool, etype, has_proc)
    exprs = [gen.value(fx) for fx in fields]
    source = "\n".join(
        [
            f"def {name}(ctx):",
            *prologue(etype, has_proc),
            f"    return ({', '.join(exprs)}{',' if exprs else ''})",
            "",
        ]
    )
    exec(compile(source, f"<sentinel values {name}>", "exec"), pool.ns)
    fn: Callable[[Any], tuple] = pool.ns[name]
    return fn


def _true(ctx: Any) -> bool:
    return True


def _false(ctx: Any) -> bool:
    return False


def namespace() -> dict[str, Any]:
    ns = runtime.namespace()

    def compile_lambda(source: str) -> Callable[..., Any]:
        fn: Callable[..., Any] = eval(compile(source, "<sentinel predicate>", "eval"), ns)
        return fn

    def any_pair(pred: Callable[[Any, Any], bool], xs: Any, ys: Any) -> bool:
        if xs is None or ys is None:
            return False
        xs = xs if isinstance(xs, list) else [xs]
        ys = ys if isinstance(ys, list) else [ys]
        return any(x is not None and y is not None and pred(x, y) for x in xs for y in ys)

    ns["_compile_lambda"] = compile_lambda
    ns["_any_pair"] = any_pair
    return ns


def fold_alternatives(items: list[Any], shared: set[int] | frozenset[int] = frozenset()) -> list[Any]:
    """Alternatives on one field folded into one test: ``f = a or f = b or f = c`` as ``f in {a, b, c}`` (a
    set lookup), ``f endswith a or f endswith b`` as ``f.endswith((a, b))`` (startswith too). Sigma's lists
    of values become such ORs: hundreds per event with the SigmaHQ corpus. Other items keep their place."""
    if any(isinstance(item, IOr) and id(item) not in shared for item in items):
        # (a or b) or (c or d): one list, so alternatives on a field meet; a shared macro stays whole (cached)
        items = list(_flat_or(items, shared))
    groups: dict[tuple[Any, ...], list[ICheck]] = {}
    for item in items:
        if (
            isinstance(item, ICheck) and item.op in ("=", "startswith", "endswith") and item.rhs is None
            and item.evt_names is None and type(item.value) in (str, int) and item.lhs.type in (STRING, INT)
            and (item.op == "=" or item.lhs.type == STRING)
        ):  # fmt: skip
            key = (item.op, id(item.lhs.fdef), item.lhs.arg, item.lhs.transforms)
            groups.setdefault(key, []).append(item)
    folded = {id(g[0]): g for g in groups.values() if len(g) > (2 if g[0].op == "=" else 1)}
    if not folded:
        return items
    skip = {id(c) for g in folded.values() for c in g[1:]}
    out: list[Any] = []
    for item in items:
        group = folded.get(id(item))
        if group is not None:
            if item.op == "=":
                out.append(ICheck(item.lhs, "in", frozenset(c.value for c in group)))
            else:
                out.append(ICheck(item.lhs, item.op, tuple(dict.fromkeys(c.value for c in group))))
        elif id(item) not in skip:
            out.append(item)
    return out


def _flat_or(items: list[Any], shared: set[int] | frozenset[int]) -> Iterator[Any]:
    for item in items:
        if isinstance(item, IOr) and id(item) not in shared:
            yield from _flat_or(item.items, shared)
        else:
            yield item


def worth_caching(ir: Any) -> bool:
    """Composite conditions, and checks that cost more than an attribute read and a comparison."""
    if isinstance(ir, (IAnd, IOr)):
        return len(ir.items) > 1
    if isinstance(ir, INot):
        return worth_caching(ir.item)
    if isinstance(ir, ICheck):
        return ir.op in ("glob", "iglob", "regex", "pmatch", "icontains") or ir.lhs.fdef.arg == "index?"
    return False


def count_shared(irs: list[Any]) -> set[int]:
    """Ids of nodes that occur more than once across these conditions (macros used by several rules)."""
    counts: dict[int, int] = {}
    stack = list(irs)
    while stack:
        node = stack.pop()
        counts[id(node)] = counts.get(id(node), 0) + 1
        if counts[id(node)] > 1:
            continue  # its children are already counted from the first visit
        if isinstance(node, (IAnd, IOr)):
            stack.extend(node.items)
        elif isinstance(node, INot):
            stack.append(node.item)
    return {k for k, n in counts.items() if n > 1}


_ACCESS_MODES = {"O_RDONLY": 0, "O_WRONLY": 1, "O_RDWR": 2}
_FLAG_BITS = {name: bit for bit, name in OPEN_FLAG_BITS}


def flag_test(name: str) -> str | None:
    """``evt.arg.flags contains O_X`` as a test on the flag bits (same answer as on the text)."""
    if name in _ACCESS_MODES:
        return f"((ev.open_flags & 3) == {_ACCESS_MODES[name]})"
    bit = _FLAG_BITS.get(name)
    if bit is None:
        return None
    if name == "O_DIRECTORY":  # the text omits it when O_TMPFILE (which contains its bit) is set
        return f"((ev.open_flags & {0o20200000}) == {bit})"
    return f"((ev.open_flags & {bit}) == {bit})"
