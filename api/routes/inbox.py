"""The approvals inbox and the live view of one request (what the UI redraws while a request is open)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy import select

from api.deps import CatalogDep, SessionDep, SettingsDep, ViewerDep
from api.errors import NotFound
from api.schemas import ID_PATTERN, ErrorOut
from api.services import requests as service
from api.services import timeline
from core.models import AuditLog, PatchRequest

router = APIRouter(prefix="/api/v1", tags=["inbox"])
RequestId = Annotated[str, Path(pattern=ID_PATTERN, description="The request id (32 hex characters).")]
REPLACED_REASON = "replaced by a newer proposal"  # api.services.chat rejects the open proposal so
ERRORS = {401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut}}


@router.get("/inbox")
def get_inbox(session: SessionDep, catalog: CatalogDep, caller: ViewerDep) -> dict:
    """Proposals waiting for the caller's approval (`count`, `items`: requester, hosts by environment, age,
    expiry), and the caller's own proposals waiting for someone else (`mine`)."""
    return timeline.inbox(session, caller, catalog, same_person=service.same_person)


@router.get("/requests/{request_id}/live", responses=ERRORS)
def get_live(request_id: RequestId, session: SessionDep, catalog: CatalogDep, settings: SettingsDep,
             caller: ViewerDep) -> dict:
    """Everything a page showing this request redraws: the request, its truthful timeline (skipped stages say so),
    whether a cancel is pending, what the caller may do (each refusal with its reason), and the newest task
    output."""
    row = session.execute(select(PatchRequest, service._HOSTS_JSON, service._STAGES_JSON)
                          .where(PatchRequest.id == request_id)).one_or_none()
    if row is None:
        raise NotFound(f"no request with id {request_id}")
    req = row[0]
    view = service.build_view(req, row[1] or [], row[2] or [], catalog, settings).model_dump(mode="json")
    view["cancel_requested_at"] = req.cancel_requested_at.isoformat() if req.cancel_requested_at else None
    started = bool(view.get("stages")) or req.state not in ("proposed", "approved", "queued", "launching",
                                                           "rejected", "expired")
    plays = timeline.play_summary(session, request_id) if started else {}
    return {
        "request": view,
        "timeline": timeline.timeline(view, plays),
        "allowed": timeline.refusals(caller, view, catalog, same_person=service.same_person),
        "tasks": timeline.recent_tasks(session, request_id, check_mode=req.check_mode) if started else [],
        "replaced_by_newer": _replaced(session, req),
    }


def _replaced(session, req: PatchRequest) -> bool:
    """A proposal rejected because a newer proposal of its conversation took its place (the audit log says so)."""
    if req.state != "rejected":
        return False
    return session.execute(select(AuditLog.id).where(
        AuditLog.request_id == req.id, AuditLog.to_state == "rejected",
        AuditLog.reason == REPLACED_REASON).limit(1)).first() is not None
