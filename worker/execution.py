"""Launching and following AWX jobs, written so that any crash can be resumed.

- `launch()` holds the right to launch as a fenced lease in the request row (a token new on every take-over,
  proven in PostgreSQL immediately before the POST). A request found in `launching` was interrupted: before
  launching again we look the job up in AWX by the request id carried in its extra_vars, so a job whose 201 we
  never recorded is adopted, not launched twice; after every launch, any second job is canceled and recorded.
- Following is scheduled in PostgreSQL (`next_poll_at`): `follow_round()` claims the running requests that are
  due, with a lease, and polls each once; `poll()` polls one request on its own. Neither holds a worker slot for
  a job's duration. Events are stored with a unique (request, counter) key and a gap-safe cursor.
The Celery tasks in `worker.tasks` are thin wrappers around these functions.
"""

from __future__ import annotations

import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from core.db import advisory_lock, session_scope
from core.faults import crashpoint
from core.inventory import get_catalog
from core.inventory_sync import recheck_hosts
from core.models import HostResult, JobEvent, PatchRequest, RequestStage, new_id, utcnow
from core.observability import AWX_ERRORS, AWX_LAUNCHES, DUPLICATE_JOBS, EVENT_LAG, LAUNCHES_FENCED
from core.settings import get_settings
from core.stage_map import get_stage_map
from core.states import (
    APPROVED,
    CANCELED,
    ERROR,
    EXPIRED,
    FAILED,
    LAUNCHING,
    PROPOSED,
    QUEUED,
    RUNNING,
    STAGES,
    SUCCEEDED,
    IllegalTransition,
    audit,
    transition,
)
from core.validation import UnsafeLimitError, build_limit
from worker.awx_client import AWXClient, AWXError, AWXLaunchRefused
from worker.job_status import DirectJobStatus, JobStatuses

log = logging.getLogger("patchpilot.worker")

WORKER = "worker"
AWX_TERMINAL = {"successful": SUCCEEDED, "failed": FAILED, "error": ERROR, "canceled": CANCELED}
AWX_ACTIVE = ("new", "pending", "waiting", "running")
STATUS_AT_LEAST_EVERY_POLLS = 4
FOLLOW_LEASE_POLLS = 3  # a claimed request comes due again after this many intervals if its poll never ended
FINAL_STAGE = {SUCCEEDED: "completed", FAILED: "failed", ERROR: "failed", CANCELED: "canceled"}
HOST_STATUS_RANK = {"pending": 0, "running": 1, "skipped": 2, "ok": 3, "changed": 4, "failed": 5, "unreachable": 6}


# --------------------------------------------------------------------------------------------- launch


def launch(request_id: str, client: AWXClient) -> str:
    """Launch the AWX job for an approved request exactly once. Returns what happened, for logs and tests.

    The right to launch is a lease in the request row (`launch_token`, `launch_lease_until`), fenced:
    - taking the launch (approved/queued -> launching, or over from an earlier attempt) writes a new token;
      an attempt found in `launching` may be taken over unless a proven POST may still be in flight
      (`launch_lease_until`, PostgreSQL's clock);
    - after any wait (a backoff sleep, a slow answer) the job is looked up in AWX by the request id;
    - immediately before the POST the attempt proves in PostgreSQL that its token is still the current one,
      which also starts the lease that keeps others off while the POST is in flight. An attempt whose token
      was replaced stops there: it never launches.
    The advisory lock only keeps two live attempts from racing each other's take-overs; the fence does not
    depend on it (a dropped lock connection, a failover or PgBouncer can lose it silently).
    Second line: after every launch the template's jobs for the request are listed; any beside the oldest are
    canceled at once, recorded and reported (`_settle_jobs`).
    """
    with advisory_lock("launch", request_id) as acquired:
        if not acquired:
            return "busy"
        taken = _take_launch(request_id)
        if isinstance(taken, str):
            return taken
        snapshot, token, recovering = taken
        return _launch_taken(request_id, client, snapshot, token, recovering)


def _launch_taken(request_id: str, client: AWXClient, snapshot: _LaunchSnapshot, token: str,
                  recovering: bool) -> str:
    settings = get_settings()
    taken_at = time.monotonic()
    waits_before = client.waits()
    # The inventory may have changed since the proposal was validated (a host deleted or disabled in AWX).
    refusal = recheck_hosts(snapshot.hosts, snapshot.inventory_snapshot_id)
    if refusal:
        _finish_launch(request_id, token, FAILED, refusal)
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
            existing = client.jobs_for_request(template_id, request_id, _lookup_since(snapshot))
            if existing:
                kept = _settle_jobs(request_id, template_id, existing, client, found_by="lookup before launch")
                AWX_LAUNCHES.labels(outcome="adopted").inc()
                return "recovered" if kept is not None else "skipped"
        if snapshot.attempts > settings.max_launch_attempts:
            _finish_launch(request_id, token, ERROR,
                           f"AWX launch did not succeed after {settings.max_launch_attempts} attempts")
            return "gave_up"
        limit = build_limit(snapshot.hosts, get_catalog().inventory)
        if not _prove_launch(request_id, token):
            LAUNCHES_FENCED.inc()
            log.warning("request %s: another attempt took the launch over while this one waited; not launching",
                        request_id)
            return "fenced"
        crashpoint("before_launch")
        result = client.launch(template_id, limit=limit, extra_vars=snapshot.extra_vars, job_type=job_type,
                               prompts_checked=True)
    except UnsafeLimitError as exc:
        _finish_launch(request_id, token, FAILED, f"refused to launch: {exc}")
        return "refused"
    except AWXLaunchRefused as exc:
        _finish_launch(request_id, token, FAILED, str(exc))
        return "refused"
    except AWXError as exc:
        AWX_ERRORS.labels(kind=exc.kind).inc()
        return _launch_failed(request_id, token, snapshot, exc)

    crashpoint("after_launch")  # AWX answered 201, nothing recorded yet
    AWX_LAUNCHES.labels(outcome="launched").inc()
    log.info("launched AWX job %s", result.job_id, extra={"awx_job_id": result.job_id})
    # Second line: whatever the fence missed shows up here, since AWX creates the job before it answers 201.
    try:
        jobs = client.jobs_for_request(template_id, request_id, _lookup_since(snapshot))
    except AWXError as exc:
        log.warning("request %s: could not list AWX jobs after launching job %s (%s); recording it alone",
                    request_id, result.job_id, exc)
        jobs = []
    if not any(int(job["id"]) == result.job_id for job in jobs):
        jobs.append({"id": result.job_id, "status": result.status})
    _settle_jobs(request_id, template_id, sorted(jobs, key=lambda job: int(job["id"])), client,
                 found_by="list after launch", launched=result.job_id)
    return "launched"


def _lookup_since(snapshot: _LaunchSnapshot) -> datetime:
    return (snapshot.launch_started_at or utcnow()) - timedelta(minutes=5)


def _take_launch(request_id: str) -> tuple[_LaunchSnapshot, str, bool] | str:
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
                    return _LaunchSnapshot.of(req), token, False
                except IllegalTransition:
                    pass  # `transition` re-read the row: look at its new state
        if req.state != LAUNCHING:
            return "skipped"
        taken = session.execute(
            update(PatchRequest)
            .where(PatchRequest.id == request_id, PatchRequest.state == LAUNCHING,
                   or_(PatchRequest.launch_lease_until.is_(None), PatchRequest.launch_lease_until < func.now()))
            .values(launch_token=token, launch_lease_until=None, updated_at=utcnow(),
                    launch_attempts=PatchRequest.launch_attempts + 1)
            .returning(PatchRequest.id).execution_options(synchronize_session=False)
        ).first()
        if taken is None:
            session.refresh(req)
            return "busy" if req.state == LAUNCHING else "skipped"  # a proven POST may be in flight
        session.refresh(req)
        return _LaunchSnapshot.of(req), token, True


def launch_fence_seconds() -> float:
    settings = get_settings()
    return max(settings.launch_fence_seconds, settings.awx_timeout_seconds + 5)


def _prove_launch(request_id: str, token: str) -> bool:
    """Immediately before the POST: is this attempt's token still the current one? If so, no other attempt may
    take over until the lease ends (PostgreSQL's clock), which covers the POST in flight. Committed at once."""
    with session_scope() as session:
        proven = session.execute(
            update(PatchRequest)
            .where(PatchRequest.id == request_id, PatchRequest.state == LAUNCHING,
                   PatchRequest.launch_token == token)
            .values(launch_lease_until=func.now() + timedelta(seconds=launch_fence_seconds()), updated_at=utcnow())
            .returning(PatchRequest.id).execution_options(synchronize_session=False)
        ).first()
    return proven is not None


@dataclass(frozen=True)
class _LaunchSnapshot:
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
    def of(cls, req: PatchRequest) -> _LaunchSnapshot:
        catalog = get_catalog()
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
            template_name=group.job_template if group else get_settings().awx_default_job_template,
            launch_started_at=req.launch_started_at, attempts=req.launch_attempts,
            template_organization=group.organization if group else None,
            inventory_snapshot_id=req.inventory_snapshot_id,
        )


def _launch_failed(request_id: str, token: str, snapshot: _LaunchSnapshot, exc: AWXError) -> str:
    if exc.kind == "auth":
        _finish_launch(request_id, token, ERROR, f"AWX rejected the token: {exc}")
        return "error"
    if exc.kind in ("ignored_fields", "bad_request", "not_found", "refused"):
        _finish_launch(request_id, token, FAILED, str(exc))
        return "refused"
    # Timeout, connection or 5xx: the launch may or may not have happened. Stay in `launching`; the next
    # attempt (the sweep, or a retry) looks the job up by request id before launching again.
    with session_scope() as session:
        session.execute(update(PatchRequest)
                        .where(PatchRequest.id == request_id, PatchRequest.launch_token == token)
                        .values(failure_reason=f"launch attempt {snapshot.attempts} failed: {exc}", updated_at=utcnow()))
    if snapshot.attempts >= get_settings().max_launch_attempts:
        _finish_launch(request_id, token, ERROR, f"AWX launch did not succeed after {snapshot.attempts} attempts: {exc}")
        return "gave_up"
    return "retry"


def _settle_jobs(request_id: str, template_id: int, jobs: list[dict[str, Any]], client: AWXClient, *,
                 found_by: str, launched: int | None = None) -> int | None:
    """Record the one job a request follows among `jobs` (AWX's jobs for it, oldest first), and cancel and
    record any other at once. The job kept is the one already recorded, else the oldest (the first launch to
    reach AWX, which every attempt that lists after its own 201 sees); a request that ended without a job keeps
    none. Returns the job kept, or None."""
    with session_scope() as session:
        req = session.get(PatchRequest, request_id)
        if req is None:
            return None
        ids = [int(job["id"]) for job in jobs]
        if req.awx_job_id in ids:
            kept: int | None = req.awx_job_id
        elif req.state in (LAUNCHING, APPROVED, QUEUED) or (req.state == RUNNING and req.awx_job_id is None):
            kept = ids[0]
        else:
            kept = None  # ended (or follows a job not listed): every job found here is one too many
    extra = [job for job in jobs if int(job["id"]) != kept]
    if extra:
        _cancel_duplicates(request_id, kept, extra, client, found_by=found_by, launched=launched)
    if kept is not None:
        _record_launch(request_id, template_id, kept,
                       reason="AWX job launched" if kept == launched else "found the job of an interrupted launch")
    return kept


def _cancel_duplicates(request_id: str, kept: int | None, extra: list[dict[str, Any]], client: AWXClient, *,
                       found_by: str, launched: int | None) -> None:
    records = []
    for job in extra:
        job_id = int(job["id"])
        try:
            outcome = "canceled" if client.cancel(job_id) else "already finished"
        except AWXError as exc:
            outcome = f"cancel failed: {exc}"
        records.append({"job_id": job_id, "status": job.get("status"), "cancel": outcome, "found_by": found_by,
                        "launched_here": job_id == launched, "at": utcnow().isoformat()})
    DUPLICATE_JOBS.inc(len(records))
    ids = [r["job_id"] for r in records]
    with session_scope() as session:
        req = session.get(PatchRequest, request_id, with_for_update=True)
        if req is not None:
            known = {r.get("job_id") for r in (req.duplicate_awx_jobs or [])}
            req.duplicate_awx_jobs = [*(req.duplicate_awx_jobs or []), *(r for r in records if r["job_id"] not in known)]
            audit(session, actor=WORKER, action="duplicate_awx_jobs", request_id=request_id,
                  reason=f"AWX had {len(records)} more job(s) for this request than the one kept ({kept}); "
                         "canceled at once",
                  detail={"kept": kept, "duplicates": records})
    log.critical("ALERT request %s: AWX had more than one job for it; kept %s, canceled %s (%s)", request_id, kept,
                 ", ".join(f"{r['job_id']} ({r['cancel']})" for r in records), found_by,
                 extra={"alert": True, "duplicate_awx_job_ids": ids, "awx_job_id": kept})


def _record_launch(request_id: str, template_id: int, job_id: int, *, reason: str) -> None:
    from worker.dispatch import enqueue_follow

    with session_scope() as session:
        req = session.get(PatchRequest, request_id, with_for_update=True)
        if req is None or req.awx_job_id == job_id or req.state not in (LAUNCHING, APPROVED, QUEUED):
            return  # recorded already (by another attempt that saw the same job), or ended meanwhile
        if req.state != LAUNCHING:
            transition(session, req, LAUNCHING, actor=WORKER, reason="found the job in AWX")
        transition(session, req, RUNNING, actor=WORKER, reason=reason, detail={"awx_job_id": job_id},
                   awx_job_id=job_id, awx_template_id=template_id, started_at=utcnow(), failure_reason=None,
                   next_poll_at=utcnow(), launch_lease_until=None)
        for host in req.hosts:
            session.execute(pg_insert(HostResult).values(request_id=request_id, host=host, status="pending")
                            .on_conflict_do_nothing(constraint="uq_host_results_request_host"))
    enqueue_follow(request_id)  # no countdown: a message held for later is one more unacknowledged in hand


def _finish_launch(request_id: str, token: str, state: str, reason: str) -> None:
    with session_scope() as session:
        req = session.get(PatchRequest, request_id)
        if req is None or req.state != LAUNCHING or req.launch_token != token:
            return  # ended meanwhile, or another attempt holds the launch now: its outcome counts
        transition(session, req, state, actor=WORKER, reason=reason, failure_reason=reason,
                   finished_at=utcnow(), stage="failed")
    log.warning("request %s: %s", request_id, reason)


# --------------------------------------------------------------------------------------------- follow


@dataclass(frozen=True)
class FollowTarget:
    """What one poll needs to know about a running request, read when it was claimed (or locked)."""

    request_id: str
    job_id: int
    cursor: int
    cancel_wanted: bool
    ending: bool  # the run's stats or a terminal status were seen: read the job in full first


def follow_round(client: AWXClient, statuses: JobStatuses, *, budget_seconds: float, batch: int = 50,
                 threads: int = 1) -> tuple[int, bool]:
    """Poll every running request that is due, in batches, until none is due or the budget is spent. Returns
    how many polls were made and whether more were due when the budget ran out. Run by the `follow_due` task.

    PostgreSQL is the scheduler: a request is due when its `next_poll_at` has passed. Claiming a batch moves
    their `next_poll_at` a lease ahead (SKIP LOCKED, so two workers never claim the same rows), and each poll
    sets it one interval ahead. A worker that dies mid-round loses nothing: its claims come due again when the
    lease ends. With `threads` > 1 the polls of a batch overlap their waits on AWX and PostgreSQL.
    """
    deadline = time.monotonic() + budget_seconds
    polls = 0
    while True:  # at least one batch, however short the budget
        targets = claim_due(batch)
        statuses.track([target.job_id for target in targets])  # a status read, if one is needed, covers them all
        if threads > 1 and len(targets) > 1:
            list(_round_pool(threads).map(lambda target: _poll_claimed(target, client, statuses), targets))
        else:
            for target in targets:
                _poll_claimed(target, client, statuses)
        polls += len(targets)
        if len(targets) < batch:
            return polls, False
        if time.monotonic() >= deadline:
            return polls, True


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _round_pool(threads: int) -> ThreadPoolExecutor:
    """One pool per worker process (made on first use, after the fork) and thread count."""
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="follow")
    return _POOLS[threads]


def _poll_claimed(target: FollowTarget, client: AWXClient, statuses: JobStatuses) -> None:
    from core.observability import bind_request

    with bind_request(target.request_id):
        try:
            _poll_target(target, client, statuses)
        except DBAPIError:
            raise  # the database is away: end the round, the claims come due again
        except Exception:
            log.exception("poll of request %s failed; it comes due again after its lease", target.request_id)


def claim_due(limit: int) -> list[FollowTarget]:
    settings = get_settings()
    now = utcnow()
    lease = now + timedelta(seconds=FOLLOW_LEASE_POLLS * settings.follow_poll_seconds)
    due = (select(PatchRequest.id)
           .where(PatchRequest.state == RUNNING, PatchRequest.awx_job_id.is_not(None),
                  or_(PatchRequest.next_poll_at.is_(None), PatchRequest.next_poll_at <= now))
           .order_by(PatchRequest.next_poll_at.asc().nulls_first())
           .limit(limit).with_for_update(skip_locked=True).scalar_subquery())
    with session_scope() as session:
        rows = session.execute(
            update(PatchRequest).where(PatchRequest.id.in_(due)).values(next_poll_at=lease)
            .returning(PatchRequest.id, PatchRequest.awx_job_id, PatchRequest.event_cursor,
                       PatchRequest.cancel_requested_at, PatchRequest.awx_status, PatchRequest.run_ended_at)
            .execution_options(synchronize_session=False)
        ).all()
    return [FollowTarget(request_id=r[0], job_id=r[1], cursor=r[2], cancel_wanted=r[3] is not None,
                         ending=r[4] in AWX_TERMINAL or r[5] is not None) for r in rows]


def poll(request_id: str, client: AWXClient, statuses: JobStatuses | None = None) -> bool:
    """One poll of one running request, outside the rounds (right after the launch, after a cancel, a
    redelivered message). Returns True while the job goes on.

    The events are read first. While they keep coming the job is evidently running, so its status is asked for
    only when they stop, when a cancel is pending, or every few intervals regardless; `statuses` (one per worker
    process) answers those asks for many jobs with one AWX request. Once the run's final stats (or a terminal
    status) are seen, the next polls read the job in full *before* the events, until AWX says event processing
    finished: the events read after that is the contract's final sweep, with no extra request.
    """
    settings = get_settings()
    with advisory_lock("follow", request_id) as acquired:
        if not acquired:
            return False  # another poll of it is under way
        with session_scope() as session:
            req = session.get(PatchRequest, request_id)
            if req is None or req.state != RUNNING or req.awx_job_id is None:
                return False
            if req.last_polled_at and (utcnow() - req.last_polled_at).total_seconds() < settings.follow_poll_seconds * 0.5:
                return True  # polled a moment ago (by a round): nothing to add
            target = FollowTarget(request_id=request_id, job_id=req.awx_job_id, cursor=req.event_cursor,
                                  cancel_wanted=req.cancel_requested_at is not None,
                                  ending=req.awx_status in AWX_TERMINAL or req.run_ended_at is not None)
        return _poll_target(target, client, statuses or DirectJobStatus(client))


def _poll_target(target: FollowTarget, client: AWXClient, statuses: JobStatuses) -> bool:
    """Read AWX for one job, then store what is new in one transaction. Safe to run twice at once for the same
    request: events are inserted once by their (request, counter) key and only inserted ones are applied."""
    settings = get_settings()
    request_id, job_id, cursor = target.request_id, target.job_id, target.cursor
    try:
        job: dict[str, Any] | None = client.get_job(job_id) if target.ending else None
        read_before_events = job is not None
        events = client.job_events(job_id, after_counter=cursor)
        if job is None and (target.cancel_wanted or _may_have_ended(events)
                            or _status_overdue(statuses, job_id, settings)):
            job = statuses.get(job_id)
            if target.cancel_wanted and job.get("status") in AWX_ACTIVE:
                client.cancel(job_id)
        finished = job is not None and job.get("status") in AWX_TERMINAL and bool(job.get("event_processing_finished"))
        if finished and not read_before_events:
            # Events keep landing until processing finished: one more sweep past what we just read.
            seen = {int(e["counter"]) for e in events}
            events += [e for e in client.job_events(job_id, after_counter=cursor) if int(e["counter"]) not in seen]
    except AWXError as exc:
        AWX_ERRORS.labels(kind=exc.kind).inc()
        return _poll_failed(request_id, exc)

    crashpoint("while_following")
    with session_scope() as session:
        req = session.get(PatchRequest, request_id, with_for_update=True)
        if req is None or req.state != RUNNING:
            return False
        _store_events(session, req, events)
        if job is not None:
            req.awx_status = job.get("status")
        elif events and req.awx_status not in AWX_TERMINAL:
            req.awx_status = "running"  # events are coming: it runs, whatever the last status read said
        now = utcnow()
        req.last_polled_at = now
        req.next_poll_at = now + timedelta(seconds=settings.follow_poll_seconds)
        req.follow_failures = 0
        req.updated_at = now
        if finished:
            _finish_job(session, req, job)
            return False
        if job is not None and job.get("status") in AWX_TERMINAL and job.get("event_processing_finished") is False:
            # AWX says the job ended but its events are not all in. That can last for ever (a job reaped mid-run
            # keeps emitted_events 0; the callback receiver can drop events): give up after a while.
            req.run_ended_at = req.run_ended_at or now
            waited = (now - req.run_ended_at).total_seconds()
            if waited >= settings.event_processing_give_up_seconds:
                _finish_job(session, req, job, note=(
                    f"AWX ended job {req.awx_job_id} {job['status']}, but its event processing had not finished "
                    f"{waited:.0f} s after the run ended; some events (host results, output) may be missing"))
                return False
    return True


def _may_have_ended(events: list[dict]) -> bool:
    """Nothing new: the job may be over (canceled, or an error with no stats), or just quiet."""
    return not events


def _status_overdue(statuses: JobStatuses, job_id: int, settings) -> bool:
    """Read the status every few intervals even while events flow: a job canceled or failed in AWX while a
    counter gap keeps old rows in every page would otherwise look busy for ever."""
    age = statuses.age(job_id)
    return age is None or age > STATUS_AT_LEAST_EVERY_POLLS * settings.follow_poll_seconds


def _poll_failed(request_id: str, exc: AWXError) -> bool:
    settings = get_settings()
    with session_scope() as session:
        req = session.get(PatchRequest, request_id, with_for_update=True)
        if req is None or req.state != RUNNING:
            return False
        req.follow_failures += 1
        req.last_polled_at = utcnow()
        req.next_poll_at = req.last_polled_at + timedelta(seconds=settings.follow_poll_seconds)
        give_up = exc.kind == "auth" or req.follow_failures >= settings.follow_error_budget
        if give_up:
            reason = f"AWX rejected the token: {exc}" if exc.kind == "auth" else (
                f"lost contact with AWX job {req.awx_job_id} after {req.follow_failures} failed polls: {exc}")
            transition(session, req, ERROR, actor=WORKER, reason=reason, failure_reason=reason,
                       finished_at=utcnow(), stage="failed")
            return False
    log.warning("request %s: poll failed (%s), will retry", request_id, exc)
    return True


def _store_events(session: Session, req: PatchRequest, events: list[dict]) -> None:
    if not events:
        return
    rows = [_event_row(req.id, e) for e in events]
    inserted = set(session.execute(
        pg_insert(JobEvent).values(rows).on_conflict_do_nothing(constraint="uq_job_events_request_counter")
        .returning(JobEvent.counter)
    ).scalars())
    new_events = sorted((e for e in events if int(e["counter"]) in inserted), key=lambda e: int(e["counter"]))
    now = utcnow()
    for event in new_events:
        _apply_event(session, req, event)
        created = _parse_time(event.get("created"))
        if created is not None:
            EVENT_LAG.observe(max(0.0, (now - created).total_seconds()))
    req.event_cursor = _gap_free_cursor(session, req.id, req.event_cursor)


def _gap_free_cursor(session: Session, request_id: str, cursor: int) -> int:
    """Advance the cursor only over a run of consecutive stored counters: a late, lower counter is not skipped."""
    counters = session.execute(
        select(JobEvent.counter).where(JobEvent.request_id == request_id, JobEvent.counter > cursor)
        .order_by(JobEvent.counter)
    ).scalars()
    for counter in counters:
        if counter != cursor + 1:
            break
        cursor = counter
    return cursor


def _event_row(request_id: str, e: dict) -> dict:
    settings = get_settings()
    failure = str(e.get("event", "")) in FAILURE_EVENTS or bool(e.get("failed"))
    stdout = e.get("stdout") or None
    stdout_cap = settings.failure_stdout_max_chars if failure else settings.event_data_max_bytes
    if stdout and len(stdout) > stdout_cap:
        stdout = stdout[:stdout_cap] + f"\n[... {len(stdout) - stdout_cap} more characters not stored]"
    return {
        "request_id": request_id, "counter": int(e["counter"]), "event": str(e.get("event", ""))[:100],
        "host": (e.get("host_name") or None), "play": (e.get("play") or None), "task": (e.get("task") or "")[:500] or None,
        "failed": bool(e.get("failed")), "changed": bool(e.get("changed")),
        "stdout": stdout, "created": _parse_time(e.get("created")),
        "data": trim_event_data(e.get("event_data") or None, settings.event_data_max_bytes), "stored_at": utcnow(),
    }


# What of an oversized event_data is kept: its small top-level fields, and of its `res` what explains the result.
_RES_KEPT = ("msg", "rc", "changed", "failed", "skipped", "unreachable", "skip_reason", "item", "_ansible_item_label",
             "stderr", "reboot_required", "attempts", "retries", "ansible_job_id", "finished", "results")
_ITEM_KEPT = ("msg", "rc", "changed", "failed", "skipped", "item", "_ansible_item_label", "stderr")


def trim_event_data(data: dict | None, max_bytes: int) -> dict | None:
    """event_data as stored: whole when its JSON fits in `max_bytes` (facts and package lists can make it hundreds
    of kilobytes per host), else its small fields and the result's explanation, cut to fit, with a `_trimmed`
    marker saying how big it was and what was left out."""
    if not data:
        return data
    size = len(json.dumps(data, default=str))
    if size <= max_bytes:
        return data
    field_cap = max(256, max_bytes // 8)
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in data.items():
        if key == "res":
            continue
        if len(json.dumps(value, default=str)) <= 512:
            kept[key] = value
        else:
            dropped.append(key)
    res = data.get("res")
    if isinstance(res, dict):
        small: dict[str, Any] = {}
        for key in _RES_KEPT:
            if key not in res:
                continue
            value = res[key]
            if key == "results" and isinstance(value, list):
                value = [{k: _cut(i.get(k), field_cap) for k in _ITEM_KEPT if k in i} if isinstance(i, dict) else
                         _cut(i, field_cap) for i in value if not isinstance(i, dict) or i.get("failed") or i.get("msg")]
                value = value[:20]
            small[key] = _cut(value, field_cap)
        dropped += [f"res.{key}" for key in res if key not in small]
        kept["res"] = small
    kept["_trimmed"] = {"bytes": size, "max_bytes": max_bytes, "dropped": sorted(dropped)[:50]}
    if len(json.dumps(kept, default=str)) > max_bytes:  # still too big: keep the marker and the message only
        msg = _cut((res or {}).get("msg") if isinstance(res, dict) else None, max(128, max_bytes // 4))
        kept = {k: kept[k] for k in ("host", "task", "play", "ignore_errors") if k in kept}
        kept["res"] = {"msg": msg} if msg else {}
        kept["_trimmed"] = {"bytes": size, "max_bytes": max_bytes, "dropped": ["everything but res.msg"]}
    return kept


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"[... {len(value) - limit} more characters trimmed]"
    if not isinstance(value, (str, int, float, bool, type(None), list)) or (
            isinstance(value, list) and len(json.dumps(value, default=str)) > limit * 4):
        text = json.dumps(value, default=str)
        return text[:limit] + (f"[... {len(text) - limit} more characters trimmed]" if len(text) > limit else "")
    return value


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _apply_event(session: Session, req: PatchRequest, e: dict) -> None:
    kind = e.get("event", "")
    if kind == "playbook_on_play_start":
        # The template's stage map (STAGE_MAP_FILE; the reference playbook's play names by default). A play it
        # does not know is shown under Patching by its own name rather than disappearing.
        stage, detail = get_stage_map().play_stage(_template_of(req), str(e.get("play") or ""))
        _reach_stage(session, req, stage)
        if req.stage == stage:
            req.stage_detail = detail[:255] if detail else None
    elif kind == "playbook_on_task_start":
        req.latest_task = f"{e.get('play') or ''}: {e.get('task') or ''}".strip(": ")[:500]
        stage = get_stage_map().stage_of(_template_of(req), "task", str(e.get("task") or ""))
        if stage:
            _reach_stage(session, req, stage)
            if req.stage == stage:
                req.stage_detail = None
    elif kind.startswith("runner_") and e.get("host_name"):
        _apply_host_event(session, req, e)
    elif kind == "playbook_on_stats":
        _apply_stats(session, req.id, e.get("event_data") or {})
        req.run_ended_at = req.run_ended_at or utcnow()  # the playbook is done: the next poll reads the job


def _template_of(req: PatchRequest) -> str:
    """The job template a request runs: its patch group's, or the default one for pre-checks without one."""
    group = get_catalog().patch_groups.get(req.patch_group or "")
    return group.job_template if group else get_settings().awx_default_job_template


def _reach_stage(session: Session, req: PatchRequest, stage: str, at: datetime | None = None) -> None:
    session.execute(pg_insert(RequestStage).values(request_id=req.id, stage=stage, at=at or utcnow())
                    .on_conflict_do_nothing(constraint="uq_request_stages_request_stage"))
    if STAGES.index(stage) > STAGES.index(req.stage if req.stage in STAGES else "pending"):
        req.stage = stage


# AWX's JobEvent.FAILED_EVENTS: `failed` unless the task ignores errors.
FAILURE_EVENTS = frozenset({"runner_on_failed", "runner_on_error", "runner_on_unreachable", "runner_on_async_failed",
                            "runner_item_on_failed"})
_TASK_RESULTS = {"runner_on_ok": "ok", "runner_on_async_ok": "ok", "runner_on_failed": "failed",
                 "runner_on_error": "failed", "runner_on_async_failed": "failed", "runner_on_unreachable": "unreachable",
                 "runner_on_skipped": "skipped"}
# Events that say a task is under way on the host, with no result yet.
_IN_FLIGHT = frozenset({"runner_on_start", "runner_retry", "runner_on_async_poll", "runner_item_on_ok",
                        "runner_item_on_skipped", "runner_item_on_failed"})
_GENERIC_ITEM_FAILURE = "One or more items failed"


def _apply_host_event(session: Session, req: PatchRequest, e: dict) -> None:
    """One host's event: `runner_on_start` (one per host per task) marks it running, a task's result (ok, failed,
    unreachable, skipped, async) sets its state from the results so far, item events keep it running and a failed
    item keeps its own reason, which the task's "One or more items failed" never overwrites."""
    kind = str(e.get("event", ""))
    data = e.get("event_data") or {}
    task = e.get("task") or data.get("task") or ""
    ignored = bool(data.get("ignore_errors"))
    result = _TASK_RESULTS.get(kind)
    if result is None and kind not in _IN_FLIGHT:
        return  # runner_on_no_hosts, runner_on_file_diff, ...: nothing about the host's state
    row = session.execute(select(HostResult).where(HostResult.request_id == req.id, HostResult.host == e["host_name"])
                          .with_for_update()).scalar_one_or_none()
    if row is None:
        row = HostResult(request_id=req.id, host=e["host_name"], status="pending")
        session.add(row)
    if row.status in ("failed", "unreachable"):
        sticky = True  # a host that failed once stays failed however events are ordered
    else:
        sticky = False
    if kind == "runner_item_on_failed" and not ignored:
        row.message = _failure_message(task, data, e, item=True)
    if result is None:
        if not sticky:
            row.status = "running"
        return
    if result == "failed" and ignored:
        result = "ok"
    res = data.get("res") if isinstance(data.get("res"), dict) else {}
    changed = bool(e.get("changed") or res.get("changed"))
    if result == "ok":
        row.ok += 1
        row.changed += 1 if changed else 0
    elif result == "skipped":
        row.skipped += 1
    elif result == "failed":
        row.failed += 1
        item_reason = row.message if row.message and row.message.startswith(f"{task} (item ") else None
        message = _failure_message(task, data, e)
        row.message = item_reason if item_reason and _GENERIC_ITEM_FAILURE in message else message
    else:
        row.unreachable += 1
        row.message = _failure_message(task, data, e)
    if sticky:
        return
    if result in ("failed", "unreachable"):
        row.status = result
    else:
        row.status = "changed" if row.changed else "ok" if row.ok else "skipped"


def _failure_message(task: str, data: dict, e: dict, *, item: bool = False) -> str:
    """'Check free disk space (item /var): Only 1234 MiB free on /var, 99999999 MiB needed.' -- the real reason:
    an item's own msg, or a failed task's msg, or its failed items' messages, or its stdout."""
    res = data.get("res") if isinstance(data.get("res"), dict) else {}
    msg = res.get("msg")
    if not item and (not msg or _GENERIC_ITEM_FAILURE in str(msg)):
        items = [r for r in (res.get("results") or []) if isinstance(r, dict) and r.get("failed")]
        if items:
            return "; ".join(f"{task} (item {_item_label(r)}): {r.get('msg') or r.get('stderr') or ''}".rstrip(": ")
                             for r in items)[:2000]
    if not msg:
        msg = res.get("stderr") or _plain(e.get("stdout") or "")
    where = f"{task} (item {_item_label(res)})" if item else task
    return f"{where}: {msg}".strip(": ")[:2000]


def _item_label(res: dict) -> str:
    label = res.get("_ansible_item_label", res.get("item"))
    return label if isinstance(label, str) else json.dumps(label, default=str)[:200]


def _plain(text: str) -> str:
    """stdout without ANSI colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text).strip()


def _apply_stats(session: Session, request_id: str, data: dict) -> None:
    keys = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable", "skipped": "skipped"}
    hosts: set[str] = set()
    for source in keys:
        hosts |= set((data.get(source) or {}).keys())
    for host in hosts:
        counts = {target: int((data.get(source) or {}).get(host, 0)) for source, target in keys.items()}
        if counts["unreachable"]:
            status = "unreachable"
        elif counts["failed"]:
            status = "failed"
        elif counts["changed"]:
            status = "changed"
        elif counts["ok"]:
            status = "ok"
        else:
            status = "skipped"
        session.execute(
            pg_insert(HostResult).values(request_id=request_id, host=host, status=status, **counts)
            .on_conflict_do_update(constraint="uq_host_results_request_host", set_={"status": status, **counts})
        )


def _finish_job(session: Session, req: PatchRequest, job: dict, note: str | None = None) -> None:
    """The request takes AWX's final status; `note` (the give-up on event processing) is kept with the reason."""
    final = AWX_TERMINAL[job["status"]]
    stage = FINAL_STAGE[final]
    _reach_stage(session, req, stage)
    req.stage = stage
    reason = None
    if final in (FAILED, ERROR):
        bad = session.execute(select(HostResult).where(HostResult.request_id == req.id,
                                                       HostResult.status.in_(("failed", "unreachable")))).scalars().all()
        details = "; ".join(f"{h.host} {h.status}" + (f" ({h.message})" if h.message else "") for h in bad)
        reason = job.get("job_explanation") or details or f"AWX job {req.awx_job_id} ended {job['status']}"
        if details and job.get("job_explanation"):
            reason = f"{job['job_explanation']} — {details}"
    if note:
        reason = f"{reason}. {note}" if reason else note
        audit(session, actor=WORKER, action="event_processing_gave_up", request_id=req.id, reason=note,
              detail={"awx_job_id": req.awx_job_id, "awx_status": job["status"]})
        log.warning("request %s: %s", req.id, note)
    session.flush()
    transition(session, req, final, actor=WORKER, reason=f"AWX job {req.awx_job_id} {job['status']}",
               finished_at=utcnow(), stage=stage, failure_reason=reason, awx_status=job["status"],
               event_cursor=req.event_cursor, latest_task=req.latest_task, last_polled_at=req.last_polled_at)


# --------------------------------------------------------------------------------------------- sweep


def sweep() -> dict[str, int]:
    """Re-drive whatever a lost message, a dead worker or a broker outage left behind, and expire proposals."""
    from worker.dispatch import enqueue_launch

    settings = get_settings()
    now = utcnow()
    stuck_before = now - timedelta(seconds=settings.stuck_after_seconds)
    counts = {"expired": 0, "relaunched": 0, "queued": 0}
    with session_scope() as session:
        for req in session.execute(select(PatchRequest).where(PatchRequest.state == PROPOSED,
                                                              PatchRequest.expires_at < now)).scalars():
            try:
                transition(session, req, EXPIRED, actor="system", reason="not approved in time", stage="pending")
                counts["expired"] += 1
            except IllegalTransition:
                pass
        to_launch = session.execute(select(PatchRequest.id).where(
            PatchRequest.state.in_((APPROVED, QUEUED, LAUNCHING)), PatchRequest.updated_at < stuck_before)).scalars().all()
    for request_id in to_launch:
        if enqueue_launch(request_id):
            counts["relaunched"] += 1
            mark_queued(request_id)
    return counts


def mark_queued(request_id: str) -> None:
    """approved -> queued once the launch message is on the broker (and touch `queued` ones for the sweep)."""
    with session_scope() as session:
        req = session.get(PatchRequest, request_id)
        if req is None:
            return
        if req.state == APPROVED:
            try:
                transition(session, req, QUEUED, actor="system", reason="launch enqueued")
            except IllegalTransition:
                pass
        elif req.state in (QUEUED, LAUNCHING):
            req.updated_at = utcnow()
