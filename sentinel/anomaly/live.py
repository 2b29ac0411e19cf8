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

from sentinel import resources, tasks
from sentinel.alerts import internal
from sentinel.alerts.model import ML_RULESET, Alert
from sentinel.anomaly.features import (
    FAMILIAR_EXEC_ROW,
    FAMILIAR_OPEN_ROW,
    FEATURES,
    NOVELTY,
    SCORED_TYPES,
    FeatureExtractor,
    RowFacts,
)
from sentinel.anomaly.learning import TrainingJob
from sentinel.anomaly.model import Group, Model, ModelError, load_model
from sentinel.anomaly.profiles import SEEN, ProfileState
from sentinel.anomaly.scorer import CompiledForest, explain
from sentinel.anomaly.state import DEFAULT_STATE_DIR, HostState, Key, LearningProgress, RowSample
from sentinel.anomaly.train import TRAIN_EXTRA, training_available
from sentinel.events import EventType
from sentinel.log import get_logger
from sentinel.rules.model import Rule

PHASE_OFF, PHASE_LEARNING, PHASE_DETECTION = "off", "learning", "detection"
MODEL_CHOICES = ("auto", "default", "off")
ML_RULE = Rule(
    name="Anomalous behaviour for this host",
    desc="The host's anomaly model (an isolation forest over what is new for this program on this host — a "
    "program it never started, a user it never ran as, a directory it never read or wrote, a port or "
    "address range it never connected to, weighed by how often the program does new things — plus "
    "command-line and lineage traits) scored this event above its alert threshold. sentinel.ml says what "
    "was new and the baseline behind it.",
    condition="",
    output="",
    priority="warning",
    tags=["sentinel-ml", "anomaly"],
    source="ml",
)
NOT_CAUSES = frozenset({"type_exec", "type_open", "type_connect"})  # context, never the explanation
# Rows that alerted are learned like any other: a novelty alerts once (a new scheduled job alerts on its first
# run, not on every run), and each *different* new thing an attacker does is still new.
ALERTED_WEIGHT = 1.0
# ml.seen.* / ml.novelty.* field name → the row's novelty column's profile kind.
_NOVELTY_FIELD = {f.removeprefix("new_"): f for f in NOVELTY}
_HOST_DEST = FEATURES.index("new_host_dest")
_EXEC, _OPEN, _CONNECT = EventType.EXEC, EventType.OPEN, EventType.CONNECT
NS = 1_000_000_000
SCORE_CACHE_MAX = 65_536
TRAIN_RETRY_S = 3600.0  # learning time before a failed training is tried again
RETRAIN_MAX_S = 86_400.0  # retraining interval once the baseline is old: daily


def find_default_model() -> Path | None:
    """The shipped model: ``$SENTINEL_MODEL``, the checkout's ``models/default``, the deb's, the wheel's."""
    return resources.find("SENTINEL_MODEL", "models/default", lambda c: (c / "manifest.json").is_file())


@dataclass(slots=True)
class AnomalySettings:
    """What `sentinel run` was asked for; the defaults are the agent's."""

    model: str = "auto"  # auto | default | off | a model directory
    state_dir: str = DEFAULT_STATE_DIR
    learn_period_s: float = 3_600.0  # warm-up before the first model (README: why one hour)
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

    def __init__(
        self, engine: AnomalyEngine, x: list[float], facts: RowFacts, score: float | None = None
    ) -> None:
        self.engine = engine
        self.x = x  # (shared by familiar repeated opens: never changed)
        self.facts = facts
        self.score_value = score

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
        group, _, kind = name.partition(".")
        if group == "new_dest":
            i = self._index(_HOST_DEST) if f.etype == _CONNECT else None
            return None if i is None else f.counts[i] < SEEN
        feature = _NOVELTY_FIELD.get(kind)
        if feature is None or group not in ("novelty", "seen"):
            return None
        col = FEATURES.index(feature)
        i = self._index(col)
        if i is None:
            return None
        if group == "seen":
            return int(f.counts[i])  # before this event
        return next((n.novelty for n in f.new or () if n.feature == feature), 0.0)  # the raw value

    def _index(self, col: int) -> int | None:
        """Position in the row's keys of the key measured into column ``col``; None if the event has none."""
        for i, key in enumerate(self.facts.keys):
            if key[0] == col:
                return i
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
    memo_hits: int = 0  # repeated opens answered from the slot's memo
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
        profiles: ProfileState | None = None,
        state: HostState | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.extractor = FeatureExtractor(state=profiles or ProfileState(), learn=False)
        self.model: Model | None = None
        self.model_name = ""  # host | default | the directory
        self.model_version = ""
        self.group_by_type: dict[int, Group] = {}  # the forest that scores each event type
        self.compiled: dict[str, CompiledForest] = {}
        self._score_cache: dict[tuple[Any, ...], float] = {}  # row (or its short key) → score, this model
        # Per event type, the score of a row with no news (its forest's novelty columns all 0): most rows.
        self._familiar: dict[int, float] = {}
        self.phase = PHASE_OFF
        self.memo_ok = False
        self.exec_memo_ok = False
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
        self._familiar = {}
        for etype, feature in ((_EXEC, "type_exec"), (_OPEN, "type_open"), (_CONNECT, "type_connect")):
            for g in model.groups:  # the first group whose route takes this type
                if g.route is None or g.route == FEATURES.index(feature):
                    self.group_by_type[etype] = g
                    row = np.zeros((1, len(FEATURES)))
                    row[0, FEATURES.index(feature)] = 1.0
                    score = float(self.compiled[g.name].scores(row)[0])
                    if score <= g.threshold:  # (a model under which even this alerts is scored as it says)
                        self._familiar[etype] = score
                    break
        self.phase = PHASE_DETECTION
        self.extractor.forget_memo()  # its views hold the old model's score
        # Repeated opens and execs may be answered from the extractor's memo when they cannot alert.
        self.memo_ok = _OPEN in self._familiar
        self.exec_memo_ok = _EXEC in self._familiar

    def start_learning(self, progress: LearningProgress | None, sample: RowSample | None) -> None:
        """Keep learning the host (warm-up, or continued learning under a host model): profiles, a sample
        of rows for the next training, the time learned."""
        if self.model is None:
            self.phase = PHASE_LEARNING
            self.memo_ok = self.exec_memo_ok = True  # nothing alerts while learning
        self.progress = progress or LearningProgress()
        if self.progress.next_train_s <= 0:
            self.progress.next_train_s = self.settings.learn_period_s
        self.sample = sample or RowSample(self.settings.sample_rows, seed=self.settings.seed)

    # ------------------------------------------------------------------------------------------ events

    def observe(self, ctx: Any) -> None:
        """Compute the event's row and set ``ctx.ml``; queue it for scoring (detection) or sample it."""
        ev = ctx.ev
        etype = ev.type
        if etype not in SCORED_TYPES:
            return
        sample = self.sample
        extractor = self.extractor
        extractor.containers = ctx.containers  # (the runtime metadata this event sees: images' profiles)
        if etype is _OPEN and self.memo_ok and ctx.proc is not None:
            memo = extractor.familiar_open(ev, ctx.proc, ctx.path, ctx.wall_ns)
            if memo is not None:  # a repeat in this slot: the familiar row, its keys counted already
                view = memo.view
                if view is None:  # one view serves the entry's repeats: the same facts and score
                    view = memo.view = MlView(self, FAMILIAR_OPEN_ROW, memo.facts, self._familiar.get(_OPEN))
                ctx.ml = view  # (no activity keys: the process was counted active in the slot already)
                self._answered(FAMILIAR_OPEN_ROW, ctx.wall_ns, memo.facts.keys, (), 1.0 + ev.repeat_count)
                return
        if etype is _EXEC and self.exec_memo_ok and ctx.proc is not None:
            answer = extractor.familiar_exec(ev, ctx.proc, ctx.wall_ns)
            if answer is not None:  # a repeat in this slot: the familiar row, its keys counted already
                entry, newly_active = answer
                view = entry.view
                if view is None:
                    familiar = self._familiar.get(_EXEC)
                    view = entry.view = MlView(self, FAMILIAR_EXEC_ROW, entry.facts, familiar)
                ctx.ml = view
                self._answered(FAMILIAR_EXEC_ROW, ctx.wall_ns, entry.facts.keys,
                               entry.activity if newly_active else (), 1.0)  # fmt: skip
                return
        learning = self.phase == PHASE_LEARNING
        x, facts = extractor.compute(ev, ctx.proc, ctx.path, ctx.wall_ns, learn=False)
        view = MlView(self, x, facts)
        ctx.ml = view
        if sample is not None:  # the next training's rows: warm-up and continued learning alike
            if sample.due():
                sample.add(x, ctx.wall_ns, facts.keys, facts.repeats)
            else:
                sample.pass_over()
            self.progress.events += 1  # type: ignore[union-attr]
        if learning:
            extractor.commit(facts, ctx.wall_ns)
            extractor.remember(facts, ctx.wall_ns)
            self.stats.learned_rows += 1
            return
        if not facts.news:  # the forest would score it exactly as the familiar row: no queue, no batch
            familiar = self._familiar.get(etype)
            if familiar is not None:
                view.score_value = familiar
                extractor.commit(facts, ctx.wall_ns)
                extractor.remember(facts, ctx.wall_ns)
                self.stats.scored += 1
                self.stats.learned_rows += 1
                return
        self.pending.append(ctx)
        self.pending_pids.add(ev.pid)

    def _answered(
        self, row: list[float], wall_ns: int, keys: list[Key], activity: tuple[Key, ...], weight: float
    ) -> None:
        """A row the extractor's memo answered: sampled with the keys measuring it would have given (its
        process's activity keys too when the process became active with it), and counted."""
        sample = self.sample
        if sample is not None:
            if sample.due():
                sample.add(row, wall_ns, keys + list(activity) if activity else keys, weight)
            else:
                sample.pass_over()
            self.progress.events += 1  # type: ignore[union-attr]
        stats = self.stats
        stats.memo_hits += 1
        stats.learned_rows += 1
        if self.phase == PHASE_DETECTION:
            stats.scored += 1

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
        self.stats.learned_rows += len(pending)
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

        baseline = baseline_words(self.extractor.state.span_s())

        def finalize(a: Alert) -> None:
            """Built only for alerts that are written: explaining costs a batch of re-scores."""
            assert self.model is not None
            details = facts.details(baseline)
            contributions = explain(group.forest, list(FEATURES), row, median, details, 3, NOT_CAUSES)
            new = [details[n.feature] for n in facts.new or ()]
            words = "; ".join(new or [c.text for c in contributions])
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
                    "new": [new_item_doc(n, details[n.feature]) for n in facts.new or ()],
                    "baseline_s": round(self.extractor.state.span_s()),
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
        """Per poll: time learned, the training job, periodic saves of the state.

        Never raises: a failure of any kind is counted and reported (:mod:`sentinel.tasks`) and the work is
        tried again at its next turn; the agent must not stop because, say, a key did not serialize.
        """
        now = time.monotonic()
        elapsed, self._last_tick = now - self._last_tick, now
        log = log or get_logger()
        if self.progress is not None:
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
        """Train when the learned time reaches the next training: the end of the warm-up, then twice as much
        learned time each time (2x, 4x… the warm-up), at least daily once the baseline is old."""
        p, s = self.progress, self.sample
        assert p is not None and s is not None
        if self.job is not None or self.state is None or p.learned_s < p.next_train_s:
            return
        if s.size < self.settings.min_events:
            if not p.extended_logged:
                p.extended_logged = True
                log.warning("sentinel.learning_extended", learned_s=round(p.learned_s), events=s.size,
                            needed=self.settings.min_events)  # fmt: skip
            return
        rows = s.ordered()
        profiles = self.extractor.state.copy()  # learning goes on meanwhile
        self.job = TrainingJob()
        self.stats.trainings += 1
        p.next_train_s = p.learned_s + min(max(p.learned_s, 60.0), RETRAIN_MAX_S)
        log.info("sentinel.training", rows=len(rows), events_seen=s.seen, learned_s=round(p.learned_s),
                 retraining=self.model is not None, next_training_s=round(p.next_train_s))  # fmt: skip
        self.job.start(rows=rows, seen=s.seen, profiles=profiles, output_dir=self.state.model_dir,
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
        retrained = self.model is not None
        self.activate(model, "host")
        if self.progress is not None:
            self.progress.trainings += 1
            self.progress.last_trained = time.time()
        self.save(log)
        log.info("sentinel.model_trained", model=str(self.state.model_dir), thresholds=self.thresholds,
                 version=self.model_version, rows=model.manifest.get("n_samples"), retrained=retrained,
                 next_training_s=round(self.progress.next_train_s) if self.progress else None)  # fmt: skip

    def _training_failed(self, exc: BaseException, log: Any) -> None:
        """Counted and reported; learning goes on and training is tried again an hour of learning later."""
        self.job = None
        self.stats.training_errors += 1
        if self.progress is not None:
            self.progress.next_train_s = self.progress.learned_s + TRAIN_RETRY_S
        log.error("sentinel.training_failed", problem=tasks.describe(exc), retry_after_s=TRAIN_RETRY_S)
        tasks.record("training", exc, log)

    def save(self, log: Any = None) -> None:
        """Persist the profiles (and the learning sample and progress); a failure of any kind is counted,
        logged and reported, never fatal (the next save tries again)."""
        if self.state is None:
            return
        try:
            self.state.save_profiles(self.extractor.state)
            if self.progress is not None and self.sample is not None:
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
            out["next_training_s"] = round(self.progress.next_train_s, 1)
            out["sample_rows"] = self.sample.size if self.sample is not None else 0
        return out


def new_item_doc(n: Any, text: str) -> dict[str, Any]:
    """One novelty under ``sentinel.ml.new``: what, whose, the item, the subject's baseline, in words."""
    return {
        "what": n.feature.removeprefix("new_"),
        "subject": n.subject,
        "item": n.item,
        "baseline_events": round(n.total),
        "baseline_distinct": n.distinct,
        "novelty": n.novelty,
        "text": text,
    }


def baseline_words(span_s: float) -> str:
    """How long the baseline is, in words an analyst reads at a glance ("5 h of baseline")."""
    if span_s < 120:
        return f"{span_s:.0f} s of baseline"
    if span_s < 2 * 3600:
        return f"{span_s / 60:.0f} min of baseline"
    if span_s < 2 * 86_400:
        return f"{span_s / 3600:.0f} h of baseline"
    return f"{span_s / 86_400:.0f} days of baseline"


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
    if choice == "default":
        return _refused(log, ts_ns, "default", DEFAULT_REFUSED)
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
    profiles, problem = state.load_profiles() if state is not None else (None, None)
    if problem:
        log.error("sentinel.state_corrupt", problem=problem)
    model: Model | None = None
    if choice == "auto":
        assert state is not None
        if (state.model_dir / "manifest.json").exists():
            model, refused = load_checked_model(state.model_dir)
            if refused:  # the host's own model is unusable: learn again rather than run without one
                log.error("sentinel.state_corrupt", problem=f"{refused}; the host model is trained again")
                model = None
        if model is None and not training_available():
            return _refused(log, ts_ns, "auto", TRAIN_EXTRA + "; or give --model DIR")
        engine = AnomalyEngine(settings, profiles, state)
        if model is not None:
            engine.activate(model, "host")
        progress, sample, problems = state.load_learning(settings.sample_rows)
        for p in problems:
            log.error("sentinel.state_corrupt", problem=p)
        engine.start_learning(progress, sample)
        assert engine.progress is not None
        if model is None:
            log.info("sentinel.anomaly", phase=PHASE_LEARNING, state_dir=str(state.dir),
                     learned_s=round(engine.progress.learned_s), learn_period_s=settings.learn_period_s,
                     resumed=progress is not None,
                     effect="rules only until the host model is trained")  # fmt: skip
        else:
            log.info("sentinel.anomaly", phase=PHASE_DETECTION, model=str(state.model_dir), name="host",
                     version=engine.model_version, thresholds=engine.thresholds, alerts=settings.alerts,
                     learned_s=round(engine.progress.learned_s),
                     next_training_s=round(engine.progress.next_train_s))  # fmt: skip
        return engine, []
    path = Path(choice)
    model, refused = load_checked_model(path)
    if refused or model is None:
        return _refused(log, ts_ns, str(path), refused or "no model")
    engine = AnomalyEngine(settings, profiles or (model.profiles.copy() if model.profiles else None), state)
    engine.activate(model, str(choice))
    log.info("sentinel.anomaly", phase=PHASE_DETECTION, model=str(path), name=str(choice),
             version=engine.model_version, thresholds=engine.thresholds, alerts=settings.alerts)  # fmt: skip
    return engine, []


DEFAULT_REFUSED = (
    "the shipped model is not a detection mode: what is new on a host can only be learned on that host "
    "(the lab model alerted 33 times in 2.3 minutes on a host unlike the lab). Use --model auto (the "
    "default: learns this host, then detects) or --model DIR for a model trained on this host; "
    "models/default stays for `sentinel model eval` and as a reference"
)


def load_checked_model(path: Path) -> tuple[Model | None, str | None]:
    """A verified model whose features match this agent's, or the reason it is refused."""
    try:
        model = load_model(path)
        if list(model.manifest["features"]) != list(FEATURES):
            raise ModelError(
                f"{path}: the model's features do not match this agent's ({len(FEATURES)}): "
                "an older agent trained it; train it again"
            )
    except ModelError as exc:
        return None, str(exc)
    return model, None


def _refused(log: Any, ts_ns: int, model: str, problem: str) -> tuple[None, list[Alert]]:
    log.error("sentinel.model_refused", model=model, problem=problem, effect="running rules only")
    return None, [internal.model_refused(ts_ns, model, problem)]
