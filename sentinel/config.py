"""The agent's configuration file: YAML, with drop-ins, ``${ENV}`` expansion and every error located.

```yaml
rules: [/usr/share/sentinel/rules, /etc/sentinel/rules.local.yaml]   # files or directories, in order
format: ecs                  # ecs | falco
falco: {time_format_iso_8601: false}   # falco format's `output` time: HH:MM:SS.ns (local) or ISO 8601
output: [stdout, file:/var/log/sentinel/alerts.json]
sinks: [{kind: http, target: "https://siem.example/alerts", headers: {Authorization: "Bearer ${SIEM_TOKEN}"}}]
aggregation_window_s: 60     # 0 turns aggregation off
rule_rate_limit: 20          # first alerts per rule per minute, then one rate-limit summary; 0 = no limit
sensor: {wakeup_events: 64, pages: 1024, open_dedup_s: 30, loader_opens: filter}
containers: {metadata: true, endpoints: [podman:/run/podman/podman.sock]}   # runtime sockets to ask
```

The main file (``/etc/sentinel/sentinel.yaml`` unless ``--config`` names another) is read first, then the
drop-ins ``<stem>.d/*.yaml`` next to it (``sentinel.d/`` for ``sentinel.yaml``) in lexical order, each
applied over what came before (merge rules in :data:`MERGE_RULES` and docs/drafts/config.md). Command-line
flags override the result. Relative paths are relative to the file that names them, so a config works from
wherever the agent is started. Unknown keys are errors: a misspelt key silently ignored would leave the agent
running with settings the operator did not choose. Every error names ``FILE:LINE:COLUMN`` (a drop-in's own).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sentinel.alerts.aggregate import DEFAULT_RATE_PER_MIN
from sentinel.redact import Redactor
from sentinel.sinks import DEFAULT_STATE_DIR, OutputSpecError, SinkConfig, check_sink_config, parse_output
from sentinel.sinks.spec import HTTP_PRESETS, KINDS, PRIORITIES

DEFAULT_CONFIG_PATH = "/etc/sentinel/sentinel.yaml"
DROPIN_GLOB = "*.yaml"
FORMATS = ("ecs", "falco")
MODEL_CHOICES = ("auto", "default", "off")
TOP_KEYS = (
    "rules", "rules_append", "rules_enable", "rules_disable", "format", "output", "sinks",
    "aggregation_window_s", "rule_rate_limit", "sensor", "state_dir", "model", "learning", "ml", "redact",
    "redact_builtin", "metrics", "internal_alerts", "reload", "containers", "falco",
)  # fmt: skip
SENSOR_KEYS = ("wakeup_events", "pages", "open_dedup_s", "loader_opens")
LOADER_OPENS = ("filter", "report")  # sensor.loader_opens: the dynamic loader's library opens after exec
CONTAINERS_KEYS = ("metadata", "endpoints")
# How a later file (a drop-in) combines with what the earlier files set; documented in docs/drafts/config.md.
MERGE_RULES = {
    "replace": (
        "rules",
        "format",
        "output",
        "aggregation_window_s",
        "rule_rate_limit",
        "state_dir",
        "model",
        "redact_builtin",
    ),
    "per key": ("sensor", "learning", "ml", "metrics", "internal_alerts", "reload", "containers", "falco"),
    "append": ("rules_append", "rules_enable", "rules_disable", "redact"),
    "append, same label replaces": ("sinks",),
}
MIN_SPOOL_BYTES = 4096
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+)\s*(KiB|MiB|GiB)?")
_SIZE_UNITS = {None: 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FALSE_WORDS = ("false", "no", "off", "0")
_TRUE_WORDS = ("true", "yes", "on", "1")

Location = tuple[str, int, int]  # file, line, column (1-based; 0 when unknown)


class ConfigError(ValueError):
    """A config problem with its location; ``str()`` is ``FILE:LINE:COL: message``."""

    def __init__(self, message: str, file: str, line: int = 0, column: int = 0) -> None:
        self.message, self.file, self.line, self.column = message, file, line, column
        where = f"{file}:{line}:{column}" if line else file
        super().__init__(f"{where}: {message}")


class ConfigErrors(ConfigError):
    """Every problem found in one pass (``errors``, in file order); located as the first one, and ``str()`` is
    one located line per problem, so start-up refuses with the whole list rather than one per restart."""

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.message, first.file, first.line, first.column)
        self.errors = list(errors)

    def __str__(self) -> str:
        lines = [ValueError.__str__(e) for e in self.errors]
        if len(lines) > 1:
            lines.append(f"{len(lines)} errors in the configuration")
        return "\n".join(lines)


def raise_collected(errors: list[ConfigError]) -> None:
    """Raise what one pass collected: nothing, the single error itself, or :class:`ConfigErrors`."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


@dataclass(frozen=True, slots=True)
class ConfigWarning:
    """A setting that is valid but will not do what it seems to (it has no effect); located like errors."""

    message: str
    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: warning: {self.message}"


@dataclass(slots=True)
class Config:
    """Defaults are the agent's defaults; ``None`` for ``rules`` means the shipped ruleset."""

    rules: list[str] | None = None
    format: str = "ecs"
    output: list[str] = field(default_factory=lambda: ["stdout"])  # [] when only ``sinks`` are configured
    aggregation_window_s: float = 60.0
    rule_rate_limit: int = DEFAULT_RATE_PER_MIN  # first alerts per rule per minute (0: no limit)
    wakeup_events: int = 64
    pages: int | None = None
    open_dedup_s: float = 30.0
    loader_opens: str = "filter"  # filter | report: the dynamic loader's library opens right after exec
    source: str | None = None  # the main file it came from (None: defaults, or drop-ins only)
    rules_enable: list[str] = field(default_factory=list)  # rule names or tag:NAME, switched on
    rules_disable: list[str] = field(default_factory=list)  # switched off; applied after enable (wins)
    sinks: list[SinkConfig] = field(default_factory=list)  # beside ``output``; both are used
    state_dir: str = DEFAULT_STATE_DIR
    model: str = "auto"  # auto | default | off | a model directory
    learn_period_s: float = 3_600.0  # the warm-up: README says why one hour
    learn_min_events: int = 1_000
    learn_save_interval_s: float = 300.0
    ml_alerts_enabled: bool = True
    ml_batch_ms: float = 50.0
    redact: list[re.Pattern[str]] = field(default_factory=list)
    redact_builtin: bool = True
    metrics_address: str | None = None  # HOST:PORT, None = no endpoint
    sink_backlog_threshold: int = 10_000  # "Alert sink backlog" when more alerts than this wait in one sink
    reload_watch: bool = False  # reload when the config or rules files change (SIGHUP works regardless)
    reload_interval_s: float = 5.0
    container_metadata: bool = True  # ask the container runtimes for name, image, labels, pod
    container_endpoints: list[str] | None = None  # <kind>:<socket>; None: the usual sockets
    falco_time_iso8601: bool = False  # falco format: ISO 8601 UTC times in `output` (Falco's option)
    files: list[str] = field(default_factory=list, compare=False)  # every file read, in order
    warnings: list[ConfigWarning] = field(default_factory=list, compare=False)
    # Every error of a lenient load (``strict=False``): each bad setting kept its earlier value (the default).
    errors: list[ConfigError] = field(default_factory=list, compare=False)
    where: dict[str, Location] = field(default_factory=dict, compare=False)  # "model", "sinks[0]", …
    sink_format_inherited: list[bool] = field(default_factory=list, compare=False)  # per sink: follows format

    def sink_configs(self) -> list[SinkConfig]:
        """Every output to open, in order: ``output`` specs (in ``format``), then ``sinks`` (those without a
        ``format`` of their own in ``format`` too, so ``--format`` given after loading still applies)."""
        out = []
        for spec in self.output:
            kind, target = parse_output(spec)
            out.append(SinkConfig(kind=kind, target=target or "", format=self.format))
        for i, sc in enumerate(self.sinks):
            inherited = i < len(self.sink_format_inherited) and self.sink_format_inherited[i]
            out.append(dataclasses.replace(sc, format=self.format) if inherited else sc)
        return out

    def set_outputs(self, specs: list[str]) -> None:
        """``--output`` on the command line: these outputs replace both ``output`` and ``sinks``."""
        self.output = list(specs)
        self.sinks = []
        self.sink_format_inherited = []

    def redactor(self) -> Redactor:
        """One redactor for every alert: the patterns are compiled once, at load."""
        return Redactor(self.redact, self.redact_builtin)

    def location(self, key: str) -> Location:
        """Where a setting was given (``rules_enable[2]``, ``sinks[0]``, ``model``); else the main file."""
        return self.where.get(key) or (self.source or "<defaults>", 0, 0)

    def watch_paths(self) -> list[str]:
        """What ``reload.watch`` watches: the files read, the drop-in directory, the rule paths."""
        paths = [*self.files, str(dropin_dir(self.source or default_config_path()))]
        return paths + list(self.rules or [])


# ---- ${ENV} -----------------------------------------------------------------------------------------------


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """``${NAME}``, ``${NAME:-default}`` (default when unset or empty) and ``$$`` (a literal ``$``); any other
    ``$`` is kept, so regexes keep their anchors. Raises ``ValueError`` with the offending offset in
    ``args[1]``."""
    if "$" not in text:
        return text
    out: list[str] = []
    i = 0
    while True:
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        nxt = text[j + 1 : j + 2]
        if nxt == "$":
            out.append("$")
            i = j + 2
        elif nxt == "{":
            close = text.find("}", j + 2)
            if close < 0:
                raise ValueError("'${' without its closing '}' (write $$ for a literal $)", j)
            name, sep, default = text[j + 2 : close].partition(":-")
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name (in ${{…}})", j)
            value = env.get(name)
            if sep and not value:
                value = default
            elif value is None:
                raise ValueError(
                    f"environment variable {name} is not set (write ${{{name}:-default}} for a default)", j
                )
            out.append(value)
            i = close + 1
        else:
            out.append("$")
            i = j + 1


# ---- reading nodes -----------------------------------------------------------------------------------------


def _where(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Reader:
    def __init__(self, path: str, env: Mapping[str, str]) -> None:
        self.path = path
        self.base = Path(path).resolve().parent
        self.env = env
        self.warnings: list[ConfigWarning] = []
        self.errors: list[ConfigError] = []

    @contextlib.contextmanager
    def collect(self) -> Iterator[None]:
        """Around one setting: its error is recorded and the reading goes on with the next setting (that one
        keeps its earlier value), so one check lists every problem."""
        try:
            yield
        except ConfigError as exc:
            self.errors.append(exc)

    def error(self, message: str, node: yaml.Node | None = None, offset: int | None = None) -> ConfigError:
        """Located at ``node``; ``offset`` (into a one-line scalar's text) moves the column to the culprit."""
        line, col = _where(node) if node is not None else (0, 0)
        if node is not None and offset is not None and node.start_mark.line == node.end_mark.line:
            quoted = getattr(node, "style", None) in ("'", '"')
            width = node.end_mark.column - node.start_mark.column
            if width == len(str(node.value)) + (2 if quoted else 0):  # no escapes: text maps onto columns
                col += offset + (1 if quoted else 0)
        return ConfigError(message, self.path, line, col)

    def warn(self, message: str, node: yaml.Node) -> None:
        line, col = _where(node)
        self.warnings.append(ConfigWarning(message, self.path, line, col))

    def loc(self, node: yaml.Node) -> Location:
        return (self.path, *_where(node))

    def scalar(self, node: yaml.Node, what: str) -> Any:
        """A single value; strings have ``${ENV}`` expanded."""
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(f"{what} must be a single value", node)
        try:
            value = _LOADER.construct_object(node)  # type: ignore[no-untyped-call]
        except yaml.YAMLError as exc:
            raise self.error(f"{what}: {getattr(exc, 'problem', None) or exc}", node) from None
        if isinstance(value, str):
            try:
                value = expand_env(value, self.env)
            except ValueError as exc:
                raise self.error(f"{what}: {exc.args[0]}", node, exc.args[1]) from None
        return value

    def _from_env(self, node: yaml.Node, value: Any) -> bool:
        """Whether ``value`` is text that came from ``${…}`` (and may stand for a number or a boolean)."""
        return isinstance(value, str) and isinstance(node, yaml.ScalarNode) and "${" in node.value

    def string(self, node: yaml.Node, what: str, empty: bool = False) -> str:
        value = self.scalar(node, what)
        if not isinstance(value, str) or (not value and not empty):
            raise self.error(f"{what} must be a non-empty string", node)
        return value

    def strings(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node]]:
        """A string or a list of strings."""
        return [(self.string(item, f"each item of {what}"), item) for item in self.items(node)]

    def items(self, node: yaml.Node) -> list[yaml.Node]:
        """A list's items; a single value counts as a list of one."""
        return list(node.value) if isinstance(node, yaml.SequenceNode) else [node]

    def number(
        self, node: yaml.Node, what: str, minimum: float, integer: bool = False, above: bool = False
    ) -> float:
        value = self.scalar(node, what)
        if self._from_env(node, value):
            with contextlib.suppress(ValueError):
                value = int(value) if re.fullmatch(r"\s*[-+]?\d+\s*", value) else float(value)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (integer and isinstance(value, float))
        ):
            raise self.error(f"{what} must be {'an integer' if integer else 'a number'}, not {value!r}", node)
        if not math.isfinite(value) or value < minimum or (above and value == minimum):
            bound = f"above {minimum:g}" if above else f"at least {minimum:g}"
            raise self.error(f"{what} must be {bound}, not {value!r}", node)
        return value

    def integer(self, node: yaml.Node, what: str, minimum: int) -> int:
        return int(self.number(node, what, minimum, integer=True))

    def size(self, node: yaml.Node, what: str, minimum: int) -> int:
        """Bytes: an integer, or a string with KiB, MiB or GiB (``256MiB``)."""
        value = self.scalar(node, what)
        if isinstance(value, str):
            m = _SIZE.fullmatch(value.strip())
            if m is None:
                raise self.error(
                    f"{what} must be a number of bytes or a size like 64MiB, not {value!r}", node
                )
            value = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"{what} must be a number of bytes or a size like 64MiB, not {value!r}", node)
        if value < minimum:
            raise self.error(f"{what} must be at least {minimum}, not {value}", node)
        return value

    def boolean(self, node: yaml.Node, what: str) -> bool:
        value = self.scalar(node, what)
        if self._from_env(node, value) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        if not isinstance(value, bool):
            raise self.error(f"{what} must be true or false, not {value!r}", node)
        return value

    def duration(self, node: yaml.Node, what: str) -> float:
        """Seconds, or ``7d``, ``12h``, ``30m``, ``45s``; above 0."""
        value = self.scalar(node, what)
        if isinstance(value, str):
            m = _DURATION.fullmatch(value.strip())
            if m is None and self._from_env(node, value):
                with contextlib.suppress(ValueError):
                    value = float(value)
            elif m is not None:
                value = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(
                f"{what} must be a duration like 7d, 12h, 30m, 45s or a number of seconds, not {value!r}",
                node,
            )
        if not math.isfinite(value) or value <= 0:
            raise self.error(f"{what} must be above 0, not {value!r}", node)
        return float(value)

    def choice(self, node: yaml.Node, what: str, choices: tuple[str, ...], fold: bool = False) -> str:
        value = self.string(node, what)
        if fold:
            value = value.lower()
        if value not in choices:
            raise self.error(f"{what} must be one of {', '.join(choices)}, not {value!r}", node)
        return value

    def mapping(
        self, node: yaml.Node, what: str, keys: tuple[str, ...]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(f"{what} must be a mapping of keys to values", node)
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key not in keys:  # recorded and skipped: the other keys are still read
                self.errors.append(
                    self.error(f"unknown key {key!r} in {what}; known keys: {', '.join(keys)}", key_node)
                )
            elif key in out:
                self.errors.append(self.error(f"duplicate key {key!r} in {what}", key_node))
            else:
                out[key] = (key_node, value_node)
        return out

    def resolve(self, text: str) -> str:
        return text if os.path.isabs(text) else str(self.base / text)


_LOADER = yaml.SafeLoader("")


# ---- sinks -------------------------------------------------------------------------------------------------

# Settings that only mean something for some sinks: given elsewhere they are warnings (they have no effect).
_FILE_ONLY = ("rotate_bytes", "keep_files")
_HTTP_ONLY = ("preset", "headers", "gzip")
_SYSLOG_ONLY = ("app_name", "facility")
_NETWORK_ONLY = (
    "batch_max", "batch_wait_s", "timeout_s", "retry_initial_s", "retry_max_s", "spool_max_bytes",
    "close_timeout_s",
)  # fmt: skip
_TLS_ONLY = ("tls_verify", "tls_ca_file", "tls_cert_file", "tls_key_file")


def _sink_readers() -> dict[str, Callable[[_Reader, yaml.Node, str], Any]]:
    """One reader per :class:`SinkConfig` field, with the field's validation (kept in step with the class:
    a test checks every field has one)."""

    def num(minimum: float, above: bool = False) -> Callable[[_Reader, yaml.Node, str], Any]:
        return lambda r, n, w: float(r.number(n, w, minimum, above=above))

    def integer(minimum: int, maximum: int | None = None) -> Callable[[_Reader, yaml.Node, str], Any]:
        def read(r: _Reader, n: yaml.Node, w: str) -> int:
            value = r.integer(n, w, minimum)
            if maximum is not None and value > maximum:
                raise r.error(f"{w} must be {minimum}..{maximum}, not {value}", n)
            return value

        return read

    def path(r: _Reader, n: yaml.Node, w: str) -> str | None:
        value = r.scalar(n, w)
        if value is None or value == "":
            return None
        return r.resolve(r.string(n, w))

    return {
        "kind": lambda r, n, w: r.choice(n, w, KINDS),
        "target": lambda r, n, w: r.string(n, w, empty=True),
        "name": lambda r, n, w: r.string(n, w),
        "format": lambda r, n, w: r.choice(n, w, FORMATS),
        "min_priority": lambda r, n, w: r.choice(n, w, PRIORITIES, fold=True),
        "rotate_bytes": lambda r, n, w: r.size(n, w, 0),
        "keep_files": integer(0),
        "preset": lambda r, n, w: r.choice(n, w, HTTP_PRESETS),
        "headers": _read_headers,
        "batch_max": integer(1),
        "batch_wait_s": num(0),
        "gzip": lambda r, n, w: r.boolean(n, w),
        "timeout_s": num(0, above=True),
        "tls_verify": lambda r, n, w: r.boolean(n, w),
        "tls_ca_file": path,
        "tls_cert_file": path,
        "tls_key_file": path,
        "app_name": lambda r, n, w: r.string(n, w),
        "facility": integer(0, 23),
        "retry_initial_s": num(0, above=True),
        "retry_max_s": num(0, above=True),
        "spool_max_bytes": lambda r, n, w: r.size(n, w, MIN_SPOOL_BYTES),
        "close_timeout_s": num(0),
    }


def _read_headers(r: _Reader, node: yaml.Node, what: str) -> dict[str, str]:
    if not isinstance(node, yaml.MappingNode):
        raise r.error(f"{what} must be a mapping of header names to values", node)
    headers: dict[str, str] = {}
    for key_node, value_node in node.value:
        name = r.scalar(key_node, "a header name")
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise r.error(f"{what}: {name!r} is not a valid HTTP header name", key_node)
        if name.lower() in (h.lower() for h in headers):
            raise r.error(f"{what}: duplicate header {name!r}", key_node)
        value = r.scalar(value_node, f"header {name}")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise r.error(f"header {name} must be a string", value_node)
        text = str(value)
        if any(ch in text for ch in "\r\n\0"):  # the value itself is never shown: it may be a token
            raise r.error(f"header {name}: the value contains a line break or NUL", value_node)
        headers[name] = text
    return headers


_SINK_READERS = _sink_readers()
SINK_KEYS = tuple(f.name for f in dataclasses.fields(SinkConfig) if f.name in _SINK_READERS)


class _SinkLeftOut(Exception):
    """A sink with bad keys (each already recorded) is not added."""


def _read_sink(r: _Reader, node: yaml.Node, what: str) -> tuple[SinkConfig, bool]:
    """One ``sinks:`` item → (SinkConfig, whether its format follows the top-level ``format``)."""
    before = len(r.errors)
    items = r.mapping(node, what, SINK_KEYS)
    if "kind" not in items:
        raise r.error(f"{what} needs kind: one of {', '.join(KINDS)}", node)
    values: dict[str, Any] = {}
    for key, (_, vnode) in items.items():
        with r.collect():
            values[key] = _SINK_READERS[key](r, vnode, f"{what}: {key}")
    if len(r.errors) > before:  # each bad key is recorded; the sink itself is left out
        raise _SinkLeftOut
    kind = values["kind"]
    target_node = items["target"][1] if "target" in items else node
    target = values.get("target", "")
    try:
        if kind == "stdout":
            if target:
                raise r.error(f"{what}: a stdout sink takes no target", target_node)
        elif kind == "file":
            if not target:
                raise r.error(f"{what}: a file sink needs target: PATH", target_node)
            target = r.resolve(target)
        elif kind == "http":
            if not target:
                raise r.error(
                    f"{what}: an http sink needs target: URL (https://HOST[:PORT]/PATH)", target_node
                )
            parsed, url = parse_output(target) if target.startswith(("http:", "https:")) else ("", None)
            if parsed != "http":
                raise r.error(f"{what}: an http sink's target is a URL, not {target!r}", target_node)
            target = url or target
        else:
            if not target:
                raise r.error(
                    f"{what}: a syslog sink needs target: tcp://HOST:PORT, tls://HOST:PORT or local",
                    target_node,
                )
            _, normal = parse_output(f"syslog:{target}")
            target = normal or target
    except OutputSpecError as exc:
        raise r.error(f"{what}: {exc}", target_node) from None
    values["target"] = target
    sc = SinkConfig(**values)
    if sc.retry_max_s < sc.retry_initial_s:
        key = "retry_max_s" if "retry_max_s" in items else "retry_initial_s"
        raise r.error(
            f"{what}: retry_max_s must be at least retry_initial_s", items.get(key, (node, node))[1]
        )
    if sc.tls_key_file and not sc.tls_cert_file:
        raise r.error(f"{what}: tls_key_file needs tls_cert_file", items["tls_key_file"][1])
    try:
        check_sink_config(sc)
    except OutputSpecError as exc:
        raise r.error(f"{what}: {exc}", node) from None
    _warn_unused_sink_keys(r, sc, items, what)
    return sc, "format" not in items


def _warn_unused_sink_keys(r: _Reader, sc: SinkConfig, items: dict[str, Any], what: str) -> None:
    network = sc.kind == "http" or (sc.kind == "syslog" and not sc.target.startswith("unix:"))
    tls = sc.target.startswith(("https://", "tls://"))
    applies = {
        **dict.fromkeys(_FILE_ONLY, sc.kind == "file"),
        **dict.fromkeys(_HTTP_ONLY, sc.kind == "http"),
        **dict.fromkeys(_SYSLOG_ONLY, sc.kind == "syslog"),
        **dict.fromkeys(_NETWORK_ONLY, network),
        **dict.fromkeys(_TLS_ONLY, tls),
    }
    for key, (key_node, _) in items.items():
        if not applies.get(key, True):
            r.warn(f"{what}: {key} has no effect on this sink ({sc.kind} {sc.label()})", key_node)
    if sc.preset == "falcosidekick" and "format" in items and sc.format != "falco":
        r.warn(f"{what}: a falcosidekick sink always sends the falco format", items["format"][0])


# ---- documents ---------------------------------------------------------------------------------------------


def parse_config(
    text: str,
    path: str,
    env: Mapping[str, str] | None = None,
    base: Config | None = None,
    strict: bool = True,
) -> Config:
    """Parse one config document over ``base`` (modified and returned; a new default Config if None) with
    the merge rules. Every setting is read even after a bad one: ``strict`` raises them all at the end
    (:func:`raise_collected`); otherwise they are appended to ``cfg.errors``. A YAML syntax error is raised
    either way (nothing after it can be read)."""
    reader = _Reader(path, os.environ if env is None else env)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        raise ConfigError(f"YAML syntax: {exc.problem or exc.context}", path, line, col) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML: {exc}", path) from None
    cfg = base if base is not None else Config(source=path)
    cfg.files.append(path)
    if not (
        root is None or (isinstance(root, yaml.ScalarNode) and root.value == "" and root.tag.endswith("null"))
    ):
        with reader.collect():
            _apply(reader, reader.mapping(root, "the configuration", TOP_KEYS), cfg)
    cfg.warnings.extend(reader.warnings)
    cfg.errors.extend(sorted(reader.errors, key=lambda e: (e.line, e.column)))
    if base is None:
        _finish(cfg)
        if strict:
            raise_collected(cfg.errors)
    elif strict:
        raise_collected(sorted(reader.errors, key=lambda e: (e.line, e.column)))
    return cfg


def _apply(r: _Reader, items: dict[str, tuple[yaml.Node, yaml.Node]], cfg: Config) -> None:
    """Apply one document's settings over ``cfg`` (the merge rules live here). Within one file ``rules``
    applies before ``rules_append`` whatever their order, so the file means the same either way."""
    for key, (key_node, node) in sorted(items.items(), key=lambda kv: kv[0] == "rules_append"):
        cfg.where[key] = r.loc(key_node)
        with r.collect():
            _apply_one(r, key, key_node, node, cfg)


def _apply_one(r: _Reader, key: str, key_node: yaml.Node, node: yaml.Node, cfg: Config) -> None:
    """One top-level setting; raises ConfigError for a bad value, or records a bad item (a sink, a redact
    pattern, a section's key) and reads on."""
    if key == "rules":
        paths = r.strings(node, "rules")
        if not paths:
            raise r.error("rules must name at least one file or directory", node)
        cfg.rules = [r.resolve(p) for p, _ in paths]
        for i, (_, item) in enumerate(paths):
            cfg.where[f"rules[{i}]"] = r.loc(item)
    elif key == "rules_append":
        extra = r.strings(node, "rules_append")
        if cfg.rules is None:
            cfg.rules = _shipped_rules(r, key_node)
        for p, item in extra:
            cfg.where[f"rules[{len(cfg.rules)}]"] = r.loc(item)
            cfg.rules.append(r.resolve(p))
    elif key in ("rules_enable", "rules_disable"):
        target = cfg.rules_enable if key == "rules_enable" else cfg.rules_disable
        for item in r.items(node):
            with r.collect():
                sel = r.string(item, f"each item of {key}")
                if sel.startswith("tag:") and not sel[4:].strip():
                    raise r.error(f"{key}: 'tag:' needs a tag name (tag:mitre_execution)", item)
                cfg.where[f"{key}[{len(target)}]"] = r.loc(item)
                target.append(sel)
    elif key == "format":
        cfg.format = r.choice(node, "format", FORMATS)
    elif key == "output":
        outputs = _read_outputs(r, node)
        if outputs is not None:
            cfg.output = outputs
        cfg.where.update({f"output[{i}]": r.loc(item) for i, item in enumerate(r.items(node))})
    elif key == "sinks":
        _read_sinks(r, node, cfg)
    elif key == "aggregation_window_s":
        cfg.aggregation_window_s = float(r.number(node, "aggregation_window_s", 0))
    elif key == "rule_rate_limit":
        cfg.rule_rate_limit = r.integer(node, "rule_rate_limit", 0)
    elif key == "sensor":
        _read_sensor(r, node, cfg)
    elif key == "state_dir":
        cfg.state_dir = r.resolve(r.string(node, "state_dir"))
    elif key == "model":
        cfg.model = _read_model(r, node)
    elif key == "redact":
        for item in r.items(node):
            with r.collect():
                pattern = _read_regex(r, item)
                cfg.where[f"redact[{len(cfg.redact)}]"] = r.loc(item)
                cfg.redact.append(pattern)
    elif key == "redact_builtin":
        cfg.redact_builtin = r.boolean(node, "redact_builtin")
    elif key == "containers":
        _read_containers(r, node, cfg)
    else:
        _read_section(r, key, node, cfg)


def _read_section(r: _Reader, section: str, node: yaml.Node, cfg: Config) -> None:
    """``learning``, ``ml``, ``metrics``, ``internal_alerts``, ``falco``, ``reload``: each key on its own."""
    readers: dict[str, dict[str, Callable[[yaml.Node, str], None]]] = {
        "learning": {
            "period": lambda n, w: setattr(cfg, "learn_period_s", r.duration(n, w)),
            "min_events": lambda n, w: setattr(cfg, "learn_min_events", r.integer(n, w, 1)),
            "save_interval": lambda n, w: setattr(cfg, "learn_save_interval_s", r.duration(n, w)),
        },
        "ml": {
            "alerts_enabled": lambda n, w: setattr(cfg, "ml_alerts_enabled", r.boolean(n, w)),
            "batch_ms": lambda n, w: setattr(cfg, "ml_batch_ms", float(r.number(n, w, 0, above=True))),
        },
        "metrics": {"address": lambda n, w: setattr(cfg, "metrics_address", _read_metrics_address(r, n))},
        "internal_alerts": {
            "sink_backlog": lambda n, w: setattr(cfg, "sink_backlog_threshold", r.integer(n, w, 1)),
        },
        "falco": {  # Falco's own option name: how the falco format writes times
            "time_format_iso_8601": lambda n, w: setattr(cfg, "falco_time_iso8601", r.boolean(n, w)),
        },
        "reload": {
            "watch": lambda n, w: setattr(cfg, "reload_watch", r.boolean(n, w)),
            "interval_s": lambda n, w: setattr(
                cfg, "reload_interval_s", float(r.number(n, w, 0, above=True))
            ),
        },
    }
    keys = readers[section]
    sub = r.mapping(node, section, tuple(keys))
    for name, (_, value_node) in sub.items():
        with r.collect():
            keys[name](value_node, f"{section}: {name}")
    _where_keys(r, cfg, section, sub)


def _where_keys(r: _Reader, cfg: Config, section: str, sub: dict[str, tuple[yaml.Node, yaml.Node]]) -> None:
    for name, (key_node, _) in sub.items():
        cfg.where[f"{section}.{name}"] = r.loc(key_node)


def _read_containers(r: _Reader, node: yaml.Node, cfg: Config) -> None:
    """``metadata`` (ask the runtimes at all) and ``endpoints`` (which sockets, ``<kind>:<path>``; replaces
    the usual ones)."""
    sub = r.mapping(node, "containers", CONTAINERS_KEYS)
    if "metadata" in sub:
        with r.collect():
            cfg.container_metadata = r.boolean(sub["metadata"][1], "containers: metadata")
    with r.collect():
        _read_endpoints(r, sub, cfg)
    if "endpoints" in sub and "metadata" in sub and not cfg.container_metadata:
        r.warn("containers: endpoints have no effect with metadata: false", sub["endpoints"][0])
    _where_keys(r, cfg, "containers", sub)


def _read_endpoints(r: _Reader, sub: dict[str, tuple[yaml.Node, yaml.Node]], cfg: Config) -> None:
    from sentinel.containers.endpoints import EndpointError, parse_endpoint

    if "endpoints" in sub:
        items = r.strings(sub["endpoints"][1], "containers: endpoints")
        if not items:
            raise r.error(
                "containers: endpoints must name at least one socket (metadata: false asks no runtime)",
                sub["endpoints"][1],
            )
        endpoints = []
        for text, item in items:
            try:
                endpoint = parse_endpoint(text)
            except EndpointError as exc:
                raise r.error(f"containers: endpoints: {exc}", item) from None
            endpoints.append(f"{endpoint.kind}:{endpoint.path}")
        cfg.container_endpoints = endpoints


def _shipped_rules(r: _Reader, node: yaml.Node) -> list[str]:
    from sentinel.detect import find_rules_dir

    shipped = find_rules_dir()
    if shipped is None:
        raise r.error(
            "rules_append adds to the shipped rules, and none were found (rules/ next to the package, "
            "/usr/share/sentinel/rules or $SENTINEL_RULES); use rules: to name them",
            node,
        )
    return [str(shipped)]


def _read_outputs(r: _Reader, node: yaml.Node) -> list[str] | None:
    outputs = []
    bad = False
    for item in r.items(node):
        bad = True
        with r.collect():
            spec = r.string(item, "each item of output")
            try:
                kind, target = parse_output(spec)
            except OutputSpecError as exc:
                raise r.error(str(exc), item) from None
            outputs.append(f"file:{r.resolve(target)}" if kind == "file" and target else spec)
            bad = False
    if bad and not outputs:  # every one was wrong (each recorded): the earlier outputs stay
        return None
    if not outputs:
        raise r.error("output must name at least one output (stdout, file:PATH, http:URL, syslog:…)", node)
    return outputs


def _read_sinks(r: _Reader, node: yaml.Node, cfg: Config) -> None:
    """Sinks append; one with the label (``name``, or kind:target) of a sink from an earlier file replaces it,
    so a drop-in can retune a shipped sink. The same label twice in one file is an error."""
    if not isinstance(node, yaml.SequenceNode):
        raise r.error("sinks must be a list of sinks (each a mapping with kind: and target:)", node)
    seen: set[str] = set()
    for n, item in enumerate(node.value):
        with r.collect(), contextlib.suppress(_SinkLeftOut):
            _add_sink(r, item, n, seen, cfg)


def _add_sink(r: _Reader, item: yaml.Node, n: int, seen: set[str], cfg: Config) -> None:
    sc, inherited = _read_sink(r, item, f"sinks[{n}]")
    label = sc.label()
    if label in seen:
        raise r.error(f"sink {label!r} is given twice in this file; give each a distinct name", item)
    seen.add(label)
    labels = [s.label() for s in cfg.sinks]
    if label in labels:
        i = labels.index(label)
        cfg.sinks[i], cfg.sink_format_inherited[i] = sc, inherited
    else:
        i = len(cfg.sinks)
        cfg.sinks.append(sc)
        cfg.sink_format_inherited.append(inherited)
    cfg.where[f"sinks[{i}]"] = r.loc(item)


def _read_sensor(r: _Reader, node: yaml.Node, cfg: Config) -> None:
    sensor = r.mapping(node, "sensor", SENSOR_KEYS)
    if "wakeup_events" in sensor:
        with r.collect():
            cfg.wakeup_events = r.integer(sensor["wakeup_events"][1], "wakeup_events", 1)
    if "pages" in sensor:
        with r.collect():
            pnode = sensor["pages"][1]
            pages = r.integer(pnode, "pages", 1)
            if pages & (pages - 1):
                raise r.error(f"pages must be a power of two, not {pages}", pnode)
            cfg.pages = pages
    if "open_dedup_s" in sensor:
        with r.collect():
            cfg.open_dedup_s = float(r.number(sensor["open_dedup_s"][1], "open_dedup_s", 0))
    if "loader_opens" in sensor:
        with r.collect():
            cfg.loader_opens = r.choice(sensor["loader_opens"][1], "loader_opens", LOADER_OPENS)
    _where_keys(r, cfg, "sensor", sensor)


def _read_model(r: _Reader, node: yaml.Node) -> str:
    value = r.scalar(node, "model")
    if value is False:  # YAML reads a bare `off` as false
        return "off"
    if not isinstance(value, str) or not value:
        raise r.error(f"model must be auto, default, off or a model directory, not {value!r}", node)
    return value if value in MODEL_CHOICES else r.resolve(value)


def _read_regex(r: _Reader, node: yaml.Node) -> re.Pattern[str]:
    text = r.string(node, "each redact pattern")
    try:
        pattern = re.compile(text)
    except re.error as exc:
        offset = exc.pos if "$" not in str(node.value) else None  # ${…} moved the text: point at the value
        raise r.error(f"redact: bad regular expression: {exc.msg}", node, offset) from None
    if pattern.search("") is not None:
        raise r.error(f"redact: {text!r} matches the empty string (it would redact nothing useful)", node)
    return pattern


def _read_metrics_address(r: _Reader, node: yaml.Node) -> str | None:
    value = r.scalar(node, "metrics: address")
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "off")):
        return None
    if not isinstance(value, str):
        raise r.error(f"metrics: address must be HOST:PORT (127.0.0.1:9464) or off, not {value!r}", node)
    from sentinel.metrics import parse_address

    try:
        parse_address(value)
    except ValueError as exc:
        raise r.error(str(exc), node) from None
    return value


def _finish(cfg: Config) -> None:
    """After the last file: inherited sink formats resolved, outputs given twice refused (checked once, at
    the end, so a later drop-in may still fix what an earlier one left; recorded in ``cfg.errors``)."""
    if cfg.sinks and "output" not in cfg.where:
        cfg.output = []  # stdout is the default only when no file says where alerts go
    for i, sc in enumerate(cfg.sinks):
        if i < len(cfg.sink_format_inherited) and cfg.sink_format_inherited[i] and sc.format != cfg.format:
            cfg.sinks[i] = dataclasses.replace(sc, format=cfg.format)
    seen: dict[str, str] = {}
    files: dict[str, str] = {}
    for spec in cfg.output:
        kind, target = parse_output(spec)
        sc = SinkConfig(kind=kind, target=target or "")
        seen.setdefault(sc.label(), f"output {spec!r}")
        if kind == "file" and target:
            files.setdefault(os.path.normpath(target), f"output {spec!r}")
    for i, sc in enumerate(cfg.sinks):
        file, line, col = cfg.location(f"sinks[{i}]")
        label = sc.label()
        if label in seen:
            cfg.errors.append(ConfigError(
                f"sink {label!r} is the same output as {seen[label]}; give it a name", file, line, col
            ))  # fmt: skip
            continue
        seen[label] = f"sink {label!r}"
        if sc.kind == "file":
            key = os.path.normpath(sc.target)
            if key in files:
                message = f"file {sc.target} is written by {files[key]} already"
                cfg.errors.append(ConfigError(message, file, line, col))
                continue
            files[key] = f"sink {label!r}"


def missing_rule_paths(cfg: Config) -> list[ConfigError]:
    """``rules:`` paths that do not exist, located where the configuration names them (the rules loader
    would say it too, but about the path, not about the line to fix)."""
    out = []
    for i, path in enumerate(cfg.rules or []):
        if not os.path.exists(path):
            file, line, col = cfg.location(f"rules[{i}]")
            out.append(ConfigError(f"rules: {path} does not exist", file, line, col))
    return out


# ---- files -------------------------------------------------------------------------------------------------


def default_config_path() -> str:
    """The file read when no ``--config`` is given (used only if it exists): ``$SENTINEL_CONFIG`` (containers
    mounting a ConfigMap elsewhere; tests keep the host's file out) or ``/etc/sentinel/sentinel.yaml``."""
    return os.environ.get("SENTINEL_CONFIG") or DEFAULT_CONFIG_PATH


def dropin_dir(path: str) -> Path:
    """``/etc/sentinel/sentinel.yaml`` → ``/etc/sentinel/sentinel.d``: the drop-ins of that file."""
    p = Path(path)
    return p.parent / f"{p.stem}.d"


def dropin_files(path: str) -> list[str]:
    """The drop-ins of ``path`` in the order they apply (lexical; hidden files skipped); raises ConfigError
    when the directory exists but cannot be listed."""
    d = dropin_dir(path)
    if not os.path.lexists(d):
        return []
    if not d.is_dir():
        raise ConfigError("the drop-in directory is not a directory", str(d))
    try:
        names = sorted(
            e.name for e in os.scandir(d) if e.name.endswith(".yaml") and not e.name.startswith(".")
        )
    except OSError as exc:
        raise ConfigError(f"cannot list the drop-in directory: {exc.strerror or exc}", str(d)) from None
    return [str(d / n) for n in names if (d / n).is_file()]


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the configuration: {exc}", path) from None


def load_config(
    path: str, env: Mapping[str, str] | None = None, dropins: bool = True, strict: bool = True
) -> Config:
    """The file at ``path`` and (unless ``dropins`` is False) its drop-ins applied over it. Every file is
    read to its end: ``strict`` raises every error found (:class:`ConfigErrors` when several), otherwise
    they are in ``cfg.errors`` (each bad setting kept its earlier value), which is what ``config check``
    and a reload report."""
    cfg = Config(source=path)
    _read_into(cfg, path, env)
    if dropins:
        for extra in _dropins_of(cfg, path):
            _read_into(cfg, extra, env)
    _finish(cfg)
    if strict:
        raise_collected(cfg.errors)
    return cfg


def _read_into(cfg: Config, path: str, env: Mapping[str, str] | None) -> None:
    """One file over ``cfg``; a file that cannot be read or parsed is one error, and the next file is read."""
    try:
        parse_config(_read_text(path), path, env, base=cfg, strict=False)
    except ConfigError as exc:
        if path not in cfg.files:
            cfg.files.append(path)
        cfg.errors.append(exc)


def _dropins_of(cfg: Config, path: str) -> list[str]:
    try:
        return dropin_files(path)
    except ConfigError as exc:
        cfg.errors.append(exc)
        return []


def load_effective_config(
    path: str | None, env: Mapping[str, str] | None = None, strict: bool = True
) -> Config:
    """What the agent runs with: ``path`` (an explicit ``--config``: it must exist) or the default file when
    it exists, with drop-ins; without a file, the defaults with the default location's drop-ins (if any).
    ``strict`` as for :func:`load_config`."""
    if path is not None:
        return load_config(path, env, strict=strict)
    default = default_config_path()
    if os.path.exists(default):
        return load_config(default, env, strict=strict)
    cfg = Config()
    for extra in _dropins_of(cfg, default):
        _read_into(cfg, extra, env)
    _finish(cfg)
    if strict:
        raise_collected(cfg.errors)
    return cfg
