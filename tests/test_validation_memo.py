"""The validation memo (tests/support/validation.py) checks as much as validating every time."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.support import crd_validate, validation

ROOT = Path(__file__).resolve().parents[1]
MODEL_CRD = yaml.safe_load((ROOT / "crds" / "models.yaml").read_text())


def secret(name: str = "s") -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "ns"}, "data": {}}


def model(status: dict) -> dict:
    return {
        "apiVersion": "ai.deckhouse.io/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {"source": {"url": "https://huggingface.co/BAAI/bge-m3"}},
        "status": status,
    }


def test_the_library_is_wrapped_once():
    assert kubernetes_validate.validate.__wrapped__ is not None
    wrapped = kubernetes_validate.validate
    validation.install()
    assert kubernetes_validate.validate is wrapped


def test_an_identical_object_is_checked_once_and_a_changed_one_again():
    stats = validation.STATS.setdefault("kubernetes", {"calls": 0, "checks": 0})
    obj = secret("memo-once")
    kubernetes_validate.validate(obj, "1.33", strict=True)
    checks = stats["checks"]
    kubernetes_validate.validate(copy.deepcopy(obj), "1.33", strict=True)
    assert stats["checks"] == checks
    kubernetes_validate.validate(obj, "1.33", strict=False)  # another version or mode is another check
    assert stats["checks"] == checks + 1
    obj["metadata"]["labels"] = {"a": "b"}
    kubernetes_validate.validate(obj, "1.33", strict=True)
    assert stats["checks"] == checks + 2


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda o: o.update(bogus=1), id="unknown-field"),
    pytest.param(lambda o: o["metadata"].update(name=7), id="wrong-type"),
    pytest.param(lambda o: o.update(data={"k": 1}), id="nested-value"),
])
def test_a_refusal_is_raised_after_the_valid_object_was_cached(mutate):
    obj = secret("memo-refusal")
    kubernetes_validate.validate(obj, "1.33", strict=True)
    mutate(obj)
    for _ in range(2):  # refusals are never cached: each call validates and raises afresh
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(obj, "1.33", strict=True)


def test_an_int_and_a_bool_are_different_objects():
    obj = {**secret("memo-bool"), "immutable": True}
    kubernetes_validate.validate(obj, "1.33", strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**obj, "immutable": 1}, "1.33", strict=True)


def test_crd_check_results_follow_the_content_and_cannot_be_changed_by_callers():
    good = model({"phase": "Pending"})
    bad = model({"phase": "NoSuchPhase"})
    assert crd_validate.validate(MODEL_CRD, good) == []
    first = crd_validate.validate(MODEL_CRD, bad)
    assert first and all(e.startswith("status.phase") for e in first), first
    first.append("mutated by a caller")
    assert crd_validate.validate(MODEL_CRD, copy.deepcopy(bad)) == first[:-1]
    assert crd_validate.validate(MODEL_CRD, good) == []


def test_objects_that_are_not_plain_json_are_validated_every_time():
    assert validation.content_key({"a": float("nan")}) is None
    assert validation.content_key({1: "a", "b": 2}) is None
    assert validation.content_key({"a": 1}) != validation.content_key({"a": True})
    assert validation.content_key({"a": 1, "b": 2}) == validation.content_key({"b": 2, "a": 1})
