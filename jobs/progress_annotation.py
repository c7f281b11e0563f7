"""Mirror publish progress onto the worker's own Job as ``ai.deckhouse.io/progress``.

Only in a cluster (``AI_MODELS_JOB_NAME``/``AI_MODELS_JOB_NAMESPACE`` set and a
service-account token mounted); the Job's Role allows patching that one Job.
Failures are ignored: progress is informative, the result is what counts.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from lib.api.types import ANNOTATION_PROGRESS

MIN_INTERVAL = 10.0


def reporter() -> Callable[[int], None] | None:
    name = os.environ.get("AI_MODELS_JOB_NAME")
    namespace = os.environ.get("AI_MODELS_JOB_NAMESPACE")
    if not name or not namespace or not os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"):
        return None
    try:
        from kubernetes import client, config

        config.load_incluster_config()
        api = client.BatchV1Api()
    except Exception:
        return None
    last = [0.0]

    def report(percent: int) -> None:
        now = time.monotonic()
        if now - last[0] < MIN_INTERVAL and percent < 100:
            return
        last[0] = now
        body = {"metadata": {"annotations": {ANNOTATION_PROGRESS: f"{percent}%"}}}
        threading.Thread(
            target=lambda: _safe(lambda: api.patch_namespaced_job(name, namespace, body)), daemon=True
        ).start()

    return report


def _safe(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:
        pass
