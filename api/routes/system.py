import asyncio
import csv
import io
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BeforeValidator
from sqlalchemy import select
from sqlmodel import col

from api.deps import AdminDep, CallerDep, SessionDep, SettingsDep, ViewerDep
from api.schemas import ID_PATTERN, MeView, SystemView
from core.db import ping
from core.inventory_sync import status_line, sync_status
from core.models import AuditLog
from core.settings import Settings
from worker.dispatch import broker_reachable

router = APIRouter(tags=["system"])


AWX_CHECK_TIMEOUT = 2.0  # seconds; the status line waits for this check
AWX_ANSWERED = ("not_found", "bad_request")  # AWXError kinds of an AWX that answered the read (it is up)


def awx_status(settings: Settings) -> str:
    """Whether AWX answers: one read through the AWX client (the template pre-check runs use), one attempt with a
    short timeout. ok, "token refused" (AWX answers, but not to our token), down, or unconfigured."""
    if not settings.awx_url:
        return "unconfigured"
    # On first use: the client's HTTP and retry machinery stays out of the API's import.
    from worker.awx_client import AWXClient, AWXError

    try:
        base, token = settings.require_awx()
        with AWXClient(base, token, timeout=AWX_CHECK_TIMEOUT, verify=settings.awx_tls_verify(),
                       retry_attempts=1) as client:
            client.find_job_template(settings.awx_default_job_template)
    except AWXError as exc:
        if exc.kind == "auth":
            return "token refused"
        return "ok" if exc.kind in AWX_ANSWERED else "down"
    except Exception:
        return "down"  # no token, a bad CA bundle: not reachable as configured
    return "ok"


def engine_name(settings: Settings) -> tuple[str, str]:
    if settings.llm_provider != "none" and settings.llm_model:
        return f"llm:{settings.llm_model}", f"rules parser + LLM {settings.llm_model} ({settings.llm_provider})"
    return "rules", "offline rules parser (no LLM configured)"


@router.get("/healthz")
def healthz() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz() -> JSONResponse:
    """Readiness: the database and the broker answer."""
    database, broker = await asyncio.gather(asyncio.to_thread(ping), asyncio.to_thread(broker_reachable))
    body = {"database": "ok" if database else "down", "broker": "ok" if broker else "down"}
    return JSONResponse(status_code=200 if database and broker else 503, content=body)


@router.get("/api/v1/me", response_model=MeView)
def me(caller: CallerDep) -> MeView:
    """Who the API thinks you are, and your roles."""
    return MeView(user=caller.user, roles=sorted(caller.roles), via=caller.via)


@router.get("/api/v1/system", response_model=SystemView)
async def system(settings: SettingsDep, _: ViewerDep) -> SystemView:
    database, broker, awx, inventory = await asyncio.gather(
        asyncio.to_thread(ping), asyncio.to_thread(broker_reachable), asyncio.to_thread(awx_status, settings),
        asyncio.to_thread(_inventory_status))
    engine, label = engine_name(settings)
    return SystemView(engine=engine, engine_label=label, api="ok", database="ok" if database else "down",
                      broker="ok" if broker else "down", awx=awx, awx_url=settings.awx_url, inventory=inventory,
                      inventory_line=status_line(inventory) if inventory else None)


def _inventory_status() -> dict | None:
    try:
        return sync_status()
    except Exception:
        return None


def _iso_only(value):
    """pydantic would read '0.5' as a Unix time; the API documents ISO 8601 only."""
    if isinstance(value, str) and not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise ValueError("use an ISO 8601 time such as 2026-11-27T08:00:00Z")
    return value


FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "|", "%")


def csv_cell(value):
    """A cell a spreadsheet shows as text: one that starts like a formula (= + - @, a tab or a line break, as
    OWASP lists them, and | % for older spreadsheets) gets a leading apostrophe. Numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


AUDIT_FIELDS = ("id", "at", "actor", "action", "request_id", "from_state", "to_state", "reason", "detail")


@router.get("/api/v1/audit", responses={200: {"content": {"text/csv": {}, "application/json": {}}}})
def export_audit(session: SessionDep, _: AdminDep,
                 format: Annotated[Literal["json", "csv"], Query(description="json or csv")] = "json",
                 request_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
                 since: Annotated[datetime | None, BeforeValidator(_iso_only),
                                  Query(description="ISO 8601 time, e.g. 2026-11-27T08:00:00Z: only entries "
                                                    "at or after it")] = None,
                 limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000) -> Response:
    """The append-only audit log (admins): every proposal, decision, launch, cancel and denial."""
    query = select(AuditLog).order_by(col(AuditLog.id)).limit(limit)
    if request_id:
        query = query.where(col(AuditLog.request_id) == request_id)
    if since:
        query = query.where(col(AuditLog.at) >= (since if since.tzinfo else since.replace(tzinfo=UTC)))
    rows = [{f: getattr(r, f) for f in AUDIT_FIELDS} for r in session.scalars(query)]
    for row in rows:
        row["at"] = row["at"].isoformat()
    if format == "json":
        return JSONResponse({"items": rows})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=AUDIT_FIELDS)
    writer.writeheader()
    for row in rows:
        cells = {**row, "detail": "" if row["detail"] is None else json.dumps(row["detail"])}
        writer.writerow({key: csv_cell(value) for key, value in cells.items()})
    return Response(buffer.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": "attachment; filename=patchpilot-audit.csv"})
