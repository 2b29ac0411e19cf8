#!/usr/bin/env python3
"""Live quality of the host anomaly model: novelties caught, and model alerts on normal work. Run as root.

What rules cannot name is the model's job, so this measures it on the real kernel, end to end, the way the
agent is deployed (``sentinel run --model auto``: learn this host, train, switch to detection by itself):

1. the lab's services start (``scripts/lab/lab.py up``), then the seeded benign workload, which runs to the
   end;
2. the agent starts with a fresh state directory and ``--learn-period LEARN``; its JSON log says when it is
   ready and when the model is trained;
3. NORMAL seconds of continued normal work: model alerts counted (documents, incidents), and per hour;
4. each novelty of ``scripts/lab/novelty.py`` once, spaced, then a tail wait. A novelty is *detected* when a
   model alert's process (or its parent or an ancestor) is the novelty's root, with an event time from its
   start - 1 s to its end + 10 s. "Names it" says whether that alert is on the novel event itself (the file,
   port or program);
5. the agent is stopped (SIGTERM: exit 0 expected), then the workload, then the lab (unless ``--keep-lab``).

    .venv/bin/python benchmarks/bench_model_quality.py [--quick] [--learn S] [--normal S] [--json PATH]

The agent watches the whole host, so alerts are also split by origin (the lab's workload, the lab's services,
this harness, elsewhere on the host): on a shared machine the last is other people's work. About LEARN +
NORMAL + 7 minutes (defaults 10 + 20 min; ``--quick`` about 10 min). Logs, the alerts and the agent's state
stay in the work directory. Exit codes: 0 figures printed, 1 the harness failed (lab, workload,
agent, training, a novelty that could not run, the agent not exiting 0), 2 bad usage, 130 interrupted (cleaned
up either way).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LAB_DIR = REPO / "scripts" / "lab"
sys.path.insert(0, str(LAB_DIR))

import lab  # noqa: E402
import novelty  # noqa: E402

# The agent's log events this harness follows (JSON lines on stderr, key "event"); adjust here if renamed.
LOG_READY = "sentinel.ready"
LOG_TRAINED = "sentinel.model_trained"
LOG_PHASE = "sentinel.anomaly"  # with "phase": "detection" the model is scoring too
PHASE_DETECTION = "detection"
LOG_TRAINING = "sentinel.training"
LOG_LEARNING_EXTENDED = "sentinel.learning_extended"
LOG_TRAINING_FAILED = "sentinel.training_failed"
# How model alerts are told apart in the alert documents (ECS): either is enough.
ML_RULE_NAME = "Anomalous behaviour for this host"
ML_TAG = "sentinel-ml"
INTERNAL_RULESET = "sentinel-internal"  # alerts about the agent itself, neither rules nor model
# Where an alert's process came from (its lineage): the host may run more than the lab.
ORIGIN_WORKLOAD, ORIGIN_SERVICES = "lab workload", "lab services"
ORIGIN_HARNESS, ORIGIN_ELSEWHERE = "this harness", "elsewhere on the host"
ORIGINS = (ORIGIN_WORKLOAD, ORIGIN_SERVICES, ORIGIN_HARNESS, ORIGIN_ELSEWHERE)

READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 120.0
MATCH_BEFORE_S = 1.0  # a novelty's window: its start - 1 s .. its end + 10 s
MATCH_AFTER_S = 10.0
PROGRESS_EVERY_S = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


class HarnessError(Exception):
    """The benchmark could not measure (as opposed to a model that detects little, which is a figure)."""


def say(msg: str) -> None:
    print(f"[bench_model_quality] {msg}", file=sys.stderr, flush=True)


def iso_wall(text: str | None) -> float | None:
    """An ECS timestamp (nanosecond RFC 3339, Z) as a wall-clock float."""
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_duration(text: str) -> float:
    """``600``, ``600s``, ``10m``, ``1h``, ``1d`` → seconds (as ``sentinel run --learn-period`` reads it)."""
    t = text.strip().lower()
    units = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}
    return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)


def agent_learn_period(agent_args: list[str], default: float) -> float:
    """The learning period the agent will use: the last ``--learn-period`` among the extra args wins."""
    value = default
    for i, arg in enumerate(agent_args):
        text = None
        if arg.startswith("--learn-period="):
            text = arg.partition("=")[2]
        elif arg == "--learn-period" and i + 1 < len(agent_args):
            text = agent_args[i + 1]
        if text is not None:
            with contextlib.suppress(ValueError, IndexError):
                value = parse_duration(text)
    return value


# ------------------------------------------------------------------------------------------- processes


def copy_lines(proc: subprocess.Popen[bytes], out: IO[bytes], each: Callable[[bytes], None]) -> None:
    """Copy a child's stderr to ``out`` line by line (flushed: a crash leaves its last words), each line
    also to ``each``; closes ``out`` at the end."""
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            out.write(line)
            out.flush()
            each(line)
    finally:
        out.close()


class Agent:
    """``sentinel run`` with its JSON log on a pipe: followed for its state, copied to a file."""

    def __init__(self, cmd: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self.ready = threading.Event()
        self.trained = threading.Event()
        self.eof = threading.Event()
        self.trained_record: dict[str, Any] = {}
        self.training_rows: int | None = None
        self.notes: list[str] = []  # learning extended, training failed: reported
        self.errors: list[str] = []  # error-level records, the last few
        self.tail: list[str] = []
        self.trained_at: float | None = None  # wall clock
        self.trainings: list[float] = []  # wall clock of every trained model (retraining included)
        self.ready_at: float | None = None
        self._out = log_path.open("wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)  # fmt: skip
        # Opened now, re-read later: no new open of ours lands in the windows the model is judged on.
        self._stat_fd: int | None = None
        with contextlib.suppress(OSError):
            self._stat_fd = os.open(f"/proc/{self.proc.pid}/stat", os.O_RDONLY)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        copy_lines(self.proc, self._out, self._record)
        self.eof.set()

    def _record(self, line: bytes) -> None:
        text = line.decode(errors="replace").strip()
        self.tail = [*self.tail[-19:], text]
        try:
            rec = json.loads(text)
        except ValueError:
            return
        if not isinstance(rec, dict):
            return
        event = rec.get("event")
        if rec.get("level") == "error":
            self.errors = [*self.errors[-9:], text]
        if event == LOG_READY and not self.ready.is_set():
            self.ready_at = time.time()
            self.ready.set()
        elif event == LOG_TRAINED or (event == LOG_PHASE and rec.get("phase") == PHASE_DETECTION):
            self.trainings.append(time.time())
            if not self.trained.is_set():
                self.trained_at = time.time()
                self.trained_record = rec
                self.trained.set()
        elif event == LOG_TRAINING:
            with contextlib.suppress(TypeError, ValueError):
                self.training_rows = int(rec.get("rows"))
        elif event in (LOG_LEARNING_EXTENDED, LOG_TRAINING_FAILED):
            fields = {k: v for k, v in rec.items() if k not in ("event", "level", "@timestamp")}
            note = f"{event} {json.dumps(fields, default=str)}"
            self.notes.append(note)
            say(f"agent: {note}")

    def cpu_seconds(self) -> float | None:
        """utime + stime of the agent process (its threads included), from /proc/PID/stat."""
        if self._stat_fd is None:
            return None
        try:
            fields = os.pread(self._stat_fd, 4096, 0).decode().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            return None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait; SIGKILL after ``timeout``. Returns the exit code (negative: killed by a signal)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"agent did not stop within {timeout:.0f}s: killing it")
                self.proc.kill()
                self.proc.wait()
        self.eof.wait(10)
        if self._stat_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._stat_fd)
            self._stat_fd = None
        return self.proc.returncode


class Workload:
    """The benign workload in the background, its progress copied to a file."""

    def __init__(self, cmd: list[str], log_path: Path) -> None:
        self.tail: list[str] = []
        self._out: IO[bytes] = log_path.open("wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)  # fmt: skip
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        copy_lines(self.proc, self._out, self._remember)

    def _remember(self, line: bytes) -> None:
        self.tail = [*self.tail[-9:], line.decode(errors="replace").rstrip()]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # it lets running jobs end (up to 20 s), then exits
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(5)
        return self.proc.returncode


# ----------------------------------------------------------------------------------------------- alerts


@dataclass(slots=True)
class AlertInfo:
    """What the figures need from one alert document."""

    model: bool
    internal: bool
    rule: str
    ts: float  # @timestamp (for a summary: its last repeat)
    first: float  # event.start for a summary, else ts
    last: float
    pid: int | None
    lineage: set[int]  # the process, its parent and ancestors
    process_start: float | None
    executable: str
    parent: str  # the parent's command line (or executable): where an alert came from
    events: int  # how many events it stands for (a summary's count)
    summary: bool
    incident: str | None
    message: str
    explanation: str
    path: str | None
    port: int | None
    action: str


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def is_model_alert(doc: dict[str, Any]) -> bool:
    tags = list(doc.get("tags") or []) + list(_get(doc, "sentinel", "rule", "tags") or [])
    return _get(doc, "rule", "name") == ML_RULE_NAME or ML_TAG in tags


def alert_info(doc: dict[str, Any]) -> AlertInfo | None:
    ts = iso_wall(doc.get("@timestamp"))
    if ts is None:
        return None
    proc = doc.get("process") if isinstance(doc.get("process"), dict) else {}
    lineage: set[int] = set()
    for pid in [proc.get("pid"), _get(proc, "parent", "pid")] + [
        a.get("pid") for a in (_get(doc, "sentinel", "ancestors") or []) if isinstance(a, dict)
    ]:
        if isinstance(pid, int):
            lineage.add(pid)
    aggregation = _get(doc, "sentinel", "aggregation")
    summary = isinstance(aggregation, dict)
    ml = _get(doc, "sentinel", "ml") or {}
    incident = _get(ml, "incident", "id") or _get(doc, "sentinel", "output_fields", "ml", "incident")
    texts = [e.get("text") for e in (ml.get("explanation") or []) if isinstance(e, dict) and e.get("text")]
    explanation = "; ".join(texts)
    if ml.get("score") is not None and ml.get("threshold") is not None:
        explanation = f"score {ml['score']:.3f} > {ml['threshold']:.3f}" + (
            f": {explanation}" if texts else ""
        )
    port = _get(doc, "destination", "port")
    return AlertInfo(
        model=is_model_alert(doc),
        internal=_get(doc, "rule", "ruleset") == INTERNAL_RULESET,
        rule=str(_get(doc, "rule", "name") or "?"),
        ts=ts,
        first=iso_wall(_get(doc, "event", "start")) or ts,
        last=iso_wall(_get(doc, "event", "end")) or ts,
        pid=proc.get("pid") if isinstance(proc.get("pid"), int) else None,
        lineage=lineage,
        process_start=iso_wall(proc.get("start")),
        executable=str(proc.get("executable") or proc.get("name") or "?"),
        parent=str(_get(proc, "parent", "command_line") or _get(proc, "parent", "executable") or "?"),
        events=int(aggregation.get("count", 1)) if summary else 1,
        summary=summary,
        incident=str(incident) if incident else None,
        message=str(doc.get("message") or ""),
        explanation=explanation or str(doc.get("message") or ""),
        path=_get(doc, "file", "path"),
        port=port if isinstance(port, int) else None,
        action=str(_get(doc, "event", "action") or ""),
    )


def load_alerts(path: Path) -> tuple[list[AlertInfo], int]:
    """The alert documents the agent wrote; returns (alerts, lines that were not alert documents)."""
    alerts: list[AlertInfo] = []
    bad = 0
    if not path.exists():
        return alerts, bad
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            bad += 1
            continue
        info = alert_info(doc) if isinstance(doc, dict) else None
        if info is None:
            bad += 1
        else:
            alerts.append(info)
    return alerts, bad


def boot_wall() -> float:
    """Wall-clock time of boot (CLOCK_BOOTTIME zero), to turn /proc start ticks into wall time."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def on_novelty(a: AlertInfo, done: novelty.Performed, boot: float) -> bool:
    """The alert is on the novelty's root (or a descendant) within its window."""
    lo, hi = done.started - MATCH_BEFORE_S, done.ended + MATCH_AFTER_S
    if a.last < lo or a.first > hi or done.pid not in a.lineage:
        return False
    if a.pid == done.pid and a.process_start is not None and done.start_ticks and done.by_service is None:
        return abs(a.process_start - (boot + done.start_ticks / CLK_TCK)) < 5.0  # the pid was not reused
    return True


def names_novelty(a: AlertInfo, done: novelty.Performed) -> bool:
    """The alert is on the novel event itself: the file, the port or the program the novelty is about."""
    obj = done.objects
    if "path" in obj and a.path == obj["path"]:
        return True
    if "port" in obj and a.port == obj["port"]:
        return True
    return "executable" in obj and a.executable == obj["executable"] and a.action == "exec"


# -------------------------------------------------------------------------------------------- the run


@dataclass(slots=True)
class Outcome:
    """One novelty's result."""

    scenario: str
    kind: str
    ran: bool
    error: str = ""
    performed: dict[str, Any] = field(default_factory=dict)
    detected: bool = False
    names_it: bool = False
    alerts: int = 0
    rules_alerts: list[str] = field(default_factory=list)
    explanation: str = ""


@dataclass(slots=True)
class Timeline:
    """Wall-clock marks of the run."""

    agent_started: float = 0.0
    ready: float = 0.0
    trained: float = 0.0
    normal_end: float = 0.0
    novelty_end: float = 0.0
    stopped: float = 0.0


@dataclass(slots=True)
class RunState:
    marks: Timeline = field(default_factory=Timeline)
    performed: list[tuple[novelty.Scenario, novelty.Performed | None, str]] = field(default_factory=list)
    cpu: dict[str, float | None] = field(default_factory=dict)
    agent_rc: int | None = None
    agent_notes: list[str] = field(default_factory=list)
    training_rows: int | None = None
    trained_record: dict[str, Any] = field(default_factory=dict)
    trainings: list[float] = field(default_factory=list)
    agent_cmd: list[str] = field(default_factory=list)
    lab_pids: dict[str, int] = field(default_factory=dict)  # workload, php-fpm, postgres: alert origins


def wait_for(
    event: threading.Event, timeout: float, what: str, agent: Agent, workload: Workload, progress: str = ""
) -> None:
    """Wait for ``event``, watching that the agent and the workload still run; progress every minute."""
    start = time.monotonic()
    next_progress = start + PROGRESS_EVERY_S
    while not event.wait(1.0):
        now = time.monotonic()
        if not agent.alive():
            tail = "\n  ".join(agent.errors[-3:] or agent.tail[-5:])
            rc = agent.proc.returncode
            raise HarnessError(f"the agent exited ({rc}) while waiting for {what}:\n  {tail}")
        if not workload.alive():
            rc = workload.proc.returncode
            raise HarnessError(f"the benign workload exited ({rc}): {workload.tail[-3:]}")
        if now - start > timeout:
            raise HarnessError(f"no {what} within {timeout:.0f}s")
        if progress and now >= next_progress:
            next_progress += PROGRESS_EVERY_S
            say(f"{progress}: {now - start:.0f}s")


def sleep_watching(seconds: float, what: str, agent: Agent, workload: Workload) -> None:
    """Let ``seconds`` pass (to about a second), failing early if the agent or the workload dies."""
    never = threading.Event()
    with contextlib.suppress(HarnessError):
        wait_for(never, seconds, what, agent, workload, progress=what)
    if not agent.alive() or not workload.alive():
        wait_for(never, 0, what, agent, workload)  # raises with the reason


def run_novelties(
    ctx: novelty.Lab, gap: float, same_gap: float, agent: Agent, workload: Workload, state: RunState
) -> None:
    """Each novelty once, ``gap`` apart; one process's own novelties at least ``same_gap`` apart (the agent
    folds one process's repeated alerts into a summary within its aggregation window)."""
    remaining = list(novelty.SCENARIOS.values())
    last: dict[str, float] = {}
    while remaining:
        now = time.monotonic()
        free = [s for s in remaining if s.actor is None or now - last.get(s.actor, -1e18) >= same_gap]
        pick = free[0] if free else None
        if pick is None:
            wake = min(last[s.actor] + same_gap for s in remaining if s.actor is not None)
            sleep_watching(max(0.1, wake - now), "novelties: waiting to space one process's novelties", agent,
                           workload)  # fmt: skip
            continue
        remaining.remove(pick)
        try:
            done = pick.run(ctx)
            note = f" ({done.note})" if done.note else ""
            say(f"novelty {pick.name}: root pid {done.pid}, {done.ended - done.started:.2f}s{note}")
            state.performed.append((pick, done, ""))
        except (novelty.ScenarioError, OSError) as exc:
            say(f"novelty {pick.name} could not run: {exc}")
            state.performed.append((pick, None, str(exc)))
        if pick.actor is not None:
            last[pick.actor] = time.monotonic()
        if remaining:
            sleep_watching(gap, "novelties", agent, workload)


def live_run(args: argparse.Namespace, work: Path, state: RunState) -> None:
    """Everything on the host: lab, workload, agent, normal work, novelties; cleaned up whatever happens."""
    venv_python = REPO / ".venv" / "bin" / "python"
    py = str(venv_python) if venv_python.exists() else sys.executable
    lab_started = False
    workload: Workload | None = None
    agent: Agent | None = None
    trigger = lab.NOVELTY_TRIGGER
    try:
        if lab.daemons_running():
            say("using the lab services already up (lab.py up); they are left running")
        else:
            if lab.port_open(lab.WEB_PORT) or lab.port_open(lab.DB_PORT):
                ports = f"127.0.0.1:{lab.WEB_PORT} or :{lab.DB_PORT}"
                raise HarnessError(f"{ports} is in use (another lab running? scripts/lab/lab.py down)")
            say("lab services up (lab.py up)")
            rc = subprocess.run([py, str(LAB_DIR / "lab.py"), "up"], cwd=REPO, check=False).returncode
            lab_started = True
            if rc != 0:
                raise HarnessError(f"lab.py up failed ({rc})")
        for stale in (trigger, Path(f"{trigger}.done")):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        ctx = novelty.Lab(trigger=trigger)
        ctx.load()  # the services' pids and the harness's first requests, before the agent watches
        state.lab_pids.update({name: pid for name, (pid, _) in ctx.services.items()})

        learn = agent_learn_period(args.agent_arg, args.learn)
        budget = READY_TIMEOUT_S + learn + args.train_timeout + args.normal + 40 * args.gap + 600 + args.tail
        wl_cmd = [py, str(LAB_DIR / "benign_workload.py"), "--duration", f"{budget:.0f}", "--seed",
                  str(args.seed), "--novelty-trigger", str(trigger)]  # fmt: skip
        say(f"benign workload (seed {args.seed}) in the background")
        workload = Workload(wl_cmd, work / "workload.log")
        state.lab_pids["workload"] = workload.proc.pid

        state.agent_cmd = [py, "-m", "sentinel.cli", "--log-level", "info", "run", "--model", "auto",
                           "--learn-period", f"{args.learn:g}s", "--state-dir", str(work / "state"),
                           "--output", f"file:{work / 'alerts.json'}", *args.agent_arg]  # fmt: skip
        say(f"agent: {' '.join(state.agent_cmd[1:])}")
        state.marks.agent_started = time.time()
        agent = Agent(state.agent_cmd, work / "agent.log")
        wait_for(agent.ready, READY_TIMEOUT_S, f"{LOG_READY} from the agent", agent, workload)
        state.marks.ready = agent.ready_at or time.time()
        state.cpu["ready"] = agent.cpu_seconds()
        say(f"agent ready after {state.marks.ready - state.marks.agent_started:.0f}s; learning {learn:g}s")

        wait_for(agent.trained, learn + args.train_timeout, f"{LOG_TRAINED} (the trained model)", agent,
                 workload, progress=f"learning ({learn:g}s asked)")  # fmt: skip
        state.marks.trained = agent.trained_at or time.time()
        state.cpu["trained"] = agent.cpu_seconds()
        state.training_rows = agent.training_rows
        state.trained_record = agent.trained_record
        took = state.marks.trained - state.marks.ready
        say(f"model trained {took:.0f}s after ready; normal work {args.normal:g}s")

        sleep_watching(args.normal, "normal work", agent, workload)
        state.marks.normal_end = time.time()
        state.cpu["normal_end"] = agent.cpu_seconds()

        say(f"novelties: {len(novelty.SCENARIOS)}, {args.gap:g}s apart")
        run_novelties(ctx, args.gap, args.same_process_gap, agent, workload, state)
        say(f"tail wait {args.tail:g}s")
        sleep_watching(args.tail, "tail wait", agent, workload)
        state.marks.novelty_end = time.time()
        state.cpu["end"] = agent.cpu_seconds()

        say("stopping the agent (SIGTERM)")
        state.agent_rc = agent.stop()
        state.marks.stopped = time.time()
        state.agent_notes = agent.notes
        state.trainings = agent.trainings
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if agent is not None and agent.alive():
            say("stopping the agent")
            state.agent_rc = agent.stop()
            state.agent_notes = agent.notes
        if workload is not None:
            say("stopping the benign workload")
            workload.stop()
        for stale in (trigger, Path(f"{trigger}.done")):
            with contextlib.suppress(OSError):
                stale.unlink()
        if lab_started and not args.keep_lab:
            say("lab down")
            subprocess.run([py, str(LAB_DIR / "lab.py"), "down"], cwd=REPO, check=False)
        elif lab_started:
            say("lab left up (--keep-lab): scripts/lab/lab.py down stops it")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _terminate)


# -------------------------------------------------------------------------------------------- figures


def figures(args: argparse.Namespace, work: Path, state: RunState) -> dict[str, Any]:
    """Everything printed, as one JSON-able dict."""
    alerts, bad = load_alerts(work / "alerts.json")
    marks = state.marks
    boot = boot_wall()
    me = os.getpid()
    model = [a for a in alerts if a.model]
    rules = [a for a in alerts if not a.model and not a.internal]
    internal = [a for a in alerts if a.internal]

    outcomes: list[Outcome] = []
    attributed: set[int] = set()
    for scenario, done, error in state.performed:
        out = Outcome(scenario.name, scenario.kind, ran=done is not None, error=error)
        if done is not None:
            out.performed = asdict(done)
            hits = [a for a in model if on_novelty(a, done, boot)]
            attributed.update(id(a) for a in hits)
            out.detected = bool(hits)
            out.alerts = len(hits)
            named = [a for a in hits if names_novelty(a, done)]
            out.names_it = bool(named)
            if hits:
                best = (named or hits)[0]
                out.explanation = best.explanation
            rule_hits = [a for a in rules if on_novelty(a, done, boot)]
            attributed.update(id(a) for a in rule_hits)
            out.rules_alerts = sorted({a.rule for a in rule_hits})
        outcomes.append(out)

    def in_window(a: AlertInfo, lo: float, hi: float) -> bool:
        return lo <= a.ts < hi

    workload_pid = state.lab_pids.get("workload")
    service_pids = {pid for name, pid in state.lab_pids.items() if name != "workload"}

    def origin(a: AlertInfo) -> str:
        """Where an alert's process comes from: this host may run more than the lab."""
        if workload_pid in a.lineage:
            return ORIGIN_WORKLOAD
        if a.lineage & service_pids:
            return ORIGIN_SERVICES
        return ORIGIN_HARNESS if me in a.lineage else ORIGIN_ELSEWHERE

    def by_origin(items: list[AlertInfo]) -> dict[str, int]:
        counts = Counter(origin(a) for a in items)
        return {o: counts[o] for o in ORIGINS if counts[o]}

    normal_s = max(1e-9, marks.normal_end - marks.trained)
    normal = [a for a in model if in_window(a, marks.trained, marks.normal_end)]
    normal_lab = [a for a in normal if origin(a) in (ORIGIN_WORKLOAD, ORIGIN_SERVICES)]
    novelty_phase = (marks.normal_end, marks.stopped or marks.novelty_end)
    phase_model = [a for a in model if in_window(a, *novelty_phase)]
    other_model = [a for a in phase_model if id(a) not in attributed]
    phase_rules = [a for a in rules if in_window(a, *novelty_phase)]
    ran = [o for o in outcomes if o.ran]
    kinds: dict[str, dict[str, int]] = {}
    for kind in novelty.KINDS:
        mine = [o for o in ran if o.kind == kind]
        kinds[kind] = {
            "scenarios": len(mine),
            "detected": sum(o.detected for o in mine),
            "names_it": sum(o.names_it for o in mine),
        }
    cpu = state.cpu
    cpu_figures = {
        "total_s": cpu.get("end"),
        "startup_s": cpu.get("ready"),
        "learning_s": _minus(cpu.get("trained"), cpu.get("ready")),
        "normal_work_s": _minus(cpu.get("normal_end"), cpu.get("trained")),
        "novelty_phase_s": _minus(cpu.get("end"), cpu.get("normal_end")),
    }
    return {
        "command": state.agent_cmd,
        "settings": {
            "learn_s": args.learn,
            "learn_s_effective": agent_learn_period(args.agent_arg, args.learn),
            "normal_s": args.normal,
            "seed": args.seed,
            "gap_s": args.gap,
            "same_process_gap_s": args.same_process_gap,
            "tail_s": args.tail,
            "agent_args": args.agent_arg,
            "match_window_s": [-MATCH_BEFORE_S, MATCH_AFTER_S],
        },
        "workdir": str(work),
        "learning": {
            "ready_after_start_s": round(marks.ready - marks.agent_started, 1),
            "trained_after_ready_s": round(marks.trained - marks.ready, 1),
            "training_rows": state.training_rows,
            "model_trained_record": state.trained_record,
            "agent_notes": state.agent_notes,
            "model_alerts_before_trained": sum(1 for a in model if a.ts < marks.trained),
            "trainings": len(state.trainings),
            "trainings_after_ready_s": [round(t - marks.ready, 1) for t in state.trainings],
        },
        "normal_work": {
            "seconds": round(normal_s, 1),
            "model_alerts": len(normal),
            "model_alerts_per_hour": round(len(normal) * 3600.0 / normal_s, 2),
            "model_alerts_by_origin": by_origin(normal),
            "lab_model_alerts": len(normal_lab),
            "lab_model_alerts_per_hour": round(len(normal_lab) * 3600.0 / normal_s, 2),
            "summaries": sum(a.summary for a in normal),
            "events": sum(a.events for a in normal),
            "incidents": len({a.incident for a in normal if a.incident}),
            "top_executables": Counter(a.executable for a in normal).most_common(8),
            "rules_alerts": sum(1 for a in rules if in_window(a, marks.trained, marks.normal_end)),
        },
        "novelty": {
            "scenarios": len(outcomes),
            "ran": len(ran),
            "detected": sum(o.detected for o in ran),
            "names_it": sum(o.names_it for o in ran),
            "detection_rate": round(sum(o.detected for o in ran) / len(ran), 4) if ran else None,
            "kinds": kinds,
            "kinds_with_a_detection": sum(1 for k in kinds.values() if k["detected"]),
            "outcomes": [asdict(o) for o in outcomes],
            "phase_seconds": round(novelty_phase[1] - novelty_phase[0], 1),
            "rules_alerts_on_novelties": sum(len(o.rules_alerts) for o in outcomes),
            "rules_alerts_in_phase": len(phase_rules),
            "rules_in_phase": sorted(Counter(a.rule for a in phase_rules).items()),
            "rules_alerts_in_phase_by_origin": by_origin(phase_rules),
            "other_model_alerts_in_phase": len(other_model),
            "other_model_alerts_by_origin": by_origin(other_model),
            "other_model_alerts": [
                f"[{origin(a)}{f', summary of {a.events}' if a.summary else ''}] {a.message} "
                f"(parent: {a.parent[:80]})"[:400]
                for a in other_model[:12]
            ],
        },
        "alerts_file": {
            "documents": len(alerts),
            "model": len(model),
            "rules": len(rules),
            "internal": len(internal),
            "unreadable_lines": bad,
        },
        "agent": {"exit_code": state.agent_rc, "cpu": cpu_figures},
    }


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 2)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _fmt_s(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def print_figures(f: dict[str, Any]) -> None:
    s, nov, normal, learning = f["settings"], f["novelty"], f["normal_work"], f["learning"]
    print(
        f"sentinel run --model auto: learn {s['learn_s_effective']:g}s, normal work {s['normal_s']:g}s, "
        f"workload seed {s['seed']}"
        + (f", agent args {' '.join(s['agent_args'])}" if s["agent_args"] else "")
    )
    print()
    print("novel behaviour (detected: a model alert on the novelty's process or a descendant,")
    print("start-1s..end+10s; names it: that alert is on the novel event itself)")
    print(f"  {'kind':<24} {'scenario':<24} {'detected':<9} {'names it':<9} {'alerts':>6}  rules alerts")
    for o in nov["outcomes"]:
        if not o["ran"]:
            print(f"  {o['kind']:<24} {o['scenario']:<24} not run: {o['error']}")
            continue
        rules = ", ".join(o["rules_alerts"]) or "0"
        print(f"  {o['kind']:<24} {o['scenario']:<24} {'yes' if o['detected'] else 'no':<9} "
              f"{'yes' if o['names_it'] else 'no':<9} {o['alerts']:>6}  {rules}")  # fmt: skip
    explained = [o for o in nov["outcomes"] if o["explanation"]]
    if explained:
        print("  what the alerts said:")
        for o in explained:
            print(f"    {o['scenario']}: {o['explanation']}")
    print("  per kind:")
    for kind, k in nov["kinds"].items():
        named = f"{k['names_it']} naming the novel event"
        print(f"    {kind:<24} {k['detected']}/{k['scenarios']} detected ({named})")
    rate = nov["detection_rate"]
    print(f"  total: {nov['detected']}/{nov['ran']} detected"
          + (f" ({rate:.1%})" if rate is not None else "")
          + f", {nov['names_it']} naming the novel event; kinds with a detection "
          f"{nov['kinds_with_a_detection']}/{len(nov['kinds'])}")  # fmt: skip
    print()
    print(
        f"normal work after training: {normal['seconds']:.0f}s, {normal['model_alerts']} model alerts "
        f"({normal['incidents']} incidents, {normal['summaries']} summaries, {normal['events']} events) "
        f"= {normal['model_alerts_per_hour']:.1f} per hour; rules alerts {normal['rules_alerts']}"
    )
    if normal["model_alerts"]:
        lab_only = f"{normal['lab_model_alerts']} = {normal['lab_model_alerts_per_hour']:.1f} per hour"
        print(f"  by origin: {_counts(normal['model_alerts_by_origin'])}; from the lab alone {lab_only}")
        print("  by executable: " + ", ".join(f"{exe} {n}" for exe, n in normal["top_executables"]))
    print(
        f"novelty phase ({nov['phase_seconds']:.0f}s): rules alerts on the novelties "
        f"{nov['rules_alerts_on_novelties']}; all rules alerts in the phase {nov['rules_alerts_in_phase']}"
        + (f" ({_counts(nov['rules_alerts_in_phase_by_origin'])})" if nov["rules_alerts_in_phase"] else "")
    )
    if nov["rules_in_phase"]:
        print("  rules: " + ", ".join(f"{r} {n}" for r, n in nov["rules_in_phase"]))
    print(
        f"  model alerts not on a novelty: {nov['other_model_alerts_in_phase']}"
        + (f" ({_counts(nov['other_model_alerts_by_origin'])})" if nov["other_model_alerts_in_phase"] else "")
    )
    for line in nov["other_model_alerts"]:
        print(f"    {line}")
    rows = learning["training_rows"]
    print(f"learning: {s['learn_s_effective']:g}s asked; agent ready {learning['ready_after_start_s']:.0f}s "
          f"after start, model trained {learning['trained_after_ready_s']:.0f}s after ready"
          + (f" ({rows} training rows)" if rows is not None else "")
          + f"; model alerts before training {learning['model_alerts_before_trained']}")  # fmt: skip
    if learning["trainings"] > 1:
        after = ", ".join(f"{t:.0f}s" for t in learning["trainings_after_ready_s"])
        print(f"  the model was trained {learning['trainings']} times (after ready: {after})")
    for note in learning["agent_notes"]:
        print(f"  agent: {note}")
    cpu = f["agent"]["cpu"]
    print(f"agent CPU: {_fmt_s(cpu['total_s'])}s total (startup {_fmt_s(cpu['startup_s'])}, learning "
          f"{_fmt_s(cpu['learning_s'])}, normal work {_fmt_s(cpu['normal_work_s'])}, novelty phase "
          f"{_fmt_s(cpu['novelty_phase_s'])}); exit code {f['agent']['exit_code']}")  # fmt: skip
    af = f["alerts_file"]
    unreadable = f", {af['unreadable_lines']} unreadable lines" if af["unreadable_lines"] else ""
    print(
        f"alerts file: {af['documents']} documents ({af['model']} model, {af['rules']} rules, "
        f"{af['internal']} internal{unreadable}); work directory {f['workdir']}"
    )


# ------------------------------------------------------------------------------------------------ main


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Exit codes: 0 figures printed, 1 the harness failed, 2 bad usage, 130 interrupted.",
    )
    ap.add_argument("--learn", type=float, metavar="S", help="agent learning period in seconds (default 600)")
    ap.add_argument(
        "--normal", type=float, metavar="S", help="normal work after training, seconds (default 1200)"
    )
    ap.add_argument("--quick", action="store_true", help="a smoke run: learn 120 s, normal work 120 s")
    ap.add_argument("--seed", type=int, default=0, help="benign workload seed (default 0)")
    ap.add_argument(
        "--gap", type=float, default=20.0, metavar="S", help="seconds between novelties (default 20)"
    )
    ap.add_argument(
        "--same-process-gap",
        type=float,
        default=65.0,
        metavar="S",
        help="least seconds between novelties done by one service process itself (default 65: the agent's "
        "60 s aggregation window folds one process's repeated alerts into a summary)",
    )
    ap.add_argument(
        "--tail", type=float, default=30.0, metavar="S", help="wait after the last novelty (default 30)"
    )
    ap.add_argument(
        "--train-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="how long past the learning period to wait for the trained model (default 600)",
    )
    ap.add_argument("--keep-lab", action="store_true", help="leave the lab services up at the end")
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here as JSON")
    ap.add_argument("--workdir", type=Path, metavar="DIR", help="logs, alerts, agent state (default: a fresh "
                    "directory under /var/tmp; kept)")  # fmt: skip
    ap.add_argument(
        "--agent-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `sentinel run` (repeatable; e.g. --agent-arg=--learn-period=300s)",
    )
    args = ap.parse_args(argv)
    args.learn = args.learn if args.learn is not None else (120.0 if args.quick else 600.0)
    args.normal = args.normal if args.normal is not None else (120.0 if args.quick else 1200.0)
    if min(args.learn, args.normal) <= 0 or min(args.gap, args.tail, args.same_process_gap) < 0:
        ap.error("--learn and --normal must be positive; --gap, --tail, --same-process-gap not negative")
    if any(a.startswith("--format") for a in args.agent_arg):
        ap.error("the alert format must stay ECS (the figures read ECS documents)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if sys.platform != "linux" or os.geteuid() != 0:
        say("needs root on Linux (the agent loads eBPF programs; the lab runs services as www-data/nobody)")
        return 1
    if args.workdir is None:
        work = Path(tempfile.mkdtemp(prefix="bench-model-quality-", dir="/var/tmp"))
    else:
        work = args.workdir
        work.mkdir(parents=True, exist_ok=True)
        if (work / "state").exists() or (work / "alerts.json").exists():
            say(f"{work} holds an earlier run (state/, alerts.json): give a fresh --workdir")
            return 2
    signal.signal(signal.SIGTERM, _terminate)
    state = RunState()
    failure = ""
    try:
        live_run(args, work, state)
    except HarnessError as exc:
        failure = str(exc)
    except KeyboardInterrupt:
        say("interrupted: cleaned up")
        return 130
    if failure:
        say(f"failed: {failure} (logs in {work})")
        return 1
    f = figures(args, work, state)
    print_figures(f)
    if args.json is not None:
        args.json.write_text(json.dumps(f, indent=2, default=str) + "\n")
    problems = [o["scenario"] for o in f["novelty"]["outcomes"] if not o["ran"]]
    if problems:
        say(f"novelties that could not run: {', '.join(problems)}")
    if state.agent_rc != 0:
        say(f"the agent exited with {state.agent_rc} on SIGTERM (0 expected); its log: {work / 'agent.log'}")
    return 1 if problems or state.agent_rc != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
