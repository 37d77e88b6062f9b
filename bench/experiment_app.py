"""The production Celery app with the follower's status reads switched back to the earlier design, for a same-run
comparison in `bench.follow --variant`. Nothing under worker/ is modified: the change is applied when the worker
imports this module.

- BENCH_STATUS_EVERY_POLL=1: every poll reads `GET jobs/{id}/` for its own job, besides the events: two AWX
  requests per poll (and a third at the end), as the follower did before statuses were read together in one
  `GET jobs/?id__in=…` per interval (`worker/job_status.py`).
"""

from __future__ import annotations

import os

from worker import tasks
from worker.celery_app import celery_app
from worker.job_status import DirectJobStatus

__all__ = ["celery_app"]

if os.environ.get("BENCH_STATUS_EVERY_POLL") == "1":
    tasks.job_statuses = lambda: DirectJobStatus(tasks.awx())
