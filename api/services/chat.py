"""A chat turn: store the message, interpret it, answer, and (for a complete patch intent) create a proposal.

Nothing here approves or launches: a proposal waits for the Approve button (POST /requests/{id}/approve).
"""

from __future__ import annotations

import re
import unicodedata

from sqlmodel import Session

from agent.service import (
    UNSUPPORTED_REPLY, Interpretation, describe_clarification, describe_proposal, interpret_message,
)
from api.errors import BadInput, NotFound
from api.schemas import ChatOut
from api.services import requests as request_service
from core.intent import IntentDraft
from core.inventory import Catalog
from core.models import Conversation, Message, PatchRequest, utcnow
from core.settings import Settings
from core.states import PROPOSED, STAGE_LABELS, TERMINAL, IllegalTransition

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(text: str, settings: Settings) -> str:
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text).strip()
    if not text:
        raise BadInput("the message is empty")
    if len(text) > settings.max_chat_chars:
        raise BadInput(f"the message is {len(text)} characters; the limit is {settings.max_chat_chars}")
    return text


def chat_turn(session: Session, *, conversation_id: str | None, text: str, user: str,
              catalog: Catalog, settings: Settings) -> ChatOut:
    text = clean_text(text, settings)
    conversation = _conversation(session, conversation_id, user, text)
    session.add(Message(conversation_id=conversation.id, role="user", text=text, author=user))

    previous = IntentDraft.model_validate(conversation.open_draft) if conversation.open_draft else None
    interpretation = interpret_message(text, catalog=catalog, previous=previous)
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
        proposal = request_service.create_proposal(
            session, result=result, conversation_id=conversation.id, user=user, settings=settings,
            engine=interpretation.engine, prompt_version=interpretation.prompt_version,
            model_name=interpretation.model_name,
        )
        conversation.open_draft = interpretation.draft.model_dump(mode="json")
        conversation.open_request_id = proposal.id
        reply = describe_proposal(result, catalog)
    elif result.action == "clarify":
        conversation.open_draft = interpretation.draft.model_dump(mode="json")
        reply = describe_clarification(result, catalog)
    elif result.action in ("status", "cancel"):
        related, reply = _about_job(session, interpretation, catalog)
    elif result.action == "list_jobs":
        reply = _list_jobs(session)
    else:
        reply = UNSUPPORTED_REPLY

    conversation.updated_at = utcnow()
    session.add(Message(
        conversation_id=conversation.id, role="assistant", text=reply, proposal_id=proposal.id if proposal else None,
        data={"engine": interpretation.engine, "intent": result.model_dump(mode="json")},
    ))
    session.commit()
    views = {}
    for key, req in (("proposal", proposal), ("related_request", related)):
        if req is not None:
            session.refresh(req)
            views[key] = request_service.view(session, req, catalog, settings)
    return ChatOut(conversation_id=conversation.id, reply=reply, engine=interpretation.engine,
                   intent=result.model_dump(mode="json"), **views)


def _conversation(session: Session, conversation_id: str | None, user: str, text: str) -> Conversation:
    if conversation_id:
        conversation = session.get(Conversation, conversation_id, with_for_update=True)
        if conversation is None:
            raise NotFound(f"no conversation with id {conversation_id}; omit conversation_id to start one")
        return conversation
    conversation = Conversation(created_by=user, title=text[:80])
    session.add(conversation)
    session.flush()
    return conversation


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
            request_service.reject(session, old.id, user, reason="replaced by a newer proposal")
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
        req = request_service.latest_for_hosts(session, result.hosts, active_only=result.action == "cancel")
        if req is None:
            return None, f"No {'running ' if result.action == 'cancel' else ''}patch request touches {', '.join(result.hosts)}."
    else:
        recent = request_service.list_requests(session, state=None, limit=1)
        if not recent:
            return None, "There are no patch requests yet."
        req = recent[0]
    job = f"AWX job {req.awx_job_id}" if req.awx_job_id else f"request {req.id[:8]}"
    summary = f"{job} on {', '.join(req.hosts)}: {req.state}, {STAGE_LABELS.get(req.stage, req.stage)}."
    if req.failure_reason:
        summary += f" Reason: {req.failure_reason}"
    if result.action == "cancel":
        if req.state in TERMINAL:
            return req, summary + " It has already ended; there is nothing to cancel."
        return req, summary + " Press Cancel on its progress view to stop it; nothing is canceled from chat text."
    return req, summary


def _list_jobs(session: Session) -> str:
    rows = request_service.list_requests(session, state=None, limit=10)
    if not rows:
        return "There are no patch requests yet."
    lines = ["Recent requests:"]
    for req in rows:
        job = f"job {req.awx_job_id}" if req.awx_job_id else "no job yet"
        lines.append(f"- {req.id[:8]} ({job}): {req.action} {', '.join(req.hosts[:5])}"
                     f"{'…' if len(req.hosts) > 5 else ''} with {req.patch_group or 'pre-checks'} — {req.state}")
    return "\n".join(lines)
