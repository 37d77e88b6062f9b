"""The API's use cases: what a route does that writes, each one transaction.

A use case opens and ends the transaction (commit, or roll back on any error) around the services it calls
(`api.services`, which only flush), and receives its dependencies explicitly: the session, the catalog, the
settings and the way to the worker (`Worker`, backed by `worker.dispatch`). Work for the worker is enqueued only
after the commit, so a lost message leaves a committed row the sweep picks up. A refusal a service raises as
`Refused` is rolled back with everything else, then written to the audit log in a short transaction of its own,
and answered with its error (403 or 409).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlmodel import Session

from api.auth import audit_denial
from api.errors import Refused
from api.schemas import ChatOut, RequestView
from api.services import chat, conversations, decisions
from api.services import requests as request_service
from core.db import advisory_lock
from core.identity import Principal
from core.inventory import Catalog
from core.inventory_sync import SyncResult
from core.models import Message
from core.settings import Settings
from core.states import IllegalTransition, audit

log = logging.getLogger("patchpilot.api")


@dataclass(frozen=True)
class Worker:
    """How the API reaches the worker: publish a launch (and mark the request queued), ask for a poll now.
    Each answers whether the broker took the message; neither ever raises (the sweep covers a lost one)."""

    launch: Callable[[str], bool]
    follow: Callable[[str], bool]


def dispatch_worker() -> Worker:
    """The worker through `worker.dispatch`, the one module the API uses to reach it."""
    from worker import dispatch  # light: the Celery app loads on the first publish

    return Worker(launch=dispatch.enqueue_launch, follow=dispatch.enqueue_follow)


@contextmanager
def transaction(session: Session) -> Iterator[Session]:
    """One unit of work: committed when the block ends, rolled back when it raises. A `Refused` is rolled back,
    audited in a transaction of its own, and raised as its error."""
    try:
        yield session
        session.commit()
    except Refused as refused:
        session.rollback()
        _audit_refusal(session, refused)
        raise refused.error(refused.reason) from None
    except BaseException:
        session.rollback()
        raise


def _audit_refusal(session: Session, refused: Refused) -> None:
    """Write the refusal (a user over DENIAL_RATE_LIMIT gets a 429 instead, and nothing is written)."""
    try:
        audit_denial(session, user=refused.user, request_id=refused.request_id, reason=refused.reason)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    log.warning("denied %s: %s", refused.user, refused.reason, extra={"patch_request_id": refused.request_id})


# --- chat ------------------------------------------------------------------------------------------------------


def chat_turn(session: Session, *, conversation_id: str | None, text: str, user: str, catalog: Catalog,
              settings: Settings) -> ChatOut:
    """One chat turn, one transaction: the conversation's row lock is held until its single commit."""
    with transaction(session):
        return chat.chat_turn(session, conversation_id=conversation_id, text=text, user=user, catalog=catalog,
                              settings=settings)


def conversation_messages(session: Session, conversation_id: str, caller: Principal) -> list[Message]:
    """A conversation's messages for its author, approvers and admins; anyone else's read is refused, audited."""
    with transaction(session):
        return conversations.messages(session, conversation_id, caller)


# --- decisions -------------------------------------------------------------------------------------------------


def approve(session: Session, request_id: str, *, user: str, catalog: Catalog, settings: Settings,
            worker: Worker) -> RequestView:
    """proposed -> approved, committed; then the launch is enqueued (and the request marked queued). An overdue
    proposal is expired instead (committed) and answered with a 409."""
    expired: IllegalTransition | None = None
    with transaction(session):
        req = request_service.get_request(session, request_id)
        if decisions.overdue(req):
            expired = decisions.expire(session, req)
        else:
            decisions.approve(session, req, user, catalog)
    if expired is not None:
        raise expired
    # Committed first, enqueued second: a lost message leaves an `approved` row the sweep picks up.
    worker.launch(req.id)
    session.refresh(req)
    return request_service.view(session, req, catalog, settings)


def reject(session: Session, request_id: str, *, caller: Principal, catalog: Catalog,
           settings: Settings) -> RequestView:
    """Approvers reject any proposal; a requester may withdraw their own."""
    with transaction(session):
        req = request_service.get_request(session, request_id)
        decisions.check_owner_or(req, caller, "approver", "reject")
        decisions.reject(session, req, caller.user)
    return request_service.view(session, req, catalog, settings)


def cancel(session: Session, request_id: str, *, caller: Principal, catalog: Catalog, settings: Settings,
           worker: Worker) -> RequestView:
    """Requesters cancel their own runs; approvers any. A launched run's cancel is passed on to AWX by the
    follower, asked to poll at once after the commit."""
    with transaction(session):
        req = request_service.get_request(session, request_id)
        decisions.check_owner_or(req, caller, "approver", "cancel")
        tell_awx = decisions.cancel(session, req, caller.user)
    if tell_awx:
        worker.follow(req.id)
    return request_service.view(session, req, catalog, settings)


# --- inventory -------------------------------------------------------------------------------------------------


def sync_inventory(session: Session, *, user: str, sync: Callable[[], SyncResult]) -> SyncResult | None:
    """Sync the inventory now and audit it. None when a sync is running already (the beat's takes the same
    lock); a failed sync is a result too (the last good snapshot stays in service)."""
    with advisory_lock("inventory", "sync") as acquired:
        if not acquired:
            return None
        result = sync()
    with transaction(session):
        audit(session, actor=user, action="inventory_sync",
              reason=f"snapshot {result.snapshot_id}" if result.ok else f"sync failed: {result.error}",
              detail={"ok": result.ok, "snapshot_id": result.snapshot_id, "hosts": result.hosts})
    return result
