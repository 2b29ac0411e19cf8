#!/usr/bin/env bash
# Run the agent from the project venv on this host, preparing the host first (fast when already prepared).
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$REPO_ROOT/scripts/setup.sh"
# The agent: the shipped rules (unless --rules is given), alerts as ECS JSON lines on stdout.
exec "$REPO_ROOT/.venv/bin/sentinel" run "$@"
