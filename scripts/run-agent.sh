#!/usr/bin/env bash
# Run the agent from the project venv on this host, preparing the host first (fast when already prepared).
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Setup's progress goes to stderr: stdout carries nothing but alerts, so it can be piped to a SIEM shipper.
bash "$REPO_ROOT/scripts/setup.sh" >&2
# The agent: the shipped rules (unless --rules is given), alerts as ECS JSON lines on stdout.
exec "$REPO_ROOT/.venv/bin/sentinel" run "$@"
