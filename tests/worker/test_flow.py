"""End to end over real processes: chat -> proposal -> Approve -> a Celery worker launches and follows the job on
the AWX double -> stages and per-host results visible through the API."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import bearer

pytestmark = pytest.mark.integration

USER = bearer("alice")


def wait_for(api, request_id, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        view = api.get(f"/api/v1/requests/{request_id}").json()
        if not seen or seen[-1] != (view["state"], view["stage"]):
            seen.append((view["state"], view["stage"]))
        if predicate(view):
            return view, seen
        time.sleep(0.2)
    raise AssertionError(f"timed out; states seen: {seen}; last: {view}")


def propose_and_approve(api, text):
    chat = api.post("/api/v1/chat", json={"text": text}, headers=USER).json()
    assert chat["proposal"], chat
    request_id = chat["proposal"]["id"]
    approved = api.post(f"/api/v1/requests/{request_id}/approve", headers=bearer("bob"))
    assert approved.status_code == 200, approved.text
    return request_id


def test_chat_to_patching_completed(api, awx_double, worker_process):
    request_id = propose_and_approve(api, "Patch server web-01 with Group-1")
    view, seen = wait_for(api, request_id, lambda v: v["terminal"])
    assert view["state"] == "succeeded", view
    assert view["stage"] == "completed"
    labels = [s["label"] for s in view["stages"]]
    assert labels == ["Pre-checks started", "Patching in progress", "Reboot in progress",
                      "Post-checks running", "Patching completed"]
    assert [h["name"] for h in view["hosts"]] == ["web-01"]
    assert view["hosts"][0]["status"] in ("ok", "changed") and view["hosts"][0]["ok"] > 0
    assert view["approved_by"] == "bob" and view["requested_by"] == "alice"
    assert view["awx_job_id"] is not None
    # The stages were observable while running, not only at the end (which ones a poll catches depends on the
    # machine's pace: at the double's speed one poll may go from pending straight to the reboot).
    assert any(state == "running" and stage in ("prechecks", "patching", "reboot", "postchecks")
               for state, stage in seen), seen
    # Exactly one launch, carrying our request id, limited to the exact host.
    stats = awx_double.stats()
    assert stats["launches_by_request"] == {request_id: 1}
    events = api.get(f"/api/v1/requests/{request_id}/events").json()["items"]
    counters = [e["counter"] for e in events]
    assert counters == sorted(set(counters)) and counters == list(range(1, len(counters) + 1))
    assert any(e["event"] == "playbook_on_stats" for e in events)


def test_failed_host_fails_the_request_with_a_reason(api, awx_double, worker_process):
    awx_double.scenario(failed_hosts=["db-02"])
    request_id = propose_and_approve(api, "patch db-01 and db-02 with group 3, no reboot")
    view, _ = wait_for(api, request_id, lambda v: v["terminal"])
    assert view["state"] == "failed" and view["stage"] == "failed"
    statuses = {h["name"]: h["status"] for h in view["hosts"]}
    assert statuses["db-02"] == "failed" and statuses["db-01"] in ("ok", "changed")
    assert "db-02" in view["failure_reason"]


def test_unreachable_host_is_reported(api, awx_double, worker_process):
    awx_double.scenario(unreachable_hosts=["cache-01"])
    request_id = propose_and_approve(api, "patch cache-01 with Group-1")
    view, _ = wait_for(api, request_id, lambda v: v["terminal"])
    assert view["state"] == "failed"
    assert view["hosts"][0]["status"] == "unreachable"


def test_dry_run_launches_in_check_mode(api, awx_double, worker_process):
    request_id = propose_and_approve(api, "dry-run Group-3 on the prod db servers, no reboot")
    view, _ = wait_for(api, request_id, lambda v: v["terminal"])
    assert view["state"] == "succeeded" and view["check_mode"] is True
    job = _awx_job(awx_double, view["awx_job_id"])
    assert job["job_type"] == "check"
    assert set(job["limit"].split(",")) == {"db-01", "db-02"}


def _awx_job(awx_double, job_id):
    import httpx

    return httpx.get(f"{awx_double.url}jobs/{job_id}/", headers={"Authorization": f"Bearer {awx_double.token}"}).json()


def test_ten_concurrent_approvals_launch_one_job(api, awx_double, worker_process):
    chat = api.post("/api/v1/chat", json={"text": "Patch web-03 with Group-2"}, headers=USER).json()
    request_id = chat["proposal"]["id"]
    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda i: api.post(f"/api/v1/requests/{request_id}/approve",
                                                 headers=bearer("bob" if i % 2 else "carol")).status_code,
                              range(10)))
    assert codes.count(200) == 1 and codes.count(409) == 9
    wait_for(api, request_id, lambda v: v["terminal"])
    assert awx_double.stats()["launches_by_request"] == {request_id: 1}


def test_cancel_mid_run(api, awx_double, worker_process):
    awx_double.scenario(event_delay_seconds=0)
    request_id = propose_and_approve(api, "Patch web-04 with Group-3")
    wait_for(api, request_id, lambda v: v["state"] == "running")
    response = api.post(f"/api/v1/requests/{request_id}/cancel", headers=USER)
    assert response.status_code == 200
    view, _ = wait_for(api, request_id, lambda v: v["terminal"])
    assert view["state"] == "canceled" and view["stage"] == "canceled"


def test_template_that_ignores_limit_is_refused_before_launch(api, awx_double, worker_process):
    awx_double.scenario(template_asks_limit=False)
    request_id = propose_and_approve(api, "Patch web-02 with Group-1")
    view, _ = wait_for(api, request_id, lambda v: v["terminal"])
    assert view["state"] == "failed"
    assert "limit" in view["failure_reason"].lower()
    assert awx_double.stats()["launches"] == 0


def test_server_sent_events_stream_the_run_and_end_with_it(api, awx_double, worker_process):
    request_id = propose_and_approve(api, "Patch app-03 with Group-1")
    with api.stream("GET", f"/api/v1/requests/{request_id}/events/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = "".join(response.iter_text())  # the stream ends by itself once the run is over
    kinds = [line.split(":", 1)[1].strip() for line in body.splitlines() if line.startswith("event:")]
    assert "event" in kinds and "request" in kinds
    import json

    payloads = [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]
    states = [p["state"] for p in payloads if "stages" in p]  # the `request` messages
    assert states[-1] == "succeeded"
