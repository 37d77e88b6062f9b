"""SQLModel tables. Schema changes go through Alembic (migrations/)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


def _ts(**kw: Any) -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), **kw), default=None)


class Conversation(SQLModel, table=True):
    __tablename__ = "conversations"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    title: str = Field(default="", max_length=200)
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    # The draft of the intent still being worked out (awaiting clarification or proposed): follow-up turns amend it.
    open_draft: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    open_request_id: str | None = Field(default=None, max_length=32)


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_conversation_id_id", "conversation_id", "id"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    conversation_id: str = Field(foreign_key="conversations.id", max_length=32)
    role: str = Field(max_length=20)  # user | assistant | tool
    text: str = Field(sa_column=Column(Text, nullable=False))
    author: str | None = Field(default=None, max_length=200)
    proposal_id: str | None = Field(default=None, max_length=32)
    data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))  # tool calls, intent, engine
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class PatchRequest(SQLModel, table=True):
    __tablename__ = "patch_requests"
    __table_args__ = (
        Index("ix_patch_requests_state_updated_at", "state", "updated_at"),
        Index("ix_patch_requests_created_at", "created_at"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    conversation_id: str | None = Field(default=None, foreign_key="conversations.id", max_length=32)
    action: str = Field(max_length=20)  # patch | precheck
    hosts: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    patch_group: str | None = Field(default=None, max_length=100)
    reboot: str = Field(default="if_needed", max_length=20)
    check_mode: bool = False
    intent: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    engine: str = Field(default="rules", max_length=200)
    prompt_version: str | None = Field(default=None, max_length=100)
    model_name: str | None = Field(default=None, max_length=200)

    state: str = Field(default="proposed", max_length=20, index=True)
    stage: str = Field(default="pending", max_length=20)
    # A play the stage map does not know, shown by its own name under its stage (core.stage_map).
    stage_detail: str | None = Field(default=None, max_length=255)
    requested_by: str = Field(max_length=200)
    approved_by: str | None = Field(default=None, max_length=200)
    decided_by: str | None = Field(default=None, max_length=200)  # who rejected / canceled

    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime | None = _ts()
    approved_at: datetime | None = _ts()
    launch_started_at: datetime | None = _ts()
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    cancel_requested_at: datetime | None = _ts()
    last_polled_at: datetime | None = _ts()
    # When the follower polls this running request next: PostgreSQL is the follow schedule (worker.execution).
    next_poll_at: datetime | None = _ts(index=True)
    run_ended_at: datetime | None = _ts()  # the playbook's final stats arrived (AWX's status follows shortly)

    awx_template_id: int | None = None
    awx_job_id: int | None = Field(default=None, index=True)
    awx_status: str | None = Field(default=None, max_length=20)
    event_cursor: int = 0  # every counter <= cursor is stored (gap-safe)
    launch_attempts: int = 0
    # The launch fence (worker.execution.launch): the token of the attempt that holds the right to launch, new
    # on every take-over, and until when (PostgreSQL's clock) a proven attempt's POST may still be in flight.
    launch_token: str | None = Field(default=None, max_length=32)
    launch_lease_until: datetime | None = _ts()
    # AWX jobs found for this request beside the one kept (awx_job_id): [{job_id, status, cancel, found_by, at}].
    duplicate_awx_jobs: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    follow_failures: int = 0  # consecutive polls that AWX did not answer
    latest_task: str | None = Field(default=None, max_length=500)
    failure_reason: str | None = Field(default=None, sa_column=Column(Text))
    # INVENTORY_SOURCE=awx: the inventory snapshot the proposal was validated against (core.inventory_sync).
    inventory_snapshot_id: int | None = Field(default=None, sa_column=Column(BigInteger))


class JobEvent(SQLModel, table=True):
    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("request_id", "counter", name="uq_job_events_request_counter"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    request_id: str = Field(foreign_key="patch_requests.id", max_length=32)
    counter: int
    event: str = Field(max_length=100)
    host: str | None = Field(default=None, max_length=255)
    play: str | None = Field(default=None, max_length=255)
    task: str | None = Field(default=None, max_length=500)
    failed: bool = False
    changed: bool = False
    stdout: str | None = Field(default=None, sa_column=Column(Text))
    created: datetime | None = _ts()
    data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    stored_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class HostResult(SQLModel, table=True):
    __tablename__ = "host_results"
    __table_args__ = (UniqueConstraint("request_id", "host", name="uq_host_results_request_host"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    request_id: str = Field(foreign_key="patch_requests.id", max_length=32, index=True)
    host: str = Field(max_length=255)
    status: str = Field(default="pending", max_length=20)  # pending running ok changed failed unreachable skipped
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    message: str | None = Field(default=None, sa_column=Column(Text))
    # [{"name", "old", "new"}]: what the package tasks changed, or in a dry run would change (core.package_changes)
    packages: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))


class RequestStage(SQLModel, table=True):
    """When each stage was first seen: the timeline the chat shows."""

    __tablename__ = "request_stages"
    __table_args__ = (UniqueConstraint("request_id", "stage", name="uq_request_stages_request_stage"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    request_id: str = Field(foreign_key="patch_requests.id", max_length=32, index=True)
    stage: str = Field(max_length=20)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class InventorySnapshot(SQLModel, table=True):
    """One inventory sync from AWX (INVENTORY_SOURCE=awx): a good one holds the inventory it read, a failed one
    only its error. The parser and the validator serve the newest good one (core.inventory_sync)."""

    __tablename__ = "inventory_snapshots"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    started_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    ok: bool = Field(default=False, index=True)
    source: str = Field(default="", max_length=500)  # the AWX inventories read: "Demo fleet (id 1)"
    hosts: int = 0
    groups: int = 0
    disabled_hosts: int = 0
    # AWX's inventory script of the inventories read, merged: {group: {hosts, children}, _meta: {hostvars}}.
    data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    problems: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # templates, policy
    error: str | None = Field(default=None, sa_column=Column(Text))


class AuditLog(SQLModel, table=True):
    """Append-only (triggers in the migrations refuse UPDATE, DELETE and TRUNCATE)."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str = Field(max_length=200)
    request_id: str | None = Field(default=None, max_length=32, index=True)
    action: str = Field(max_length=50)  # transition | denied | note
    from_state: str | None = Field(default=None, max_length=20)
    to_state: str | None = Field(default=None, max_length=20)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    detail: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class ApiToken(SQLModel, table=True):
    """An API token. Only its SHA-256 is stored: the token itself is shown once, when it is created."""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    user: str = Field(max_length=200, index=True)
    name: str = Field(default="", max_length=200)
    token_hash: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    last_used_at: datetime | None = _ts()
    revoked_at: datetime | None = _ts()


class UserRole(SQLModel, table=True):
    """patchpilot's own mapping of user names to roles: where roles come from in proxy mode (the OAuth proxy
    vouches for the user name only). Managed by admins with `patchpilot role grant|revoke|list`."""

    __tablename__ = "user_roles"

    user: str = Field(primary_key=True, max_length=200)  # canonical (core.identity.canonical_user)
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    granted_by: str = Field(max_length=200)
    granted_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class Notification(SQLModel, table=True):
    """One message to one webhook (worker.notify): the outbox and, once its attempts are spent, the dead letter."""

    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("audit_id", "target", name="uq_notifications_audit_target"),
                      Index("ix_notifications_due", "state", "next_attempt_at"))

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    audit_id: int = Field(sa_column=Column(BigInteger, nullable=False))  # the audit row it tells of
    request_id: str | None = Field(default=None, max_length=32, index=True)
    kind: str = Field(max_length=40)  # awaiting_approval approved rejected started succeeded failed canceled error
    target: str = Field(max_length=200)  # the webhook's name
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: str = Field(default="pending", max_length=20)  # pending | sent | dead
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    sent_at: datetime | None = _ts()


class NotifyCursor(SQLModel, table=True):
    """How far worker.notify has read the audit log."""

    __tablename__ = "notify_cursor"

    name: str = Field(primary_key=True, max_length=50)
    last_audit_id: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
