"""What a rule's own format says about it (``Rule.meta``), as alerts carry it: Sigma's id, author, licence,
references, level and logsource.

A Falco-style rule has an empty ``meta``; its alerts are unchanged. For a Sigma rule (``meta["format"] ==
"sigma"``, filled by the Sigma front end):

- ECS ``rule.id`` and ``rule.uuid`` are the Sigma id, ``rule.ruleset`` is ``"sigma"``, ``rule.author`` the
  authors (an array, as ECS defines it), ``rule.license`` the rule's licence (DRL 1.1 for SigmaHQ's),
  ``rule.reference`` the first of the rule's references (ECS has one reference URL per rule; all of them are
  under ``sentinel.rule.sigma.references``) and ``rule.category`` the logsource category. Everything the rule
  says is kept, as written, under ``sentinel.rule.sigma`` (``id, author, references, license, level, status,
  falsepositives, logsource``).
- Falco's JSON carries the same as ``output_fields`` under ``sigma.*`` (``sigma.id``, ``sigma.author`` ...).
- **Every alert's text names the author** (``message`` in ECS, ``output`` in Falco's JSON): the Detection Rule
  License 1.1 asks that "messages based on matches with the Rules must retain ... identification of the
  authors(s) ("author" field) of the Rule". The structured fields satisfy it inside a whole document, but a
  message is often read on its own (a chat notification of Falco's ``output``, a SIEM's message column), so
  the text gets `` [Sigma rule by <author>]`` unless it already quotes the author string.

Authors: Sigma's ``author`` is one free-text string, several names separated by commas (``Florian Roth
(Nextron Systems), Nasreddine Bencherchali``). ``rule.author`` splits it on commas outside parentheses and
brackets and trims each name; nothing else (not `` and ``, which a name or pseudonym may hold), so each entry
is as the rule wrote it. The unsplit string is kept in ``sentinel.rule.sigma.author`` and in the text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sentinel.rules.model import rule_format

if TYPE_CHECKING:
    from sentinel.rules.model import Rule

SIGMA = "sigma"
FALCO = "falco"
_OPEN = "([{"
_CLOSE = ")]}"


def split_authors(author: Any) -> list[str]:
    """Sigma's ``author`` string → names: split on commas outside ``()``/``[]``/``{}``, trimmed, empties
    dropped. A list (already split) is kept as it is, trimmed."""
    if author is None:
        return []
    if isinstance(author, (list, tuple)):
        return [s for s in (str(a).strip() for a in author) if s]
    names: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in str(author):
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            names.append("".join(current))
            current = []
            continue
        current.append(ch)
    names.append("".join(current))
    return [s for s in (n.strip() for n in names) if s]


def author_text(rule: Rule) -> str:
    """The author as the rule wrote it (one string), or "" when the rule names none."""
    author = rule.meta.get("author") if rule.meta else None
    if not author:
        return ""
    if isinstance(author, (list, tuple)):
        return ", ".join(split_authors(author))
    return str(author).strip()


def _references(rule: Rule) -> list[str]:
    refs = rule.meta.get("references") or []
    if isinstance(refs, str):
        refs = [refs]
    return [str(r).strip() for r in refs if str(r).strip()]


def attributed(rule: Rule, text: str) -> str:
    """``text`` with the rule's author appended when the rule comes from another format (DRL 1.1) and the text
    does not already name the author."""
    if not rule.meta or rule_format(rule) == FALCO:
        return text
    author = author_text(rule)
    if not author or author in text:
        return text
    label = "Sigma" if rule_format(rule) == SIGMA else rule_format(rule)
    return f"{text} [{label} rule by {author}]"


def ecs_rule_fields(rule: Rule) -> dict[str, Any]:
    """ECS ``rule.*`` fields the rule's format supplies (override sentinel's defaults); {} for Falco rules."""
    if not rule.meta or rule_format(rule) == FALCO:
        return {}
    meta = rule.meta
    out: dict[str, Any] = {"ruleset": rule_format(rule)}
    rid = str(meta.get("id") or "").strip()
    if rid:
        out["id"] = rid
        out["uuid"] = rid
    authors = split_authors(meta.get("author"))
    if authors:
        out["author"] = authors
    licence = str(meta.get("license") or "").strip()
    if licence:
        out["license"] = licence
    refs = _references(rule)
    if refs:
        out["reference"] = refs[0]
    logsource = meta.get("logsource")
    if isinstance(logsource, dict) and logsource.get("category"):
        out["category"] = str(logsource["category"])
    return out


def sentinel_rule_fields(rule: Rule) -> dict[str, Any]:
    """What goes beside ``priority``/``tags`` under ``sentinel.rule`` for a rule of another format: ``format``
    and the rule's own metadata under the format's name (``sigma: {id, author, references, ...}``) as the
    front end gave it; {} for Falco rules (their documents are unchanged)."""
    fmt = rule_format(rule)
    if fmt == FALCO:
        return {}
    meta = {k: v for k, v in rule.meta.items() if k != "format"}
    if "references" in meta:
        meta["references"] = _references(rule)
    return {"format": fmt, fmt: meta}


def falco_output_fields(rule: Rule) -> dict[str, Any]:
    """Falco JSON ``output_fields`` for the rule's metadata: ``sigma.id``, ``sigma.author`` (the string as
    written), ``sigma.level``, ``sigma.status``, ``sigma.license``, ``sigma.references`` (a list),
    ``sigma.logsource.category/product/service``; {} for Falco rules. Absent values are left out."""
    fmt = rule_format(rule)
    if fmt == FALCO:
        return {}
    meta = rule.meta
    out: dict[str, Any] = {}
    for key in ("id", "level", "status", "license"):
        value = meta.get(key)
        if value:
            out[f"{fmt}.{key}"] = str(value)
    author = author_text(rule)
    if author:
        out[f"{fmt}.author"] = author
    refs = _references(rule)
    if refs:
        out[f"{fmt}.references"] = refs
    logsource = meta.get("logsource")
    if isinstance(logsource, dict):
        for key in ("category", "product", "service"):
            if logsource.get(key):
                out[f"{fmt}.logsource.{key}"] = str(logsource[key])
    return out
