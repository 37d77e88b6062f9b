import asyncio
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel
from sqlmodel import Session
from sse_starlette.sse import EventSourceResponse
from starlette.background import BackgroundTask

from api import usecases
from api.auth import rate_limit, take_stream_slot
from api.deps import ApproverDep, CatalogDep, RequesterDep, SessionDep, SettingsDep, ViewerDep, WorkerDep
from api.schemas import ID_PATTERN, ErrorOut, EventList, EventView, RequestList, RequestView
from api.services import requests as service
from core.db import get_engine
from core.states import TERMINAL, RequestState

router = APIRouter(prefix="/api/v1/requests", tags=["requests"])
log = logging.getLogger("patchpilot.api")
MAX_COUNTER = 2**31 - 1  # job event counters are PostgreSQL integers
RequestId = Annotated[str, Path(pattern=ID_PATTERN, description="The request id (32 hex characters).")]
ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut}, 403: {"model": ErrorOut},
                                           404: {"model": ErrorOut}, 409: {"model": ErrorOut}}


def validated_json(model: BaseModel) -> Response:
    """The model, already validated when it was built, as JSON: FastAPI would otherwise validate it a second time
    against `response_model` (which still documents the shape). The status read is the hottest path."""
    return Response(model.model_dump_json(), media_type="application/json")


DECIDE: dict[str, Any] = {"responses": {**ERRORS, 429: {"model": ErrorOut}},
                          "dependencies": [Depends(rate_limit("decide"))]}


@router.get("", response_model=RequestList)
def list_requests(session: SessionDep, catalog: CatalogDep, settings: SettingsDep, _: ViewerDep,
                  state: Annotated[RequestState | None, Query(description="Only requests in this state")] = None,
                  limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Response:
    views = service.list_views(session, state=state, limit=limit, catalog=catalog, settings=settings)
    return validated_json(RequestList(items=views))


@router.get("/{request_id}", response_model=RequestView, responses=ERRORS)
def get_request(request_id: RequestId, session: SessionDep, catalog: CatalogDep, settings: SettingsDep,
                _: ViewerDep) -> Response:
    return validated_json(service.read_view(session, request_id, catalog, settings))


@router.post("/{request_id}/approve", response_model=RequestView, **DECIDE)
def approve(request_id: RequestId, session: SessionDep, caller: ApproverDep, catalog: CatalogDep,
            settings: SettingsDep, worker: WorkerDep) -> RequestView:
    """The only way a patch run starts: a person's click, with their identity (approver role, four-eyes)."""
    return usecases.approve(session, request_id, user=caller.user, catalog=catalog, settings=settings, worker=worker)


@router.post("/{request_id}/reject", response_model=RequestView, **DECIDE)
def reject(request_id: RequestId, session: SessionDep, caller: RequesterDep, catalog: CatalogDep,
           settings: SettingsDep) -> RequestView:
    """Approvers reject any proposal; a requester may withdraw their own."""
    return usecases.reject(session, request_id, caller=caller, catalog=catalog, settings=settings)


@router.post("/{request_id}/cancel", response_model=RequestView, **DECIDE)
def cancel(request_id: RequestId, session: SessionDep, caller: RequesterDep, catalog: CatalogDep,
           settings: SettingsDep, worker: WorkerDep) -> RequestView:
    """Requesters cancel their own runs; approvers any."""
    return usecases.cancel(session, request_id, caller=caller, catalog=catalog, settings=settings, worker=worker)


@router.get("/{request_id}/events", response_model=EventList, responses=ERRORS)
def events(request_id: RequestId, session: SessionDep, _: ViewerDep,
           after: Annotated[int, Query(ge=0, le=MAX_COUNTER)] = 0,
           limit: Annotated[int, Query(ge=1, le=1000)] = 500) -> EventList:
    rows = service.events_after(session, request_id, after, limit)
    return EventList(items=[EventView.model_validate(r, from_attributes=True) for r in rows])


STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "`text/event-stream`: `event` and `request` messages until the run ends",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    **ERRORS, 429: {"model": ErrorOut, "description": "the caller has MAX_STREAMS_PER_USER streams open"}}


@router.get("/{request_id}/events/stream", response_class=EventSourceResponse, responses=STREAM_DOC)
async def stream(request_id: RequestId, request: Request, catalog: CatalogDep, settings: SettingsDep,
                 caller: ViewerDep, after: Annotated[int, Query(ge=0, le=MAX_COUNTER)] = 0) -> EventSourceResponse:
    """Server-Sent Events: `event` messages for each job event and a `request` message whenever the state or
    stage changes. Ends after the request reaches a terminal state. At most MAX_STREAMS_PER_USER open at once
    per user (429 beyond)."""
    await asyncio.to_thread(_exists, request_id)
    release = take_stream_slot(caller.user)

    def snapshot(cursor: int) -> tuple[list[dict], dict]:
        with Session(get_engine()) as session:
            rows = service.events_after(session, request_id, cursor, 500)
            req = service.get_request(session, request_id)
            view = service.view(session, req, catalog, settings)
            return ([EventView.model_validate(r, from_attributes=True).model_dump(mode="json") for r in rows],
                    view.model_dump(mode="json"))

    async def generate():
        cursor, last_key = after, None
        try:
            while not await request.is_disconnected():
                try:
                    rows, view = await asyncio.to_thread(snapshot, cursor)
                except Exception as exc:
                    log.warning("event stream of %s ended: %s", request_id, exc.__class__.__name__)
                    yield {"event": "error", "data": json.dumps({"detail": "the stream ended; reconnect to resume"})}
                    return
                for row in rows:
                    cursor = max(cursor, row["counter"])
                    yield {"event": "event", "id": str(row["counter"]), "data": json.dumps(row)}
                key = (view["state"], view["stage"], len(view["stages"]))
                if key != last_key:
                    last_key = key
                    yield {"event": "request", "data": json.dumps(view)}
                if view["state"] in TERMINAL and not rows:
                    return
                await asyncio.sleep(1.0)
        finally:
            release()

    try:
        return EventSourceResponse(generate(), background=BackgroundTask(release))
    except BaseException:
        release()
        raise


def _exists(request_id: str) -> None:
    with Session(get_engine()) as session:
        service.get_request(session, request_id)
