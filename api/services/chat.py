"""A chat turn: store the message, interpret it, answer, and (for a complete patch intent) create a proposal.

Nothing here approves or launches: a proposal waits for the Approve button (POST /requests/{id}/approve). Nothing
here commits either: `api.usecases.chat_turn` runs a turn as one transaction.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from agent.memory import Turn
from agent.service import (
    UNSUPPORTED_REPLY,
    Interpretation,
    describe_clarification,
    describe_proposal,
    interpret_message,
)
from api.errors import BadInput, NotFound, Refused
from api.schemas import ChatOut
from api.services import decisions
from api.services import requests as request_service
from api.services.requests import STAGE_WORDS
from core.intent import Action, IntentDraft
from core.inventory import Catalog
from core.models import Conversation, Message, PatchRequest, utcnow
from core.settings import Settings
from core.states import JOBS_SHOWN, PROPOSED, TERMINAL, IllegalTransition
from core.validation import validate_draft

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


EMPTY_REPLY = "Tell me what to patch, for example: Patch server www-01 with group 1."


def clean_text(text: str, settings: Settings) -> str:
    """Control characters become spaces. The length limit is also in the request schema (422); this guards
    callers that bypass it."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text).strip()
    if len(text) > settings.max_chat_chars:
        raise BadInput(f"the message is {len(text)} characters; the limit is {settings.max_chat_chars}")
    return text


def chat_turn(session: Session, *, conversation_id: str | None, text: str, user: str,
              catalog: Catalog, settings: Settings) -> ChatOut:
    """One turn, written in the caller's transaction (flushed, never committed): the conversation row is locked
    first and everything (messages, the replaced proposal's rejection, the new proposal, the open draft) goes into
    that one transaction, so concurrent turns in a conversation queue on the lock until the turn commits."""
    text = clean_text(text, settings)
    conversation = _conversation(session, conversation_id, user, text or "(empty message)")
    history = _history(session, conversation, settings) if conversation_id else []
    session.add(Message(conversation_id=conversation.id, role="user", text=text, author=user))
    if not text:  # only blanks or control characters: nothing to interpret
        session.add(Message(conversation_id=conversation.id, role="assistant", text=EMPTY_REPLY))
        session.flush()
        return ChatOut(conversation_id=conversation.id, reply=EMPTY_REPLY, engine="rules",
                       intent={"action": Action.CLARIFY, "missing": ["targets", "patch_group"]})

    previous = IntentDraft.model_validate(conversation.open_draft) if conversation.open_draft else None
    interpretation = interpret_message(text, catalog=catalog, previous=previous, history=history,
                                       jobs=SessionJobReader(session), settings=settings)
    result = interpretation.result

    proposal: PatchRequest | None = None
    related: PatchRequest | None = None
    open_proposal = _open_proposal(session, conversation)
    if result.is_proposable and open_proposal is not None and _same_intent(open_proposal, result):
        # Nothing changed ("approve", "go ahead", an injected "launch it now"): the text cannot approve, so the
        # open proposal simply stays where it is, waiting for the button.
        proposal = open_proposal
        reply = ("This proposal is unchanged and waits for a decision. Approval happens only with the Approve "
                 "button; chat text cannot approve or launch anything.")
    elif result.is_proposable:
        _withdraw_open_proposal(session, conversation, user)
        proposal = decisions.create_proposal(
            session, result=result, conversation_id=conversation.id, user=user, settings=settings,
            engine=interpretation.engine, prompt_version=interpretation.prompt_version,
            model_name=interpretation.model_name,
        )
        proposal.inventory_snapshot_id = catalog.snapshot_id  # what it was validated against (INVENTORY_SOURCE=awx)
        conversation.open_draft = interpretation.draft.model_dump(mode="json")
        conversation.open_request_id = proposal.id
        before = validate_draft(previous, catalog).hosts if previous is not None else None
        reply = describe_proposal(result, catalog, previous_hosts=before)
        disabled = [h for h in result.refused_hosts if h in catalog.inventory.hosts
                    and not catalog.inventory.hosts[h].enabled]
        if disabled:
            reply += f"\nDisabled in AWX (enabled: false), so never proposed: {', '.join(disabled)}."
    elif result.action == Action.CLARIFY:
        conversation.open_draft = interpretation.draft.model_dump(mode="json")
        reply = describe_clarification(result, catalog)
    elif result.action in (Action.STATUS, Action.CANCEL):
        related, reply = _about_job(session, interpretation, catalog)
    elif result.action == Action.LIST_JOBS:
        reply = _list_jobs(session, result.jobs)
    else:
        reply = interpretation.reply or UNSUPPORTED_REPLY
    if interpretation.notice:
        reply = f"{interpretation.notice}\n{reply}"

    conversation.updated_at = utcnow()
    data: dict[str, Any] = {"engine": interpretation.engine, "intent": result.model_dump(mode="json")}
    if interpretation.tool_calls:
        data["tool_calls"] = interpretation.tool_calls
    if interpretation.usage:
        data["usage"] = interpretation.usage
    if interpretation.prompt_version:
        data["prompt_version"] = interpretation.prompt_version
    session.add(Message(
        conversation_id=conversation.id, role="assistant", text=reply, proposal_id=proposal.id if proposal else None,
        data=data,
    ))
    session.flush()
    views = {}
    for key, req in (("proposal", proposal), ("related_request", related)):
        if req is not None:
            views[key] = request_service.view(session, req, catalog, settings)
    return ChatOut(conversation_id=conversation.id, reply=reply, engine=interpretation.engine,
                   intent=result.model_dump(mode="json"), **views)


def _conversation(session: Session, conversation_id: str | None, user: str, text: str) -> Conversation:
    if conversation_id:
        conversation = session.get(Conversation, conversation_id, with_for_update=True)
        if conversation is None:
            raise NotFound(f"no conversation with id {conversation_id}; omit conversation_id to start one")
        if not request_service.same_person(conversation.created_by, user):
            raise Refused(f"{user} may not post into conversation {conversation.id}: it belongs to someone else; "
                          "start a new one", user=user)
        return conversation
    conversation = Conversation(created_by=user, title=text[:80])
    session.add(conversation)
    session.flush()
    return conversation


def _history(session: Session, conversation: Conversation, settings: Settings) -> list[Turn]:
    """The conversation's newest messages (the agent bounds them again by characters)."""
    if settings.memory_max_messages <= 0:
        return []
    rows = session.scalars(
        select(Message).where(col(Message.conversation_id) == conversation.id)
        .order_by(col(Message.id).desc()).limit(settings.memory_max_messages)).all()
    return [Turn(role=m.role, text=m.text, tool_calls=list((m.data or {}).get("tool_calls") or []))
            for m in reversed(rows)]


class SessionJobReader:
    """Read-only job data for the agent's status / list / cancel tools (plain dicts, nothing to write through)."""

    def __init__(self, session: Session):
        self.session = session

    def job_status(self, job_id: int | None, hosts: list[str]) -> dict | None:
        if job_id is not None:
            req = request_service.find_by_job(self.session, job_id)
        elif hosts:
            req = request_service.latest_for_hosts(self.session, hosts)
        else:
            recent = request_service.list_requests(self.session, state=None, limit=1)
            req = recent[0] if recent else None
        return _job_dict(req) if req is not None else None

    def list_jobs(self, limit: int, jobs: str | None = None) -> list[dict]:
        rows = request_service.list_requests(self.session, state=None, limit=limit,
                                             states=JOBS_SHOWN.get(jobs) if jobs else None)
        return [_job_dict(req) for req in rows]


def _job_dict(req: PatchRequest) -> dict:
    return {"request": req.id[:8], "awx_job_id": req.awx_job_id, "action": req.action, "hosts": req.hosts[:20],
            "patch_group": req.patch_group, "check_mode": req.check_mode, "state": req.state, "stage": req.stage,
            "failure_reason": req.failure_reason}


def _open_proposal(session: Session, conversation: Conversation) -> PatchRequest | None:
    if not conversation.open_request_id:
        return None
    req = session.get(PatchRequest, conversation.open_request_id)
    return req if req is not None and req.state == PROPOSED else None


def _same_intent(req: PatchRequest, result) -> bool:
    return (req.action, sorted(req.hosts), req.patch_group, req.reboot, req.check_mode) == (
        result.action, sorted(result.hosts), result.patch_group, result.reboot, result.check_mode)


def _withdraw_open_proposal(session: Session, conversation: Conversation, user: str) -> None:
    """A new proposal in the same conversation replaces the open one (an amendment)."""
    if not conversation.open_request_id:
        return
    old = session.get(PatchRequest, conversation.open_request_id)
    if old is not None and old.state == PROPOSED:
        try:
            # In the turn's transaction: the conversation's row lock (taken first, in _conversation) is held
            # until the turn's single commit, so concurrent turns queue and one proposal stays open.
            decisions.reject(session, old, user, reason=request_service.REPLACED_REASON)
        except IllegalTransition:
            pass  # approved in the meantime: it stands, the new one is separate


def _about_job(session: Session, interpretation: Interpretation, catalog: Catalog) -> tuple[PatchRequest | None, str]:
    result = interpretation.result
    req = None
    if result.job_id is not None:
        req = request_service.find_by_job(session, result.job_id)
        if req is None:
            return None, f"I have no record of AWX job {result.job_id}."
    elif result.hosts:
        req = request_service.latest_for_hosts(session, result.hosts, active_only=result.action == Action.CANCEL)
        if req is None:
            running = "running " if result.action == Action.CANCEL else ""
            return None, f"No {running}patch request touches {', '.join(result.hosts)}."
    else:
        recent = request_service.list_requests(session, state=None, limit=1)
        if not recent:
            return None, "There are no patch requests yet."
        req = recent[0]
    job = f"AWX job {req.awx_job_id}" if req.awx_job_id else f"request {req.id[:8]}"
    summary = f"{job} on {', '.join(req.hosts)}: {req.state}, {STAGE_WORDS.get(req.stage, req.stage)}."
    if req.failure_reason:
        summary += f" Reason: {req.failure_reason}"
    if result.action == Action.CANCEL:
        if req.state in TERMINAL:
            return req, summary + " It has already ended; there is nothing to cancel."
        return req, summary + " Press Cancel on its progress view to stop it; nothing is canceled from chat text."
    return req, summary


# "Failed requests", "Finished requests"; the active ones are the running ones to the user.
_JOBS_HEADING: dict[str | None, str] = {
    None: "Recent requests", **{name: f"{name.capitalize()} requests" for name in JOBS_SHOWN},
    "active": "Running requests"}


def _list_jobs(session: Session, jobs: str | None = None) -> str:
    rows = request_service.list_requests(session, state=None, limit=10, states=JOBS_SHOWN.get(jobs) if jobs else None)
    if not rows:
        return "There are no patch requests yet." if jobs is None else f"No {_JOBS_HEADING[jobs].lower()} now."
    lines = [f"{_JOBS_HEADING[jobs]}:"]
    for req in rows:
        job = f"job {req.awx_job_id}" if req.awx_job_id else "no job yet"
        lines.append(f"- {req.id[:8]} ({job}): {req.action} {', '.join(req.hosts[:5])}"
                     f"{'…' if len(req.hosts) > 5 else ''} with {req.patch_group or 'pre-checks'} — {req.state}")
    return "\n".join(lines)
