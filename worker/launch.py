"""Launching the AWX job of an approved request exactly once, written so that any crash can be resumed.

The right to launch is a lease in the request row (`launch_token`, `launch_lease_until`), fenced:
- taking the launch (approved/queued -> launching, or over from an earlier attempt) writes a new token; an attempt
  found in `launching` may be taken over unless a proven POST may still be in flight (`launch_lease_until`,
  PostgreSQL's clock);
- after any wait (a backoff sleep, a slow answer) the job is looked up in AWX by the request id carried in its
  extra_vars, so a job whose 201 was never recorded is adopted, not launched twice;
- immediately before the POST the attempt proves in PostgreSQL that its token is still the current one, which also
  starts the lease that keeps others off while the POST is in flight. An attempt whose token was replaced stops
  there: it never launches.
The advisory lock only keeps two live attempts from racing each other's take-overs; the fence does not depend on
it (a dropped lock connection, a failover or PgBouncer can lose it silently). Second line: after every launch the
template's jobs for the request are listed and any beside the oldest are canceled (`worker.jobs`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, update
from sqlmodel import col

from core.db import advisory_lock, session_scope
from core.faults import crashpoint
from core.inventory import Catalog
from core.inventory_sync import recheck_hosts
from core.models import PatchRequest, new_id, utcnow
from core.observability import AWX_ERRORS, AWX_LAUNCHES, LAUNCHES_FENCED
from core.settings import Settings
from core.states import APPROVED, ERROR, FAILED, LAUNCHING, QUEUED, IllegalTransition, RequestState, Stage, transition
from core.validation import UnsafeLimitError, build_limit
from worker.awx_client import AWXClient, AWXError, AWXLaunchRefused
from worker.events import template_of
from worker.finish import WORKER
from worker.jobs import settle_jobs

log = logging.getLogger("patchpilot.worker")

# AWXError kinds after which AWX certainly launched nothing and never will for this request: it fails at once.
_REFUSED_KINDS = ("ignored_fields", "bad_request", "not_found", "refused")
_LOOKUP_SLACK = timedelta(minutes=5)  # AWX's and our clocks may differ: look up jobs created a little earlier


@dataclass(frozen=True)
class LaunchSnapshot:
    """What the launch needs, read inside the lock and used after the session is closed."""

    hosts: list[str]
    check_mode: bool
    extra_vars: dict[str, Any]
    template_name: str
    launch_started_at: datetime | None
    attempts: int
    template_organization: str | None = None
    inventory_snapshot_id: int | None = None

    @classmethod
    def of(cls, req: PatchRequest, settings: Settings, catalog: Catalog) -> LaunchSnapshot:
        group = catalog.patch_groups.get(req.patch_group or "")
        extra_vars: dict[str, Any] = dict(group.extra_vars) if group else {}
        extra_vars.update({
            "patchpilot_request_id": req.id,
            "patchpilot_action": req.action,
            "patch_group": req.patch_group,
            "reboot_policy": req.reboot,
        })
        return cls(
            hosts=list(req.hosts), check_mode=req.check_mode, extra_vars=extra_vars,
            template_name=template_of(req, settings, catalog),
            launch_started_at=req.launch_started_at, attempts=req.launch_attempts,
            template_organization=group.organization if group else None,
            inventory_snapshot_id=req.inventory_snapshot_id,
        )

    def lookup_since(self) -> datetime:
        return (self.launch_started_at or utcnow()) - _LOOKUP_SLACK


def launch(request_id: str, client: AWXClient, settings: Settings, catalog: Catalog) -> str:
    """Launch the AWX job for an approved request exactly once. Returns what happened, for logs and tests."""
    with advisory_lock("launch", request_id) as acquired:
        if not acquired:
            return "busy"
        taken = take_launch(request_id, settings, catalog)
        if isinstance(taken, str):
            return taken
        snapshot, token, recovering = taken
        return _launch_taken(request_id, client, settings, catalog, snapshot, token, recovering)


def _launch_taken(request_id: str, client: AWXClient, settings: Settings, catalog: Catalog,
                  snapshot: LaunchSnapshot, token: str, recovering: bool) -> str:
    taken_at = time.monotonic()
    waits_before = client.waits()
    # The inventory may have changed since the proposal was validated (a host deleted or disabled in AWX).
    refusal = recheck_hosts(snapshot.hosts, snapshot.inventory_snapshot_id)
    if refusal:
        finish_launch(request_id, token, FAILED, refusal)
        return "refused"
    try:
        template = client.find_job_template(snapshot.template_name, snapshot.template_organization)
        template_id = int(template["id"])
        job_type = "check" if snapshot.check_mode else "run"
        client.check_launchable(template_id, job_type)
        waited = client.waits() != waits_before or time.monotonic() - taken_at > settings.awx_timeout_seconds
        if recovering or waited:
            # An earlier attempt may have launched and died before recording the job, or another worker may
            # have launched while this one waited: adopt what AWX has.
            existing = client.jobs_for_request(template_id, request_id, snapshot.lookup_since())
            if existing:
                kept = settle_jobs(request_id, template_id, existing, client, settings,
                                   found_by="lookup before launch")
                AWX_LAUNCHES.labels(outcome="adopted").inc()
                return "recovered" if kept is not None else "skipped"
        if snapshot.attempts > settings.max_launch_attempts:
            finish_launch(request_id, token, ERROR,
                          f"AWX launch did not succeed after {settings.max_launch_attempts} attempts")
            return "gave_up"
        limit = build_limit(snapshot.hosts, catalog.inventory)
        if not prove_launch(request_id, token, settings):
            LAUNCHES_FENCED.inc()
            log.warning("request %s: another attempt took the launch over while this one waited; not launching",
                        request_id)
            return "fenced"
        crashpoint("before_launch")
        result = client.launch(template_id, limit=limit, extra_vars=snapshot.extra_vars, job_type=job_type,
                               prompts_checked=True)
    except UnsafeLimitError as exc:
        finish_launch(request_id, token, FAILED, f"refused to launch: {exc}")
        return "refused"
    except AWXLaunchRefused as exc:
        finish_launch(request_id, token, FAILED, str(exc))
        return "refused"
    except AWXError as exc:
        AWX_ERRORS.labels(kind=exc.kind).inc()
        return _launch_failed(request_id, token, snapshot, exc, settings)

    crashpoint("after_launch")  # AWX answered 201, nothing recorded yet
    AWX_LAUNCHES.labels(outcome="launched").inc()
    log.info("launched AWX job %s", result.job_id, extra={"awx_job_id": result.job_id})
    # Second line: whatever the fence missed shows up here, since AWX creates the job before it answers 201.
    try:
        jobs = client.jobs_for_request(template_id, request_id, snapshot.lookup_since())
    except AWXError as exc:
        log.warning("request %s: could not list AWX jobs after launching job %s (%s); recording it alone",
                    request_id, result.job_id, exc)
        jobs = []
    if not any(int(job["id"]) == result.job_id for job in jobs):
        jobs.append({"id": result.job_id, "status": result.status})
    settle_jobs(request_id, template_id, sorted(jobs, key=lambda job: int(job["id"])), client, settings,
                found_by="list after launch", launched=result.job_id)
    return "launched"


def take_launch(request_id: str, settings: Settings, catalog: Catalog) -> tuple[LaunchSnapshot, str, bool] | str:
    """Take the right to launch with a new token: approved/queued -> launching, or over from an earlier
    attempt that is not known to be mid-POST. Returns (snapshot, token, recovering) or an outcome."""
    token = new_id()
    with session_scope() as session:
        req = session.get(PatchRequest, request_id)
        if req is None:
            return "missing"
        for expected in (APPROVED, QUEUED):
            # The API may move approved -> queued while this task (which it just published) starts: take either.
            if req.state == expected:
                try:
                    transition(session, req, LAUNCHING, actor=WORKER, reason="launch started",
                               launch_started_at=utcnow(), launch_attempts=req.launch_attempts + 1,
                               launch_token=token, launch_lease_until=None)
                    return LaunchSnapshot.of(req, settings, catalog), token, False
                except IllegalTransition:
                    pass  # `transition` re-read the row: look at its new state
        if req.state != LAUNCHING:
            return "skipped"
        taken = session.execute(
            update(PatchRequest)
            .where(col(PatchRequest.id) == request_id, col(PatchRequest.state) == LAUNCHING,
                   or_(col(PatchRequest.launch_lease_until).is_(None),
                       col(PatchRequest.launch_lease_until) < func.now()))
            .values(launch_token=token, launch_lease_until=None, updated_at=utcnow(),
                    launch_attempts=PatchRequest.launch_attempts + 1)
            .returning(col(PatchRequest.id)).execution_options(synchronize_session=False)
        ).first()
        session.refresh(req)
        if taken is None:
            return "busy" if req.state == LAUNCHING else "skipped"  # a proven POST may be in flight
        return LaunchSnapshot.of(req, settings, catalog), token, True


def launch_fence_seconds(settings: Settings) -> float:
    """How long a proven launch keeps others off: the POST in flight, never less than its timeout and 5 s."""
    return max(settings.launch_fence_seconds, settings.awx_timeout_seconds + 5)


def prove_launch(request_id: str, token: str, settings: Settings) -> bool:
    """Immediately before the POST: is this attempt's token still the current one? If so, no other attempt may
    take over until the lease ends (PostgreSQL's clock), which covers the POST in flight. Committed at once."""
    with session_scope() as session:
        proven = session.execute(
            update(PatchRequest)
            .where(col(PatchRequest.id) == request_id, col(PatchRequest.state) == LAUNCHING,
                   col(PatchRequest.launch_token) == token)
            .values(launch_lease_until=func.now() + timedelta(seconds=launch_fence_seconds(settings)),
                    updated_at=utcnow())
            .returning(col(PatchRequest.id)).execution_options(synchronize_session=False)
        ).first()
    return proven is not None


def _launch_failed(request_id: str, token: str, snapshot: LaunchSnapshot, exc: AWXError, settings: Settings) -> str:
    if exc.kind == "auth":
        finish_launch(request_id, token, ERROR, f"AWX rejected the token: {exc}")
        return "token_refused"
    if exc.kind in _REFUSED_KINDS:
        finish_launch(request_id, token, FAILED, str(exc))
        return "refused"
    # Timeout, connection or 5xx: the launch may or may not have happened. Stay in `launching`; the next
    # attempt (the sweep, or a retry) looks the job up by request id before launching again.
    with session_scope() as session:
        session.execute(update(PatchRequest)
                        .where(col(PatchRequest.id) == request_id, col(PatchRequest.launch_token) == token)
                        .values(failure_reason=f"launch attempt {snapshot.attempts} failed: {exc}",
                                updated_at=utcnow()))
    if snapshot.attempts >= settings.max_launch_attempts:
        finish_launch(request_id, token, ERROR,
                      f"AWX launch did not succeed after {snapshot.attempts} attempts: {exc}")
        return "gave_up"
    return "retry"


def finish_launch(request_id: str, token: str, state: RequestState, reason: str) -> None:
    """A launch that ends the request (refused, or given up) -- only while this attempt still holds the launch."""
    with session_scope() as session:
        req = session.get(PatchRequest, request_id)
        if req is None or req.state != LAUNCHING or req.launch_token != token:
            return  # ended meanwhile, or another attempt holds the launch now: its outcome counts
        transition(session, req, state, actor=WORKER, reason=reason, failure_reason=reason,
                   finished_at=utcnow(), stage=Stage.FAILED)
    log.warning("request %s: %s", request_id, reason)
