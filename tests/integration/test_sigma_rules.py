"""SigmaHQ's Linux rules (shared/sigma, test data beside the repository, loaded unchanged) on the real kernel.

One `sentinel run --rules <the whole corpus folder> --model off` for the module; each trigger below does what
a representative rule describes with real programs (copies of /bin/true named as the rule wants, files in
this test's temporary folders, a network namespace of its own with TEST-NET-1 addresses) and the alert is
checked against the rule's own file: ``rule.name`` is its title, ``rule.id`` its id, ``rule.author`` its
authors and the message ends with ``[Sigma rule by <author>]`` (DRL 1.1), ``rule.ruleset`` is ``sigma``,
``event.severity`` follows its level, ``threat.technique`` its ATT&CK tags, and the process is the trigger's.

Nothing outside temporary folders is touched: rules whose paths are matched with ``contains``/``endswith``
get those paths under a temporary folder, the network rules run in a namespace that vanishes with its
process.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from sentinel.alerts.rule_meta import split_authors

from .conftest import get
from .rule_triggers import Fired, rules_detector, run, wait_for_rule
from .test_detection import Detector
from .test_security_syscalls import run_program

pytestmark = pytest.mark.kernel

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "sigma"
# Sigma level -> the priority it loads as -> ECS event.severity (README: Alerts).
SEVERITY = {"informational": 21, "low": 21, "medium": 47, "high": 73, "critical": 99}


def corpus() -> Path:
    if not (CORPUS / "rules").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Sigma corpus is missing: {CORPUS} (shared/ is laid beside the repo in CI)")
        pytest.skip(f"the Sigma corpus is not here: {CORPUS}")
    return CORPUS


@cache
def corpus_rules() -> dict[str, dict[str, Any]]:
    """Every corpus rule by title, as its file says (the expectations come from the rule, not from here)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(corpus().rglob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and "title" in doc and "detection" in doc:
            out[doc["title"]] = doc
    return out


def named_true(tmp: Path, name: str) -> Path:
    """/bin/true under the name of a tool a rule looks for."""
    target = tmp / name
    shutil.copy("/bin/true", target)
    return target


def write_file(path: Path) -> int:
    """A fresh process that creates ``path`` (open for writing); its pid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return run_program(f"open({str(path)!r}, 'w').close()")[0]


def exe_is(alert: dict[str, Any], *names: str) -> bool:
    return get(alert, "process.name") in names


# ---- process_creation ----------------------------------------------------------------------------------


def base64_decode(tmp: Path) -> Fired:
    (tmp / "blob").write_text("aWQK\n")
    pid = run(["base64", "-d", str(tmp / "blob")])
    return Fired({pid}, lambda a: get(a, "process.executable") == "/usr/bin/base64", "base64 -d <file>")


def once(trigger: Callable[[Path], Fired]) -> Callable[[Path], Fired]:
    """A behaviour that fires several rules runs once: a second run would be aggregated (same rule, same
    executable, same parent within the window), so its alert would not be written on its own."""
    done: list[Fired] = []

    def run_once(tmp: Path) -> Fired:
        if not done:
            done.append(trigger(tmp))
        return done[0]

    return run_once


@once
def pipe_to_shell(tmp: Path) -> Fired:
    # sh -c 'echo aWQK | base64 -d | sh' (decoded: `id`). The command line as typed keeps the quotes; the
    # rule's "sh -c " / "| sh" match its Sysmon-style form (argv joined by spaces), which CommandLine ORs.
    pid = run(["sh", "-c", "echo aWQK | base64 -d | sh"])
    return Fired(
        {pid},
        lambda a: (
            get(a, "process.pid") == pid
            and get(a, "sentinel.output_fields.sentinel.proc.cmdline") == "sh -c 'echo aWQK | base64 -d | sh'"
        ),
        "sh -c 'echo aWQK | base64 -d | sh'",
    )


def crontab_listing(tmp: Path) -> Fired:
    crontab = named_true(tmp, "crontab")
    pid = run([str(crontab), "-l"])
    return Fired({pid}, lambda a: get(a, "process.executable") == str(crontab), f"{crontab} -l")


def at_scheduling(tmp: Path) -> Fired:
    at = named_true(tmp, "at")
    pid = run([str(at), "-l"])
    return Fired({pid}, lambda a: get(a, "process.executable") == str(at), f"{at} -l")


def history_deletion(tmp: Path) -> Fired:
    history = tmp / ".bash_history"
    history.write_text("ls\n")
    pid = run(["rm", "-f", str(history)])
    assert not history.exists()
    return Fired({pid}, lambda a: exe_is(a, "rm"), f"rm -f {history}")


def hacktool(tmp: Path) -> Fired:
    nuclei = named_true(tmp, "nuclei")
    pid = run([str(nuclei), "-version"])
    return Fired({pid}, lambda a: get(a, "process.executable") == str(nuclei), f"{nuclei} -version")


def uname(tmp: Path) -> Fired:
    pid = run(["uname", "-a"])
    return Fired({pid}, lambda a: exe_is(a, "uname"), "uname -a")


def webshell_whoami(tmp: Path) -> Fired:
    # whoami below a program named nginx (a copy of the interpreter, so ParentImage ends with /nginx)
    nginx = tmp / "nginx"
    shutil.copy(os.path.realpath(sys.executable), nginx)
    env = {**os.environ, "PYTHONHOME": sys.base_prefix}
    code = "import subprocess; subprocess.run(['/usr/bin/whoami'], check=True, stdout=subprocess.DEVNULL)"
    pid = run([str(nginx), "-c", code], env=env)
    return Fired(
        {pid},
        lambda a: exe_is(a, "whoami") and get(a, "process.parent.executable") == str(nginx),
        "nginx > whoami",
    )


def whoami_auditd(tmp: Path) -> Fired:
    # auditd EXECVE: a0 is argv[0] as passed
    pid = run(["whoami"])
    return Fired({pid}, lambda a: get(a, "process.pid") == pid and exe_is(a, "whoami"), "whoami")


# ---- file_event ----------------------------------------------------------------------------------------


def cron_file(tmp: Path) -> Fired:
    target = tmp / "etc" / "crontab"  # the rule's '/etc/crontab' is a contains: a copy under tmp matches
    pid = write_file(target)
    return Fired({pid}, lambda a: get(a, "file.path") == str(target), f"python writing {target}")


def base64_filename(tmp: Path) -> Fired:
    target = tmp / "{echo,aWQK}|{base64,-d}|bash"
    pid = write_file(target)
    return Fired({pid}, lambda a: get(a, "file.path") == str(target), f"python writing {target.name!r}")


def profile_script_by_rename(tmp: Path) -> Fired:
    # A file appearing under a name by rename (Sysmon's FileCreate): the new name is the TargetFilename.
    staged, target = tmp / "staged", tmp / "etc" / "profile.d" / "update.sh"
    staged.write_text("true\n")
    target.parent.mkdir(parents=True)
    pid = run_program(f"os.rename({str(staged)!r}, {str(target)!r})")[0]
    return Fired({pid}, lambda a: str(target) in (get(a, "message") or ""), f"rename to {target}")


def ebpf_backdoor(tmp: Path) -> Fired:
    target = tmp / "ebpfbackdoor"
    pid = write_file(target)
    return Fired({pid}, lambda a: get(a, "file.path") == str(target), f"python writing {target}")


def doas_conf(tmp: Path) -> Fired:
    target = tmp / "etc" / "doas.conf"
    pid = write_file(target)
    return Fired({pid}, lambda a: get(a, "file.path") == str(target), f"python writing {target}")


def wget_to_tmp(tmp: Path) -> Fired:
    # The rule wants the file under /tmp/ itself: a folder there of this test's own, served on loopback.
    (tmp / "payload").write_text("x\n")
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: quiet(*a, directory=str(tmp)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    out_dir = Path(tempfile.mkdtemp(prefix="sentinel-sigma-", dir="/tmp"))
    target = out_dir / "payload"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/payload"
        pid = run(["wget", "-q", "-O", str(target), url])
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(out_dir, ignore_errors=True)
    return Fired({pid}, lambda a: get(a, "file.path") == str(target), f"wget -O {target}")


# ---- network_connection --------------------------------------------------------------------------------

# A network namespace of the child's own (gone with it): lo up with TEST-NET-1 addresses, a listener on
# 192.0.2.1 ports 4444 (a malware callback port of the rule) and 8080; bash opens /dev/tcp to 8080, then
# python itself connects to 4444.
NETNS = """
import socket, subprocess
assert sc("unshare", 0x40000000) == 0, "unshare(CLONE_NEWNET)"
for cmd in (["link", "set", "lo", "up"], ["addr", "add", "192.0.2.1/32", "dev", "lo"]):
    subprocess.run(["ip", *cmd], check=True)
ls = []
for port in (4444, 8080):
    s = socket.socket(); s.bind(("192.0.2.1", port)); s.listen(4); ls.append(s)
bash = subprocess.run(["/bin/bash", "-c", "exec 3<>/dev/tcp/192.0.2.1/8080"], check=True)
c = socket.socket(); c.connect(("192.0.2.1", 4444)); c.close()
"""


@cache
def netns_pid() -> int:
    return run_program(NETNS)[0]


def bash_connect(tmp: Path) -> Fired:
    pid = netns_pid()
    return Fired(
        {pid},
        lambda a: (
            exe_is(a, "bash")
            and get(a, "destination.ip") == "192.0.2.1"
            and get(a, "destination.port") == 8080
        ),
        "bash connecting to 192.0.2.1:8080 in a namespace",
    )


def callback_port(tmp: Path) -> Fired:
    pid = netns_pid()
    return Fired(
        {pid},
        lambda a: get(a, "process.pid") == pid and get(a, "destination.port") == 4444,
        "python connecting to 192.0.2.1:4444 in a namespace",
    )


TRIGGERS: dict[str, Callable[[Path], Fired]] = {
    # process_creation
    "Decode Base64 Encoded Text": base64_decode,
    "Linux Shell Pipe to Shell": pipe_to_shell,  # CommandLine|startswith 'sh -c ' and |endswith '| sh'
    "Linux Base64 Encoded Pipe to Shell": pipe_to_shell,
    "Crontab Enumeration": crontab_listing,
    "Scheduled Task/Job At": at_scheduling,
    "History File Deletion": history_deletion,
    "Linux HackTool Execution": hacktool,
    "System Information Discovery": uname,
    "Linux Webshell Indicators": webshell_whoami,
    # file_event
    "New Cron File Created": cron_file,
    "Suspicious Filename with Embedded Base64 Commands": base64_filename,
    "Potentially Suspicious Shell Script Creation in Profile Folder": profile_script_by_rename,
    "Triple Cross eBPF Rootkit Default Persistence": ebpf_backdoor,
    "Linux Doas Conf File Creation": doas_conf,
    "Wget Creating Files in Tmp Directory": wget_to_tmp,
    # auditd, EXECVE record
    "System Owner or User Discovery - Linux": whoami_auditd,
    # network_connection (the two of the five that load; the others need DestinationHostname)
    "Linux Reverse Shell Indicator": bash_connect,
    "Potentially Suspicious Malware Callback Communication - Linux": callback_port,
}


@pytest.fixture(scope="module")
def sigma_detector() -> Iterator[Detector]:
    yield from rules_detector(corpus())


def techniques(tags: list[str]) -> tuple[set[str], set[str]]:
    """ATT&CK technique and sub-technique ids of Sigma tags (attack.t1053.003 -> T1053, T1053.003)."""
    tech, sub = set(), set()
    for tag in tags:
        m = re.fullmatch(r"attack\.(t\d{4})(\.\d{3})?", tag.lower())
        if m:
            tech.add(m.group(1).upper())
            if m.group(2):
                sub.add((m.group(1) + m.group(2)).upper())
    return tech, sub


def check_metadata(alert: dict[str, Any], rule: dict[str, Any]) -> None:
    assert get(alert, "event.kind") == "alert"
    assert get(alert, "rule.name") == rule["title"]
    assert get(alert, "rule.id") == rule["id"] == get(alert, "rule.uuid")
    assert get(alert, "rule.ruleset") == "sigma"
    authors = split_authors(rule["author"])
    assert authors and get(alert, "rule.author") == authors
    assert get(alert, "message").endswith(f"[Sigma rule by {rule['author'].strip()}]"), get(alert, "message")
    assert get(alert, "rule.license") == "DRL-1.1"
    assert get(alert, "event.severity") == SEVERITY[rule["level"]]
    tech, sub = techniques(rule.get("tags", []))
    if tech:
        assert set(get(alert, "threat.technique.id") or []) == tech
    if sub:
        assert set(get(alert, "threat.technique.subtechnique.id") or []) == sub
    if "category" in rule["logsource"]:
        assert get(alert, "rule.category") == rule["logsource"]["category"]


@pytest.mark.parametrize("title", sorted(TRIGGERS))
def test_rule_fires(title: str, sigma_detector: Detector, tmp_path: Path) -> None:
    rule = corpus_rules().get(title)
    assert rule is not None, f"no corpus rule titled {title!r}"
    alert = wait_for_rule(sigma_detector, title, TRIGGERS[title](tmp_path))
    check_metadata(alert, rule)
    assert get(alert, "process.pid") and get(alert, "process.executable") and get(alert, "process.name")


def test_corpus_loads_the_rules_triggered_here() -> None:
    """The triggers cover every logsource that loads, and each triggered rule is loaded, not refused."""
    from sentinel.rules import load_rules

    loaded = load_rules([corpus()])
    assert loaded.ruleset is not None
    rs = loaded.ruleset
    live = {r.name for r in rs.enabled_rules} - {r.name for r in rs.refused} - {r.name for r in rs.never_fire}
    assert set(TRIGGERS) <= live, sorted(set(TRIGGERS) - live)
    logsources = {corpus_rules()[t]["logsource"].get("category", "auditd") for t in TRIGGERS}
    assert logsources == {"process_creation", "file_event", "network_connection", "auditd"}
    network = {
        r.name
        for r in rs.rules
        if (r.meta or {}).get("logsource", {}).get("category") == "network_connection"
    }
    assert network & live <= set(TRIGGERS), "a network_connection rule loads that no trigger covers"
