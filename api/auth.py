"""Authentication (API tokens or a trusted OAuth proxy) and role checks for the routes.

Every route but /healthz and /readyz depends on `authenticate`. A missing or bad credential is a 401; a role
that is too low is a 403 with the reason, and the refusal is written to the audit log.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import Depends, HTTPException, Request
from limits import parse as parse_limit
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from core.db import get_engine
from core.identity import Principal, principal_for_proxy, principal_for_token
from core.settings import get_settings

USER_NAME = re.compile(r"^[A-Za-z0-9._@+-]{1,200}$")
_limiter = MovingWindowRateLimiter(MemoryStorage())


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(request: Request) -> Principal:
    # Async, so the common case (proxy headers, a role check) costs no threadpool hop; only the token lookup
    # goes to a thread.
    settings = get_settings()
    if settings.auth_mode == "proxy":
        user = (request.headers.get(settings.proxy_user_header) or "").strip()
        if not user:
            raise _unauthorized(f"no {settings.proxy_user_header} header: sign in through the OAuth proxy")
        if not USER_NAME.match(user):
            raise _unauthorized(f"{settings.proxy_user_header} is not a valid user name")
        groups = [g.strip() for g in (request.headers.get(settings.proxy_groups_header) or "").split(",") if g.strip()]
        principal = principal_for_proxy(user, groups, settings.role_groups)
    else:
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("send an API token as 'Authorization: Bearer <token>' (patchpilot token create)")
        found = await run_in_threadpool(_principal_for_token, token.strip())
        if found is None:
            raise _unauthorized("the API token is unknown or revoked")
        principal = found
    request.state.principal = principal
    return principal


def _principal_for_token(token: str) -> Principal | None:
    with Session(get_engine()) as session:
        return principal_for_token(session, token)


def require(role: str) -> Callable[..., Any]:
    async def check(request: Request, principal: Principal = Depends(authenticate)) -> Principal:
        if not principal.has(role):
            await run_in_threadpool(deny, principal, f"{principal.user} needs the {role} role for {request.method} "
                                    f"{request.url.path}", request.path_params.get("request_id"))
        return principal

    check.__name__ = f"require_{role}"
    return check


def deny(principal: Principal, reason: str, request_id: str | None = None) -> None:
    """Audit a refusal and raise the 403."""
    from core.states import audit

    with Session(get_engine()) as session:
        audit(session, actor=principal.user, action="denied", request_id=request_id, reason=reason)
        session.commit()
    raise HTTPException(status_code=403, detail=reason)


def rate_limit(kind: str) -> Callable[..., None]:
    """Per-user limit on a kind of action (chat, decide). In-process: each API replica counts on its own."""

    async def check(request: Request, principal: Principal = Depends(authenticate)) -> None:
        settings = get_settings()
        item = parse_limit(settings.chat_rate_limit if kind == "chat" else settings.approve_rate_limit)
        if not _limiter.hit(item, kind, principal.user):
            reset_at, _remaining = _limiter.get_window_stats(item, kind, principal.user)
            import time

            retry = max(1, int(reset_at - time.time()))
            raise HTTPException(status_code=429, detail=f"too many {kind} requests; try again in {retry} s",
                                headers={"Retry-After": str(retry)})

    check.__name__ = f"rate_limit_{kind}"
    return check


def reset_rate_limits() -> None:
    _limiter.storage.reset()
