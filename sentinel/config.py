"""The agent's configuration file: a small YAML mapping, every error located (file, line, column).

```yaml
rules: [/usr/share/sentinel/rules, /etc/sentinel/rules.local.yaml]   # files or directories, in order
format: ecs                  # ecs | falco
output: [stdout, file:/var/log/sentinel/alerts.json]
aggregation_window_s: 60     # 0 turns aggregation off
sensor: {wakeup_events: 64, pages: 1024, open_dedup_s: 30}
```

Command-line flags override the file. Relative rule and file paths are relative to the config file, so a
config works from wherever the agent is started. Unknown keys are errors: a misspelt key silently ignored
would leave the agent running with settings the operator did not choose.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sentinel.sinks import OutputSpecError, parse_output

FORMATS = ("ecs", "falco")
TOP_KEYS = ("rules", "format", "output", "aggregation_window_s", "sensor")
SENSOR_KEYS = ("wakeup_events", "pages", "open_dedup_s")


class ConfigError(ValueError):
    """A config problem with its location; ``str()`` is ``FILE:LINE:COL: message``."""

    def __init__(self, message: str, file: str, line: int = 0, column: int = 0) -> None:
        self.message, self.file, self.line, self.column = message, file, line, column
        where = f"{file}:{line}:{column}" if line else file
        super().__init__(f"{where}: {message}")


@dataclass(slots=True)
class Config:
    """Defaults are the agent's defaults; ``None`` for ``rules`` means the shipped ruleset."""

    rules: list[str] | None = None
    format: str = "ecs"
    output: list[str] = field(default_factory=lambda: ["stdout"])
    aggregation_window_s: float = 60.0
    wakeup_events: int = 64
    pages: int | None = None
    open_dedup_s: float = 30.0
    source: str | None = None  # the file it came from


def _where(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path
        self.base = Path(path).resolve().parent

    def error(self, message: str, node: yaml.Node | None = None) -> ConfigError:
        line, col = _where(node) if node is not None else (0, 0)
        return ConfigError(message, self.path, line, col)

    def scalar(self, node: yaml.Node, what: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(f"{what} must be a single value", node)
        try:
            return _LOADER.construct_object(node)  # type: ignore[no-untyped-call]
        except yaml.YAMLError as exc:
            raise self.error(f"{what}: {getattr(exc, 'problem', None) or exc}", node) from None

    def string(self, node: yaml.Node, what: str) -> str:
        value = self.scalar(node, what)
        if not isinstance(value, str) or not value:
            raise self.error(f"{what} must be a non-empty string", node)
        return value

    def strings(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node]]:
        """A string or a list of strings."""
        if isinstance(node, yaml.SequenceNode):
            return [(self.string(item, f"each item of {what}"), item) for item in node.value]
        return [(self.string(node, what), node)]

    def number(self, node: yaml.Node, what: str, minimum: float, integer: bool = False) -> float:
        value = self.scalar(node, what)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (integer and isinstance(value, float))
        ):
            raise self.error(f"{what} must be {'an integer' if integer else 'a number'}, not {value!r}", node)
        if not math.isfinite(value) or value < minimum:
            raise self.error(f"{what} must be at least {minimum:g}, not {value!r}", node)
        return value

    def mapping(
        self, node: yaml.Node, what: str, keys: tuple[str, ...]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(f"{what} must be a mapping of keys to values", node)
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key not in keys:
                raise self.error(f"unknown key {key!r} in {what}; known keys: {', '.join(keys)}", key_node)
            if key in out:
                raise self.error(f"duplicate key {key!r} in {what}", key_node)
            out[key] = (key_node, value_node)
        return out

    def resolve(self, text: str) -> str:
        return text if os.path.isabs(text) else str(self.base / text)


_LOADER = yaml.SafeLoader("")


def parse_config(text: str, path: str) -> Config:
    """Parse a config document; raises :class:`ConfigError` with the location of the first problem."""
    reader = _Reader(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        raise ConfigError(f"YAML syntax: {exc.problem or exc.context}", path, line, col) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML: {exc}", path) from None
    cfg = Config(source=path)
    if root is None or (isinstance(root, yaml.ScalarNode) and root.value == "" and root.tag.endswith("null")):
        return cfg
    items = reader.mapping(root, "the configuration", TOP_KEYS)
    if "rules" in items:
        cfg.rules = [reader.resolve(p) for p, _ in reader.strings(items["rules"][1], "rules")]
    if "format" in items:
        node = items["format"][1]
        fmt = reader.string(node, "format")
        if fmt not in FORMATS:
            raise reader.error(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}", node)
        cfg.format = fmt
    if "output" in items:
        outputs = []
        for spec, node in reader.strings(items["output"][1], "output"):
            try:
                kind, target = parse_output(spec)
            except OutputSpecError as exc:
                raise reader.error(str(exc), node) from None
            outputs.append(f"file:{reader.resolve(target)}" if kind == "file" and target else spec)
        if not outputs:
            raise reader.error(
                "output must name at least one output (stdout or file:PATH)", items["output"][1]
            )
        cfg.output = outputs
    if "aggregation_window_s" in items:
        cfg.aggregation_window_s = float(
            reader.number(items["aggregation_window_s"][1], "aggregation_window_s", 0)
        )
    if "sensor" in items:
        sensor = reader.mapping(items["sensor"][1], "sensor", SENSOR_KEYS)
        if "wakeup_events" in sensor:
            cfg.wakeup_events = int(reader.number(sensor["wakeup_events"][1], "wakeup_events", 1, True))
        if "pages" in sensor:
            node = sensor["pages"][1]
            pages = int(reader.number(node, "pages", 1, True))
            if pages & (pages - 1):
                raise reader.error(f"pages must be a power of two, not {pages}", node)
            cfg.pages = pages
        if "open_dedup_s" in sensor:
            cfg.open_dedup_s = float(reader.number(sensor["open_dedup_s"][1], "open_dedup_s", 0))
    return cfg


def load_config(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the configuration: {exc}", path) from None
    return parse_config(text, path)
