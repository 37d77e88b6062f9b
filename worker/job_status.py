"""Job statuses for the follower, read together: one `GET jobs/?id__in=…` (up to 200 jobs a page) answers every
job a worker process follows, instead of one `GET jobs/{id}/` per job per poll.

A poll asks for a job's status only when its events do not already show it running. A follow round tells the batch
which jobs it is about to poll (`track`), and the first ask in an interval reads the statuses of every job this
process follows, so the other asks in that interval come from the same read. A status is then at most `max_age`
old, which is harmless: a terminal status never changes back, and a stale "running" defers the end of the follow
by one poll. AWX's list form leaves out
`event_processing_finished`, so a job listed as terminal is read once more in full (`poll` does that).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from worker.awx_client import AWXClient

# Jobs polled within this many max_ages ride along in a read: a followed job is polled every interval or so, and a
# finished one drops out of the list soon after.
KEEP_FOLLOWED_FOR = 4


class JobStatuses(Protocol):
    def track(self, job_ids: list[int]) -> None: ...

    def get(self, job_id: int) -> dict[str, Any]: ...

    def age(self, job_id: int) -> float | None: ...


class DirectJobStatus:
    """No batching and no memory: every poll reads `GET jobs/{id}/` (one-off callers and in-process benchmarks)."""

    def __init__(self, client: AWXClient):
        self.client = client

    def track(self, job_ids: list[int]) -> None:
        pass

    def get(self, job_id: int) -> dict[str, Any]:
        return self.client.get_job(job_id)

    def age(self, job_id: int) -> float | None:
        return None


class JobStatusBatch:
    """One per worker process, next to its AWX client."""

    def __init__(self, client: AWXClient, max_age: float, *, clock: Callable[[], float] = time.monotonic):
        self.client, self.max_age, self.clock = client, max_age, clock
        self._read: dict[int, tuple[float, dict[str, Any]]] = {}  # job id -> (read at, the job as listed)
        self._followed: dict[int, float] = {}  # job id -> last polled or asked about
        self._lock = threading.Lock()  # a follow round's threads share it; one refresh at a time

    def track(self, job_ids: list[int]) -> None:
        """These jobs are about to be polled: the next read takes them along."""
        with self._lock:
            now = self.clock()
            for job_id in job_ids:
                self._followed[job_id] = now

    def age(self, job_id: int) -> float | None:
        """Seconds since this job's status was last read, None if never (by this process)."""
        read = self._read.get(job_id)
        return None if read is None else self.clock() - read[0]

    def get(self, job_id: int) -> dict[str, Any]:
        """The job as AWX lists it, at most `max_age` old. Raises AWXError like `AWXClient.get_job`."""
        with self._lock:
            listed = self._get_listed(job_id)
        if listed is not None:
            return listed
        return self.client.get_job(job_id)  # not listed (deleted, or out of the token's reach): the detail says why

    def _get_listed(self, job_id: int) -> dict[str, Any] | None:
        now = self.clock()
        self._followed[job_id] = now
        read = self._read.get(job_id)
        if read is not None and now - read[0] < self.max_age:
            return read[1]
        horizon = now - KEEP_FOLLOWED_FOR * max(self.max_age, 1.0)
        self._followed = {j: t for j, t in self._followed.items() if t >= horizon}
        listed = self.client.job_statuses(sorted(self._followed))
        self._read = {j: r for j, r in self._read.items() if j in self._followed}
        for listed_id, job in listed.items():
            self._read[listed_id] = (now, job)
        return listed.get(job_id)
