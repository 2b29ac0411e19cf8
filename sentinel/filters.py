"""``--filter`` expressions for ``sentinel events``: quick field tests on the rendered ECS document.

``process.name=bash``, ``file.path^=/etc/``, ``process.command_line~curl``, ``destination.port!=53``. All
filters must hold. A path that names a list (``process.args``) matches when any element does. Rule conditions
in the Falco language come with the rule engine; these are for eyeballing the stream.

``container.id`` takes every id people have at hand: the whole id (ECS ``container.id``), the 12 characters
``docker ps`` and Falco show (``sentinel.container.short_id``), and ``host`` for events of processes in no
container (which have no ``container`` block), as Falco's ``container.id`` has it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_EXPR = re.compile(r"^\s*([A-Za-z@_][\w.@]*)\s*(!=|==|\^=|\$=|~|=)\s*(.*)$")


class FilterError(ValueError):
    pass


@dataclass(slots=True, frozen=True)
class FieldFilter:
    path: tuple[str, ...]
    op: str
    value: str

    def __call__(self, doc: dict[str, Any]) -> bool:
        if self.path == _CONTAINER_ID:
            values = _container_ids(doc)
        else:
            found = _lookup(doc, self.path)
            values = found if isinstance(found, list) else [found]
        hit = any(_test(self.op, v, self.value) for v in values if v is not None)
        return not hit if self.op == "!=" else hit


_CONTAINER_ID = ("container", "id")
_SHORT_ID = ("sentinel", "container", "short_id")


def _container_ids(doc: dict[str, Any]) -> list[Any]:
    full = _lookup(doc, _CONTAINER_ID)
    return ["host"] if full is None else [full, _lookup(doc, _SHORT_ID)]


def _lookup(doc: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path``; through a list of objects (``sentinel.ancestors.pid``), a list of values."""
    cur = doc
    for key in path:
        if isinstance(cur, list):
            cur = [item.get(key) for item in cur if isinstance(item, dict)]
        elif isinstance(cur, dict):
            cur = cur.get(key)
        else:
            return None
    return cur


def _test(op: str, actual: Any, wanted: str) -> bool:
    text = str(actual).lower() if isinstance(actual, bool) else str(actual)
    if op in ("=", "!="):
        return text == wanted
    if op == "~":
        return wanted in text
    if op == "^=":
        return text.startswith(wanted)
    return text.endswith(wanted)


def parse_filter(expr: str) -> FieldFilter:
    m = _EXPR.match(expr)
    if not m:
        raise FilterError(
            f"bad filter {expr!r}: expected FIELD OP VALUE with OP one of = != ~ ^= $= "
            "(e.g. process.name=bash, file.path^=/etc/)"
        )
    path, op, value = m.groups()
    return FieldFilter(tuple(path.split(".")), "=" if op == "==" else op, value.strip())


def compile_filters(exprs: list[str]) -> Callable[[dict[str, Any]], bool] | None:
    filters = [parse_filter(e) for e in exprs]
    if not filters:
        return None
    return lambda doc: all(f(doc) for f in filters)
