"""The hook service answers every pinned route and refuses bad input with 400."""

import pytest

from hooks.app import HOOKS, create_app
from lib.config import Config


@pytest.fixture
def client():
    return create_app(Config(signing_key=b"k" * 32)).test_client()


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}


def _sample(body: str, name: str, **labels: str) -> float:
    for line in body.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_hook_requests_by_code(client):
    before = _sample(client.get("/metrics").get_data(as_text=True),
                     "ai_models_hook_requests_total", hook="/hooks/model/sync", code="400")
    client.post("/hooks/model/sync", data="{}")
    body = client.get("/metrics").get_data(as_text=True)
    after = _sample(body, "ai_models_hook_requests_total", hook="/hooks/model/sync", code="400")
    assert after == before + 1
    assert _sample(body, "ai_models_hook_latency_seconds_count", hook="/hooks/model/sync") >= 1


@pytest.mark.parametrize("path", sorted(HOOKS))
@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b"42", b'{"controller": {}}', b'{"parent": "x", "controller": {}}'],
    ids=["empty", "not-json", "array", "number", "missing-keys", "wrong-type"],
)
def test_bad_bodies_answer_400(client, path, body):
    r = client.post(path, data=body, content_type="application/json")
    assert r.status_code == 400, r.get_data(as_text=True)
    assert isinstance(r.get_json()["error"], str) and r.get_json()["error"]


def test_unknown_route_is_json_404(client):
    r = client.post("/hooks/nope/sync", data="{}")
    assert r.status_code == 404 and "error" in r.get_json()
