"""What a worker process keeps between tasks: its AWX client, its batched job statuses and its follow-round thread
pool. One owner, built from the settings after the fork, with one reset for tests.

Building an httpx client loads the CA bundle (~24 ms of CPU, more than the rest of a poll) and reusing it keeps the
connection to AWX alive (bench/README.md), so the client lives as long as the process, not a task. A context is
made again when the process forked (a child must not share its parent's connections) or the settings changed.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from core.settings import Settings
from worker.awx_client import AWXClient
from worker.job_status import JobStatusBatch


class WorkerContext:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.pid = os.getpid()
        self._client: AWXClient | None = None
        self._statuses: JobStatusBatch | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def client(self) -> AWXClient:
        with self._lock:
            if self._client is None:
                self._client = AWXClient.from_settings(self.settings)
            return self._client

    def statuses(self) -> JobStatusBatch:
        """The statuses of every job this process follows, read together once per poll interval."""
        client = self.client()
        with self._lock:
            if self._statuses is None:
                self._statuses = JobStatusBatch(client, max_age=self.settings.follow_poll_seconds)
            return self._statuses

    def round_pool(self) -> ThreadPoolExecutor | None:
        """The threads a follow round polls with (FOLLOW_ROUND_THREADS); None when it is one."""
        threads = self.settings.follow_round_threads
        if threads <= 1:
            return None
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="follow")
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            if self._client is not None:
                self._client.close()
            self._client, self._statuses, self._pool = None, None, None


_context: WorkerContext | None = None
_context_lock = threading.Lock()


def worker_context(settings: Settings) -> WorkerContext:
    """This process's context for these settings: made on first use after the fork, and again when the settings
    object changed (a test reset the settings)."""
    global _context
    with _context_lock:
        current = _context
        if current is None or current.pid != os.getpid() or current.settings is not settings:
            if current is not None and current.pid == os.getpid():
                current.close()
            current = _context = WorkerContext(settings)
        return current


def reset_worker_context() -> None:
    """Forget the process's context (its client, statuses and pool are closed); tests use it."""
    global _context
    with _context_lock:
        if _context is not None and _context.pid == os.getpid():
            _context.close()
        _context = None
