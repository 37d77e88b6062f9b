"""The one way into the worker: putting work on the queue, and asking whether the broker answers.

The API reaches the worker through this module only (it never imports the execution code or the AWX client).
Publishing is best effort by design: if Redis is down the request stays in PostgreSQL and the sweep enqueues it
later, so callers never fail a user action because of the broker. The Celery app is imported on first use, so
importing this module costs nothing.
"""

from __future__ import annotations

import logging

from sqlmodel import Session

from core.db import get_engine
from core.models import PatchRequest, utcnow
from core.states import APPROVED, LAUNCHING, QUEUED, IllegalTransition, transition

log = logging.getLogger("patchpilot.dispatch")

_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}

LAUNCH_TASK = "worker.tasks.launch_request"
FOLLOW_TASK = "worker.tasks.follow_request"


def _send(task: str, request_id: str, countdown: float | None = None) -> bool:
    from worker.celery_app import celery_app  # on first use: the Celery app is not needed to import this module

    try:
        celery_app.send_task(task, args=[request_id], countdown=countdown, retry=True, retry_policy=_PUBLISH_RETRY)
        return True
    except Exception as exc:
        log.warning("could not enqueue %s for %s: %s", task, request_id, exc)
        return False


def enqueue_launch(request_id: str) -> bool:
    """Publish the launch of an approved request, then mark it `queued` in a short transaction of its own.

    Call it after the approval is committed: a message lost before or after the publish leaves an `approved` (or
    `queued`) row that the sweep enqueues again. False when the broker did not take the message."""
    if not _send(LAUNCH_TASK, request_id):
        return False
    mark_queued(request_id)
    return True


def enqueue_follow(request_id: str, countdown: float | None = None) -> bool:
    """Ask a worker to poll this request now (after a launch, or a cancel the follower must pass on to AWX)."""
    return _send(FOLLOW_TASK, request_id, countdown)


def mark_queued(request_id: str) -> None:
    """approved -> queued once the launch message is on the broker; a `queued` or `launching` one is touched
    instead (its `updated_at` is what the sweep measures a stuck request by). Losing a race is fine: whoever
    moved the request first (the worker launching it, a cancel) wins."""
    with Session(get_engine(), expire_on_commit=False) as session:
        req = session.get(PatchRequest, request_id)
        if req is None:
            return
        if req.state == APPROVED:
            try:
                transition(session, req, QUEUED, actor="system", reason="launch enqueued")
            except IllegalTransition:
                session.rollback()
                return
        elif req.state in (QUEUED, LAUNCHING):
            req.updated_at = utcnow()
        session.commit()


def broker_reachable(timeout: float = 2.0) -> bool:
    from worker.celery_app import celery_app  # on first use, as in _send

    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:
        return False
