"""What changes a patch request from the API: a proposal, its approval, rejection, expiry and cancel.

Every state change goes through `core.states.transition`. Nothing here commits or rolls back: the use cases
(`api.usecases`) own the transaction, so these compose (a chat turn rejects the open proposal and creates the new
one in one transaction). A refusal that must be audited is raised as `Refused`; the use case writes it.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlmodel import Session

from api.errors import PolicyRefused, Refused
from api.services.requests import environment_of, same_person
from core.identity import Principal
from core.intent import DEFAULT_REBOOT, IntentResult
from core.inventory import Catalog
from core.models import PatchRequest, utcnow
from core.settings import Settings
from core.states import (
    APPROVED,
    CANCELED,
    EXPIRED,
    LAUNCHING,
    PROPOSED,
    QUEUED,
    REJECTED,
    RUNNING,
    IllegalTransition,
    Stage,
    audit,
    transition,
)

log = logging.getLogger("patchpilot.api")

NOT_APPROVED_IN_TIME = "not approved in time"


def create_proposal(session: Session, *, result: IntentResult, conversation_id: str | None, user: str,
                    settings: Settings, engine: str, prompt_version: str | None = None,
                    model_name: str | None = None) -> PatchRequest:
    req = PatchRequest(
        conversation_id=conversation_id, action=result.action, hosts=list(result.hosts),
        patch_group=result.patch_group, reboot=result.reboot or DEFAULT_REBOOT, check_mode=result.check_mode,
        intent=result.model_dump(mode="json"), engine=engine, prompt_version=prompt_version, model_name=model_name,
        state=PROPOSED, stage=Stage.PENDING, requested_by=user,
        expires_at=utcnow() + timedelta(seconds=settings.proposal_ttl_seconds),
    )
    session.add(req)
    session.flush()
    audit(session, actor=user, action=PROPOSED, request_id=req.id,
          detail={"hosts": req.hosts, "patch_group": req.patch_group, "engine": engine})
    log.info("proposed by %s: %s on %s", user, req.patch_group, ",".join(req.hosts), extra={"patch_request_id": req.id})
    return req


def overdue(req: PatchRequest) -> bool:
    """A proposal past its expiry that the sweep has not expired yet."""
    return req.state == PROPOSED and req.expires_at is not None and req.expires_at < utcnow()


def expire(session: Session, req: PatchRequest) -> IllegalTransition:
    """proposed -> expired; returns the conflict to answer once the expiry is committed."""
    transition(session, req, EXPIRED, actor="system", reason=NOT_APPROVED_IN_TIME)
    expired_at = f"{req.expires_at:%Y-%m-%d %H:%M:%S} UTC" if req.expires_at else "its expiry"
    return IllegalTransition(req.id, EXPIRED, APPROVED, f"proposal {req.id} expired at {expired_at}; ask again")


def approve(session: Session, req: PatchRequest, user: str, catalog: Catalog) -> PatchRequest:
    """proposed -> approved, after the four-eyes and policy-window checks (none of them optional)."""
    if req.state != PROPOSED:
        raise IllegalTransition(req.id, req.state, APPROVED,
                                f"request {req.id} is {req.state}; only a proposed request can be approved")
    check_policy(req, user, catalog)
    transition(session, req, APPROVED, actor=user, reason=APPROVED, approved_by=user, approved_at=utcnow())
    log.info("approved by %s", user, extra={"patch_request_id": req.id})
    return req


def check_policy(req: PatchRequest, user: str, catalog: Catalog) -> None:
    """Four-eyes (production, and self-approval where the policy forbids it) and the change windows. Which hosts
    are production is the policy's word (`catalog.is_production`), never a name."""
    policy = catalog.policy
    production = sorted(h for h in req.hosts if catalog.is_production(h))
    if same_person(user, req.requested_by) and (production or not policy.allow_self_approval_non_production):
        why = (f"four-eyes: {', '.join(production)} {'is' if len(production) == 1 else 'are'} production; "
               "someone other than the requester must approve") if production else \
              "the policy does not allow approving your own request"
        raise Refused(why, user=user, request_id=req.id)
    environments = {environment_of(catalog, h) for h in req.hosts if h in catalog.inventory.hosts}
    refusal = policy.when_refused(environments, utcnow())
    if refusal:
        raise Refused(f"cannot approve now: {refusal}", user=user, request_id=req.id, error=PolicyRefused)


def check_owner_or(req: PatchRequest, caller: Principal, role: str, what: str) -> None:
    """The requester of a request may act on it; others need `role`. A refusal is a 403, audited."""
    if not same_person(req.requested_by, caller.user) and not caller.has(role):
        raise Refused(f"{caller.user} may only {what} their own requests ({role} role needed for others')",
                      user=caller.user, request_id=req.id)


def reject(session: Session, req: PatchRequest, user: str, reason: str = REJECTED) -> PatchRequest:
    """proposed -> rejected."""
    if req.state != PROPOSED:
        raise IllegalTransition(req.id, req.state, REJECTED,
                                f"request {req.id} is {req.state}; only a proposed request can be rejected")
    return transition(session, req, REJECTED, actor=user, reason=reason, decided_by=user)


def cancel(session: Session, req: PatchRequest, user: str) -> bool:
    """Cancel before the launch (approved/queued -> canceled), or ask for it once launched. True when the
    worker must pass the cancel on to AWX (the follower records `canceled` once AWX confirms it)."""
    if req.state in (APPROVED, QUEUED):
        transition(session, req, CANCELED, actor=user, reason="canceled before launch", decided_by=user,
                   stage=Stage.CANCELED, finished_at=utcnow())
        return False
    if req.state in (LAUNCHING, RUNNING):
        req.cancel_requested_at = req.cancel_requested_at or utcnow()
        req.decided_by = user
        audit(session, actor=user, action="cancel_requested", request_id=req.id)
        session.flush()
        return True
    raise IllegalTransition(req.id, req.state, CANCELED, f"request {req.id} is {req.state}; there is nothing to cancel"
                            + (" (reject a proposal instead)" if req.state == PROPOSED else ""))
