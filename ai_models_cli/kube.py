"""Reading Models and their upload Secret through the ``kubernetes`` client.

Imported only for the commands that need the cluster: ``--url`` with
``--token-file`` works without the client library or a kubeconfig.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GROUP, VERSION = "ai.deckhouse.io", "v1alpha1"
MODULE_NAMESPACE = "d8-ai-models"  # where a ClusterModel's upload Secret lives


class KubeError(Exception):
    """The cluster said no (not found, forbidden) or the object is not usable yet."""


@dataclass(frozen=True)
class Ref:
    name: str
    namespace: str | None  # None: a ClusterModel

    @property
    def kind(self) -> str:
        return "ClusterModel" if self.namespace is None else "Model"

    def __str__(self) -> str:
        return self.name if self.namespace is None else f"{self.namespace}/{self.name}"


class Cluster:
    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        from kubernetes import client, config

        try:
            config.load_kube_config(config_file=kubeconfig, context=context)
            _, active = config.list_kube_config_contexts(config_file=kubeconfig)
            if context:
                contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
                active = next((c for c in contexts if c["name"] == context), active)
            self.default_namespace = (active or {}).get("context", {}).get("namespace") or "default"
        except config.ConfigException:
            config.load_incluster_config()
            try:
                with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
                    self.default_namespace = f.read().strip()
            except OSError:
                self.default_namespace = "default"
        self._client = client
        self.api = client.ApiClient()
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def get(self, ref: Ref) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        obj: Any
        try:
            if ref.namespace is None:
                obj = self.custom.get_cluster_custom_object(GROUP, VERSION, "clustermodels", ref.name)
            else:
                obj = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, ref.namespace, "models", ref.name
                )
        except ApiException as e:
            raise KubeError(f"{ref.kind} {ref}: {_api_reason(e)}") from None
        return obj if isinstance(obj, dict) else {}

    def upload_secret(self, ref: Ref, *, wait: float = 60, poll: float = 1.0) -> tuple[str, str]:
        """(url, token) from the Secret ``status.upload.secretName`` names; waits for the session to open."""
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + wait
        while True:
            st = self.get(ref).get("status") or {}
            name = (st.get("upload") or {}).get("secretName")
            if name:
                break
            if st.get("phase") in ("Ready", "Failed", "Deleting") or time.monotonic() > deadline:
                raise KubeError(
                    f"{ref.kind} {ref} has no upload session (phase {st.get('phase') or 'unknown'}): "
                    "is spec.source.upload set?"
                )
            time.sleep(poll)
        ns = ref.namespace or MODULE_NAMESPACE
        try:
            secret = self.core.read_namespaced_secret(name, ns)
        except ApiException as e:
            raise KubeError(
                f"Secret {ns}/{name}: {_api_reason(e)} (reading it needs the Role "
                f"ai-model-upload-reader-{ref.name}: see the user guide)"
            ) from None
        data = secret.data or {}
        try:
            return _b64(data["url"]), _b64(data["token"]).strip()
        except KeyError as e:
            raise KubeError(f"Secret {ns}/{name} has no key {e}") from None

    def wait(
        self,
        ref: Ref,
        *,
        timeout: float,
        poll: float = 2.0,
        on_change: Callable[[str, str, str], None] | None = None,
    ) -> dict[str, Any]:
        """Polls until Ready or Failed (the object) or ``timeout`` (``TimeoutError``)."""
        deadline = time.monotonic() + timeout
        seen = None
        while True:
            obj = self.get(ref)
            phase, reason, message = describe(obj)
            if on_change and (phase, reason) != seen:
                on_change(phase, reason, message)
            seen = (phase, reason)
            if phase in ("Ready", "Failed"):
                return obj
            if time.monotonic() > deadline:
                state = phase or "without status"
                raise TimeoutError(f"{ref.kind} {ref} is still {state} after {timeout:.0f} s")
            time.sleep(poll)


def describe(obj: dict[str, Any]) -> tuple[str, str, str]:
    """(phase, Ready reason, Ready message)."""
    st = obj.get("status") or {}
    ready: dict[str, Any] = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {})
    return st.get("phase", ""), ready.get("reason", ""), ready.get("message", "")


def _b64(value: Any) -> str:
    return base64.b64decode(value).decode()


def _api_reason(e: Any) -> str:
    return {404: "not found", 403: "forbidden", 401: "unauthorized"}.get(e.status, f"{e.status} {e.reason}")
