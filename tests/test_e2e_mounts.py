"""End to end: a second object of the same source is published by mounting, never by fetching.

``tests/test_blob_mounts.py`` proves the worker and the token service; this
drives the whole module (``devstack.stack.LocalModule``: the hook service
deriving ``--mount-from`` and the ``from=`` credential, the Metacontroller
stand-in relating Models/ClusterModels through customize, the kubelet stand-in
running the publish Jobs, a real token-auth DMCR). DMCR is reached through a
recording TCP proxy (the hooks' ``AI_MODELS_REGISTRY``), so the test sees every
request the workers sent it; the Hub stand-in counts the file bytes it served.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import pytest

from devstack.hf_hub import HubStandIn
from devstack.stack import NAMESPACE, LocalModule
from lib.api.naming import model_repository
from tests.support.tcpproxy import TcpProxy
from tests.test_blob_mounts import _model_files  # an LFS weights file and small git files

pytestmark = pytest.mark.slow  # the whole module stack, three publishes
API = "ai.deckhouse.io/v1alpha1"
URL = "https://huggingface.co/acme/tiny-bert"
FORK_URL = "https://huggingface.co/acme/tiny-bert-fork"  # the same bytes under another source
NS_A, NS_B = "team-a", "team-b"


def _obj(kind: str, name: str, url: str, namespace: str = "") -> dict[str, Any]:
    md = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": API, "kind": kind, "metadata": md, "spec": {"source": {"url": url}}}


def _ready(m: LocalModule, kind: str, name: str, namespace: str = "") -> dict[str, Any]:
    ended = m.run_until(lambda: m.phase(kind, name, namespace) in ("Ready", "Failed"), timeout=120)
    obj = m.cluster.get(kind, name, namespace) or {}
    status = obj.get("status") or {}
    assert ended and status.get("phase") == "Ready", (status, m.mc.errors[-3:], list(m.kubelet.logs.values())[-1:])
    return obj


def _publish_job(m: LocalModule, name: str, namespace: str) -> dict[str, Any]:
    prefix = f"ai-model-publish-{name}" if namespace else f"ai-clustermodel-publish-{name}"
    [job] = [j for j in m.cluster.list("Job", namespace or NAMESPACE) if j["metadata"]["name"].startswith(prefix)]
    return job


def _mount_from(job: dict[str, Any]) -> list[str]:
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    return [args[i + 1] for i, a in enumerate(args) if a == "--mount-from"]


def _stats(job: dict[str, Any]) -> dict[str, Any]:
    return json.loads(job["metadata"]["annotations"]["ai.deckhouse.io/result"])["stats"]


def _writes(sent: bytes) -> list[str]:
    """Request lines of every write the workers sent DMCR (blob upload sessions, chunks, mounts, manifests)."""
    return [m.group(0).decode() for m in re.finditer(rb"(?:PATCH|PUT|POST) /v2/\S+", sent)]


def _uploads(writes: list[str]) -> list[str]:
    """Writes that carry blob bytes or open a session for them: anything but a mount or a manifest."""
    return [w for w in writes if "mount=" not in w and "/manifests/" not in w]


def _repo(obj: dict[str, Any]) -> str:
    md = obj["metadata"]
    return model_repository(namespace=md.get("namespace"), name=md["name"], uid=md["uid"])


@pytest.mark.parametrize("backend", ["memory", "kube"])
def test_a_model_of_a_published_source_mounts_every_blob_and_fetches_nothing(tmp_path, backend):
    """ClusterModel → Ready; a Model in team-a of the same URL → Ready with 0 Hub file bytes, 0 blob
    bytes into DMCR (mount POSTs only), the same manifest digest; a Model in team-b of another URL
    with the very same bytes gets no candidate and downloads and uploads everything."""
    files = _model_files(tmp_path)
    with (HubStandIn() as hub, TcpProxy(("127.0.0.1", 9), capture=True) as dmcr,
          LocalModule(tmp_path / "m", worker_env={"HF_ENDPOINT": hub.endpoint},
                      hook_env={"AI_MODELS_REGISTRY": dmcr.host}, backend=backend) as m):
        assert m.registry is not None
        dmcr.switch(("127.0.0.1", m.registry.port))
        hub.add_repo("acme/tiny-bert", files, library_name="transformers")
        hub.add_repo("acme/tiny-bert-fork", files, library_name="transformers")
        total_file_bytes = sum(len(v) if isinstance(v, bytes) else v.stat().st_size for v in files.values())
        for ns in (NS_A, NS_B):
            m.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

        # 1. The ClusterModel fetches everything once.
        m.apply(_obj("ClusterModel", "tiny-bert", URL))
        cm = _ready(m, "ClusterModel", "tiny-bert")
        cm_job = _publish_job(m, "tiny-bert", "")
        assert _mount_from(cm_job) == [] and "mountedBytes" not in _stats(cm_job)
        assert hub.served("acme/tiny-bert") == total_file_bytes
        assert _uploads(_writes(bytes(dmcr.received)))  # non-vacuous: the first publish did upload

        # 2. A Model of the same source in team-a: everything mounted from the ClusterModel.
        hub_before, sent_before = hub.served(), len(dmcr.received)
        m.apply(_obj("Model", "tiny-bert", URL, NS_A))
        model = _ready(m, "Model", "tiny-bert", NS_A)
        job = _publish_job(m, "tiny-bert", NS_A)
        assert _mount_from(job) == [_repo(cm)]  # the hook named the ClusterModel's repository
        assert hub.served() == hub_before  # (1) not a file byte from the Hub
        assert model["status"]["artifact"]["digest"] == cm["status"]["artifact"]["digest"]  # (2)
        writes = _writes(bytes(dmcr.received[sent_before:]))
        own = _repo(model)
        assert _uploads(writes) == [], writes  # (3) no upload session, no PATCH, no blob PUT
        mounts = [w for w in writes if "mount=" in w]
        assert mounts and all(f"from={quote(_repo(cm), safe='')}" in w for w in mounts), mounts
        stats = _stats(job)
        assert stats["mountedBytes"] == stats["bytes"] == model["status"]["artifact"]["sizeBytes"]
        notes = [e.get("note", "") for e in m.cluster.list("Event", NS_A)
                 if e.get("regarding", {}).get("name") == "tiny-bert" and e.get("reason") == "Published"]
        assert any("mounted from DMCR" in n for n in notes), notes
        assert {w for w in writes if "/manifests/" in w} == {f"PUT /v2/{own}/manifests/latest"}

        # 3. Negative: another source in team-b, byte-identical files: no candidate, a full download.
        hub_before, sent_before = hub.served(), len(dmcr.received)
        m.apply(_obj("Model", "fork", FORK_URL, NS_B))
        fork = _ready(m, "Model", "fork", NS_B)
        fork_job = _publish_job(m, "fork", NS_B)
        assert _mount_from(fork_job) == [] and "mountedBytes" not in _stats(fork_job)
        assert hub.served() - hub_before == hub.served("acme/tiny-bert-fork") == total_file_bytes
        writes = _writes(bytes(dmcr.received[sent_before:]))
        assert _uploads(writes) and not [w for w in writes if "mount=" in w], writes
        assert fork["status"]["phase"] == "Ready"
