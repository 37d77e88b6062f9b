"""What the UI shows about a request beyond its row: a truthful stage timeline, who may do what, recent task output,
the approvals inbox, and the labels the UI needs (so it imports nothing from core).

The timeline is built from the job events, not only from the stages reached: a play whose tasks were all skipped
on every host (no reboot needed, a dry run) reads *skipped*, a stage the run went past reads in the past tense,
and only the stage running now reads "… in progress".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import func, select
from sqlmodel import Session, col

from core.identity import ROLES, Principal
from core.intent import ACTION_LABELS, ACTIONS, REBOOT_LABELS, REBOOT_POLICIES, RebootPolicy
from core.inventory import Catalog
from core.models import JobEvent, PatchRequest, utcnow
from core.stage_map import get_stage_map, template_for
from core.states import (
    ACTIVE,
    CANCELABLE,
    CANCELED,
    ERROR,
    FAILED,
    JOBS_SHOWN,
    PROPOSED,
    STAGE_LABELS,
    STAGE_TITLES,
    STAGES,
    STATE_ICONS,
    STATE_LABELS,
    STATES,
    SUCCEEDED,
    TERMINAL,
    TIMELINE_STAGES,
    Stage,
    StageStatus,
)
from core.statuses import HostStatus

STAGE_ORDER = TIMELINE_STAGES
_S = StageStatus
# Each stage's text by its status: running now, finished, not needed, where the run failed or was canceled, and
# never reached because the run ended before it.
STAGE_TEXT: dict[Stage, dict[StageStatus, str]] = {
    Stage.PRECHECKS: {_S.CURRENT: "Pre-checks running", _S.DONE: "Pre-checks passed", _S.SKIPPED: "Pre-checks skipped",
                      _S.FAILED: "Pre-checks failed", _S.CANCELED: "Canceled during pre-checks",
                      _S.NOT_RUN: "Pre-checks not run", _S.PENDING: "Pre-checks"},
    Stage.PATCHING: {_S.CURRENT: "Patching in progress", _S.DONE: "Patched", _S.SKIPPED: "Patching skipped",
                     _S.FAILED: "Patching failed", _S.CANCELED: "Canceled during patching",
                     _S.NOT_RUN: "Patching not run", _S.PENDING: "Patching"},
    Stage.REBOOT: {_S.CURRENT: "Reboot in progress", _S.DONE: "Rebooted", _S.SKIPPED: "Reboot skipped",
                   _S.FAILED: "Reboot failed", _S.CANCELED: "Canceled during the reboot",
                   _S.NOT_RUN: "Reboot not run", _S.PENDING: "Reboot"},
    Stage.POSTCHECKS: {_S.CURRENT: "Post-checks running", _S.DONE: "Post-checks passed",
                       _S.SKIPPED: "Post-checks skipped", _S.FAILED: "Post-checks failed",
                       _S.CANCELED: "Canceled during post-checks", _S.NOT_RUN: "Post-checks not run",
                       _S.PENDING: "Post-checks"},
    Stage.COMPLETED: {_S.CURRENT: "Finishing", _S.DONE: "Patching completed", _S.SKIPPED: "Completed",
                      _S.FAILED: "Patching failed", _S.CANCELED: "Canceled", _S.NOT_RUN: "Completed",
                      _S.PENDING: "Completed"},
}
# Runner events that say a task did something on a host (a skip or a task start says nothing of the kind).
_RAN = ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_item_on_ok", "runner_item_on_failed",
        "runner_on_async_ok", "runner_on_async_failed")
_SKIPPED = ("runner_on_skipped", "runner_item_on_skipped")


def meta(catalog: Catalog) -> dict[str, Any]:
    """The domain's words and policy facts the UI shows, so the UI holds no copy of them (shape: see
    `api.routes.meta`)."""
    production = sorted(catalog.policy.production())
    envs = list(catalog.policy.environments) or sorted(
        {catalog.environment_or_other(h) for h in catalog.inventory.hosts})
    order = production + [e for e in envs if e not in production]
    return {
        "states": [{"state": s, "value": s, "label": STATE_LABELS.get(s, s), "icon": STATE_ICONS.get(s, "•"),
                    "terminal": s in TERMINAL, "active": s in ACTIVE, "cancelable": s in CANCELABLE}
                   for s in STATES],
        "stages": [{"stage": s, "value": s, "title": STAGE_TITLES[s], "label": STAGE_TITLES[s],
                    "labels": STAGE_TEXT[s], "texts": STAGE_TEXT[s]} for s in STAGE_ORDER],
        "stage_labels": {s: STAGE_LABELS[s] for s in STAGES},
        "stage_statuses": list(StageStatus),
        "production_environments": production,
        "environment_order": order,
        "environments": order,
        "roles": list(ROLES),
        "reboot_policies": [{"value": p, "label": REBOOT_LABELS[p]} for p in REBOOT_POLICIES],
        "actions": [{"value": a, "label": ACTION_LABELS[a]} for a in ACTIONS],
        "jobs_shown": {name: [s for s in STATES if s in shown] for name, shown in JOBS_SHOWN.items()},
        "host_statuses": list(HostStatus),
        "allow_self_approval_non_production": catalog.policy.allow_self_approval_non_production,
    }


# The row types of the selects below (SQLAlchemy types a row of aggregates and many columns as plain objects).
_SummaryRows = Sequence[tuple[str | None, int, int, int, datetime | None, datetime | None]]
_TaskRows = Sequence[tuple[int, datetime | None, str | None, str | None, str | None, str, bool, bool,
                           dict[str, Any] | None]]


def play_summary(session: Session, request_id: str) -> dict[str, dict[str, Any]]:
    """Per stage (from the play names): how many host results ran, were skipped or failed; first and last event time."""
    event, created = col(JobEvent.event), col(JobEvent.created)
    stage_of = func.lower(func.trim(col(JobEvent.play)))
    rows = cast(_SummaryRows, session.execute(
        select(stage_of,
               func.count().filter(event.in_(_RAN)),
               func.count().filter(event.in_(_SKIPPED)),
               func.count().filter(col(JobEvent.failed).is_(True)),
               func.min(created), func.max(created))
        .where(col(JobEvent.request_id) == request_id, col(JobEvent.play).is_not(None))
        .group_by(stage_of)).all())
    out: dict[str, dict[str, Any]] = {}
    req = session.get(PatchRequest, request_id)  # already in the session: the caller read it
    template, stages = template_for(req.patch_group if req else None), get_stage_map()
    for play, ran, skipped, failed, first, last in rows:
        # The template's stage map, as the follower applies it: a play it does not know counts under Patching.
        stage = stages.play_stage(template, play or "")[0]
        seen = out.get(stage)
        row = {"ran": int(ran or 0), "skipped": int(skipped or 0), "failed": int(failed or 0),
               "first": first, "last": last}
        if seen:
            row = {"ran": seen["ran"] + row["ran"], "skipped": seen["skipped"] + row["skipped"],
                   "failed": seen["failed"] + row["failed"],
                   "first": min((t for t in (seen["first"], first) if t is not None), default=None),
                   "last": max((t for t in (seen["last"], last) if t is not None), default=None)}
        out[stage] = row
    return out


_REBOOT_SKIPPED: dict[str, str] = {RebootPolicy.NEVER: "reboot: never", RebootPolicy.IF_NEEDED: "not needed"}


def _skip_reason(stage: str, view: Mapping[str, Any]) -> str | None:
    if stage != Stage.REBOOT:
        return None
    if view.get("check_mode"):
        return "dry run"
    return _REBOOT_SKIPPED.get(str(view.get("reboot")))


def timeline(view: Mapping[str, Any], plays: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per stage: stage, title, status (a `StageStatus`: done, current, skipped, pending, not_run, failed,
    canceled), the label to show for that status, and when it began and ended. `view` is the request view as a
    dict."""
    state = view.get("state", "")
    began = {s.get("stage"): s.get("at") for s in view.get("stages") or []}
    for stage, play in plays.items():
        # When AWX says the play's first event happened (the stage row has when the follower stored it).
        began[stage] = play.get("first") or began.get(stage)
    reached = [i for i, s in enumerate(STAGE_ORDER[:-1]) if s in began]
    last = max(reached, default=-1)
    steps: list[dict[str, Any]] = []
    for i, stage in enumerate(STAGE_ORDER):
        status = _stage_status(stage, state, stage in began, plays.get(stage) or {}, past=i < last)
        at = began.get(stage)
        if stage == Stage.COMPLETED and status != StageStatus.PENDING:
            at = view.get("finished_at")
        steps.append({"stage": stage, "title": STAGE_TITLES[stage], "status": status,
                      "label": _stage_label(stage, status, view), "at": _iso(at), "ended_at": None})
    # A stage ends when the next one that began starts, or when the run ended.
    starts = [(i, s["at"]) for i, s in enumerate(steps[:-1]) if s["at"]]
    for n, (i, _at) in enumerate(starts):
        if steps[i]["status"] in _ENDED:
            steps[i]["ended_at"] = starts[n + 1][1] if n + 1 < len(starts) else _iso(view.get("finished_at"))
    return steps


_ENDED = frozenset({StageStatus.DONE, StageStatus.SKIPPED, StageStatus.FAILED, StageStatus.CANCELED})
# The last step's status by how the run ended (pending while it has not).
_END_STATUS: dict[str, StageStatus] = {SUCCEEDED: StageStatus.DONE, FAILED: StageStatus.FAILED,
                                       ERROR: StageStatus.FAILED, CANCELED: StageStatus.CANCELED}


def _stage_status(stage: Stage, state: str, began: bool, play: Mapping[str, Any], *, past: bool) -> StageStatus:
    """Where one stage stands. `began`: the stage started; `play`: its host results (ran, skipped, failed);
    `past`: a later stage started."""
    if stage == Stage.COMPLETED:
        return _END_STATUS.get(state, StageStatus.PENDING)
    if not began:
        # Never started: not needed when the run went past it or succeeded, not reached when it ended early.
        if past or state == SUCCEEDED:
            return StageStatus.SKIPPED
        return StageStatus.NOT_RUN if state in TERMINAL else StageStatus.PENDING
    if play.get("failed") and state in (FAILED, ERROR):
        return StageStatus.FAILED
    if play.get("skipped") and not play.get("ran") and not play.get("failed"):
        return StageStatus.SKIPPED
    if past or state == SUCCEEDED:
        return StageStatus.DONE
    if state == CANCELED:
        return StageStatus.CANCELED
    if state in (FAILED, ERROR):
        return StageStatus.FAILED
    return StageStatus.CURRENT


def _stage_label(stage: Stage, status: StageStatus, view: Mapping[str, Any]) -> str:
    """The words for a stage's status, with why it was skipped, who canceled the run, or that it was a dry run."""
    label = STAGE_TEXT[stage][status]
    if status == StageStatus.SKIPPED and (why := _skip_reason(stage, view)):
        label = f"{label} ({why})"
    if stage == Stage.COMPLETED and status == StageStatus.CANCELED and view.get("decided_by"):
        label = f"Canceled by {view['decided_by']}"
    if stage == Stage.COMPLETED and status == StageStatus.DONE and view.get("check_mode"):
        label = "Dry run completed"
    return label


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


def refusals(caller: Principal, req: Mapping[str, Any], catalog: Catalog, *, same_person) -> dict[str, str | None]:
    """Why the caller may not approve, reject or cancel this request now (None: they may). The API's own checks
    stay the judge; this lets the UI disable a button with the reason instead of answering a click with a 403."""
    state = req.get("state")
    hosts: list[str] = [str(h.get("name")) if isinstance(h, Mapping) else str(h) for h in req.get("hosts") or []]
    own = same_person(caller.user, req.get("requested_by"))
    out: dict[str, str | None] = {"approve": None, "reject": None, "cancel": None}
    if state != PROPOSED:
        out["approve"] = out["reject"] = f"the request is {state}"
    else:
        if not caller.has("approver"):
            out["approve"] = "approving needs the approver role"
        elif own:
            production = sorted(h for h in hosts if catalog.is_production(h))
            if production:
                out["approve"] = (f"four-eyes: {', '.join(production)} {'is' if len(production) == 1 else 'are'} "
                                  "production; someone other than you must approve")
            elif not catalog.policy.allow_self_approval_non_production:
                out["approve"] = "the policy does not allow approving your own request"
        if out["approve"] is None:
            envs = {catalog.environment_or_other(h) for h in hosts if h in catalog.inventory.hosts}
            window = catalog.policy.when_refused(envs, utcnow())
            if window:
                out["approve"] = f"cannot approve now: {window}"
        if not own and not caller.has("approver"):
            out["reject"] = "rejecting someone else's proposal needs the approver role"
        elif not caller.has("requester"):
            out["reject"] = "rejecting needs the requester role"
    if state not in CANCELABLE:
        out["cancel"] = f"the request is {state}"
    elif req.get("cancel_requested_at"):
        out["cancel"] = "a cancel was already requested"
    elif not own and not caller.has("approver"):
        out["cancel"] = "canceling someone else's run needs the approver role"
    elif not caller.has("requester"):
        out["cancel"] = "canceling needs the requester role"
    return out


def recent_tasks(session: Session, request_id: str, limit: int = 40, *,
                 check_mode: bool = False) -> list[dict[str, Any]]:
    """The newest host results as task output ("TASK [Apply updates] ok: [www-01] Updates applied"). In a dry run a
    changed result reads "would change" (apt and dnf report changed in check mode; nothing changed)."""
    event = col(JobEvent.event)
    rows = cast(_TaskRows, session.execute(
        select(col(JobEvent.counter), col(JobEvent.created), col(JobEvent.play), col(JobEvent.task),
               col(JobEvent.host), event, col(JobEvent.changed), col(JobEvent.failed), col(JobEvent.data))
        .where(col(JobEvent.request_id) == request_id, event.like("runner_%"), event != "runner_on_start")
        .order_by(col(JobEvent.counter).desc()).limit(limit)).all())
    out = []
    for counter, created, play, task, host, kind, changed, failed, data in reversed(rows):
        res = (data or {}).get("res") or {}
        result = _task_result(kind, changed=changed, failed=failed, check_mode=check_mode)
        message = res.get("msg") if isinstance(res, Mapping) else None
        out.append({"counter": counter, "at": _iso(created), "play": play, "task": task, "host": host,
                    "result": result, "message": str(message)[:300] if message else None})
    return out


def _task_result(event: str, *, changed: bool, failed: bool, check_mode: bool) -> str:
    """A host result's status as a task's output says it."""
    if event.endswith("unreachable"):
        return HostStatus.UNREACHABLE
    if failed:
        return HostStatus.FAILED
    if event in _SKIPPED:
        return HostStatus.SKIPPED
    if changed:
        return "would change" if check_mode else HostStatus.CHANGED
    return HostStatus.OK


def inbox(session: Session, caller: Principal, catalog: Catalog, *, same_person, limit: int = 100) -> dict[str, Any]:
    """Proposals the caller may approve now (newest first), and the caller's own proposals waiting for someone."""
    now = utcnow()
    expires_at = col(PatchRequest.expires_at)
    rows: list[PatchRequest] = list(session.execute(
        select(PatchRequest).where(col(PatchRequest.state) == PROPOSED, expires_at.is_(None) | (expires_at > now))
        .order_by(col(PatchRequest.created_at).desc()).limit(limit)).scalars())
    waiting: list[dict[str, Any]] = []
    mine: list[dict[str, Any]] = []
    for req in rows:
        item = inbox_item(req, catalog, now)
        own = same_person(caller.user, req.requested_by)
        if own:
            mine.append(item)
            continue
        if caller.has("approver") and refusals(caller, {"state": req.state, "hosts": req.hosts,
                                                        "requested_by": req.requested_by},
                                               catalog, same_person=same_person)["approve"] is None:
            waiting.append(item)
    return {"count": len(waiting), "items": waiting, "mine": mine}


def inbox_item(req: PatchRequest, catalog: Catalog, now: datetime) -> dict[str, Any]:
    by_env: dict[str, list[str]] = {}
    for name in req.hosts:
        by_env.setdefault(catalog.environment_or_other(name), []).append(name)
    return {"id": req.id, "requested_by": req.requested_by, "hosts": list(req.hosts), "hosts_by_environment": by_env,
            "production": any(catalog.is_production(h) for h in req.hosts), "patch_group": req.patch_group,
            "reboot": req.reboot, "check_mode": req.check_mode, "conversation_id": req.conversation_id,
            "created_at": _iso(req.created_at), "expires_at": _iso(req.expires_at),
            "age_seconds": int((now - req.created_at).total_seconds()) if req.created_at else None}

