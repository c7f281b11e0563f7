"""Catalog worker commands against real registries: export, probe (every failure reason), import.

The catalog registry is a real ``docker-registry`` serving TLS with a
self-signed CA and htpasswd auth (alice:wonderland); DMCR is a second real
registry. Artifacts are real ModelPack manifests over a real GGUF file.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devstack.models import make_gguf
from devstack.registry import RegistryServer, free_port
from devstack.tls import make_ca_and_cert
from jobs import catalog_probe, cli
from lib import catalog, modelpack
from lib.api.types import Reason
from lib.catalog_import import import_artifact, parse_param_size
from lib.credentials import dockerconfigjson
from lib.oci.client import RegistryClient
from lib.oci.descriptor import sha256_digest
from lib.oci.errors import NotFound
from lib.oci.reference import Reference
from lib.sources.base import SourceError

RESOLVED = {
    "format": "GGUF",
    "family": "qwen3",
    "architecture": "qwen3",
    "parameterCount": 8_030_000_000,
    "quantization": "Q4_K_M",
    "supportedEndpointTypes": ["Chat", "TextGeneration"],
    "supportedFeatures": ["ToolCalling"],
}


# -- helpers -----------------------------------------------------------------


def tls_client(reg: RegistryServer, user: str = "alice", pw: str = "wonderland") -> RegistryClient:
    return RegistryClient(reg.host, username=user, password=pw, ca_file=reg.tls_cert_ca)


def push_model(client: RegistryClient, repo: str, tmp: Path, name: str, *, tag: str = "v1") -> str:
    """A real ModelPack artifact (one GGUF weight) in ``repo``; returns its manifest digest."""
    path = make_gguf(tmp / f"{name}.gguf", arch="qwen3", name=name)
    data = path.read_bytes()
    blob = client.push_blob(repo, [data], digest=sha256_digest(data), size=len(data))
    layers = [modelpack.layer_descriptor(f"{name}.gguf", "weight", blob.digest, blob.size)]
    cfg = modelpack.build_config(RESOLVED, layers, name=name)
    cdesc = client.push_bytes(repo, cfg, modelpack.CONFIG)
    manifest = modelpack.build_manifest(modelpack.descriptor(modelpack.CONFIG, cdesc.digest, cdesc.size), layers)
    return client.put_manifest(repo, tag, manifest, modelpack.OCI_MANIFEST)


def push_image(client: RegistryClient, repo: str) -> str:
    """A plain container-image manifest: not a model."""
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    cdesc = client.push_bytes(repo, cfg.encode(), "application/vnd.oci.image.config.v1+json")
    layer = client.push_bytes(repo, b"not a tarball", "application/vnd.oci.image.layer.v1.tar")
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": modelpack.OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdesc.digest,
                       "size": cdesc.size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.digest,
                        "size": layer.size}],
        }
    ).encode()
    return client.put_manifest(repo, "image", body, modelpack.OCI_MANIFEST)


def auth_file(tmp: Path, reg: RegistryServer, user: str = "alice", pw: str = "wonderland") -> str:
    p = tmp / f"auth-{user}-{pw}.json"
    p.write_text(dockerconfigjson(reg.host, user, pw))
    return str(p)


def run_job(argv: list[str], tmp: Path) -> tuple[int, dict]:
    rf = tmp / "result.json"
    rf.unlink(missing_ok=True)
    code = cli.main([*argv, "--result-file", str(rf)])
    return code, json.loads(rf.read_text())


def blob_path(reg: RegistryServer, digest: str) -> Path:
    hexd = digest.split(":", 1)[1]
    return reg.workdir / "storage" / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


@pytest.fixture
def upstream(tls_registry: RegistryServer, tmp_path: Path) -> dict:
    """The TLS+htpasswd catalog registry with two models and an exported index."""
    with tls_client(tls_registry) as c:
        qwen = push_model(c, "models/qwen3-8b", tmp_path, "qwen3-8b")
        gemma = push_model(c, "models/gemma", tmp_path, "gemma")
    auth = auth_file(tmp_path, tls_registry)
    code, result = run_job(
        [
            "catalog-export",
            "--destination", f"{tls_registry.host}/ai-models/catalog:stable",
            "--model", f"qwen3-8b={tls_registry.host}/models/qwen3-8b@{qwen}",
            "--model", f"gemma={tls_registry.host}/models/gemma@{gemma}",
            "--auth-file", auth,
            "--ca-file", str(tls_registry.tls_cert_ca),
        ],
        tmp_path,
    )
    assert code == 0, result
    return {"reg": tls_registry, "qwen": qwen, "gemma": gemma, "auth": auth, "export": result}


def probe(reg_host: str, tmp: Path, *extra: str, repo: str = "ai-models/catalog:stable") -> tuple[int, dict]:
    return run_job(["catalog-probe", "--catalog", f"{reg_host}/{repo}", *extra], tmp)


# -- catalog format ------------------------------------------------------------


def test_document_is_canonical_and_validated():
    a = {"name": "b", "reference": "m/b@sha256:" + "1" * 64, "format": "GGUF", "sizeBytes": 3}
    b = {"name": "a", "reference": "m/a@sha256:" + "2" * 64, "family": ""}
    doc = catalog.build_document([a, b])
    assert doc == catalog.build_document([b, a])
    models = catalog.parse_document(doc)
    assert [m["name"] for m in models] == ["a", "b"]
    assert models[0] == {"name": "a", "reference": "m/a@sha256:" + "2" * 64, "digest": "sha256:" + "2" * 64}
    with pytest.raises(catalog.CatalogError, match="unique"):
        catalog.build_document([a, a])
    for bad in (
        {"name": "x y", "reference": "m/a@sha256:" + "2" * 64},
        {"name": "x", "reference": "reg.example:5000/m/a@sha256:" + "2" * 64},  # not registry-relative
        {"name": "x", "reference": "m/a:latest"},
        {"name": "x", "reference": "m/a@sha256:" + "2" * 64, "digest": "sha256:" + "3" * 64},
        {"name": "x", "reference": "m/a@sha256:" + "2" * 64, "sizeBytes": -1},
    ):
        with pytest.raises(catalog.CatalogError):
            catalog.build_document([bad])
    for junk in (b"[]", b"{", b'{"models": {}}'):
        with pytest.raises(catalog.CatalogError):
            catalog.parse_document(junk)


def test_index_manifest_round_trip_and_refusals():
    body = catalog.build_index_manifest("sha256:" + "a" * 64, 10)
    assert catalog.parse_index_manifest(body) == ("sha256:" + "a" * 64, 10)
    m = json.loads(body)
    assert m["artifactType"] == catalog.MEDIA_TYPE
    assert m["config"] == {"mediaType": "application/vnd.oci.empty.v1+json",
                           "digest": sha256_digest(b"{}"), "size": 2}
    model = modelpack.build_manifest(
        modelpack.descriptor(modelpack.CONFIG, "sha256:" + "b" * 64, 5),
        [modelpack.layer_descriptor("m.gguf", "weight", "sha256:" + "c" * 64, 9)],
    )
    with pytest.raises(catalog.CatalogError, match="not a catalog index"):
        catalog.parse_index_manifest(model)
    two = dict(m, layers=m["layers"] * 2)
    with pytest.raises(catalog.CatalogError, match="exactly one"):
        catalog.parse_index_manifest(json.dumps(two).encode())


def test_param_size_parsing():
    assert parse_param_size("22.7M") == 22_700_000
    assert parse_param_size("8.03B") == 8_030_000_000
    assert parse_param_size("") is None and parse_param_size("big") is None and parse_param_size(7) is None


# -- export + probe --------------------------------------------------------------


def test_export_then_probe_reads_the_same_revision(upstream, tmp_path):
    reg = upstream["reg"]
    exported = upstream["export"]
    code, result = probe(reg.host, tmp_path, "--auth-file", upstream["auth"], "--ca-file", str(reg.tls_cert_ca))
    assert code == 0, result
    assert result["catalogRevision"] == exported["catalogRevision"]
    with tls_client(reg) as c:
        assert c.get_manifest("ai-models/catalog", "stable").digest == result["catalogRevision"]
    by_name = {m["name"]: m for m in result["models"]}
    assert sorted(by_name) == ["gemma", "qwen3-8b"]
    q = by_name["qwen3-8b"]
    assert q["reference"] == f"models/qwen3-8b@{upstream['qwen']}" and "digest" not in q  # implied
    assert q["format"] == "GGUF" and q["family"] == "qwen3"
    gguf_size = (tmp_path / "qwen3-8b.gguf").stat().st_size
    assert q["sizeBytes"] > gguf_size


def test_export_refuses_foreign_registry_missing_and_non_model(upstream, tmp_path):
    reg = upstream["reg"]
    base = ["catalog-export", "--destination", f"{reg.host}/ai-models/catalog:bad",
            "--auth-file", upstream["auth"], "--ca-file", str(reg.tls_cert_ca)]
    code, r = run_job([*base, "--model", f"x=other.example:5000/models/x@{upstream['qwen']}"], tmp_path)
    assert code == 2 and "not the catalog's registry" in r["error"]["message"]
    code, r = run_job([*base, "--model", f"x={reg.host}/models/qwen3-8b@sha256:{'0' * 64}"], tmp_path)
    assert code == 2 and "does not exist" in r["error"]["message"]
    with tls_client(reg) as c:
        image = push_image(c, "images/app")
        code, r = run_job([*base, "--model", f"app={reg.host}/images/app@{image}"], tmp_path)
        assert code == 2 and r["error"]["reason"] == Reason.MANIFEST_INVALID
        assert "bad" not in (c.list_tags("ai-models/catalog") or [])


def test_probe_auth_failures(upstream, tmp_path):
    reg = upstream["reg"]
    ca = ["--ca-file", str(reg.tls_cert_ca)]
    for extra in ([], ["--auth-file", auth_file(tmp_path, reg, "alice", "wrong")]):
        code, r = probe(reg.host, tmp_path, *ca, *extra)
        assert (code, r["error"]["reason"]) == (1, Reason.CATALOG_AUTH_FAILED), r


def test_probe_tls_untrusted_ca(upstream, tmp_path):
    reg = upstream["reg"]
    other = make_ca_and_cert(tmp_path / "other")  # a CA that did not sign the registry's certificate
    for extra in ([], ["--ca-file", str(other.ca_cert)], ["--ca-file", str(tmp_path / "missing.crt")]):
        code, r = probe(reg.host, tmp_path, "--auth-file", upstream["auth"], *extra)
        assert (code, r["error"]["reason"]) == (1, Reason.CATALOG_TLS_INVALID), r


@pytest.mark.parametrize("kind", ["wrong-host", "expired"])
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # the fixture's start poll
def test_probe_tls_wrong_host_and_expired(kind, registry_factory, tmp_path):
    certs = make_ca_and_cert(
        tmp_path / kind, hosts=("catalog.example.com",) if kind == "wrong-host" else ("127.0.0.1",),
        expired=kind == "expired",
    )
    reg = registry_factory(tls_cert=certs.cert, tls_key=certs.key)
    code, r = probe(reg.host, tmp_path, "--ca-file", str(certs.ca_cert))
    assert (code, r["error"]["reason"]) == (1, Reason.CATALOG_TLS_INVALID), r


class _Unavailable(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture
def unavailable() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_probe_source_not_ready(unavailable, tmp_path):
    for host in (f"127.0.0.1:{free_port()}", unavailable):  # nothing listening; 503 on every call
        code, r = probe(host, tmp_path, "--insecure-registry")
        assert (code, r["error"]["reason"]) == (1, Reason.CATALOG_SOURCE_NOT_READY), r


def test_probe_not_a_catalog(upstream, tmp_path):
    reg = upstream["reg"]
    creds = ["--auth-file", upstream["auth"], "--ca-file", str(reg.tls_cert_ca)]
    code, r = probe(reg.host, tmp_path, *creds, repo="models/qwen3-8b:v1")  # a model, not an index
    assert (code, r["error"]["reason"]) == (2, Reason.CATALOG_INVALID), r
    assert "not a catalog index" in r["error"]["message"]
    code, r = probe(reg.host, tmp_path, *creds, repo="ai-models/catalog:nope")
    assert (code, r["error"]["reason"]) == (2, Reason.CATALOG_INVALID), r
    # An index whose layer is not a catalog document.
    with tls_client(reg) as c:
        layer = c.push_bytes("ai-models/catalog", b'{"items": []}', catalog.MEDIA_TYPE)
        c.push_bytes("ai-models/catalog", b"{}", "application/vnd.oci.empty.v1+json")
        c.put_manifest("ai-models/catalog", "junk", catalog.build_index_manifest(layer.digest, layer.size),
                       modelpack.OCI_MANIFEST)
    code, r = probe(reg.host, tmp_path, *creds, repo="ai-models/catalog:junk")
    assert (code, r["error"]["reason"]) == (2, Reason.CATALOG_INVALID), r


def test_probe_result_trims_long_catalogs(registry, tmp_path):
    entries = [{"name": f"model-{i:03d}", "reference": f"models/m{i}@sha256:{i:064x}", "format": "GGUF",
                "family": "llama", "sizeBytes": 10**9} for i in range(60)]
    with RegistryClient(registry.host, insecure=True) as c:
        layer = c.push_bytes("catalog-trim/index", catalog.build_document(entries), catalog.MEDIA_TYPE)
        c.push_bytes("catalog-trim/index", b"{}", "application/vnd.oci.empty.v1+json")
        c.put_manifest("catalog-trim/index", "latest", catalog.build_index_manifest(layer.digest, layer.size),
                       modelpack.OCI_MANIFEST)
    code, r = probe(registry.host, tmp_path, "--insecure-registry", repo="catalog-trim/index:latest")
    assert code == 0 and r["modelsTruncated"] is True
    assert 10 < len(r["models"]) < 60 and r["models"][0]["name"] == "model-000"
    assert len((tmp_path / "result.json").read_bytes()) <= 4096
    # The models Models ask for (--want, passed by the source controller) come first and survive the trim.
    args = argparse.Namespace(catalog=f"{registry.host}/catalog-trim/index:latest", auth_file=None, ca_file=None,
                              insecure_registry=True, result_file=str(tmp_path / "want.json"),
                              want=["model-059", "model-042", "absent"])
    assert catalog_probe.run(args) == 0
    r = json.loads((tmp_path / "want.json").read_text())
    assert [m["name"] for m in r["models"][:3]] == ["model-059", "model-042", "model-000"] and r["modelsTruncated"]


# -- import ----------------------------------------------------------------------


def test_publish_oci_source_imports_by_digest(upstream, registry, tmp_path):
    reg = upstream["reg"]
    dest = f"{registry.host}/ai-models/catalog/cluster/qwen/u1"
    code, r = run_job(
        ["publish", "--source", f"oci://{reg.host}/models/qwen3-8b@{upstream['qwen']}",
         "--destination", dest, "--auth-file", upstream["auth"], "--ca-file", str(reg.tls_cert_ca),
         "--insecure-registry"],
        tmp_path,
    )
    assert code == 0, r
    assert r["artifact"]["digest"] == upstream["qwen"]
    assert r["artifact"]["uri"] == f"{dest}@{upstream['qwen']}"
    assert r["source"] == {"resolvedType": "Catalog", "remoteDigest": upstream["qwen"]}
    res = r["resolved"]
    assert (res["format"], res["family"], res["quantization"]) == ("GGUF", "qwen3", "Q4_K_M")
    # config.architecture is the network's kind (model-spec), not the class name the status holds.
    assert "architecture" not in res
    assert res["parameterCount"] == 8_000_000_000  # paramSize "8B": the spec keeps one decimal
    assert "Chat" in res["supportedEndpointTypes"] and res["supportedFeatures"] == ["ToolCalling"]
    with RegistryClient(registry.host, insecure=True) as local, tls_client(reg) as remote:
        mine = local.get_manifest("ai-models/catalog/cluster/qwen/u1", "latest")
        theirs = remote.get_manifest("models/qwen3-8b", upstream["qwen"])
        assert mine.body == theirs.body and mine.digest == upstream["qwen"]
        for layer in json.loads(mine.body)["layers"]:
            assert local.blob_exists("ai-models/catalog/cluster/qwen/u1", layer["digest"]) == layer["size"]


def test_import_refuses_non_model_and_unpinned(upstream, registry, tmp_path):
    reg = upstream["reg"]
    with tls_client(reg) as c:
        image = push_image(c, "images/app")
    dest = Reference.parse(f"{registry.host}/catalog-nonmodel/x")
    with RegistryClient(registry.host, insecure=True) as local:
        with pytest.raises(SourceError) as ei:
            import_artifact(f"{reg.host}/images/app@{image}", dest, local,
                            auth_file=upstream["auth"], ca_file=reg.tls_cert_ca)
        assert ei.value.reason == Reason.MANIFEST_INVALID
        with pytest.raises(SourceError) as ei:
            import_artifact(f"{reg.host}/models/qwen3-8b:v1", dest, local,
                            auth_file=upstream["auth"], ca_file=reg.tls_cert_ca)
        assert ei.value.reason == Reason.UNSUPPORTED_SOURCE
        with pytest.raises(SourceError) as ei:
            import_artifact(f"{reg.host}/models/qwen3-8b@sha256:{'0' * 64}", dest, local,
                            auth_file=upstream["auth"], ca_file=reg.tls_cert_ca)
        assert ei.value.reason == Reason.CATALOG_MODEL_NOT_FOUND
        with pytest.raises(SourceError) as ei:
            import_artifact(f"{reg.host}/models/qwen3-8b@{upstream['qwen']}", dest, local,
                            auth_file=auth_file(tmp_path, reg, "alice", "nope"), ca_file=reg.tls_cert_ca)
        assert ei.value.reason == Reason.CATALOG_AUTH_FAILED
        with pytest.raises(SourceError) as ei:
            import_artifact(f"{reg.host}/models/qwen3-8b@{upstream['qwen']}", dest, local,
                            auth_file=upstream["auth"], ca_file=None)
        assert ei.value.reason == Reason.CATALOG_TLS_INVALID
        with pytest.raises(NotFound):
            local.list_tags("catalog-nonmodel/x")  # nothing was tagged


def test_import_tampered_blob_is_manifest_invalid_and_leaves_nothing_tagged(upstream, registry, tmp_path):
    reg = upstream["reg"]
    with tls_client(reg) as c:
        manifest = json.loads(c.get_manifest("models/gemma", upstream["gemma"]).body)
    weight = manifest["layers"][0]["digest"]
    path = blob_path(reg, weight)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes
    path.write_bytes(bytes(data))
    code, r = run_job(
        ["publish", "--source", f"oci://{reg.host}/models/gemma@{upstream['gemma']}",
         "--destination", f"{registry.host}/catalog-tampered/gemma", "--auth-file", upstream["auth"],
         "--ca-file", str(reg.tls_cert_ca), "--insecure-registry"],
        tmp_path,
    )
    assert (code, r["error"]["reason"]) == (2, Reason.MANIFEST_INVALID), r
    assert "hashes to" in r["error"]["message"]
    with RegistryClient(registry.host, insecure=True) as local:
        assert local.blob_exists("catalog-tampered/gemma", weight) is None
        with pytest.raises(NotFound):
            local.list_tags("catalog-tampered/gemma")


class _Full(BaseHTTPRequestHandler):
    """A DMCR stand-in whose disk is full: blobs are absent and every upload answers 507."""

    def _reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._reply(404)

    def do_POST(self) -> None:
        self._reply(507, b"no space left on device")

    def log_message(self, *a: object) -> None:
        pass


def test_import_into_a_full_registry_is_insufficient_storage(upstream, tmp_path):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Full)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        reg = upstream["reg"]
        code, r = run_job(
            ["publish", "--source", f"oci://{reg.host}/models/gemma@{upstream['gemma']}",
             "--destination", f"127.0.0.1:{srv.server_address[1]}/full/gemma", "--auth-file", upstream["auth"],
             "--ca-file", str(reg.tls_cert_ca), "--insecure-registry"],
            tmp_path,
        )
    finally:
        srv.shutdown()
        srv.server_close()
    assert (code, r["error"]["reason"]) == (1, Reason.INSUFFICIENT_STORAGE), r


class _JobApi:
    """The API server's side of jobs/own_job.py for one Job: merge patches of its annotations."""

    def __init__(self, annotations: dict[str, str]):
        self.annotations = dict(annotations)
        self.patched: list[tuple[str, str]] = []

    def patch_namespaced_job(self, name: str, namespace: str, body: dict, **_: object) -> None:
        self.patched.append((namespace, name))
        for key, value in body["metadata"]["annotations"].items():
            if value is None:
                self.annotations.pop(key, None)
            else:
                self.annotations[key] = value


def test_probe_result_through_the_hooks_to_an_import(upstream, registry, tmp_path, monkeypatch):
    """The real probe's result, patched onto its Job, read by the source controller, planned by the
    Model hooks, imported."""
    from hooks import catalogsource, model_catalog
    from jobs import own_job
    from lib.config import Config
    from tests.support import hookreq as hr

    reg = upstream["reg"]
    cfg = Config(namespace="d8-ai-models", registry=registry.host, worker_image="w:1", signing_key=b"k" * 32)
    src = {
        "apiVersion": "ai.deckhouse.io/v1alpha1", "kind": "ModelCatalogSource",
        "metadata": {"name": "dmz", "uid": "u-1", "generation": 1, "creationTimestamp": hr.T0},
        "spec": {"registry": reg.host, "repository": "ai-models/catalog", "tag": "stable"},
    }
    types = dict(child_types=("Job.batch/v1", "CronJob.batch/v1", "Secret.v1"), related_types=())
    first = catalogsource.sync(hr.sync_request(src, **types), cfg)
    (job,) = [c for c in first["children"] if c["kind"] == "Job"]
    # The probe runs as that Job's pod; an earlier pod of the Job had reported an error.
    api = _JobApi({"ai.deckhouse.io/result": '{"error":{"reason":"CatalogSourceNotReady","message":"stale"}}'})
    monkeypatch.setattr(own_job, "_current", [own_job.OwnJob(job["metadata"]["name"], "d8-ai-models", api)])
    code, probed = probe(reg.host, tmp_path, "--auth-file", upstream["auth"], "--ca-file", str(reg.tls_cert_ca))
    assert code == 0
    assert set(api.patched) == {("d8-ai-models", job["metadata"]["name"])}
    assert json.loads(api.annotations["ai.deckhouse.io/result"]) == probed
    observed = hr.observe(job, status=hr.job_status(succeeded=1, condition="Complete"), annotations=api.annotations)
    answer = catalogsource.sync(hr.sync_request(hr.next_parent(src, first), [observed], **types), cfg)
    assert answer["status"]["phase"] == "Ready"
    assert answer["status"]["catalogRevision"] == probed["catalogRevision"]
    ready_source = hr.next_parent(src, answer)
    model = hr.model("q", "ai-demo", source={"catalog": {"name": "qwen3-8b"}})
    plan = model_catalog.plan(model, hr.object_map([ready_source]), cfg)
    assert plan.error is None and plan.frozen.remoteDigest == upstream["qwen"]
    assert plan.frozen.catalogRevision == probed["catalogRevision"]
    code, r = run_job(
        ["publish", "--source", plan.source_url, "--destination", f"{registry.host}/catalog-e2e/q",
         "--auth-file", upstream["auth"], "--ca-file", str(reg.tls_cert_ca), "--insecure-registry"],
        tmp_path,
    )
    assert code == 0 and r["artifact"]["digest"] == upstream["qwen"] == r["source"]["remoteDigest"]
