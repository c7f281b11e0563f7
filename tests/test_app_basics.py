"""The hook service answers every pinned route and refuses bad input with 400."""

import pytest

from hooks.app import HOOKS, create_app
from lib.config import Config


@pytest.fixture
def client():
    return create_app(Config()).test_client()


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}


def test_metrics_exposes_hook_counters(client):
    client.post("/hooks/model/sync", data="{}")
    body = client.get("/metrics").get_data(as_text=True)
    assert "ai_models_hook_requests_total" in body


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
