"""The only code in patchpilot that talks to AWX / Automation Controller (REST API v2). What its answers mean (the
errors, a launch's result) is `worker.awx_answers`, re-exported here.

Reads are retried with backoff on gateway trouble (5xx, 429, timeouts); a launch is sent exactly once because AWX
has no idempotency key: after a lost answer the caller finds the job again with `find_job_by_request_id`.
The token lives in the HTTP client's headers only; it never reaches a message, a repr or a log line.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from core.settings import Settings, get_settings
from core.statuses import AWX_ACTIVE, AwxStatus
from worker.awx_answers import (
    AWXError,
    AWXLaunchRefused,
    LaunchResult,
    Transient,
    error_for,
    json_body,
    organization_name,
    parse_extra_vars,
    retry_after_seconds,
    status_line,
)

__all__ = ["AWXClient", "AWXError", "AWXLaunchRefused", "LaunchResult"]

log = logging.getLogger("patchpilot.awx")

CLOCK_SKEW = timedelta(minutes=1)
PAGE_SIZE = 200  # AWX's maximum page size


class AWXClient:
    """Synchronous AWX client. `sleep` is injectable so tests do not wait for real backoff."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0, verify: bool | ssl.SSLContext = True,
                 retry_attempts: int = 5, transport: httpx.BaseTransport | None = None,
                 max_wait_seconds: float = 30.0, sleep: Callable[[float], None] = time.sleep):
        if not token:
            raise ValueError("an AWX token is required")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._token = token
        self._attempts = max(1, retry_attempts)
        self._max_wait = max_wait_seconds
        self._sleep = sleep
        self._waits = threading.local()
        self._timeout = timeout
        self._backoff = wait_random_exponential(multiplier=0.5, max=max_wait_seconds)  # "full jitter"
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout), verify=verify, transport=transport, follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> AWXClient:
        settings = settings or get_settings()
        base_url, token = settings.require_awx()
        return cls(base_url, token, timeout=settings.awx_timeout_seconds, verify=settings.awx_tls_verify(),
                   retry_attempts=settings.awx_retry_attempts)

    def __repr__(self) -> str:
        return f"AWXClient(base_url={self.base_url!r})"

    # --- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AWXClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- job templates and launch ----------------------------------------------------------------

    def find_job_template(self, name: str, organization: str | None = None) -> dict[str, Any]:
        """The template called `name`; AWX names are unique per organization only, so with several of that name
        the organization must be given (a template of another organization is never taken instead)."""
        found = [t for t in self._pages("job_templates/", {"name": name, "page_size": PAGE_SIZE})
                 if t.get("name") == name]
        if organization is not None:
            found = [t for t in found if organization_name(t) == organization]
        if not found:
            where = f" in organization {organization!r}" if organization is not None else ""
            raise AWXError(f"AWX has no job template named {name!r}{where} (or the token may not see it).",
                           kind="not_found", status_code=404)
        if len(found) > 1:
            orgs = ", ".join(sorted(repr(organization_name(t)) for t in found))
            raise AWXError(f"AWX has {len(found)} job templates named {name!r} (organizations {orgs}); name the "
                           "organization of the patch group's template.", kind="bad_request")
        return found[0]

    # --- inventories -----------------------------------------------------------------------------

    def find_inventory(self, name_or_id: str) -> dict[str, Any]:
        """An inventory by id (all digits) or by name; a name held by several organizations is refused."""
        wanted = str(name_or_id).strip()
        if wanted.isdigit():
            return self._get(f"inventories/{int(wanted)}/")
        found = [i for i in self._pages("inventories/", {"name": wanted, "page_size": PAGE_SIZE})
                 if i.get("name") == wanted]
        if not found:
            raise AWXError(f"AWX has no inventory named {wanted!r} (or the token may not see it).",
                           kind="not_found", status_code=404)
        if len(found) > 1:
            ids = ", ".join(str(i.get("id")) for i in found)
            raise AWXError(f"AWX has {len(found)} inventories named {wanted!r} (ids {ids}); name it by id.",
                           kind="bad_request")
        return found[0]

    def inventory_script(self, inventory_id: int) -> dict[str, Any]:
        """The whole inventory in one answer, as ansible-inventory --list shows it (AWX's InventoryScriptView):
        every group with its direct hosts and child groups, and `_meta.hostvars`; `all=1` keeps the disabled
        hosts and `towervars=1` marks each with `remote_tower_enabled` ("true"/"false"). One request for
        10,000 hosts instead of 50 pages of host rows, and no per-host group lists to join."""
        return self._get(f"inventories/{inventory_id}/script/",
                         params={"hostvars": 1, "towervars": 1, "all": 1})

    def launch_requirements(self, template_id: int) -> dict[str, Any]:
        return self._get(f"job_templates/{template_id}/launch/")

    def check_launchable(self, template_id: int, job_type: str = "run") -> None:
        """Refuse (AWXLaunchRefused) unless the template prompts for the limit and the variables (and the job
        type for a dry run): AWX would silently drop them. A read, so it may wait out a 429 or a 5xx."""
        if job_type not in ("run", "check"):
            raise AWXError(f"job_type must be 'run' or 'check', not {job_type!r}.", kind="bad_request")
        self._refuse_unless_prompted(template_id, job_type)

    def launch(self, template_id: int, *, limit: str, extra_vars: dict[str, Any],
               job_type: str = "run", prompts_checked: bool = False) -> LaunchResult:
        """Launch once, after making sure AWX will honour the limit and the extra vars (`prompts_checked`: the
        caller has just run `check_launchable`, so the POST follows at once, with no wait before it)."""
        if job_type not in ("run", "check"):
            raise AWXError(f"job_type must be 'run' or 'check', not {job_type!r}.", kind="bad_request")
        if not limit or not limit.strip():
            raise AWXLaunchRefused("Refusing to launch with an empty limit: AWX would patch the whole inventory.")
        if not prompts_checked:
            self._refuse_unless_prompted(template_id, job_type)

        url = self._url(f"job_templates/{template_id}/launch/")
        payload = {"limit": limit, "extra_vars": extra_vars, "job_type": job_type}
        try:
            response = self._http.post(url, json=payload)
        except httpx.TimeoutException:
            raise AWXError(f"AWX did not answer the launch of template {template_id} within {self._timeout:g} s; "
                           "the job may exist, look it up before launching again.",
                           kind="timeout", retryable=False) from None
        except httpx.TransportError as exc:
            raise AWXError(f"The launch of template {template_id} failed in transit ({type(exc).__name__}); "
                           "the job may exist, look it up before launching again.",
                           kind="connection", retryable=False) from None
        if response.status_code != 201:
            raise error_for(response, f"launch of template {template_id}", self._redact)
        body = json_body(response)
        if body.get("workflow_job") is not None and body.get("job") is None:
            self._refuse_workflow_job(template_id, int(body["workflow_job"]))
        job_id = body.get("job", body.get("id"))
        if job_id is None:
            raise AWXError(f"AWX accepted the launch of template {template_id} but named no job; "
                           "look it up before launching again.", kind="server", status_code=201)
        result = LaunchResult(job_id=int(job_id), status=str(body.get("status", AwxStatus.PENDING)),
                              ignored_fields=dict(body.get("ignored_fields") or {}))
        log.info("launched AWX job %s from template %s (limit %s, job_type %s)", result.job_id, template_id,
                 limit, job_type)
        if result.ignored_fields:
            self._cancel_ignored(result)
        return result

    def _refuse_unless_prompted(self, template_id: int, job_type: str) -> None:
        needs = self.launch_requirements(template_id)
        dropped = []
        if not needs.get("ask_limit_on_launch"):
            dropped.append("limit (the whole inventory would be patched)")
        if not needs.get("ask_variables_on_launch"):
            dropped.append("extra_vars (the patch group would be lost)")
        if job_type == "check" and not needs.get("ask_job_type_on_launch"):
            dropped.append("job_type (the dry run would become a real run)")
        slices = int((needs.get("defaults") or {}).get("job_slice_count") or 1)
        if slices > 1:
            raise AWXLaunchRefused(
                f"Refusing to launch job template {template_id}: it is sliced (job_slice_count {slices}), so AWX "
                "would start a workflow job, which patchpilot cannot follow. Set its job slicing to 1.")
        if dropped:
            raise AWXLaunchRefused(
                f"Refusing to launch job template {template_id}: it does not prompt on launch for "
                + ", ".join(dropped) + ". Enable 'Prompt on launch' for these fields in AWX.")

    def _refuse_workflow_job(self, template_id: int, workflow_job_id: int) -> None:
        """A sliced template (its slicing set after our check) started a workflow job, not a job: its id is no job
        id, so it is canceled at once and the launch fails, naming it."""
        note = "it was cancelled"
        try:
            self._send("POST", self._url(f"workflow_jobs/{workflow_job_id}/cancel/"),
                       what=f"cancel of workflow job {workflow_job_id}", accept=(202, 403, 405))
        except AWXError as exc:
            note = f"cancelling it failed ({exc}); cancel it by hand"
        log.error("template %s started workflow job %s (sliced); %s", template_id, workflow_job_id, note)
        raise AWXError(f"AWX started workflow job {workflow_job_id} for template {template_id} (it is sliced), which "
                       f"patchpilot cannot follow; {note}. Set the template's job slicing to 1.",
                       kind="refused", status_code=201)

    def _cancel_ignored(self, result: LaunchResult) -> None:
        fields = ", ".join(sorted(result.ignored_fields))
        note = "it was cancelled"
        try:
            if not self.cancel(result.job_id):
                note = "it had already finished when we tried to cancel it"
        except AWXError as exc:
            note = f"cancelling it failed ({exc}); cancel it by hand"
        log.error("AWX ignored %s on job %s; %s", fields, result.job_id, note)
        raise AWXError(f"AWX launched job {result.job_id} but ignored {fields}; {note}.",
                       kind="ignored_fields", status_code=201, job_id=result.job_id)

    def jobs_for_request(self, template_id: int, request_id: str, created_after: datetime) -> list[dict[str, Any]]:
        """Every job of the template launched for `request_id` (carried in extra_vars) since `created_after`,
        oldest first (AWX ids grow with creation). AWX refuses to filter on extra_vars (403), but its list rows
        carry them (`UnifiedJobListSerializer` strips only job_args, job_cwd, job_env, result_traceback and
        event_processing_finished), so this is one list request; a row without them is read in full."""
        since = created_after if created_after.tzinfo else created_after.replace(tzinfo=UTC)
        since = (since - CLOCK_SKEW).astimezone(UTC)
        params = {"created__gte": since.isoformat().replace("+00:00", "Z"), "order_by": "id",
                  "page_size": PAGE_SIZE}
        found: dict[int, dict[str, Any]] = {}
        for row in self._pages(f"job_templates/{template_id}/jobs/", params):
            if "extra_vars" not in row:
                row = self.get_job(int(row["id"]))
            carried = parse_extra_vars(row.get("extra_vars")).get("patchpilot_request_id")
            if carried is not None and str(carried) == str(request_id):
                found.setdefault(int(row["id"]), row)
        return [found[job_id] for job_id in sorted(found)]

    def find_job_by_request_id(self, template_id: int, request_id: str, created_after: datetime) -> int | None:
        """The oldest job launched for `request_id`, or None. Used after a lost launch answer."""
        jobs = self.jobs_for_request(template_id, request_id, created_after)
        return int(jobs[0]["id"]) if jobs else None

    def waits(self) -> int:
        """How many backoff sleeps this thread has made so far: a caller compares two readings to know whether
        anything waited in between (then the world may have moved on meanwhile)."""
        return getattr(self._waits, "count", 0)

    def _counted_sleep(self, seconds: float) -> None:
        self._waits.count = self.waits() + 1
        self._sleep(seconds)

    # --- following a job -------------------------------------------------------------------------

    def get_job(self, job_id: int) -> dict[str, Any]:
        return self._get(f"jobs/{job_id}/")

    def job_statuses(self, job_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Several jobs in their list form (status, failed, started, finished; no `event_processing_finished`),
        one request per 200 ids. A job missing from the answer is gone or out of the token's reach."""
        wanted = sorted(set(job_ids))
        listed: dict[int, dict[str, Any]] = {}
        for start in range(0, len(wanted), PAGE_SIZE):
            chunk = wanted[start:start + PAGE_SIZE]
            params = {"id__in": ",".join(str(job_id) for job_id in chunk), "page_size": PAGE_SIZE}
            for job in self._pages("jobs/", params):
                listed[int(job["id"])] = job
        return listed

    def job_events(self, job_id: int, after_counter: int) -> list[dict[str, Any]]:
        """Visible events with counter > after_counter, in counter order. Rows repeated across pages (pages
        shift while AWX writes) are returned once. Gaps may remain: the caller advances only over gap-free runs.
        `no_truncate`: lists cut each stdout to 1024 characters otherwise (EVENT_STDOUT_MAX_BYTES_DISPLAY), and a
        failure's output is kept whole (the follower caps what it stores); event_data is whole either way."""
        params = {"counter__gt": after_counter, "order_by": "counter", "page_size": PAGE_SIZE, "no_truncate": 1}
        by_counter: dict[int, dict[str, Any]] = {}
        for event in self._pages(f"jobs/{job_id}/job_events/", params):
            by_counter.setdefault(int(event["counter"]), event)
        return [by_counter[counter] for counter in sorted(by_counter)]

    def host_summaries(self, job_id: int) -> list[dict[str, Any]]:
        return list(self._pages(f"jobs/{job_id}/job_host_summaries/", {"page_size": PAGE_SIZE}))

    def cancel(self, job_id: int) -> bool:
        """True when AWX accepted the cancel (202), False when the job had already finished: 405 for a superuser,
        403 for anyone else (JobAccess.can_cancel is false once the job is done, and the permission check answers
        first), so a 403 re-reads the job: finished means finished, still active means the token may not cancel."""
        response = self._send("POST", self._url(f"jobs/{job_id}/cancel/"), what=f"cancel of job {job_id}",
                              accept=(202, 403, 405))
        if response.status_code == 403:
            status = self.get_job(job_id).get("status")
            if status in AWX_ACTIVE:
                raise error_for(response, f"cancel of job {job_id}", self._redact)
            log.info("AWX job %s had already finished (%s); nothing to cancel", job_id, status)
            return False
        if response.status_code == 405:
            log.info("AWX job %s had already finished; nothing to cancel", job_id)
            return False
        log.info("asked AWX to cancel job %s", job_id)
        return True

    # --- HTTP plumbing ---------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        """Relative paths join the base (`/api/v2/` or `/api/controller/v2/`); AWX's `next` links are
        server-absolute paths and keep their own prefix."""
        return urljoin(self.base_url, path)

    def _get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self._send("GET", self._url(path), params=params, what=f"GET {path}")
        return json_body(response)

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        url: str | None = self._url(path)
        query: dict[str, Any] | None = params
        while url:
            page = json_body(self._send("GET", url, params=query, what=f"GET {path}"))
            yield from page.get("results", [])
            url = self._url(page["next"]) if page.get("next") else None
            query = None  # `next` carries the whole query

    def _send(self, method: str, url: str, *, what: str, params: dict[str, Any] | None = None,
              accept: tuple[int, ...] = ()) -> httpx.Response:
        """One idempotent request, retried on transient failures; other errors become AWXError at once."""
        retrying = Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception_type(Transient),
            sleep=self._counted_sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            response = retrying(self._attempt, method, url, params)
        except Transient as exc:
            attempts = "attempt" if self._attempts == 1 else "attempts"
            raise AWXError(f"AWX did not answer the {what} after {self._attempts} {attempts}: {exc.reason}",
                           kind=exc.kind, status_code=exc.status_code, retryable=True) from None
        if response.is_success or response.status_code in accept:
            return response
        raise error_for(response, what, self._redact)

    def _attempt(self, method: str, url: str, params: dict[str, Any] | None) -> httpx.Response:
        try:
            response = self._http.request(method, url, params=params)
        except httpx.TimeoutException:
            raise Transient(f"timed out after {self._timeout:g} s", kind="timeout") from None
        except httpx.TransportError as exc:
            raise Transient(f"connection failed ({type(exc).__name__})", kind="connection") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise Transient(status_line(response), kind="server", status_code=response.status_code,
                             retry_after=retry_after_seconds(response.headers.get("Retry-After")))
        if response.is_redirect:
            # AWX redirects every request (302 to /migrations_notran/) while an upgrade runs its migrations;
            # never followed (a redirect would drop the token or land on a login page): waited out like a 503.
            raise Transient(f"{status_line(response)} to {response.headers.get('Location', '?')} (an upgrade "
                             "in progress?)", kind="server", status_code=response.status_code,
                             retry_after=retry_after_seconds(response.headers.get("Retry-After")))
        return response

    def _wait(self, state: RetryCallState) -> float:
        """Honour Retry-After when the gateway sends one, else exponential backoff with jitter; both capped."""
        failure = state.outcome.exception() if state.outcome else None
        if isinstance(failure, Transient) and failure.retry_after is not None:
            return min(failure.retry_after, self._max_wait)
        return self._backoff(state)

    def _log_retry(self, state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        log.warning("AWX call failed (%s), attempt %d of %d; retrying in %.1f s", failure,
                    state.attempt_number, self._attempts, state.next_action.sleep if state.next_action else 0.0)

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***")
