"""Sigma rules' metadata in alerts: ATT&CK from Sigma's tag forms, the ECS ``rule.*`` block (author, id,
licence, references), Falco JSON's output fields and the author in every alert's text (DRL 1.1).

Rules are built by hand with ``Rule.meta`` as the Sigma front end fills it; no Sigma parser is needed.
"""

from __future__ import annotations

import pytest

from sentinel.alerts.mitre import TACTICS, threat_from_tags

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
