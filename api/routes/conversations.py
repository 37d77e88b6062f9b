from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy import func, select

from api.deps import SessionDep, ViewerDep
from api.errors import Forbidden, NotFound
from api.schemas import ID_PATTERN, ConversationList, ConversationView, ErrorOut, MessageList, MessageView
from api.services.requests import deny, same_person
from core.models import Conversation, Message

router = APIRouter(prefix="/api/v1/conversations", tags=["conversations"])


@router.get("", response_model=ConversationList)
def list_conversations(session: SessionDep, caller: ViewerDep,
                       limit: Annotated[int, Query(ge=1, le=200)] = 50) -> ConversationList:
    """The caller's own conversations, most recent first."""
    # Compared in canonical form: a conversation started as "bob " before names were canonical is bob's.
    rows = session.execute(select(Conversation).where(func.lower(func.btrim(Conversation.created_by)) == caller.user)
                           .order_by(Conversation.updated_at.desc()).limit(limit)).scalars()
    return ConversationList(items=[ConversationView.model_validate(r, from_attributes=True) for r in rows])


@router.get("/{conversation_id}/messages", response_model=MessageList, responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}})
def messages(conversation_id: Annotated[str, Path(pattern=ID_PATTERN)], session: SessionDep,
             caller: ViewerDep) -> MessageList:
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise NotFound(f"no conversation with id {conversation_id}")
    if not same_person(conversation.created_by, caller.user) and not caller.has("approver"):
        raise deny(session, user=caller.user, request_id=None, error=Forbidden,
                   reason=f"{caller.user} may not read conversation {conversation_id}: only its author, approvers "
                          "and admins may")
    rows = session.execute(select(Message).where(Message.conversation_id == conversation_id,
                                                 Message.role.in_(("user", "assistant")))
                           .order_by(Message.id)).scalars()
    return MessageList(items=[MessageView.model_validate(r, from_attributes=True) for r in rows])
