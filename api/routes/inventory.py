"""The inventory's source and its sync from AWX (INVENTORY_SOURCE=awx)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api import usecases
from api.deps import AdminDep, SessionDep, SettingsDep, ViewerDep
from core.inventory_sync import status_line, sync_inventory, sync_status

router = APIRouter(tags=["inventory"])


@router.get("/api/v1/inventory")
async def inventory_status(_: ViewerDep) -> dict[str, Any]:
    """Where the inventory comes from; from AWX: the last good sync, its problems and the last failure."""
    status = await asyncio.to_thread(sync_status)
    return {**status, "line": status_line(status)}


@router.post("/api/v1/inventory/sync", responses={
    409: {"description": "INVENTORY_SOURCE is not awx, or a sync is running"},
    502: {"description": "the sync failed; the last good snapshot stays"}})
def sync_now(settings: SettingsDep, caller: AdminDep, session: SessionDep) -> JSONResponse:
    """Sync the inventory from AWX now (admins; audited). A failed sync keeps the last good snapshot in service."""
    if settings.inventory_source != "awx":
        return JSONResponse(status_code=409, content={"detail": "INVENTORY_SOURCE is file: there is nothing to "
                                                                "sync (the inventory is INVENTORY_FILE)"})
    result = usecases.sync_inventory(session, user=caller.user, sync=sync_inventory)
    if result is None:
        return JSONResponse(status_code=409, content={"detail": "an inventory sync is running; try again shortly"})
    body = {"ok": result.ok, "snapshot_id": result.snapshot_id, "hosts": result.hosts, "groups": result.groups,
            "disabled_hosts": result.disabled_hosts, "seconds": round(result.seconds, 3),
            "problems": list(result.problems), "error": result.error, "requested_by": caller.user}
    return JSONResponse(status_code=200 if result.ok else 502, content=body)
