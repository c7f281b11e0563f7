"""Where a publish may mount blobs from instead of fetching them again (docs/dmcr.md).

Candidates are published objects of the same source a Model may read: any
ClusterModel (readable by everyone), and for a Model the other Models of its
namespace. Pure: computed from the related objects customize asks for, each
repository derived from the object's identity (``lib.api.naming``), never
copied from its status, which only says whether it is Ready. Sorted and
capped, so the publish Job's arguments and the credential are stable.
"""

from __future__ import annotations

from typing import Any

from hooks.model_parent import ModelRef
from hooks.model_status import objects
from lib.api.naming import model_repository
from lib.api.types import API_VERSION, Phase
from lib.sources.base import SourceError
from lib.sources.urls import parse_source_url

Obj = dict[str, Any]

MODEL = f"Model.{API_VERSION}"
CLUSTER_MODEL = f"ClusterModel.{API_VERSION}"
# Each candidate costs at most one mount request per file that is not there: a few suffice.
MAX_CANDIDATES = 4


def _dict(value: object) -> Obj:
    return value if isinstance(value, dict) else {}


def source_key(url: object) -> tuple[str, str] | None:
    """``(kind, repository)`` of a Hugging Face or Ollama URL (revision left out: revisions
    share most files); None for anything else (uploads, catalogs, malformed)."""
    if not isinstance(url, str):
        return None
    try:
        parsed = parse_source_url(url)
    except SourceError:
        return None
    return parsed.kind, parsed.repository.lower()


def wants_candidates(parent: Obj) -> bool:
    """Whether customize relates Models/ClusterModels: a URL source not yet Ready.

    A Ready object never publishes again, so once customize is asked anew
    (Metacontroller caches it per generation, ~20 min) it stops being woken by
    every change of the others. (A Failed one may still recover from a
    preflight refusal, so it keeps them.)
    """
    spec = _dict(parent.get("spec"))
    source = _dict(spec.get("source"))
    status = _dict(parent.get("status"))
    return source_key(source.get("url")) is not None and status.get("phase") != Phase.READY


def related_rules(cluster: bool, namespace: str) -> list[Obj]:
    """ClusterModels everywhere; for a Model, the Models of its namespace."""
    rules: list[Obj] = [{"apiVersion": API_VERSION, "resource": "clustermodels"}]
    if not cluster:
        rules.append({"apiVersion": API_VERSION, "resource": "models", "namespace": namespace})
    return rules


def _published(obj: Obj) -> bool:
    status = _dict(obj.get("status"))
    artifact = _dict(status.get("artifact"))
    md = _dict(obj.get("metadata"))
    ready = status.get("phase") == Phase.READY and bool(artifact.get("digest"))
    return ready and not md.get("deletionTimestamp")


def _repository(obj: Obj, cluster: bool) -> str | None:
    md = _dict(obj.get("metadata"))
    name, uid, namespace = md.get("name"), md.get("uid"), md.get("namespace")
    if not (isinstance(name, str) and name and isinstance(uid, str) and uid):
        return None
    if cluster:
        return model_repository(namespace=None, name=name, uid=uid)
    return model_repository(namespace=namespace, name=name, uid=uid) if isinstance(namespace, str) else None


def candidates(m: ModelRef, related: Obj) -> tuple[str, ...]:
    """Repositories to mount from: ClusterModels first, then Models of ``m``'s namespace."""
    key = source_key(m.source.get("url"))
    if key is None:
        return ()
    found: list[tuple[int, str]] = []
    groups = [(0, True, objects(related, CLUSTER_MODEL))]
    if not m.cluster:
        groups.append((1, False, objects(related, MODEL)))
    for rank, cluster, objs in groups:
        for obj in objs:
            md = _dict(obj.get("metadata"))
            if not cluster and md.get("namespace") != m.namespace:
                continue  # only the namespace's own Models, whatever Metacontroller sends
            spec = _dict(obj.get("spec"))
            source = _dict(spec.get("source"))
            repo = _repository(obj, cluster)
            if repo and repo != m.repository and _published(obj) and source_key(source.get("url")) == key:
                found.append((rank, repo))
    return tuple(repo for _, repo in sorted(set(found))[:MAX_CANDIDATES])
