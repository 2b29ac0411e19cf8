"""Rule fixtures: events (as ``sentinel events`` prints them) with the rules that must fire on them.

A rules file ``x.yaml`` may have a sibling ``x.fixtures.yaml``, a list of
``{name, event: <ECS document>, expect: [rule names]}``; ``expect`` is exactly the set of rules (of the whole
ruleset under test) that must fire. :func:`from_ecs` rebuilds the matcher's input from such a document — an
Event and a Process chain from ``process``, ``process.parent`` and ``sentinel.ancestors`` — so fixtures can be
written by hand (fields that do not matter left out) or pasted from real output.

A rule counts a *positive* fixture when one expects it, and a *negative* one when a fixture of its own file
reaches it (an event type it looks at) without expecting it: an event it examined and must reject.

Sigma correlations are not tested by fixtures: a fixture is one event and a correlation counts several. Their
base rules are (they fire on fixtures whatever ``generate`` says: a fixture tests the detection, not which
alerts are written), correlations need no fixture, and a fixture expecting one is an error that says why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sentinel.rules.fixture_context import (  # the document reader; re-exported
    FixtureError as FixtureError,
)
from sentinel.rules.fixture_context import (
    StaticMlView as StaticMlView,
)
from sentinel.rules.fixture_context import (
    from_ecs as from_ecs,
)
from sentinel.rules.fixture_context import (
    parse_time as parse_time,
)
from sentinel.rules.loader import LoadResult, expand_paths, load_rules
from sentinel.rules.model import Diagnostic
from sentinel.rules.source import SourceText

FIXTURE_SUFFIXES = (".fixtures.yaml", ".fixtures.yml")


@dataclass
class Fixture:
    name: str
    file: str
    line: int
    expect: list[str]
    doc: Any


@dataclass
class FixtureResult:
    fixture: Fixture
    fired: list[str]
    ok: bool
    error: str | None = None
    event_type: int | None = None

    def to_dict(self) -> dict[str, Any]:
        f = self.fixture
        missing = [r for r in f.expect if r not in self.fired]
        unexpected = [r for r in self.fired if r not in f.expect]
        return {
            "name": f.name, "file": f.file, "line": f.line, "ok": self.ok, "expected": f.expect,
            "fired": self.fired, "missing": missing, "unexpected": unexpected, "error": self.error,
        }  # fmt: skip


@dataclass
class RuleCoverage:
    rule: str
    file: str
    line: int
    positive: int = 0
    negative: int = 0
    failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "file": self.file, "line": self.line, "positive": self.positive,
                "negative": self.negative, "failed": self.failed}  # fmt: skip


@dataclass
class TestReport:
    load: LoadResult
    results: list[FixtureResult] = field(default_factory=list)
    coverage: dict[str, RuleCoverage] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)  # fixture files' problems, coverage gaps

    @property
    def ok(self) -> bool:
        return (
            self.load.ruleset is not None
            and all(r.ok for r in self.results)
            and not any(d.severity == "error" for d in self.diagnostics)
        )

    @property
    def failed(self) -> list[FixtureResult]:
        return [r for r in self.results if not r.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "load_diagnostics": [d.to_dict() for d in self.load.diagnostics],
            "diagnostics": [d.to_dict() for d in self.diagnostics],
            "fixtures": [r.to_dict() for r in self.results],
            "rules": [c.to_dict() for c in self.coverage.values()],
            "passed": sum(1 for r in self.results if r.ok),
            "failed": len(self.failed),
        }


def fixtures_path(rules_file: str) -> str | None:
    base = rules_file
    for ext in (".yaml", ".yml"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    for suffix in FIXTURE_SUFFIXES:
        cand = base + suffix
        if Path(cand).is_file():
            return cand
    return None


def read_fixtures(path: str) -> tuple[list[Fixture], list[Diagnostic]]:
    """Fixtures of one file with their lines; problems as located diagnostics."""
    diags: list[Diagnostic] = []
    empty = SourceText(path, "")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [empty.diagnostic("error", "unreadable-file", f"cannot read fixtures {path}: {exc}", 1, 1)]
    src = SourceText(path, text)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = src.position(mark.index) if mark is not None else (1, 1)
        return [], [src.diagnostic("error", "yaml-error", f"YAML: {exc.problem}", line, col)]
    except (yaml.YAMLError, RecursionError) as exc:
        return [], [src.diagnostic("error", "yaml-error", f"YAML: {exc}", 1, 1)]
    if data is None:
        return [], []
    if not isinstance(data, list) or not isinstance(node, yaml.SequenceNode):
        return [], [
            src.diagnostic("error", "not-a-list", "a fixtures file is a list of {name, event, expect}", 1, 1)
        ]
    out: list[Fixture] = []
    seen: dict[str, int] = {}
    for item, inode in zip(data, node.value, strict=False):
        line, col = src.position(inode.start_mark.index)
        if not isinstance(item, dict):
            diags.append(
                src.diagnostic("error", "bad-type", "a fixture is a mapping {name, event, expect}", line, col)
            )
            continue
        missing = [k for k in ("name", "event", "expect") if k not in item]
        if missing:
            diags.append(
                src.diagnostic("error", "missing-key", f"fixture is missing: {', '.join(missing)}", line, col)
            )
            continue
        for key in item:
            if key not in ("name", "event", "expect", "description", "note"):
                diags.append(
                    src.diagnostic("warning", "unknown-key", f"unknown key {key!r} in a fixture", line, col)
                )
        name = str(item["name"])
        if name in seen:
            diags.append(
                src.diagnostic(
                    "error",
                    "duplicate-item",
                    f"fixture name {name!r} is used twice (first on line {seen[name]})",
                    line,
                    col,
                )
            )
        seen[name] = line
        expect = item["expect"]
        if expect is None:
            expect = []
        if isinstance(expect, str):
            expect = [expect]
        if not isinstance(expect, list) or not all(isinstance(e, str) for e in expect):
            diags.append(src.diagnostic("error", "bad-type", "expect is a list of rule names", line, col))
            continue
        out.append(Fixture(name, path, line, list(expect), item["event"]))
    return out, diags


def run_fixtures(paths: Iterable[str | Path]) -> TestReport:
    """Load the rules at ``paths`` and run every rules file's sibling fixtures against the whole ruleset."""
    rule_paths: list[str] = []
    explicit: list[str] = []
    for p in paths:
        s = str(p)
        if s.endswith(FIXTURE_SUFFIXES):
            explicit.append(s)
            base = s[: -len(".fixtures.yaml")] if s.endswith(".fixtures.yaml") else s[: -len(".fixtures.yml")]
            rule_paths.append(base + (".yaml" if Path(base + ".yaml").exists() else ".yml"))
        else:
            rule_paths.append(s)
    load = load_rules(rule_paths)
    report = TestReport(load)
    rs = load.ruleset
    fixture_files: list[str] = []
    for f, _ in expand_paths(rule_paths):
        fx = fixtures_path(f)
        if fx is not None and fx not in fixture_files:
            fixture_files.append(fx)
    for fx in explicit:
        if fx not in fixture_files:
            fixture_files.append(fx)
    if rs is None:
        return report
    for r in rs.rules:
        if r.enabled and r.skipped is None and r.correlation is None:  # a correlation needs many events
            report.coverage[r.name] = RuleCoverage(r.name, r.file, r.line)
    rules_by_file: dict[str, list[str]] = {}
    for r in rs.rules:
        rules_by_file.setdefault(r.file, []).append(r.name)
    for fx_file in fixture_files:
        fixtures, diags = read_fixtures(fx_file)
        report.diagnostics.extend(diags)
        src = SourceText(fx_file, _read_or_empty(fx_file))
        own_rules = set(rules_by_file.get(_rules_sibling(fx_file), []))
        for fixture in fixtures:
            for name in fixture.expect:
                rule = rs.get(name)
                problem = None
                if rule is None:
                    problem = f"fixture {fixture.name!r} expects rule {name!r}, which is not in the ruleset"
                elif rule.refused:
                    problem = f"fixture {fixture.name!r} expects rule {name!r}, which was {rule.skipped}"
                elif not rule.enabled or rule.skipped is not None:
                    problem = f"fixture {fixture.name!r} expects rule {name!r}, which is disabled"
                elif rule.correlation is not None:
                    problem = (f"fixture {fixture.name!r} expects rule {name!r}, a Sigma correlation: it "
                               "counts several events, which a single-event fixture cannot show")  # fmt: skip
                if problem:
                    report.diagnostics.append(
                        src.diagnostic("error", "unknown-rule", problem, fixture.line, 1)
                    )
            try:
                ctx = from_ecs(fixture.doc)
            except FixtureError as exc:
                report.results.append(FixtureResult(fixture, [], False, f"bad event: {exc}"))
                continue
            fired = [r.name for r in rs.match(ctx)]
            ok = sorted(set(fired)) == sorted(set(fixture.expect))
            report.results.append(FixtureResult(fixture, fired, ok, None, int(ctx.ev.type)))
            for name in fixture.expect:
                cov = report.coverage.get(name)
                if cov is not None:
                    cov.positive += 1
                    if not ok:
                        cov.failed += 1
            for name in own_rules - set(fixture.expect):
                cov = report.coverage.get(name)
                rule = rs.get(name)
                if cov is None or rule is None:
                    continue
                if rule.event_types is None or int(ctx.ev.type) in rule.event_types:
                    cov.negative += 1
                    if name in fired:
                        cov.failed += 1
    for cov in report.coverage.values():
        lacking = [k for k, n in (("positive", cov.positive), ("negative", cov.negative)) if n == 0]
        if lacking:
            src = SourceText(cov.file, _read_or_empty(cov.file))
            report.diagnostics.append(
                src.diagnostic("warning", "missing-fixture",
                               f"rule {cov.rule!r} has no {' and no '.join(lacking)} fixture", cov.line, 1,
                               cov.rule)
            )  # fmt: skip
    return report


def _rules_sibling(fixtures_file: str) -> str:
    for suffix in FIXTURE_SUFFIXES:
        if fixtures_file.endswith(suffix):
            base = fixtures_file[: -len(suffix)]
            for ext in (".yaml", ".yml"):
                if Path(base + ext).exists():
                    return base + ext
            return base + ".yaml"
    return fixtures_file


def _read_or_empty(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def format_report(report: TestReport) -> str:
    from sentinel.rules.validate import format_diagnostic

    out: list[str] = []
    for d in report.load.diagnostics:
        if d.severity == "error":
            out.append(format_diagnostic(d))
    for d in report.diagnostics:
        out.append(format_diagnostic(d))
    for r in report.failed:
        f = r.fixture
        out.append(f"{f.file}:{f.line}: FAIL {f.name}")
        if r.error:
            out.append(f"    {r.error}")
            continue
        out.append(f"    expected: {', '.join(f.expect) or '(none)'}")
        out.append(f"    fired:    {', '.join(r.fired) or '(none)'}")
    if report.coverage:
        width = max(len(c.rule) for c in report.coverage.values())
        out.append(f"{'rule':<{width}}  pos  neg  result")
        for c in report.coverage.values():
            status = "FAIL" if c.failed else "missing fixtures" if not (c.positive and c.negative) else "ok"
            out.append(f"{c.rule:<{width}}  {c.positive:>3}  {c.negative:>3}  {status}")
    passed = sum(1 for r in report.results if r.ok)
    out.append(
        f"{len(report.results)} fixture(s): {passed} passed, {len(report.failed)} failed"
        + ("" if report.load.ruleset is not None else "; the rules did not load")
    )
    return "\n".join(out)
