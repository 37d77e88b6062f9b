"""worker.execution against the real database and the AWX double, without Celery: the races the tasks meet."""

import pytest
from sqlalchemy import update
from sqlmodel import Session

from core.db import get_engine
from core.models import PatchRequest
from worker import execution
from worker.awx_client import AWXClient

pytestmark = pytest.mark.integration


def _approved(**fields) -> str:
    with Session(get_engine()) as session:
        req = PatchRequest(action="patch", hosts=["web-01"], patch_group="Group-1", requested_by="alice",
                           approved_by="bob", state="approved", **fields)
        session.add(req)
        session.commit()
        return req.id


def _state(request_id: str) -> str:
    with Session(get_engine()) as session:
        return session.get(PatchRequest, request_id).state


def test_launch_takes_a_request_the_api_queued_meanwhile(db, stack_env, awx_double, monkeypatch):
    request_id = _approved()
    real_transition = execution.transition

    def racing(session, req, to_state, **kw):
        # The API's approved -> queued lands between the worker's read and its own change.
        if to_state == "launching" and req.state == "approved":
            with Session(get_engine()) as other:
                other.execute(update(PatchRequest).where(PatchRequest.id == req.id).values(state="queued"))
                other.commit()
        return real_transition(session, req, to_state, **kw)

    monkeypatch.setattr(execution, "transition", racing)
    monkeypatch.setattr("worker.dispatch.enqueue_follow", lambda *a, **k: True)
    with AWXClient.from_settings() as client:
        assert execution.launch(request_id, client) == "launched"
    assert _state(request_id) == "running"
    assert awx_double.stats()["launches_by_request"] == {request_id: 1}


def test_a_second_launch_of_a_running_request_does_nothing(db, stack_env, awx_double, monkeypatch):
    request_id = _approved()
    monkeypatch.setattr("worker.dispatch.enqueue_follow", lambda *a, **k: True)
    with AWXClient.from_settings() as client:
        assert execution.launch(request_id, client) == "launched"
        assert execution.launch(request_id, client) == "skipped"
    assert awx_double.stats()["launches"] == 1


def test_recovery_adopts_a_job_launched_by_a_dead_attempt(db, stack_env, awx_double, monkeypatch):
    """State `launching` with no job id recorded, while AWX has the job: adopted, not launched again."""
    from core.models import utcnow

    request_id = _approved()
    monkeypatch.setattr("worker.dispatch.enqueue_follow", lambda *a, **k: True)
    with AWXClient.from_settings() as client:
        template = client.find_job_template("Patch Linux")
        client.launch(int(template["id"]), limit="web-01", extra_vars={"patchpilot_request_id": request_id})
        with Session(get_engine()) as session:
            session.execute(update(PatchRequest).where(PatchRequest.id == request_id)
                            .values(state="launching", launch_started_at=utcnow(), launch_attempts=1))
            session.commit()
        assert execution.launch(request_id, client) == "recovered"
    assert _state(request_id) == "running"
    assert awx_double.stats()["launches"] == 1
