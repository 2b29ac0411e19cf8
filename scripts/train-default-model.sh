#!/usr/bin/env bash
# Reproduce the default anomaly model (models/default) and its evaluation with one command, as root:
#
#   bash scripts/train-default-model.sh [--train-seconds 480] [--eval-seconds 180] \
#                                            [--workdir /var/tmp/sentinel-lab] [--output models/default]
#                                            [--reuse-captures]
#
# 0. the lab's services (scripts/lab/lab.py up) start before any recording and run until the end, as a
#    server's daemons outlive any one capture (a daemon starting in every short capture would look like news);
# 1. baseline: `sentinel record` captures the host while scripts/lab/benign_workload.py runs (seed 0);
# 2. held-out normal data: a second, later capture of the workload (seed 1), never used in training;
# 3. attacks: each scenario of scripts/lab/attacks.py in its own capture, with a sidecar
#    (CAPTURE.attack.json) naming the attack's process tree, so evaluation counts only that tree;
# 4. `sentinel train` (seed 0, 5 alerts/day budget), then `sentinel model eval` on the held-out normal
#    capture and the attack captures; the figures are printed and written to <output>/evaluation.json.
# Captures and logs stay in the work directory (outside the repository). About 14 minutes with the defaults.
# --reuse-captures skips steps 0-3 and trains and evaluates on the captures already in the work directory
# (when only features or training changed: the same data, a minute instead of 14).
# Exit codes: 0 done, 1 a step failed, 2 bad usage.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRAIN_S=480
EVAL_S=180
WORK=/var/tmp/sentinel-lab
OUT="$REPO_ROOT/models/default"
ALERTS_PER_DAY=5
REUSE=0
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case "$1" in
        --train-seconds) TRAIN_S=${2:?}; shift 2 ;;
        --eval-seconds) EVAL_S=${2:?}; shift 2 ;;
        --workdir) WORK=${2:?}; shift 2 ;;
        --output) OUT=${2:?}; shift 2 ;;
        --reuse-captures) REUSE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "train-default-model: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $TRAIN_S =~ ^[0-9]+$ && $EVAL_S =~ ^[0-9]+$ && $TRAIN_S -gt 0 && $EVAL_S -gt 0 ]] || {
    echo "train-default-model: --train-seconds and --eval-seconds take whole seconds" >&2; exit 2; }
if [[ $(id -u) -ne 0 ]]; then echo "train-default-model: run as root (recording loads eBPF probes)" >&2; exit 1; fi

log() { echo "[train-default-model] $*" >&2; }
START=$(date +%s)
bash "$REPO_ROOT/scripts/setup.sh" >&2
PY="$REPO_ROOT/.venv/bin/python"
SENTINEL="$REPO_ROOT/.venv/bin/sentinel"
LAB="$REPO_ROOT/scripts/lab"
if ((REUSE)); then
    [[ -s $WORK/baseline.cap && -s $WORK/normal.cap ]] || { log "--reuse-captures: no captures in $WORK"; exit 1; }
elif ! "$PY" - "$LAB" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import lab
sys.exit(1 if lab.port_open(lab.WEB_PORT) or lab.port_open(lab.DB_PORT) else 0)
EOF
then
    log "the lab's ports are in use: is another lab workload running?"; exit 1
fi
mkdir -p "$WORK"
((REUSE)) || rm -f "$WORK"/*.cap "$WORK"/*.cap.log "$WORK"/*.attack.json "$WORK"/*.workload.log
rm -rf "$WORK/model"

REC_PID=""
stop_recorder() {
    if [[ -n $REC_PID ]] && kill -0 "$REC_PID" 2>/dev/null; then
        kill -INT "$REC_PID"
        wait "$REC_PID" || true
    fi
    REC_PID=""
}
LAB_UP=0
cleanup() {
    stop_recorder
    if ((LAB_UP)); then "$PY" "$LAB/lab.py" down || true; fi
}
trap cleanup EXIT

# record CAPTURE COMMAND...: run COMMAND while `sentinel record` captures the whole host into CAPTURE.
record() {
    local out=$1; shift
    "$SENTINEL" record --output "$out" 2> "$out.log" &
    REC_PID=$!
    local waited=0
    until grep -q '"sentinel.ready"' "$out.log" 2>/dev/null; do
        sleep 0.5; waited=$((waited + 1))
        if ((waited > 360)) || ! kill -0 "$REC_PID" 2>/dev/null; then
            log "sentinel record did not become ready:"; tail -5 "$out.log" >&2
            exit 1
        fi
    done
    local rc=0
    "$@" || rc=$?
    sleep 1  # let the last events of the command reach the capture before the drain
    stop_recorder
    if ((rc != 0)); then log "'$*' failed with exit code $rc"; exit 1; fi
}

ATTACKS=()
if ((REUSE)); then
    log "reusing the captures in $WORK"
    for cap in "$WORK"/attack-*.cap; do ATTACKS+=("$cap"); done
else
"$PY" "$LAB/lab.py" up
LAB_UP=1
log "1/4 baseline: ${TRAIN_S}s of the benign workload (seed 0)"
record "$WORK/baseline.cap" bash -c '"$@" 2> >(tee "$0" >&2)' "$WORK/baseline.workload.log" \
    "$PY" "$LAB/benign_workload.py" --duration "$TRAIN_S" --seed 0
log "2/4 held-out normal data: ${EVAL_S}s of the benign workload (seed 1, not used in training)"
record "$WORK/normal.cap" bash -c '"$@" 2> >(tee "$0" >&2)' "$WORK/normal.workload.log" \
    "$PY" "$LAB/benign_workload.py" --duration "$EVAL_S" --seed 1
log "3/4 attacks: one capture per scenario"
for name in $("$PY" "$LAB/attacks.py" --list | awk '{print $1}'); do
    cap="$WORK/attack-$name.cap"
    record "$cap" "$PY" "$LAB/attacks.py" run "$name" --sidecar "$cap.attack.json"
    ATTACKS+=("$cap")
done
fi

log "4/4 training and evaluation"
"$SENTINEL" train "$WORK/baseline.cap" --output "$WORK/model" --alerts-per-day "$ALERTS_PER_DAY" --seed 0
"$SENTINEL" model info --model "$WORK/model" > /dev/null
"$SENTINEL" model eval --model "$WORK/model" --normal "$WORK/normal.cap" --attack "${ATTACKS[@]}" --json \
    > "$WORK/evaluation.raw.json"
ELAPSED=$(( $(date +%s) - START ))
"$PY" - "$WORK" "$TRAIN_S" "$EVAL_S" "$ELAPSED" <<'EOF'
"""Add how the figures were made to the evaluation: captures, durations, event counts, the command."""
import json
import sys
from pathlib import Path

work, train_s, eval_s, elapsed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
report = json.loads((work / "evaluation.raw.json").read_text())
report["setup"] = {
    "command": "bash scripts/train-default-model.sh",
    "train_capture": {"name": "baseline.cap", "workload_seconds": train_s, "workload_seed": 0},
    "normal_captures": [{"name": "normal.cap", "workload_seconds": eval_s, "workload_seed": 1}],
    "attack_captures": sorted(p.name for p in work.glob("attack-*.cap")),
    "script_seconds": elapsed,
}
(work / "model" / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
r = report
print(f"normal events {r['normal_events']} ({r['normal_days'] * 24 * 60:.1f} min), "
      f"{r['normal_alerts']} above the threshold: {r['alerts_per_day']:.1f} alerts/day")
print(f"AUC {r['auc']:.4f}; detection at 0.1% FPR {r['detection_at_0_1pct_fpr']:.1%}, "
      f"at 1% FPR {r['detection_at_1pct_fpr']:.1%}, at the model threshold {r['detected_at_threshold']:.1%}")
for i in r["instances"]:
    margin = "no events" if i["top_margin"] is None else f"top margin {i['top_margin']:+.4f}"
    print(f"  {i['scenario']:<16} {'detected' if i['detected'] else 'missed':<9} {margin} ({i['events']} events)")
EOF
rm -rf "$OUT"
mkdir -p "$(dirname "$OUT")"
cp -r "$WORK/model" "$OUT"
"$SENTINEL" model info --model "$OUT" | tail -1
log "done in $(( $(date +%s) - START ))s: $OUT (captures and logs in $WORK)"
