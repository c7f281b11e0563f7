#!/usr/bin/env bash
# Stop the control plane that up.sh started and remove its state.
#   down.sh [STATE_DIR]   (default <repo>/.cache/kube/state)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"
exec "$PY" -m devstack.control_plane down --state "${1:-$ROOT/.cache/kube/state}"
