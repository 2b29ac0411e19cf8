"""Loading Falco-style rule files into a RuleSet, in the stages of Falco's engine, one module each:

- :mod:`~sentinel.rules.reader`: bytes → located YAML nodes (and the shared diagnostics);
- :mod:`~sentinel.rules.collector`: items from every file in load order (overrides, appends, versions);
- :mod:`~sentinel.rules.resolver`: which macros and lists a condition sees, as Falco resolves them;
- :mod:`~sentinel.rules.rule_compiler`: conditions, exceptions and outputs into typed trees; a rule that
  cannot be compiled is refused alone.

Files load in the order given (a directory: its ``*.yaml``/``*.yml`` files, fixtures excluded, sorted),
all into one collection, compiled after everything is collected. Every problem becomes a located
:class:`Diagnostic` (file, line, column, snippet); nothing about a bad rules file raises. A file-level error
(YAML, structure, a newer engine version) leaves no ruleset; a refused rule does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentinel.rules.collector import Collector
from sentinel.rules.compiler import CondCompiler
from sentinel.rules.model import Diagnostic
from sentinel.rules.reader import Reporter, YamlReader
from sentinel.rules.resolver import Resolver
from sentinel.rules.rule_compiler import RuleCompiler
from sentinel.rules.ruleset import RuleSet
from sentinel.rules.source import SourceText


@dataclass
class LoadResult:
    ruleset: RuleSet | None  # None when any file has an error
    diagnostics: list[Diagnostic]
    files: list[str]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]


def expand_paths(paths: Iterable[str | Path]) -> list[tuple[str, bool]]:
    """Files to load, in order: (path, is_dir_member). A directory gives its rule files, sorted."""
    out: list[tuple[str, bool]] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if (
                    child.suffix in (".yaml", ".yml")
                    and not child.name.endswith((".fixtures.yaml", ".fixtures.yml"))
                    and child.is_file()
                ):
                    out.append((str(child), True))
        else:
            out.append((str(path), False))
    return out


class Loader:
    """The stages wired together over one shared reporter."""

    def __init__(self) -> None:
        self.rep = Reporter()
        self.read = YamlReader(self.rep)
        self.col = Collector(self.rep, self.read)
        self.res = Resolver(self.rep, self.col.items)
        self.comp = CondCompiler(self.res, self.rep.report)
        self.res.comp = self.comp
        self.compiler = RuleCompiler(self.rep, self.col, self.res, self.comp)

    @property
    def diags(self) -> list[Diagnostic]:
        return self.rep.diags

    @property
    def hash(self) -> Any:
        return self.read.hash

    def load_file(self, path: str) -> None:
        got = self.read.read_file(path)
        if got is not None:
            self.col.add_documents(*got)

    def load_source(self, src: SourceText, data: bytes) -> None:
        docs = self.read.read_source(src, data)
        if docs is not None:
            self.col.add_documents(src, docs)

    def finish(self) -> list[Any]:
        return self.compiler.finish()


def load_rules(paths: Iterable[str | Path], *, index_min: int | None = None) -> LoadResult:
    """Load rule files and directories in order into one RuleSet; never raises for bad input."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    loader = Loader()
    files: list[str] = []
    try:
        for path, _ in expand_paths(paths):
            files.append(path)
            loader.load_file(path)
        rules = loader.finish()
        if any(d.severity == "error" for d in loader.diags):
            return LoadResult(None, loader.diags, files)
        kwargs = {} if index_min is None else {"index_min": index_min}
        ruleset = RuleSet(rules, loader.hash.hexdigest(), **kwargs)
    except Exception as exc:  # a bug must not become a traceback for a rule author
        where = files[-1] if files else "<rules>"
        loader.diags.append(
            Diagnostic("error", "internal-error", f"internal error while loading rules: {exc!r}", where, 1, 1)
        )
        return LoadResult(None, loader.diags, files)
    return LoadResult(ruleset, loader.diags, files)


def load_text(text: str, name: str = "<rules>", **kw: Any) -> LoadResult:
    """Load rules from a string (tests, tools): as one file called ``name``."""
    loader = Loader()
    try:
        loader.load_source(SourceText(name, text), text.encode("utf-8", "surrogateescape"))
        rules = loader.finish()
        if any(d.severity == "error" for d in loader.diags):
            return LoadResult(None, loader.diags, [name])
        return LoadResult(RuleSet(rules, loader.hash.hexdigest(), **kw), loader.diags, [name])
    except Exception as exc:
        loader.diags.append(Diagnostic("error", "internal-error", f"internal error: {exc!r}", name, 1, 1))
        return LoadResult(None, loader.diags, [name])
