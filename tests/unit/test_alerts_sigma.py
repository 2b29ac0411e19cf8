"""Sigma rules' metadata in alerts: ATT&CK from Sigma's tag forms, the ECS ``rule.*`` block (author, id,
licence, references), Falco JSON's output fields and the author in every alert's text (DRL 1.1).

Rules are built by hand with ``Rule.meta`` as the Sigma front end fills it; no Sigma parser is needed.
"""

from __future__ import annotations

from typing import Any

import pytest

from sentinel.alerts.ecs import EcsRenderer
from sentinel.alerts.mitre import TACTICS, threat_from_tags
from sentinel.alerts.render import EcsAlertRenderer, FalcoAlertRenderer, rule_id
from sentinel.alerts.rule_meta import split_authors
from sentinel.redact import Redactor
from sentinel.rules.model import Rule
from tests.unit.detect_fixtures import HOST, SHA, rule
from tests.unit.test_alerts_render import make_alert, render_ecs, shell_context

# ------------------------------------------------------------------------------------ Sigma's tag forms


@pytest.mark.parametrize(
    ("tag", "tactic"),
    [
        ("attack.initial-access", "TA0001"),
        ("attack.execution", "TA0002"),
        ("attack.persistence", "TA0003"),
        ("attack.privilege-escalation", "TA0004"),
        ("attack.privilege_escalation", "TA0004"),
        ("attack.defense-evasion", "TA0005"),
        ("attack.stealth", "TA0005"),
        ("attack.defense-impairment", "TA0112"),
        ("attack.credential-access", "TA0006"),
        ("attack.discovery", "TA0007"),
        ("attack.lateral-movement", "TA0008"),
        ("attack.collection", "TA0009"),
        ("attack.exfiltration", "TA0010"),
        ("attack.command-and-control", "TA0011"),
        ("attack.command_and_control", "TA0011"),
        ("attack.impact", "TA0040"),
        ("attack.resource-development", "TA0042"),
        ("attack.reconnaissance", "TA0043"),
        ("Attack.Execution", "TA0002"),
        ("attack.ta0002", "TA0002"),
    ],
)
def test_sigma_tactic_tags(tag: str, tactic: str) -> None:
    assert threat_from_tags([tag]).tactics == [tactic]


def test_every_tactic_has_a_sigma_tag() -> None:
    for tid, name in TACTICS.items():
        assert threat_from_tags(["attack." + name.lower().replace(" ", "-")]).tactics == [tid]


def test_sigma_technique_software_and_group_tags() -> None:
    t = threat_from_tags(["attack.execution", "attack.t1059.004", "attack.T1105", "attack.s0002",
                          "attack.g0032", "attack.s0002", "attack.s0508", "car.2016-04-005",
                          "detection.threat-hunting", "cve.2021-4034", "attack.bogus"])  # fmt: skip
    assert t.tactics == ["TA0002"]
    assert t.techniques == ["T1059", "T1105"]
    assert t.subtechniques == ["T1059.004"]
    assert t.software == ["S0002", "S0508"]
    assert t.groups == ["G0032"]
    ecs = t.to_ecs()
    # ECS: threat.software.id and threat.group.id are single keywords; the first tag of each fills them.
    assert ecs["software"] == {"id": "S0002", "reference": "https://attack.mitre.org/software/S0002/"}
    assert ecs["group"] == {"id": "G0032", "reference": "https://attack.mitre.org/groups/G0032/"}
    assert ecs["technique"]["name"] == ["Command and Scripting Interpreter", "Ingress Tool Transfer"]


def test_non_attack_namespaces_give_no_threat() -> None:
    assert threat_from_tags(["car.2016-04-005", "detection.emerging-threats", "tlp.white"]).empty
    assert not threat_from_tags(["attack.g0020"]).empty  # a group alone is ATT&CK


def test_falco_forms_still_read_the_same() -> None:
    t = threat_from_tags(["mitre_execution", "T1059.004", "MITRE_TA0005_defense_evasion", "mitre_stealth"])
    assert t.tactics == ["TA0002", "TA0005"]
    assert t.subtechniques == ["T1059.004"]
    assert t.software == t.groups == []


# ------------------------------------------------------------------------------------ ECS rule.* block


SIGMA_ID = "0b1e8b2c-6f7a-4a36-9d8f-3e2a5c1b7d90"
AUTHOR = "Florian Roth (Nextron Systems, GmbH), @d4ns4n_, Ömer Günal and remotephone"
REFERENCES = ["https://example.org/blog/one", "https://example.org/two"]


def sigma_rule(**meta: Any) -> Rule:
    r = rule(
        "Shell Spawned By Web Server",
        priority="error",
        tags=["attack.execution", "attack.t1059.004", "attack.s0002", "car.2016-04-005"],
        output="Shell %proc.name spawned by %proc.pname",
    )
    r.meta = {
        "format": "sigma",
        "id": SIGMA_ID,
        "author": AUTHOR,
        "references": list(REFERENCES),
        "license": "DRL-1.1",
        "level": "high",
        "status": "test",
        "falsepositives": ["Admin scripts"],
        "logsource": {"category": "process_creation", "product": "linux"},
    } | meta
    return r


def test_split_authors_keeps_each_name_as_written() -> None:
    assert split_authors(AUTHOR) == [
        "Florian Roth (Nextron Systems, GmbH)",  # no split inside parentheses
        "@d4ns4n_",
        "Ömer Günal and remotephone",  # "and" is not a separator: a name may hold it
    ]
    assert split_authors("  ") == split_authors(None) == split_authors("") == []
    assert split_authors("a,, b ,") == ["a", "b"]
    assert split_authors(["x ", "", "y"]) == ["x", "y"]
    assert split_authors("Georg Lauenstein (sure[secure]), X") == ["Georg Lauenstein (sure[secure])", "X"]


def test_ecs_alert_of_a_sigma_rule() -> None:
    doc = render_ecs(make_alert(sigma_rule(), shell_context()))
    assert doc["rule"] == {
        "id": SIGMA_ID,
        "uuid": SIGMA_ID,
        "name": "Shell Spawned By Web Server",
        "description": "Shell Spawned By Web Server (test rule)",
        "ruleset": "sigma",
        "version": SHA[:12],
        "author": ["Florian Roth (Nextron Systems, GmbH)", "@d4ns4n_", "Ömer Günal and remotephone"],
        "license": "DRL-1.1",
        "reference": REFERENCES[0],
        "category": "process_creation",
    }
    assert doc["threat"]["tactic"]["id"] == ["TA0002"]
    assert doc["threat"]["technique"]["subtechnique"]["id"] == ["T1059.004"]
    assert doc["threat"]["software"] == {
        "id": "S0002",
        "reference": "https://attack.mitre.org/software/S0002/",
    }
    assert (doc["event"]["severity"], doc["event"]["risk_score"]) == (73, 73)  # level high → priority error
    assert doc["tags"] == ["attack.execution", "attack.t1059.004", "attack.s0002", "car.2016-04-005"]
    # DRL 1.1: the message names the author, as the rule wrote it.
    assert doc["message"] == f"Shell sh spawned by nginx [Sigma rule by {AUTHOR}]"
    assert doc["sentinel"]["rule"] == {
        "priority": "error",
        "tags": ["attack.execution", "attack.t1059.004", "attack.s0002", "car.2016-04-005"],
        "format": "sigma",
        "sigma": {
            "id": SIGMA_ID,
            "author": AUTHOR,
            "references": REFERENCES,
            "license": "DRL-1.1",
            "level": "high",
            "status": "test",
            "falsepositives": ["Admin scripts"],
            "logsource": {"category": "process_creation", "product": "linux"},
        },
    }
    assert doc["sentinel"]["output_fields"] == {"proc": {"name": "sh", "pname": "nginx"}}


def test_sigma_rule_without_references_points_at_its_technique() -> None:
    doc = render_ecs(make_alert(sigma_rule(references=[], license=None, logsource={}), shell_context()))
    assert doc["rule"]["reference"] == "https://attack.mitre.org/techniques/T1059/004/"
    assert "license" not in doc["rule"] and "category" not in doc["rule"]


def test_sigma_rule_without_author_or_id() -> None:
    r = sigma_rule(author="", id=None)
    doc = render_ecs(make_alert(r, shell_context()))
    assert doc["rule"]["author"] == ["sentinel"] and doc["rule"]["ruleset"] == "sigma"
    assert doc["rule"]["id"] == rule_id(r.name) and "uuid" not in doc["rule"]
    assert doc["message"] == "Shell sh spawned by nginx"


def test_output_that_already_names_the_author_is_not_repeated() -> None:
    r = sigma_rule(author="Jane Doe")
    r.output = "Shell %proc.name (Sigma rule by Jane Doe)"
    doc = render_ecs(make_alert(r, shell_context()))
    assert doc["message"] == "Shell sh (Sigma rule by Jane Doe)"


def test_falco_rules_are_unchanged() -> None:
    r = rule("R", tags=["mitre_execution"])
    doc = render_ecs(make_alert(r, shell_context()))
    assert doc["rule"]["ruleset"] == "sentinel" and doc["rule"]["author"] == ["sentinel"]
    assert set(doc["sentinel"]["rule"]) == {"priority", "tags"}
    assert "uuid" not in doc["rule"] and "license" not in doc["rule"]


def test_rule_block_cache_follows_meta() -> None:
    """Two rules alike but for their meta (a reload that changed the author) must not share a rule block."""
    renderer = EcsAlertRenderer(EcsRenderer(HOST))
    ctx = shell_context()
    first = renderer.render(make_alert(sigma_rule(author="A"), ctx))
    second = renderer.render(make_alert(sigma_rule(author="B"), ctx))
    assert (first["rule"]["author"], second["rule"]["author"]) == (["A"], ["B"])


def test_message_is_attributed_after_redaction() -> None:
    ecs = EcsRenderer(HOST, redactor=Redactor())
    r = sigma_rule(author="password=hunter2")  # an author that looks like a secret is still the author
    r.output = "%proc.cmdline"
    doc = EcsAlertRenderer(ecs).render(make_alert(r, shell_context()))
    assert doc["message"].endswith("[Sigma rule by password=hunter2]")


# ----------------------------------------------------------------------------------------- Falco JSON


def test_falco_json_of_a_sigma_rule() -> None:
    doc = FalcoAlertRenderer(EcsRenderer(HOST)).render(make_alert(sigma_rule(), shell_context()))
    when = doc["output"].split(": ", 1)[0]
    assert len(when) == len("HH:MM:SS.nnnnnnnnn")  # Falco's default time prefix
    assert doc["rule"] == "Shell Spawned By Web Server"
    assert doc["priority"] == "Error"
    assert doc["source"] == "syscall"
    assert doc["output"] == f"{when}: Error Shell sh spawned by nginx [Sigma rule by {AUTHOR}]"
    assert doc["tags"] == ["attack.execution", "attack.t1059.004", "attack.s0002", "car.2016-04-005"]
    fields = doc["output_fields"]
    assert {k: v for k, v in fields.items() if k.startswith("sigma.")} == {
        "sigma.id": SIGMA_ID,
        "sigma.author": AUTHOR,
        "sigma.level": "high",
        "sigma.status": "test",
        "sigma.license": "DRL-1.1",
        "sigma.references": REFERENCES,
        "sigma.logsource.category": "process_creation",
        "sigma.logsource.product": "linux",
    }
    assert fields["proc.name"] == "sh"


def test_falco_json_of_a_falco_rule_has_no_sigma_fields() -> None:
    doc = FalcoAlertRenderer(EcsRenderer(HOST)).render(make_alert(rule("R"), shell_context()))
    assert not any(k.startswith("sigma.") for k in doc["output_fields"])
