"""Which AWX job a request follows: the one launched, or the one an interrupted launch left behind (adopted), and
never a second one. Any job beside the one kept is canceled at once, recorded on the request and in the audit log,
and reported as an alert."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert

from core.db import session_scope
from core.models import HostResult, PatchRequest, utcnow
from core.observability import DUPLICATE_JOBS
from core.settings import Settings
from core.states import APPROVED, LAUNCHING, QUEUED, RUNNING, audit, transition
from core.statuses import AwxStatus, HostStatus
from worker.awx_client import AWXClient, AWXError
from worker.finish import WORKER
from worker.follow import first_poll_in

log = logging.getLogger("patchpilot.worker")

NOT_YET_LAUNCHED = (LAUNCHING, APPROVED, QUEUED)


def settle_jobs(request_id: str, template_id: int, jobs: list[dict[str, Any]], client: AWXClient,
                settings: Settings, *, found_by: str, launched: int | None = None) -> int | None:
    """Record the one job a request follows among `jobs` (AWX's jobs for it, oldest first), and cancel and
    record any other at once. The job kept is the one already recorded, else the oldest (the first launch to
    reach AWX, which every attempt that lists after its own 201 sees); a request that ended without a job keeps
    none. Returns the job kept, or None."""
    with session_scope() as session:
        req = session.get(PatchRequest, request_id)
        if req is None:
            return None
        ids = [int(job["id"]) for job in jobs]
        kept: int | None
        if req.awx_job_id in ids:
            kept = req.awx_job_id
        elif req.state in NOT_YET_LAUNCHED or (req.state == RUNNING and req.awx_job_id is None):
            kept = ids[0]
        else:
            kept = None  # ended (or follows a job not listed): every job found here is one too many
    extra = [job for job in jobs if int(job["id"]) != kept]
    if extra:
        cancel_duplicates(request_id, kept, extra, client, found_by=found_by, launched=launched)
    if kept is not None:
        record_launch(request_id, template_id, kept, settings,
                      reason="AWX job launched" if kept == launched else "found the job of an interrupted launch")
    return kept


def cancel_duplicates(request_id: str, kept: int | None, extra: list[dict[str, Any]], client: AWXClient, *,
                      found_by: str, launched: int | None) -> None:
    records = []
    for job in extra:
        job_id = int(job["id"])
        try:
            outcome = AwxStatus.CANCELED if client.cancel(job_id) else "already finished"
        except AWXError as exc:
            outcome = f"cancel failed: {exc}"
        records.append({"job_id": job_id, "status": job.get("status"), "cancel": outcome, "found_by": found_by,
                        "launched_here": job_id == launched, "at": utcnow().isoformat()})
    DUPLICATE_JOBS.inc(len(records))
    ids = [r["job_id"] for r in records]
    with session_scope() as session:
        req = session.get(PatchRequest, request_id, with_for_update=True)
        if req is not None:
            known = {r.get("job_id") for r in (req.duplicate_awx_jobs or [])}
            req.duplicate_awx_jobs = [*(req.duplicate_awx_jobs or []),
                                      *(r for r in records if r["job_id"] not in known)]
            audit(session, actor=WORKER, action="duplicate_awx_jobs", request_id=request_id,
                  reason=f"AWX had {len(records)} more job(s) for this request than the one kept ({kept}); "
                         "canceled at once",
                  detail={"kept": kept, "duplicates": records})
    log.critical("ALERT request %s: AWX had more than one job for it; kept %s, canceled %s (%s)", request_id, kept,
                 ", ".join(f"{r['job_id']} ({r['cancel']})" for r in records), found_by,
                 extra={"alert": True, "duplicate_awx_job_ids": ids, "awx_job_id": kept})


def record_launch(request_id: str, template_id: int, job_id: int, settings: Settings, *, reason: str) -> None:
    """launching -> running with the job's id. Its first poll is due FIRST_POLL_SECONDS later (`first_poll_in`),
    when its first events are likely: polling at once finds a job AWX has not started yet, and the next poll would
    then wait a whole FOLLOW_POLL_SECONDS. The follow rounds take it from there; no message is needed."""
    with session_scope() as session:
        req = session.get(PatchRequest, request_id, with_for_update=True)
        if req is None or req.awx_job_id == job_id or req.state not in NOT_YET_LAUNCHED:
            return  # recorded already (by another attempt that saw the same job), or ended meanwhile
        if req.state != LAUNCHING:
            transition(session, req, LAUNCHING, actor=WORKER, reason="found the job in AWX")
        now = utcnow()
        transition(session, req, RUNNING, actor=WORKER, reason=reason, detail={"awx_job_id": job_id},
                   awx_job_id=job_id, awx_template_id=template_id, started_at=now, failure_reason=None,
                   next_poll_at=now + timedelta(seconds=first_poll_in(settings)), launch_lease_until=None)
        for host in req.hosts:
            session.execute(pg_insert(HostResult).values(request_id=request_id, host=host, status=HostStatus.PENDING)
                            .on_conflict_do_nothing(constraint="uq_host_results_request_host"))
