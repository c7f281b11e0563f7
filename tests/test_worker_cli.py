"""The worker command-line contract (``lib.api.worker_cli``) holds on both sides.

The hooks and ``lib.delivery`` build ``python -m jobs`` command lines; the
worker parses them. These tests round-trip every command, parse what the hooks
really emit for every worker Job kind (and the materialize init container),
and parse the command lines DESIGN.md pins.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from typing import Any

import pytest

from hooks import catalog_imports, catalogsource
from hooks import model as hooks_model
from hooks import model_children as ch
from hooks import worker_jobs as wj
from hooks.model_parent import parse_parent
from jobs import cli as jobs_cli
from lib import delivery
from lib.api import worker_cli as wc
from tests.support import hookreq as hr
from tests.test_model_hooks import CFG as HOOK_CONFIG

CFG = HOOK_CONFIG  # the Model hook tests' configuration
CA_CFG = dataclasses.replace(CFG, registry_ca_pem=b"-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
INSECURE_CFG = dataclasses.replace(CFG, registry_insecure=True)
CONFIGS = [pytest.param(CFG, id="tls"), pytest.param(CA_CFG, id="private-ca"), pytest.param(INSECURE_CFG, id="http")]
DIGEST = "sha256:" + "d" * 64

# One instance per command with every field set away from its default (switches on, lists of two).
EXAMPLES: dict[str, wc.WorkerCommand] = {
    "publish": wc.Publish(
        source="https://huggingface.co/BAAI/bge-m3", destination="dmcr:5000/ai-models/x", model_name="bge-m3",
        registry_auth_file="/r/.dockerconfigjson", result_file="/tmp/result", insecure_registry=True,
        registry_ca_file="/r/ca.crt", auth_file="/s/token", insecure_source=True, ca_file="/s/ca.crt",
        registry_capacity_bytes=500 << 30, registry_usage="d8-ai-models/ai-models-dmcr-usage",
        namespace_quota_bytes=100 << 30, quota_namespace="team-a",
        mount_from=("ai-models/catalog/cluster/bge/u1", "ai-models/catalog/namespaced/ns/bge/u2"),
    ),
    "upload-server": wc.UploadServer(
        destination="dmcr:5000/ai-models/x", model_name="m", listen="0.0.0.0:8080", token_file="/u/token",
        expires_at="2026-01-01T00:00:00Z", registry_auth_file="/r/a", scratch_dir="/scratch",
        max_spool_bytes=1 << 30, max_upload_bytes=0, result_file="/tmp/r", insecure_registry=True,
        registry_ca_file="/r/ca.crt", registry_capacity_bytes=1 << 40, registry_usage="ns/usage",
        namespace_quota_bytes=1 << 30, quota_namespace="team-b",
    ),
    "materialize": wc.Materialize(
        artifact=f"dmcr:5000/ai-models/x@{DIGEST}", into="/data/modelcache/models/x", auth_file="/p/a",
        insecure_registry=True, ca_file="/p/ca.crt",
    ),
    "node-cache": wc.NodeCache(
        csi_endpoint="unix:///csi/csi.sock", node_id="node-1", cache_dir="/var/cache/models",
        max_cache_bytes=5 << 30, registry_ca_file="/ca.crt", registry="dmcr:5000", metrics_listen=":9100",
        insecure_registry=True,
    ),
    "cleanup": wc.Cleanup(
        artifact=f"dmcr:5000/ai-models/x@{DIGEST}", auth_file="/r/a", result_file="/tmp/r", insecure_registry=True,
        ca_file="/r/ca.crt",
    ),
    "sweep": wc.Sweep(
        registry="dmcr:5000", kubeconfig="/k", dry_run=True, registry_ca_file="/ca.crt", insecure_registry=True,
        result_file="/tmp/r",
    ),
    "gc": wc.GC(config="/etc/docker/registry/config.yml", grace=90.0, window="", dry_run=True, result_file="/r"),
    "catalog-probe": wc.CatalogProbe(
        catalog="reg:5000/ai-models/catalog:latest", result_file="/r", want=("qwen3", "bge"), auth_file="/a",
        ca_file="/c", insecure_registry=True,
    ),
    "catalog-export": wc.CatalogExport(
        destination="reg:5000/ai-models/catalog:v1", model=(f"a=reg:5000/r/a@{DIGEST}", f"b=reg:5000/r/b@{DIGEST}"),
        auth_file="/a", ca_file="/c", insecure_registry=True, result_file="/r",
    ),
}
# The fewest flags each command takes: every default applies.
MINIMAL: dict[str, wc.WorkerCommand] = {
    "publish": wc.Publish(source="/models/x", destination="dmcr:5000/x"),
    "upload-server": wc.UploadServer(destination="dmcr:5000/x", listen=":8080", token_file="/t"),
    "materialize": wc.Materialize(artifact=f"dmcr:5000/x@{DIGEST}", into="/m"),
    "node-cache": wc.NodeCache(csi_endpoint="unix:///c.sock", node_id="n", cache_dir="/c"),
    "cleanup": wc.Cleanup(artifact=f"dmcr:5000/x@{DIGEST}"),
    "sweep": wc.Sweep(registry="dmcr:5000"),
    "gc": wc.GC(config="/c.yml"),
    "catalog-probe": wc.CatalogProbe(catalog="reg/c:latest"),
    "catalog-export": wc.CatalogExport(destination="reg/c:v1", model=(f"a=reg/r@{DIGEST}",)),
}


def test_every_command_has_examples_and_a_worker_module():
    assert set(EXAMPLES) == set(MINIMAL) == set(wc.COMMANDS) == set(jobs_cli.MODULES)
    for name, cmd in EXAMPLES.items():
        assert cmd.COMMAND == name
        defaults = {f.name: f.default for f in dataclasses.fields(cmd)}
        assert all(getattr(cmd, k) != v for k, v in defaults.items()), f"{name}: set every field"


def _jobs_values(argv: list[str]) -> dict[str, Any]:
    ns = vars(jobs_cli.parser().parse_args(argv))
    return {k: tuple(v) if isinstance(v, list) else v for k, v in ns.items()}


@pytest.mark.parametrize("example", [*EXAMPLES, *(f"{n}-minimal" for n in MINIMAL)])
def test_round_trip(example):
    """dataclass → argv → parse gives the same dataclass; the worker's own parser reads the same values."""
    cmd = EXAMPLES.get(example) or MINIMAL[example.removesuffix("-minimal")]
    argv = cmd.argv()
    assert argv[0] == cmd.COMMAND and argv[1:] == cmd.options()
    assert type(cmd).parse(argv) == cmd
    assert wc.parse(argv) == cmd
    values = _jobs_values(argv)
    assert values.pop("module") == jobs_cli.MODULES[cmd.COMMAND]
    assert values == {"command": cmd.COMMAND, **dataclasses.asdict(cmd)}
    assert vars(cmd.namespace()) == {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def test_parse_refuses_the_wrong_command_and_bad_values():
    with pytest.raises(ValueError):
        wc.Publish.parse(MINIMAL["cleanup"].argv())
    with pytest.raises(SystemExit):
        wc.parse(["upload-server", *MINIMAL["upload-server"].options(), "--max-upload-bytes", "-1"])
    with pytest.raises(SystemExit):
        wc.parse(["publish", "--destination", "x"])  # --source is required
    with pytest.raises(SystemExit):
        wc.parse(["gc", "--config", "c", "--grace", "two days"])


def test_emitted_order_is_stable():
    """A Job's pod template cannot be updated: what the hooks emit keeps its order (field order)."""
    assert EXAMPLES["publish"].argv() == [
        "publish", "--source", "https://huggingface.co/BAAI/bge-m3", "--destination", "dmcr:5000/ai-models/x",
        "--model-name", "bge-m3", "--registry-auth-file", "/r/.dockerconfigjson", "--result-file", "/tmp/result",
        "--insecure-registry", "--registry-ca-file", "/r/ca.crt", "--auth-file", "/s/token", "--insecure-source",
        "--ca-file", "/s/ca.crt", "--registry-capacity-bytes", str(500 << 30),
        "--registry-usage", "d8-ai-models/ai-models-dmcr-usage", "--mount-from", "ai-models/catalog/cluster/bge/u1",
        "--mount-from", "ai-models/catalog/namespaced/ns/bge/u2",
        "--namespace-quota-bytes", str(100 << 30), "--quota-namespace", "team-a",
    ]
    assert MINIMAL["gc"].argv() == ["gc", "--config", "/c.yml", "--grace", "172800", "--result-file", wc.RESULT_FILE]


# -- what the hooks emit ------------------------------------------------------------------------


def _worker(job: dict) -> tuple[str, list[str]]:
    labels = job["metadata"]["labels"]
    [container] = [c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == wj.WORKER_CONTAINER]
    assert container["command"] == ["python", "-m", "jobs"]
    return labels[wj.LABEL_WORKER], container["args"]


def _jobs(answer: dict) -> list[dict]:
    return [c for c in answer["children"] if c["kind"] == "Job"]


def _parses_back(argv: list[str], cls: type[wc.WorkerCommand]) -> wc.WorkerCommand:
    cmd = cls.parse(argv)
    assert cmd.argv() == argv  # nothing the hooks emit is lost or reordered by the definition
    assert _jobs_values(argv)["module"] == jobs_cli.MODULES[cls.COMMAND]
    return cmd


@pytest.mark.parametrize("config", CONFIGS)
def test_publish_job_args_parse_back(config):
    parent = hr.model(source={"url": "https://huggingface.co/BAAI/bge-m3", "authSecretRef": {"name": "hf"}})
    secret = hr.secret("hf", "ai-demo", {"HF_TOKEN": "hf_x"})
    [job] = _jobs(hooks_model.model_sync(hr.sync_request(parent, related=[secret]), config))
    worker, argv = _worker(job)
    cmd = _parses_back(argv, wc.Publish)
    assert worker == "publish" and isinstance(cmd, wc.Publish)
    assert cmd.source == "https://huggingface.co/BAAI/bge-m3" and cmd.auth_file == f"{wj.SOURCE_DIR}/token"
    assert cmd.insecure_registry == config.registry_insecure
    assert (cmd.registry_ca_file is not None) == (bool(config.registry_ca_pem) and not config.registry_insecure)


@pytest.mark.parametrize("config", CONFIGS)
def test_upload_job_args_parse_back(config):
    parent = hr.model("uploaded", source={"upload": {}})
    jobs = _jobs(hooks_model.model_sync(hr.sync_request(parent), config))
    [(worker, argv)] = [_worker(j) for j in jobs]
    cmd = _parses_back(argv, wc.UploadServer)
    assert worker == "upload-server" and isinstance(cmd, wc.UploadServer)
    assert cmd.listen == f"0.0.0.0:{config.upload_port}" and cmd.max_upload_bytes == config.upload_max_bytes


@pytest.mark.parametrize("config", CONFIGS)
def test_cleanup_job_args_parse_back(config):
    m = parse_parent({"parent": hr.model()}, config, cluster=False)
    worker, argv = _worker(ch.cleanup_job(m, config, digest=DIGEST, attempt=1))
    cmd = _parses_back(argv, wc.Cleanup)
    assert worker == "cleanup" and isinstance(cmd, wc.Cleanup) and cmd.artifact == f"{m.destination}@{DIGEST}"
    assert (cmd.ca_file is not None) == (bool(config.registry_ca_pem) and not config.registry_insecure)


@pytest.mark.parametrize("auth", [True, False], ids=["auth", "anonymous"])
@pytest.mark.parametrize("insecure", [True, False], ids=["http", "tls"])
def test_catalog_probe_job_args_parse_back(auth, insecure):
    parent = {
        "apiVersion": "ai.deckhouse.io/v1alpha1", "kind": "ModelCatalogSource",
        "metadata": {"name": "dmz", "uid": hr.uid_for("MCS", "dmz"), "generation": 1},
        "spec": {"registry": "registry.dmz.example:5000", "repository": "ai-models/catalog", "insecure": insecure},
    }
    src = catalogsource.parse_source(parent)
    job = catalogsource.probe_job(src, CFG, attempt=2, delay=0, inputs="x", auth=auth, ca=not insecure,
                                  wanted=("qwen3", "bge"))
    worker, argv = _worker(job)
    cmd = _parses_back(argv, wc.CatalogProbe)
    assert worker == "catalog-probe" and isinstance(cmd, wc.CatalogProbe)
    assert cmd.catalog == "registry.dmz.example:5000/ai-models/catalog:latest" and cmd.want == ("qwen3", "bge")
    assert (cmd.auth_file is not None) == auth and cmd.insecure_registry == insecure


@pytest.mark.parametrize("config", CONFIGS)
def test_catalog_import_job_args_parse_back(config):
    m = parse_parent({"parent": hr.model()}, config, cluster=False)
    req = catalog_imports.Request(m, f"models/qwen3@{DIGEST}", attempt=1)
    children = catalog_imports.children(req, config, source_name="dmz", source_uid="u", registry="reg:5000",
                                        insecure=True, auth=True, ca=False)
    [job] = [c for c in children if c["kind"] == "Job"]
    worker, argv = _worker(job)
    cmd = _parses_back(argv, wc.Publish)
    assert worker == catalog_imports.WORKER and isinstance(cmd, wc.Publish)
    assert cmd.source == f"oci://reg:5000/models/qwen3@{DIGEST}" and cmd.insecure_source and cmd.auth_file


@pytest.mark.parametrize("config", CONFIGS)
def test_materialize_init_container_parses_back(config):
    model = delivery.ResolvedModel(name="bge-m3", kind=delivery.ModelKind.MODEL, uri=f"dmcr.test:5000/r@{DIGEST}",
                                   digest=DIGEST, family="bert", size_bytes=1 << 20)
    state = delivery.Deliver(models=(model,), secret_name="ai-models-pull")
    template = delivery.render({"spec": {"containers": [{"name": "app", "image": "app"}]}}, state, config,
                               delivery.MODE_INIT_CONTAINER)
    [init] = [c for c in template["spec"]["initContainers"] if c["name"].startswith(delivery.PREFIX)]
    assert init["command"][:3] == ["python", "-m", "jobs"]
    cmd = _parses_back([*init["command"][3:], *init["args"]], wc.Materialize)
    assert cmd == delivery.materialize_command(model, config)
    assert isinstance(cmd, wc.Materialize) and cmd.artifact == model.uri and cmd.into == model.path


# -- the pinned command lines (DESIGN.md, "Worker command line" and the second round's table) -----

PINNED = """
python -m jobs publish --source SOURCE --destination REGISTRY/REPOSITORY
                       [--auth-file FILE] [--ca-file FILE] [--registry-auth-file FILE] [--registry-ca-file FILE]
                       [--insecure-registry] [--result-file FILE]
python -m jobs upload-server --destination REGISTRY/REPOSITORY --listen HOST:PORT
                       --token-file FILE [--registry-auth-file FILE] [--registry-ca-file FILE]
                       [--insecure-registry] [--result-file FILE]
python -m jobs materialize --artifact REGISTRY/REPOSITORY@DIGEST --into DIR [--auth-file FILE] [--insecure-registry]
python -m jobs cleanup --artifact REGISTRY/REPOSITORY@DIGEST [--auth-file FILE] [--insecure-registry]
python -m jobs catalog-probe --catalog REGISTRY/REPOSITORY:TAG [--auth-file FILE] [--ca-file FILE] [--insecure-registry] [--result-file FILE]
python -m jobs catalog-export --destination REGISTRY/REPOSITORY:TAG --model NAME=REGISTRY/REPOSITORY@DIGEST ...
python -m jobs node-cache --csi-endpoint unix:///PATH --node-id NAME --cache-dir DIR [--max-cache-bytes N] [--registry-ca-file F] [--insecure-registry]
"""
PLACEHOLDERS = {
    "SOURCE": "https://huggingface.co/BAAI/bge-m3",
    "REGISTRY/REPOSITORY": "dmcr:5000/ai-models/x",
    "REGISTRY/REPOSITORY@DIGEST": f"dmcr:5000/ai-models/x@{DIGEST}",
    "REGISTRY/REPOSITORY:TAG": "reg:5000/catalog:latest",
    "NAME=REGISTRY/REPOSITORY@DIGEST": f"qwen3=reg:5000/models/qwen3@{DIGEST}",
    "HOST:PORT": "0.0.0.0:8080",
    "unix:///PATH": "unix:///csi/csi.sock",
    "FILE": "/f", "F": "/f", "DIR": "/d", "NAME": "node-1", "N": "1024",
}


def _pinned_lines() -> list[list[str]]:
    text = re.sub(r"\n\s+(?=[\[-])", " ", PINNED.strip())  # join continuation lines
    lines = []
    for line in text.splitlines():
        words = [w for w in shlex.split(line.replace("[", "").replace("]", "")) if w != "..."]
        assert words[:3] == ["python", "-m", "jobs"]
        lines.append([PLACEHOLDERS.get(w, w) for w in words[3:]])
    return lines


@pytest.mark.parametrize("argv", _pinned_lines(), ids=lambda argv: argv[0])
def test_pinned_command_line_parses(argv):
    """Every flag DESIGN.md pins is taken, and the typed command gives the same line back."""
    cmd = wc.parse(argv)
    assert cmd.COMMAND == argv[0]
    assert _jobs_values(argv)["module"] == jobs_cli.MODULES[argv[0]]
    assert set(cmd.argv()) >= set(argv)  # every pinned flag and value is kept (defaults may be added)
