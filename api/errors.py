"""Domain errors and their HTTP mapping. Every error body is JSON `{"detail": ...}`; nothing returns a trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError

from core.inventory_sync import InventoryNotSynced
from core.states import IllegalTransition

log = logging.getLogger("patchpilot.api")


class NotFound(Exception):
    pass


class BadInput(Exception):
    pass


class Forbidden(Exception):
    """The caller may not do this (role, four-eyes). The API answers 403 with the reason; it is audited."""


class PolicyRefused(Exception):
    """The policy refuses this now (change freeze, outside a maintenance window). The API answers 409."""


class Refused(Exception):
    """A refusal that is audited although the action fails (a role, four-eyes, the policy, someone else's
    conversation). Services raise it; the use case rolls its transaction back, writes the refusal to the audit log
    in a short transaction of its own and raises `error(reason)` (Forbidden: 403, PolicyRefused: 409)."""

    def __init__(self, reason: str, *, user: str, request_id: str | None = None,
                 error: type[Exception] = Forbidden):
        super().__init__(reason)
        self.reason, self.user, self.request_id, self.error = reason, user, request_id, error


def _readable_validation(exc: RequestValidationError) -> list[dict]:
    # FastAPI's documented shape (loc, msg, type) plus a dotted field name a person can read at a glance.
    out = []
    for err in exc.errors():
        loc = [p if isinstance(p, int | str) else str(p) for p in err.get("loc", ())]
        where = ".".join(str(p) for p in loc if p != "body")
        message = str(err.get("msg", "invalid value"))
        out.append({"loc": loc, "msg": message, "type": str(err.get("type", "value_error")),
                    "field": where or "body", "message": message})
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(IllegalTransition)
    async def _conflict(_: Request, exc: IllegalTransition) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc), "state": exc.current})

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(Forbidden)
    async def _forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse(status_code=403, content={"detail": str(exc)})

    @app.exception_handler(PolicyRefused)
    async def _policy(_: Request, exc: PolicyRefused) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(BadInput)
    async def _bad(_: Request, exc: BadInput) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _readable_validation(exc)})

    @app.exception_handler(InventoryNotSynced)
    async def _not_synced(_: Request, exc: InventoryNotSynced) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": "30"})

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    async def _db_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc.__class__.__name__)
        return JSONResponse(status_code=503, content={"detail": "The database is unavailable; try again shortly."},
                            headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(status_code=500, content={"detail": "Internal error; it has been logged."})
