"""Patch requests as the API shows them: reads and views. Nothing here writes (api.services.decisions does)."""

from __future__ import annotations

import logging
from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.sql.selectable import ScalarSelect
from sqlmodel import Session, col

from api.errors import NotFound
from api.schemas import HostView, RequestView, StageView
from core.inventory import Catalog
from core.models import AuditLog, HostResult, JobEvent, PatchRequest, RequestStage
from core.settings import Settings
from core.states import (
    ACTIVE,
    EXPIRED,
    PROPOSED,
    REJECTED,
    STAGE_LABELS,
    SUCCEEDED,
    TERMINAL,
    RequestState,
    Stage,
)
from core.statuses import HostStatus

log = logging.getLogger("patchpilot.api")

STAGE_PROGRESS: dict[str, float] = {Stage.PENDING: 0.0, Stage.PRECHECKS: 0.15, Stage.PATCHING: 0.4, Stage.REBOOT: 0.7,
                                     Stage.POSTCHECKS: 0.85, Stage.COMPLETED: 1.0, Stage.FAILED: 1.0,
                                     Stage.CANCELED: 1.0}
# The stages in words, looked up by the stage column's plain string.
STAGE_WORDS: dict[str, str] = {stage.value: label for stage, label in STAGE_LABELS.items()}
# The audit reason of a proposal that a newer one of its conversation took the place of (the live view says so).
REPLACED_REASON = "replaced by a newer proposal"


def stage_label(req: PatchRequest) -> str:
    """The stage in words; a play of the customer's playbook that the stage map does not know is named in it."""
    label = STAGE_WORDS.get(req.stage, req.stage)
    return f"{label}: {req.stage_detail}" if req.stage_detail else label


def get_request(session: Session, request_id: str, *, for_update: bool = False) -> PatchRequest:
    req = session.get(PatchRequest, request_id, with_for_update=for_update)
    if req is None:
        raise NotFound(f"no request with id {request_id}")
    return req


def same_person(a: str | None, b: str | None) -> bool:
    """Names compared in their canonical form (core.identity): rows written before names were canonical, such
    as a request by "bob ", still belong to bob."""
    if a is None or b is None:
        return False
    return a.strip().lower() == b.strip().lower()


def environment_of(catalog: Catalog, host: str) -> str:
    """The host's environment from the fleet's data, or `core.inventory.NO_ENVIRONMENT` for a host without one."""
    return catalog.environment_or_other(host)


# A request's host results and stage timeline as two JSON columns of the request's own row: a status read is one
# query (bench/README.md, benchmark 2), and a list of N requests is one query too.
def _hosts_json(*, packages: bool) -> ScalarSelect[Any]:
    fields: list[Any] = [
        "host", HostResult.host, "status", HostResult.status, "ok", HostResult.ok, "changed", HostResult.changed,
        "failed", HostResult.failed, "unreachable", HostResult.unreachable, "skipped", HostResult.skipped,
        "message", HostResult.message]
    if packages:
        fields += ["packages", HostResult.packages]
    return (select(func.json_agg(func.json_build_object(*fields)))
            .where(col(HostResult.request_id) == col(PatchRequest.id)).correlate(PatchRequest).scalar_subquery())


_HOSTS_JSON = _hosts_json(packages=True)
# A list leaves the package lists out (up to MAX_PACKAGES_PER_HOST per host, per request): one request's view has them.
_HOSTS_JSON_LISTED = _hosts_json(packages=False)
_STAGES_JSON: ScalarSelect[Any] = (
    select(func.json_agg(aggregate_order_by(func.json_build_object("stage", RequestStage.stage, "at", RequestStage.at),
                                            col(RequestStage.at), col(RequestStage.id))))
    .where(col(RequestStage.request_id) == col(PatchRequest.id)).correlate(PatchRequest).scalar_subquery()
)


def view(session: Session, req: PatchRequest, catalog: Catalog, settings: Settings) -> RequestView:
    """The view of a request already loaded (after a change): its hosts and stages in one more query."""
    hosts, stages = session.execute(select(_HOSTS_JSON, _STAGES_JSON).where(col(PatchRequest.id) == req.id)).one()
    return build_view(req, _rows(hosts), _rows(stages), catalog, settings)


def read_view(session: Session, request_id: str, catalog: Catalog, settings: Settings) -> RequestView:
    """The status read: the request, its hosts and its stages in one query."""
    return read_with_view(session, request_id, catalog, settings)[1]


def read_with_view(session: Session, request_id: str, catalog: Catalog,
                   settings: Settings) -> tuple[PatchRequest, RequestView]:
    """The request row and its view, in one query."""
    row = session.execute(select(PatchRequest, _HOSTS_JSON, _STAGES_JSON)
                          .where(col(PatchRequest.id) == request_id)).one_or_none()
    if row is None:
        raise NotFound(f"no request with id {request_id}")
    req, hosts, stages = _unpack(row)
    return req, build_view(req, hosts, stages, catalog, settings)


def list_views(session: Session, *, state: RequestState | None, limit: int, catalog: Catalog,
               settings: Settings) -> list[RequestView]:
    """Newest first, in one query however many there are."""
    query = (select(PatchRequest, _HOSTS_JSON_LISTED, _STAGES_JSON)
             .order_by(col(PatchRequest.created_at).desc(), col(PatchRequest.id)).limit(limit))
    if state:
        query = query.where(col(PatchRequest.state) == state)
    return [build_view(*_unpack(row), catalog, settings) for row in session.execute(query)]


def _unpack(row: object) -> tuple[PatchRequest, list[dict[str, Any]], list[dict[str, Any]]]:
    """A (request, host results, stages) row of the queries above."""
    req, hosts, stages = cast(tuple[PatchRequest, object, object], row)
    return req, _rows(hosts), _rows(stages)


def _rows(value: object) -> list[dict[str, Any]]:
    """A json_agg column: its rows, or none (NULL when there is nothing to aggregate)."""
    return value if isinstance(value, list) else []


def build_view(req: PatchRequest, host_rows: list[dict], stage_rows: list[dict], catalog: Catalog,
               settings: Settings) -> RequestView:
    by_host = {row["host"]: row for row in host_rows}
    hosts = [HostView(**{k: v for k, v in row.items() if k != "host"} | {"packages": row.get("packages") or []},
                      name=name) if (row := by_host.get(name))
             else HostView(name=name) for name in req.hosts]
    if req.check_mode:
        # apt and dnf report `changed` in check mode: nothing changed, something would.
        hosts = [host.model_copy(update={"status": DRY_RUN_CHANGED}) if host.status == HostStatus.CHANGED else host
                 for host in hosts]
    stages = [StageView(stage=row["stage"], label=STAGE_LABELS.get(row["stage"], row["stage"]), at=row["at"])
              for row in stage_rows]
    group = catalog.patch_groups.get(req.patch_group or "")
    by_env: dict[str, list[str]] = {}
    for name in req.hosts:
        by_env.setdefault(environment_of(catalog, name), []).append(name)
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
        count = f"{len(req.hosts)} inventory host{'s' if len(req.hosts) != 1 else ''}"
        yield (f"Host pattern expanded: {targets} -> {count}, listed above; AWX gets these exact names, never the "
               "pattern.")
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


def list_requests(session: Session, *, state: RequestState | None, limit: int,
                  states: frozenset[RequestState] | None = None) -> list[PatchRequest]:
    query = select(PatchRequest).order_by(col(PatchRequest.created_at).desc(), col(PatchRequest.id)).limit(limit)
    if state:
        query = query.where(col(PatchRequest.state) == state)
    if states is not None:
        query = query.where(col(PatchRequest.state).in_(sorted(states)))
    return list(session.execute(query).scalars())


def events_after(session: Session, request_id: str, after: int, limit: int = 500) -> list[JobEvent]:
    get_request(session, request_id)
    return list(session.execute(
        select(JobEvent).where(col(JobEvent.request_id) == request_id, col(JobEvent.counter) > after)
        .order_by(col(JobEvent.counter)).limit(limit)).scalars())


def find_by_job(session: Session, job_id: int) -> PatchRequest | None:
    return session.execute(select(PatchRequest).where(col(PatchRequest.awx_job_id) == job_id)).scalars().first()


def latest_for_hosts(session: Session, hosts: list[str], *, active_only: bool = False) -> PatchRequest | None:
    rows = session.scalars(select(PatchRequest).where(col(PatchRequest.state).notin_((PROPOSED, REJECTED, EXPIRED)))
                          .order_by(col(PatchRequest.created_at).desc()).limit(200))
    for req in rows:
        if set(req.hosts) & set(hosts) and (not active_only or req.state in ACTIVE):
            return req
    return None


def replaced_by_newer(session: Session, req: PatchRequest) -> bool:
    """A proposal rejected because a newer proposal of its conversation took its place (the audit log says so)."""
    if req.state != REJECTED:
        return False
    return session.execute(select(col(AuditLog.id)).where(
        col(AuditLog.request_id) == req.id, col(AuditLog.to_state) == REJECTED,
        col(AuditLog.reason) == REPLACED_REASON).limit(1)).first() is not None
