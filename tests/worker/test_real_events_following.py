"""Following what real AWX sends: the recorded event streams (awx_double/streams/) through the follower, per-host
state from runner_on_start / item events with the real failure reason, dry runs that say "would change", stored
event sizes, and the give-up when event processing never finishes."""

from __future__ import annotations

import json
import time

import pytest
from sqlmodel import Session, select

from awx_double.recorded import plan_recorded
from awx_double.timeline import RunOptions
from core.inventory import get_catalog
from core.models import AuditLog, HostResult, JobEvent, PatchRequest, utcnow
from core.settings import get_settings
from core.stage_map import get_stage_map
from worker import events, follow
from worker.awx_client import AWXClient
from worker.event_rows import event_row, trim_event_data
from worker.job_status import DirectJobStatus, JobStatuses

# --- per-host state from real events --------------------------------------------------------------------------


def _request(session: Session, hosts: list[str], *, check_mode: bool = False) -> PatchRequest:
    req = PatchRequest(action="patch", hosts=hosts, patch_group="Group-1", requested_by="alice", approved_by="bob",
                       state="running", started_at=utcnow(), awx_job_id=1, check_mode=check_mode)
    session.add(req)
    session.flush()
    for host in hosts:
        session.add(HostResult(request_id=req.id, host=host, status="pending"))
    session.flush()
    return req


def _awx_rows(plan) -> list[dict]:
    return [{"counter": e.counter, "event": e.event, "host_name": e.host_name or "", "play": e.play, "task": e.task,
             "failed": e.failed, "changed": e.changed, "stdout": e.stdout, "event_data": e.event_data}
            for e in plan.events]


def _store(session: Session, req: PatchRequest, rows: list[dict]) -> None:
    settings = get_settings()
    events.store_events(session, req, rows, settings, get_stage_map(), events.template_of(req, settings, get_catalog()))


def _follower(client: AWXClient, statuses: JobStatuses, **settings) -> follow.Follower:
    return follow.Follower(client, statuses, get_settings().model_copy(update=settings), get_catalog(),
                           get_stage_map())


def _hosts(session: Session, request_id: str) -> dict[str, HostResult]:
    return {h.host: h for h in session.exec(select(HostResult).where(HostResult.request_id == request_id))}


@pytest.mark.integration
def test_a_host_whose_task_has_started_is_running_not_ok(db, stack_env) -> None:
    from core.db import get_engine

    rows = _awx_rows(plan_recorded(["web-01", "web-02"], RunOptions()))
    # up to the runner_on_start of the first Patching task on web-01
    cut = next(i for i, r in enumerate(rows) if r["event"] == "runner_on_start" and r["play"] == "Patching")
    with Session(get_engine()) as session:
        req = _request(session, ["web-01", "web-02"])
        _store(session, req, rows[:cut + 1])
        hosts = _hosts(session, req.id)
        assert hosts["web-01"].status == "running"
        _store(session, req, rows[cut + 1:cut + 4])
        session.flush()
        hosts = _hosts(session, req.id)
        assert {h.status for h in hosts.values()} <= {"running", "ok", "skipped"}
        _store(session, req, rows[cut + 4:])
        hosts = _hosts(session, req.id)
        assert hosts["web-01"].status == "changed" and hosts["web-01"].changed == 2  # apt, in check mode
        # apt's simulation in the recorded run lists each package it would upgrade, from and to which version
        packages = {p["name"]: p for p in hosts["web-01"].packages}
        assert len(packages) > 10 and packages["libgcrypt20"] == {
            "name": "libgcrypt20", "old": "1.10.1-3", "new": "1.10.1-3+deb12u1"}
        assert hosts["web-02"].packages == hosts["web-01"].packages  # both hosts were the recording machine
        session.rollback()


@pytest.mark.integration
def test_a_failed_item_keeps_its_real_reason(db, stack_env) -> None:
    from core.db import get_engine

    rows = _awx_rows(plan_recorded(["web-01", "db-01"], RunOptions(failed_hosts=frozenset({"db-01"}))))
    with Session(get_engine()) as session:
        req = _request(session, ["web-01", "db-01"])
        for start in range(0, len(rows), 7):  # in several polls, as a follower reads them
            _store(session, req, rows[start:start + 7])
        hosts = _hosts(session, req.id)
        assert hosts["db-01"].status == "failed"
        assert hosts["db-01"].message.startswith("Check free disk space (item /var): Only ")
        assert "MiB free on /var, 99999999 MiB needed." in hosts["db-01"].message
        assert "One or more items failed" not in hosts["db-01"].message
        assert hosts["web-01"].status == "changed"
        session.rollback()


@pytest.mark.integration
def test_unreachable_replay_says_why(db, stack_env) -> None:
    from core.db import get_engine

    rows = _awx_rows(plan_recorded(["web-01", "db-01"], RunOptions(unreachable_hosts=frozenset({"db-01"}))))
    with Session(get_engine()) as session:
        req = _request(session, ["web-01", "db-01"])
        _store(session, req, rows)
        hosts = _hosts(session, req.id)
        assert hosts["db-01"].status == "unreachable" and "Connection refused" in hosts["db-01"].message
        session.rollback()


# --- event sizes ---------------------------------------------------------------------------------------------


def test_stored_event_data_is_trimmed_and_says_so() -> None:
    plan = plan_recorded(["web-01"], RunOptions())
    biggest = max(plan.events, key=lambda e: len(json.dumps(e.event_data)))
    kept = trim_event_data(biggest.event_data, 16384)
    assert len(json.dumps(kept)) <= 16384 < len(json.dumps(biggest.event_data))
    assert kept["_trimmed"]["bytes"] == len(json.dumps(biggest.event_data)) and kept["_trimmed"]["dropped"]
    assert kept["host"] == "web-01" and kept["task"] == biggest.task and "rc" in kept["res"]
    small = plan.events[0].event_data
    assert trim_event_data(small, 16384) == small


def test_a_failures_stdout_is_kept_whole_up_to_its_limit() -> None:
    settings = get_settings().model_copy(update={"event_data_max_bytes": 2048, "failure_stdout_max_chars": 8192})
    long = "x" * 6000
    failed = event_row("r", {"counter": 1, "event": "runner_on_failed", "failed": True, "stdout": long}, settings)
    ok = event_row("r", {"counter": 2, "event": "runner_on_ok", "stdout": long}, settings)
    huge = event_row("r", {"counter": 3, "event": "runner_on_failed", "stdout": "y" * 9000,
                           "event_data": {"res": {"msg": "boom", "stdout": "z" * 5000}}}, settings)
    assert failed["stdout"] == long
    assert ok["stdout"].startswith("x" * 2048) and "3952 more characters not stored" in ok["stdout"]
    assert "808 more characters not stored" in huge["stdout"]
    assert huge["data"]["res"]["msg"] == "boom" and huge["data"]["_trimmed"]


# --- following to the end --------------------------------------------------------------------------------------


def _launch_running(client: AWXClient, hosts: list[str], *, check_mode: bool = False) -> str:
    from core.db import get_engine

    template = int(client.find_job_template("Patch Linux")["id"])
    with Session(get_engine()) as session:
        req = PatchRequest(action="patch", hosts=hosts, patch_group="Group-1", requested_by="alice",
                           approved_by="bob", state="running", started_at=utcnow(), check_mode=check_mode)
        session.add(req)
        session.flush()
        req.awx_job_id = client.launch(template, limit=",".join(hosts), job_type="check" if check_mode else "run",
                                       extra_vars={"patchpilot_request_id": req.id}).job_id
        for host in hosts:
            session.add(HostResult(request_id=req.id, host=host, status="pending"))
        session.commit()
        return req.id


def _follow(request_id: str, client: AWXClient, limit: float = 30.0, **settings) -> PatchRequest:
    from core.db import get_engine

    follower = _follower(client, DirectJobStatus(client), **settings)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        follow.poll(request_id, follower)
        with Session(get_engine()) as session:
            req = session.get(PatchRequest, request_id)
            if req.state != "running":
                return req
            session.execute(PatchRequest.__table__.update().where(PatchRequest.id == request_id)
                            .values(last_polled_at=None))
            session.commit()
        time.sleep(0.3)
    raise AssertionError(f"request {request_id} still running after {limit} s")


@pytest.mark.integration
def test_a_recorded_failure_shows_the_failed_items_reason_in_the_api(own_database, awx_double) -> None:
    from api.services.requests import read_view
    from core.db import get_engine
    from core.inventory import get_catalog
    from core.settings import get_settings

    awx_double.scenario(recorded_events="auto", failed_hosts=["web-02"])
    with AWXClient.from_settings() as client:
        request_id = _launch_running(client, ["web-01", "web-02"], check_mode=True)
        req = _follow(request_id, client)
    assert req.state == "failed"
    assert "Check free disk space (item /var): Only " in req.failure_reason
    with Session(get_engine()) as session:
        view = read_view(session, request_id, get_catalog(), get_settings())
        stored = session.exec(select(JobEvent).where(JobEvent.request_id == request_id)).all()
    hosts = {h.name: h for h in view.hosts}
    assert hosts["web-02"].status == "failed" and "99999999 MiB needed" in hosts["web-02"].message
    # a dry run: apt said changed, the API says "would change"
    assert hosts["web-01"].status == "would change"
    assert max(len(json.dumps(e.data or {})) for e in stored) <= get_settings().event_data_max_bytes


@pytest.mark.integration
def test_a_dry_runs_task_output_says_would_change(own_database, awx_double) -> None:
    from api.services.requests import list_views, read_view
    from api.services.timeline import recent_tasks
    from core.db import get_engine

    awx_double.scenario(recorded_events="success")
    with AWXClient.from_settings() as client:
        request_id = _launch_running(client, ["web-01"], check_mode=True)
        assert _follow(request_id, client).state == "succeeded"
    with Session(get_engine()) as session:
        results = {t["result"] for t in recent_tasks(session, request_id, check_mode=True)}
        view = read_view(session, request_id, get_catalog(), get_settings())
        listed = list_views(session, state=None, limit=10, catalog=get_catalog(), settings=get_settings())
    assert "would change" in results and "changed" not in results
    # the API's view of the dry run lists the packages apt would upgrade on the host
    packages = {p.name: (p.old, p.new) for p in view.hosts[0].packages}
    assert view.hosts[0].name == "web-01" and packages["libgcrypt20"] == ("1.10.1-3", "1.10.1-3+deb12u1")
    # a list of requests leaves the package lists out: one request's view has them
    assert [r.hosts[0].packages for r in listed if r.id == request_id] == [[]]


@pytest.mark.integration
def test_event_processing_that_never_finishes_gives_up_with_a_note(own_database, awx_double) -> None:
    from core.db import get_engine

    awx_double.scenario(recorded_events="stopped", event_processing_stuck=True)
    with AWXClient.from_settings() as client:
        request_id = _launch_running(client, ["web-01"])
        req = _follow(request_id, client, event_processing_give_up_seconds=2)
    assert req.state == "error" and req.awx_status == "error"
    assert "event processing had not finished" in req.failure_reason
    with Session(get_engine()) as session:
        actions = session.exec(select(AuditLog.action).where(AuditLog.request_id == request_id)).all()
        host = session.exec(select(HostResult).where(HostResult.request_id == request_id)).one()
    assert "event_processing_gave_up" in actions
    assert host.status == "running"  # stopped while its task ran: never shown as ok


@pytest.mark.integration
def test_retry_async_and_ignored_failures_set_the_host_state(db, stack_env) -> None:
    from core.db import get_engine

    def ev(counter: int, name: str, **data) -> dict:
        res = data.pop("res", {})
        return {"counter": counter, "event": name, "host_name": "web-01", "play": "Pre-checks",
                "task": data.pop("task", "Wait for the lock"), "failed": name.endswith("failed"),
                "changed": bool(res.get("changed")), "stdout": "", "event_data": {"res": res, **data}}

    with Session(get_engine()) as session:
        req = _request(session, ["web-01"])
        _store(session, req, [ev(1, "runner_on_start"), ev(2, "runner_retry", res={"attempts": 1})])
        assert _hosts(session, req.id)["web-01"].status == "running"
        _store(session, req, [ev(3, "runner_on_ok"), ev(4, "runner_on_start", task="Apply"),
                                               ev(5, "runner_on_async_poll", task="Apply")])
        assert _hosts(session, req.id)["web-01"].status == "running"
        _store(session, req, [ev(6, "runner_on_async_ok", task="Apply", res={"changed": True}),
                                               ev(7, "verbose"), ev(8, "runner_on_start", task="Probe"),
                                               ev(9, "runner_on_failed", task="Probe", ignore_errors=True,
                                                  res={"msg": "ignored"})])
        host = _hosts(session, req.id)["web-01"]
        assert host.status == "changed" and host.failed == 0  # an ignored failure is no failure
        _store(session, req, [ev(10, "runner_on_start", task="Check"),
                                               ev(11, "runner_on_async_failed", task="Check", res={"msg": "rc 1"})])
        host = _hosts(session, req.id)["web-01"]
        assert host.status == "failed" and host.message == "Check: rc 1"
        _store(session, req, [ev(12, "runner_on_start", task="Later"), ev(13, "runner_on_ok")])
        assert _hosts(session, req.id)["web-01"].status == "failed"  # failed stays failed
        session.rollback()


class _StaleStatuses:
    """A status read from just before the job ended: it still says running."""

    def track(self, job_ids) -> None:
        pass

    def get(self, job_id: int) -> dict:
        return {"id": job_id, "status": "running"}

    def age(self, job_id: int) -> float | None:
        return 0.0


@pytest.mark.integration
def test_a_cancel_racing_the_end_of_the_run_ends_as_the_run_ended(own_database, awx_double) -> None:
    from core.db import get_engine

    with AWXClient.from_settings() as client:
        request_id = _launch_running(client, ["web-01"])
        with Session(get_engine()) as session:
            job_id = session.get(PatchRequest, request_id).awx_job_id
        deadline = time.monotonic() + 20
        while not client.get_job(job_id).get("event_processing_finished"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        with Session(get_engine()) as session:
            session.get(PatchRequest, request_id).cancel_requested_at = utcnow()
            session.commit()
        # the status read said running, the job ended before the cancel reached AWX: 403 for this token
        assert follow.poll(request_id, _follower(client, _StaleStatuses()))
        with Session(get_engine()) as session:
            req = session.get(PatchRequest, request_id)
            assert req.state == "running" and req.follow_failures == 0
        req = _follow(request_id, client)
    assert req.state == "succeeded" and req.awx_status == "successful"


@pytest.mark.integration
def test_a_dry_runs_webhook_says_would_change(db, stack_env) -> None:
    from core.db import get_engine
    from worker import notify

    with Session(get_engine()) as session:
        req = _request(session, ["web-01"], check_mode=True)
        row = _hosts(session, req.id)["web-01"]
        row.status, row.ok, row.changed = "changed", 18, 2
        session.flush()
        hosts = notify.host_summary(session, req)
        session.rollback()
    assert hosts[0]["status"] == "would change"
    body = notify.render("generic", {"kind": "succeeded", "text": "AWX job 1 succeeded", "link": "http://x/",
                                     "check_mode": True, "host_results": hosts})
    slack = notify.render("slack", {"kind": "succeeded", "text": "AWX job 1 succeeded", "link": "http://x/",
                                    "check_mode": True, "host_results": hosts})
    assert "would change" in json.dumps(body) and "changed 2" not in json.dumps(slack)
    assert "would change 2" in json.dumps(slack)
