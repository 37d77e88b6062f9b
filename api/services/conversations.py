"""Conversations: a user's list, and a conversation's messages for those who may read them."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlmodel import Session, col

from api.errors import NotFound, Refused
from api.services.requests import same_person
from core.identity import Principal
from core.models import Conversation, Message

SHOWN_ROLES = ("user", "assistant")  # the messages a person reads (not the tool calls kept for the model)


def list_for(session: Session, user: str, limit: int) -> list[Conversation]:
    """The user's own conversations, most recent first."""
    # Compared in canonical form: a conversation started as "bob " before names were canonical is bob's.
    return list(session.execute(select(Conversation)
                                .where(func.lower(func.btrim(Conversation.created_by)) == user)
                                .order_by(col(Conversation.updated_at).desc()).limit(limit)).scalars())


def messages(session: Session, conversation_id: str, caller: Principal) -> list[Message]:
    """Its author, approvers and admins read a conversation; anyone else is refused (Refused: audited)."""
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise NotFound(f"no conversation with id {conversation_id}")
    if not same_person(conversation.created_by, caller.user) and not caller.has("approver"):
        raise Refused(f"{caller.user} may not read conversation {conversation_id}: only its author, approvers and "
                      "admins may", user=caller.user)
    return list(session.scalars(select(Message).where(col(Message.conversation_id) == conversation_id,
                                                      col(Message.role).in_(SHOWN_ROLES))
                                .order_by(col(Message.id))))
