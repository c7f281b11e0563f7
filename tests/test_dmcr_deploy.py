"""deploy/dmcr: valid Kubernetes objects, a registry config that agrees with the
hook service, key material from make-secrets.sh that really works, and the
garbage collector doing what docs/dmcr.md says.

The shipped ``config.yml`` is run by the real ``docker-registry`` with only
its paths and addresses rewritten for this machine: TLS with the script's CA,
token auth against the real hook app signing with the script's token key.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import requests
import yaml

from devstack.registry import RegistryServer, free_port
from lib import credentials, registry_token
from lib.config import Config
from tests.support.dmcr import DmcrServer

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "dmcr"
K8S_VERSION = "1.33.0"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def objects() -> list[dict[str, Any]]:
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    out = []
    for res in kust["resources"]:
        out += [d for d in yaml.safe_load_all((DEPLOY / res).read_text()) if d]
    return out


def by_kind(kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects() if o["kind"] == kind and o["metadata"]["name"] == name)


def registry_config() -> dict[str, Any]:
    return yaml.safe_load(by_kind("ConfigMap", "dmcr-config")["data"]["config.yml"])


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def mounts(obj: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """mountPath -> (volume name, volume source) of the first container."""
    spec = pod_spec(obj)
    vols = {v["name"]: v for v in spec["volumes"]}
    return {m["mountPath"]: (m["name"], vols[m["name"]]) for m in spec["containers"][0]["volumeMounts"]}


def file_source(obj: dict[str, Any], path: str) -> tuple[str, str]:
    """``(secret/configmap name, key)`` that provides the file at ``path`` in the pod."""
    for mount_path, (_, vol) in mounts(obj).items():
        if path.startswith(mount_path + "/"):
            rel = path[len(mount_path) + 1 :]
            src = vol.get("secret") or vol.get("configMap")
            assert src is not None, f"{path} is on a {vol}"
            name = src.get("secretName") or src.get("name")
            items = {i["path"]: i["key"] for i in src.get("items", [])}
            return name, items.get(rel, rel)
    raise AssertionError(f"no volume provides {path}")


# --- static checks ----------------------------------------------------------------------


@pytest.mark.parametrize("obj", objects(), ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_objects_validate_against_kubernetes_schemas(obj):
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_registry_config_agrees_with_the_hook_service():
    cfg, defaults = registry_config(), Config()
    token = cfg["auth"]["token"]
    assert token["realm"] == defaults.hook_service_url + "/registry/token"
    assert token["service"] == defaults.token_service
    assert token["issuer"] == defaults.token_issuer
    deployment = by_kind("Deployment", "dmcr")
    # the bundle comes from the signing Secret, without the private key
    assert file_source(deployment, token["rootcertbundle"]) == ("dmcr-token-signer", "bundle.crt")
    assert all(
        i["key"] != "tls.key"
        for _, (_, v) in mounts(deployment).items()
        if v.get("secret", {}).get("secretName") == "dmcr-token-signer"
        for i in v["secret"]["items"]
    )
    # TLS inside the cluster, from the serving-certificate Secret
    assert file_source(deployment, cfg["http"]["tls"]["certificate"]) == ("dmcr-tls", "tls.crt")
    assert file_source(deployment, cfg["http"]["tls"]["key"]) == ("dmcr-tls", "tls.key")
    # storage on the PVC, deletes on (cleanup), no blob descriptor cache (GC safety)
    root = cfg["storage"]["filesystem"]["rootdirectory"]
    assert mounts(deployment)[root][1]["persistentVolumeClaim"]["claimName"] == "dmcr-storage"
    assert cfg["storage"]["delete"]["enabled"] is True
    assert "cache" not in cfg["storage"]
    # the Service reaches the TLS port; probes use the debug server's health endpoint
    svc = by_kind("Service", "dmcr")
    port = svc["spec"]["ports"][0]
    container = pod_spec(deployment)["containers"][0]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named[port["targetPort"]] == int(cfg["http"]["addr"].rsplit(":", 1)[1])
    assert named[container["readinessProbe"]["httpGet"]["port"]] == int(cfg["http"]["debug"]["addr"].rsplit(":", 1)[1])
    assert Config().registry.endswith(f":{port['port']}")


def test_gc_cronjob_shares_config_and_storage_and_keeps_untagged_manifests():
    gc, deployment = by_kind("CronJob", "dmcr-gc"), by_kind("Deployment", "dmcr")
    container = pod_spec(gc)["containers"][0]
    assert container["image"].startswith("ghcr.io/ai-models/worker:")  # the module's GC (jobs/gc.py)
    assert container["command"][:4] == ["python", "-m", "jobs", "gc"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env["AI_MODELS_REGISTRY_GC_WINDOW"] == "03:00-03:30"
    config_path = container["command"][container["command"].index("--config") + 1]
    assert file_source(gc, config_path) == ("dmcr-config", Path(config_path).name)
    root = registry_config()["storage"]["filesystem"]["rootdirectory"]
    assert mounts(gc)[root][1]["persistentVolumeClaim"]["claimName"] == "dmcr-storage"
    # runs on the registry's node (ReadWriteOnce) and never twice at once
    term = pod_spec(gc)["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert gc["spec"]["concurrencyPolicy"] == "Forbid"


def test_gc_runs_entirely_inside_the_read_only_window():
    """Start + deadline fit the documented window, after the last push token expired."""
    gc = by_kind("CronJob", "dmcr-gc")
    minute, hour = (int(x) for x in gc["spec"]["schedule"].split()[:2])
    assert gc["spec"]["timeZone"] == "Etc/UTC"
    window = "03:00-03:30"
    assert window in (DEPLOY / "gc-cronjob.yaml").read_text()
    assert window in (ROOT / "docs" / "dmcr.md").read_text()
    day = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    start = day.replace(hour=hour, minute=minute).timestamp()
    latest_start = start + gc["spec"]["startingDeadlineSeconds"]
    end = latest_start + gc["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"]
    opened = day.replace(hour=3, minute=0).timestamp()
    # the last push token was issued just before the window: ttl + 60 s registry leeway
    assert start >= opened + registry_token.DEFAULT_TTL_SECONDS + 60
    assert registry_token.read_only_remaining(window, start) is not None
    assert registry_token.read_only_remaining(window, end - 1) is not None


# --- the shipped config, run for real ---------------------------------------------------


class ShippedConfigRegistry(RegistryServer):
    """``docker-registry`` running deploy/dmcr's config.yml with local paths."""

    rewritten: dict[str, Any]

    def config(self) -> dict[str, Any]:
        return self.rewritten


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dmcr-secrets")
    env = {**os.environ, "DMCR_HOSTS": "localhost,127.0.0.1", "NAMESPACE": "ai-test"}
    subprocess.run(["sh", str(DEPLOY / "make-secrets.sh"), str(out)], check=True, env=env, capture_output=True)
    return out


def test_make_secrets_renders_valid_objects(secrets_dir):
    docs = [d for d in yaml.safe_load_all((secrets_dir / "secrets.yaml").read_text()) if d]
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} == {
        ("Secret", "dmcr-tls"), ("Secret", "dmcr-token-signer"), ("Secret", "dmcr-http-secret"), ("ConfigMap", "dmcr-ca"),
        ("Secret", "ai-models-signing-key"),
    }
    for d in docs:
        assert d["metadata"]["namespace"] == "ai-test"
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    signer = next(d for d in docs if d["metadata"]["name"] == "dmcr-token-signer")
    key = base64.b64decode(signer["data"]["tls.key"])
    bundle = base64.b64decode(signer["data"]["bundle.crt"])
    pub = registry_token.load_signing_key(key).public_key()
    assert registry_token.certificate_key_ids(bundle) == [registry_token.key_id(pub)]


def test_make_secrets_rotation_keeps_old_key_trusted_until_finished(tmp_path):
    def run(*args: str) -> None:
        subprocess.run(["sh", str(DEPLOY / "make-secrets.sh"), *args, str(tmp_path)], check=True, capture_output=True)

    def kid() -> str:
        return registry_token.key_id(registry_token.load_signing_key((tmp_path / "token.key").read_bytes()).public_key())

    run()
    old = kid()
    ca = (tmp_path / "ca.crt").read_bytes()
    run("--rotate-token-key")
    new = kid()
    assert new != old
    assert registry_token.certificate_key_ids((tmp_path / "bundle.crt").read_bytes()) == [new, old]
    run("--finish-rotation")
    assert registry_token.certificate_key_ids((tmp_path / "bundle.crt").read_bytes()) == [new]
    assert (tmp_path / "ca.crt").read_bytes() == ca  # re-runs keep the rest


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, secrets_dir):
    """The hook app (token key from make-secrets.sh) + the shipped registry config over TLS."""
    work = tmp_path_factory.mktemp("dmcr-shipped")
    hooks = DmcrServer(work / "hooks", key_pem=(secrets_dir / "token.key").read_bytes()).start()
    cfg = registry_config()
    port, debug = free_port(), free_port()
    cfg["http"]["addr"] = f"127.0.0.1:{port}"
    cfg["http"]["debug"]["addr"] = f"127.0.0.1:{debug}"
    cfg["http"]["tls"].update(certificate=str(secrets_dir / "tls.crt"), key=str(secrets_dir / "tls.key"))
    cfg["http"]["secret"] = (secrets_dir / "http-secret").read_text()
    cfg["storage"]["filesystem"]["rootdirectory"] = str(work / "storage")
    cfg["auth"]["token"].update(realm=hooks.token_url, rootcertbundle=str(secrets_dir / "bundle.crt"))
    reg = ShippedConfigRegistry(
        work / "registry", port=port, tls_cert=secrets_dir / "tls.crt", tls_key=secrets_dir / "tls.key",
        tls_cert_ca=secrets_dir / "ca.crt",
    )
    reg.rewritten = cfg
    reg.start()
    yield hooks, reg, debug
    reg.stop()
    hooks.stop()


def _bearer(hooks: DmcrServer, cred: tuple[str, str], scope: str) -> dict[str, str]:
    r = hooks.token(*cred, [scope])
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _push(reg: RegistryServer, headers: dict[str, str], name: str, data: bytes) -> str:
    ca = str(reg.tls_cert_ca)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(f"{reg.url}/v2/{name}/blobs/uploads/", headers=headers, verify=ca, timeout=10)
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    r = requests.put(loc, params={"digest": digest}, data=data, headers=headers, verify=ca, timeout=10)
    assert r.status_code == 201, r.text
    return digest


def _manifest(config: str, layer: str, size: int) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.cncf.model.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": layer, "size": size}],
    }).encode()


def test_shipped_config_serves_tls_token_auth_and_health(shipped):
    hooks, reg, debug = shipped
    ca = str(reg.tls_cert_ca)
    assert reg.url.startswith("https://")
    r = requests.get(f"{reg.url}/v2/", verify=ca, timeout=5)
    assert r.status_code == 401 and f'realm="{hooks.token_url}"' in r.headers["WWW-Authenticate"]
    name = f"ai-models/catalog/namespaced/ns/m/{uuid.uuid4().hex}"
    h = _bearer(hooks, hooks.publish_credential(name), f"repository:{name}:pull,push")
    digest = _push(reg, h, name, b"weights over tls")
    pull = _bearer(hooks, hooks.pull_credential([name]), f"repository:{name}:pull")
    assert requests.get(f"{reg.url}/v2/{name}/blobs/{digest}", headers=pull, verify=ca, timeout=5).content == (
        b"weights over tls"
    )
    # the probes' endpoint and the metrics endpoint answer on the debug address
    assert requests.get(f"http://127.0.0.1:{debug}/debug/health", timeout=5).status_code == 200
    assert "registry_" in requests.get(f"http://127.0.0.1:{debug}/metrics", timeout=5).text
    # and the Docker config a worker gets names this registry
    auth = json.loads(credentials.dockerconfigjson(reg.host, *hooks.pull_credential([name])))
    assert list(auth["auths"]) == [reg.host]


def test_garbage_collect_removes_blobs_of_deleted_manifests_only(shipped, tmp_path):
    """GC as the CronJob runs it: an artifact pushed by digest only (untagged) keeps its
    blobs; the blobs of a manifest deleted by cleanup go."""
    hooks, reg, _ = shipped
    ca = str(reg.tls_cert_ca)
    keep, drop = (f"ai-models/catalog/namespaced/ns/{n}/{uuid.uuid4().hex}" for n in ("keep", "drop"))
    layers = {}
    for name in (keep, drop):
        h = _bearer(hooks, hooks.publish_credential(name), f"repository:{name}:pull,push")
        cfg = _push(reg, h, name, b"{}")
        data = uuid.uuid4().bytes * 100
        layers[name] = _push(reg, h, name, data)
        body = _manifest(cfg, layers[name], len(data))
        ref = "sha256:" + hashlib.sha256(body).hexdigest() if name == keep else "v1"
        r = requests.put(f"{reg.url}/v2/{name}/manifests/{ref}", data=body, verify=ca, timeout=5,
                         headers={**h, "Content-Type": MANIFEST})
        assert r.status_code == 201, r.text
        layers[name + "@"] = r.headers["Docker-Content-Digest"]
    h = _bearer(hooks, hooks.cleanup_credential(drop), f"repository:{drop}:delete")
    # what the cleanup Job does: unlink the manifest's blobs, delete the manifest
    r = requests.delete(f"{reg.url}/v2/{drop}/blobs/{layers[drop]}", headers=h, verify=ca, timeout=5)
    assert r.status_code == 202
    r = requests.delete(f"{reg.url}/v2/{drop}/manifests/{layers[drop + '@']}", headers=h, verify=ca, timeout=5)
    assert r.status_code == 202

    cfg_file = reg.workdir / "config.yml"  # the shipped config as this registry runs it
    gc = by_kind("CronJob", "dmcr-gc")
    command = pod_spec(gc)["containers"][0]["command"]
    command = [sys.executable, *command[1:]]
    command[command.index("--config") + 1] = str(cfg_file)
    command[command.index("--result-file") + 1] = str(tmp_path / "gc.json")
    # outside 03:00-03:30 here: no window, the test runs nothing concurrently
    done = subprocess.run([*command, "--window", ""], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr

    def blob_data(d: str) -> Path:
        root = Path(reg.rewritten["storage"]["filesystem"]["rootdirectory"])
        return root / "docker/registry/v2/blobs/sha256" / d[7:9] / d[7:] / "data"

    assert blob_data(layers[keep]).exists()
    assert not blob_data(layers[drop]).exists()
    pull = _bearer(hooks, hooks.pull_credential([keep]), f"repository:{keep}:pull")
    r = requests.get(f"{reg.url}/v2/{keep}/manifests/{layers[keep + '@']}", verify=ca, timeout=5,
                     headers={**pull, "Accept": MANIFEST})
    assert r.status_code == 200
