"""What other packages imported from `worker.execution` before the worker was split, with the signatures they
call. The work itself lives in `worker.launch`, `worker.jobs`, `worker.follow`, `worker.events`, `worker.finish` and
`worker.sweep`, which receive their configuration; these wrappers, for callers outside the worker's tasks
(benchmarks, tests of other packages), read it the way the tasks do. (`mark_queued` is `worker.dispatch`'s now.)
"""

from __future__ import annotations

from sqlmodel import Session

from core.inventory import get_catalog
from core.models import PatchRequest
from core.settings import get_settings
from core.stage_map import get_stage_map
from worker import events, follow
from worker import launch as launching
from worker.awx_client import AWXClient
from worker.event_rows import trim_event_data
from worker.follow import claim_due as _claim_due
from worker.job_status import JobStatuses

__all__ = ["apply_event", "claim_due", "follow_round", "launch", "poll", "trim_event_data"]


def _follower(client: AWXClient, statuses: JobStatuses | None) -> follow.Follower:
    if statuses is None:
        return follow.one_off(client, get_settings(), get_catalog(), get_stage_map())
    return follow.Follower(client, statuses, get_settings(), get_catalog(), get_stage_map())


def launch(request_id: str, client: AWXClient) -> str:
    return launching.launch(request_id, client, get_settings(), get_catalog())


def poll(request_id: str, client: AWXClient, statuses: JobStatuses | None = None) -> bool:
    return follow.poll(request_id, _follower(client, statuses))


def follow_round(client: AWXClient, statuses: JobStatuses, *, budget_seconds: float,
                 batch: int = 50) -> tuple[int, bool]:
    return follow.follow_round(_follower(client, statuses), budget_seconds=budget_seconds, batch=batch)


def claim_due(limit: int) -> list[follow.FollowTarget]:
    return _claim_due(limit, get_settings())


def apply_event(session: Session, req: PatchRequest, event: dict) -> None:
    settings = get_settings()
    events.apply_event(session, req, event, get_stage_map(), events.template_of(req, settings, get_catalog()))


_apply_event = apply_event  # the name tests/core/test_stage_map.py uses
