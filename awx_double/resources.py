"""JSON representations of the double's objects, in the shapes the AWX API serializers produce."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from awx_double.state import INVENTORY_ID, INVENTORY_NAME, DoubleState, JobTemplate, SimJob
from awx_double.timeline import EVENT_DISPLAY, PLAYBOOK, STAT_KEYS, PlannedEvent

# Filterable fields (and their types) of each list endpoint.
HOST_FIELDS = {"id": int, "name": str, "inventory": int, "enabled": bool, "description": str}
GROUP_FIELDS = {"id": int, "name": str, "inventory": int, "description": str}
INVENTORY_FIELDS = {"id": int, "name": str}
TEMPLATE_FIELDS = {"id": int, "name": str, "job_type": str, "playbook": str, "inventory": int, "organization": int}
JOB_FIELDS = {"id": int, "name": str, "status": str, "failed": bool, "job_type": str, "job_template": int,
              "launch_type": str, "limit": str, "created": datetime, "started": datetime, "finished": datetime}
EVENT_FIELDS = {"id": int, "counter": int, "event": str, "host_name": str, "play": str, "task": str,
                "failed": bool, "changed": bool, "created": datetime}
SUMMARY_FIELDS = {"id": int, "host_name": str, "failed": bool}

_EVENT_ID_STRIDE = 1_000_000  # event ids are unique across jobs: job id * stride + counter


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _inventory_summary() -> dict[str, Any]:
    return {"id": INVENTORY_ID, "name": INVENTORY_NAME, "kind": ""}


def inventory(state: DoubleState, base: str) -> dict[str, Any]:
    return {
        "id": INVENTORY_ID, "type": "inventory", "url": f"{base}inventories/{INVENTORY_ID}/",
        "name": INVENTORY_NAME, "description": "The demo fleet", "kind": "", "organization": 1,
        "total_hosts": len(state.host_names()), "total_groups": len(state.group_ids),
        "related": {"hosts": f"{base}inventories/{INVENTORY_ID}/hosts/",
                    "groups": f"{base}inventories/{INVENTORY_ID}/groups/",
                    "script": f"{base}inventories/{INVENTORY_ID}/script/"},
    }


def host(state: DoubleState, base: str, name: str) -> dict[str, Any]:
    record = state.inventory.hosts[name]
    host_id = state.host_ids[name]
    groups = sorted(g for g in record.groups if g in state.group_ids)
    return {
        "id": host_id, "type": "host", "url": f"{base}hosts/{host_id}/", "name": name, "description": "",
        "inventory": INVENTORY_ID, "enabled": state.host_enabled(name), "instance_id": "",
        "variables": json.dumps(record.vars),
        "summary_fields": {
            "inventory": _inventory_summary(),
            # AWX lists at most 5 of the host's direct groups here, by id, with the full count beside them.
            "groups": {"count": len(groups),
                       "results": [{"id": state.group_ids[g], "name": g}
                                   for g in sorted(groups, key=lambda g: state.group_ids[g])[:5]]},
        },
        "related": {"inventory": f"{base}inventories/{INVENTORY_ID}/"},
    }


def group(state: DoubleState, base: str, name: str) -> dict[str, Any]:
    group_id = state.group_ids[name]
    return {
        "id": group_id, "type": "group", "url": f"{base}groups/{group_id}/", "name": name, "description": "",
        "inventory": INVENTORY_ID, "variables": "",
        "summary_fields": {"inventory": _inventory_summary()},
        "related": {"all_hosts": f"{base}groups/{group_id}/all_hosts/",
                    "inventory": f"{base}inventories/{INVENTORY_ID}/"},
    }


def _organization_summary(state: DoubleState, name: str) -> dict[str, Any]:
    return {"id": state.organizations[name], "name": name, "description": ""}


def job_template(state: DoubleState, base: str, template: JobTemplate) -> dict[str, Any]:
    asks = state.template_asks()
    return {
        "id": template.id, "type": "job_template", "url": f"{base}job_templates/{template.id}/",
        "name": template.name, "description": template.description, "job_type": "run",
        "organization": state.organizations[template.organization],
        "inventory": INVENTORY_ID, "project": 3, "playbook": PLAYBOOK, "limit": "", "extra_vars": "",
        "verbosity": 0, "forks": 0, "survey_enabled": False, "job_slice_count": state.template_slices(template),
        "ask_limit_on_launch": asks["limit"], "ask_variables_on_launch": asks["extra_vars"],
        "ask_job_type_on_launch": asks["job_type"], "ask_inventory_on_launch": False,
        "ask_credential_on_launch": False, "ask_job_slice_count_on_launch": False,
        "summary_fields": {"inventory": _inventory_summary(),
                           "organization": _organization_summary(state, template.organization)},
        "related": {"launch": f"{base}job_templates/{template.id}/launch/",
                    "jobs": f"{base}job_templates/{template.id}/jobs/"},
    }


def launch_requirements(state: DoubleState, template: JobTemplate) -> dict[str, Any]:
    asks = state.template_asks()
    return {
        "can_start_without_user_input": True, "passwords_needed_to_start": [],
        "ask_scm_branch_on_launch": False, "ask_variables_on_launch": asks["extra_vars"],
        "ask_tags_on_launch": False, "ask_diff_mode_on_launch": False, "ask_skip_tags_on_launch": False,
        "ask_job_type_on_launch": asks["job_type"], "ask_limit_on_launch": asks["limit"],
        "ask_verbosity_on_launch": False, "ask_inventory_on_launch": False, "ask_credential_on_launch": False,
        "ask_execution_environment_on_launch": False, "ask_labels_on_launch": False,
        "ask_forks_on_launch": False, "ask_job_slice_count_on_launch": False, "ask_timeout_on_launch": False,
        "ask_instance_groups_on_launch": False, "survey_enabled": False, "variables_needed_to_start": [],
        "credential_needed_to_start": False, "inventory_needed_to_start": False,
        "job_template_data": {"name": template.name, "id": template.id, "description": template.description},
        "defaults": {
            "extra_vars": "", "diff_mode": False, "limit": "", "job_tags": "", "skip_tags": "",
            "job_type": "run", "verbosity": 0, "inventory": {"name": INVENTORY_NAME, "id": INVENTORY_ID},
            "scm_branch": "", "forks": 0, "job_slice_count": state.template_slices(template), "timeout": 0,
            "credentials": [{"id": 1, "name": "Patch SSH key", "credential_type": 1, "passwords_needed": []}],
        },
    }


def job(base: str, record: SimJob, now: float, *, detail: bool = True) -> dict[str, Any]:
    """The job serializer. Like AWX's `UnifiedJobListSerializer`, the list form leaves out `result_traceback` and
    `event_processing_finished` (and job_args/job_cwd/job_env, which the double has not) but keeps `extra_vars`."""
    started, finished = record.started_at(now), record.finished_at(now)
    status = record.status(now)
    body: dict[str, Any] = {
        "id": record.id, "type": "job", "url": f"{base}jobs/{record.id}/",
        "created": iso(record.launched_at), "modified": iso(finished or started or record.launched_at),
        "name": record.template.name, "description": "", "job_type": record.job_type,
        "inventory": INVENTORY_ID, "project": 3, "playbook": PLAYBOOK, "limit": record.limit,
        "launch_type": "manual", "status": status, "failed": status in ("failed", "error", "canceled"),
        "started": iso(started), "finished": iso(finished),
        "canceled_on": iso(record.clock_at(record.cancel_js)) if record.cancel_js is not None else None,
        "elapsed": round(finished - started, 3) if started and finished else 0.0,
        "job_explanation": "", "job_template": record.template.id, "extra_vars": json.dumps(record.extra_vars),
        "summary_fields": {"job_template": {"id": record.template.id, "name": record.template.name},
                           "inventory": _inventory_summary()},
        "related": {"job_events": f"{base}jobs/{record.id}/job_events/",
                    "job_host_summaries": f"{base}jobs/{record.id}/job_host_summaries/",
                    "stdout": f"{base}jobs/{record.id}/stdout/", "cancel": f"{base}jobs/{record.id}/cancel/",
                    "job_template": f"{base}job_templates/{record.template.id}/"},
    }
    if detail:
        body.update({
            "result_traceback": "",
            "event_processing_finished": record.event_processing_finished(now),
            "host_status_counts": _host_status_counts(record) if record.stats_visible(now) else {},
        })
    return body


def _host_status_counts(record: SimJob) -> dict[str, int]:
    counts: dict[str, int] = {}
    for summary in host_summary_counts(record).values():
        key = ("dark" if summary["dark"] else "failures" if summary["failures"]
               else "changed" if summary["changed"] else "ok")
        counts[key] = counts.get(key, 0) + 1
    return counts


def host_summary_counts(record: SimJob) -> dict[str, dict[str, int]]:
    return {name: {key: record.plan.stats.get(key, {}).get(name, 0) for key in STAT_KEYS}
            for name in record.hosts}


def host_summaries(state: DoubleState, base: str, record: SimJob) -> list[dict[str, Any]]:
    rows = []
    for name, counts in host_summary_counts(record).items():
        summary_id = record.id * _EVENT_ID_STRIDE + state.host_ids[name]
        rows.append({
            "id": summary_id, "type": "job_host_summary", "url": f"{base}job_host_summaries/{summary_id}/",
            "job": record.id, "host": state.host_ids[name], "host_name": name, **counts,
            "processed": 1, "failed": bool(counts["dark"] or counts["failures"]),
            "summary_fields": {"host": {"id": state.host_ids[name], "name": name}},
        })
    return rows


def job_event(state: DoubleState, base: str, record: SimJob, event: PlannedEvent) -> dict[str, Any]:
    event_id = record.id * _EVENT_ID_STRIDE + event.counter
    return {
        "id": event_id, "type": "job_event", "url": f"{base}job_events/{event_id}/",
        "created": iso(record.clock_at(event.emit_at)), "job": record.id, "counter": event.counter,
        "event": event.event, "event_display": EVENT_DISPLAY.get(event.event, event.event),
        "event_level": _event_level(event),
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"job/{record.id}/event/{event.counter}")),
        "host": state.host_ids.get(event.host_name) if event.host_name else None,
        "host_name": event.host_name or "", "playbook": PLAYBOOK, "play": event.play, "task": event.task,
        "failed": event.failed, "changed": event.changed, "stdout": event.stdout,
        "start_line": 0, "end_line": 0, "verbosity": 0, "event_data": event.event_data,
    }


EVENT_STDOUT_MAX_BYTES_DISPLAY = 1024  # AWX's setting: event stdout in lists, unless ?no_truncate=1


def truncate_stdout(stdout: str, size: int = EVENT_STDOUT_MAX_BYTES_DISPLAY) -> str:
    """awx.main.utils.common.truncate_stdout: cut to size - 1 characters and an ellipsis (ANSI resets kept)."""
    if size <= 0 or len(stdout) <= size:
        return stdout
    cut = stdout[:size - 1] + "\u2026"
    return cut + "\x1b[0m" * max(0, cut.count("\x1b[") - 2 * cut.count("\x1b[0m"))


def _event_level(event: PlannedEvent) -> int:
    if event.event.startswith("runner_"):
        return 3
    return {"playbook_on_play_start": 1, "playbook_on_task_start": 2}.get(event.event, 0)
