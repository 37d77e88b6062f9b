"""A run's end: the request takes AWX's final status, its final stage, and a reason naming the hosts that failed."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import select
from sqlmodel import Session, col

from core.models import HostResult, PatchRequest, utcnow
from core.states import CANCELED, ERROR, FAILED, SUCCEEDED, RequestState, Stage, audit, transition
from core.statuses import HOST_FAILED, AwxStatus
from worker.events import reach_stage

log = logging.getLogger("patchpilot.worker")

WORKER = "worker"  # the actor of the worker's state changes in the audit log
FINAL_STATE = {AwxStatus.SUCCESSFUL: SUCCEEDED, AwxStatus.FAILED: FAILED, AwxStatus.ERROR: ERROR,
               AwxStatus.CANCELED: CANCELED}
FINAL_STAGE = {SUCCEEDED: Stage.COMPLETED, FAILED: Stage.FAILED, ERROR: Stage.FAILED, CANCELED: Stage.CANCELED}


def finish_job(session: Session, req: PatchRequest, job: dict, note: str | None = None) -> None:
    """The request takes AWX's final status; `note` (the give-up on event processing) is kept with the reason."""
    final: RequestState = FINAL_STATE[AwxStatus(job["status"])]
    stage = FINAL_STAGE[final]
    reach_stage(session, req, stage)
    req.stage = stage
    reason = _failure_reason(session, req, job) if final in (FAILED, ERROR) else None
    if note:
        reason = f"{reason}. {note}" if reason else note
        audit(session, actor=WORKER, action="event_processing_gave_up", request_id=req.id, reason=note,
              detail={"awx_job_id": req.awx_job_id, "awx_status": job["status"]})
        log.warning("request %s: %s", req.id, note)
    session.flush()
    transition(session, req, final, actor=WORKER, reason=f"AWX job {req.awx_job_id} {job['status']}",
               finished_at=utcnow(), stage=stage, failure_reason=reason, awx_status=job["status"],
               event_cursor=req.event_cursor, latest_task=req.latest_task, last_polled_at=req.last_polled_at)


def _failure_reason(session: Session, req: PatchRequest, job: dict) -> str:
    """AWX's explanation and the hosts that failed, with their reasons."""
    bad: Sequence[HostResult] = session.execute(select(HostResult).where(col(HostResult.request_id) == req.id,
                                                   col(HostResult.status).in_(sorted(HOST_FAILED)))).scalars().all()
    details = "; ".join(f"{h.host} {h.status}" + (f" ({h.message})" if h.message else "") for h in bad)
    explanation = job.get("job_explanation")
    if details and explanation:
        return f"{explanation} — {details}"
    return explanation or details or f"AWX job {req.awx_job_id} ended {job['status']}"
