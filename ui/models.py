"""What the patchpilot API answers, as the UI reads it: one model per API response the UI uses.

Each model declares only the fields the UI reads, with `extra="ignore"` so a newer API that sends more does not
break the UI, and with defaults wherever the UI can do without a field. tests/ui/test_ui_models.py checks every
declared field against the API's OpenAPI document (and, for the routes that answer plain JSON objects, against what
the API's own functions return).

The words of the domain (request states and what they mean, stages, environments, roles, reboot policies, actions)
are not here: they come from `GET /api/v1/meta` as a `ui.meta.Meta`, whose methods answer the questions the views
ask ("is this state final?", "is this environment production?").
"""

from __future__ import annotations

from enum import StrEnum, auto
from typing import Any

from pydantic import BaseModel, ConfigDict


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# --- requests -----------------------------------------------------------------------------------


class PackageChange(ApiModel):
    """A package a run changed on a host or, in a dry run, would change (the API's PackageView)."""

    name: str
    old: str | None = None
    new: str | None = None


class HostResult(ApiModel):
    """One host of a request and its results (the API's HostView)."""

    name: str
    status: str = ""
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    message: str | None = None
    packages: list[PackageChange] = []


class StageEntry(ApiModel):
    """A stage the run reached (the API's StageView)."""

    stage: str
    label: str = ""
    at: str | None = None


class PatchRequest(ApiModel):
    """A patch request (the API's RequestView)."""

    id: str
    action: str = ""
    state: str
    stage: str = ""
    hosts: list[HostResult] = []
    hosts_by_environment: dict[str, list[str]] = {}
    patch_group: str | None = None
    patch_group_description: str | None = None
    reboot: str = ""
    check_mode: bool = False
    awx_job_id: int | None = None
    awx_job_url: str | None = None
    requested_by: str | None = None
    approved_by: str | None = None
    decided_by: str | None = None  # who rejected or canceled
    created_at: str | None = None
    expires_at: str | None = None
    approved_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    failure_reason: str | None = None
    stages: list[StageEntry] = []
    latest_task: str | None = None
    progress: float = 0.0
    conversation_id: str | None = None
    notes: list[str] = []
    terminal: bool | None = None  # the API's word on whether the state is final
    targets: str | None = None  # the request as it was asked, in words

    @property
    def host_names(self) -> list[str]:
        return [host.name for host in self.hosts]


class RequestRef(ApiModel):
    """A request the UI only needs the id of (a chat reply's proposal)."""

    id: str


class ChatReply(ApiModel):
    """POST /api/v1/chat (the API's ChatOut)."""

    conversation_id: str
    reply: str = ""
    engine: str = ""
    proposal: RequestRef | None = None


class JobEvent(ApiModel):
    """One AWX job event (the API's EventView)."""

    counter: int
    event: str
    host: str | None = None
    play: str | None = None
    task: str | None = None
    failed: bool = False
    changed: bool = False
    stdout: str | None = None
    created: str | None = None


# --- conversations, identity, status ------------------------------------------------------------


class Conversation(ApiModel):
    id: str
    title: str = ""
    created_at: str | None = None
    updated_at: str | None = None


class Message(ApiModel):
    role: str
    text: str = ""
    created_at: str | None = None
    proposal_id: str | None = None


class Me(ApiModel):
    """Who the API takes the caller for (the API's MeView)."""

    user: str
    roles: list[str]
    via: str = ""


class SystemStatus(ApiModel):
    """The status line's facts (the API's SystemView)."""

    engine: str = ""
    engine_label: str = ""
    api: str = ""
    database: str = ""
    broker: str = ""
    awx: str = ""
    awx_url: str | None = None
    inventory: dict[str, Any] | None = None
    inventory_line: str | None = None


# --- one request as a page shows it (GET /api/v1/requests/{id}/live) ---------------------------


class StepStatus(StrEnum):
    """The status of one stage in the API's timeline: a vocabulary of the timeline, not of request states."""

    DONE = auto()
    CURRENT = auto()
    SKIPPED = auto()
    PENDING = auto()
    NOT_RUN = auto()
    FAILED = auto()
    CANCELED = auto()


class TimelineStep(ApiModel):
    stage: str
    title: str = ""
    status: str = ""
    label: str = ""
    at: str | None = None
    ended_at: str | None = None


class TaskLine(ApiModel):
    """One host result as task output."""

    counter: int = 0
    at: str | None = None
    play: str | None = None
    task: str | None = None
    host: str | None = None
    result: str = ""
    message: str | None = None


class LiveRequest(PatchRequest):
    """The request as the live view sends it: a RequestView plus whether a cancel is pending."""

    cancel_requested_at: str | None = None


class Live(ApiModel):
    request: LiveRequest
    timeline: list[TimelineStep] = []
    allowed: dict[str, str | None] = {}  # action -> why the caller may not (None: they may)
    tasks: list[TaskLine] = []
    replaced_by_newer: bool = False

    def refusal(self, action: str) -> str | None:
        return self.allowed.get(action)

    def outcome(self) -> str | None:
        """How a finished run ended, as the timeline's last step (the run's end) says: a StepStatus, or None while
        the request is not final."""
        if not self.timeline or self.request.terminal is False:
            return None
        last = self.timeline[-1].status
        return last if last in (StepStatus.DONE, StepStatus.FAILED, StepStatus.CANCELED) else None


# --- the approvals inbox (GET /api/v1/inbox) ----------------------------------------------------


class InboxItem(ApiModel):
    id: str
    requested_by: str | None = None
    hosts: list[str] = []
    hosts_by_environment: dict[str, list[str]] = {}
    production: bool = False
    patch_group: str | None = None
    reboot: str = ""
    check_mode: bool = False
    conversation_id: str | None = None
    created_at: str | None = None
    expires_at: str | None = None


class Inbox(ApiModel):
    count: int = 0
    items: list[InboxItem] = []
    mine: list[InboxItem] = []
