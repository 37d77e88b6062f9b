"""The use cases over the real database: each decision is one transaction, the worker hears of it only after the
commit, and a refusal is rolled back yet audited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import bearer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USER, APPROVER = bearer("alice"), bearer("bob")


class RecordingWorker:
    """A stand-in for worker.dispatch that reads, in a session of its own, what was committed when it is called."""

    def __init__(self, delivered: bool):
        self.delivered = delivered
        self.launches: list[tuple[str, str]] = []
        self.follows: list[tuple[str, object]] = []

    def _committed(self, request_id: str):
        from sqlmodel import Session

        from core.db import get_engine
        from core.models import PatchRequest

        with Session(get_engine()) as session:
            return session.get(PatchRequest, request_id)

    def launch(self, request_id: str) -> bool:
        self.launches.append((request_id, self._committed(request_id).state))
        return self.delivered

    def follow(self, request_id: str) -> bool:
        self.follows.append((request_id, self._committed(request_id).cancel_requested_at))
        return self.delivered

    def as_worker(self):
        from api.usecases import Worker

        return Worker(launch=self.launch, follow=self.follow)


@pytest.fixture
def worker_seen(api):
    from api.deps import current_worker
    from api.main import app

    recording = RecordingWorker(delivered=False)
    app.dependency_overrides[current_worker] = recording.as_worker
    yield recording
    app.dependency_overrides.pop(current_worker, None)


def _propose(api, text="Patch web-01 with Group-1", headers=USER) -> dict:
    response = api.post("/api/v1/chat", json={"text": text}, headers=headers)
    assert response.status_code == 200 and response.json()["proposal"], response.text
    return response.json()


def _set(request_id: str, **values) -> None:
    from sqlalchemy import update
    from sqlmodel import Session

    from core.db import get_engine
    from core.models import PatchRequest

    with Session(get_engine()) as session:
        session.execute(update(PatchRequest).where(PatchRequest.id == request_id).values(**values))
        session.commit()


def _audit(**where) -> list:
    from sqlalchemy import select
    from sqlmodel import Session

    from core.db import get_engine
    from core.models import AuditLog

    with Session(get_engine()) as session:
        query = select(AuditLog).order_by(AuditLog.id)
        for key, value in where.items():
            query = query.where(getattr(AuditLog, key) == value)
        return list(session.execute(query).scalars())


def test_approve_commits_before_it_enqueues_and_a_lost_message_leaves_it_approved(api, worker_seen):
    proposal = _propose(api)["proposal"]
    response = api.post(f"/api/v1/requests/{proposal['id']}/approve", headers=APPROVER)
    assert response.status_code == 200 and response.json()["approved_by"] == "bob"
    # The worker was told once, and by then the approval was committed for anyone to read.
    assert worker_seen.launches == [(proposal["id"], "approved")]
    # The broker did not take it: the request stays approved, for the sweep to enqueue again.
    assert response.json()["state"] == "approved"
    assert api.get(f"/api/v1/requests/{proposal['id']}").json()["state"] == "approved"


def test_a_refused_approval_writes_nothing_but_its_audit_row(api, worker_seen):
    proposal = _propose(api, headers=APPROVER)["proposal"]  # bob asks for a production host, then approves it
    response = api.post(f"/api/v1/requests/{proposal['id']}/approve", headers=APPROVER)
    assert response.status_code == 403 and "four-eyes" in response.json()["detail"]
    view = api.get(f"/api/v1/requests/{proposal['id']}").json()
    assert view["state"] == "proposed" and view["approved_by"] is None
    denied = _audit(request_id=proposal["id"], action="denied")
    assert [(d.actor, "four-eyes" in d.reason) for d in denied] == [("bob", True)]
    assert _audit(request_id=proposal["id"], to_state="approved") == []
    assert worker_seen.launches == []


def test_an_overdue_proposal_is_expired_for_good_and_never_enqueued(api, worker_seen):
    from core.models import utcnow

    proposal = _propose(api)["proposal"]
    _set(proposal["id"], expires_at=utcnow())
    response = api.post(f"/api/v1/requests/{proposal['id']}/approve", headers=APPROVER)
    assert response.status_code == 409 and "expired" in response.json()["detail"]
    assert [a.actor for a in _audit(request_id=proposal["id"], to_state="expired")] == ["system"]
    assert worker_seen.launches == []


def test_a_cancel_before_the_launch_needs_no_worker_and_a_running_one_is_followed_after_the_commit(api, worker_seen):
    before = _propose(api, "Patch dev-web-01 with Group-1")["proposal"]
    _set(before["id"], state="queued")
    response = api.post(f"/api/v1/requests/{before['id']}/cancel", headers=USER)
    assert response.status_code == 200 and response.json()["state"] == "canceled"
    assert response.json()["stage"] == "canceled" and worker_seen.follows == []

    running = _propose(api, "Patch dev-app-01 with Group-1")["proposal"]
    _set(running["id"], state="running", awx_job_id=4242)
    response = api.post(f"/api/v1/requests/{running['id']}/cancel", headers=USER)
    assert response.status_code == 200 and response.json()["state"] == "running"
    [(request_id, requested_at)] = worker_seen.follows
    assert request_id == running["id"] and requested_at is not None  # committed before the follower was asked
    assert [a.actor for a in _audit(request_id=running["id"], action="cancel_requested")] == ["alice"]


def test_a_refused_reject_leaves_the_proposal_and_is_audited(api, as_user):
    proposal = _propose(api)["proposal"]
    response = api.post(f"/api/v1/requests/{proposal['id']}/reject", headers=as_user("dave", "requester"))
    assert response.status_code == 403 and "their own" in response.json()["detail"]
    assert api.get(f"/api/v1/requests/{proposal['id']}").json()["state"] == "proposed"
    assert [d.actor for d in _audit(request_id=proposal["id"], action="denied")] == ["dave"]


def test_a_refused_chat_turn_stores_nothing_of_the_turn_but_the_audit_row(api):
    first = _propose(api, "Patch dev-web-01 with Group-1")
    before = api.get(f"/api/v1/conversations/{first['conversation_id']}/messages", headers=USER).json()["items"]
    response = api.post("/api/v1/chat", json={"conversation_id": first["conversation_id"],
                                             "text": "Patch dev-web-01 with Group-2"}, headers=bearer("root"))
    assert response.status_code == 403
    after = api.get(f"/api/v1/conversations/{first['conversation_id']}/messages", headers=USER).json()["items"]
    assert after == before and len(before) == 2
    assert api.get(f"/api/v1/requests/{first['proposal']['id']}").json()["state"] == "proposed"
    denied = [d for d in _audit(action="denied") if d.actor == "root"]
    assert len(denied) == 1 and first["conversation_id"] in denied[0].reason


def test_enqueue_launch_marks_queued_only_when_the_broker_took_the_message(api, monkeypatch):
    from worker import dispatch

    taken = _propose(api, "Patch dev-web-01 with Group-1")["proposal"]["id"]
    lost = _propose(api, "Patch dev-app-01 with Group-1")["proposal"]["id"]
    for request_id in (taken, lost):
        _set(request_id, state="approved")
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(dispatch, "_send", lambda task, rid, countdown=None: sent.append((task, rid)) or rid == taken)
    assert dispatch.enqueue_launch(taken) is True and dispatch.enqueue_launch(lost) is False
    assert sent == [(dispatch.LAUNCH_TASK, taken), (dispatch.LAUNCH_TASK, lost)]
    assert api.get(f"/api/v1/requests/{taken}").json()["state"] == "queued"
    assert api.get(f"/api/v1/requests/{lost}").json()["state"] == "approved"
    assert [(a.actor, a.from_state) for a in _audit(request_id=taken, to_state="queued")] == [("system", "approved")]
    # A request someone moved on meanwhile is left as it is.
    _set(lost, state="canceled")
    dispatch.mark_queued(lost)
    assert api.get(f"/api/v1/requests/{lost}").json()["state"] == "canceled"


def test_an_approval_in_the_api_process_loads_no_worker_execution_code(api, stack_env):
    """A whole approval, in a fresh API process: the launch goes out through worker.dispatch, and neither the
    execution code nor the AWX client is ever imported there."""
    proposal = _propose(api, "Patch dev-db-01 with Group-1")["proposal"]
    script = f"""
import json, sys
from fastapi.testclient import TestClient
from api.main import app
with TestClient(app) as client:
    response = client.post("/api/v1/requests/{proposal['id']}/approve", headers={APPROVER!r})
print(json.dumps({{"status": response.status_code, "state": response.json().get("state"),
                  "modules": sorted(m for m in sys.modules if m.startswith("worker"))}}))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, **stack_env, "API_METRICS_PORT": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 200 and result["state"] == "queued", result
    assert result["modules"] == ["worker", "worker.celery_app", "worker.dispatch"]


def test_the_awx_check_goes_through_the_client(awx_double):
    from api.routes.system import awx_status
    from core.settings import Settings

    good = Settings(awx_url=awx_double.url, awx_token=awx_double.token)
    assert awx_status(good) == "ok"
    assert awx_status(Settings(awx_url=awx_double.url, awx_token="not-the-token")) == "token refused"
    assert awx_status(Settings(awx_url="http://127.0.0.1:9/api/v2/", awx_token="x")) == "down"
    assert awx_status(Settings(awx_url=None)) == "unconfigured"
