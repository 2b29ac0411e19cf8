"""MITRE ATT&CK ids and names from rule tags, for the ECS ``threat.*`` fields and ``rule.reference``.

Tags come in the forms Falco rule authors use: ``mitre_execution`` (a tactic by name), ``T1059`` /
``T1059.004`` (a technique or sub-technique), and the older ``MITRE_TA0002_execution`` /
``MITRE_T1059_command_and_scripting_interpreter``; and in Sigma's: ``attack.execution`` /
``attack.privilege-escalation`` (a tactic by name, ``-`` or ``_`` between words), ``attack.t1059.004``, and
``attack.s0002`` / ``attack.g0032`` (an ATT&CK software or group). Sigma's other namespaces (``car.``,
``cve.``, ``detection.``, ``tlp.``) are not ATT&CK and are ignored here (they stay in the alert's tags).

Names come from a small built-in table covering the Linux techniques rules commonly use; an unknown id is
kept without a name rather than dropped. ATT&CK v19 split Defense Evasion (TA0005) into Stealth (TA0005
kept its id) and Defense Impairment (TA0112); both tag names are understood, and TA0005 keeps the name
Falco's ``mitre_defense_evasion`` tags mean.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

FRAMEWORK = "MITRE ATT&CK"
BASE_URL = "https://attack.mitre.org"

TACTICS: dict[str, str] = {
    "TA0001": "Initial Access",
    "TA0002": "Execution",
    "TA0003": "Persistence",
    "TA0004": "Privilege Escalation",
    "TA0005": "Defense Evasion",
    "TA0006": "Credential Access",
    "TA0007": "Discovery",
    "TA0008": "Lateral Movement",
    "TA0009": "Collection",
    "TA0010": "Exfiltration",
    "TA0011": "Command and Control",
    "TA0040": "Impact",
    "TA0042": "Resource Development",
    "TA0043": "Reconnaissance",
    "TA0112": "Defense Impairment",
}
TACTIC_BY_TAG: dict[str, str] = {
    "mitre_" + name.lower().replace(" ", "_"): tid for tid, name in TACTICS.items()
} | {"mitre_command_control": "TA0011", "mitre_exfil": "TA0010", "mitre_stealth": "TA0005"}
# Sigma: ``attack.<tactic>``, looked up with ``-`` read as ``_`` (``attack.command-and-control``).
TACTIC_BY_SIGMA_NAME: dict[str, str] = {tag[len("mitre_") :]: tid for tag, tid in TACTIC_BY_TAG.items()}

TECHNIQUES: dict[str, str] = {
    "T1003": "OS Credential Dumping",
    "T1003.007": "Proc Filesystem",
    "T1003.008": "/etc/passwd and /etc/shadow",
    "T1005": "Data from Local System",
    "T1007": "System Service Discovery",
    "T1014": "Rootkit",
    "T1016": "System Network Configuration Discovery",
    "T1018": "Remote System Discovery",
    "T1021": "Remote Services",
    "T1021.004": "SSH",
    "T1027": "Obfuscated Files or Information",
    "T1027.001": "Binary Padding",
    "T1027.002": "Software Packing",
    "T1027.003": "Steganography",
    "T1027.010": "Command Obfuscation",
    "T1027.011": "Fileless Storage",
    "T1030": "Data Transfer Size Limits",
    "T1033": "System Owner/User Discovery",
    "T1036": "Masquerading",
    "T1036.003": "Rename Legitimate Utilities",
    "T1036.004": "Masquerade Task or Service",
    "T1036.005": "Match Legitimate Name or Location",
    "T1037": "Boot or Logon Initialization Scripts",
    "T1037.004": "RC Scripts",
    "T1040": "Network Sniffing",
    "T1041": "Exfiltration Over C2 Channel",
    "T1046": "Network Service Discovery",
    "T1048": "Exfiltration Over Alternative Protocol",
    "T1048.003": "Exfiltration Over Unencrypted Non-C2 Protocol",
    "T1049": "System Network Connections Discovery",
    "T1053": "Scheduled Task/Job",
    "T1053.002": "At",
    "T1053.003": "Cron",
    "T1053.006": "Systemd Timers",
    "T1055": "Process Injection",
    "T1055.008": "Ptrace System Calls",
    "T1055.009": "Proc Memory",
    "T1056": "Input Capture",
    "T1056.001": "Keylogging",
    "T1057": "Process Discovery",
    "T1059": "Command and Scripting Interpreter",
    "T1059.003": "Windows Command Shell",
    "T1059.004": "Unix Shell",
    "T1059.006": "Python",
    "T1059.007": "JavaScript",
    "T1068": "Exploitation for Privilege Escalation",
    "T1069": "Permission Groups Discovery",
    "T1069.001": "Local Groups",
    "T1070": "Indicator Removal",
    "T1070.002": "Clear Linux or Mac System Logs",
    "T1070.003": "Clear Command History",
    "T1070.004": "File Deletion",
    "T1070.006": "Timestomp",
    "T1071": "Application Layer Protocol",
    "T1071.001": "Web Protocols",
    "T1071.004": "DNS",
    "T1072": "Software Deployment Tools",
    "T1074": "Data Staged",
    "T1078": "Valid Accounts",
    "T1082": "System Information Discovery",
    "T1083": "File and Directory Discovery",
    "T1087": "Account Discovery",
    "T1087.001": "Local Account",
    "T1090": "Proxy",
    "T1095": "Non-Application Layer Protocol",
    "T1098": "Account Manipulation",
    "T1098.004": "SSH Authorized Keys",
    "T1102": "Web Service",
    "T1105": "Ingress Tool Transfer",
    "T1106": "Native API",
    "T1110": "Brute Force",
    "T1113": "Screen Capture",
    "T1115": "Clipboard Data",
    "T1119": "Automated Collection",
    "T1123": "Audio Capture",
    "T1132": "Data Encoding",
    "T1132.001": "Standard Encoding",
    "T1133": "External Remote Services",
    "T1136": "Create Account",
    "T1136.001": "Local Account",
    "T1140": "Deobfuscate/Decode Files or Information",
    "T1190": "Exploit Public-Facing Application",
    "T1195": "Supply Chain Compromise",
    "T1195.002": "Compromise Software Supply Chain",
    "T1201": "Password Policy Discovery",
    "T1202": "Indirect Command Execution",
    "T1203": "Exploitation for Client Execution",
    "T1204": "User Execution",
    "T1204.001": "Malicious Link",
    "T1204.002": "Malicious File",
    "T1205": "Traffic Signaling",
    "T1212": "Exploitation for Credential Access",
    "T1222": "File and Directory Permissions Modification",
    "T1222.002": "Linux and Mac File and Directory Permissions Modification",
    "T1485": "Data Destruction",
    "T1486": "Data Encrypted for Impact",
    "T1489": "Service Stop",
    "T1490": "Inhibit System Recovery",
    "T1496": "Resource Hijacking",
    "T1496.001": "Compute Hijacking",
    "T1499": "Endpoint Denial of Service",
    "T1505": "Server Software Component",
    "T1505.003": "Web Shell",
    "T1518": "Software Discovery",
    "T1518.001": "Security Software Discovery",
    "T1525": "Implant Internal Image",
    "T1528": "Steal Application Access Token",
    "T1529": "System Shutdown/Reboot",
    "T1531": "Account Access Removal",
    "T1543": "Create or Modify System Process",
    "T1543.002": "Systemd Service",
    "T1546": "Event Triggered Execution",
    "T1546.004": "Unix Shell Configuration Modification",
    "T1547": "Boot or Logon Autostart Execution",
    "T1547.004": "Winlogon Helper DLL",
    "T1547.006": "Kernel Modules and Extensions",
    "T1548": "Abuse Elevation Control Mechanism",
    "T1548.001": "Setuid and Setgid",
    "T1548.003": "Sudo and Sudo Caching",
    "T1552": "Unsecured Credentials",
    "T1552.001": "Credentials In Files",
    "T1552.003": "Bash History",
    "T1552.004": "Private Keys",
    "T1552.005": "Cloud Instance Metadata API",
    "T1552.007": "Container API",
    "T1553": "Subvert Trust Controls",
    "T1553.004": "Install Root Certificate",
    "T1554": "Compromise Host Software Binary",
    "T1555": "Credentials from Password Stores",
    "T1556": "Modify Authentication Process",
    "T1556.003": "Pluggable Authentication Modules",
    "T1557": "Adversary-in-the-Middle",
    "T1560": "Archive Collected Data",
    "T1560.001": "Archive via Utility",
    "T1561": "Disk Wipe",
    "T1561.001": "Disk Content Wipe",
    "T1561.002": "Disk Structure Wipe",
    "T1562": "Impair Defenses",
    "T1562.001": "Disable or Modify Tools",
    "T1562.003": "Impair Command History Logging",
    "T1562.004": "Disable or Modify System Firewall",
    "T1562.006": "Indicator Blocking",
    "T1562.012": "Disable or Modify Linux Audit System",
    "T1564": "Hide Artifacts",
    "T1564.001": "Hidden Files and Directories",
    "T1565": "Data Manipulation",
    "T1565.001": "Stored Data Manipulation",
    "T1567": "Exfiltration Over Web Service",
    "T1568": "Dynamic Resolution",
    "T1568.002": "Domain Generation Algorithms",
    "T1569": "System Services",
    "T1570": "Lateral Tool Transfer",
    "T1571": "Non-Standard Port",
    "T1572": "Protocol Tunneling",
    "T1574": "Hijack Execution Flow",
    "T1574.006": "Dynamic Linker Hijacking",
    "T1584": "Compromise Infrastructure",
    "T1587": "Develop Capabilities",
    "T1588": "Obtain Capabilities",
    "T1588.001": "Malware",
    "T1589": "Gather Victim Identity Information",
    "T1592": "Gather Victim Host Information",
    "T1592.004": "Client Configurations",
    "T1593": "Search Open Websites/Domains",
    "T1593.003": "Code Repositories",
    "T1595": "Active Scanning",
    "T1595.001": "Scanning IP Blocks",
    "T1595.002": "Vulnerability Scanning",
    "T1609": "Container Administration Command",
    "T1610": "Deploy Container",
    "T1611": "Escape to Host",
    "T1613": "Container and Resource Discovery",
    "T1620": "Reflective Code Loading",
}

_TECHNIQUE = re.compile(r"^(?:mitre_|attack\.)?(t\d{4})(?:\.(\d{3}))?(?:_.*)?$", re.IGNORECASE)
_TACTIC_ID = re.compile(r"^(?:mitre_|attack\.)?(ta\d{4})(?:_.*)?$", re.IGNORECASE)
_SIGMA_TACTIC = re.compile(r"^attack\.([a-z]+(?:[-_][a-z]+)*)$", re.IGNORECASE)
_SIGMA_SOFTWARE_GROUP = re.compile(r"^attack\.([sg])(\d{4})$", re.IGNORECASE)


def technique_url(tid: str) -> str:
    """``T1059.004`` → ``https://attack.mitre.org/techniques/T1059/004/``."""
    return f"{BASE_URL}/techniques/{tid.replace('.', '/')}/"


def tactic_url(tid: str) -> str:
    return f"{BASE_URL}/tactics/{tid}/"


def software_url(sid: str) -> str:
    return f"{BASE_URL}/software/{sid}/"


def group_url(gid: str) -> str:
    return f"{BASE_URL}/groups/{gid}/"


@dataclass(slots=True)
class Threat:
    """Tactics, techniques and sub-techniques (and Sigma's software and groups) named by a rule's tags, in
    tag order, without duplicates."""

    tactics: list[str] = field(default_factory=list)
    techniques: list[str] = field(default_factory=list)
    subtechniques: list[str] = field(default_factory=list)
    software: list[str] = field(default_factory=list)  # S0002 ...
    groups: list[str] = field(default_factory=list)  # G0032 ...

    @property
    def empty(self) -> bool:
        return not (self.tactics or self.techniques or self.software or self.groups)

    @property
    def reference(self) -> str | None:
        """The most specific technique's page: what ``rule.reference`` points to."""
        if self.subtechniques:
            return technique_url(self.subtechniques[0])
        return technique_url(self.techniques[0]) if self.techniques else None

    def to_ecs(self) -> dict[str, Any]:
        """ECS ``threat``: each id/name/reference field holds an array (as ECS asks for these fields).

        Names line up with ids; an id without a known name gets no name, so ``name`` lists only known names.
        ``threat.software`` and ``threat.group`` are single-valued in ECS (keyword, not array): they hold the
        first software and group tag; the others stay in the alert's ``tags``.
        """
        doc: dict[str, Any] = {"framework": FRAMEWORK}
        if self.tactics:
            doc["tactic"] = {
                "id": list(self.tactics),
                "name": [TACTICS[t] for t in self.tactics],
                "reference": [tactic_url(t) for t in self.tactics],
            }
        if self.techniques:
            tech: dict[str, Any] = {
                "id": list(self.techniques),
                "name": [TECHNIQUES[t] for t in self.techniques if t in TECHNIQUES],
                "reference": [technique_url(t) for t in self.techniques],
            }
            if self.subtechniques:
                tech["subtechnique"] = {
                    "id": list(self.subtechniques),
                    "name": [TECHNIQUES[t] for t in self.subtechniques if t in TECHNIQUES],
                    "reference": [technique_url(t) for t in self.subtechniques],
                }
            doc["technique"] = tech
        if self.software:
            doc["software"] = {"id": self.software[0], "reference": software_url(self.software[0])}
        if self.groups:
            doc["group"] = {"id": self.groups[0], "reference": group_url(self.groups[0])}
        return doc


def threat_from_tags(tags: list[str] | tuple[str, ...]) -> Threat:
    """Read tactic and technique ids (Falco's and Sigma's tag forms) from tags; tags that are not ATT&CK ones
    are ignored."""
    threat = Threat()
    for raw in tags:
        tag = str(raw).strip()
        low = tag.lower()
        tactic = TACTIC_BY_TAG.get(low)
        if tactic is None and low.startswith("attack."):
            if _sigma_software_or_group(low, threat):
                continue
            m = _SIGMA_TACTIC.match(low)
            if m:
                tactic = TACTIC_BY_SIGMA_NAME.get(m.group(1).replace("-", "_"))
        if tactic is None:
            m = _TACTIC_ID.match(tag)
            if m and m.group(1).upper() in TACTICS:
                tactic = m.group(1).upper()
        if tactic is not None:
            if tactic not in threat.tactics:
                threat.tactics.append(tactic)
            continue
        m = _TECHNIQUE.match(tag)
        if m is None:
            continue
        parent = m.group(1).upper()
        if parent not in threat.techniques:
            threat.techniques.append(parent)
        if m.group(2):
            sub = f"{parent}.{m.group(2)}"
            if sub not in threat.subtechniques:
                threat.subtechniques.append(sub)
    return threat


def _sigma_software_or_group(low: str, threat: Threat) -> bool:
    """``attack.s0002`` → software S0002, ``attack.g0032`` → group G0032; False for any other tag."""
    m = _SIGMA_SOFTWARE_GROUP.match(low)
    if m is None:
        return False
    ident = f"{m.group(1).upper()}{m.group(2)}"
    found = threat.software if m.group(1) == "s" else threat.groups
    if ident not in found:
        found.append(ident)
    return True
