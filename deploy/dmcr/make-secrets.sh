#!/bin/sh
# Create DMCR's key material and the Secrets that carry it (openssl only).
#
#   deploy/dmcr/make-secrets.sh DIR                  # first install: keys + DIR/secrets.yaml
#   deploy/dmcr/make-secrets.sh --rotate-token-key DIR   # new token key, bundle trusts old + new
#   deploy/dmcr/make-secrets.sh --finish-rotation DIR    # bundle trusts the new key only
#   deploy/dmcr/make-secrets.sh --add-signing-key DIR        # HMAC rotation 1/3: new key verifies
#   deploy/dmcr/make-secrets.sh --promote-signing-key DIR    # 2/3: new key signs, old one verifies
#   deploy/dmcr/make-secrets.sh --drop-previous-signing-key DIR  # 3/3: old key and its credentials end
#   kubectl apply -f DIR/secrets.yaml
#
# Files in DIR are kept between runs (a re-run only re-renders secrets.yaml),
# so keep DIR somewhere safe. Environment: NAMESPACE (d8-ai-models), DMCR_HOSTS
# (SANs of the serving certificate, comma separated; default the Service names).
# An install whose ai-models-signing-key was created by hand: copy its key to
# DIR/signing.key first, or applying secrets.yaml replaces it (docs/dmcr.md).
#
# Secrets (namespace $NAMESPACE):
#   dmcr-tls           tls.crt/tls.key serving certificate, ca.crt its CA
#   dmcr-token-signer  tls.key token signing key (hook service only), tls.crt its
#                      certificate, bundle.crt every certificate DMCR trusts
#   dmcr-http-secret   secret: the registry's upload-state secret
#   ai-models-signing-key  key: the HMAC key that signs credentials and upload
#                      tokens; next / previous: keys that only verify (rotation)
# ConfigMap dmcr-ca    ca.crt: what workers trust to reach DMCR over TLS
set -eu

mode=init
case "${1:-}" in
  --rotate-token-key) mode=rotate; shift ;;
  --finish-rotation) mode=finish; shift ;;
  --add-signing-key) mode=add-signing; shift ;;
  --promote-signing-key) mode=promote-signing; shift ;;
  --drop-previous-signing-key) mode=drop-signing; shift ;;
esac
[ $# -eq 1 ] || { sed -n '2,11p' "$0" >&2; exit 2; }
dir=$1
ns=${NAMESPACE:-d8-ai-models}
hosts=${DMCR_HOSTS:-dmcr,dmcr.$ns,dmcr.$ns.svc,dmcr.$ns.svc.cluster.local}
mkdir -p "$dir"
umask 077
cd "$dir"

# 32 random bytes as 64 hex characters, no newline (the service strips whitespace anyway).
new_signing_key() { openssl rand -hex 32 | tr -d '\n' > "$1"; }
# The key id the service derives (lib/signing_keys.py key_id): 8 hex digits of
# HMAC-SHA256(key, "ai-models signing key id"). Credentials name it before their ".".
signing_kid() {
  printf %s 'ai-models signing key id' | openssl dgst -sha256 -hmac "$(cat "$1")" | sed 's/^.*= //' | cut -c1-8
}

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
  add-signing)
    [ -f signing.key ] || { echo "no signing key in $dir to rotate" >&2; exit 1; }
    [ ! -f signing-previous.key ] || { echo "finish the last rotation first (--drop-previous-signing-key)" >&2; exit 1; }
    [ -f signing-next.key ] || new_signing_key signing-next.key
    ;;
  promote-signing)
    [ -f signing-next.key ] || { echo "no next signing key in $dir: run --add-signing-key first" >&2; exit 1; }
    mv signing.key signing-previous.key
    mv signing-next.key signing.key
    ;;
  drop-signing)
    rm -f signing-previous.key
    ;;
esac
[ -f signing.key ] || new_signing_key signing.key

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
signing_data="  key: $(b64 signing.key)"
for label in next previous; do
  [ ! -f "signing-$label.key" ] || signing_data="$signing_data
  $label: $(b64 "signing-$label.key")"
done
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
kind: Secret
metadata: {name: ai-models-signing-key, namespace: $ns}
type: Opaque
data:
$signing_data
---
apiVersion: v1
kind: ConfigMap
metadata: {name: dmcr-ca, namespace: $ns}
data:
  ca.crt: |
$(sed 's/^/    /' ca.crt)
EOF
} > secrets.yaml
kids="key=$(signing_kid signing.key)"
[ ! -f signing-next.key ] || kids="$kids next=$(signing_kid signing-next.key)"
[ ! -f signing-previous.key ] || kids="$kids previous=$(signing_kid signing-previous.key)"
echo "signing key ids: $kids" >&2
echo "wrote $dir/secrets.yaml ($mode): kubectl apply -f $dir/secrets.yaml" >&2
