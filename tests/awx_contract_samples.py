"""AWX API bodies in the shapes the controller returns (trimmed to the fields patchpilot reads).

Shared by the client's unit tests; shapes follow the AWX contract (24.x line, AAP 2.5+).
"""

from __future__ import annotations

import json
from typing import Any

TEMPLATE_ID = 7

JOB_TEMPLATE = {
    "id": TEMPLATE_ID, "type": "job_template", "url": "/api/v2/job_templates/7/", "name": "Patch Linux",
    "job_type": "run", "inventory": 1, "playbook": "patch.yml", "limit": "", "extra_vars": "",
    "ask_limit_on_launch": True, "ask_variables_on_launch": True, "ask_job_type_on_launch": True,
    "related": {"launch": "/api/v2/job_templates/7/launch/", "jobs": "/api/v2/job_templates/7/jobs/"},
}


def page(results: list[dict[str, Any]], *, next_link: str | None = None, count: int | None = None) -> dict:
    return {"count": len(results) if count is None else count, "next": next_link, "previous": None,
            "results": results}


def launch_requirements(*, limit: bool = True, variables: bool = True, job_type: bool = True) -> dict[str, Any]:
    return {
        "can_start_without_user_input": True, "passwords_needed_to_start": [],
        "ask_variables_on_launch": variables, "ask_limit_on_launch": limit, "ask_job_type_on_launch": job_type,
        "ask_inventory_on_launch": False, "ask_credential_on_launch": False, "ask_tags_on_launch": False,
        "survey_enabled": False, "variables_needed_to_start": [], "credential_needed_to_start": False,
        "inventory_needed_to_start": False,
        "job_template_data": {"name": "Patch Linux", "id": TEMPLATE_ID, "description": ""},
        "defaults": {"extra_vars": "", "limit": "", "job_type": "run", "inventory": {"name": "Demo fleet", "id": 1}},
    }


def launched(job_id: int, *, ignored_fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """The 201 body of POST job_templates/{id}/launch/."""
    return {"job": job_id, "ignored_fields": ignored_fields or {}, "id": job_id, "type": "job",
            "url": f"/api/v2/jobs/{job_id}/", "status": "pending", "job_template": TEMPLATE_ID}


def job(job_id: int, *, status: str = "running", request_id: str | None = None,
        created: str = "2025-03-01T10:00:00.000000Z") -> dict[str, Any]:
    extra_vars = {"update_scope": "security"}
    if request_id is not None:
        extra_vars["patchpilot_request_id"] = request_id
    return {
        "id": job_id, "type": "job", "url": f"/api/v2/jobs/{job_id}/", "created": created,
        "name": "Patch Linux", "job_type": "run", "limit": "web-01,web-02", "status": status,
        "failed": status in ("failed", "error", "canceled"), "started": created, "finished": None,
        "elapsed": 0.0, "job_explanation": "", "result_traceback": "", "job_template": TEMPLATE_ID,
        "extra_vars": json.dumps(extra_vars), "event_processing_finished": False,
    }


def job_list_item(job_id: int, created: str = "2025-03-01T10:00:00.000000Z", *, request_id: str | None = None,
                  status: str = "running", with_extra_vars: bool = True) -> dict[str, Any]:
    """A list row: AWX's UnifiedJobListSerializer leaves out result_traceback and event_processing_finished
    (and job_args/job_cwd/job_env) but keeps extra_vars. `with_extra_vars=False`: a server that strips them."""
    row = job(job_id, created=created, request_id=request_id, status=status)
    del row["result_traceback"], row["event_processing_finished"]
    if not with_extra_vars:
        del row["extra_vars"]
    return row


def event(counter: int, name: str = "runner_on_ok", *, host: str = "web-01", play: str = "Patching",
          job_id: int = 5) -> dict[str, Any]:
    return {
        "id": 9000 + counter, "type": "job_event", "job": job_id, "counter": counter, "event": name,
        "event_display": "Host OK", "host_name": host, "play": play, "task": "Apply updates",
        "failed": False, "changed": name == "runner_on_ok", "stdout": f"changed: [{host}]",
        "created": "2025-03-01T10:00:05.000000Z", "event_data": {"host": host, "res": {"changed": True}},
    }


def host_summary(host: str, *, ok: int = 9, changed: int = 2, dark: int = 0, failures: int = 0,
                 job_id: int = 5) -> dict[str, Any]:
    return {"id": 100 + len(host), "type": "job_host_summary", "job": job_id, "host_name": host, "ok": ok,
            "changed": changed, "dark": dark, "failures": failures, "skipped": 0,
            "failed": bool(dark or failures)}


UNAUTHORIZED = {"detail": "Authentication credentials were not provided."}
INVALID_TOKEN = {"detail": "Invalid token."}
FORBIDDEN = {"detail": "You do not have permission to perform this action."}
NOT_FOUND = {"detail": "Not found."}
METHOD_NOT_ALLOWED = {"detail": 'Method "POST" not allowed.'}
BAD_LAUNCH = {"limit": ["Not a valid string."]}
EXTRA_VARS_FILTER_FORBIDDEN = {"detail": "Filtering on extra_vars is not allowed."}
