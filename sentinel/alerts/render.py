"""Alert documents: ECS 9.x (the default) and Falco's alert JSON, from an :class:`Alert`.

The ECS alert starts from the event document the triggering event would have had (``EcsRenderer.event_doc``:
process with parent and ancestry, file or destination blocks) and adds what makes it an alert: ``rule.*``,
``threat.*`` from the rule's tags, ``event.severity``/``risk_score`` from its priority, and the formatted
output as ``message``. A rule of another format (Sigma) adds what its ``meta`` says (``rule_meta.py``: id,
authors, licence, references; the author in the text, as DRL 1.1 asks). Falco's format exists so existing
Falco tooling (falcosidekick, event-generator) can consume sentinel unchanged.

Both formats redact secrets (the stream renderer's :class:`~sentinel.redact.Redactor`) in what a rule's
output can carry: the output text and every string among the output fields and ``extra`` (the anomaly
model's explanations quote the command line). The process block is redacted by the ``EcsRenderer`` itself.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from sentinel.alerts import rule_meta
from sentinel.alerts.behaviour import describe as describe_key
from sentinel.alerts.ecs import ECS_VERSION, EcsRenderer, KnownSecrets, hide_known
from sentinel.alerts.ecs_container import falco_suggested_fields
from sentinel.alerts.mitre import threat_from_tags
from sentinel.alerts.model import RULESET, Alert
from sentinel.redact import REDACTED
from sentinel.syscalls import target_pid

if TYPE_CHECKING:
    from sentinel.redact import Redactor

# Elastic's prebuilt "External Alerts" rule maps these to low / medium / high / critical.
SEVERITY: dict[str, int] = {
    "debug": 21,
    "informational": 21,
    "info": 21,
    "notice": 21,
    "warning": 47,
    "error": 73,
    "critical": 99,
    "alert": 99,
    "emergency": 99,
}
FALCO_PRIORITY: dict[str, str] = {
    "emergency": "Emergency",
    "alert": "Alert",
    "critical": "Critical",
    "error": "Error",
    "warning": "Warning",
    "notice": "Notice",
    "informational": "Informational",
    "info": "Informational",
    "debug": "Debug",
}
AUTHOR = "sentinel"
_RULE_CACHE_MAX = 4096
_ARGV_KEYS = frozenset(("args", "argv"))  # a list of strings under these names is an argv
_MAX_DEPTH = 32


def severity(priority: str) -> int:
    """21/47/73/99 for a Falco priority; an unknown priority counts as medium rather than vanishing."""
    return SEVERITY.get(priority.lower(), 47)


def rule_id(name: str) -> str:
    """Stable across versions and hosts while the rule keeps its name (SIEM de-duplication keys on it)."""
    return hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def nest_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``{"proc.name": v}`` → ``{"proc": {"name": v}}``: ECS documents carry nested objects, not dotted keys.

    A name that is both a leaf and a prefix of another cannot nest; it keeps its dotted key at the top.
    """
    out: dict[str, Any] = {}
    for name, value in fields.items():
        parts = name.split(".")
        node = out
        ok = True
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                ok = False
                break
            node = child
        if ok and not isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = value
        else:
            out[name] = value
    return out


def redact_text(redactor: Redactor, text: str, known: KnownSecrets = ()) -> str:
    """``text`` redacted, after hiding what redaction hid in each ``known`` argument wherever it appears."""
    return redactor.redact(hide_known(text, known) if known else text)


def redact_fields(redactor: Redactor, fields: dict[str, Any], known: KnownSecrets = ()) -> dict[str, Any]:
    """A copy of ``fields`` with every string (nested in dicts and lists too) redacted.

    A copy, because the alert's own dicts may be rendered again in another format. A list of strings named
    ``args``/``argv`` is redacted as an argv (a secret after ``--password`` is caught); any other string on
    its own (names, paths, whole command lines such as ``proc.acmdline``'s), with ``known`` (see
    ``EcsRenderer.known_secrets``).
    """
    return {k: _redact_value(redactor, v, k, known, 0) for k, v in fields.items()}


def redacted_output(
    ecs: EcsRenderer, alert: Alert, with_extra: bool
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The alert's output text, output fields and (``with_extra``) extra as they may leave the host: as they
    are without an active redactor, else redacted copies (the alert may be rendered again in another
    format), hiding what the process's lineage had hidden too. The text of a Sigma rule's alert ends with
    its author (``rule_meta.attributed``), added after redaction so it stays as the rule wrote it."""
    redactor = ecs.active_redactor
    if redactor is None:
        return rule_meta.attributed(alert.rule, alert.output), alert.output_fields, alert.extra
    known = ecs.known_secrets(alert.ctx.proc) if alert.ctx is not None else ()
    extra = alert.extra
    if with_extra and extra:
        extra = redact_fields(redactor, extra, known)
    fields = redact_fields(redactor, alert.output_fields, known)
    return rule_meta.attributed(alert.rule, redact_text(redactor, alert.output, known)), fields, extra


def aggregation_block(ecs: EcsRenderer, alert: Alert) -> dict[str, Any]:
    """``sentinel.aggregation`` of a summary: how many repeats, when, the key they share, a capped sample of
    their distinct executables and command lines (redacted like the rest: command lines carry secrets) and
    the repeats not in the sample; ``rate_limited`` for the per-rule rate limit's summary."""
    block: dict[str, Any] = {
        "count": alert.count,
        "first": ecs.timestamp(alert.first_ns),
        "last": ecs.timestamp(alert.last_ns),
    }
    key = describe_key(alert.lineage)
    if key is not None and not alert.rate_limited:
        block["key"] = key
    if alert.distinct:
        block["distinct"] = {name: list(values) for name, values in alert.distinct.items()}
    redactor = ecs.active_redactor
    if redactor is not None and ("key" in block or "distinct" in block):
        known = ecs.known_secrets(alert.ctx.proc) if alert.ctx is not None else ()
        block.update(redact_fields(redactor, {k: block[k] for k in ("key", "distinct") if k in block}, known))
    if alert.distinct_more:
        block["more"] = dict(alert.distinct_more)
    if alert.rate_limited:
        block["rate_limited"] = True
    return block


def flatten(value: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in value.items():
        name = f"{prefix}.{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name))
        else:
            out[name] = v
    return out


def _redact_value(redactor: Redactor, value: Any, key: Any, known: KnownSecrets, depth: int) -> Any:
    if isinstance(value, str):
        return redact_text(redactor, value, known)
    if depth >= _MAX_DEPTH and isinstance(value, (dict, list, tuple)):
        return REDACTED  # no document of ours nests this deep: fail closed rather than recurse on
    if isinstance(value, dict):
        return {k: _redact_value(redactor, v, k, known, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        name = key.rpartition(".")[2] if isinstance(key, str) else ""
        if name in _ARGV_KEYS and all(isinstance(v, str) for v in value):
            return redactor.redact_args(list(value))
        return [_redact_value(redactor, v, None, known, depth + 1) for v in value]
    return value


class AlertRenderer(Protocol):
    def render(self, alert: Alert) -> dict[str, Any]: ...


class EcsAlertRenderer:
    """ECS alert documents; shares the stream's :class:`EcsRenderer` (process-block cache, sequence)."""

    def __init__(self, ecs: EcsRenderer) -> None:
        self.ecs = ecs
        self._rules: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any] | None]] = {}

    def _rule_blocks(self, alert: Alert) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """``rule`` and ``threat`` depend only on the rule and ruleset version: built once per rule."""
        rule = alert.rule
        meta_key = orjson.dumps(rule.meta, option=orjson.OPT_SORT_KEYS, default=str) if rule.meta else b""
        key = (rule.name, rule.desc, tuple(rule.tags), alert.ruleset, alert.ruleset_version, meta_key)
        hit = self._rules.get(key)
        if hit is not None:
            return hit
        threat = threat_from_tags(rule.tags)
        block: dict[str, Any] = {
            "id": rule_id(rule.name),
            "name": rule.name,
            "description": rule.desc,
            "ruleset": alert.ruleset,
            "version": alert.ruleset_version,
            "author": [AUTHOR],  # ECS rule.author is an array
        }
        if threat.reference:
            block["reference"] = threat.reference
        if alert.ruleset == RULESET:  # a detection rule; internal and model alerts have no other format
            block.update(rule_meta.ecs_rule_fields(rule))
        threat_doc = None if threat.empty else threat.to_ecs()
        if len(self._rules) >= _RULE_CACHE_MAX:
            self._rules.clear()
        self._rules[key] = (block, threat_doc)
        return block, threat_doc

    def render(self, alert: Alert) -> dict[str, Any]:
        ecs = self.ecs
        ctx = alert.ctx
        if ctx is not None:
            target = None
            if ctx.target is not None or ctx.fd_path is not None:
                target = (target_pid(ctx.ev), ctx.target, ctx.fd_path)
            doc = ecs.event_doc(ctx.ev, ctx.proc, ctx.path, target, ctx.files)
            doc["@timestamp"] = ecs.timestamp(alert.ts_ns)
        else:
            doc = self._internal_doc(alert)
        event = doc["event"]
        event["kind"] = "alert"
        event["dataset"] = "sentinel.alerts"
        sev = severity(alert.rule.priority)
        event["severity"] = sev
        event["risk_score"] = sev
        rule_block, threat = self._rule_blocks(alert)
        doc["rule"] = rule_block
        if threat is not None:
            doc["threat"] = threat
        doc["message"], output_fields, extra = redacted_output(ecs, alert, with_extra=True)
        if alert.rule.tags:
            doc["tags"] = list(alert.rule.tags)
        sentinel = doc.setdefault("sentinel", {})
        sentinel["rule"] = {"priority": alert.rule.priority, "tags": list(alert.rule.tags)}
        if alert.rule.meta:
            sentinel["rule"].update(rule_meta.sentinel_rule_fields(alert.rule))
        sentinel["output_fields"] = nest_fields(output_fields)
        if alert.aggregated:
            sentinel["aggregation"] = aggregation_block(ecs, alert)
            event["start"], event["end"] = sentinel["aggregation"]["first"], sentinel["aggregation"]["last"]
        if extra:
            sentinel.update(extra)
        return doc

    def _internal_doc(self, alert: Alert) -> dict[str, Any]:
        """An alert about the agent itself: no process or file, the agent and host blocks only."""
        ecs = self.ecs
        doc_id, seq = ecs.new_id()
        category = "configuration" if alert.rule.name.startswith(("Rules", "Anomaly model")) else "host"
        return {
            "@timestamp": ecs.timestamp(alert.ts_ns),
            "ecs": {"version": ECS_VERSION},
            "event": {
                "kind": "alert",
                "module": "sentinel",
                "dataset": "sentinel.alerts",
                "id": doc_id,
                "sequence": seq,
                "created": ecs.wall_timestamp(time.time_ns()),
                "category": [category],
                "type": ["info"],
                "action": alert.rule.name.lower().replace(" ", "-"),
            },
            "agent": ecs.agent_block,
            "host": ecs.host_block,
            "sentinel": {},
        }


def falco_clock(wall_ns: int) -> str:
    """Falco's default ``%evt.time``: ``HH:MM:SS.nnnnnnnnn`` in the host's local time zone (what starts every
    ``output`` unless ``time_format_iso_8601`` is set)."""
    secs, ns = divmod(wall_ns, 1_000_000_000)
    return f"{time.strftime('%H:%M:%S', time.localtime(secs))}.{ns:09d}"


class FalcoAlertRenderer:
    """Falco's alert JSON: what ``falco -o json_output=true`` prints, field for field.

    ``output`` starts as Falco's does: ``HH:MM:SS.nnnnnnnnn: Priority text`` (local time, Falco's
    ``%evt.time``), or with ``iso8601`` (Falco's ``time_format_iso_8601: true``) the ISO 8601 UTC time
    (``%evt.time.iso8601``), which then replaces ``evt.time`` in ``output_fields``. ``time`` is ISO 8601
    UTC either way, as in Falco.
    """

    def __init__(self, ecs: EcsRenderer, *, iso8601: bool = False) -> None:
        self.ecs = ecs  # for the host and timestamp formatting
        self.iso8601 = iso8601

    def render(self, alert: Alert) -> dict[str, Any]:
        ecs = self.ecs
        wall_ns = ecs.host.boot_time_ns + alert.ts_ns
        if alert.ctx is not None and alert.ctx.wall_ns and not alert.aggregated:
            wall_ns = alert.ctx.wall_ns
        when = ecs.wall_timestamp(wall_ns)
        priority = FALCO_PRIORITY.get(alert.rule.priority.lower(), alert.rule.priority.capitalize())
        output, fields, _ = redacted_output(ecs, alert, with_extra=False)  # Falco's format has no extra
        fields = dict(fields)  # evt.time and the aggregation go in below; the alert's own dict stays as is
        fields["evt.time.iso8601" if self.iso8601 else "evt.time"] = wall_ns
        if alert.ctx is not None:  # Falco's default suggested output: which container (host: `host`)
            ctx = alert.ctx
            ref = ctx.proc.container if ctx.proc is not None else None
            for name, value in falco_suggested_fields(ref, ctx.containers).items():
                fields.setdefault(name, value)
        if alert.rule.meta:
            fields.update(rule_meta.falco_output_fields(alert.rule))
        if (
            alert.aggregated
        ):  # Falco's output_fields are flat: sentinel.aggregation.distinct.process.executable
            for name, value in flatten(aggregation_block(ecs, alert), "sentinel.aggregation").items():
                fields[name] = value
        return {
            "time": when,
            "rule": alert.rule.name,
            "priority": priority,
            "source": "internal" if alert.internal else alert.rule.source or "syscall",
            "hostname": ecs.host.hostname,
            "output": f"{when if self.iso8601 else falco_clock(wall_ns)}: {priority} {output}",
            "tags": list(alert.rule.tags),
            "output_fields": fields,
        }


FORMATS = ("ecs", "falco")


def make_renderer(fmt: str, ecs: EcsRenderer, *, falco_iso8601: bool = False) -> AlertRenderer:
    """``falco_iso8601``: the falco format's ``time_format_iso_8601`` (config ``falco:``)."""
    if fmt == "ecs":
        return EcsAlertRenderer(ecs)
    if fmt == "falco":
        return FalcoAlertRenderer(ecs, iso8601=falco_iso8601)
    raise ValueError(f"unknown alert format {fmt!r}; choose ecs or falco")
