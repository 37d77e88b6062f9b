"""Request-scoped dependencies, as Annotated aliases for the route signatures."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException
from sqlmodel import Session

from core.db import get_engine
from core.inventory import Catalog, get_catalog
from core.settings import Settings, get_settings

USER_PATTERN = re.compile(r"^[A-Za-z0-9._@+-]{1,200}$")


def get_session() -> Iterator[Session]:
    with Session(get_engine(), expire_on_commit=False) as session:
        yield session


def get_user(x_patchpilot_user: Annotated[str | None, Header()] = None) -> str:
    """The caller's identity. (Token and trusted-proxy identity replace this header in the security model.)"""
    user = x_patchpilot_user if x_patchpilot_user is not None else get_settings().default_user
    if not USER_PATTERN.match(user):
        raise HTTPException(status_code=400, detail="X-Patchpilot-User must be 1-200 letters, digits or ._@+-")
    return user


SessionDep = Annotated[Session, Depends(get_session)]
UserDep = Annotated[str, Depends(get_user)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
