"""What `sentinel run` runs with, and how it changes while it runs.

The settings are the configuration file (``/etc/sentinel/sentinel.yaml`` and its drop-ins, or ``--config``)
with every command-line flag over it. A reload (SIGHUP, or a changed file when ``reload.watch`` is on) reads
the configuration and the rules again, validates all of it first and swaps atomically: the rules with their
``rules_enable``/``rules_disable`` tuning, the redaction patterns, ``ml.alerts_enabled``, the aggregation
window and the internal-alert threshold. Anything invalid keeps the running state and raises a ``Reload
failed`` internal alert. Settings bound to resources opened at start (sinks, probes and buffers, the state
directory, the model, the metrics address) are compared and, when changed, logged as needing a restart:
reopening a spool or re-attaching probes mid-stream is where a silent gap would hide.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sentinel.config import Config, Location, load_config, load_effective_config, missing_rule_paths
from sentinel.detect import RulesOutcome, apply_reload, find_rules_dir, load_ruleset

# Config attributes that take effect only at start; a reload that changes them says so.
RESTART_KEYS = (
    "format", "output", "sinks", "state_dir", "model", "learn_period_s", "learn_min_events",
    "learn_save_interval_s", "ml_batch_ms",
    "metrics_address", "wakeup_events", "pages", "open_dedup_s", "loader_opens", "container_metadata",
    "container_endpoints", "falco_time_iso8601",
)  # fmt: skip


class SettingsError(ValueError):
    """A configuration or flag problem, already phrased for the operator (file:line:col when known);
    ``problems`` is each one on its own (start-up prints them all, a reload alert lists them all)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


def effective_settings(args: argparse.Namespace, live: bool) -> Config:
    """The configuration with the command-line flags over it; raises SettingsError.

    ``sentinel run`` reads the default file when no ``--config`` is given; ``sentinel replay`` reads only an
    explicit ``--config`` (a replay of old captures must not send alerts to the production SIEM by default).
    """
    from sentinel.sinks import OutputSpecError, parse_output

    path = getattr(args, "config", None)
    cfg = (
        load_effective_config(path, strict=False)
        if live
        else (load_config(path, strict=False) if path else Config())
    )
    if cfg.errors:  # every problem of every file, found in one pass, as `config check` lists them
        order = {f: i for i, f in enumerate(cfg.files)}
        found = sorted([*cfg.errors, *missing_rule_paths(cfg)], key=lambda e: (order.get(e.file, -1), e.line))
        problems = [str(e) for e in found]
        summary = [f"{len(problems)} errors in the configuration"] if len(problems) > 1 else []
        raise SettingsError("\n".join(problems + summary), problems)
    if args.rules:
        cfg.rules = list(args.rules)
    if args.format:
        cfg.format = args.format
    if args.output:
        for spec in args.output:
            try:
                parse_output(spec)
            except OutputSpecError as exc:
                raise SettingsError(f"--output {exc}") from None
        cfg.set_outputs(list(args.output))
    if args.aggregation_window is not None:
        cfg.aggregation_window_s = args.aggregation_window
    sensor_flags = (
        ("wakeup_events", "wakeup_events"), ("pages", "pages"), ("open_dedup", "open_dedup_s"),
        ("loader_opens", "loader_opens"),
    )  # fmt: skip
    for flag, attr in sensor_flags:
        if getattr(args, flag, None) is not None:
            setattr(cfg, attr, getattr(args, flag))
    if getattr(args, "container_endpoint", None):
        cfg.container_endpoints = list(args.container_endpoint)
    if getattr(args, "no_container_metadata", False):
        cfg.container_metadata = False
    if getattr(args, "model", None):
        cfg.model = args.model
    if getattr(args, "no_ml_alerts", False):
        cfg.ml_alerts_enabled = False
    if live:
        if args.state_dir:
            cfg.state_dir = args.state_dir
        if args.learn_period:
            cfg.learn_period_s = args.learn_period
        if args.metrics_address is not None:
            cfg.metrics_address = args.metrics_address or None
    elif not getattr(args, "model", None):
        cfg.model = "off"  # a replay scores only when asked to
    if cfg.pages and cfg.pages & (cfg.pages - 1):
        raise SettingsError(f"sensor pages must be a power of two, not {cfg.pages}")
    if cfg.rules is None:
        shipped = find_rules_dir()
        if shipped is None:
            raise SettingsError(
                "no rules directory found (looked for rules/ next to the package and "
                "/usr/share/sentinel/rules); give --rules PATH"
            )
        cfg.rules = [str(shipped)]
    return cfg


def anomaly_settings(cfg: Config, live: bool) -> Any:
    """The anomaly engine's settings from the effective configuration."""
    from sentinel.anomaly.live import AnomalySettings

    settings = AnomalySettings(
        model=cfg.model,
        state_dir=cfg.state_dir if live else "",  # a replay never touches the host's state
        learn_period_s=cfg.learn_period_s,
        min_events=cfg.learn_min_events,
        save_interval_s=cfg.learn_save_interval_s,
        alerts=cfg.ml_alerts_enabled,
    )
    return settings


# ---- rules with their tuning ------------------------------------------------------------------------------


@dataclass
class Selection:
    """``rules_enable``/``rules_disable`` checked against a ruleset: usable selectors and located findings."""

    enable: list[str] = field(default_factory=list)
    disable: list[str] = field(default_factory=list)
    errors: list[tuple[str, Location]] = field(default_factory=list)
    warnings: list[tuple[str, Location]] = field(default_factory=list)
    tuned: Any = None  # the ruleset with the selectors applied (None when a selector is an error)


def check_selectors(ruleset: Any, cfg: Config) -> Selection:
    """Unknown rule names are errors (with a did-you-mean); unknown tags are warnings (tags come and go with
    rule updates, so a stale one selects nothing, harmlessly); enabling what is also disabled is a warning."""
    names = {r.name for r in ruleset.rules}
    tags = {t for r in ruleset.rules for t in r.tags}
    sel = Selection()
    for key, selectors, usable in (
        ("rules_enable", cfg.rules_enable, sel.enable),
        ("rules_disable", cfg.rules_disable, sel.disable),
    ):
        for i, s in enumerate(selectors):
            where = cfg.location(f"{key}[{i}]")
            if s.startswith("tag:"):
                if s[4:] in tags:
                    usable.append(s)
                else:
                    sel.warnings.append((f"{key}: no rule is tagged {s[4:]!r}", where))
            elif s in names:
                usable.append(s)
                rule = ruleset.get(s)
                if key == "rules_enable" and getattr(rule, "refused", False):
                    sel.errors.append((f"{key}: rule {s!r} cannot run, it was {rule.skipped}", where))
            else:
                close = difflib.get_close_matches(s, sorted(names), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                sel.errors.append((f"{key}: no rule named {s!r}{hint}", where))
    if not sel.errors:
        sel.tuned = ruleset.with_enabled(sel.enable, sel.disable)
        for i, s in enumerate(cfg.rules_enable):
            rule = sel.tuned.get(s) if not s.startswith("tag:") else None
            if rule is not None and not rule.enabled:
                message = f"rules_enable: {s!r} is also disabled by rules_disable, and disable wins"
                sel.warnings.append((message, cfg.location(f"rules_enable[{i}]")))
    return sel


def located(message: str, where: Location, severity: str = "error") -> str:
    file, line, col = where
    return f"{file}:{line}:{col}: {severity}: {message}" if line else f"{file}: {severity}: {message}"


def load_tuned_rules(cfg: Config, load: Callable[..., Any] | None = None) -> RulesOutcome:
    """The rules ``cfg`` names, validated, with ``rules_enable``/``rules_disable`` applied; ``ruleset`` is
    None when anything is wrong (every problem located in ``errors``)."""
    outcome = load_ruleset(cfg.rules or [], load)
    if outcome.ruleset is None or not (cfg.rules_enable or cfg.rules_disable):
        return outcome
    sel = check_selectors(outcome.ruleset, cfg)
    warnings = outcome.warnings + [located(m, w, "warning") for m, w in sel.warnings]
    if sel.errors:
        errors = [located(m, w) for m, w in sel.errors]
        return dataclasses.replace(outcome, ruleset=None, errors=errors, warnings=warnings)
    return dataclasses.replace(outcome, ruleset=sel.tuned, warnings=warnings)


# ---- watching files ---------------------------------------------------------------------------------------


def _stat_key(path: str) -> tuple[Any, ...]:
    try:
        st = os.stat(path)
    except OSError as exc:
        return (path, "missing", exc.errno)
    return (path, st.st_ino, st.st_size, st.st_mtime_ns)


def files_signature(paths: list[str]) -> tuple[Any, ...]:
    """What changes when a watched file is edited, replaced (rename over it), added or removed: each path's
    inode, size and mtime, and for a directory the same for each entry, subdirectories included as the
    rules loader reads them (a Sigma tree loads by its top folder)."""
    from sentinel.rules.loader import MAX_DIR_DEPTH

    out: list[Any] = []

    def walk(path: str, depth: int) -> None:
        try:
            names = sorted(os.listdir(path))
        except OSError:
            return
        for name in names:
            if name.startswith("."):
                continue
            child = os.path.join(path, name)
            out.append(_stat_key(child))
            if depth < MAX_DIR_DEPTH and os.path.isdir(child) and not os.path.islink(child):
                walk(child, depth + 1)

    for path in paths:
        out.append(_stat_key(path))
        if os.path.isdir(path):
            walk(path, 0)
    return tuple(out)


class FileWatcher:
    """Polls the configuration, drop-ins and rules files every ``interval_s``; ``changed()`` is True once per
    change. Polling (not inotify): files on any filesystem and editors' rename-over saves work alike."""

    def __init__(self, paths: list[str], interval_s: float, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.reset(paths, interval_s)

    def reset(self, paths: list[str], interval_s: float) -> None:
        self.paths = list(dict.fromkeys(paths))
        self.interval_s = interval_s
        self.signature = files_signature(self.paths)
        self.next_check = self.clock() + interval_s

    def changed(self) -> bool:
        now = self.clock()
        if now < self.next_check:
            return False
        self.next_check = now + self.interval_s
        sig = files_signature(self.paths)
        if sig == self.signature:
            return False
        self.signature = sig
        return True


def restart_needed(old: Config, new: Config) -> list[str]:
    """The settings a reload cannot apply (the resources behind them were opened at start) that differ."""
    return [k for k in RESTART_KEYS if getattr(old, k) != getattr(new, k)]


class Reloader:
    """SIGHUP and ``reload.watch`` for a running agent: validate everything, then swap; or keep and alert.

    ``stream`` is the DetectionStream, ``engine`` the anomaly engine (or None), ``on_swapped`` is called after
    a successful swap (metrics and the internal-alert threshold follow the new settings).
    """

    def __init__(
        self,
        args: argparse.Namespace,
        cfg: Config,
        stream: Any,
        engine: Any,
        log: Any,
        clock: Callable[[], float],
        on_swapped: Callable[[Config], None] | None = None,
    ) -> None:
        self.args, self.cfg, self.stream, self.engine, self.log = args, cfg, stream, engine, log
        self.clock = clock
        self.on_swapped = on_swapped
        self.watcher: FileWatcher | None = None
        self._watch(cfg)

    def _watch(self, cfg: Config) -> None:
        if not cfg.reload_watch:
            self.watcher = None
        elif self.watcher is None:
            self.watcher = FileWatcher(cfg.watch_paths(), cfg.reload_interval_s, self.clock)
        else:
            self.watcher.reset(cfg.watch_paths(), cfg.reload_interval_s)

    def files_changed(self) -> bool:
        return self.watcher is not None and self.watcher.changed()

    def reload(self, reason: str, ts_ns: int) -> bool:
        """Read the configuration and the rules again; True when the new state runs."""
        self.log.info("sentinel.reloading", reason=reason, config=self.cfg.source, paths=self.cfg.rules)
        files: list[str] = list(self.cfg.files)
        new: Config | None = None
        try:
            new = effective_settings(self.args, live=True)
            if self.cfg.source is not None and new.source != self.cfg.source:
                # A file that vanished (mid-upgrade, or by mistake) must not revert the agent to the
                # defaults: the operator's redaction patterns and rule tuning would be gone without a word.
                raise SettingsError(
                    f"{self.cfg.source}: the configuration file is gone; the running configuration is kept "
                    "(restart the agent to run without it)"
                )
            files = list(new.files)
            outcome = load_tuned_rules(new)
        except SettingsError as exc:
            outcome = RulesOutcome(None, errors=list(exc.problems))
        except Exception as exc:  # a reload must never take the agent down
            outcome = RulesOutcome(None, errors=[f"reload failed: {exc!r}"])
        if outcome.ruleset is None:
            files += outcome.files
            refused = dataclasses.replace(outcome, files=files)
            apply_reload(self.stream, refused, ts_ns, self.log, reason=reason)
            if self.watcher is not None:  # watch what the broken config names too, so its fix is seen
                self.watcher.reset(self.watcher.paths + files, self.watcher.interval_s)
            return False
        assert new is not None
        apply_reload(self.stream, outcome, ts_ns, self.log, reason=reason, config=new.source)
        self._apply_settings(new)
        return True

    def _apply_settings(self, new: Config) -> None:
        """After the rules are swapped: the other settings a reload applies, and what waits for a restart."""
        old = self.cfg
        stream = self.stream
        stream.set_redactor(new.redactor())
        stream.aggregator.window_ns = int(new.aggregation_window_s * 1e9)
        stream.aggregator.rate_per_min = new.rule_rate_limit
        if self.engine is not None:
            self.engine.settings.alerts = new.ml_alerts_enabled
        pending = restart_needed(old, new)
        # Restart-bound settings stay as they run, so the next reload still reports them.
        self.cfg = dataclasses.replace(new, **{k: getattr(old, k) for k in RESTART_KEYS})
        self.cfg.sink_format_inherited = old.sink_format_inherited
        self._watch(new)
        if pending:
            self.log.warning(
                "sentinel.restart_needed", settings=pending,
                why="these settings are bound to outputs, probes or the model opened at start; "
                "the running values stay until the agent restarts",
            )  # fmt: skip
        if self.on_swapped is not None:
            self.on_swapped(self.cfg)
