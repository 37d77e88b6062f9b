"""Storing a poll's job events and what they change: event rows, the gap-safe cursor, per-host results and stages.

Events are inserted with a unique (request, counter) key and only the inserted ones are applied, so two polls of the
same request at once apply each event once. The cursor moves only over a run of consecutive stored counters: a late,
lower counter is not skipped. The stage comes from the template's stage map (STAGE_MAP_FILE; the reference
playbook's play names by default); a play the map does not know is shown under Patching by its own name.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlmodel import Session, col

from core.inventory import Catalog
from core.models import HostResult, JobEvent, PatchRequest, RequestStage, utcnow
from core.observability import EVENT_LAG
from core.settings import Settings
from core.stage_map import StageMap
from core.states import STAGES, Stage
from core.statuses import HostStatus
from worker.event_rows import event_row, parse_time
from worker.host_results import apply_host_event, says_something_about_the_host, stats_results


def template_of(req: PatchRequest, settings: Settings, catalog: Catalog) -> str:
    """The job template a request runs: its patch group's, or the default one for pre-checks without one."""
    group = catalog.patch_groups.get(req.patch_group or "")
    return group.job_template if group else settings.awx_default_job_template


def store_events(session: Session, req: PatchRequest, events: list[dict], settings: Settings, stage_map: StageMap,
                 template: str) -> None:
    """Store what is new of `events` and apply it to the request, its hosts and its stages."""
    if not events:
        return
    rows = [event_row(req.id, e, settings) for e in events]
    inserted: set[int] = set(session.execute(
        pg_insert(JobEvent).values(rows).on_conflict_do_nothing(constraint="uq_job_events_request_counter")
        .returning(col(JobEvent.counter))
    ).scalars())
    new_events = sorted((e for e in events if int(e["counter"]) in inserted), key=lambda e: int(e["counter"]))
    now = utcnow()
    for event in new_events:
        apply_event(session, req, event, stage_map, template)
        created = parse_time(event.get("created"))
        if created is not None:
            EVENT_LAG.observe(max(0.0, (now - created).total_seconds()))
    req.event_cursor = gap_free_cursor(session, req.id, req.event_cursor)


def gap_free_cursor(session: Session, request_id: str, cursor: int) -> int:
    """Advance the cursor only over a run of consecutive stored counters: a late, lower counter is not skipped."""
    counters: Iterable[int] = session.execute(
        select(col(JobEvent.counter)).where(col(JobEvent.request_id) == request_id, col(JobEvent.counter) > cursor)
        .order_by(col(JobEvent.counter))
    ).scalars()
    for counter in counters:
        if counter != cursor + 1:
            break
        cursor = counter
    return cursor


def stage_change(e: dict, stage_map: StageMap, template: str) -> tuple[str, str | None] | None:
    """The stage an event starts and the detail shown with it, or None. Pure."""
    kind = e.get("event", "")
    if kind == "playbook_on_play_start":
        return stage_map.play_stage(template, str(e.get("play") or ""))
    if kind == "playbook_on_task_start":
        stage = stage_map.stage_of(template, "task", str(e.get("task") or ""))
        return (stage, None) if stage else None
    return None


def apply_event(session: Session, req: PatchRequest, e: dict, stage_map: StageMap, template: str) -> None:
    kind = str(e.get("event", ""))
    if kind == "playbook_on_task_start":
        req.latest_task = f"{e.get('play') or ''}: {e.get('task') or ''}".strip(": ")[:500]
    change = stage_change(e, stage_map, template)
    if change is not None:
        stage, detail = change
        reach_stage(session, req, stage)
        if req.stage == stage:
            req.stage_detail = detail[:255] if detail else None
    elif kind.startswith("runner_") and e.get("host_name"):
        _apply_host_event(session, req, e)
    elif kind == "playbook_on_stats":
        _apply_stats(session, req.id, e.get("event_data") or {})
        req.run_ended_at = req.run_ended_at or utcnow()  # the playbook is done: the next poll reads the job


def reach_stage(session: Session, req: PatchRequest, stage: str, at: datetime | None = None) -> None:
    """Record that the run reached `stage` (once) and move the request's stage forward, never back."""
    session.execute(pg_insert(RequestStage).values(request_id=req.id, stage=stage, at=at or utcnow())
                    .on_conflict_do_nothing(constraint="uq_request_stages_request_stage"))
    if STAGES.index(stage) > STAGES.index(req.stage if req.stage in STAGES else Stage.PENDING):
        req.stage = stage


def _apply_host_event(session: Session, req: PatchRequest, e: dict) -> None:
    if not says_something_about_the_host(str(e.get("event", ""))):
        return
    row = session.execute(select(HostResult).where(col(HostResult.request_id) == req.id,
                                                   col(HostResult.host) == e["host_name"])
                          .with_for_update()).scalar_one_or_none()
    if row is None:
        row = HostResult(request_id=req.id, host=e["host_name"], status=HostStatus.PENDING)
        session.add(row)
    apply_host_event(row, e)


def _apply_stats(session: Session, request_id: str, data: dict) -> None:
    for host, values in stats_results(data).items():
        session.execute(
            pg_insert(HostResult).values(request_id=request_id, host=host, **values)
            .on_conflict_do_update(constraint="uq_host_results_request_host", set_=values)
        )
