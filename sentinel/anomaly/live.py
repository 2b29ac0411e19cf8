"""The anomaly model inside the agent: features per event, micro-batch scoring, explained and grouped alerts.

Per exec/open/connect the engine computes the feature row (a few µs, no strings) and hangs a lazy view on
the rule context (``ctx.ml``), so rules can read ``ml.*`` fields. Rows wait in a micro-batch scored with
numpy once per poll (or when the batch is full); a row above the threshold becomes a ``sentinel-ml`` alert
whose explanation (the top 3 features in words) is built only if the alert is written. Alerts join an
*incident* per process tree: a process whose ancestor is already in an open incident adds to it, and the
aggregator folds repeats of an incident into one summary, so one attack reads as one incident.

Modes: a model given (a directory or ``default``) scores at once; ``auto`` uses the host's own model from
the state directory, or learns the host first (rules only meanwhile), trains, and switches by itself;
``off`` is rules only. A model that fails verification is refused: the agent runs rules only and says so.
Rows that alerted are learned at a tenth of the weight (an attacker must not teach the model quickly).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentinel import tasks
from sentinel.alerts import internal
from sentinel.alerts.model import ML_RULESET, Alert
from sentinel.anomaly.features import FEATURES, SCORED_TYPES, FeatureExtractor, RowFacts
from sentinel.anomaly.learning import TrainingJob
from sentinel.anomaly.model import Group, Model, ModelError, load_model
from sentinel.anomaly.rarity import RarityState
from sentinel.anomaly.scorer import CompiledForest, explain
from sentinel.anomaly.state import DEFAULT_STATE_DIR, HostState, LearningProgress, RowSample
from sentinel.events import EventType
from sentinel.log import get_logger
from sentinel.rules.model import Rule

PHASE_OFF, PHASE_LEARNING, PHASE_DETECTION = "off", "learning", "detection"
MODEL_CHOICES = ("auto", "default", "off")
ML_RULE = Rule(
    name="Anomalous behaviour for this host",
    desc="The host's anomaly model (an isolation forest over how rare this executable, parent→child pair, "
    "user, port or directory is on this host, plus command-line and lineage traits) scored this event "
    "above its alert threshold. sentinel.ml explains the score with its top contributing features.",
    condition="",
    output="",
    priority="warning",
    tags=["sentinel-ml", "anomaly"],
    source="ml",
)
NOT_CAUSES = frozenset({"type_exec", "type_open", "type_connect"})  # context, never the explanation
# Rows that alerted count this much in the baseline: an attacker must repeat an anomaly many times to make it
# look normal, while a benign newcomer that alerted still becomes normal instead of alerting forever.
ALERTED_WEIGHT = 0.1
_PROCESS_KINDS = frozenset({"exe", "parent_exe", "user_exe"})
_RARITY = {"exe": 0, "parent_exe": 1, "user_exe": 2, "exe_port": 3, "exe_dir": 4}
_EXEC, _OPEN, _CONNECT = EventType.EXEC, EventType.OPEN, EventType.CONNECT
NS = 1_000_000_000
SCORE_CACHE_MAX = 65_536
TRAIN_RETRY_S = 3600.0  # learning time before a failed training is tried again


def find_default_model() -> Path | None:
    """The shipped model: ``$SENTINEL_MODEL``, the repository's ``models/default``, the package's copy."""
    candidates = [
        Path(os.environ["SENTINEL_MODEL"]) if os.environ.get("SENTINEL_MODEL") else None,
        Path(__file__).resolve().parents[2] / "models" / "default",
        Path("/usr/share/sentinel/models/default"),
    ]
    for c in candidates:
        if c is not None and (c / "manifest.json").is_file():
            return c
    return None


@dataclass(slots=True)
class AnomalySettings:
    """What `sentinel run` was asked for; the defaults are the agent's."""

    model: str = "auto"  # auto | default | off | a model directory
    state_dir: str = DEFAULT_STATE_DIR
    learn_period_s: float = 7 * 86_400.0
    min_events: int = 1_000  # sampled rows needed to train when the period ends (else learning goes on)
    alerts: bool = True  # write sentinel-ml alerts (off: scores only feed ml.* rule fields)
    alerts_per_day: float = 5.0  # alert budget when training the host model
    batch_max: int = 256
    save_interval_s: float = 300.0
    sample_rows: int = 100_000
    incident_ttl_s: float = 600.0
    seed: int = 0


class MlView:
    """``ctx.ml``: the event's feature row; the score is computed on first use when not batch-scored yet."""

    __slots__ = ("engine", "facts", "score_value", "x")

    def __init__(self, engine: AnomalyEngine, x: list[float], facts: RowFacts) -> None:
        self.engine = engine
        self.x = x
        self.facts = facts
        self.score_value: float | None = None

    def score(self) -> float | None:
        if self.score_value is None and self.engine.model is not None:
            self.score_value = self.engine.score_one(self.x, self.facts.etype)
        return self.score_value

    def value(self, name: str) -> float | int | bool | None:
        """A ``ml.*`` rule field (without the prefix); None when missing for this event or phase."""
        f = self.facts
        if name == "score":
            return self.score()
        if name == "threshold":
            group = self.engine.group_by_type.get(f.etype)
            return group.threshold if group is not None else None
        if name == "anomalous":
            s = self.score()
            return None if s is None else s > self.engine.group_by_type[f.etype].threshold
        kind = name.partition(".")[2]
        if (kind == "exe_port" and f.etype != _CONNECT) or (kind == "exe_dir" and f.etype != _OPEN):
            return None
        if kind in _PROCESS_KINDS and f.etype == _OPEN:  # left out of open rows: read from the tables now
            keys = {"exe": f.exe, "parent_exe": f"{f.pexe}\x00{f.exe}", "user_exe": f"{f.uid}\x00{f.exe}"}
            key = keys[kind]
            table = self.engine.extractor.state.tables[kind]
            return table.rarity(key) if name.startswith("rarity.") else int(table.count(key))
        if name.startswith("rarity."):
            i = _RARITY.get(kind)
            return None if i is None else self.x[i]
        if name.startswith("seen."):
            counts = f.counts or (0.0, 0.0, 0.0)
            count = {"exe": counts[0], "parent_exe": counts[1], "user_exe": counts[2],
                     "exe_port": f.port_count, "exe_dir": f.dir_count}.get(kind)  # fmt: skip
            return None if count is None else int(count)
        if name == "new_dest":
            return (f.net_count == 0) if f.etype == _CONNECT and f.net else None
        return None


@dataclass(slots=True)
class Incident:
    """One anomalous process tree: the first anomalous process is its root."""

    id: str
    root_pid: int
    root_executable: str
    root_entity_id: str
    first_ns: int
    last_ns: int
    events: int = 0


@dataclass(slots=True)
class EngineStats:
    scored: int = 0
    cache_hits: int = 0
    anomalous: int = 0
    lazy_scores: int = 0
    batches: int = 0
    learned_rows: int = 0
    incidents: int = 0
    saves: int = 0
    save_errors: int = 0
    trainings: int = 0
    training_errors: int = 0


class AnomalyEngine:
    """One per agent (or replay). ``observe`` per event, ``score_pending`` per batch, ``tick`` per poll."""

    def __init__(
        self,
        settings: AnomalySettings,
        rarity: RarityState | None = None,
        state: HostState | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.extractor = FeatureExtractor(state=rarity or RarityState(), learn=False)
        self.model: Model | None = None
        self.model_name = ""  # host | default | the directory
        self.model_version = ""
        self.group_by_type: dict[int, Group] = {}  # the forest that scores each event type
        self.compiled: dict[str, CompiledForest] = {}
        self._score_cache: dict[tuple[Any, ...], float] = {}  # row (or its short key) → score, this model
        self.phase = PHASE_OFF
        self.pending: list[Any] = []  # EvalContexts whose ctx.ml waits for the batch score
        self.pending_pids: set[int] = set()
        self.progress: LearningProgress | None = None
        self.sample: RowSample | None = None
        self.job: TrainingJob | None = None
        self.incident_of: OrderedDict[str, Incident] = OrderedDict()
        self.stats = EngineStats()
        self._last_tick = time.monotonic()
        self._next_save = self._last_tick + settings.save_interval_s
        self._retry_learned_s = 0.0

    # ------------------------------------------------------------------------------------------ modes

    def activate(self, model: Model, name: str) -> None:
        self.model = model
        self.model_name = name
        self.model_version = str(model.manifest.get("files", {}).get("forest.npz", ""))[:12]
        self.compiled = {g.name: CompiledForest(g.forest) for g in model.groups}
        self._score_cache = {}
        self.group_by_type = {}
        for etype, feature in ((_EXEC, "type_exec"), (_OPEN, "type_open"), (_CONNECT, "type_connect")):
            for g in model.groups:  # the first group whose route takes this type
                if g.route is None or g.route == FEATURES.index(feature):
                    self.group_by_type[etype] = g
                    break
        self.phase = PHASE_DETECTION
        self.progress = None
        self.sample = None

    def start_learning(self, progress: LearningProgress | None, sample: RowSample | None) -> None:
        self.phase = PHASE_LEARNING
        self.progress = progress or LearningProgress()
        self.sample = sample or RowSample(self.settings.sample_rows, seed=self.settings.seed)

    # ------------------------------------------------------------------------------------------ events

    def observe(self, ctx: Any) -> None:
        """Compute the event's row and set ``ctx.ml``; queue it for scoring (detection) or sample it."""
        ev = ctx.ev
        if ev.type not in SCORED_TYPES:
            return
        learning = self.phase == PHASE_LEARNING
        x, facts = self.extractor.compute(ev, ctx.proc, ctx.path, ctx.wall_ns, learn=learning)
        view = MlView(self, x, facts)
        ctx.ml = view
        if learning:
            assert self.sample is not None and self.progress is not None
            self.sample.add(x, ctx.wall_ns)
            self.progress.events += 1
            self.stats.learned_rows += 1
            return
        self.pending.append(ctx)
        self.pending_pids.add(ev.pid)

    def must_score_before(self, pid: int) -> bool:
        """An exec by a process with queued rows changes what its alert would show: score them first."""
        return pid in self.pending_pids

    @property
    def thresholds(self) -> dict[str, float]:
        return {g.name: g.threshold for g in self.model.groups} if self.model is not None else {}

    def score_one(self, x: list[float], etype: int) -> float | None:
        group = self.group_by_type.get(etype)
        if group is None:
            return None
        self.stats.lazy_scores += 1
        return float(self.compiled[group.name].scores(np.array([x], dtype=np.float64))[0])

    def score_pending(self) -> list[Alert]:
        """Score the queued rows at once; alerts for those above the threshold, the rest learned."""
        pending = self.pending
        if not pending:
            return []
        self.pending = []
        self.pending_pids = set()
        model = self.model
        if model is None:
            return []
        self.stats.batches += 1
        by_type = self.group_by_type
        todo: dict[int, dict[tuple[Any, ...], list[MlView]]] = {}
        cache = self._score_cache
        get = cache.get
        hits = 0
        for ctx in pending:  # per forest; a row seen before (a recurring pattern) is not scored again
            view = ctx.ml
            facts = view.facts
            if view.score_value is None and facts.etype in by_type:
                # The row's short key (a template token and what varies) or the row itself: the type is in
                # the row (one-hot), so equal keys mean equal rows, scored by the same forest.
                key = facts.row_key or tuple(view.x)
                hit = get(key)
                if hit is not None:
                    view.score_value = hit
                    hits += 1
                else:
                    todo.setdefault(facts.etype, {}).setdefault(key, []).append(view)
        self.stats.cache_hits += hits
        for etype, rows_views in todo.items():
            rows = np.array([views[0].x for views in rows_views.values()], dtype=np.float64)
            scores = self.compiled[by_type[etype].name].scores(rows).tolist()
            if len(cache) + len(scores) > SCORE_CACHE_MAX:
                cache.clear()
            for (key, views), s in zip(rows_views.items(), scores, strict=True):
                cache[key] = s
                for v in views:
                    v.score_value = s
        self.stats.scored += len(pending)
        commit = self.extractor.commit
        alerts: list[Alert] = []
        for ctx in pending:
            view = ctx.ml
            group = by_type.get(view.facts.etype)
            if group is not None and view.score_value > group.threshold:  # type: ignore[operator]
                self.stats.anomalous += 1
                if self.settings.alerts:
                    alerts.append(self._alert(ctx, view, group))
                commit(view.facts, ctx.wall_ns, ALERTED_WEIGHT)
            else:
                commit(view.facts, ctx.wall_ns)
        return alerts

    # ------------------------------------------------------------------------------------------ alerts

    def _incident(self, ctx: Any) -> Incident:
        """The open incident this process belongs to, else a new one rooted at it.

        A process belongs to an incident when it, an ancestor, or its parent as the spawner of an earlier
        member is in one: so a web shell's children, its siblings (``id`` and ``uname`` from one shell) and
        the shell alerting after its children all read as one incident. Init is never a spawner key, or every
        anomaly on the host would join.
        """
        proc, ev = ctx.proc, ctx.ev
        ttl = int(self.settings.incident_ttl_s * NS)
        ts = ev.ts_ns
        cur = proc
        depth = 0
        found: Incident | None = None
        while cur is not None and depth < 64:
            inc = self.incident_of.get(cur.entity_id)
            if inc is not None and ts - inc.last_ns <= ttl:
                found = inc
                break
            cur = cur.parent
            depth += 1
        if found is None:
            entity = proc.entity_id if proc is not None else f"pid-{ev.pid}"
            exe = (proc.exe or proc.filename) if proc is not None else ev.comm
            digest = hashlib.blake2b(f"{entity}:{ts}".encode(), digest_size=8).hexdigest()
            found = Incident(digest, ev.pid, exe, entity, ts, ts)
            self.stats.incidents += 1
        found.last_ns = max(found.last_ns, ts)
        found.events += 1
        if proc is not None:
            keys = [proc.entity_id]
            parent = proc.parent
            if parent is not None and parent.pid > 1 and parent.parent is not None:
                keys.append(parent.entity_id)  # the spawner: siblings and a late-alerting parent join
            for key in keys:
                self.incident_of[key] = found
                self.incident_of.move_to_end(key)
            while len(self.incident_of) > 10_000:
                self.incident_of.popitem(last=False)
        return found

    def _alert(self, ctx: Any, view: MlView, group: Group) -> Alert:
        ev, _proc = ctx.ev, ctx.proc
        inc = self._incident(ctx)
        score = float(view.score_value or 0.0)
        exe = view.facts.exe
        fields = {
            "ml.score": round(score, 4),
            "ml.threshold": round(group.threshold, 4),
            "evt.type": ev.type_name,
            "proc.exe": exe,
            "proc.pid": ev.pid,
            "proc.pname": os.path.basename(view.facts.pexe),
            "ml.incident": inc.id,
        }
        alert = Alert(
            rule=ML_RULE,
            ctx=ctx,
            output=f"Anomalous {ev.type_name} for this host by {exe} (pid {ev.pid})",
            output_fields=fields,
            ts_ns=ev.ts_ns,
            ruleset=ML_RULESET,
            ruleset_version=self.model_version,
            # Aggregated per process within the incident: each new process of an attack is written at once,
            # its repeats fold into a summary, and incident.id ties them together for the SIEM.
            lineage=("incident", inc.id, ctx.proc.entity_id if ctx.proc is not None else ev.pid),
        )
        row = np.array(view.x, dtype=np.float64)
        median = group.median_row if group.median_row is not None else np.zeros(len(FEATURES))
        facts = view.facts
        snapshot = (inc.id, inc.root_pid, inc.root_executable, inc.root_entity_id, inc.first_ns, inc.events)

        def finalize(a: Alert) -> None:
            """Built only for alerts that are written: explaining costs a batch of re-scores."""
            assert self.model is not None
            contributions = explain(group.forest, list(FEATURES), row, median, facts.details(), 3, NOT_CAUSES)
            words = "; ".join(c.text for c in contributions)
            a.output = f"{a.output}: score {score:.3f} above threshold {group.threshold:.3f}" + (
                f" — {words}" if words else ""
            )
            inc_id, root_pid, root_exe, root_entity, first_ns, events = snapshot
            a.extra = {
                "ml": {
                    "score": round(score, 6),
                    "threshold": round(group.threshold, 6),
                    "model": {
                        "name": self.model_name,
                        "version": self.model_version,
                        "phase": self.phase,
                        "forest": group.name,
                    },
                    "explanation": [
                        {
                            "feature": c.feature,
                            "value": c.value,
                            "contribution": round(c.drop, 6),
                            "text": c.text,
                        }
                        for c in contributions
                    ],
                    "incident": {
                        "id": inc_id,
                        "root": {"pid": root_pid, "executable": root_exe, "entity_id": root_entity},
                        "first_ns": first_ns,
                        "events": events,
                    },
                }
            }

        alert.finalize = finalize
        return alert

    # ------------------------------------------------------------------------------------------ time

    def tick(self, log: Any = None) -> None:
        """Per poll: learning time, the training job, periodic saves of the state.

        Never raises: a failure of any kind is counted and reported (:mod:`sentinel.tasks`) and the work is
        tried again at its next turn; the agent must not stop because, say, a key did not serialize.
        """
        now = time.monotonic()
        elapsed, self._last_tick = now - self._last_tick, now
        log = log or get_logger()
        if self.phase == PHASE_LEARNING and self.progress is not None:
            self.progress.learned_s += max(0.0, min(elapsed, 60.0))  # a suspended host does not count
            try:
                self._maybe_train(log)
            except Exception as exc:
                self._training_failed(exc, log)
        if self.job is not None and self.job.done.is_set():
            try:
                self._finish_training(log)
            except Exception as exc:
                self._training_failed(exc, log)
        if now >= self._next_save:
            self._next_save = now + self.settings.save_interval_s
            self.save(log)

    def _maybe_train(self, log: Any) -> None:
        p, s = self.progress, self.sample
        assert p is not None and s is not None
        if self.job is not None or p.learned_s < max(self.settings.learn_period_s, self._retry_learned_s):
            return
        if s.size < self.settings.min_events:
            if not p.extended_logged:
                p.extended_logged = True
                log.warning("sentinel.learning_extended", learned_s=round(p.learned_s), events=s.size,
                            needed=self.settings.min_events)  # fmt: skip
            return
        if self.state is None:
            return
        x, wall = s.arrays()
        rarity = RarityState.from_dict(self.extractor.state.to_dict())  # a copy: learning goes on
        self.job = TrainingJob()
        self.stats.trainings += 1
        log.info("sentinel.training", rows=int(x.shape[0]), events_seen=s.seen, learned_s=round(p.learned_s))
        self.job.start(x=x, wall_ns=wall, seen=s.seen, rarity=rarity, output_dir=self.state.model_dir,
                       alerts_per_day=self.settings.alerts_per_day, seed=self.settings.seed)  # fmt: skip

    def _finish_training(self, log: Any) -> None:
        job, self.job = self.job, None
        assert job is not None
        if job.error is not None or self.state is None:
            self._training_failed(job.exc or RuntimeError(job.error or "no state directory"), log)
            return
        try:
            model = load_model(self.state.model_dir)
        except ModelError as exc:
            self._training_failed(exc, log)
            return
        self.save(log)
        self.activate(model, "host")
        log.info("sentinel.model_trained", model=str(self.state.model_dir), thresholds=self.thresholds,
                 version=self.model_version, rows=model.manifest.get("n_samples"))  # fmt: skip

    def _training_failed(self, exc: BaseException, log: Any) -> None:
        """Counted and reported; learning goes on and training is tried again an hour of learning later."""
        self.job = None
        self.stats.training_errors += 1
        if self.progress is not None:
            self._retry_learned_s = self.progress.learned_s + TRAIN_RETRY_S
        log.error("sentinel.training_failed", problem=tasks.describe(exc), retry_after_s=TRAIN_RETRY_S)
        tasks.record("training", exc, log)

    def save(self, log: Any = None) -> None:
        """Persist the rarity baseline (and the learning sample); a failure of any kind is counted, logged
        and reported, never fatal (the next save tries again)."""
        if self.state is None:
            return
        try:
            self.state.save_rarity(self.extractor.state)
            if self.phase == PHASE_LEARNING and self.progress is not None and self.sample is not None:
                self.state.save_learning(self.progress, self.sample)
            self.stats.saves += 1
        except Exception as exc:
            self.stats.save_errors += 1
            log = log or get_logger()
            log.error("sentinel.state_save_failed", dir=str(self.state.dir), problem=tasks.describe(exc))
            tasks.record("state_save", exc, log)

    def close(self, log: Any = None) -> list[Alert]:
        """Score what is queued, finish a training that is done, save; never raises (the agent is stopping
        and must still exit cleanly)."""
        log = log or get_logger()
        alerts: list[Alert] = []
        try:
            alerts = self.score_pending()
        except Exception as exc:
            self.pending, self.pending_pids = [], set()
            tasks.record("shutdown", exc, log)
        if self.job is not None and self.job.done.wait(60):
            try:
                self._finish_training(log)
            except Exception as exc:
                self._training_failed(exc, log)
        self.save(log)
        return alerts

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "phase": self.phase,
            "model": self.model_name,
            "model_version": self.model_version,
            "thresholds": self.thresholds,
            **{k: getattr(self.stats, k) for k in self.stats.__slots__},  # type: ignore[attr-defined]
        }
        if self.progress is not None:
            out["learned_s"] = round(self.progress.learned_s, 1)
            out["learn_period_s"] = self.settings.learn_period_s
            out["sample_rows"] = self.sample.size if self.sample is not None else 0
        return out


def open_engine(
    settings: AnomalySettings, log: Any, ts_ns: int = 0
) -> tuple[AnomalyEngine | None, list[Alert]]:
    """Resolve ``settings.model`` into an engine; a refused model gives rules only and an internal alert.

    Returns (engine or None, internal alerts to write).
    """
    choice = settings.model
    if choice == "off":
        log.info("sentinel.anomaly", phase=PHASE_OFF, reason="--model off: rules only")
        return None, []
    state: HostState | None = HostState(settings.state_dir) if settings.state_dir else None
    if state is not None:
        try:
            state.ensure()
        except OSError as exc:
            problem = f"state directory {state.dir} is not writable ({exc.strerror or exc})"
            if choice == "auto":
                return _refused(log, ts_ns, str(state.dir), problem + ": cannot learn this host")
            log.warning("sentinel.state_unusable", problem=problem, effect="the baseline is not kept")
            state = None
    elif choice == "auto":
        return _refused(log, ts_ns, "auto", "learning needs a state directory")
    rarity, problem = state.load_rarity() if state is not None else (None, None)
    if problem:
        log.error("sentinel.state_corrupt", problem=problem)
    if choice == "auto" and state is not None:
        if (state.model_dir / "manifest.json").exists():
            path, name = state.model_dir, "host"
        else:
            engine = AnomalyEngine(settings, rarity, state)
            progress, sample, problems = state.load_learning(settings.sample_rows)
            for p in problems:
                log.error("sentinel.state_corrupt", problem=p)
            engine.start_learning(progress, sample)
            assert engine.progress is not None
            log.info("sentinel.anomaly", phase=PHASE_LEARNING, state_dir=str(state.dir),
                     learned_s=round(engine.progress.learned_s), learn_period_s=settings.learn_period_s,
                     resumed=progress is not None,
                     effect="rules only until the host model is trained")  # fmt: skip
            return engine, []
    elif choice == "default":
        found = find_default_model()
        if found is None:
            return _refused(log, ts_ns, "default", "no default model is installed (models/default)")
        path, name = found, "default"
    else:
        path, name = Path(choice), str(choice)
    try:
        model = load_model(path)
        if list(model.manifest["features"]) != list(FEATURES):
            raise ModelError(f"{path}: the model's features do not match this agent's ({len(FEATURES)})")
    except ModelError as exc:
        return _refused(log, ts_ns, str(path), str(exc))
    if rarity is None and model.rarity is not None:
        rarity = RarityState.from_dict(model.rarity.to_dict())  # seed the host baseline from the model's
    engine = AnomalyEngine(settings, rarity, state)
    engine.activate(model, name)
    log.info("sentinel.anomaly", phase=PHASE_DETECTION, model=str(path), name=name,
             version=engine.model_version, thresholds=engine.thresholds, alerts=settings.alerts)  # fmt: skip
    return engine, []


def _refused(log: Any, ts_ns: int, model: str, problem: str) -> tuple[None, list[Alert]]:
    log.error("sentinel.model_refused", model=model, problem=problem, effect="running rules only")
    return None, [internal.model_refused(ts_ns, model, problem)]
