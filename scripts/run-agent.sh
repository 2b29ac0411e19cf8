#!/usr/bin/env bash
# Run the agent from the project venv on this host, preparing the host first (fast when already prepared).
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$REPO_ROOT/scripts/setup.sh"
# `sentinel run` (the full pipeline) arrives with a later issue; until then stream decoded events.
exec "$REPO_ROOT/.venv/bin/sentinel" events "$@"
