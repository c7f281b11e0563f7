#!/usr/bin/env bash
# Build a real Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kubectl) and etcd from the Go modules pinned in go.mod/go.sum, into a
# git-ignored cache. A second run is a no-op when the binaries of the pinned
# versions are already there (a stamp holds the hash of go.mod, go.sum and
# this script).
#
#   KUBE_CACHE  cache root (default: <repo>/.cache/kube); binaries in $KUBE_CACHE/bin
#   GO          go command (default: go on PATH, else /usr/local/go/bin/go)
#   GOMODCACHE / GOCACHE  default to $KUBE_CACHE/gomod and $KUBE_CACHE/gocache
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${KUBE_CACHE:-$ROOT/.cache/kube}"
BIN="$CACHE/bin"
BINARIES=(etcd kube-apiserver kube-controller-manager kubectl)
K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' "$HERE/go.mod")"

stamp() {
  cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/cmd/etcd/main.go" "$SELF" | sha256sum | cut -d' ' -f1
}

up_to_date() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
  [ "$(cat "$BIN/.stamp" 2>/dev/null)" = "$(stamp)" ]
}

if up_to_date; then
  echo "kube binaries $K8S_VERSION up to date in $BIN"
  exit 0
fi

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[ -x "$GO" ] || { echo "build.sh: no Go toolchain (set GO=...)" >&2; exit 1; }
export GOTOOLCHAIN=local
export GOMODCACHE="${GOMODCACHE:-$CACHE/gomod}"
export GOCACHE="${GOCACHE:-$CACHE/gocache}"
export GOFLAGS="${GOFLAGS:-} -modcacherw"  # lets `rm -rf .cache/kube` work
export CGO_ENABLED=0

# What `kubectl version` and /version report; the compatibility version of
# 1.34 comes from the source itself, not from these.
minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

mkdir -p "$BIN"
echo "building kube $K8S_VERSION and etcd into $BIN with $("$GO" version | cut -d' ' -f3) (cold: ~10 min on 2 cores)"
start=$SECONDS
cd "$HERE"
tmp="$BIN/.new"
rm -rf "$tmp" && mkdir -p "$tmp"
nice -n "${KUBE_NICE:-10}" "$GO" build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl \
  ./cmd/etcd
for b in "${BINARIES[@]}"; do mv -f "$tmp/$b" "$BIN/$b"; done
rmdir "$tmp"
stamp > "$BIN/.stamp"
echo "built ${BINARIES[*]} in $((SECONDS - start))s"
