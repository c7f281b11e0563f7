"""Workload mutating admission webhook: a pure function of the AdmissionReview.

The decision and the pod-template rendering live in ``lib.delivery``; this
module only unpacks the review and packs the answer. It always allows: a
workload that cannot get its models yet is held by a scheduling gate on its
pods, not refused, so ``kubectl apply`` of a Deployment and of the Model it
names can happen in any order.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from hooks.errors import HookInputError
from lib import delivery
from lib.config import Config

# Warnings echo what the workload says (names, annotation values, a parser's complaint): each is
# cut to this many characters. The API server shortens longer ones for its clients anyway.
MAX_WARNING = 1024


def mutate(review: dict[str, Any], config: Config) -> dict[str, Any]:
    request = review.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise HookInputError("AdmissionReview has no request.uid")
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    obj = request.get("object")
    if request.get("operation") not in ("CREATE", "UPDATE") or obj is None:
        return _review(response)
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
        raise HookInputError("request.object must be a Kubernetes object")
    try:
        mutation = delivery.mutate_object(obj, config)
    except (TypeError, AttributeError, KeyError, ValueError) as e:
        # Mutating admission runs before validation: leave a malformed object to the
        # API server's own validation, which will say precisely what is wrong with it.
        why = f"ai-models: malformed object left untouched ({type(e).__name__}: {e})"
        response["warnings"] = [delivery.bounded(why, MAX_WARNING)]
        return _review(response)
    if mutation.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(
            json.dumps(mutation.patch, separators=(",", ":")).encode()
        ).decode()
    if mutation.warnings:
        response["warnings"] = [delivery.bounded(w, MAX_WARNING) for w in mutation.warnings]
    return _review(response)


def _review(response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
