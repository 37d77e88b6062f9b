"""Request and response bodies of the HTTP API (they make up the OpenAPI document at /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.settings import get_settings
from core.statuses import HostStatus

ID_PATTERN = r"^[0-9a-f]{32}$"


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation_id: str | None = Field(default=None, pattern=ID_PATTERN, description="Omit to start a conversation.")
    text: str = Field(min_length=1, max_length=get_settings().max_chat_chars, description="What the operator typed.")


class PackageView(BaseModel):
    name: str
    old: str | None = Field(default=None, description="installed version before; none for a new package")
    new: str | None = Field(default=None, description="version after; none for a removed package")


class HostView(BaseModel):
    name: str
    status: str = HostStatus.PENDING
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    message: str | None = None
    packages: list[PackageView] = Field(
        default_factory=list,
        description="packages the run changed on the host or, in a dry run, would change (from its package tasks); "
        "in one request's view only, a list of requests leaves them out")


class StageView(BaseModel):
    stage: str
    label: str
    at: datetime


class RequestView(BaseModel):
    id: str
    action: str
    state: str
    stage: str
    stage_label: str
    hosts: list[HostView]
    hosts_by_environment: dict[str, list[str]]
    patch_group: str | None
    patch_group_description: str | None
    reboot: str
    check_mode: bool
    awx_job_id: int | None
    awx_job_url: str | None
    # AWX jobs found for this request beside the one followed; each was canceled at once (see Guarantees).
    duplicate_awx_jobs: list[dict[str, Any]] = []
    requested_by: str
    approved_by: str | None
    decided_by: str | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    approved_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    failure_reason: str | None
    stages: list[StageView]
    latest_task: str | None
    progress: float
    conversation_id: str | None
    notes: list[str]
    engine: str
    prompt_version: str | None
    model_name: str | None
    terminal: bool
    # The target expression as the user gave it, in words ("web* -> 4 hosts" when a typed pattern was expanded).
    targets: str | None = None


class ChatOut(BaseModel):
    conversation_id: str
    reply: str
    engine: str
    proposal: RequestView | None = None
    related_request: RequestView | None = None
    intent: dict[str, Any]


class RequestList(BaseModel):
    items: list[RequestView]


class EventView(BaseModel):
    counter: int
    event: str
    host: str | None
    play: str | None
    task: str | None
    failed: bool
    changed: bool
    stdout: str | None
    created: datetime | None


class EventList(BaseModel):
    items: list[EventView]


class ConversationView(BaseModel):
    id: str
    title: str
    created_by: str
    created_at: datetime
    updated_at: datetime


class ConversationList(BaseModel):
    items: list[ConversationView]


class MessageView(BaseModel):
    role: str
    text: str
    author: str | None
    created_at: datetime
    proposal_id: str | None


class MessageList(BaseModel):
    items: list[MessageView]


class SystemView(BaseModel):
    engine: str
    engine_label: str
    api: str
    database: str
    broker: str
    awx: str
    awx_url: str | None
    # Where the inventory comes from and, from AWX, the last good sync, its problems and the last failure.
    inventory: dict[str, Any] | None = None
    inventory_line: str | None = None


class MeView(BaseModel):
    user: str
    roles: list[str]
    via: str


class ErrorOut(BaseModel):
    detail: Any
