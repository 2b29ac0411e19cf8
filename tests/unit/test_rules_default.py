"""The shipped ruleset (`rules/`) against the engine: it loads without errors, its fixtures pass, and every
enabled rule has at least one positive and one negative fixture."""

from __future__ import annotations

from pathlib import Path

from sentinel.rules import load_rules
from sentinel.rules.fixtures import run_fixtures
from sentinel.rules.validate import format_diagnostic

RULES = Path(__file__).resolve().parents[2] / "rules"


def test_shipped_rules_load_without_errors() -> None:
    res = load_rules([RULES])
    errors = [format_diagnostic(d) for d in res.diagnostics if d.severity == "error"]
    assert errors == [], "\n".join(errors)
    assert res.ruleset is not None and res.ruleset.enabled_rules


def test_shipped_fixtures_pass_and_cover_every_rule() -> None:
    report = run_fixtures([RULES])
    failures = [
        f"{r.fixture.file}:{r.fixture.line}: {r.fixture.name}: expected {r.fixture.expect}, fired "
        f"{r.fired} {r.error or ''}"
        for r in report.failed
    ]
    assert failures == [], "\n".join(failures)
    problems = [format_diagnostic(d) for d in report.diagnostics]
    assert problems == [], "\n".join(problems)
    assert report.ok
