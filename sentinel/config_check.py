"""`sentinel config check`: everything the agent would refuse at start, found before it is started.

Loads the configuration as the agent would (main file + drop-ins) and checks what it references: the rules
load (their own located diagnostics are passed through), the ``rules_enable``/``rules_disable`` selectors
name rules and tags that exist, the model verifies, the outputs are complete, the state directory can be
made. **Errors** are mistakes in the configuration; **warnings** are things this host is not ready for yet
(a CA file or a log directory missing, a directory the checking user cannot write) — a check run on a build
machine or as an unprivileged user must not fail for them — and settings that have no effect.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sentinel.config import Config, Location, load_effective_config, missing_rule_paths
from sentinel.sinks import OutputSpecError, check_sink_config

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2
# A group with a repetition inside, repeated itself: ``(a+)+``, ``(\w*x)*`` — exponential backtracking.
_NESTED_REPEAT = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)(?:[+*]|\{\d*,)")


@dataclass(slots=True)
class Finding:
    """One error or warning, located (``FILE:LINE:COL: severity: message``); ``code`` says which check."""

    severity: str  # error | warning
    message: str
    file: str = ""
    line: int = 0
    column: int = 0
    # config | rules:<rule code> | selector | model | output | state-dir | redact | containers
    code: str = "config"
    snippet: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else (self.file or "<config>")
        return f"{where}: {self.severity}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class CheckReport:
    """What ``check_config`` found; ``ok`` when there is no error (warnings allowed)."""

    path: str | None  # the main file (None: no file, the defaults)
    files: list[str] = field(default_factory=list)
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    usage_error: str | None = None  # the named file does not exist: nothing was checked
    config: Config | None = None
    rules_total: int = 0
    rules_enabled: int = 0
    ruleset_sha256: str = ""
    outputs: list[str] = field(default_factory=list)  # labels (credentials left out)

    @property
    def ok(self) -> bool:
        return self.usage_error is None and not self.errors

    def add(self, severity: str, message: str, where: Location, code: str) -> None:
        finding = Finding(severity, message, where[0], where[1], where[2], code)
        (self.errors if severity == "error" else self.warnings).append(finding)

    def to_dict(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "ok": self.ok,
            "path": self.path,
            "files": self.files,
            "errors": [f.to_dict() for f in self.errors],
            "warnings": [f.to_dict() for f in self.warnings],
            "summary": {
                "rules": self.rules_total,
                "rules_enabled": self.rules_enabled,
                "ruleset_sha256": self.ruleset_sha256,
                "outputs": self.outputs,
                "model": cfg.model if cfg else None,
                "state_dir": cfg.state_dir if cfg else None,
                "metrics_address": cfg.metrics_address if cfg else None,
            },
        }


def check_config(path: str | None, env: dict[str, str] | None = None) -> CheckReport:
    """Load the configuration at ``path`` (None: the default file if it exists) and check what it names."""
    report = CheckReport(path=path)
    if path is not None and not os.path.isfile(path):
        report.usage_error = f"{path}: {'not a file' if os.path.exists(path) else 'no such file'}"
        return report
    # Lenient: each bad setting is reported and keeps its default, and every check below still runs on the
    # rest, so one run lists every problem (not one per edit-and-retry round).
    cfg = load_effective_config(path, env, strict=False)
    for exc in cfg.errors:
        report.errors.append(Finding("error", exc.message, exc.file, exc.line, exc.column))
    report.config, report.files, report.path = cfg, list(cfg.files), cfg.source
    for w in cfg.warnings:
        report.warnings.append(Finding("warning", w.message, w.file, w.line, w.column))
    _check_rules(cfg, report)
    _check_model(cfg, report)
    _check_outputs(cfg, report)
    _check_state_dir(cfg, report)
    _check_redact(cfg, report)
    _check_containers(cfg, report)
    order = {f: i for i, f in enumerate(report.files)}  # the order the files are read, then line, column
    for findings in (report.errors, report.warnings):
        findings.sort(key=lambda f: (order.get(f.file, len(order)), f.line, f.column))
    return report


def _check_rules(cfg: Config, report: CheckReport) -> None:
    from sentinel.agent import check_selectors
    from sentinel.detect import find_rules_dir, load_ruleset

    paths = cfg.rules
    if paths is None:
        shipped = find_rules_dir()
        if shipped is None:
            report.add(
                "error",
                "no rules: the shipped rules were not found (rules/ next to the package, /usr/share/sentinel/"
                "rules or $SENTINEL_RULES); name them with rules:",
                cfg.location("rules"),
                "rules",
            )
            return
        paths = [str(shipped)]
    else:  # a path that is not there is the configuration's mistake: located where the config names it
        for exc in missing_rule_paths(cfg):
            report.errors.append(Finding("error", exc.message, exc.file, exc.line, exc.column, "rules"))
        paths = [p for p in paths if os.path.exists(p)]
        if not paths:
            return
    outcome = load_ruleset(paths)
    for d in outcome.diagnostics:
        # A refused rule loads as a warning (the agent runs the others) but is a defect of this configuration.
        severity = "error" if d.code == "rule-refused" else d.severity
        finding = Finding(severity, d.message, str(d.file), d.line, d.column, f"rules:{d.code}", d.snippet)
        (report.errors if severity == "error" else report.warnings).append(finding)
    if not outcome.diagnostics:  # an engine failure has no diagnostic objects, only text
        for text in outcome.errors:
            report.add("error", text, cfg.location("rules"), "rules")
    rs = outcome.ruleset
    if rs is None:
        return
    report.ruleset_sha256 = rs.sha256
    sel = check_selectors(rs, cfg)
    for message, where in sel.errors:
        report.add("error", message, where, "selector")
    for message, where in sel.warnings:
        report.add("warning", message, where, "selector")
    if sel.tuned is not None:
        report.rules_total, report.rules_enabled = len(sel.tuned.rules), len(sel.tuned.enabled_rules)


def _check_model(cfg: Config, report: CheckReport) -> None:
    from sentinel.anomaly.live import DEFAULT_REFUSED, load_checked_model

    where = cfg.location("model")
    if cfg.model == "off":
        return
    if cfg.model == "auto":
        host_model = Path(cfg.state_dir) / "anomaly" / "model"
        if (host_model / "manifest.json").is_file():
            _, problem = load_checked_model(host_model)
            if problem:
                report.add("warning", f"model auto: this host's trained model is refused ({problem}); the "
                           "agent learns this host again", where, "model")  # fmt: skip
        return
    if cfg.model == "default":
        report.add("error", f"model default: {DEFAULT_REFUSED}", where, "model")
        return
    _, problem = load_checked_model(Path(cfg.model))
    if problem:
        report.add("error", f"model {cfg.model}: {problem}", where, "model")


def _check_outputs(cfg: Config, report: CheckReport) -> None:
    uid = os.geteuid()
    configs = cfg.sink_configs()
    n_output = len(cfg.output)
    for i, sc in enumerate(configs):
        where = cfg.location(f"output[{i}]") if i < n_output else cfg.location(f"sinks[{i - n_output}]")
        label = sc.label()
        report.outputs.append(label)
        try:
            check_sink_config(sc)
        except OutputSpecError as exc:
            report.add("error", str(exc), where, "output")
            continue
        for attr in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            name = getattr(sc, attr)
            if name and not os.path.isfile(name):
                report.add("warning", f"{label}: {attr} {name} does not exist", where, "output")
            elif name and not os.access(name, os.R_OK):
                report.add("warning", f"{label}: {attr} {name} is not readable by uid {uid}", where, "output")
        if sc.kind == "file":
            target = Path(sc.target)
            if target.is_dir():
                report.add("error", f"{label}: {sc.target} is a directory", where, "output")
            elif not target.parent.is_dir():  # the file output makes it (0750) at start: can it?
                ancestor = target.parent
                while not ancestor.is_dir() and ancestor != ancestor.parent:
                    ancestor = ancestor.parent
                if not os.access(ancestor, os.W_OK):
                    problem = f"cannot create {target.parent}: {ancestor} is not writable by uid {uid}"
                    report.add("warning", f"{label}: {problem}", where, "output")
            elif not os.access(target if target.exists() else target.parent, os.W_OK):
                report.add("warning", f"{label}: {sc.target} is not writable by uid {uid}", where, "output")
        elif sc.kind == "syslog" and sc.target.startswith("unix:") and not os.path.exists(sc.target[5:]):
            report.add("warning", f"{label}: socket {sc.target[5:]} does not exist", where, "output")


def _check_state_dir(cfg: Config, report: CheckReport) -> None:
    where = cfg.location("state_dir")
    path = Path(cfg.state_dir)
    uid = os.geteuid()
    if path.exists():
        if not path.is_dir():
            report.add("error", f"state_dir {path} exists and is not a directory", where, "state-dir")
        elif not os.access(path, os.W_OK | os.X_OK):
            report.add("warning", f"state_dir {path} is not writable by uid {uid}", where, "state-dir")
        return
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        report.add(
            "error", f"state_dir {path} cannot be created: {parent} is not a directory", where, "state-dir"
        )
    elif not os.access(parent, os.W_OK | os.X_OK):
        report.add(
            "warning",
            f"state_dir {path} does not exist and uid {uid} cannot create it in {parent}",
            where,
            "state-dir",
        )


def _check_redact(cfg: Config, report: CheckReport) -> None:
    for i, pattern in enumerate(cfg.redact):
        if _NESTED_REPEAT.search(pattern.pattern):
            report.add(
                "warning",
                f"redact: {pattern.pattern!r} repeats a repetition; it can backtrack for a very long time on "
                "some command lines",
                cfg.location(f"redact[{i}]"),
                "redact",
            )


def _check_containers(cfg: Config, report: CheckReport) -> None:
    """Configured runtime sockets this host does not have yet, or cannot be asked through (a warning: the
    agent starts, and asks again as containers appear)."""
    if not cfg.container_metadata or cfg.container_endpoints is None:
        return
    from sentinel.containers.endpoints import CRI, parse_endpoint

    where = cfg.location("containers.endpoints")
    for text in cfg.container_endpoints:
        endpoint = parse_endpoint(text)
        if not os.path.exists(endpoint.path):
            report.add("warning", f"containers: endpoint {text}: no socket there (yet)", where, "containers")
        elif endpoint.protocol == CRI and not _cri_client_installed():
            report.add("warning", f"containers: endpoint {text}: the CRI client is not installed "
                       "(pip install 'sentinel[cri]')", where, "containers")  # fmt: skip


def _cri_client_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("grpc", "google.protobuf"))


# ---- output --------------------------------------------------------------------------------------------


def _safe(text: str) -> str:
    from sentinel.rules.validate import safe

    return str(safe(text))


def format_report(report: CheckReport) -> str:
    """Located findings (errors first, then warnings; rule snippets under their line) and a summary line."""
    lines: list[str] = []
    for f in [*report.errors, *report.warnings]:
        lines.append(_safe(str(f)) + (f" [{f.code[6:]}]" if f.code.startswith("rules:") else ""))
        if f.snippet:
            lines.append("    " + _safe(f.snippet.rstrip("\n")).replace("\n", "\n    "))
    lines.append(_summary(report))
    return "\n".join(lines)


def _summary(report: CheckReport) -> str:
    cfg = report.config
    if report.path is None and report.files:
        source = f"drop-ins only ({len(report.files)})"
    elif report.path is None:
        source = "no configuration file: the defaults"
    else:
        extra = len(report.files) - 1
        source = _safe(report.path) + (f" + {extra} drop-in{'s' if extra != 1 else ''}" if extra > 0 else "")
    counts = f"{_plural(len(report.errors), 'error')}, {_plural(len(report.warnings), 'warning')}"
    if not report.ok:
        return f"INVALID: {source}: {counts}"
    assert cfg is not None
    return (
        f"OK: {source}: {report.rules_total} rules ({report.rules_enabled} enabled), "
        f"{len(report.outputs)} output(s), model {_safe(cfg.model)}; {counts}"
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def run_check(path: str | None, as_json: bool, out: IO[str], err: IO[str]) -> int:
    """``sentinel config check [--config FILE] [--json]``: 0 valid (warnings allowed), 1 errors, 2 the named
    file does not exist."""
    report = check_config(path)
    if report.usage_error is not None:
        print(f"sentinel config check: {_safe(report.usage_error)}", file=err)
        return EXIT_USAGE
    if as_json:
        out.write(json.dumps(report.to_dict(), indent=2, ensure_ascii=True) + "\n")
    else:
        out.write(format_report(report) + "\n")
    return EXIT_OK if report.ok else EXIT_ERRORS
