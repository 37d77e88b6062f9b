from fastapi import APIRouter

from api.deps import CatalogDep, SessionDep, SettingsDep, UserDep
from api.schemas import ChatIn, ChatOut, ErrorOut
from api.services.chat import chat_turn

router = APIRouter(prefix="/api/v1", tags=["chat"])


@router.post("/chat", response_model=ChatOut, responses={400: {"model": ErrorOut}, 404: {"model": ErrorOut}})
def post_chat(body: ChatIn, session: SessionDep, user: UserDep, catalog: CatalogDep, settings: SettingsDep) -> ChatOut:
    """Interpret one message. A complete patch intent comes back as a `proposal` that waits for approval."""
    return chat_turn(session, conversation_id=body.conversation_id, text=body.text, user=user,
                     catalog=catalog, settings=settings)
