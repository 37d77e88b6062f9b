"""Celery tasks: thin wrappers that read the configuration, take the process's AWX client and call the worker.

These task functions are the one place in the worker that reads `get_settings()`, `get_catalog()` and
`get_stage_map()`: everything below them (`worker.launch`, `worker.follow`, `worker.sweep`) receives them.

Every task is acknowledged as it starts and is safe to lose: PostgreSQL is the truth, the beat's sweep
re-drives a launch whose message or worker was lost, and following needs no message at all (the rounds poll
whatever `next_poll_at` says is due). So no message waits unacknowledged in a worker's hands for longer than it
takes to start it: no retry or countdown is ever published (a message held for later stays unacknowledged),
and database errors are retried inside the task, with backoff, while PostgreSQL restarts.
All tasks are idempotent (they reload the row and return early when the work is done), so a duplicate message
does nothing twice. Task names must not change: messages in flight and the beat's schedule use them.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError

from core.inventory import get_catalog
from core.observability import bind_request
from core.settings import get_settings
from core.stage_map import get_stage_map
from worker import follow, launch, notify
from worker import sweep as sweeping
from worker.awx_client import AWXClient
from worker.celery_app import celery_app
from worker.context import worker_context
from worker.job_status import JobStatuses

log = logging.getLogger("patchpilot.worker")

DB_RETRY_SECONDS = (1, 2, 4, 8, 15)  # then give up: the sweep re-drives whatever is left
ROUND_BUDGET_SECONDS = 1.0


def with_db_retry(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn` again after database errors, in this task (sleeping), never through a new message."""
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


def awx() -> AWXClient:
    """The process's AWX client (`worker.context`)."""
    return worker_context(get_settings()).client()


def job_statuses() -> JobStatuses:
    """The process's job statuses, read for all the jobs it follows in one AWX request per poll interval."""
    return worker_context(get_settings()).statuses()


def _follower() -> follow.Follower:
    return follow.Follower(awx(), job_statuses(), get_settings(), get_catalog(), get_stage_map())


@celery_app.task(name="worker.tasks.launch_request", acks_late=False)
def launch_request(request_id: str) -> str | None:
    with bind_request(request_id):
        outcome = with_db_retry("launch", lambda: launch.launch(request_id, awx(), get_settings(), get_catalog()))
        log.info("launch: %s", outcome)
    return outcome


# A lost tick costs nothing (the next one comes).
@celery_app.task(name="worker.tasks.follow_due", acks_late=False)
def follow_due() -> int:
    """One follow round: poll every running request that is due, for about one second, so launches queued
    behind it wait little. The beat starts one every FOLLOW_TICK_SECONDS; a round that runs out of time with
    work left starts the next one at once instead of waiting for a tick. Nothing to retry on errors: requests
    claimed by a round that failed or died come due again on their own."""
    try:
        polls, more_due = follow.follow_round(_follower(), budget_seconds=ROUND_BUDGET_SECONDS,
                                              pool=worker_context(get_settings()).round_pool())
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
    """Poll one request now (after a cancel); the rounds go on from there, so a lost message only costs a round's
    delay."""
    with bind_request(request_id):
        try:
            return follow.poll(request_id, _follower())
        except (OperationalError, DBAPIError) as exc:
            log.warning("poll of request %s: database unavailable (%s); the rounds take it up",
                        request_id, exc.__class__.__name__)
            return False


@celery_app.task(name="worker.tasks.notify", acks_late=False)
def notify_round() -> dict:
    """Webhook messages from the audit log (worker.notify); nothing when no webhook is configured."""
    try:
        return notify.notify_round(get_settings(), get_catalog())
    except (OperationalError, DBAPIError) as exc:
        log.warning("notify round stopped: %s", exc.__class__.__name__)
        return {}


@celery_app.task(name="worker.tasks.sweep", acks_late=False)
def sweep() -> dict:
    counts = with_db_retry("sweep", lambda: sweeping.sweep(get_settings())) or {}
    if any(counts.values()):
        log.info("sweep: %s", counts)
    return counts
