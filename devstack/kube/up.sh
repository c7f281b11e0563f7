#!/usr/bin/env bash
# Start a real control plane on loopback (etcd, kube-apiserver with RBAC and
# the default admission chain, kube-controller-manager), building the binaries
# first if needed. The last line printed is KUBECONFIG=<path>.
#   up.sh [STATE_DIR]   (default <repo>/.cache/kube/state; stop with down.sh)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"
"$ROOT/devstack/kube/down.sh" "${1:-$ROOT/.cache/kube/state}" >/dev/null 2>&1 || true
exec "$PY" -m devstack.control_plane up --state "${1:-$ROOT/.cache/kube/state}"
