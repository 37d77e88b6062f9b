"""Patch requests: views, approve / reject / cancel. All state changes go through core.states.transition."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlmodel import Session

from api.errors import Forbidden, NotFound, PolicyRefused
from api.schemas import HostView, RequestView, StageView
from core.intent import IntentResult
from core.inventory import Catalog
from core.models import HostResult, JobEvent, PatchRequest, RequestStage, utcnow
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
    STAGE_LABELS,
    SUCCEEDED,
    TERMINAL,
    IllegalTransition,
    audit,
    transition,
)

log = logging.getLogger("patchpilot.api")

STAGE_PROGRESS = {"pending": 0.0, "prechecks": 0.15, "patching": 0.4, "reboot": 0.7, "postchecks": 0.85,
                  "completed": 1.0, "failed": 1.0, "canceled": 1.0}


def stage_label(req: PatchRequest) -> str:
    """The stage in words; a play of the customer's playbook that the stage map does not know is named in it."""
    label = STAGE_LABELS.get(req.stage, req.stage)
    return f"{label}: {req.stage_detail}" if req.stage_detail else label


def get_request(session: Session, request_id: str, *, for_update: bool = False) -> PatchRequest:
    req = session.get(PatchRequest, request_id, with_for_update=for_update)
    if req is None:
        raise NotFound(f"no request with id {request_id}")
    return req


def create_proposal(session: Session, *, result: IntentResult, conversation_id: str | None, user: str,
                    settings: Settings, engine: str, prompt_version: str | None = None,
                    model_name: str | None = None) -> PatchRequest:
    req = PatchRequest(
        conversation_id=conversation_id, action=result.action, hosts=list(result.hosts),
        patch_group=result.patch_group, reboot=result.reboot or "if_needed", check_mode=result.check_mode,
        intent=result.model_dump(mode="json"), engine=engine, prompt_version=prompt_version, model_name=model_name,
        state=PROPOSED, stage="pending", requested_by=user,
        expires_at=utcnow() + timedelta(seconds=settings.proposal_ttl_seconds),
    )
    session.add(req)
    session.flush()
    audit(session, actor=user, action="proposed", request_id=req.id,
          detail={"hosts": req.hosts, "patch_group": req.patch_group, "engine": engine})
    log.info("proposed by %s: %s on %s", user, req.patch_group, ",".join(req.hosts), extra={"patch_request_id": req.id})
    return req


def approve(session: Session, request_id: str, user: str, catalog: Catalog) -> PatchRequest:
    """proposed -> approved, after the expiry, four-eyes and policy-window checks (none of them optional)."""
    req = get_request(session, request_id)
    if req.state == PROPOSED and req.expires_at and req.expires_at < utcnow():
        transition(session, req, EXPIRED, actor="system", reason="not approved in time")
        session.commit()
        raise IllegalTransition(req.id, EXPIRED, APPROVED, f"proposal {req.id} expired at {req.expires_at:%Y-%m-%d %H:%M:%S} UTC; ask again")
    if req.state != PROPOSED:
        raise IllegalTransition(req.id, req.state, APPROVED, f"request {req.id} is {req.state}; only a proposed request can be approved")
    _check_policy(session, req, user, catalog)
    transition(session, req, APPROVED, actor=user, reason="approved", approved_by=user, approved_at=utcnow())
    session.commit()
    log.info("approved by %s", user, extra={"patch_request_id": req.id})
    _enqueue_launch(req.id)
    session.refresh(req)
    return req


def deny(session: Session, *, user: str, request_id: str | None, reason: str, error: type[Exception]) -> Exception:
    """Audit a refusal (committed, whatever the caller does next) and return the error to raise. A user over
    DENIAL_RATE_LIMIT gets a 429 instead, and nothing is written."""
    from api.auth import audit_denial

    session.rollback()
    audit_denial(session, user=user, request_id=request_id, reason=reason)
    session.commit()
    log.warning("denied %s: %s", user, reason, extra={"patch_request_id": request_id})
    return error(reason)


def _check_policy(session: Session, req: PatchRequest, user: str, catalog: Catalog) -> None:
    policy = catalog.policy
    production = sorted(h for h in req.hosts if catalog.is_production(h))
    if same_person(user, req.requested_by) and (production or not policy.allow_self_approval_non_production):
        why = (f"four-eyes: {', '.join(production)} {'is' if len(production) == 1 else 'are'} production; "
               "someone other than the requester must approve") if production else \
              "the policy does not allow approving your own request"
        raise deny(session, user=user, request_id=req.id, reason=why, error=Forbidden)
    environments = {catalog.environment_of(h) or "other" for h in req.hosts if h in catalog.inventory.hosts}
    refusal = policy.when_refused(environments, utcnow())
    if refusal:
        raise deny(session, user=user, request_id=req.id, reason=f"cannot approve now: {refusal}", error=PolicyRefused)


def same_person(a: str | None, b: str | None) -> bool:
    """Names compared in their canonical form (core.identity): rows written before names were canonical, such
    as a request by "bob ", still belong to bob."""
    if a is None or b is None:
        return False
    return a.strip().lower() == b.strip().lower()


def check_owner_or(session: Session, request_id: str, caller, role: str, what: str) -> None:
    """The requester of a request may act on it; others need `role`. A refusal is a 403, audited."""
    req = get_request(session, request_id)
    if not same_person(req.requested_by, caller.user) and not caller.has(role):
        raise deny(session, user=caller.user, request_id=req.id, error=Forbidden,
                   reason=f"{caller.user} may only {what} their own requests ({role} role needed for others')")


def _enqueue_launch(request_id: str) -> None:
    from worker.dispatch import enqueue_launch
    from worker.execution import mark_queued

    # Committed first, enqueued second: a lost message leaves an `approved` row the sweep picks up.
    if enqueue_launch(request_id):
        mark_queued(request_id)


def reject(session: Session, request_id: str, user: str, reason: str = "rejected", *, commit: bool = True) -> PatchRequest:
    """proposed -> rejected. `commit=False` leaves the commit to the caller (a chat turn is one transaction)."""
    req = get_request(session, request_id)
    if req.state != PROPOSED:
        raise IllegalTransition(req.id, req.state, REJECTED, f"request {req.id} is {req.state}; only a proposed request can be rejected")
    transition(session, req, REJECTED, actor=user, reason=reason, decided_by=user)
    if commit:
        session.commit()
    return req


def cancel(session: Session, request_id: str, user: str) -> PatchRequest:
    req = get_request(session, request_id)
    if req.state in (APPROVED, QUEUED):
        transition(session, req, CANCELED, actor=user, reason="canceled before launch", decided_by=user,
                   stage="canceled", finished_at=utcnow())
        session.commit()
        return req
    if req.state in (LAUNCHING, RUNNING):
        # AWX is told by the follower, which then records `canceled` once AWX confirms it.
        req.cancel_requested_at = req.cancel_requested_at or utcnow()
        req.decided_by = user
        audit(session, actor=user, action="cancel_requested", request_id=req.id)
        session.commit()
        from worker.dispatch import enqueue_follow

        enqueue_follow(req.id)
        return req
    raise IllegalTransition(req.id, req.state, CANCELED, f"request {req.id} is {req.state}; there is nothing to cancel"
                            + (" (reject a proposal instead)" if req.state == PROPOSED else ""))


# A request's host results and stage timeline as two JSON columns of the request's own row: a status read is one
# query (bench/README.md, benchmark 2), and a list of N requests is one query too.
_HOSTS_JSON = (
    select(func.json_agg(func.json_build_object(
        "host", HostResult.host, "status", HostResult.status, "ok", HostResult.ok, "changed", HostResult.changed,
        "failed", HostResult.failed, "unreachable", HostResult.unreachable, "skipped", HostResult.skipped,
        "message", HostResult.message)))
    .where(HostResult.request_id == PatchRequest.id).correlate(PatchRequest).scalar_subquery()
)
_STAGES_JSON = (
    select(func.json_agg(aggregate_order_by(func.json_build_object("stage", RequestStage.stage, "at", RequestStage.at),
                                            RequestStage.at, RequestStage.id)))
    .where(RequestStage.request_id == PatchRequest.id).correlate(PatchRequest).scalar_subquery()
)


def view(session: Session, req: PatchRequest, catalog: Catalog, settings: Settings) -> RequestView:
    """The view of a request already loaded (after a change): its hosts and stages in one more query."""
    hosts, stages = session.execute(select(_HOSTS_JSON, _STAGES_JSON).where(PatchRequest.id == req.id)).one()
    return build_view(req, hosts or [], stages or [], catalog, settings)


def read_view(session: Session, request_id: str, catalog: Catalog, settings: Settings) -> RequestView:
    """The status read: the request, its hosts and its stages in one query."""
    row = session.execute(select(PatchRequest, _HOSTS_JSON, _STAGES_JSON).where(PatchRequest.id == request_id)).one_or_none()
    if row is None:
        raise NotFound(f"no request with id {request_id}")
    return build_view(row[0], row[1] or [], row[2] or [], catalog, settings)


def list_views(session: Session, *, state: str | None, limit: int, catalog: Catalog,
               settings: Settings) -> list[RequestView]:
    """Newest first, in one query however many there are."""
    query = (select(PatchRequest, _HOSTS_JSON, _STAGES_JSON)
             .order_by(PatchRequest.created_at.desc(), PatchRequest.id).limit(limit))
    if state:
        query = query.where(PatchRequest.state == state)
    return [build_view(req, hosts or [], stages or [], catalog, settings)
            for req, hosts, stages in session.execute(query).all()]


def build_view(req: PatchRequest, host_rows: list[dict], stage_rows: list[dict], catalog: Catalog,
               settings: Settings) -> RequestView:
    by_host = {row["host"]: row for row in host_rows}
    hosts = [HostView(**{k: v for k, v in row.items() if k != "host"}, name=name) if (row := by_host.get(name))
             else HostView(name=name) for name in req.hosts]
    if req.check_mode:
        # apt and dnf report `changed` in check mode: nothing changed, something would.
        hosts = [host.model_copy(update={"status": DRY_RUN_CHANGED}) if host.status == "changed" else host
                 for host in hosts]
    stages = [StageView(stage=row["stage"], label=STAGE_LABELS.get(row["stage"], row["stage"]), at=row["at"])
              for row in stage_rows]
    group = catalog.patch_groups.get(req.patch_group or "")
    by_env: dict[str, list[str]] = {}
    for name in req.hosts:
        by_env.setdefault(catalog.environment_of(name) or "other", []).append(name)
    notes = list(_notes(req, catalog))
    progress = STAGE_PROGRESS.get(req.stage, 0.0)
    job_url = None
    if req.awx_job_id and settings.awx_job_url_template:
        job_url = settings.awx_job_url_template.format(job_id=req.awx_job_id)
    return RequestView(
        id=req.id, action=req.action, state=req.state, stage=req.stage, stage_label=stage_label(req),
        hosts=hosts, hosts_by_environment=by_env, patch_group=req.patch_group,
        patch_group_description=group.description if group else None, reboot=req.reboot, check_mode=req.check_mode,
        awx_job_id=req.awx_job_id, awx_job_url=job_url, duplicate_awx_jobs=req.duplicate_awx_jobs or [],
        requested_by=req.requested_by, approved_by=req.approved_by,
        decided_by=req.decided_by, created_at=req.created_at, updated_at=req.updated_at, expires_at=req.expires_at,
        approved_at=req.approved_at, started_at=req.started_at, finished_at=req.finished_at,
        failure_reason=req.failure_reason, stages=stages, latest_task=req.latest_task, progress=progress,
        conversation_id=req.conversation_id, notes=notes, engine=req.engine, prompt_version=req.prompt_version,
        model_name=req.model_name, terminal=req.state in TERMINAL, targets=(req.intent or {}).get("targets") or None,
    )


DRY_RUN_CHANGED = "would change"


def _notes(req: PatchRequest, catalog: Catalog):
    targets = (req.intent or {}).get("targets") or ""
    if any(c in targets for c in "*?["):
        yield (f"Host pattern expanded: {targets} -> {len(req.hosts)} inventory host{'s' if len(req.hosts) != 1 else ''}, "
               "listed above; AWX gets these exact names, never the pattern.")
    refused = (req.intent or {}).get("refused_hosts") or []
    if refused:
        yield f"Left out by policy (never patched from chat): {', '.join(refused)}."
    if any(catalog.is_production(h) for h in req.hosts):
        yield "Touches production hosts."
    if req.check_mode:
        yield ("Dry run: ansible-playbook --check, nothing is changed and nothing reboots; a host that \"would "
               "change\" has updates waiting.")
    if req.state == SUCCEEDED and req.failure_reason:
        yield req.failure_reason  # a success with a caveat (events AWX never finished processing)
    if req.duplicate_awx_jobs:
        listed = ", ".join(f"{d.get('job_id')} ({d.get('cancel')})" for d in req.duplicate_awx_jobs)
        yield f"AWX had more than one job for this request: kept {req.awx_job_id}, canceled {listed}."
    if req.cancel_requested_at and req.state not in TERMINAL:
        yield "Cancel requested; waiting for AWX to confirm."


def list_requests(session: Session, *, state: str | None, limit: int,
                  states: frozenset[str] | None = None) -> list[PatchRequest]:
    query = select(PatchRequest).order_by(PatchRequest.created_at.desc(), PatchRequest.id).limit(limit)
    if state:
        query = query.where(PatchRequest.state == state)
    if states is not None:
        query = query.where(PatchRequest.state.in_(sorted(states)))
    return list(session.execute(query).scalars())


def events_after(session: Session, request_id: str, after: int, limit: int = 500) -> list[JobEvent]:
    get_request(session, request_id)
    return list(session.execute(
        select(JobEvent).where(JobEvent.request_id == request_id, JobEvent.counter > after)
        .order_by(JobEvent.counter).limit(limit)).scalars())


def find_by_job(session: Session, job_id: int) -> PatchRequest | None:
    return session.execute(select(PatchRequest).where(PatchRequest.awx_job_id == job_id)).scalars().first()


def latest_for_hosts(session: Session, hosts: list[str], *, active_only: bool = False) -> PatchRequest | None:
    rows = session.execute(select(PatchRequest).where(PatchRequest.state.notin_((PROPOSED, REJECTED, EXPIRED)))
                           .order_by(PatchRequest.created_at.desc()).limit(200)).scalars()
    for req in rows:
        if set(req.hosts) & set(hosts) and (not active_only or req.state in (APPROVED, QUEUED, LAUNCHING, RUNNING)):
            return req
    return None


