"""The one state machine of a patch request. Every state change goes through `transition()`.

A transition is a conditional UPDATE (`... WHERE id = :id AND state = :from`), so concurrent callers cannot both
win (ten approve clicks launch one job), and each change appends an audit row in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col

from core.db import rows_changed
from core.models import AuditLog, PatchRequest, utcnow
from core.observability import REQUEST_TRANSITIONS


class RequestState(StrEnum):
    """The states of a patch request. A StrEnum: members compare equal to, and store as, their values."""

    PROPOSED = "proposed"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    QUEUED = "queued"
    LAUNCHING = "launching"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ERROR = "error"


PROPOSED, APPROVED, REJECTED, EXPIRED = (RequestState.PROPOSED, RequestState.APPROVED, RequestState.REJECTED,
                                         RequestState.EXPIRED)
QUEUED, LAUNCHING, RUNNING = RequestState.QUEUED, RequestState.LAUNCHING, RequestState.RUNNING
SUCCEEDED, FAILED, CANCELED, ERROR = (RequestState.SUCCEEDED, RequestState.FAILED, RequestState.CANCELED,
                                      RequestState.ERROR)

TRANSITIONS: dict[RequestState, frozenset[RequestState]] = {
    PROPOSED: frozenset({APPROVED, REJECTED, EXPIRED}),
    APPROVED: frozenset({QUEUED, LAUNCHING, CANCELED, ERROR}),  # LAUNCHING: the sweep may launch before queueing
    QUEUED: frozenset({LAUNCHING, CANCELED, ERROR}),
    LAUNCHING: frozenset({RUNNING, FAILED, ERROR}),
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELED, ERROR}),
    REJECTED: frozenset(),
    EXPIRED: frozenset(),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELED: frozenset(),
    ERROR: frozenset(),
}
STATES: tuple[RequestState, ...] = tuple(RequestState)
TERMINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
ACTIVE = frozenset({APPROVED, QUEUED, LAUNCHING, RUNNING})
CANCELABLE = frozenset({APPROVED, QUEUED, LAUNCHING, RUNNING})  # launching: canceled once AWX names its job
# Which requests "list jobs" shows when the user asks for running, failed or finished ones.
JOBS_SHOWN = {"active": ACTIVE, "failed": frozenset({FAILED, ERROR}),
              "finished": frozenset({SUCCEEDED, FAILED, CANCELED, ERROR})}


# How each state is shown: its words and its icon.
STATE_LABELS = {
    PROPOSED: "waiting for approval", APPROVED: "approved", QUEUED: "queued", LAUNCHING: "launching",
    RUNNING: "running", SUCCEEDED: "succeeded", FAILED: "failed", CANCELED: "canceled", ERROR: "error",
    REJECTED: "rejected", EXPIRED: "expired",
}
STATE_ICONS = {PROPOSED: "📝", APPROVED: "👍", QUEUED: "🕒", LAUNCHING: "🚀", RUNNING: "⏳", SUCCEEDED: "✅",
               FAILED: "❌", ERROR: "❌", CANCELED: "🚫", REJECTED: "✋", EXPIRED: "⌛"}


class Stage(StrEnum):
    """The stages of a run shown to the user, in order."""

    PENDING = "pending"
    PRECHECKS = "prechecks"
    PATCHING = "patching"
    REBOOT = "reboot"
    POSTCHECKS = "postchecks"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


STAGES: tuple[Stage, ...] = tuple(Stage)
# The stages a run's timeline lists, in order (pending, failed and canceled are where a run is, not steps of it).
TIMELINE_STAGES: tuple[Stage, ...] = (Stage.PRECHECKS, Stage.PATCHING, Stage.REBOOT, Stage.POSTCHECKS,
                                      Stage.COMPLETED)
# The play names of the reference playbook that start each stage.
PLAY_STAGES = {"pre-checks": Stage.PRECHECKS, "patching": Stage.PATCHING, "reboot": Stage.REBOOT,
               "post-checks": Stage.POSTCHECKS}
STAGE_LABELS = {
    Stage.PENDING: "Waiting to start",
    Stage.PRECHECKS: "Pre-checks started",
    Stage.PATCHING: "Patching in progress",
    Stage.REBOOT: "Reboot in progress",
    Stage.POSTCHECKS: "Post-checks running",
    Stage.COMPLETED: "Patching completed",
    Stage.FAILED: "Patching failed",
    Stage.CANCELED: "Canceled",
}
STAGE_TITLES = {Stage.PRECHECKS: "Pre-checks", Stage.PATCHING: "Patching", Stage.REBOOT: "Reboot",
                Stage.POSTCHECKS: "Post-checks", Stage.COMPLETED: "Completed"}


class StageStatus(StrEnum):
    """Where a stage of a run's timeline stands: running now, finished, not needed, not reached yet, never reached
    because the run ended before it, or where the run failed or was canceled."""

    CURRENT = "current"
    DONE = "done"
    SKIPPED = "skipped"
    PENDING = "pending"
    NOT_RUN = "not_run"
    FAILED = "failed"
    CANCELED = "canceled"


class IllegalTransition(Exception):
    """The request is not in a state that allows this change. The API answers 409 with `str(exc)`."""

    def __init__(self, request_id: str, current: str, wanted: str, why: str | None = None):
        self.request_id, self.current, self.wanted = request_id, current, wanted
        message = why or f"request {request_id} is {current}; it cannot become {wanted}"
        super().__init__(message)


def check_transition(current: RequestState | str, wanted: RequestState | str) -> bool:
    """Whether the machine allows `current` -> `wanted` (a string that is no state allows nothing)."""
    return wanted in TRANSITIONS.get(RequestState(current), frozenset()) if current in STATES else False


def transition(
    session: Session,
    request: PatchRequest,
    to_state: RequestState,
    *,
    actor: str,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
    **fields: Any,
) -> PatchRequest:
    """Move `request` to `to_state` if the machine allows it and nobody moved it first. Does not commit."""
    from_state = request.state
    if not check_transition(from_state, to_state):
        raise IllegalTransition(request.id, from_state, to_state)
    now: datetime = utcnow()
    values = {"state": to_state, "updated_at": now, **fields}
    result = session.execute(
        update(PatchRequest)
        .where(col(PatchRequest.id) == request.id, col(PatchRequest.state) == from_state)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if rows_changed(result) != 1:
        session.refresh(request)
        raise IllegalTransition(
            request.id, request.state, to_state,
            f"request {request.id} changed to {request.state} meanwhile; it cannot become {to_state}",
        )
    session.add(
        AuditLog(
            at=now, actor=actor, request_id=request.id, action="transition",
            from_state=from_state, to_state=to_state, reason=reason, detail=detail,
        )
    )
    session.flush()
    session.refresh(request)
    REQUEST_TRANSITIONS.labels(to_state=to_state).inc()
    return request


def audit(session: Session, *, actor: str, action: str, request_id: str | None = None,
          reason: str | None = None, detail: dict[str, Any] | None = None) -> None:
    session.add(AuditLog(actor=actor, action=action, request_id=request_id, reason=reason, detail=detail))
