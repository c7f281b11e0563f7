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

Usage: from the same list of objects it records DMCR's usage (the sum of
their ``status.artifact.sizeBytes``) in the ConfigMap ``ai-models-dmcr-usage``
of the module namespace, which workers read for the capacity check
(``lib/capacity.py``). It writes only when the number changed (``updatedAt``
is when it last did), never in a dry run, and a failure to write is reported,
not fatal: the check then counts usage as unknown.

Result: ``{"sweep": {"repositories", "live", "orphans", "deleted", "dryRun", "examples", "usage"}}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable, Iterable
from typing import Any

from jobs.cleanup import delete_artifact
from jobs.common import fail, finish
from lib import credentials
from lib.api.naming import REPOSITORY_ROOT, model_repository
from lib.api.types import Reason
from lib.capacity import USAGE_CONFIGMAP, USED_KEY, total_used, usage_data
from lib.config import Config, ConfigError
from lib.oci import errors as oci_errors
from lib.oci.client import RegistryClient

GROUP, VERSION = "ai.deckhouse.io", "v1alpha1"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


PAGE = 500

Lister = Callable[[str], Iterable[dict[str, Any]]]  # plural -> objects
UsageWriter = Callable[[int], bool]  # used bytes -> written (False: it was already recorded)
PLURALS = ("models", "clustermodels")


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


def record_usage(write: UsageWriter | None, used: int, *, dry_run: bool) -> dict[str, Any]:
    """Write DMCR's usage (best effort: a failure is reported in the result, not raised)."""
    outcome: dict[str, Any] = {"usedBytes": used, "written": False}
    if write is None or dry_run:
        return outcome
    try:
        outcome["written"] = write(used)
    except Exception as e:  # the API: the capacity check then counts usage as unknown
        outcome["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        print(f"warning: could not record DMCR usage: {outcome['error']}", file=sys.stderr, flush=True)
    return outcome


def sweep(
    client: RegistryClient,
    list_objects: Lister,
    *,
    dry_run: bool = False,
    write_usage: UsageWriter | None = None,
) -> dict[str, Any]:
    """List (registry first, objects second), record the usage, then delete the orphans' manifests."""
    repos = client.list_repositories()
    objects = {plural: list(list_objects(plural)) for plural in PLURALS}
    live = live_repositories(objects.__getitem__)
    usage = record_usage(
        write_usage, total_used(o for items in objects.values() for o in items), dry_run=dry_run
    )
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
        "usage": usage,
    }


def _load_config(kubeconfig: str | None) -> None:
    from kubernetes import config

    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()


def kubernetes_lister(kubeconfig: str | None) -> Lister:
    """Models / ClusterModels through the API, paginated (the CronJob's ServiceAccount in a cluster)."""
    from kubernetes import client

    _load_config(kubeconfig)
    api = client.CustomObjectsApi()

    def list_objects(plural: str) -> Iterable[dict[str, Any]]:
        token = None
        while True:
            # The client's stubs type the answer as ``object``; it is the decoded JSON list.
            page: dict[str, Any] = api.list_cluster_custom_object(  # type: ignore[assignment]
                GROUP, VERSION, plural, limit=PAGE, _continue=token
            )
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    return list_objects


def write_usage_config_map(core: Any, namespace: str, used: int, now: Callable[[], str] = _now) -> bool:
    """Set ``usedBytes`` of ConfigMap ``ai-models-dmcr-usage`` (a ``CoreV1Api``) when it differs.

    Create it when it is missing; the shipped one (deploy/hooks/sweep.yaml) means the
    sweep's Role needs only get and update on that one name (a missing one fails with 403).
    """
    from kubernetes.client.exceptions import ApiException

    try:
        cm = core.read_namespaced_config_map(USAGE_CONFIGMAP, namespace)
    except ApiException as e:
        if e.status != 404:
            raise
        body = {
            "metadata": {"name": USAGE_CONFIGMAP, "namespace": namespace},
            "data": usage_data(used, now()),
        }
        core.create_namespaced_config_map(namespace, body)
        return True
    data = dict(cm.data or {})
    if data.get(USED_KEY) == str(used):
        return False
    cm.data = {**data, **usage_data(used, now())}
    core.replace_namespaced_config_map(USAGE_CONFIGMAP, namespace, cm)
    return True


def kubernetes_usage_writer(kubeconfig: str | None, namespace: str) -> UsageWriter:
    """``write_usage_config_map`` through the API (the CronJob's ServiceAccount in a cluster)."""
    from kubernetes import client

    _load_config(kubeconfig)
    core = client.CoreV1Api()
    return lambda used: write_usage_config_map(core, namespace, used)


def run(args: argparse.Namespace) -> int:
    rf = args.result_file
    try:
        config = Config.from_env()
        keys = config.signing_keys
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
        outcome = sweep(
            client,
            kubernetes_lister(args.kubeconfig),
            dry_run=args.dry_run,
            write_usage=kubernetes_usage_writer(args.kubeconfig, config.namespace),
        )
    except oci_errors.RegistryError as e:
        unreachable = isinstance(e, oci_errors.Unreachable)
        reason = Reason.REGISTRY_UNAVAILABLE if unreachable else Reason.CLEANUP_FAILED
        return fail(rf, reason, f"{type(e).__name__}: registry {args.registry}: {e}")
    except Exception as e:  # the Kubernetes API: never delete on a partial view
        if type(e).__module__.startswith(("kubernetes", "urllib3")):
            return fail(rf, Reason.CLEANUP_FAILED, f"cannot list Models: {type(e).__name__}: {str(e)[:300]}")
        raise
    return finish(rf, {"sweep": outcome})
