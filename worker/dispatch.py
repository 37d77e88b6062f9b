"""Putting work on the queue. Publishing is best effort by design: if Redis is down the request stays in
PostgreSQL and the sweep enqueues it later, so callers never fail a user action because of the broker."""

from __future__ import annotations

import logging

log = logging.getLogger("patchpilot.dispatch")

_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}


def _send(task: str, request_id: str, countdown: float | None = None) -> bool:
    from worker.celery_app import celery_app

    try:
        celery_app.send_task(task, args=[request_id], countdown=countdown, retry=True, retry_policy=_PUBLISH_RETRY)
        return True
    except Exception as exc:
        log.warning("could not enqueue %s for %s: %s", task, request_id, exc)
        return False


def enqueue_launch(request_id: str) -> bool:
    return _send("worker.tasks.launch_request", request_id)


def enqueue_follow(request_id: str, countdown: float | None = None) -> bool:
    return _send("worker.tasks.follow_request", request_id, countdown)


def enqueue_cancel(request_id: str) -> bool:
    return _send("worker.tasks.cancel_request", request_id)


def broker_reachable(timeout: float = 2.0) -> bool:
    from worker.celery_app import celery_app

    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:
        return False
