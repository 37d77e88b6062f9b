"""The production Celery app with two candidate changes to the follower, switched on by environment variables, for
`bench.follow --app bench.experiment_app:celery_app`. Nothing under worker/ is modified: the changes are applied to
the imported modules when the worker starts.

- BENCH_SHARED_AWX_CLIENT=1: `follow_request` reuses one AWXClient (one httpx.Client, its TLS context and its
  keep-alive connection) per worker process instead of building one per poll. Building an httpx.Client with
  verify=True loads the CA bundle: ~24 ms of CPU, more than the whole rest of a poll.
- BENCH_STATUS_WHEN_NEEDED=1: `poll` reads the events first and reads the job itself only when the page brought
  nothing new (the job may have ended without more events), brought `playbook_on_stats`, or a cancel is pending.
  While a job emits events, that is one AWX request per poll instead of two.

The change in worker/tasks.py that BENCH_SHARED_AWX_CLIENT stands for:

    _client: AWXClient | None = None

    def _awx() -> AWXClient:            # one per worker process, created after the fork
        global _client
        if _client is None:
            _client = AWXClient.from_settings()
        return _client

    def follow_request(request_id):
        with bind_request(request_id):
            again = execution.poll(request_id, _awx())
"""

from __future__ import annotations

import os

from worker import execution, tasks
from worker.awx_client import AWXClient
from worker.celery_app import celery_app

__all__ = ["celery_app"]


class _SharedClient:
    """Stands in for `AWXClient` in worker.tasks: `from_settings()` returns the process's one client, whose
    context manager exit does not close it."""

    _client: AWXClient | None = None
    _pid: int | None = None

    def __init__(self, client: AWXClient):
        self._inner = client

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __enter__(self):
        return self._inner

    def __exit__(self, *exc):
        return None

    @classmethod
    def from_settings(cls, settings=None):
        if cls._client is None or cls._pid != os.getpid():
            cls._client, cls._pid = AWXClient.from_settings(settings), os.getpid()
        return cls(cls._client)


if os.environ.get("BENCH_SHARED_AWX_CLIENT") == "1":
    tasks.AWXClient = _SharedClient


class _JobWhenNeeded(dict):
    """What `get_job` returns under BENCH_STATUS_WHEN_NEEDED: the job is read from AWX on first use only if the
    events read in the same poll say it may be over; otherwise it reads as still running."""

    def __init__(self, fetch, events: dict):
        super().__init__()
        self._fetch, self._events, self._resolved = fetch, events, False

    def _resolve(self) -> None:
        if self._resolved:
            return
        self._resolved = True
        events = self._events.get("first")
        if events is None or not events or any(e.get("event") == "playbook_on_stats" for e in events):
            self.update(self._fetch())  # nothing new, the end of the run, or a cancel check before the events
        else:
            self.update({"status": "running", "event_processing_finished": False})

    def get(self, key, default=None):
        self._resolve()
        return super().get(key, default)

    def __getitem__(self, key):
        self._resolve()
        return super().__getitem__(key)


_real_poll = execution.poll


def _poll_status_when_needed(request_id: str, client: AWXClient) -> bool:
    """`execution.poll`, unchanged, around a client whose job read is deferred to after the events read."""
    real_get_job, real_events = client.get_job, client.job_events
    seen: dict = {}

    def job_events(job_id: int, after_counter: int) -> list:
        events = real_events(job_id, after_counter=after_counter)
        seen.setdefault("first", events)
        return events

    client.get_job = lambda job_id: _JobWhenNeeded(lambda: real_get_job(job_id), seen)
    client.job_events = job_events
    try:
        return _real_poll(request_id, client)
    finally:
        client.get_job, client.job_events = real_get_job, real_events


if os.environ.get("BENCH_STATUS_WHEN_NEEDED") == "1":
    execution.poll = _poll_status_when_needed
