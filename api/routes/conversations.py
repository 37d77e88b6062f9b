from typing import Annotated

from fastapi import APIRouter, Path, Query

from api import usecases
from api.deps import SessionDep, ViewerDep
from api.schemas import ID_PATTERN, ConversationList, ConversationView, ErrorOut, MessageList, MessageView
from api.services import conversations

router = APIRouter(prefix="/api/v1/conversations", tags=["conversations"])


@router.get("", response_model=ConversationList)
def list_conversations(session: SessionDep, caller: ViewerDep,
                       limit: Annotated[int, Query(ge=1, le=200)] = 50) -> ConversationList:
    """The caller's own conversations, most recent first."""
    rows = conversations.list_for(session, caller.user, limit)
    return ConversationList(items=[ConversationView.model_validate(r, from_attributes=True) for r in rows])


@router.get("/{conversation_id}/messages", response_model=MessageList,
            responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}})
def messages(conversation_id: Annotated[str, Path(pattern=ID_PATTERN)], session: SessionDep,
             caller: ViewerDep) -> MessageList:
    """The conversation's messages, for its author, approvers and admins (anyone else: 403, audited)."""
    rows = usecases.conversation_messages(session, conversation_id, caller)
    return MessageList(items=[MessageView.model_validate(r, from_attributes=True) for r in rows])
