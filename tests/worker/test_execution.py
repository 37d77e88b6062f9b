"""worker.launch against the real database and the AWX double, without Celery: the races the tasks meet."""

import pytest
from sqlalchemy import update
from sqlmodel import Session

from core.db import get_engine
from core.inventory import get_catalog
from core.models import PatchRequest
from core.settings import get_settings
from worker import launch as launching
from worker.awx_client import AWXClient

pytestmark = pytest.mark.integration


def _approved(**fields) -> str:
    with Session(get_engine()) as session:
        req = PatchRequest(action="patch", hosts=["web-01"], patch_group="Group-1", requested_by="alice",
                           approved_by="bob", state="approved", **fields)
        session.add(req)
        session.commit()
        return req.id


def _launch(request_id: str, client: AWXClient) -> str:
    return launching.launch(request_id, client, get_settings(), get_catalog())


def _take(request_id: str):
    return launching.take_launch(request_id, get_settings(), get_catalog())


def _state(request_id: str) -> str:
    with Session(get_engine()) as session:
        return session.get(PatchRequest, request_id).state


def test_launch_takes_a_request_the_api_queued_meanwhile(db, stack_env, awx_double, monkeypatch):
    request_id = _approved()
    real_transition = launching.transition

    def racing(session, req, to_state, **kw):
        # The API's approved -> queued lands between the worker's read and its own change.
        if to_state == "launching" and req.state == "approved":
            with Session(get_engine()) as other:
                other.execute(update(PatchRequest).where(PatchRequest.id == req.id).values(state="queued"))
                other.commit()
        return real_transition(session, req, to_state, **kw)

    monkeypatch.setattr(launching, "transition", racing)
    with AWXClient.from_settings() as client:
        assert _launch(request_id, client) == "launched"
    assert _state(request_id) == "running"
    assert awx_double.stats()["launches_by_request"] == {request_id: 1}


def test_a_second_launch_of_a_running_request_does_nothing(db, stack_env, awx_double):
    request_id = _approved()
    with AWXClient.from_settings() as client:
        assert _launch(request_id, client) == "launched"
        assert _launch(request_id, client) == "skipped"
    assert awx_double.stats()["launches"] == 1


def test_recovery_adopts_a_job_launched_by_a_dead_attempt(db, stack_env, awx_double):
    """State `launching` with no job id recorded, while AWX has the job: adopted, not launched again."""
    from core.models import utcnow

    request_id = _approved()
    with AWXClient.from_settings() as client:
        template = client.find_job_template("Patch Linux")
        client.launch(int(template["id"]), limit="web-01", extra_vars={"patchpilot_request_id": request_id})
        with Session(get_engine()) as session:
            session.execute(update(PatchRequest).where(PatchRequest.id == request_id)
                            .values(state="launching", launch_started_at=utcnow(), launch_attempts=1))
            session.commit()
        assert _launch(request_id, client) == "recovered"
    assert _state(request_id) == "running"
    assert awx_double.stats()["launches"] == 1


def test_a_launch_schedules_its_first_poll_when_events_are_likely_and_sends_no_message(db, stack_env, awx_double,
                                                                                       monkeypatch):
    """The launch POST is not a poll: the first poll is due FIRST_POLL_SECONDS later, from the configuration the
    launch was given, and the follow rounds take it up (no follow message polling a job AWX has not started)."""
    sent: list[tuple] = []
    monkeypatch.setattr("worker.dispatch._send", lambda *args, **kwargs: sent.append(args) or True)
    settings = get_settings().model_copy(update={"first_poll_seconds": 2.0, "follow_poll_seconds": 2.5})
    request_id = _approved()
    with AWXClient.from_settings() as client:
        assert launching.launch(request_id, client, settings, get_catalog()) == "launched"
    assert sent == []
    with Session(get_engine()) as session:
        req = session.get(PatchRequest, request_id)
        assert req.state == "running" and req.last_polled_at is None
        assert (req.next_poll_at - req.started_at).total_seconds() == pytest.approx(2.0, abs=0.01)


# --------------------------------------------------------------------------------- the launch fence


def _jobs_of(awx_double, request_id: str) -> list[dict]:
    import httpx

    rows = httpx.get(f"{awx_double.url}jobs/?page_size=200", headers={"Authorization": f"Bearer {awx_double.token}"},
                     timeout=10).json()["results"]
    import json

    return [row for row in rows if json.loads(row["extra_vars"]).get("patchpilot_request_id") == request_id]


def _drop_lock_connection(request_id: str) -> int:
    """What a PostgreSQL restart, a failover or an idle timeout does to the launch lock's connection."""
    from sqlalchemy import text

    from core.db import lock_key

    key = lock_key("launch", request_id)
    with get_engine().connect() as conn:
        pids = conn.execute(text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) AND classid = :hi AND objid = :lo"),
            {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}).scalars().all()
        for pid in pids:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        conn.commit()
    return len(pids)


def test_a_launch_that_lost_its_lock_while_waiting_on_awx_never_launches_a_second_job(db, stack_env, awx_double):
    """The compound fault: worker A waits out a 429 on the launch path; meanwhile its lock connection drops and
    worker B takes the launch over and launches. A wakes: the fence stops it (or it finds B's job)."""
    request_id = _approved()
    awx_double.scenario(rate_limit={"count": 1, "retry_after": 25, "path": "/launch/"})
    outcomes: dict[str, str] = {}

    def a_sleeps(seconds: float) -> None:
        assert seconds == 25  # Retry-After honoured
        assert _drop_lock_connection(request_id) == 1
        with AWXClient.from_settings() as b:
            outcomes["B"] = _launch(request_id, b)

    settings = get_settings()
    a = AWXClient(settings.awx_url, settings.awx_token.get_secret_value(), retry_attempts=3, sleep=a_sleeps)
    with a:
        outcomes["A"] = _launch(request_id, a)
    assert outcomes["B"] == "launched"
    assert outcomes["A"] in ("recovered", "fenced")
    assert awx_double.stats()["launches_by_request"] == {request_id: 1}
    with Session(get_engine()) as session:
        req = session.get(PatchRequest, request_id)
        assert req.state == "running" and req.awx_job_id == _jobs_of(awx_double, request_id)[0]["id"]
        assert not req.duplicate_awx_jobs


def test_the_fence_refuses_a_replaced_token_and_keeps_others_off_a_proven_post(db, stack_env):
    request_id = _approved()
    taken_a = _take(request_id)
    assert not isinstance(taken_a, str)
    _, token_a, recovering = taken_a
    assert recovering is False
    taken_b = _take(request_id)  # A is not mid-POST: B may take over (A's lock was lost)
    assert not isinstance(taken_b, str)
    _, token_b, recovering = taken_b
    assert recovering is True and token_b != token_a
    assert launching.prove_launch(request_id, token_a, get_settings()) is False  # A may no longer launch
    assert launching.prove_launch(request_id, token_b, get_settings()) is True
    assert _take(request_id) == "busy"  # B's POST may be in flight: nobody takes over now


def test_a_second_job_is_canceled_at_once_recorded_and_reported(db, stack_env, awx_double, monkeypatch, caplog):
    """The second line: should two jobs exist for one request anyway (a POST that outlived its lease), the
    launch lists the template's jobs for the request right after its 201, keeps the oldest and cancels the rest."""
    import logging

    from core.observability import DUPLICATE_JOBS

    request_id = _approved()
    before = DUPLICATE_JOBS._value.get()
    with AWXClient.from_settings() as client:
        template_id = int(client.find_job_template("Patch Linux")["id"])
        real_launch = client.launch
        first: dict[str, int] = {}

        def launch_with_a_ghost(*args, **kwargs):
            # A POST of an earlier attempt reaches AWX just before this one: the fence could not see it.
            first["job"] = real_launch(template_id, limit="web-01",
                                       extra_vars={"patchpilot_request_id": request_id}).job_id
            return real_launch(*args, **kwargs)

        monkeypatch.setattr(client, "launch", launch_with_a_ghost)
        with caplog.at_level(logging.CRITICAL, logger="patchpilot.worker"):
            assert _launch(request_id, client) == "launched"
    jobs = _jobs_of(awx_double, request_id)
    assert [j["id"] for j in jobs] == [first["job"], first["job"] + 1]
    assert jobs[1]["status"] in ("canceled", "pending", "waiting")  # the cancel was accepted at once
    with Session(get_engine()) as session:
        req = session.get(PatchRequest, request_id)
        assert req.state == "running" and req.awx_job_id == first["job"]  # the oldest is kept
        assert [(d["job_id"], d["cancel"]) for d in req.duplicate_awx_jobs] == [(first["job"] + 1, "canceled")]
        from sqlalchemy import select

        from core.models import AuditLog

        assert session.execute(select(AuditLog).where(AuditLog.request_id == request_id,
                                                      AuditLog.action == "duplicate_awx_jobs")).scalars().one()
    assert DUPLICATE_JOBS._value.get() == before + 1
    alert = [r for r in caplog.records if getattr(r, "alert", False)]
    assert alert and alert[0].levelno == logging.CRITICAL and alert[0].duplicate_awx_job_ids == [first["job"] + 1]
