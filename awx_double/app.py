"""The HTTP face of the AWX double: the slice of the AWX v2 API that patchpilot uses, plus `/_double/*` controls.

Shapes and status codes follow the AWX / Automation Controller contract patchpilot relies on. Faults from the
scenario are injected before authentication, as a proxy or gateway in front of AWX would produce them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError

from awx_double import resources
from awx_double.listing import QueryError, list_response, paginate
from awx_double.state import (
    INVENTORY_ID,
    PROMPTABLE_DEFAULTS,
    DoubleState,
    JobTemplate,
    LaunchRejected,
    Scenario,
    SimJob,
)

NOT_FOUND = "Not found."
FORBIDDEN = "You do not have permission to perform this action."
WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="api"'}


def _detail(status_code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


class NotFound(Exception):
    """An object id that does not exist: 404 {"detail": "Not found."}."""


def parse_launch_body(raw: bytes) -> dict[str, Any]:
    """The prompt fields of a launch body, validated as AWX's launch serializer does (400 field maps)."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LaunchRejected({"detail": f"JSON parse error - {exc}"}) from None
    if not isinstance(body, dict):
        raise LaunchRejected({"non_field_errors": [
            f"Invalid data. Expected a dictionary, but got {type(body).__name__}."]})
    errors: dict[str, list[str]] = {}
    provided = {name: value for name, value in body.items() if name in PROMPTABLE_DEFAULTS}
    if "limit" in provided and not isinstance(provided["limit"], str):
        errors["limit"] = ["Not a valid string."]
    if "job_type" in provided and provided["job_type"] not in ("run", "check"):
        errors["job_type"] = [f'"{provided["job_type"]}" is not a valid choice.']
    if "extra_vars" in provided:
        extra_vars = provided["extra_vars"]
        if isinstance(extra_vars, str):
            try:
                extra_vars = yaml.safe_load(extra_vars) or {}  # JSON is YAML too
            except yaml.YAMLError:
                extra_vars = None
        if isinstance(extra_vars, dict):
            provided["extra_vars"] = extra_vars
        else:
            errors["extra_vars"] = ["Must be a valid JSON or YAML dictionary."]
    if errors:
        raise LaunchRejected(errors)
    return provided


def create_app(inventory_path: str | Path, patch_groups_path: str | Path, token: str, speed: float = 1.0,
               base_path: str = "/api/v2/", *, scenario: Scenario | dict[str, Any] | None = None,
               clock: Callable[[], float] = time.time) -> FastAPI:
    """Build the double. `scenario` sets the start-up knobs (restored by /_double/reset); `clock` lets tests
    move time themselves."""
    base = "/" + base_path.strip("/") + "/"
    if isinstance(scenario, dict):
        scenario = Scenario.model_validate(scenario)
    state = DoubleState(Path(inventory_path), Path(patch_groups_path), token, speed, scenario, clock)
    app = FastAPI(title="AWX double", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.double = state

    @app.exception_handler(QueryError)
    async def _query_error(_: Request, exc: QueryError) -> JSONResponse:
        return _detail(exc.status_code, exc.detail)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, __: NotFound) -> JSONResponse:
        return _detail(404, NOT_FOUND)

    @app.exception_handler(LaunchRejected)
    async def _bad_launch(_: Request, exc: LaunchRejected) -> JSONResponse:
        return JSONResponse(exc.errors, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Non-numeric ids do not match AWX's URL patterns at all; anything else is a bad request.
        if any(error.get("loc", ("",))[0] == "path" for error in exc.errors()):
            return _detail(404, NOT_FOUND)
        return _detail(400, "Bad request.")

    @app.middleware("http")
    async def gateway(request: Request, call_next):
        path = request.url.path
        if path.startswith("/_double/"):
            return await call_next(request)
        fault = state.take_fault(path)
        if fault is not None:
            status_code, retry_after = fault
            if status_code == 429:
                return _detail(429, "Too many requests.", {"Retry-After": f"{retry_after:g}"})
            if status_code == 302:  # AWX's MigrationRanCheckMiddleware while an upgrade migrates
                return Response(status_code=302, headers={"Location": "/migrations_notran/"})
            return _detail(status_code, "Service unavailable." if status_code == 503 else "Server error.")
        if path == f"{base}ping/":
            return await call_next(request)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _detail(401, "Authentication credentials were not provided.", WWW_AUTHENTICATE)
        access = state.access_for(token.strip())
        if access is None:
            return _detail(401, "Invalid token.", WWW_AUTHENTICATE)
        request.state.read_only = access == "read"
        return await call_next(request)

    app.include_router(_api_router(state, base), prefix=base.rstrip("/"))
    app.include_router(_control_router(state))
    return app


def _api_router(state: DoubleState, base: str) -> APIRouter:
    router = APIRouter()

    def template_or_404(template_id: int) -> JobTemplate:
        if template_id not in state.templates:
            raise NotFound
        return state.templates[template_id]

    def job_or_404(job_id: int) -> SimJob:
        record = state.job(job_id)
        if record is None:
            raise NotFound
        return record

    def inventory_or_404(inventory_id: int) -> None:
        if inventory_id != INVENTORY_ID:
            raise NotFound

    def all_hosts(names) -> list[dict[str, Any]]:
        return [resources.host(state, base, name) for name in sorted(names)]

    def hosts_page(request: Request, names) -> dict[str, Any]:
        params = request.query_params
        if set(params.keys()) <= {"page", "page_size", "order_by"} and params.get("order_by", "name") == "name":
            # AWX pages in SQL: only the page's rows are serialized, not the whole inventory for every page.
            page = paginate(request.url.path, params, sorted(names))
            page["results"] = [resources.host(state, base, name) for name in page["results"]]
            return page
        return list_response(request.url.path, request.query_params, all_hosts(names), resources.HOST_FIELDS,
                             "name")

    def jobs_page(request: Request, records: list[SimJob]) -> dict[str, Any]:
        now = state.clock()
        rows = [resources.job(base, record, now, detail=False) for record in records]
        return list_response(request.url.path, request.query_params, rows, resources.JOB_FIELDS, "id")

    def groups_page(request: Request) -> dict[str, Any]:
        rows = [resources.group(state, base, name) for name in state.group_ids]
        return list_response(request.url.path, request.query_params, rows, resources.GROUP_FIELDS, "name")

    @router.get("/")
    def root() -> dict[str, str]:
        names = ("ping", "me", "inventories", "hosts", "groups", "job_templates", "jobs")
        return {name: f"{base}{name}/" for name in names}

    @router.get("/ping/")
    def ping() -> dict[str, Any]:
        return {"ha": False, "version": "24.6.1", "active_node": "awx-double", "install_uuid": "double"}

    @router.get("/me/")
    def me() -> dict[str, Any]:
        user = {"id": 1, "type": "user", "username": "patchpilot", "is_superuser": False}
        return {"count": 1, "next": None, "previous": None, "results": [user]}

    @router.get("/inventories/")
    def inventories(request: Request) -> dict[str, Any]:
        return list_response(request.url.path, request.query_params, [resources.inventory(state, base)],
                             resources.INVENTORY_FIELDS, "name")

    @router.get("/inventories/{inventory_id}/")
    def inventory_detail(inventory_id: int) -> dict[str, Any]:
        inventory_or_404(inventory_id)
        return resources.inventory(state, base)

    @router.get("/inventories/{inventory_id}/hosts/")
    def inventory_hosts(inventory_id: int, request: Request) -> dict[str, Any]:
        inventory_or_404(inventory_id)
        return hosts_page(request, state.host_names())

    @router.get("/inventories/{inventory_id}/script/")
    def inventory_script(inventory_id: int, request: Request) -> Response:
        """AWX's InventoryScriptView: flags are true when present and non-empty (`?hostvars=1`)."""
        inventory_or_404(inventory_id)
        params = request.query_params
        show_all = bool(params.get("all", ""))
        hostname = params.get("host", "")
        if params.get("subset", ""):
            return _detail(400, "Subset does not use any supported syntax.")
        if hostname:
            if hostname not in state.host_names() or not (show_all or state.host_enabled(hostname)):
                raise NotFound
            return JSONResponse(state.inventory.hosts[hostname].vars)
        data = state.script(hostvars=bool(params.get("hostvars", "")), towervars=bool(params.get("towervars", "")),
                            show_all=show_all)
        return Response(json.dumps(data, separators=(",", ":")), media_type="application/json")

    @router.get("/inventories/{inventory_id}/groups/")
    def inventory_groups(inventory_id: int, request: Request) -> dict[str, Any]:
        inventory_or_404(inventory_id)
        return groups_page(request)

    @router.get("/hosts/")
    def hosts(request: Request) -> dict[str, Any]:
        return hosts_page(request, state.host_names())

    @router.get("/hosts/{host_id}/")
    def host_detail(host_id: int) -> dict[str, Any]:
        for name, known_id in state.host_ids.items():
            if known_id == host_id and name not in state.scenario.removed_hosts:
                return resources.host(state, base, name)
        raise NotFound

    @router.get("/groups/")
    def groups(request: Request) -> dict[str, Any]:
        return groups_page(request)

    def group_name(group_id: int) -> str:
        for name, known_id in state.group_ids.items():
            if known_id == group_id:
                return name
        raise NotFound

    @router.get("/groups/{group_id}/")
    def group_detail(group_id: int) -> dict[str, Any]:
        return resources.group(state, base, group_name(group_id))

    @router.get("/groups/{group_id}/all_hosts/")
    def group_all_hosts(group_id: int, request: Request) -> dict[str, Any]:
        present = set(state.host_names())
        return hosts_page(request, [h for h in state.inventory.group_hosts(group_name(group_id)) if h in present])

    @router.get("/job_templates/")
    def job_templates(request: Request) -> dict[str, Any]:
        rows = [resources.job_template(state, base, t) for t in state.templates.values()]
        return list_response(request.url.path, request.query_params, rows, resources.TEMPLATE_FIELDS, "name")

    @router.get("/job_templates/{template_id}/")
    def job_template_detail(template_id: int) -> dict[str, Any]:
        return resources.job_template(state, base, template_or_404(template_id))

    @router.get("/job_templates/{template_id}/launch/")
    def launch_requirements(template_id: int) -> dict[str, Any]:
        return resources.launch_requirements(state, template_or_404(template_id))

    @router.post("/job_templates/{template_id}/launch/")
    async def launch(template_id: int, request: Request) -> Response:
        template = template_or_404(template_id)
        if request.state.read_only:
            return _detail(403, FORBIDDEN)
        provided = parse_launch_body(await request.body())
        record, ignored = state.launch(template, provided)
        body = {"job": record.id, "ignored_fields": ignored, **resources.job(base, record, record.launched_at)}
        if state.template_slices(template) > 1 and len(record.hosts) > 1:
            # A sliced template starts a workflow job: the answer names it (`workflow_job`), not a job.
            body = {"workflow_job": record.id, "ignored_fields": ignored, "id": record.id, "type": "workflow_job",
                    "url": f"{base}workflow_jobs/{record.id}/", "status": "pending", "name": template.name}
            return JSONResponse(body, status_code=201, headers={"Location": f"{base}workflow_jobs/{record.id}/"})
        hang = state.scenario.launch_hang_seconds
        if hang:
            await asyncio.sleep(hang)  # the job exists; only the answer is late (a lost response)
        return JSONResponse(body, status_code=201, headers={"Location": f"{base}jobs/{record.id}/"})

    @router.get("/job_templates/{template_id}/jobs/")
    def template_jobs(template_id: int, request: Request) -> dict[str, Any]:
        template_or_404(template_id)
        return jobs_page(request, [j for j in state.all_jobs() if j.template.id == template_id])

    @router.get("/jobs/")
    def jobs(request: Request) -> dict[str, Any]:
        records = state.all_jobs()
        wanted = request.query_params.get("id__in")
        if wanted and all(part.strip().isdigit() for part in wanted.split(",")):
            # Only build the rows asked for (AWX filters in SQL); the generic filter still applies to them.
            ids = {int(part) for part in wanted.split(",")}
            records = [record for record in records if record.id in ids]
        return jobs_page(request, records)

    @router.get("/jobs/{job_id}/")
    def job_detail(job_id: int) -> dict[str, Any]:
        return resources.job(base, job_or_404(job_id), state.clock())

    @router.get("/jobs/{job_id}/job_events/")
    def job_events(job_id: int, request: Request) -> dict[str, Any]:
        record = job_or_404(job_id)
        rows = [resources.job_event(state, base, record, e) for e in record.visible_events(state.clock())]
        if not request.query_params.get("no_truncate"):
            # JobEventSerializer cuts stdout to EVENT_STDOUT_MAX_BYTES_DISPLAY in lists (event_data stays whole)
            rows = [{**row, "stdout": resources.truncate_stdout(row["stdout"])} for row in rows]
        overlap = 2 if state.scenario.duplicate_pages else 0
        return list_response(request.url.path, request.query_params, rows, resources.EVENT_FIELDS, "counter",
                             overlap=overlap)

    @router.get("/jobs/{job_id}/job_host_summaries/")
    def job_host_summaries(job_id: int, request: Request) -> dict[str, Any]:
        record = job_or_404(job_id)
        rows = resources.host_summaries(state, base, record) if record.stats_visible(state.clock()) else []
        return list_response(request.url.path, request.query_params, rows, resources.SUMMARY_FIELDS,
                             "host_name")

    @router.get("/jobs/{job_id}/stdout/")
    def job_stdout(job_id: int, request: Request) -> Response:
        record = job_or_404(job_id)
        text = "\r\n".join(e.stdout for e in record.visible_events(state.clock()) if e.stdout)
        output_format = request.query_params.get("format", "txt")
        if output_format in ("txt", "ansi", "txt_download", "ansi_download"):
            return PlainTextResponse(text)
        if output_format == "json":
            return JSONResponse({"range": {"start": 0, "end": text.count("\n") + 1}, "content": text})
        return _detail(400, f"Unsupported format: {output_format!r}.")

    @router.post("/workflow_jobs/{job_id}/cancel/")
    def cancel_workflow(job_id: int, request: Request) -> Response:
        record = job_or_404(job_id)
        if request.state.read_only:
            return _detail(403, FORBIDDEN)
        return Response(status_code=202) if state.cancel(record) else _detail(403, FORBIDDEN)

    @router.get("/jobs/{job_id}/cancel/")
    def can_cancel(job_id: int) -> dict[str, bool]:
        record = job_or_404(job_id)
        return {"can_cancel": record.status(state.clock()) in ("new", "pending", "waiting", "running")}

    @router.post("/jobs/{job_id}/cancel/")
    def cancel(job_id: int, request: Request) -> Response:
        record = job_or_404(job_id)
        if request.state.read_only:
            return _detail(403, FORBIDDEN)
        if state.cancel(record):
            return Response(status_code=202)
        if state.scenario.cancel_finished_status == 403:
            # JobAccess.can_cancel is false for a finished job, and the permission check answers first
            return _detail(403, FORBIDDEN)
        return _detail(405, 'Method "POST" not allowed.')

    return router


def _control_router(state: DoubleState) -> APIRouter:
    """Test and demo controls; no auth, not counted in `requests` (which counts API requests, faults included)."""
    router = APIRouter(prefix="/_double")

    @router.get("/scenario")
    def get_scenario() -> dict[str, Any]:
        return state.scenario.model_dump()

    @router.post("/scenario")
    async def patch_scenario(request: Request) -> Response:
        try:
            patch = json.loads(await request.body() or b"{}")
            if not isinstance(patch, dict):
                raise ValueError("expected a JSON object")
            return JSONResponse(state.update_scenario(patch).model_dump())
        except ValidationError as exc:
            return JSONResponse({"detail": json.loads(exc.json(include_url=False))}, status_code=400)
        except ValueError as exc:
            return _detail(400, str(exc))

    @router.post("/reset")
    def reset() -> dict[str, Any]:
        state.reset()
        return state.scenario.model_dump()

    @router.get("/stats")
    def stats() -> dict[str, Any]:
        return state.stats()

    return router
