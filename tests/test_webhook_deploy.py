"""The webhook's install manifests: schema-valid, selecting what the hook expects, certs that verify."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import celpy
import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from hooks.app import HOOKS

DIR = Path(__file__).resolve().parent.parent / "deploy" / "webhook"


def load(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DIR / name).read_text()) if d]


@pytest.fixture(scope="module")
def mwc() -> dict:
    [doc] = load("mutatingwebhookconfiguration.yaml")
    return doc


def test_mutating_webhook_configuration_validates(mwc):
    kubernetes_validate.validate(mwc, "1.37", strict=True)


def test_webhook_settings(mwc):
    [hook] = mwc["webhooks"]
    assert hook["clientConfig"]["service"]["path"] in HOOKS
    assert hook["sideEffects"] == "None" and hook["failurePolicy"] == "Fail"
    assert hook["admissionReviewVersions"] == ["v1"] and 1 <= hook["timeoutSeconds"] <= 10
    assert hook["reinvocationPolicy"] == "IfNeeded"
    covered = {(g, r) for rule in hook["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert covered == {("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"),
                       ("batch", "cronjobs")}
    assert all(set(rule["operations"]) == {"CREATE", "UPDATE"} for rule in hook["rules"])
    excluded = hook["namespaceSelector"]["matchExpressions"][0]["values"]
    assert "d8-ai-models" in excluded and "kube-system" in excluded
    kustom = yaml.safe_load((DIR / "kustomization.yaml").read_text())
    assert all((DIR / r).is_file() for r in kustom["resources"])


@pytest.mark.parametrize(
    ("op", "obj", "old", "expected"),
    [
        ("CREATE", {"ai.deckhouse.io/model": "a"}, None, True),
        ("CREATE", {"ai.deckhouse.io/clustermodel": "a"}, None, True),
        ("CREATE", None, None, False),
        ("CREATE", {"other": "x"}, None, False),
        ("UPDATE", {"other": "x"}, {"ai.deckhouse.io/model": "a"}, True),  # removal: strip the injection
        ("UPDATE", {"other": "x"}, {"other": "y"}, False),
    ],
    ids=["model", "clustermodel", "no-annotations", "unrelated", "removed", "never"],
)
def test_match_conditions(mwc, op, obj, old, expected):
    """Evaluated with cel-python; the same CEL the API server evaluates before calling."""
    [cond] = mwc["webhooks"][0]["matchConditions"]
    env = celpy.Environment()
    prog = env.program(env.compile(cond["expression"]))

    def wrap(ann):
        return {"metadata": {"annotations": ann} if ann is not None else {}}

    got = prog.evaluate({
        "object": celpy.json_to_cel(wrap(obj)),
        "oldObject": celpy.json_to_cel(wrap(old) if op == "UPDATE" else None),
        "request": celpy.json_to_cel({"operation": op}),
    })
    assert bool(got) is expected


def test_cert_manager_objects_name_the_service(mwc):
    docs = {(d["kind"], d["metadata"]["name"]): d for d in load("certificate.yaml")}
    serving = docs[("Certificate", "ai-models-hooks-tls")]
    svc = mwc["webhooks"][0]["clientConfig"]["service"]
    assert f"{svc['name']}.{svc['namespace']}.svc" in serving["spec"]["dnsNames"]
    ns, name = mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].split("/")
    assert (ns, name) == (serving["metadata"]["namespace"], serving["metadata"]["name"])
    assert docs[("Issuer", serving["spec"]["issuerRef"]["name"])]["spec"]["ca"]


def test_self_signed_bootstrap_makes_a_chain_that_verifies(tmp_path, mwc):
    """Run the script with a recording stand-in for kubectl, then check what it would apply."""
    log = tmp_path / "kubectl.log"
    stub = tmp_path / "kubectl"
    # `create --dry-run -o yaml` must print the Secret: emulate it from the files kubectl would read.
    stub.write_text(f"""#!/bin/sh
echo "ARGS $*" >> {log}
case "$*" in
  *--dry-run*)
    for a in "$@"; do case "$a" in --from-file=*) spec="${{a#--from-file=}}"; k="${{spec%%=*}}"; f="${{spec#*=}}";
      echo "FILE $k $(base64 < "$f" | tr -d '\\n')" >> {log};; esac; done;;
  apply*) cat > /dev/null;;
esac
""")
    stub.chmod(0o755)
    env = {**os.environ, "KUBECTL": str(stub), "DAYS": "30"}
    proc = subprocess.run(["sh", str(DIR / "bootstrap-self-signed.sh")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    files = {ln.split()[1]: base64.b64decode(ln.split()[2]) for ln in lines if ln.startswith("FILE ")}
    ca = x509.load_pem_x509_certificate(files["ca.crt"])
    cert = x509.load_pem_x509_certificate(files["tls.crt"])
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    svc = mwc["webhooks"][0]["clientConfig"]["service"]
    assert f"{svc['name']}.{svc['namespace']}.svc" in sans
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(files["tls.key"], None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    [patch] = [ln for ln in lines if ln.startswith("ARGS patch mutatingwebhookconfiguration")]
    ops = json.loads(patch.split("-p ", 1)[1])
    assert base64.b64decode(ops[0]["value"]) == files["ca.crt"]
    assert mwc["metadata"]["name"] in patch
