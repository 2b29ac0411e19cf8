"""``sentinel rules validate``: load rule files as the agent would and report per file, Falco ``-V`` style.

Each file is Ok, Ok with warnings, or Invalid; every message has file:line:column, a stable code, and the
source line with a caret under the column. The files are loaded together, in order, so a local file that
tunes shipped rules validates against them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentinel.rules.loader import LoadResult, load_rules
from sentinel.rules.model import Diagnostic

OK = "Ok"
OK_WARNINGS = "Ok with warnings"
INVALID = "Invalid"
REFUSED = "Rules refused"  # loads, but without the rules its warnings name (rule-refused)


@dataclass
class FileReport:
    file: str
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(1 for d in self.diagnostics if d.severity == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for d in self.diagnostics if d.severity == "warning")

    @property
    def status(self) -> str:
        if self.errors:
            return INVALID
        if any(d.refuses for d in self.diagnostics):  # the file holding what refused a rule
            return REFUSED
        return OK_WARNINGS if self.warnings else OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "status": self.status,
            "errors": self.errors,
            "warnings": self.warnings,
            "diagnostics": [d.to_dict() for d in self.diagnostics],
        }


@dataclass
class Validation:
    result: LoadResult
    files: list[FileReport]

    @property
    def ok(self) -> bool:
        rs = self.result.ruleset
        refused = rs is not None and bool(rs.refused)
        return (
            all(f.status not in (INVALID, REFUSED) for f in self.files)
            and not self.result.errors
            and not refused
        )

    def to_dict(self) -> dict[str, Any]:
        rs = self.result.ruleset
        return {
            "ok": self.ok,
            "files": [f.to_dict() for f in self.files],
            "rules": len(rs.rules) if rs else None,
            "enabled_rules": len(rs.enabled_rules) if rs else None,
            "refused_rules": [r.name for r in rs.refused] if rs else None,
            "never_fire_rules": [r.name for r in rs.never_fire] if rs else None,
            "sha256": rs.sha256 if rs else None,
        }


def validate(paths: Iterable[str | Path]) -> Validation:
    paths = list(paths)
    result = load_rules(paths)
    reports: dict[str, FileReport] = {f: FileReport(f) for f in result.files}
    for p in paths:
        if Path(p).is_dir() and not any(str(f).startswith(str(p)) for f in result.files):
            reports.setdefault(str(p), FileReport(str(p))).diagnostics.append(
                Diagnostic("warning", "no-rules-files", f"{p} holds no *.yaml rule files", str(p), 1, 1)
            )
    for d in result.diagnostics:
        reports.setdefault(d.file, FileReport(d.file)).diagnostics.append(d)
    for rep in reports.values():
        rep.diagnostics.sort(key=lambda d: (d.line, d.column, d.severity != "error"))
    return Validation(result, list(reports.values()))


def caret_line(snippet: str, column: int) -> str:
    """Spaces (tabs kept, so the caret lines up) up to the column, then ``^``."""
    pad = "".join("\t" if c == "\t" else " " for c in snippet[: max(0, column - 1)])
    return pad + "^"


_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")


def safe(text: str) -> str:
    """Control characters (and lone surrogates) escaped, so a hostile rules file cannot drive the terminal."""
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", text
    )


def format_diagnostic(d: Diagnostic) -> str:
    head = f"{safe(d.file)}:{d.line}:{d.column}: {d.severity} [{d.code}] {safe(d.message)}"
    if not d.snippet:
        return head
    snippet = safe(d.snippet)
    column = len(safe(d.snippet[: max(0, d.column - 1)])) + 1  # escapes before the column widen it
    return f"{head}\n    {snippet}\n    {caret_line(snippet, column)}"


def format_text(v: Validation) -> str:
    out: list[str] = []
    for rep in v.files:
        out.append(f"{safe(rep.file)}: {rep.status}")
        for d in rep.diagnostics:
            out.append(format_diagnostic(d))
    rs = v.result.ruleset
    if rs is not None:
        out.append(
            f"{len(rs.rules)} rules ({len(rs.enabled_rules)} enabled) from {len(v.result.files)} file(s); "
            f"sha256 {rs.sha256}"
        )
        if rs.refused:
            out.append(f"{len(rs.refused)} rule(s) refused (not loaded; the warnings above say why): "
                       + ", ".join(safe(r.name) for r in rs.refused))  # fmt: skip
        if rs.never_fire:
            out.append(f"{len(rs.never_fire)} rule(s) can never fire here (they need what sentinel does not "
                       "capture): " + ", ".join(safe(r.name) for r in rs.never_fire))  # fmt: skip
    elif not v.ok:
        n = sum(f.errors for f in v.files)
        out.append(f"{n} error(s): the rules cannot be used")
    return "\n".join(out)
