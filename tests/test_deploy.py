"""The install manifests (``kubectl apply -k deploy/``): rendered, validated and wired together offline.

``render()`` walks the kustomization tree the way kustomize does for the
features we use (``resources`` files and directories, ``namespace``,
``labels``, ``configMapGenerator`` with ``envs``); when a ``kubectl`` binary
is present its own ``kubectl kustomize`` output is compared too. Every object
is validated (Kubernetes 1.33 strict, our CRDs, Metacontroller's schema), and
the cross-references a cluster would only reveal at run time are checked:
Services select pods and target named ports, Metacontroller and the webhook
reach a port with the right protocol, mounted files are the ones the
configuration names, images are pinned, every pod is restricted.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from lib.config import Config
from tests.support import crd_validate as cv
from tests.test_manifests import _METACONTROLLER_SCHEMAS
from tests.test_security_pods import pod_specs, restricted_violations

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
Obj = dict[str, Any]

CLUSTER_SCOPED = {
    "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "CompositeController",
    "DecoratorController", "PriorityClass",
}


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def render(directory: Path, seen: set[Path] | None = None) -> Iterator[tuple[Path, Obj]]:
    """(source file, object) for every object ``kubectl kustomize directory`` would emit."""
    seen = set() if seen is None else seen
    kfile = directory / "kustomization.yaml"
    seen.add(kfile)
    k = yaml.safe_load(kfile.read_text())
    out: list[tuple[Path, Obj]] = []
    for entry in k.get("resources", []):
        target = (directory / entry).resolve()
        assert target.exists(), f"{kfile}: {entry} does not exist"
        if target.is_dir():
            out.extend(render(target, seen))
        else:
            assert target.is_relative_to(directory.resolve()), f"{kfile}: {entry} is a file outside the root"
            seen.add(target)
            out.extend((target, d) for d in yaml.safe_load_all(target.read_text()) if d)
    for gen in k.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for env in gen.get("envs", []):
            seen.add((directory / env).resolve())
            data.update(read_env_file(directory / env))
        out.append((kfile, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]},
                            "data": data}))
    for path, obj in out:
        md = obj.setdefault("metadata", {})
        if k.get("namespace") and obj["kind"] not in CLUSTER_SCOPED:
            md["namespace"] = k["namespace"]
        for label in k.get("labels", []):
            md.setdefault("labels", {}).update(label["pairs"])
        yield path, obj


RENDERED: list[tuple[Path, Obj]] = list(render(DEPLOY))
OBJECTS = [o for _, o in RENDERED]


def ident(o: Obj) -> str:
    ns = o["metadata"].get("namespace")
    return f"{o['kind']}/{ns + '/' if ns else ''}{o['metadata']['name']}"


def get(kind: str, name: str) -> Obj:
    [found] = [o for o in OBJECTS if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


# ---------------------------------------------------------------- the tree


def test_the_tree_has_every_part_of_the_module():
    kinds = {(o["kind"], o["metadata"]["name"]) for o in OBJECTS}
    assert ("Namespace", "d8-ai-models") in kinds
    assert {("CustomResourceDefinition", f"{p}.ai.deckhouse.io") for p in
            ("models", "clustermodels", "modelcatalogsources")} <= kinds
    assert {n for k, n in kinds if k in ("CompositeController", "DecoratorController")} == {
        "ai-models-model", "ai-models-clustermodel", "ai-models-modelcatalogsource",
        "ai-models-workloads"}
    for kind, name in [("Deployment", "ai-models-hooks"), ("Service", "ai-models-hooks"),
                       ("PodDisruptionBudget", "ai-models-hooks"), ("ServiceAccount", "ai-models-hooks"),
                       ("Deployment", "dmcr"), ("Service", "dmcr"), ("CronJob", "dmcr-gc"),
                       ("MutatingWebhookConfiguration", "ai-models-workloads"),
                       ("NetworkPolicy", "default-deny-ingress")]:
        assert (kind, name) in kinds, (kind, name)
    assert len({ident(o) for o in OBJECTS}) == len(OBJECTS), "an object is emitted twice"


# Optional kustomizations applied on their own (docs/install.md), rendered here like the tree.
OPTIONAL = ("upload-ingress", "dmcr/s3", "monitoring", "node-cache")


def test_every_manifest_under_deploy_is_part_of_the_tree():
    seen: set[Path] = set()
    list(render(DEPLOY, seen))
    for extra in OPTIONAL:
        assert list(render(DEPLOY / extra, seen)), extra
    shipped = {p.resolve() for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml", ".env")}
    assert shipped - seen == set(), "manifests no kustomization includes (dead files or a missing entry)"
    for base in ("crds", "metacontroller"):
        files = {p.resolve() for p in (ROOT / base).glob("*.yaml")}
        assert files <= seen, f"{base}/: every file is in its kustomization.yaml"


# The one exception: the API server keeps a cluster-scoped object's Events in `default`, so
# module workers may create Events there (deploy/rbac/worker-events.yaml, docs/observability.md).
OUTSIDE_THE_MODULE_NAMESPACE = {("RoleBinding", "default", "ai-models:worker-events")}


def test_namespaced_objects_live_in_the_module_namespace():
    for o in OBJECTS:
        if o["kind"] not in CLUSTER_SCOPED:
            where = (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
            assert where in OUTSIDE_THE_MODULE_NAMESPACE or where[1] == "d8-ai-models", ident(o)
        assert o["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "ai-models", ident(o)


@pytest.mark.parametrize("obj", OBJECTS, ids=ident)
def test_every_rendered_object_validates(obj):
    group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
    if group == "metacontroller.k8s.io":
        jsonschema.validate(obj, _METACONTROLLER_SCHEMAS[obj["kind"]])
    elif group == "cert-manager.io":
        # No schema ships for cert-manager; the fields we use are checked in test_webhook_deploy.
        assert obj["kind"] in ("Issuer", "Certificate")
    else:
        kubernetes_validate.validate(obj, "1.33.0", strict=True)
        if obj["kind"] == "CustomResourceDefinition":
            assert cv.check_crd(obj) == []


def _kubectl() -> str | None:
    path = shutil.which("kubectl")
    if not path:
        return None
    probe = subprocess.run([path, "kustomize", "--help"], capture_output=True, timeout=30)
    return path if probe.returncode == 0 else None


@pytest.mark.skipif(_kubectl() is None, reason="no kubectl binary with kustomize here")
def test_kubectl_kustomize_renders_the_same_objects():
    proc = subprocess.run([_kubectl(), "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    theirs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    # configMapGenerator appends a content hash to the name and to every reference.
    hashed = {o["metadata"]["name"] for o in theirs if o["kind"] == "ConfigMap"} - {
        o["metadata"]["name"] for o in OBJECTS if o["kind"] == "ConfigMap"}

    def strip(name: str) -> str:
        for h in hashed:
            if name == h:
                return h.rsplit("-", 1)[0]
        return name

    assert sorted(ident({**o, "metadata": {**o["metadata"], "name": strip(o["metadata"]["name"])}})
                  for o in theirs) == sorted(ident(o) for o in OBJECTS)
    dep = next(o for o in theirs if o["kind"] == "Deployment" and o["metadata"]["name"] == "ai-models-hooks")
    refs = {e["configMapRef"]["name"] for c in dep["spec"]["template"]["spec"]["containers"]
            for e in c.get("envFrom", [])}
    assert refs and refs <= hashed, "the Deployment refers to the generated (hashed) ConfigMap"


# ---------------------------------------------------------------- pods: images, security, probes


WORKLOADS = [o for o in OBJECTS if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")]


@pytest.mark.parametrize("obj", WORKLOADS, ids=ident)
def test_every_pod_is_restricted(obj):
    [spec] = pod_specs(obj)
    assert restricted_violations(spec) == []
    # One pod in deploy/ reads the API: the sweep lists Models and ClusterModels (get/list, nothing else).
    reads_api = ident(obj) == "CronJob/d8-ai-models/ai-models-sweep"
    assert spec.get("automountServiceAccountToken") is reads_api, "no other pod in deploy/ calls the Kubernetes API"
    if reads_api:
        role = get("ClusterRole", "ai-models:sweep")
        assert role["rules"] == [{"apiGroups": ["ai.deckhouse.io"], "resources": ["models", "clustermodels"],
                                  "verbs": ["get", "list"]}]
        # ... and records DMCR's usage in one ConfigMap (get/update on that name; it is shipped, so no create).
        usage = get("Role", "ai-models:sweep-usage")
        assert usage["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                                   "resourceNames": ["ai-models-dmcr-usage"], "verbs": ["get", "update"]}]
        assert get("ConfigMap", "ai-models-dmcr-usage").get("data") is None  # re-applying keeps the record


def test_every_service_account_may_read_the_usage_record_and_nothing_else():
    """Workers run under per-Model service accounts in any namespace: the capacity check reads one
    ConfigMap (lib/capacity.py); the binding to every service account grants get on that name only."""
    role = get("Role", "ai-models:dmcr-usage-reader")
    assert role["metadata"]["namespace"] == "d8-ai-models"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                              "resourceNames": ["ai-models-dmcr-usage"], "verbs": ["get"]}]
    binding = get("RoleBinding", "ai-models:dmcr-usage-reader")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "ai-models:dmcr-usage-reader"}
    assert binding["subjects"] == [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                                    "name": "system:serviceaccounts"}]


def _pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and bool(re.match(r"v?[0-9]", tag))


@pytest.mark.parametrize("obj", WORKLOADS, ids=ident)
def test_every_image_is_pinned(obj):
    for spec in pod_specs(obj):
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            assert _pinned(c["image"]), c["image"]
            assert c.get("imagePullPolicy", "IfNotPresent") == "IfNotPresent"


def test_the_worker_image_the_hooks_emit_is_pinned():
    env = get("ConfigMap", "ai-models-hooks-config")["data"]
    assert _pinned(env["AI_MODELS_WORKER_IMAGE"])


def test_pinned_check_refuses_floating_tags():
    assert not _pinned("ghcr.io/ai-models/hooks:latest")
    assert not _pinned("ghcr.io/ai-models/hooks")
    assert not _pinned("localhost:5000/hooks")
    assert _pinned("localhost:5000/hooks:0.1.0") and _pinned("x/y@sha256:" + "a" * 64)


def test_the_namespace_enforces_the_restricted_standard():
    labels = get("Namespace", "d8-ai-models")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


HOOKS = get("Deployment", "ai-models-hooks")
HOOKS_POD = HOOKS["spec"]["template"]["spec"]
CONTAINERS = {c["name"]: c for c in HOOKS_POD["containers"]}


def test_hook_service_is_highly_available():
    assert HOOKS["spec"]["replicas"] >= 2
    assert HOOKS["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = get("PodDisruptionBudget", "ai-models-hooks")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= HOOKS["spec"]["template"]["metadata"]["labels"].items()
    assert 1 <= pdb["spec"]["minAvailable"] < HOOKS["spec"]["replicas"], "a drain must be possible"
    assert HOOKS_POD["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_hook_containers_have_probes_and_resources(name):
    c = CONTAINERS[name]
    ports = {p["name"] for p in c["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        get_ = c[probe]["httpGet"]
        assert get_["path"] == "/healthz" and get_["port"] in ports
        assert get_.get("scheme", "HTTP") == ("HTTPS" if "--certfile" in c["command"] else "HTTP")
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]


def _listen_port(c: Obj) -> int:
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    return int(env["AI_MODELS_LISTEN"].rsplit(":", 1)[1])


def _service_target(service: Obj, port: int) -> Obj:
    """The container a Service port leads to (by the pod's named ports)."""
    [sp] = [p for p in service["spec"]["ports"] if p["port"] == port]
    for c in HOOKS_POD["containers"]:
        for cp in c.get("ports", []):
            if sp["targetPort"] in (cp["name"], cp["containerPort"]):
                assert _listen_port(c) == cp["containerPort"], "gunicorn binds the port the pod declares"
                return c
    raise AssertionError(f"{service['metadata']['name']}:{port} targets no container port")


def test_service_selects_the_hook_pods():
    svc = get("Service", "ai-models-hooks")
    assert svc["spec"]["selector"].items() <= HOOKS["spec"]["template"]["metadata"]["labels"].items()


def test_metacontroller_reaches_a_listener_of_its_protocol():
    svc = get("Service", "ai-models-hooks")
    for ctl in (o for o in OBJECTS if o["apiVersion"].startswith("metacontroller.k8s.io/")):
        for hook in ctl["spec"]["hooks"].values():
            ref = hook["webhook"]["service"]
            assert (ref["name"], ref["namespace"]) == (svc["metadata"]["name"], svc["metadata"]["namespace"])
            c = _service_target(svc, ref["port"])
            assert "metacontroller" in _routes(c)
            tls = "--certfile" in c["command"]
            assert ref.get("protocol", "http") == ("https" if tls else "http")


def test_api_server_reaches_the_tls_listener_with_the_injected_certificate():
    svc = get("Service", "ai-models-hooks")
    mwc = get("MutatingWebhookConfiguration", "ai-models-workloads")
    for hook in mwc["webhooks"]:
        ref = hook["clientConfig"]["service"]
        assert (ref["name"], ref["namespace"]) == (svc["metadata"]["name"], svc["metadata"]["namespace"])
        c = _service_target(svc, ref.get("port", 443))
        assert "webhook" in _routes(c)
        cmd = c["command"]
        assert "--certfile" in cmd and "--keyfile" in cmd, "the API server calls webhooks over HTTPS only"
        cert_secret, _ = _file_source(c, cmd[cmd.index("--certfile") + 1])
        key_secret, key = _file_source(c, cmd[cmd.index("--keyfile") + 1])
        assert cert_secret == key_secret and key == "tls.key"
        # The Secret cert-manager fills and whose CA it injects into caBundle.
        serving = get("Certificate", "ai-models-hooks-tls")
        assert serving["spec"]["secretName"] == cert_secret
        assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
            f"{serving['metadata']['namespace']}/{serving['metadata']['name']}"
        assert f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc" in serving["spec"]["dnsNames"]
    script = (DEPLOY / "webhook" / "bootstrap-self-signed.sh").read_text()
    assert "create secret generic ai-models-hooks-tls" in script  # the no-cert-manager path writes the same Secret


def _file_source(c: Obj, path: str) -> tuple[str, str]:
    """(Secret name, key) a file path in container ``c`` comes from."""
    volumes = {v["name"]: v for v in HOOKS_POD["volumes"]}
    for m in c.get("volumeMounts", []):
        prefix = m["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            rel = path[len(prefix):]
            secret = volumes[m["name"]]["secret"]
            items = {i["path"]: i["key"] for i in secret.get("items", [])} or None
            key = items[rel] if items else rel
            return secret["secretName"], key
    raise AssertionError(f"{path} is on no mounted volume of {c['name']}")


# ---------------------------------------------------------------- configuration


CONFIG = get("ConfigMap", "ai-models-hooks-config")["data"]


def _env_names_read() -> set[str]:
    names = set()
    for f in (ROOT / "lib" / "config.py", ROOT / "hooks" / "gunicorn_conf.py", ROOT / "hooks" / "app.py"):
        names |= set(re.findall(r'"(AI_MODELS_[A-Z0-9_]+)"', f.read_text()))
    return names


def _container_env(c: Obj) -> dict[str, str]:
    """What the container's process sees: the ConfigMap, then its own ``env`` on top."""
    return {**CONFIG, **{e["name"]: e["value"] for e in c.get("env", [])}}


def _routes(c: Obj) -> set[str]:
    return set(_container_env(c).get("AI_MODELS_ROUTES", "metacontroller,webhook,token").split(","))


def test_every_setting_in_the_manifest_is_one_the_service_reads():
    read = _env_names_read()
    for c in HOOKS_POD["containers"]:
        assert [e["configMapRef"]["name"] for e in c["envFrom"]] == ["ai-models-hooks-config"]
        for e in c.get("env", []):
            assert e["name"] in read, e["name"]
    assert set(CONFIG) <= read, set(CONFIG) - read


def test_every_setting_the_service_reads_is_set_or_documented():
    install = (ROOT / "docs" / "install.md").read_text()
    for name in _env_names_read():
        assert f"`{name}`" in install, f"{name} is missing from the table in docs/install.md"


# Which key each route group needs: Metacontroller's hooks derive credentials (signing key); the token
# endpoint verifies them (signing key) and signs tokens (token key); the webhook needs neither.
KEYS_NEEDED = {
    "metacontroller": {"AI_MODELS_SIGNING_KEY_FILE"},
    "token": {"AI_MODELS_SIGNING_KEY_FILE", "AI_MODELS_TOKEN_KEY_FILE"},
    "webhook": set(),
}
KEY_SOURCES = {
    "AI_MODELS_SIGNING_KEY_FILE": ("ai-models-signing-key", "key"),
    # make-secrets.sh puts the token signing key into dmcr-token-signer/tls.key (docs/dmcr.md).
    "AI_MODELS_TOKEN_KEY_FILE": ("dmcr-token-signer", "tls.key"),
}


@pytest.mark.parametrize("container", sorted(CONTAINERS))
def test_each_listener_holds_exactly_the_keys_its_routes_need(container):
    c = CONTAINERS[container]
    env = _container_env(c)
    needed = set().union(*(KEYS_NEEDED[r] for r in _routes(c)))
    assert {k for k in KEY_SOURCES if env.get(k)} == needed
    for var in needed:
        assert _file_source(c, env[var]) == KEY_SOURCES[var]
    volumes = {v["name"]: v for v in HOOKS_POD["volumes"]}
    mounted = {volumes[m["name"]]["secret"]["secretName"] for m in c["volumeMounts"]
               if m["mountPath"] != "/tmp" and "secret" in volumes[m["name"]]}
    allowed = {KEY_SOURCES[v][0] for v in needed} | ({"ai-models-hooks-tls"} if "--certfile" in c["command"] else set())
    assert mounted <= allowed, f"{container} mounts Secrets it does not use: {mounted - allowed}"
    assert all(m.get("readOnly") for m in c["volumeMounts"] if m["mountPath"] != "/tmp")


def test_the_configuration_loads_and_agrees_with_dmcr(tmp_path):
    env = _container_env(CONTAINERS["token"])
    (tmp_path / "signing").mkdir()
    (tmp_path / "signing" / "key").write_bytes(b"signing-key-material-0123456789abcdef\n")
    (tmp_path / "tls.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    env["AI_MODELS_SIGNING_KEY_FILE"] = str(tmp_path / "signing" / "key")
    env["AI_MODELS_SIGNING_KEYS_DIR"] = str(tmp_path / "signing")
    env["AI_MODELS_TOKEN_KEY_FILE"] = str(tmp_path / "tls.key")
    cfg = Config.from_env(env)
    assert cfg.signing_key == b"signing-key-material-0123456789abcdef" and Config().signing_key is None
    assert cfg.registry == "dmcr.d8-ai-models.svc:5000" and not cfg.registry_insecure
    assert cfg.registry_gc_window == "03:00-03:30"
    assert cfg.namespace == get("Namespace", "d8-ai-models")["metadata"]["name"]
    # DMCR is the Service the hooks name, on its port.
    host, port = cfg.registry.rsplit(":", 1)
    dmcr = get("Service", "dmcr")
    assert host == f"{dmcr['metadata']['name']}.{dmcr['metadata']['namespace']}.svc"
    assert int(port) in {p["port"] for p in dmcr["spec"]["ports"]}
    # DMCR's token realm is the hook service's plain-HTTP listener; service and issuer agree.
    registry_config = yaml.safe_load(get("ConfigMap", "dmcr-config")["data"]["config.yml"])
    token = registry_config["auth"]["token"]
    assert token["realm"] == cfg.hook_service_url + "/registry/token"
    assert (token["service"], token["issuer"]) == (cfg.token_service, cfg.token_issuer)
    url = urlsplit(cfg.hook_service_url)
    svc = get("Service", "ai-models-hooks")
    assert url.hostname == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc"
    c = _service_target(svc, url.port)
    assert ("--certfile" in c["command"]) == (url.scheme == "https")
    assert "token" in _routes(c)
    # The GC window the hooks enforce is the one the CronJob runs in.
    gc = get("CronJob", "dmcr-gc")
    minute, hour = gc["spec"]["schedule"].split()[:2]
    start, end = cfg.registry_gc_window.split("-")
    assert start <= f"{int(hour):02d}:{int(minute):02d}" < end


def test_the_hook_service_has_no_api_access():
    """No token in the pod, no binding anywhere in the tree that names its ServiceAccount."""
    sa = get("ServiceAccount", "ai-models-hooks")
    assert sa["automountServiceAccountToken"] is False
    assert HOOKS_POD["serviceAccountName"] == "ai-models-hooks"
    assert HOOKS_POD["automountServiceAccountToken"] is False
    for o in OBJECTS:
        if o["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            for s in o.get("subjects", []):
                assert not (s["kind"] == "ServiceAccount" and s["name"] == "ai-models-hooks"), ident(o)


# ---------------------------------------------------------------- network policies


POLICIES = [o for o in OBJECTS if o["kind"] == "NetworkPolicy"]
POD_TEMPLATES = [(ident(o), o["spec"]["template"]["metadata"]["labels"] if o["kind"] != "CronJob" else
                  o["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"], spec)
                 for o in WORKLOADS for spec in pod_specs(o)]


def _selected(policy: Obj) -> list[tuple[str, dict, Obj]]:
    want = policy["spec"]["podSelector"].get("matchLabels", {})
    return [t for t in POD_TEMPLATES if want.items() <= t[1].items()]


def _allowed_ports(labels: dict) -> set[str | int] | None:
    """Ports some policy lets in for pods with these labels (None: every port)."""
    ports: set[str | int] = set()
    for p in POLICIES:
        if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items():
            for rule in p["spec"].get("ingress", []):
                if "ports" not in rule:
                    return None
                ports |= {x["port"] for x in rule["ports"]}
    return ports


def test_default_deny_covers_every_pod():
    deny = get("NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_policies_select_pods_and_name_their_ports():
    for p in POLICIES:
        if p["metadata"]["name"] in ("default-deny-ingress", "ai-models-upload-server"):
            continue
        selected = _selected(p)
        assert selected, f"{p['metadata']['name']} selects no pod"
        for _, _, spec in selected:
            names = {cp.get("name") for c in spec["containers"] for cp in c.get("ports", [])}
            for rule in p["spec"]["ingress"]:
                for port in rule["ports"]:
                    assert port["port"] in names, (p["metadata"]["name"], port)


def test_service_ports_are_reachable_and_nothing_else():
    hooks_labels = HOOKS["spec"]["template"]["metadata"]["labels"]
    assert _allowed_ports(hooks_labels) == {"http", "hooks", "webhook"}
    dmcr = get("Deployment", "dmcr")["spec"]["template"]["metadata"]["labels"]
    assert _allowed_ports(dmcr) == {"https"}, "the debug port (metrics, health) stays closed"
    gc = get("CronJob", "dmcr-gc")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert _allowed_ports(gc) == set(), "the GC Job accepts no connection"


def test_dmcr_is_open_to_pods_not_to_the_outside():
    for rule in get("NetworkPolicy", "dmcr")["spec"]["ingress"]:
        assert rule["from"] == [{"namespaceSelector": {}}]


def _port_rules() -> dict[str, Obj]:
    rules = get("NetworkPolicy", "ai-models-hooks")["spec"]["ingress"]
    out = {}
    for r in rules:
        [port] = r["ports"]
        out[port["port"]] = r
    return out


def test_only_metacontroller_reaches_the_listener_that_derives_credentials():
    rules = _port_rules()
    for c in HOOKS_POD["containers"]:
        [port] = c["ports"]
        peers = rules[port["name"]].get("from")
        only_metacontroller = peers == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "metacontroller"}}}]
        if "metacontroller" in _routes(c):
            assert only_metacontroller, f"{c['name']} serves Metacontroller's hooks to {peers or 'everyone'}"
        if "token" in _routes(c):
            assert peers == [{"namespaceSelector": {}}], "workers and init containers of every namespace"
        if "webhook" in _routes(c):
            # The API server's addresses only (a configurable ipBlock, docs/install.md).
            assert peers and all(set(p) == {"ipBlock"} for p in peers), "the API server's addresses only"
    # The namespace Metacontroller's own ServiceAccount lives in (rbac/metacontroller.yaml).
    [subject] = get("ClusterRoleBinding", "ai-models:metacontroller")["subjects"]
    assert subject["namespace"] == "metacontroller"


def test_listeners_serve_disjoint_route_groups():
    groups = [_routes(c) for c in HOOKS_POD["containers"]]
    assert sorted(g for gs in groups for g in gs) == ["metacontroller", "token", "webhook"]


def _supports_routes() -> bool:
    import inspect

    from hooks.app import create_app

    return "routes" in inspect.signature(create_app).parameters


@pytest.mark.skipif(not _supports_routes(), reason="hooks/app.py does not split routes per listener yet")
@pytest.mark.parametrize("container", sorted(CONTAINERS))
def test_each_listener_answers_only_its_routes(container):
    """The app as each container starts it: other groups' routes are 404, health and metrics everywhere."""
    from hooks.app import create_app

    c = CONTAINERS[container]
    routes = _routes(c)
    client = create_app(Config(signing_key=b"k" * 32), routes=sorted(routes)).test_client()
    probes = {"metacontroller": ("POST", "/hooks/model/sync"), "webhook": ("POST", "/webhooks/workload/mutate"),
              "token": ("GET", "/registry/token")}
    for group, (method, path) in probes.items():
        r = client.open(path, method=method, json={} if method == "POST" else None)
        assert (r.status_code != 404) == (group in routes), (container, path, r.status_code)
    assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200


def test_upload_policy_matches_the_upload_jobs_the_hooks_emit():
    from hooks import model as hooks_model
    from tests.support import hookreq as hr

    cfg = Config(signing_key=b"k" * 32)
    answer = hooks_model.clustermodel_sync(hr.sync_request(hr.cluster_model(source={"upload": {}})), cfg)
    [job] = [c for c in answer["children"] if c["kind"] == "Job"]
    assert job["metadata"]["namespace"] == cfg.namespace  # ClusterModel uploads run in the module namespace
    labels = job["spec"]["template"]["metadata"]["labels"]
    policy = get("NetworkPolicy", "ai-models-upload-server")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    names = {p["name"] for c in job["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    assert {p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]} <= names


def test_ip_blocks_if_any_are_valid():
    for p in POLICIES:
        for rule in p["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if "ipBlock" in peer:
                    ipaddress.ip_network(peer["ipBlock"]["cidr"])


# ---------------------------------------------------------------- RBAC


ROLES = [o for o in OBJECTS if o["kind"] in ("Role", "ClusterRole")]


@pytest.mark.parametrize("role", ROLES, ids=ident)
def test_no_wildcards_in_shipped_roles(role):
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), (field, rule)


def _grants(role: Obj, group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
               for r in role["rules"])


def test_users_get_models_through_the_built_in_roles_but_never_write_status():
    viewer, editor = get("ClusterRole", "ai-models:viewer"), get("ClusterRole", "ai-models:editor")
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert editor["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert _grants(viewer, "ai.deckhouse.io", "models", "list")
    assert not _grants(viewer, "ai.deckhouse.io", "models", "create")
    assert _grants(editor, "ai.deckhouse.io", "models", "create")
    for role in ROLES:
        if role["metadata"]["name"] == "ai-models:metacontroller":
            continue
        for verb in ("update", "patch", "create"):
            for res in ("models/status", "clustermodels/status", "modelcatalogsources/status"):
                assert not _grants(role, "ai.deckhouse.io", res, verb), (role["metadata"]["name"], res)
    # Cluster-wide objects aggregate into no built-in (namespaced) role.
    for role in ROLES:
        labels = role["metadata"].get("labels", {})
        if any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in labels):
            for r in role["rules"]:
                assert not {"clustermodels", "modelcatalogsources"} & set(r["resources"]), role["metadata"]["name"]


def _metacontroller_types() -> set[tuple[str, str]]:
    out = set()
    for o in OBJECTS:
        if o["apiVersion"].startswith("metacontroller.k8s.io/"):
            spec = o["spec"]
            entries = spec.get("childResources", []) + spec.get("attachments", []) + spec.get("resources", [])
            if "parentResource" in spec:
                entries.append(spec["parentResource"])
            for e in entries:
                group = e["apiVersion"].rpartition("/")[0]
                out.add((group, e["resource"]))
    return out


def test_metacontroller_role_covers_every_type_its_controllers_manage():
    role = get("ClusterRole", "ai-models:metacontroller")
    for group, resource in _metacontroller_types():
        for verb in ("get", "list", "watch", "update", "patch"):
            assert _grants(role, group, resource, verb), (group, resource, verb)
    binding = get("ClusterRoleBinding", "ai-models:metacontroller")
    assert binding["roleRef"]["name"] == "ai-models:metacontroller"


def test_metacontroller_may_create_the_roles_the_hooks_emit():
    """RBAC refuses to create a Role granting more than its creator holds (no `escalate` here)."""
    from tests.test_security_rbac import emitted_roles

    role = get("ClusterRole", "ai-models:metacontroller")
    for emitted in emitted_roles():
        for rule in emitted["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        assert _grants(role, g, r, v), (emitted["metadata"]["name"], g, r, v)


def test_the_security_page_names_every_shipped_role_and_policy():
    page = (ROOT / "docs" / "security.md").read_text()
    for o in OBJECTS:
        if o["kind"] in ("ClusterRole", "NetworkPolicy"):
            assert f"`{o['metadata']['name']}`" in page, f"docs/security.md does not mention {ident(o)}"


def _allows(role: Obj, group: str, resource: str, verb: str) -> bool:
    return any(group in r.get("apiGroups", []) and resource in r.get("resources", []) and verb in r.get("verbs", [])
               for r in role["rules"])


def test_metacontroller_may_block_owner_deletion_and_see_namespaces():
    """OwnerReferencesPermissionEnforcement: Metacontroller sets blockOwnerDeletion on every child and
    attachment, which needs update on the owner's finalizers; the Model hooks relate their Namespace."""
    from tests.test_manifests import _all_controllers

    role = get("ClusterRole", "ai-models:metacontroller")
    owners: set[tuple[str, str]] = set()
    for c in _all_controllers():
        spec = c["spec"]
        if c["kind"] == "CompositeController":
            owners.add((spec["parentResource"]["apiVersion"].split("/")[0], spec["parentResource"]["resource"]))
        else:
            owners |= {(r["apiVersion"].split("/")[0] if "/" in r["apiVersion"] else "", r["resource"])
                       for r in spec["resources"]}
    assert owners
    for group, resource in sorted(owners):
        assert _allows(role, group, f"{resource}/finalizers", "update"), f"{group}/{resource}/finalizers"
    for verb in ("get", "list", "watch"):
        assert _allows(role, "", "namespaces", verb)


def test_metacontrollers_namespace_is_the_documented_patch_point():
    policy = get("NetworkPolicy", "ai-models-hooks")
    rule = policy["spec"]["ingress"][0]
    assert [p["port"] for p in rule["ports"]] == ["hooks"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "metacontroller"}}}]
    [subject] = get("ClusterRoleBinding", "ai-models:metacontroller")["subjects"]
    assert subject["namespace"] == "metacontroller"
    page = (ROOT / "docs" / "install.md").read_text()
    assert "/spec/ingress/0/from" in page and "/subjects/0/namespace" in page
