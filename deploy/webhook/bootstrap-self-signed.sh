#!/bin/sh
# Self-signed bootstrap for clusters without cert-manager: mint a CA and a
# serving certificate for the hook service, store them in Secret
# ai-models-hooks-tls (keys tls.crt, tls.key, ca.crt) and write the CA into
# the MutatingWebhookConfiguration's caBundle. Re-run to rotate (the
# certificate is valid for DAYS days); restart the hook service afterwards.
# Usage: NAMESPACE=d8-ai-models DAYS=365 ./bootstrap-self-signed.sh
set -eu
NAMESPACE="${NAMESPACE:-d8-ai-models}"
SERVICE="${SERVICE:-ai-models-hooks}"
WEBHOOK="${WEBHOOK:-ai-models-workloads}"
DAYS="${DAYS:-365}"
KUBECTL="${KUBECTL:-kubectl}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=ai-models-webhook-ca" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=$SERVICE.$NAMESPACE.svc" -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.%s,DNS:%s.%s.svc,DNS:%s.%s.svc.cluster.local\nextendedKeyUsage=serverAuth\n' \
  "$SERVICE" "$SERVICE" "$NAMESPACE" "$SERVICE" "$NAMESPACE" "$SERVICE" "$NAMESPACE" > "$dir/ext.cnf"
openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
  -days "$DAYS" -extfile "$dir/ext.cnf" -out "$dir/tls.crt" 2>/dev/null

"$KUBECTL" -n "$NAMESPACE" create secret generic ai-models-hooks-tls --type=kubernetes.io/tls \
  --from-file=tls.crt="$dir/tls.crt" --from-file=tls.key="$dir/tls.key" --from-file=ca.crt="$dir/ca.crt" \
  --dry-run=client -o yaml | "$KUBECTL" apply -f -
bundle="$(base64 < "$dir/ca.crt" | tr -d '\n')"
"$KUBECTL" patch mutatingwebhookconfiguration "$WEBHOOK" --type=json \
  -p "[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$bundle\"}]"
echo "caBundle set on $WEBHOOK; restart the $SERVICE pods to load the new certificate"
