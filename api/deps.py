"""Request-scoped dependencies, as Annotated aliases for the route signatures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from api.auth import authenticate, require
from api.usecases import Worker, dispatch_worker
from core.db import get_engine
from core.identity import Principal
from core.inventory import Catalog, get_catalog
from core.settings import Settings, get_settings


def get_session() -> Iterator[Session]:
    with Session(get_engine(), expire_on_commit=False) as session:
        yield session


async def current_settings() -> Settings:
    return get_settings()  # cached: no I/O after the first call, so no threadpool hop per request


async def current_catalog() -> Catalog:
    return get_catalog()  # cached, like the settings (tests override this dependency)


async def current_worker() -> Worker:
    return dispatch_worker()  # the way to the worker the use cases are given (tests may override it)


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(current_settings)]
CatalogDep = Annotated[Catalog, Depends(current_catalog)]
WorkerDep = Annotated[Worker, Depends(current_worker)]
CallerDep = Annotated[Principal, Depends(authenticate)]
ViewerDep = Annotated[Principal, Depends(require("viewer"))]
RequesterDep = Annotated[Principal, Depends(require("requester"))]
ApproverDep = Annotated[Principal, Depends(require("approver"))]
AdminDep = Annotated[Principal, Depends(require("admin"))]

__all__ = ["Request", "SessionDep", "SettingsDep", "CatalogDep", "WorkerDep", "CallerDep", "ViewerDep", "RequesterDep",
           "ApproverDep", "AdminDep"]
