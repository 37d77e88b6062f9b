"""Authentication (API tokens or a trusted OAuth proxy) and role checks for the routes.

Every route but /healthz, /readyz and the API's own documentation depends on `authenticate`. A missing or bad
credential is a 401; a role that is too low is a 403 with the reason, and the refusal is written to the audit
log (up to DENIAL_RATE_LIMIT refusals per user; beyond that the answer is a 429 and nothing is written).

User names are canonical (core.identity.canonical_user): "Bob " and "bob" are one person everywhere.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import Depends, HTTPException, Request
from limits import RateLimitItem
from limits import parse as parse_limit
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from core.db import get_engine
from core.identity import BadUserName, Principal, canonical_user, principal_for_token, roles_of
from core.settings import get_settings

log = logging.getLogger("patchpilot.api")

ID = re.compile(r"^[0-9a-f]{32}$")  # api.schemas.ID_PATTERN (no import: schemas reads the settings at import)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(request: Request) -> Principal:
    # Async, so the common case (a role check) costs no threadpool hop; only the database lookup goes to a thread.
    settings = get_settings()
    if settings.auth_mode == "proxy":
        raw = request.headers.get(settings.proxy_user_header) or ""
        if not raw.strip():
            raise _unauthorized(f"no {settings.proxy_user_header} header: sign in through the OAuth proxy")
        try:
            user = canonical_user(raw)
        except BadUserName:
            raise _unauthorized(f"{settings.proxy_user_header} is not a valid user name") from None
        roles = await run_in_threadpool(_roles_of, user)
        if settings.proxy_groups_header:
            # Only for a proxy that sets this header itself and drops any copy the client sent (OpenShift's
            # oauth-proxy does neither: leave PROXY_GROUPS_HEADER unset with it).
            groups = [g.strip() for g in (request.headers.get(settings.proxy_groups_header) or "").split(",")]
            roles = roles | {settings.role_groups[g] for g in groups if g in settings.role_groups}
        principal = Principal(user=user, roles=frozenset(roles), via="proxy")
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


def _roles_of(user: str) -> frozenset[str]:
    with Session(get_engine()) as session:
        return roles_of(session, user)


def route_name(request: Request) -> str:
    """`POST /api/v1/requests/{request_id}/approve`: the route's template, never the raw path a caller sent."""
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', '(unknown route)')}"


def require(role: str) -> Callable[..., Any]:
    async def check(request: Request, principal: Principal = Depends(authenticate)) -> Principal:
        if not principal.has(role):
            request_id = request.path_params.get("request_id")
            await run_in_threadpool(deny, principal, f"{principal.user} needs the {role} role for "
                                    f"{route_name(request)}", request_id)
        return principal

    check.__name__ = f"require_{role}"
    return check


def audit_denial(session: Session, *, user: str, reason: str, request_id: str | None = None) -> None:
    """Write one refusal to the audit log (not committed), unless the user is over DENIAL_RATE_LIMIT: then a
    429 is raised instead and nothing is written. An id that is not a well-formed request id is never stored."""
    from core.states import audit

    check_limit("denied", user)
    if request_id is not None and not ID.match(request_id):
        request_id = None
    audit(session, actor=user, action="denied", request_id=request_id, reason=reason)


def deny(principal: Principal, reason: str, request_id: str | None = None) -> None:
    """Audit a refusal and raise the 403."""
    with Session(get_engine()) as session:
        audit_denial(session, user=principal.user, request_id=request_id, reason=reason)
        session.commit()
    raise HTTPException(status_code=403, detail=reason)


class SharedLimiter:
    """Per-user limits counted in Redis (REDIS_URL), so every API replica sees the same counts. While Redis does
    not answer, each replica counts in memory (and tries Redis again after a few seconds)."""

    RETRY_REDIS_AFTER = 5.0

    def __init__(self) -> None:
        self.memory = MovingWindowRateLimiter(MemoryStorage())
        self._redis: MovingWindowRateLimiter | None = None
        self._redis_url: str | None = None
        self._redis_down_until = 0.0
        self._lock = threading.Lock()

    def _shared(self) -> MovingWindowRateLimiter | None:
        url = get_settings().redis_url
        if not url or time.monotonic() < self._redis_down_until:
            return None
        with self._lock:
            if self._redis is None or self._redis_url != url:
                try:
                    storage = RedisStorage(url, key_prefix="patchpilot-limits", socket_connect_timeout=0.5,
                                           socket_timeout=0.5)
                except Exception as exc:
                    log.warning("rate limits counted per process: %s", exc)
                    self._redis_down_until = float("inf")
                    return None
                self._redis, self._redis_url = MovingWindowRateLimiter(storage), url
            return self._redis

    def hit(self, item: RateLimitItem, *keys: str) -> tuple[bool, int]:
        """(allowed, seconds until the window frees a slot)."""
        for limiter in (self._shared(), self.memory):
            if limiter is None:
                continue
            try:
                if limiter.hit(item, *keys):
                    return True, 0
                reset_at, _remaining = limiter.get_window_stats(item, *keys)
                return False, max(1, int(reset_at - time.time()) + 1)
            except Exception as exc:
                if limiter is self.memory:
                    raise
                log.warning("rate limits counted per process while Redis does not answer: %s", exc.__class__.__name__)
                self._redis_down_until = time.monotonic() + self.RETRY_REDIS_AFTER
        return True, 0  # unreachable: the memory limiter always answers

    def reset(self) -> None:
        self.memory.storage.reset()
        shared = self._shared()
        if shared is not None:
            try:
                shared.storage.reset()
            except Exception:
                pass


_limiter = SharedLimiter()


def _limit_for(kind: str) -> str:
    settings = get_settings()
    return {"chat": settings.chat_rate_limit, "decide": settings.approve_rate_limit,
            "denied": settings.denial_rate_limit}[kind]


def check_limit(kind: str, user: str) -> None:
    allowed, retry = _limiter.hit(parse_limit(_limit_for(kind)), kind, user)
    if not allowed:
        what = "refused requests" if kind == "denied" else f"{kind} requests"
        raise HTTPException(status_code=429, detail=f"too many {what}; try again in {retry} s",
                            headers={"Retry-After": str(retry)})


def rate_limit(kind: str) -> Callable[..., Any]:
    """Per-user limit on a kind of action (chat, decide), shared by all API replicas through Redis."""

    async def check(principal: Principal = Depends(authenticate)) -> None:
        await run_in_threadpool(check_limit, kind, principal.user)

    check.__name__ = f"rate_limit_{kind}"
    return check


def reset_rate_limits() -> None:
    _limiter.reset()
    _streams.clear()


# Open Server-Sent Events streams per user, in this API process (MAX_STREAMS_PER_USER).
_streams: dict[str, int] = {}


def take_stream_slot(user: str) -> Callable[[], None]:
    """Take one of the user's stream slots (429 when all are taken) and return what gives it back. Called on the
    event loop, which is single-threaded, with nothing awaited between the check and the increment."""
    limit = get_settings().max_streams_per_user
    if _streams.get(user, 0) >= limit:
        raise HTTPException(status_code=429, detail=f"{user} already has {limit} open event streams; close one first",
                            headers={"Retry-After": "5"})
    _streams[user] = _streams.get(user, 0) + 1
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            _streams[user] -= 1
            if _streams[user] <= 0:
                _streams.pop(user, None)

    return release
