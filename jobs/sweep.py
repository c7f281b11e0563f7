"""``python -m jobs sweep``: reclaim DMCR repositories whose Model or ClusterModel is gone.

A Model's own finalize deletes its artifact with a cleanup Job in the Model's
namespace. That cannot happen when the namespace itself is being deleted: the
API server refuses new objects in a Terminating namespace (NamespaceLifecycle),
so the Model hooks answer ``finalized: true`` at once there
(docs/lifecycle.md) and leave the artifact to this sweep. It also catches
anything else that outlived its object (a cleanup that never ran, a forged
``Complete`` Job in a tenant's namespace).

Every repository under ``ai-models/catalog/`` is named by its object's
identity (``lib.api.naming.model_repository``: namespace, name, UID). The
sweep lists the registry's repositories **first** and the live Models and
ClusterModels **second**: a repository in the first list belongs to an object
that existed then, so one that is missing from the second list was deleted
(never one created in between). For each such repository it deletes every
tagged manifest by digest; the registry's garbage collection (deploy/dmcr)
then removes the blobs no manifest references.

Credentials: the sweep grant (``lib.credentials.sweep_credential``: list the
catalog, pull and delete under ``ai-models/catalog/``), derived here from the
mounted signing keys (``AI_MODELS_SIGNING_KEY_FILE`` / ``_KEYS_DIR``, as the
hook service reads them); the Kubernetes API is read with the CronJob's
ServiceAccount (get/list Models and ClusterModels, nothing else).

Result: ``{"sweep": {"repositories", "live", "orphans", "deleted", "dryRun", "examples"}}``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from typing import Any

from jobs.cleanup import delete_artifact
from jobs.common import fail, finish
from lib import credentials
from lib.api.naming import REPOSITORY_ROOT, model_repository
from lib.api.types import Reason
from lib.config import Config, ConfigError
from lib.oci import errors as oci_errors
from lib.oci.client import RegistryClient

GROUP, VERSION = "ai.deckhouse.io", "v1alpha1"
PAGE = 500

Lister = Callable[[str], Iterable[dict[str, Any]]]  # plural -> objects


def live_repositories(list_objects: Lister) -> set[str]:
    """The repository of every Model and ClusterModel that exists now."""
    live = set()
    for plural, namespaced in (("models", True), ("clustermodels", False)):
        for obj in list_objects(plural):
            md = obj.get("metadata") or {}
            name, uid = md.get("name"), md.get("uid")
            if not (isinstance(name, str) and isinstance(uid, str) and name and uid):
                continue
            ns = md.get("namespace") if namespaced else None
            live.add(model_repository(namespace=ns, name=name, uid=uid))
    return live


def orphans(registry_repos: Iterable[str], live: set[str]) -> list[str]:
    """Repositories of the module's tree whose object is gone (pure; sorted)."""
    root = REPOSITORY_ROOT + "/"
    return sorted(r for r in set(registry_repos) if r.startswith(root) and r not in live)


def sweep(client: RegistryClient, list_objects: Lister, *, dry_run: bool = False) -> dict[str, Any]:
    """List (registry first, objects second), then delete the orphans' manifests."""
    repos = client.list_repositories()
    live = live_repositories(list_objects)
    gone = orphans(repos, live)
    deleted = 0
    for repo in gone:
        try:
            tags = client.list_tags(repo)
        except oci_errors.NotFound:
            continue
        digests = set()
        for tag in tags:
            try:
                digests.add(client.get_manifest(repo, tag).digest)
            except oci_errors.NotFound:
                continue
        for digest in sorted(digests):
            print(f"{'would delete' if dry_run else 'deleting'} {repo}@{digest}", file=sys.stderr, flush=True)
            if not dry_run:
                delete_artifact(client, repo, digest)
                deleted += 1
    return {
        "repositories": len(repos),
        "live": len(live),
        "orphans": len(gone),
        "deleted": deleted,
        "dryRun": dry_run,
        "examples": gone[:10],
    }


def kubernetes_lister(kubeconfig: str | None) -> Lister:
    """Models / ClusterModels through the API, paginated (the CronJob's ServiceAccount in a cluster)."""
    from kubernetes import client, config

    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()
    api = client.CustomObjectsApi()

    def list_objects(plural: str) -> Iterable[dict[str, Any]]:
        token = None
        while True:
            page = api.list_cluster_custom_object(GROUP, VERSION, plural, limit=PAGE, _continue=token)
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    return list_objects


def run(args: argparse.Namespace) -> int:
    rf = args.result_file
    try:
        keys = Config.from_env().signing_keys
    except ConfigError as e:
        return fail(rf, Reason.CLEANUP_FAILED, f"sweep needs the module's signing keys: {e}")
    user, password = credentials.sweep_credential(keys)
    client = RegistryClient(
        args.registry,
        username=user,
        password=password,
        ca_file=args.registry_ca_file,
        insecure=args.insecure_registry,
    )
    try:
        outcome = sweep(client, kubernetes_lister(args.kubeconfig), dry_run=args.dry_run)
    except oci_errors.RegistryError as e:
        unreachable = isinstance(e, oci_errors.Unreachable)
        reason = Reason.REGISTRY_UNAVAILABLE if unreachable else Reason.CLEANUP_FAILED
        return fail(rf, reason, f"{type(e).__name__}: registry {args.registry}: {e}")
    except Exception as e:  # the Kubernetes API: never delete on a partial view
        if type(e).__module__.startswith(("kubernetes", "urllib3")):
            return fail(rf, Reason.CLEANUP_FAILED, f"cannot list Models: {type(e).__name__}: {str(e)[:300]}")
        raise
    return finish(rf, {"sweep": outcome})
