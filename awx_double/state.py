"""The double's state: inventory, job templates, scenario knobs and launched jobs.

Nothing runs in the background. A job stores its launch time and its planned events; its status and what a client
can see are derived from the clock on every read, so `speed` stretches or shrinks a whole run and tests can drive
time with their own clock.
"""

from __future__ import annotations

import hmac
import itertools
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from awx_double.hostpattern import resolve_limit
from awx_double.recorded import plan_recorded
from awx_double.timeline import RUN_END, RUN_START, WAITING_AT, PlannedEvent, RunOptions, RunPlan, plan_run
from core.inventory import Inventory, load_patch_groups

INVENTORY_ID = 1
INVENTORY_NAME = "Demo fleet"
FIRST_TEMPLATE_ID = 7

# Job seconds (scaled by speed) of the event pipeline.
BATCH_SECONDS = 1.0  # the callback receiver flushes events to the database about once a second
EVENT_PROCESSING_LAG = 1.5  # after the terminal status, until event_processing_finished
CANCEL_DELAY = 1.0  # between an accepted cancel and the status `canceled`
SLOW_EVENTS_LAG = 12.0  # how far events trail the status with `slow_events`

ACTIVE_STATUSES = ("new", "pending", "waiting", "running")
PROMPTABLE_DEFAULTS: dict[str, Any] = {
    "limit": "", "extra_vars": {}, "job_type": "run", "inventory": INVENTORY_ID, "credentials": [],
    "job_tags": "", "skip_tags": "", "verbosity": 0, "diff_mode": False, "forks": 0, "timeout": 0,
    "scm_branch": "", "execution_environment": None, "labels": [], "instance_groups": [], "job_slice_count": 1,
}


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(default=0, ge=0)
    retry_after: float = Field(default=1.0, ge=0)
    path: str = ""  # only requests whose path contains this (e.g. "/launch/": the launch path); empty: any


class Scenario(BaseModel):
    """Faults and template settings; changed at start-up (CLI) or at run time (POST /_double/scenario)."""

    model_config = ConfigDict(extra="forbid")
    unreachable_hosts: list[str] = []
    failed_hosts: list[str] = []
    server_errors: int = Field(default=0, ge=0)
    server_error_status: int = Field(default=503, ge=500, le=599)
    rate_limit: RateLimit = RateLimit()
    slow_events: bool = False
    event_delay_seconds: float = Field(default=0.0, ge=0)
    duplicate_pages: bool = False
    template_asks_limit: bool = True
    template_asks_variables: bool = True
    template_asks_job_type: bool = True
    read_only_token: str | None = None
    launch_hang_seconds: float = Field(default=0.0, ge=0)
    job_seconds: float | None = Field(default=None, ge=5)  # run length in job seconds (None: ~28 s)
    disabled_hosts: list[str] = []  # hosts whose AWX `enabled` is false (still listed; left out of the script)
    removed_hosts: list[str] = []  # hosts deleted from the inventory since start-up
    sliced_templates: list[str] = []  # template names with job_slice_count 2 (a launch would make a workflow job)
    # Replay a recorded real event stream (awx_double/streams/) instead of the synthetic one: "auto" picks it
    # from failed_hosts/unreachable_hosts, or name one ("stopped": a run reaped mid-way, ending in `error`).
    recorded_events: Literal["", "auto", "success", "item_failed", "unreachable", "stopped"] = ""
    event_processing_stuck: bool = False  # event_processing_finished stays false for good (events dropped)
    cancel_finished_status: Literal[403, 405] = 403  # AWX: 403 (JobAccess.can_cancel), 405 for a superuser
    upgrading_requests: int = Field(default=0, ge=0)  # the next N API requests answer 302 (migrations running)

    def merged(self, patch: dict[str, Any]) -> Scenario:
        """RFC 7396 merge: nested objects merge, `null` restores the default."""
        return Scenario.model_validate(_merge_patch(self.model_dump(), patch))


def _merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge_patch(result[key], value)
        else:
            result[key] = value
    return result


DEFAULT_ORGANIZATION = "Default"  # the organization every AWX install starts with (id 1)


@dataclass(frozen=True)
class JobTemplate:
    id: int
    name: str
    description: str
    organization: str = DEFAULT_ORGANIZATION


@dataclass
class SimJob:
    """One launched job. Times are clock seconds; `*_js` values are job seconds (elapsed clock * speed)."""

    id: int
    template: JobTemplate
    launched_at: float
    speed: float
    limit: str
    job_type: str
    extra_vars: dict[str, Any]
    hosts: list[str]
    plan: RunPlan
    visible_at: tuple[float, ...]  # per planned event, when the event becomes readable
    cancel_js: float | None = None
    processing_stuck: bool = False  # event processing never finishes (a reaped job, events dropped)

    def clock_at(self, job_seconds: float) -> float:
        return self.launched_at + job_seconds / self.speed

    def _end(self) -> tuple[float, str]:
        """(job seconds, status) at which the run turns terminal."""
        if self.cancel_js is not None:
            return self.cancel_js + CANCEL_DELAY, "canceled"
        return self.plan.ends_at, self.plan.final_status

    def status(self, now: float) -> str:
        job_seconds = (now - self.launched_at) * self.speed
        end_js, final = self._end()
        if job_seconds >= end_js:
            return final
        if job_seconds >= RUN_START:
            return "running"
        return "waiting" if job_seconds >= WAITING_AT else "pending"

    def started_at(self, now: float) -> float | None:
        end_js, _ = self._end()
        started = self.clock_at(RUN_START)
        return started if now >= started and end_js > RUN_START else None

    def finished_at(self, now: float) -> float | None:
        finished = self.clock_at(self._end()[0])
        return finished if now >= finished else None

    def emitted_events(self) -> list[tuple[PlannedEvent, float]]:
        """Planned events that the run actually emits (a cancel cuts the run short), with their visibility."""
        return [(event, visible) for event, visible in zip(self.plan.events, self.visible_at, strict=True)
                if self.cancel_js is None or event.emit_at <= self.cancel_js]

    def visible_events(self, now: float) -> list[PlannedEvent]:
        return [event for event, visible in self.emitted_events() if visible <= now]

    def event_processing_finished(self, now: float) -> bool:
        if self.processing_stuck:
            return False
        done = self.clock_at(self._end()[0] + EVENT_PROCESSING_LAG)
        return now >= max([done, *(visible for _, visible in self.emitted_events())])

    def stats_visible(self, now: float) -> bool:
        return any(event.event == "playbook_on_stats" for event in self.visible_events(now))


def event_visibility(plan: RunPlan, launched_at: float, speed: float, lag_js: float,
                     delay_seconds: float) -> tuple[float, ...]:
    """When each event becomes readable: rows are flushed in batches, and in every other batch the first row is
    flushed one batch late, so a later counter is briefly visible before an earlier one (as with AWX)."""
    batches = [math.ceil(event.emit_at / BATCH_SECONDS) for event in plan.events]
    batch_sizes = Counter(batches)
    late_batches_seen: set[int] = set()
    visible: list[float] = []
    for batch in batches:
        flush = batch
        if batch_sizes[batch] > 1 and batch % 2 == 1 and batch not in late_batches_seen:
            late_batches_seen.add(batch)
            flush = batch + 1
        visible.append(launched_at + (flush * BATCH_SECONDS + lag_js) / speed + delay_seconds)
    return tuple(visible)


class LaunchRejected(Exception):
    """The launch body is malformed; `errors` is AWX's 400 body (a field map, or a detail on a parse error)."""

    def __init__(self, errors: dict[str, Any]):
        super().__init__(errors)
        self.errors = errors


@dataclass
class _Counters:
    launches: int = 0
    launches_by_request: Counter = field(default_factory=Counter)
    requests: int = 0


class DoubleState:
    """All mutable state behind one lock: uvicorn may run handlers on several threads."""

    def __init__(self, inventory_path: Path, patch_groups_path: Path, token: str, speed: float,
                 scenario: Scenario | None = None, clock: Callable[[], float] = time.time):
        if speed <= 0:
            raise ValueError("speed must be positive")
        raw = yaml.load(Path(inventory_path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        self.inventory = Inventory.from_dict(raw)
        self.direct_hosts, self.child_groups = group_tree(raw)
        self.templates = _templates_from_patch_groups(Path(patch_groups_path))
        self.organizations = {DEFAULT_ORGANIZATION: 1}
        for template in self.templates.values():
            self.organizations.setdefault(template.organization, len(self.organizations) + 1)
        self._script_cache: tuple[tuple, dict[str, Any]] | None = None
        self.host_ids = {name: i for i, name in enumerate(self.inventory.host_names(), start=1)}
        self.group_ids = {name: i for i, name in enumerate(
            sorted(g for g in self.inventory.groups if g not in ("all", "ungrouped")), start=1)}
        self.token = token
        self.speed = speed
        self.clock = clock
        self._initial_scenario = scenario or Scenario()
        self._lock = threading.RLock()
        self._job_ids = itertools.count(1)  # never reset: a stale job id must not point at a new job
        self.scenario = self._initial_scenario
        self.jobs: dict[int, SimJob] = {}
        self._counters = _Counters()

    # --- access and faults ----------------------------------------------------------------------

    def access_for(self, token: str) -> str | None:
        """"write", "read" (the read-only token) or None (unknown token)."""
        if hmac.compare_digest(token.encode(), self.token.encode()):
            return "write"
        read_only = self.scenario.read_only_token
        if read_only and hmac.compare_digest(token.encode(), read_only.encode()):
            return "read"
        return None

    def take_fault(self, path: str = "") -> tuple[int, float | None] | None:
        """Counts one API request and consumes the next injected fault: (status, retry_after) or None."""
        with self._lock:
            self._counters.requests += 1
            limit = self.scenario.rate_limit
            if limit.count > 0 and limit.path in path:
                self.scenario = self.scenario.merged({"rate_limit": {"count": limit.count - 1}})
                return 429, limit.retry_after
            if self.scenario.server_errors > 0:
                self.scenario = self.scenario.merged({"server_errors": self.scenario.server_errors - 1})
                return self.scenario.server_error_status, None
            if self.scenario.upgrading_requests > 0:
                self.scenario = self.scenario.merged({"upgrading_requests": self.scenario.upgrading_requests - 1})
                return 302, None
            return None

    # --- test controls ---------------------------------------------------------------------------

    def update_scenario(self, patch: dict[str, Any]) -> Scenario:
        with self._lock:
            self.scenario = self.scenario.merged(patch)
            return self.scenario

    def reset(self) -> None:
        with self._lock:
            self.scenario = self._initial_scenario
            self.jobs.clear()
            self._counters = _Counters()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "launches": self._counters.launches,
                "launches_by_request": dict(self._counters.launches_by_request),
                "requests": self._counters.requests,
                "jobs": sorted(self.jobs),
            }

    # --- inventory -------------------------------------------------------------------------------

    def host_names(self) -> list[str]:
        """The hosts the inventory has now (removed ones are gone), sorted by name as AWX orders them."""
        removed = set(self.scenario.removed_hosts)
        return [name for name in self.inventory.host_names() if name not in removed]

    def host_enabled(self, name: str) -> bool:
        return name not in self.scenario.disabled_hosts

    def template_slices(self, template: JobTemplate) -> int:
        return 2 if template.name in self.scenario.sliced_templates else 1

    def script(self, *, hostvars: bool, towervars: bool, show_all: bool) -> dict[str, Any]:
        """`GET inventories/{id}/script/` as `Inventory.get_script_data` builds it: `all` lists every group as a
        child and the hosts in no group; each group its direct hosts and child groups; `_meta.hostvars` with
        `hostvars`; disabled hosts only with `all`; `remote_tower_enabled`/`remote_tower_id` with `towervars`.
        Built once per set of knobs (a 10,000-host inventory is one response, not 10,000 rows per page)."""
        scenario = self.scenario
        key = (hostvars, towervars, show_all, tuple(scenario.disabled_hosts), tuple(scenario.removed_hosts))
        if self._script_cache is not None and self._script_cache[0] == key:
            return self._script_cache[1]
        names = [n for n in self.host_names() if show_all or self.host_enabled(n)]
        present = set(names)
        data: dict[str, Any] = {}
        all_group: dict[str, Any] = data.setdefault("all", {})
        grouped: set[str] = set()
        groups: dict[str, dict[str, Any]] = {}
        for group in sorted(self.group_ids):
            info: dict[str, Any] = {}
            members = [h for h in self.direct_hosts.get(group, ()) if h in present]
            if members:
                info["hosts"] = members
                grouped.update(members)
            children = [c for c in self.child_groups.get(group, ()) if c in self.group_ids]
            if children:
                info["children"] = children
            if info:
                groups[group] = info
        all_group["hosts"] = [n for n in names if n not in grouped]
        if self.group_ids:
            all_group["children"] = sorted(self.group_ids)
        data.update(groups)
        if hostvars:
            meta: dict[str, dict[str, Any]] = {}
            for name in names:
                host_vars = dict(self.inventory.hosts[name].vars)
                if towervars:
                    for prefix in ("host", "tower"):
                        host_vars[f"remote_{prefix}_enabled"] = str(self.host_enabled(name)).lower()
                        host_vars[f"remote_{prefix}_id"] = self.host_ids[name]
                meta[name] = host_vars
            data["_meta"] = {"hostvars": meta}
        self._script_cache = (key, data)
        return data

    # --- jobs ------------------------------------------------------------------------------------

    def template_asks(self) -> dict[str, bool]:
        scenario = self.scenario
        return {"limit": scenario.template_asks_limit, "extra_vars": scenario.template_asks_variables,
                "job_type": scenario.template_asks_job_type}

    def launch(self, template: JobTemplate, provided: dict[str, Any]) -> tuple[SimJob, dict[str, Any]]:
        """Launch like AWX: prompted fields are used, others fall back to the template's value and are
        reported as ignored when they differ from it. Returns the job and the ignored fields."""
        with self._lock:
            asks = self.template_asks()
            accepted: dict[str, Any] = {}
            ignored: dict[str, Any] = {}
            for name, value in provided.items():
                if asks.get(name, False):
                    accepted[name] = value
                elif value != PROMPTABLE_DEFAULTS[name]:
                    ignored[name] = value
            scenario = self.scenario
            extra_vars = dict(accepted.get("extra_vars", {}))
            job_type = accepted.get("job_type", "run")
            limit = accepted.get("limit", "")
            hosts = resolve_limit(limit, self.inventory)
            options = RunOptions(
                job_type=job_type,
                reboot_policy=str(extra_vars.get("reboot_policy", "if_needed")),
                update_scope=str(extra_vars.get("update_scope", "security")),
                unreachable_hosts=frozenset(scenario.unreachable_hosts),
                failed_hosts=frozenset(scenario.failed_hosts),
                run_end=scenario.job_seconds or RUN_END,
            )
            if scenario.recorded_events and hosts:
                stream = None if scenario.recorded_events == "auto" else scenario.recorded_events
                plan = plan_recorded(hosts, options, stream)
            else:
                plan = plan_run(hosts, options)
            now = self.clock()
            lag = SLOW_EVENTS_LAG if scenario.slow_events else 0.0
            job = SimJob(
                id=next(self._job_ids), template=template, launched_at=now, speed=self.speed, limit=limit,
                job_type=job_type, extra_vars=extra_vars, hosts=hosts, plan=plan,
                visible_at=event_visibility(plan, now, self.speed, lag, scenario.event_delay_seconds),
                processing_stuck=scenario.event_processing_stuck,
            )
            self.jobs[job.id] = job
            self._counters.launches += 1
            request_id = (provided.get("extra_vars") or {}).get("patchpilot_request_id")
            if request_id is not None:
                self._counters.launches_by_request[str(request_id)] += 1
            return job, ignored

    def job(self, job_id: int) -> SimJob | None:
        with self._lock:
            return self.jobs.get(job_id)

    def all_jobs(self) -> list[SimJob]:
        with self._lock:
            return list(self.jobs.values())

    def cancel(self, job: SimJob) -> bool:
        """Accept a cancel while the job is active (again is fine); False once it has finished."""
        with self._lock:
            now = self.clock()
            if job.status(now) not in ACTIVE_STATUSES:
                return False
            if job.cancel_js is None:
                job.cancel_js = (now - job.launched_at) * job.speed
            return True


def group_tree(data: dict[str, Any] | None) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The group tree of an Ansible YAML inventory: each group's direct hosts and its child groups."""
    direct: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}

    def walk(group: str, body: dict[str, Any] | None) -> None:
        body = body or {}
        hosts = direct.setdefault(group, [])
        kids = children.setdefault(group, [])
        for name in body.get("hosts") or {}:
            if str(name) not in hosts:
                hosts.append(str(name))
        for child, child_body in (body.get("children") or {}).items():
            if child not in kids:
                kids.append(child)
            walk(child, child_body)

    for top, body in (data or {}).items():
        walk(top, body)
    return direct, children


def _templates_from_patch_groups(path: Path) -> dict[int, JobTemplate]:
    """One job template per distinct (template name, organization), numbered in order of first use: AWX names
    are unique per organization only, so two organizations may each have a `Patch Linux`."""
    names: dict[tuple[str, str], list[str]] = {}
    for group in load_patch_groups(path).values():
        key = (group.job_template, group.organization or DEFAULT_ORGANIZATION)
        names.setdefault(key, []).append(group.name)
    return {
        FIRST_TEMPLATE_ID + i: JobTemplate(id=FIRST_TEMPLATE_ID + i, name=name, organization=organization,
                                           description="Patch groups: " + ", ".join(groups))
        for i, ((name, organization), groups) in enumerate(names.items())
    }
