"""The approvals inbox and the live view of one request (what the UI redraws while a request is open)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from api.deps import CatalogDep, SessionDep, SettingsDep, ViewerDep
from api.schemas import ID_PATTERN, ErrorOut
from api.services import requests as service
from api.services import timeline
from core.states import APPROVED, EXPIRED, LAUNCHING, PROPOSED, QUEUED, REJECTED

router = APIRouter(prefix="/api/v1", tags=["inbox"])
RequestId = Annotated[str, Path(pattern=ID_PATTERN, description="The request id (32 hex characters).")]
ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut}}
NEVER_RAN = frozenset({PROPOSED, APPROVED, QUEUED, LAUNCHING, REJECTED, EXPIRED})  # no play output to show


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
    req, request_view = service.read_with_view(session, request_id, catalog, settings)
    view = request_view.model_dump(mode="json")
    view["cancel_requested_at"] = req.cancel_requested_at.isoformat() if req.cancel_requested_at else None
    started = bool(view.get("stages")) or req.state not in NEVER_RAN
    plays = timeline.play_summary(session, request_id) if started else {}
    return {
        "request": view,
        "timeline": timeline.timeline(view, plays),
        "allowed": timeline.refusals(caller, view, catalog, same_person=service.same_person),
        "tasks": timeline.recent_tasks(session, request_id, check_mode=req.check_mode) if started else [],
        "replaced_by_newer": service.replaced_by_newer(session, req),
    }
