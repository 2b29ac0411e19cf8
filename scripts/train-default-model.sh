#!/usr/bin/env bash
# Reproduce the default anomaly model (models/default) and its evaluation, on a machine like CI, as root:
#   sudo bash scripts/train-default-model.sh [--train-seconds 480] [--eval-seconds 120] [--workdir DIR] [--output DIR]
# 1. records a baseline capture while scripts/lab/benign_workload.py runs (seed 0),
# 2. records a separate benign capture for evaluation (seed 1, never used in training),
# 3. records every attack scenario of scripts/lab/attacks.py into one capture with its sidecar of process trees,
# 4. trains the model (sentinel train, seed 0, 5 alerts/day) and evaluates it (sentinel model eval), writing
#    the figures to <output>/evaluation.json and printing them.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRAIN_S=480
EVAL_S=120
WORK=/var/tmp/sentinel-lab
OUT="$REPO_ROOT/models/default"
while (($#)); do
    case "$1" in
        --train-seconds) TRAIN_S=$2; shift 2 ;;
        --eval-seconds) EVAL_S=$2; shift 2 ;;
        --workdir) WORK=$2; shift 2 ;;
        --output) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "train-default-model: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ $(id -u) -ne 0 ]]; then echo "train-default-model: run as root (recording loads the probes)" >&2; exit 1; fi

bash "$REPO_ROOT/scripts/setup.sh" >&2
PY="$REPO_ROOT/.venv/bin/python"
SENTINEL="$REPO_ROOT/.venv/bin/sentinel"
mkdir -p "$WORK"
rm -f "$WORK"/*.cap "$WORK"/*.attacks.json

log() { echo "[train-default-model] $*" >&2; }

# record OUTPUT COMMAND...: run COMMAND while `sentinel record` captures the whole host.
record() {
    local out=$1; shift
    "$SENTINEL" record --output "$out" 2> "$out.log" &
    local rec=$!
    local waited=0
    until grep -q '"sentinel.ready"' "$out.log" 2>/dev/null; do
        sleep 1; waited=$((waited + 1))
        if ((waited > 180)) || ! kill -0 "$rec" 2>/dev/null; then
            log "sentinel record did not become ready:"; tail -5 "$out.log" >&2; kill "$rec" 2>/dev/null || true
            exit 1
        fi
    done
    "$@"
    kill -INT "$rec"
    wait "$rec"
}

start=$(date +%s)
log "baseline: ${TRAIN_S}s of the benign workload"
record "$WORK/baseline.cap" "$PY" "$REPO_ROOT/scripts/lab/benign_workload.py" --duration "$TRAIN_S" --seed 0
log "evaluation: ${EVAL_S}s of the benign workload (another seed, not used in training)"
record "$WORK/normal.cap" "$PY" "$REPO_ROOT/scripts/lab/benign_workload.py" --duration "$EVAL_S" --seed 1
log "attacks: every scenario, one process tree each"
record "$WORK/attacks.cap" "$PY" "$REPO_ROOT/scripts/lab/attacks.py" run all \
    --sidecar "$WORK/attacks.cap.attacks.json"

log "training"
rm -rf "$OUT"
"$SENTINEL" train "$WORK/baseline.cap" --output "$OUT" --alerts-per-day 5 --seed 0
"$SENTINEL" model info --model "$OUT" > /dev/null
log "evaluating"
"$SENTINEL" model eval --model "$OUT" --normal "$WORK/normal.cap" --attack "$WORK/attacks.cap" --json \
    > "$OUT/evaluation.json"
"$SENTINEL" model eval --model "$OUT" --normal "$WORK/normal.cap" --attack "$WORK/attacks.cap"
log "done in $(( $(date +%s) - start ))s: $OUT (captures in $WORK)"
