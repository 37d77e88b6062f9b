"""The production Celery app with the follower switched back, piece by piece, to its earlier design, for a same-run
comparison in `bench.follow --variant`. Nothing under worker/ is modified: the changes are applied when the worker
imports this module.

- BENCH_CHAINS=1: no follow rounds. Each `follow_request` task polls its one request and, while the job goes on,
  publishes the next `follow_request` with a countdown of one interval (a Celery countdown task per poll), as the
  follower did before PostgreSQL scheduled the polls (`next_poll_at`, `worker.execution.follow_round`).
- BENCH_STATUS_EVERY_POLL=1: every poll reads `GET jobs/{id}/` for its own job besides the events (two AWX
  requests per poll), as before the statuses were read together in one `GET jobs/?id__in=…` per interval
  (`worker/job_status.py`).

Both together are the follower as it was before these two changes.
"""

from __future__ import annotations

import os

from core.settings import get_settings
from worker import tasks
from worker.celery_app import celery_app
from worker.dispatch import enqueue_follow
from worker.job_status import DirectJobStatus

__all__ = ["celery_app"]

if os.environ.get("BENCH_STATUS_EVERY_POLL") == "1":
    tasks.job_statuses = lambda: DirectJobStatus(tasks.awx())

if os.environ.get("BENCH_CHAINS") == "1":
    celery_app.conf.beat_schedule.pop("follow", None)
    _poll_once = tasks.follow_request.run

    def _poll_and_chain(request_id: str) -> bool:
        again = _poll_once(request_id)
        if again:
            enqueue_follow(request_id, countdown=get_settings().follow_poll_seconds)
        return again

    tasks.follow_request.run = _poll_and_chain
