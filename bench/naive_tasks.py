"""Baseline for `bench.follow`: the naive follower, where one Celery task polls one AWX job in a sleep loop until
it ends. Each poll does exactly what `worker.execution.poll` does; only the scheduling differs: a task holds a
worker slot for the job's whole run, so a worker with concurrency 2 follows two jobs at a time.

Run only by the benchmark: `celery -A bench.naive_tasks:app worker -Q naive --concurrency 2`.
"""

from __future__ import annotations

import time

from celery import Celery

from core.settings import get_settings
from worker import execution
from worker.awx_client import AWXClient

QUEUE = "naive"
MAX_SECONDS = 3600  # a bound on one loop, whatever the job does

app = Celery("patchpilot-naive", broker=get_settings().redis_url or "redis://127.0.0.1:6379/0")
app.conf.update(
    task_serializer="json", accept_content=["json"], task_ignore_result=True, result_backend=None,
    task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
    task_default_queue=QUEUE, broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
    broker_transport_options={"visibility_timeout": 3600},
)


@app.task(name="bench.naive_tasks.follow_blocking")
def follow_blocking(request_id: str) -> int:
    """Poll one job every FOLLOW_POLL_SECONDS, sleeping in between, until it is over. Returns the poll count."""
    interval = get_settings().follow_poll_seconds
    deadline = time.monotonic() + MAX_SECONDS
    polls = 0
    with AWXClient.from_settings() as client:
        while time.monotonic() < deadline:
            polls += 1
            if not execution.poll(request_id, client):
                break
            time.sleep(interval)
    return polls
