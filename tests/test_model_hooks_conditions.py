"""lib/api/conditions.py: stable lastTransitionTime, clock-free time helpers."""

from __future__ import annotations

import pytest

from hooks.model_status import request_time
from lib.api import conditions as c
from tests.support import hookreq as hr


def test_time_kept_when_status_and_reason_unchanged_even_if_message_moves():
    old = [c.make("Ready", "False", "Publishing", "10%", now="2026-01-01T00:00:00Z")]
    new = c.merge(old, [("Ready", "False", "Publishing", "90%")], now="2026-01-02T00:00:00Z")
    assert new[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z" and new[0]["message"] == "90%"


@pytest.mark.parametrize(("status", "reason"), [("True", "Publishing"), ("False", "PublicationFailed")])
def test_time_moves_when_status_or_reason_changes(status, reason):
    old = [c.make("Ready", "False", "Publishing", "", now="2026-01-01T00:00:00Z")]
    new = c.merge(old, [("Ready", status, reason, "")], now="2026-01-02T00:00:00Z")
    assert new[0]["lastTransitionTime"] == "2026-01-02T00:00:00Z"


def test_merge_orders_as_given_drops_others_and_sets_generation():
    old = [{"type": "Stale", "status": "True", "reason": "X", "message": "", "lastTransitionTime": "t"}]
    new = c.merge(old, [("A", "True", "R", ""), ("B", "False", "R", "")], now=c.EPOCH, generation=3)
    assert [x["type"] for x in new] == ["A", "B"] and all(x["observedGeneration"] == 3 for x in new)


def test_latest_time_handles_fractions_offsets_and_junk():
    assert (
        c.latest_time(["2026-01-01T00:00:00Z", "2026-01-01T00:00:09Z", None, "junk"])
        == "2026-01-01T00:00:09Z"
    )
    assert c.latest_time(["2026-01-01T01:00:00+02:00", "2026-01-01T00:00:00.5Z"]) == "2026-01-01T00:00:00Z"
    assert c.latest_time([]) == c.EPOCH


def test_request_time_is_the_newest_time_in_the_request():
    parent = hr.model()
    job = hr.observe(
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "ai-demo"}},
        status=hr.job_status(active=1, start="2026-01-01T00:05:00Z"),
    )
    assert request_time(hr.sync_request(parent)) == parent["metadata"]["creationTimestamp"]
    assert request_time(hr.sync_request(parent, [job])) == "2026-01-01T00:05:00Z"
