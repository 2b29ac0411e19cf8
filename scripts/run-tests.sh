#!/usr/bin/env bash
# Lint and test from the project venv; both always run so one report shows every problem, and either
# failing fails the whole run.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"
bash scripts/setup.sh
PY="$REPO_ROOT/.venv/bin/python"

lint_paths=()
for d in sentinel tests benchmarks; do
    [[ -e $d ]] && lint_paths+=("$d")
done

ruff_rc=0
echo "[tests] ruff check ${lint_paths[*]}"
"$PY" -m ruff check "${lint_paths[@]}" || ruff_rc=$?

pytest_rc=0
echo "[tests] pytest -v -ra tests $*"
"$PY" -m pytest -v -ra tests "$@" || pytest_rc=$?

echo "[tests] ruff exit $ruff_rc, pytest exit $pytest_rc"
if ((ruff_rc != 0)); then exit "$ruff_rc"; fi
exit "$pytest_rc"
