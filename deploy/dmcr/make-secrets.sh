#!/bin/sh
# Create DMCR's key material and the Secrets that carry it (openssl only).
#
#   deploy/dmcr/make-secrets.sh DIR                  # first install: keys + DIR/secrets.yaml
#   deploy/dmcr/make-secrets.sh --rotate-token-key DIR   # new token key, bundle trusts old + new
#   deploy/dmcr/make-secrets.sh --finish-rotation DIR    # bundle trusts the new key only
#   kubectl apply -f DIR/secrets.yaml
#
# Files in DIR are kept between runs (a re-run only re-renders secrets.yaml),
# so keep DIR somewhere safe. Environment: NAMESPACE (d8-ai-models), DMCR_HOSTS
# (SANs of the serving certificate, comma separated; default the Service names).
#
# Secrets (namespace $NAMESPACE):
#   dmcr-tls           tls.crt/tls.key serving certificate, ca.crt its CA
#   dmcr-token-signer  tls.key token signing key (hook service only), tls.crt its
#                      certificate, bundle.crt every certificate DMCR trusts
#   dmcr-http-secret   secret: the registry's upload-state secret
# ConfigMap dmcr-ca    ca.crt: what workers trust to reach DMCR over TLS
set -eu

mode=init
case "${1:-}" in
  --rotate-token-key) mode=rotate; shift ;;
  --finish-rotation) mode=finish; shift ;;
esac
[ $# -eq 1 ] || { sed -n '2,8p' "$0" >&2; exit 2; }
dir=$1
ns=${NAMESPACE:-d8-ai-models}
hosts=${DMCR_HOSTS:-dmcr,dmcr.$ns,dmcr.$ns.svc,dmcr.$ns.svc.cluster.local}
mkdir -p "$dir"
umask 077
cd "$dir"

new_token_key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out token.key 2>/dev/null
  openssl req -new -x509 -key token.key -out token.crt -days 3650 -subj "/CN=ai-models registry token signer"
}

case $mode in
  init)
    [ -f token.key ] || { new_token_key; cp token.crt bundle.crt; }
    ;;
  rotate)
    [ -f token.crt ] || { echo "no token key in $dir to rotate" >&2; exit 1; }
    mv token.crt token-old.crt
    mv token.key token-old.key
    new_token_key
    cat token.crt token-old.crt > bundle.crt
    ;;
  finish)
    cp token.crt bundle.crt
    rm -f token-old.crt token-old.key
    ;;
esac

if [ ! -f ca.key ]; then
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
  openssl req -new -x509 -key ca.key -out ca.crt -days 3650 -subj "/CN=ai-models DMCR CA"
fi
if [ ! -f tls.key ]; then
  san=$(printf '%s' "$hosts" | awk -F, '{for (i = 1; i <= NF; i++) {
    t = ($i ~ /^[0-9.]+$/) ? "IP" : "DNS"; printf "%s%s:%s", (i > 1 ? "," : ""), t, $i }}')
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out tls.key 2>/dev/null
  openssl req -new -key tls.key -out tls.csr -subj "/CN=dmcr.$ns.svc" -addext "subjectAltName=$san"
  openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -copy_extensions copy -out tls.crt 2>/dev/null
  rm -f tls.csr
fi
[ -f http-secret ] || openssl rand -hex 32 | tr -d '\n' > http-secret

b64() { base64 < "$1" | tr -d '\n'; }
{
  cat <<EOF
apiVersion: v1
kind: Secret
metadata: {name: dmcr-tls, namespace: $ns}
type: kubernetes.io/tls
data:
  tls.crt: $(b64 tls.crt)
  tls.key: $(b64 tls.key)
  ca.crt: $(b64 ca.crt)
---
apiVersion: v1
kind: Secret
metadata: {name: dmcr-token-signer, namespace: $ns}
type: Opaque
data:
  tls.key: $(b64 token.key)
  tls.crt: $(b64 token.crt)
  bundle.crt: $(b64 bundle.crt)
---
apiVersion: v1
kind: Secret
metadata: {name: dmcr-http-secret, namespace: $ns}
type: Opaque
data:
  secret: $(b64 http-secret)
---
apiVersion: v1
kind: ConfigMap
metadata: {name: dmcr-ca, namespace: $ns}
data:
  ca.crt: |
$(sed 's/^/    /' ca.crt)
EOF
} > secrets.yaml
echo "wrote $dir/secrets.yaml ($mode): kubectl apply -f $dir/secrets.yaml" >&2
