"""The delivery-mode interface: a mode is one class plus one registry entry.

``NoopMode`` below exists only here: it mounts nothing and adds one env var of
its own (the env every mode gets comes from rendering). Registering it in
``lib.delivery.MODES`` is all it takes for the webhook to apply it when the
module setting or the workload's ``ai.deckhouse.io/delivery-mode`` names it,
to strip it when the workload switches to another mode, and to list it in the
warnings. Every registered mode must strip exactly what it renders.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import pytest

from hooks.app import create_app
from lib import delivery
from lib.config import Config
from lib.delivery import ANNOTATION_DELIVERY_MODE, DeliveryMode, Needs, ResolvedModel
from lib.delivery.interface import drop
from tests.test_webhook_mutate import GATE, admit, decorate, pod_spec, roll, template
from tests.test_workload_hooks import CONFIG, model, related, workload

NOOP_ENV = "NOOP_DELIVERED"


class NoopMode:
    """A test-only mode: the models are assumed to be on the node already; it only says which."""

    name = "Noop"
    needs = Needs()

    def strip(self, pod_spec: dict[str, Any]) -> dict[str, Any]:
        for c in [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]:
            drop(c, "env", lambda e: isinstance(e, dict) and e.get("name") == NOOP_ENV)
        return pod_spec

    def render(self, pod_spec: dict[str, Any], models: Sequence[ResolvedModel], *, secret_name: str,
               config: Config) -> dict[str, Any]:
        for c in pod_spec.get("containers", []):
            c["env"] = [*c.get("env", []), {"name": NOOP_ENV, "value": ",".join(m.name for m in models)}]
        return pod_spec


@pytest.fixture
def noop(monkeypatch) -> DeliveryMode:
    """``NoopMode`` registered for one test (the registry is restored afterwards)."""
    mode = NoopMode()
    monkeypatch.setitem(delivery.MODES, mode.name, mode)
    return mode


def with_mode(obj: dict[str, Any], mode: str | None) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    annotations = out["metadata"]["annotations"]
    if mode is None:
        annotations.pop(ANNOTATION_DELIVERY_MODE, None)
    else:
        annotations[ANNOTATION_DELIVERY_MODE] = mode
    return out


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def assert_noop(spec: dict[str, Any], names: list[str]) -> None:
    assert not [v for v in spec.get("volumes", []) if v["name"].startswith(delivery.PREFIX)]
    assert "initContainers" not in spec and "schedulingGates" not in spec
    app = spec["containers"][0]
    assert "volumeMounts" not in app
    values = env(app)
    assert values[NOOP_ENV] == ",".join(names)
    assert values[delivery.ENV_MODELS_DIR] == "/data/modelcache/models"
    assert [m["name"] for m in json.loads(values[delivery.ENV_MODELS])] == names


def test_the_webhook_applies_a_registered_mode_named_by_the_override(noop):
    client = create_app(CONFIG).test_client()
    obj = with_mode(workload(model_names="m,n"), noop.name)
    rel = related(model("m"), model("n"))
    gated, _, _ = admit(client, obj, operation="CREATE")
    assert GATE in pod_spec(gated)["schedulingGates"]  # the gate is the same in every mode
    mutated, ops, resp = admit(client, decorate(client, gated, rel), old=gated)
    assert ops and "warnings" not in resp
    assert_noop(pod_spec(mutated), ["m", "n"])
    assert set(json.loads(template(mutated)["metadata"]["annotations"][delivery.ANNOTATION_TEMPLATE])) == {
        "Model/m", "Model/n"}
    again, ops2, _ = admit(client, mutated)
    assert ops2 == [] and again == mutated


def test_the_module_setting_may_name_a_registered_mode(noop):
    client = create_app(dataclasses.replace(CONFIG, delivery_mode=noop.name)).test_client()
    mutated, _ = roll(client, workload(model_names="m"), related(model("m")))
    assert_noop(pod_spec(mutated), ["m"])


@pytest.mark.parametrize("other", delivery.DELIVERY_MODES)
def test_switching_to_and_from_a_registered_mode_leaves_nothing_behind(noop, other):
    client = create_app(CONFIG).test_client()
    base = workload(model_names="m")
    direct, _ = roll(client, with_mode(base, other), related(model("m")))
    to_noop, _, _ = admit(client, with_mode(direct, noop.name), old=direct)
    assert_noop(pod_spec(to_noop), ["m"])
    back, _, _ = admit(client, with_mode(to_noop, other), old=to_noop)
    assert template(back) == template(direct)
    assert NOOP_ENV not in env(pod_spec(back)["containers"][0])


def test_an_unregistered_mode_is_an_ignored_override():
    client = create_app(CONFIG).test_client()
    obj = with_mode(workload(model_names="m"), NoopMode.name)
    mutated, _, resp = admit(client, decorate(client, obj, related(model("m"))), old=obj)
    assert [c["name"] for c in pod_spec(mutated)["initContainers"]] == ["ai-models-materialize-m"]
    [warning] = [w for w in resp["warnings"] if ANNOTATION_DELIVERY_MODE in w]
    assert "(one of InitContainer, NodeCache)" in warning


def test_warnings_list_every_registered_mode(noop):
    choice = delivery.choose_mode({ANNOTATION_DELIVERY_MODE: "bogus"}, "InitContainer")
    assert choice.mode == "InitContainer"
    assert "(one of InitContainer, NodeCache, Noop)" in choice.warnings[0]


@pytest.mark.parametrize("name", [*delivery.DELIVERY_MODES, NoopMode.name])
def test_every_mode_strips_exactly_what_it_renders(noop, name):
    """Protocol conformance: render then strip gives back the user's spec, whatever it held."""
    mode = delivery.MODES[name]
    user = {
        "initContainers": [{"name": "mesh-proxy", "image": "proxy", "restartPolicy": "Always"}],
        "containers": [{"name": "app", "image": "app", "env": [{"name": "A", "value": "1"}],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "volumes": [{"name": "data", "emptyDir": {}}],
    }
    models = delivery.resolve([delivery.ModelRef(delivery.ModelKind.MODEL, n) for n in ("a", "b.c")],
                              lambda r: model(r.name), CONFIG.registry)
    assert isinstance(models, list)
    rendered = mode.render(copy.deepcopy(user), models, secret_name="ai-models-pull-deployment-w", config=CONFIG)
    assert rendered != user
    assert mode.strip(copy.deepcopy(rendered)) == user
    for other in delivery.MODES.values():  # another mode's strip leaves this one's injection alone
        if other is not mode:
            assert other.strip(copy.deepcopy(rendered)) == rendered


@pytest.mark.parametrize(("name", "needs"), [
    ("InitContainer", Needs(pull_secret=True, worker_image=True)),
    ("NodeCache", Needs(pull_secret=True, csi_driver="models.ai.deckhouse.io")),
], ids=["init-container", "node-cache"])
def test_what_each_shipped_mode_needs(name, needs):
    assert delivery.MODES[name].name == name and delivery.MODES[name].needs == needs
