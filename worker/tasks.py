"""Celery tasks: thin wrappers that take a request id, build an AWX client and call `worker.execution`.

Every task is acknowledged as it starts and is safe to lose: PostgreSQL is the truth, the beat's sweep
re-drives a launch whose message or worker was lost, and following needs no message at all (the rounds poll
whatever `next_poll_at` says is due). So no message waits unacknowledged in a worker's hands for longer than it
takes to start it: no retry or countdown is ever published (a message held for later stays unacknowledged),
and database errors are retried inside the task, with backoff, while PostgreSQL restarts.
All tasks are idempotent (they reload the row and return early when the work is done), so a duplicate message
does nothing twice.
"""

from __future__ import annotations

import logging
import os

from sqlalchemy.exc import DBAPIError, OperationalError

from core.observability import bind_request
from core.settings import get_settings
from worker import execution
from worker.awx_client import AWXClient
from worker.celery_app import celery_app
from worker.job_status import JobStatusBatch

log = logging.getLogger("patchpilot.worker")

DB_RETRY_SECONDS = (1, 2, 4, 8, 15)  # then give up: the sweep re-drives whatever is left


def with_db_retry(what: str, fn, *args):
    """Run `fn` again after database errors, in this task (sleeping), never through a new message."""
    import random
    import time

    for pause in (*DB_RETRY_SECONDS, None):
        try:
            return fn(*args)
        except (OperationalError, DBAPIError) as exc:
            if pause is None:
                log.warning("%s: database unavailable, leaving it to the sweep: %s", what, exc.__class__.__name__)
                return None
            log.warning("%s: database unavailable (%s); again in %ss", what, exc.__class__.__name__, pause)
            time.sleep(pause * random.uniform(0.75, 1.25))
    return None


_client: AWXClient | None = None
_client_pid: int | None = None


def awx() -> AWXClient:
    """One AWX client per worker process, made after the fork and reused: building an httpx client loads the CA
    bundle (~24 ms of CPU), more than the rest of a poll, and reuse keeps the connection alive (bench/README.md)."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client, _client_pid = AWXClient.from_settings(), os.getpid()
    return _client


ROUND_BUDGET_SECONDS = 1.0
_statuses: JobStatusBatch | None = None


def job_statuses() -> JobStatusBatch:
    """The process's job statuses, read for all the jobs it follows in one AWX request per poll interval."""
    global _statuses
    if _statuses is None or _statuses.client is not awx():
        _statuses = JobStatusBatch(awx(), max_age=get_settings().follow_poll_seconds)
    return _statuses


@celery_app.task(name="worker.tasks.launch_request", acks_late=False)
def launch_request(request_id: str) -> str | None:
    with bind_request(request_id):
        outcome = with_db_retry("launch", execution.launch, request_id, awx())
        log.info("launch: %s", outcome)
    return outcome


# A lost tick costs nothing (the next one comes).
@celery_app.task(name="worker.tasks.follow_due", acks_late=False)
def follow_due() -> int:
    """One follow round: poll every running request that is due, for about one second, so launches queued
    behind it wait little. The beat starts one every FOLLOW_TICK_SECONDS; a round that runs out of time with
    work left starts the next one at once instead of waiting for a tick. Nothing to retry on errors: requests
    claimed by a round that failed or died come due again on their own."""
    settings = get_settings()
    try:
        polls, more_due = execution.follow_round(awx(), job_statuses(), budget_seconds=ROUND_BUDGET_SECONDS,
                                                 threads=settings.follow_round_threads)
    except (OperationalError, DBAPIError) as exc:
        log.warning("follow round stopped: %s", exc)
        return 0
    if more_due:
        try:
            follow_due.apply_async(expires=ROUND_BUDGET_SECONDS * 2)
        except Exception as exc:
            log.warning("could not start the next follow round at once: %s", exc)
    return polls


@celery_app.task(name="worker.tasks.follow_request", acks_late=False)
def follow_request(request_id: str) -> bool:
    """Poll one request now (right after its launch, or after a cancel); the rounds go on from there, so a
    lost message only costs a round's delay."""
    with bind_request(request_id):
        try:
            return execution.poll(request_id, awx(), job_statuses())
        except (OperationalError, DBAPIError) as exc:
            log.warning("poll of request %s: database unavailable (%s); the rounds take it up",
                        request_id, exc.__class__.__name__)
            return False


@celery_app.task(name="worker.tasks.notify", acks_late=False)
def notify() -> dict:
    """Webhook messages from the audit log (worker.notify); nothing when no webhook is configured."""
    from worker import notify as notifications

    try:
        return notifications.notify_round()
    except (OperationalError, DBAPIError) as exc:
        log.warning("notify round stopped: %s", exc.__class__.__name__)
        return {}


if get_settings().notify_webhooks:
    # On the beat's schedule only when there is somewhere to send to; a lost tick costs one interval.
    celery_app.conf.beat_schedule["notify"] = {
        "task": "worker.tasks.notify", "schedule": get_settings().notify_interval_seconds,
        "options": {"expires": max(1.0, 2 * get_settings().notify_interval_seconds)}}


@celery_app.task(name="worker.tasks.sweep", acks_late=False)
def sweep() -> dict:
    counts = with_db_retry("sweep", execution.sweep) or {}
    if any(counts.values()):
        log.info("sweep: %s", counts)
    return counts
