"""Following AWX jobs, scheduled in PostgreSQL: every running request has a `next_poll_at`.

`follow_round()` claims the running requests that are due, with a lease, and polls each once; `poll()` polls one
request on its own (after a cancel, a redelivered message). Neither holds a worker slot for a job's duration.

A poll is one AWX request, the events. The job's status is asked for only when the events stop, when a cancel is
pending, or every few intervals regardless; `statuses` (one per worker process) answers those asks for many jobs
with one AWX request. Once the run's final stats (or a terminal status) are seen, the next polls read the job in
full *before* the events, until AWX says event processing finished: the events read after that is the contract's
final sweep, with no extra request.

Cadence: AWX wants one job polled no more often than every 2-3 s (FOLLOW_POLL_SECONDS). The first poll comes
FIRST_POLL_SECONDS after the launch (the launch POST is not a poll), and a first poll that finds no events yet is
repeated once after FIRST_POLL_SECONDS too; from then on, and whenever a job has events, the normal cadence applies.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlmodel import col

from core.db import advisory_lock, session_scope
from core.faults import crashpoint
from core.inventory import Catalog
from core.models import PatchRequest, utcnow
from core.observability import AWX_ERRORS, bind_request
from core.settings import Settings
from core.stage_map import StageMap
from core.states import ERROR, RUNNING, Stage, transition
from core.statuses import AWX_ACTIVE, AWX_TERMINAL, AwxStatus
from worker.awx_client import AWXClient, AWXError
from worker.events import store_events, template_of
from worker.finish import WORKER, finish_job
from worker.job_status import DirectJobStatus, JobStatuses

log = logging.getLogger("patchpilot.worker")

STATUS_AT_LEAST_EVERY_POLLS = 4
FOLLOW_LEASE_POLLS = 3  # a claimed request comes due again after this many intervals if its poll never ended


@dataclass(frozen=True)
class FollowTarget:
    """What one poll needs to know about a running request, read when it was claimed (or locked)."""

    request_id: str
    job_id: int
    cursor: int
    cancel_wanted: bool
    ending: bool  # the run's stats or a terminal status were seen: read the job in full first


@dataclass(frozen=True)
class Follower:
    """What every poll uses: the AWX client, the process's job statuses and the configuration."""

    client: AWXClient
    statuses: JobStatuses
    settings: Settings
    catalog: Catalog
    stage_map: StageMap


def follow_round(follower: Follower, *, budget_seconds: float, batch: int = 50,
                 pool: Executor | None = None) -> tuple[int, bool]:
    """Poll every running request that is due, in batches, until none is due or the budget is spent. Returns
    how many polls were made and whether more were due when the budget ran out. Run by the `follow_due` task.

    PostgreSQL is the scheduler: a request is due when its `next_poll_at` has passed. Claiming a batch moves
    their `next_poll_at` a lease ahead (SKIP LOCKED, so two workers never claim the same rows), and each poll
    sets it ahead again. A worker that dies mid-round loses nothing: its claims come due again when the lease
    ends. With a `pool` the polls of a batch overlap their waits on AWX and PostgreSQL.
    """
    deadline = time.monotonic() + budget_seconds
    polls = 0
    while True:  # at least one batch, however short the budget
        targets = claim_due(batch, follower.settings)
        follower.statuses.track([target.job_id for target in targets])  # one status read covers them all
        if pool is not None and len(targets) > 1:
            list(pool.map(lambda target: _poll_claimed(target, follower), targets))
        else:
            for target in targets:
                _poll_claimed(target, follower)
        polls += len(targets)
        if len(targets) < batch:
            return polls, False
        if time.monotonic() >= deadline:
            return polls, True


def _poll_claimed(target: FollowTarget, follower: Follower) -> None:
    with bind_request(target.request_id):
        try:
            _poll_target(target, follower)
        except DBAPIError:
            raise  # the database is away: end the round, the claims come due again
        except Exception:
            log.exception("poll of request %s failed; it comes due again after its lease", target.request_id)


def claim_due(limit: int, settings: Settings) -> list[FollowTarget]:
    now = utcnow()
    lease = now + timedelta(seconds=FOLLOW_LEASE_POLLS * settings.follow_poll_seconds)
    next_poll_at = col(PatchRequest.next_poll_at)
    due = (select(col(PatchRequest.id))
           .where(col(PatchRequest.state) == RUNNING, col(PatchRequest.awx_job_id).is_not(None),
                  or_(next_poll_at.is_(None), next_poll_at <= now))
           .order_by(next_poll_at.asc().nulls_first())
           .limit(limit).with_for_update(skip_locked=True).scalar_subquery())
    with session_scope() as session:
        rows = session.execute(
            update(PatchRequest).where(col(PatchRequest.id).in_(due)).values(next_poll_at=lease)
            .returning(col(PatchRequest.id), col(PatchRequest.awx_job_id), col(PatchRequest.event_cursor),
                       col(PatchRequest.cancel_requested_at), col(PatchRequest.awx_status),
                       col(PatchRequest.run_ended_at))
            .execution_options(synchronize_session=False)
        ).all()
    return [FollowTarget(request_id=r[0], job_id=r[1], cursor=r[2], cancel_wanted=r[3] is not None,
                         ending=r[4] in AWX_TERMINAL or r[5] is not None) for r in rows]


def poll(request_id: str, follower: Follower) -> bool:
    """One poll of one running request, outside the rounds (after a cancel, a redelivered message). Returns True
    while the job goes on."""
    with advisory_lock("follow", request_id) as acquired:
        if not acquired:
            return False  # another poll of it is under way
        with session_scope() as session:
            req = session.get(PatchRequest, request_id)
            if req is None or req.state != RUNNING or req.awx_job_id is None:
                return False
            since = (utcnow() - req.last_polled_at).total_seconds() if req.last_polled_at else None
            if since is not None and since < follower.settings.follow_poll_seconds * 0.5:
                return True  # polled a moment ago (by a round): nothing to add
            target = FollowTarget(request_id=request_id, job_id=req.awx_job_id, cursor=req.event_cursor,
                                  cancel_wanted=req.cancel_requested_at is not None,
                                  ending=req.awx_status in AWX_TERMINAL or req.run_ended_at is not None)
        return _poll_target(target, follower)


def one_off(client: AWXClient, settings: Settings, catalog: Catalog, stage_map: StageMap) -> Follower:
    """A follower with no status batching, for a single poll outside a worker process."""
    return Follower(client, DirectJobStatus(client), settings, catalog, stage_map)


def _read_awx(target: FollowTarget, follower: Follower) -> tuple[dict[str, Any] | None, list[dict], bool]:
    """The job (when needed) and its new events. Returns (job, events, finished)."""
    client, statuses, job_id, cursor = follower.client, follower.statuses, target.job_id, target.cursor
    job: dict[str, Any] | None = client.get_job(job_id) if target.ending else None
    read_before_events = job is not None
    events = client.job_events(job_id, after_counter=cursor)
    # Nothing new: the job may be over (canceled, or an error with no stats), or just quiet.
    if job is None and (target.cancel_wanted or not events or _status_overdue(statuses, job_id, follower.settings)):
        job = statuses.get(job_id)
        if target.cancel_wanted and job.get("status") in AWX_ACTIVE:
            client.cancel(job_id)
    finished = job is not None and job.get("status") in AWX_TERMINAL and bool(job.get("event_processing_finished"))
    if finished and not read_before_events:
        # Events keep landing until processing finished: one more sweep past what we just read.
        seen = {int(e["counter"]) for e in events}
        events += [e for e in client.job_events(job_id, after_counter=cursor) if int(e["counter"]) not in seen]
    return job, events, finished


def _poll_target(target: FollowTarget, follower: Follower) -> bool:
    """Read AWX for one job, then store what is new in one transaction. Safe to run twice at once for the same
    request: events are inserted once by their (request, counter) key and only inserted ones are applied."""
    settings = follower.settings
    try:
        job, events, finished = _read_awx(target, follower)
    except AWXError as exc:
        AWX_ERRORS.labels(kind=exc.kind).inc()
        return _poll_failed(target.request_id, exc, settings)

    crashpoint("while_following")
    with session_scope() as session:
        req = session.get(PatchRequest, target.request_id, with_for_update=True)
        if req is None or req.state != RUNNING:
            return False
        store_events(session, req, events, settings, follower.stage_map, template_of(req, settings, follower.catalog))
        if job is not None:
            req.awx_status = job.get("status")
        elif events and req.awx_status not in AWX_TERMINAL:
            req.awx_status = AwxStatus.RUNNING  # events are coming: it runs, whatever the last status read said
        now = utcnow()
        req.last_polled_at = now
        req.next_poll_at = now + timedelta(seconds=settings.follow_poll_seconds)
        req.follow_failures = 0
        req.updated_at = now
        if finished and job is not None:
            finish_job(session, req, job)
            return False
        if job is not None and job.get("status") in AWX_TERMINAL and job.get("event_processing_finished") is False:
            return _wait_for_event_processing(session, req, job, settings)
    return True


def first_poll_in(settings: Settings) -> float:
    """Seconds from the launch to a job's first poll: FIRST_POLL_SECONDS, never more than a normal interval. The
    launch POST is not a poll; after the first poll the contract's cadence (FOLLOW_POLL_SECONDS, >= 2 s) holds."""
    return min(settings.first_poll_seconds, settings.follow_poll_seconds)


def _wait_for_event_processing(session, req: PatchRequest, job: dict[str, Any], settings: Settings) -> bool:
    """AWX says the job ended but its events are not all in. That can last for ever (a job reaped mid-run keeps
    emitted_events 0; the callback receiver can drop events): give up after a while, with a note."""
    now = utcnow()
    req.run_ended_at = req.run_ended_at or now
    waited = (now - req.run_ended_at).total_seconds()
    if waited < settings.event_processing_give_up_seconds:
        return True
    finish_job(session, req, job, note=(
        f"AWX ended job {req.awx_job_id} {job['status']}, but its event processing had not finished "
        f"{waited:.0f} s after the run ended; some events (host results, output) may be missing"))
    return False


def _status_overdue(statuses: JobStatuses, job_id: int, settings: Settings) -> bool:
    """Read the status every few intervals even while events flow: a job canceled or failed in AWX while a
    counter gap keeps old rows in every page would otherwise look busy for ever."""
    age = statuses.age(job_id)
    return age is None or age > STATUS_AT_LEAST_EVERY_POLLS * settings.follow_poll_seconds


def _poll_failed(request_id: str, exc: AWXError, settings: Settings) -> bool:
    with session_scope() as session:
        req = session.get(PatchRequest, request_id, with_for_update=True)
        if req is None or req.state != RUNNING:
            return False
        req.follow_failures += 1
        req.last_polled_at = utcnow()
        req.next_poll_at = req.last_polled_at + timedelta(seconds=settings.follow_poll_seconds)
        if exc.kind == "auth" or req.follow_failures >= settings.follow_error_budget:
            reason = f"AWX rejected the token: {exc}" if exc.kind == "auth" else (
                f"lost contact with AWX job {req.awx_job_id} after {req.follow_failures} failed polls: {exc}")
            transition(session, req, ERROR, actor=WORKER, reason=reason, failure_reason=reason,
                       finished_at=utcnow(), stage=Stage.FAILED)
            return False
    log.warning("request %s: poll failed (%s), will retry", request_id, exc)
    return True
