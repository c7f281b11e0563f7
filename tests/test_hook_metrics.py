"""/metrics counts every gunicorn worker's requests, not the answering worker's only.

The hook service runs several worker processes (hooks/gunicorn_conf.py); a
scrape lands on one of them. prometheus_client's multiprocess mode sums the
samples every worker wrote.
"""

from __future__ import annotations

import re

import pytest
import requests

from tests.test_faults import Gunicorn, _hook_requests

pytestmark = pytest.mark.slow


def _count(text: str, hook: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("ai_models_hook_requests_total{") and f'hook="{hook}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_sum_the_requests_of_every_worker(tmp_path):
    g = Gunicorn(tmp_path / "hooks")
    g.env["AI_MODELS_HOOK_WORKERS"] = "3"
    g.start()
    try:
        path, body = next(iter(_hook_requests().items()))
        for _ in range(30):  # a new connection each: the kernel spreads them over the workers
            assert requests.post(g.url + path, json=body, timeout=10).status_code == 200
        for _ in range(6):  # whichever worker answers the scrape sees all 30
            text = requests.get(g.url + "/metrics", timeout=10).text
            assert _count(text, path) == 30, re.findall(r"ai_models_hook_requests_total\{.*", text)
            assert f'ai_models_hook_latency_seconds_count{{hook="{path}",outcome="ok"}} 30.0' in text
    finally:
        g.stop()
