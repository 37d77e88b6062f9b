"""GET /api/v1/meta: the domain's words and policy facts the UI shows, so the UI keeps no copy of them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import CatalogDep, ViewerDep
from api.services import timeline

router = APIRouter(prefix="/api/v1", tags=["meta"])


@router.get("/meta")
async def get_meta(catalog: CatalogDep, _: ViewerDep) -> dict[str, Any]:
    """The words of the domain, from `core` and the fleet's policy. Every value is a plain string, list or bool:

    - `states`: every request state, in lifecycle order, each
      `{value, state, label, icon, terminal, active, cancelable}` (`state` is `value`, kept for older UIs);
    - `stages`: the stages of a run's timeline, in order (the last is the run's end), each
      `{value, stage, label, title, texts, labels}`: `label`/`title` name the stage, `texts`/`labels` map each
      stage status (`stage_statuses`) to what the timeline says then;
    - `stage_labels`: every stage a request's `stage` field can hold -> its one-line label;
    - `stage_statuses`: the statuses a timeline step can have (done, current, skipped, pending, not_run, ...);
    - `production_environments`: the environments the policy calls production;
    - `environments` (also `environment_order`): every environment, production first, in the order to list them;
    - `roles`: the roles, lowest (read only) first;
    - `reboot_policies`, `actions`: `[{value, label}]`, e.g. `{"value": "never", "label": "no reboot"}`;
    - `jobs_shown`: which request states each job filter lists (`{"active": [...], "failed": [...], ...}`);
    - `host_statuses`: the statuses a host's result in a run can have;
    - `allow_self_approval_non_production`: whether the policy lets a requester approve their own non-production
      request.
    """
    return timeline.meta(catalog)
