"""Loading Falco-style rule files into a RuleSet, in the stages of Falco's engine, one module each:

- :mod:`~sentinel.rules.reader`: bytes → located YAML nodes (and the shared diagnostics);
- :mod:`~sentinel.rules.collector`: items from every file in load order (overrides, appends, versions);
- :mod:`~sentinel.rules.resolver`: which macros and lists a condition sees, as Falco resolves them;
- :mod:`~sentinel.rules.rule_compiler`: conditions, exceptions and outputs into typed trees; a rule that
  cannot be compiled is refused alone;
- :mod:`~sentinel.rules.sigma`: Sigma documents (``logsource`` + ``detection``) in the same files and
  directories, into the same rules, in load order.

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
from sentinel.rules.model import Diagnostic, Rule
from sentinel.rules.reader import Reporter, YamlReader
from sentinel.rules.resolver import Resolver
from sentinel.rules.rule_compiler import RuleCompiler
from sentinel.rules.ruleset import RuleSet
from sentinel.rules.sigma.detect import sigma_kind
from sentinel.rules.sigma.frontend import SigmaFrontEnd
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


MAX_DIR_DEPTH = 8  # nested rule folders (SigmaHQ: rules/linux/process_creation/...); deeper is ignored


def expand_paths(paths: Iterable[str | Path]) -> list[tuple[str, bool]]:
    """Files to load, in order: (path, is_dir_member). A directory gives its rule files sorted, then those of
    its subdirectories (sorted, depth first; hidden ones skipped), so a Sigma tree loads by its top folder."""
    out: list[tuple[str, bool]] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out.extend((str(f), True) for f in _rule_files(path, 0))
        else:
            out.append((str(path), False))
    return out


def _rule_files(folder: Path, depth: int) -> list[Path]:
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return []
    files = [
        c for c in children
        if c.suffix in (".yaml", ".yml") and not c.name.endswith((".fixtures.yaml", ".fixtures.yml"))
        and c.is_file()
    ]  # fmt: skip
    if depth < MAX_DIR_DEPTH:
        for sub in children:
            if sub.is_dir() and not sub.name.startswith(".") and not sub.is_symlink():
                files.extend(_rule_files(sub, depth + 1))
    return files


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
        self.sigma = SigmaFrontEnd(self.rep, self.comp)

    @property
    def diags(self) -> list[Diagnostic]:
        return self.rep.diags

    @property
    def hash(self) -> Any:
        return self.read.hash

    def load_file(self, path: str) -> None:
        got = self.read.read_file(path)
        if got is not None:
            self.add_documents(*got)

    def load_source(self, src: SourceText, data: bytes) -> None:
        docs = self.read.read_source(src, data)
        if docs is not None:
            self.add_documents(src, docs)

    def add_documents(self, src: SourceText, docs: list[Any]) -> None:
        """Each document to its front end, in order: a Sigma one (a mapping with logsource and detection,
        or a correlation) to the Sigma front end, anything else to the Falco-style collector."""
        for doc in docs:
            if sigma_kind(doc) is not None:
                self.col.seq += 1
                self.sigma.add(src, doc, self.col.seq)
            else:
                self.col.add_documents(src, [doc])

    def finish(self) -> list[Any]:
        """Every rule in load order: Falco-style ones by where they were first defined, Sigma ones by where
        they were read."""
        self.sigma.finish()  # correlations, now that every rule they may refer to is read
        falco = self.compiler.finish()
        if not self.sigma.rules:
            return falco
        seq = {item.name: item.seq for item in self.col.rule_order}
        ordered = [(seq.get(r.name, 0), r) for r in falco] + self.sigma.rules
        ordered.sort(key=lambda pair: pair[0])
        return self.unique_names([r for _, r in ordered])

    def unique_names(self, rules: list[Rule]) -> list[Rule]:
        """Rules are selected, aggregated and tested by name, so names stay unique: the same Sigma id loaded
        twice keeps the later copy (as a Falco redefinition does); a Sigma title that another rule already
        uses gets its id appended. Both say so."""
        by_id: dict[str, Rule] = {}
        for r in rules:
            sid = r.meta.get("id") if r.meta.get("format") == "sigma" else None
            if sid:
                earlier = by_id.get(sid)
                if earlier is not None:
                    where = f"{earlier.file}:{earlier.line}"
                    self.warn(r, "duplicate-item", f"Sigma rule {sid} is loaded again (first at {where}); "
                              "this copy replaces it")  # fmt: skip
                by_id[sid] = r
        kept = [r for r in rules if by_id.get(r.meta.get("id") or "", r) is r]
        seen: dict[str, Rule] = {}
        for r in kept:
            if r.name in seen and r.meta.get("format") == "sigma":
                first = seen[r.name]
                new = f"{r.name} [sigma {(r.meta.get('id') or Path(r.file).stem)[:8]}]"
                self.warn(r, "duplicate-name", f"rule name '{r.name}' is taken ({first.file}:{first.line}): "
                          f"this Sigma rule is named '{new}'")  # fmt: skip
                r.name = new
            seen.setdefault(r.name, r)
        return kept

    def warn(self, rule: Rule, code: str, message: str) -> None:
        self.rep.diags.append(
            Diagnostic("warning", code, message, rule.file, rule.line, rule.column, item=rule.name)
        )


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
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: what undecodable bytes become, refused as a file's
        src = SourceText(name, text)
        line, col = src.position(exc.start)
        problem = f"not UTF-8 text: U+{ord(text[exc.start]):04X} cannot be encoded"
        loader.diags.append(src.diagnostic("error", "yaml-error", problem, line, col))
        return LoadResult(None, loader.diags, [name])
    try:
        loader.load_source(SourceText(name, text), data)
        rules = loader.finish()
        if any(d.severity == "error" for d in loader.diags):
            return LoadResult(None, loader.diags, [name])
        return LoadResult(RuleSet(rules, loader.hash.hexdigest(), **kw), loader.diags, [name])
    except Exception as exc:
        loader.diags.append(Diagnostic("error", "internal-error", f"internal error: {exc!r}", name, 1, 1))
        return LoadResult(None, loader.diags, [name])
